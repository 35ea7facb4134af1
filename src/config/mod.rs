//! Typed settings: loading (TOML file + `COUPA_CHANGEFEED__SECTION__KEY`
//! environment overrides via the `config` crate), secret files, and
//! validation whose every error names the key and the value at fault.
//! Nothing here talks to the network or the store.

use serde::Deserialize;

mod load;
mod plan;
mod schedule;
mod sections;
mod shard;
mod validation;

use crate::coupa::settings::CoupaSettings;
pub use crate::setting::{ConfigError, OneOrMany};
pub use crate::sink::SinkSettings;
pub use load::ENV_PREFIX;
pub use plan::{ObjectPlan, StartFrom};
pub use schedule::Schedule;
pub use sections::{
    ApiSettings, ClusterSettings, DeliverySettings, LogFormat, LogSettings, ObjectSettings,
    PollSettings, ServerSettings, StateSettings, MIN_API_TOKEN_CHARS,
};
pub use shard::Shard;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where Coupa is and how to authenticate.
    pub coupa: CoupaSettings,
    /// Where the sled state lives.
    #[serde(default)]
    pub state: StateSettings,
    /// Poll defaults for every object.
    #[serde(default)]
    pub poll: PollSettings,
    /// The objects to poll.
    #[serde(default)]
    pub objects: Vec<ObjectSettings>,
    /// Where events go.
    #[serde(default = "sections::default_sinks")]
    pub sinks: Vec<SinkSettings>,
    /// What all sinks share (backpressure).
    #[serde(default)]
    pub delivery: DeliverySettings,
    /// Splitting the objects between replicas.
    #[serde(default)]
    pub cluster: ClusterSettings,
    /// The health/metrics server.
    #[serde(default)]
    pub server: ServerSettings,
    /// Logging.
    #[serde(default)]
    pub log: LogSettings,
    /// The HTTP actions API (off unless a token is set).
    #[serde(default)]
    pub api: ApiSettings,
}
