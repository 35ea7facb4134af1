//! coupa-model: what the daemon (`coupa-changefeed`) and the simulator
//! (`coupa-sim`) both need to know about Coupa, and nothing else. It
//! imports neither of them.
//!
//! # Layout
//!
//! - [`objects`]: the object catalogue, the only list of Coupa objects
//!   (resource paths, event names, scopes, what Coupa allows on each).
//! - [`record`]: reading ids and timestamps out of a record in any key
//!   style and UTC offset; formatting times for queries and events.

pub mod objects;
pub mod record;
