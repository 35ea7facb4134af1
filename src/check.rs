//! `coupa-changefeed check`: proves a config can work before it is
//! deployed — Coupa answers with these credentials (a token is minted),
//! each configured object can be listed (`limit=1`; a 403 names the
//! missing scope), and each sink can be reached. Sends no event and
//! changes nothing in Coupa or the state dir.

use std::time::Duration;

use serde::Serialize;

use crate::config::{ObjectPlan, Settings, SinkSettings};
use crate::coupa::client::CoupaClient;
use crate::coupa::error::CoupaError;

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    /// `coupa`, `object` or `sink`.
    pub component: &'static str,
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Runs every check; never fails early, so the report is complete.
pub async fn run(settings: &Settings) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    let client = match CoupaClient::new(&settings.coupa) {
        Ok(c) => c,
        Err(e) => {
            rows.push(row(
                "coupa",
                &crate::redact::display_url(&settings.coupa.base_url),
                Err(e.to_string()),
            ));
            return rows;
        }
    };
    let plans = match settings.plans() {
        Ok(p) => p,
        Err(e) => {
            rows.push(row("coupa", "config", Err(e.to_string())));
            return rows;
        }
    };
    for plan in &plans {
        let result = probe_object(&client, plan).await;
        rows.push(row("object", &plan.name, result));
    }
    let stats = client.stats();
    let auth = if settings.coupa.oauth.is_some() {
        if stats.token_mints > 0 && stats.responses_2xx > 0 {
            Ok("OAuth token minted".to_string())
        } else {
            Err("no OAuth token could be minted (see the object rows)".to_string())
        }
    } else if stats.responses_2xx > 0 {
        Ok("API key accepted".to_string())
    } else {
        Err("no request succeeded with the API key (see the object rows)".to_string())
    };
    let shown = crate::redact::display_url(&settings.coupa.base_url);
    rows.insert(0, row("coupa", &shown, auth));
    for sink in &settings.sinks {
        let result = probe_sink(sink).await;
        rows.push(row("sink", &sink.name(), result));
    }
    rows
}

fn row(component: &'static str, name: &str, result: Result<String, String>) -> CheckRow {
    let (ok, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    CheckRow {
        component,
        name: name.to_string(),
        ok,
        detail,
    }
}

fn limit1() -> Vec<(String, String)> {
    vec![("limit".into(), "1".into())]
}

/// Phrases a failed probe; a 403 points at the object's read scope.
fn explain(plan: &ObjectPlan, e: CoupaError) -> String {
    match (&e, plan.spec) {
        (CoupaError::Forbidden { .. }, Some(spec)) => format!(
            "403 forbidden: the credentials lack scope `{}` (grant it, or remove the object)",
            spec.read_scope()
        ),
        _ => e.to_string(),
    }
}

async fn probe_object(client: &CoupaClient, plan: &ObjectPlan) -> Result<String, String> {
    let Some(parent) = plan.spec.and_then(|s| s.parent) else {
        let records = client
            .list(&plan.path, &limit1())
            .await
            .map_err(|e| explain(plan, e))?;
        return Ok(format!("listed {} ({} record)", plan.path, records.len()));
    };
    let parent_path = crate::coupa::objects::lookup(parent.object)
        .map_or("/api/suppliers".to_string(), |s| s.path.to_string());
    let parents = client
        .list(&parent_path, &limit1())
        .await
        .map_err(|e| explain(plan, e))?;
    let Some(id) = parents.first().and_then(crate::coupa::record::numeric_id) else {
        return Ok(format!(
            "listed {parent_path}: no parent record to look under"
        ));
    };
    let path = plan.path.replace(parent.placeholder, &id.to_string());
    let records = client
        .list(&path, &limit1())
        .await
        .map_err(|e| explain(plan, e))?;
    Ok(format!("listed {path} ({} record)", records.len()))
}

async fn probe_sink(sink: &SinkSettings) -> Result<String, String> {
    const TIMEOUT: Duration = Duration::from_secs(10);
    match sink {
        SinkSettings::File(c) if c.path == "-" => Ok("stdout".into()),
        SinkSettings::File(c) => {
            let path = std::path::Path::new(&c.path);
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let meta = std::fs::metadata(dir)
                .map_err(|e| format!("directory `{}`: {e}", dir.display()))?;
            if meta.permissions().readonly() {
                return Err(format!("directory `{}` is read-only", dir.display()));
            }
            Ok(format!("directory `{}` exists", dir.display()))
        }
        SinkSettings::Webhook(c) => {
            let host = c.url.host_str().unwrap_or_default().to_string();
            let port = c.url.port_or_known_default().unwrap_or(443);
            match tokio::time::timeout(
                TIMEOUT,
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await
            {
                Ok(Ok(_)) => Ok(format!("{host}:{port} accepts connections")),
                Ok(Err(e)) => Err(format!("cannot connect to {host}:{port}: {e}")),
                Err(_) => Err(format!("{host}:{port} did not answer within {TIMEOUT:?}")),
            }
        }
        SinkSettings::Kafka(c) => {
            let sink =
                crate::sink::kafka::KafkaSink::new(sink.name(), c).map_err(|e| e.to_string())?;
            let brokers = sink.probe(TIMEOUT).await.map_err(|e| e.to_string())?;
            Ok(format!("cluster answered ({brokers} broker(s))"))
        }
    }
}
