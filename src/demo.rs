//! `coupa-changefeed demo`: the simulator and the daemon in one process on
//! embedded defaults — OAuth against the simulator, a fresh sled dir, a
//! change generator, CloudEvents on stdout. Shows the whole pipeline in
//! seconds with nothing to configure.

use std::path::PathBuf;

use coupa_sim::{OAuthClient, SimConfig, Simulator};

use crate::config::Settings;
use crate::coupa::record::rfc3339;
use crate::shutdown::Shutdown;

/// Objects the demo polls (the generator changes the first three).
const DEMO_OBJECTS: &[&str] = &["purchase_orders", "invoices", "suppliers", "supplier_sites"];

/// The demo's config, as a user would write it.
pub fn demo_config(
    base_url: &str,
    state_dir: &std::path::Path,
    start_from: &str,
    listen: std::net::SocketAddr,
) -> String {
    let objects: String = DEMO_OBJECTS
        .iter()
        .map(|o| format!("[[objects]]\nname = \"{o}\"\n"))
        .collect();
    format!(
        r#"
[coupa]
base_url = "{base_url}"
requests_per_second = 20
[coupa.oauth]
client_id = "demo"
client_secret = "demo-secret"
scopes = ["core.purchase_order.read", "core.invoice.read", "core.supplier.read", "core.supplier_sites.read"]
[state]
dir = "{dir}"
[poll]
schedule = "*/2 * * * * *"
lookback = "1m"
settle = "1s"
start_from = "{start_from}"
{objects}
[[sinks]]
type = "file"
path = "-"
[server]
listen = "{listen}"
"#,
        dir = state_dir.display().to_string().replace('\\', "/"),
    )
}

/// Runs the demo until `shutdown`.
pub async fn run(state: Option<PathBuf>, rate: f64, shutdown: Shutdown) -> anyhow::Result<()> {
    let sim = Simulator::start(SimConfig {
        oauth_clients: vec![OAuthClient {
            client_id: "demo".into(),
            client_secret: "demo-secret".into(),
            scopes: vec![
                "core.purchase_order.read".into(),
                "core.invoice.read".into(),
                "core.supplier.read".into(),
                "core.supplier_sites.read".into(),
            ],
        }],
        initial_records: 5,
        change_rate: rate,
        ..SimConfig::default()
    })
    .await?;
    let (dir, temp) = match state {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("coupa-changefeed-demo-{}", std::process::id())),
            true,
        ),
    };
    tracing::info!(simulator = %sim.base_url(), state = %dir.display(), "demo: simulator up; events follow on stdout");
    // Replay the simulator's history (its seed records are weeks old) so
    // events show at once.
    // Whole seconds: Coupa stamps them, and config refuses fractions.
    let start = rfc3339(chrono::SubsecRound::trunc_subsecs(
        sim.now() - chrono::Duration::days(365),
        0,
    ));
    // The status page on 8080 if it is free, else on any port (logged).
    let listen = match std::net::TcpListener::bind(("127.0.0.1", 8080)) {
        Ok(_) => std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
        Err(_) => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let settings = Settings::from_toml(&demo_config(&sim.base_url(), &dir, &start, listen))?;
    let result = crate::app::run(settings, shutdown).await;
    sim.shutdown().await;
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}
