//! The configs shipped in `deploy/` and `config/` are valid for this build
//! (a renamed key would otherwise only fail on someone's cluster).

use coupa_changefeed::config::Settings;

/// The indented block under `marker` in a YAML file, dedented.
fn block(path: &str, marker: &str) -> String {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_end().ends_with(marker))
        .skip(1);
    let first = lines.next().expect("block has content");
    let indent = first.len() - first.trim_start().len();
    std::iter::once(first)
        .chain(
            lines.take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent),
        )
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kubernetes_configmap_is_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("coupa-client-secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let toml = block("deploy/kubernetes/configmap.yaml", "config.toml: |")
        .replace(
            "/etc/coupa-changefeed/secrets/coupa-client-secret",
            secret.to_str().unwrap(),
        )
        // The pod's host name gives the shard; here, pretend to be pod 1.
        .replace("hostname/2", "1/2");
    let s = Settings::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(s.objects.len(), 3);
    assert_eq!(s.shard().unwrap().unwrap().count, 2);
}

#[test]
fn the_compose_config_is_valid() {
    let toml = block("deploy/docker-compose.yml", "content: |");
    let s = Settings::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(s.sinks.len(), 2);
}

/// Issue 12.8: the unit lifts the open-files limit well past what the ops
/// server may hold (`server.max_connections`) plus sled and the sinks.
#[test]
fn the_systemd_unit_raises_the_open_files_limit() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/systemd/coupa-changefeed.service"
    ))
    .unwrap();
    let limit: u64 = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE= in the unit")
        .trim()
        .parse()
        .expect("a number");
    let max_connections = coupa_changefeed::config::ServerSettings::default().max_connections;
    assert!(
        limit >= 4 * max_connections as u64,
        "LimitNOFILE={limit} vs server.max_connections={max_connections}"
    );
}
