//! The shipped dashboards and alerts (`deploy/`): `promtool check rules`
//! and `promtool test rules` pass on the alert rules, the Grafana dashboard
//! is JSON with a query in every panel, and every metric name either uses
//! is one keyway or keyway-ctld exports (the list below: the metrics
//! contract the README's Metrics section documents).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Every metric family keyway and keyway-ctld export.
const METRICS: &[&str] = &[
    // keyway (the data plane's admin port).
    "keyway_requests_total",
    "keyway_request_duration_seconds",
    "keyway_backend_requests_total",
    "keyway_backend_errors_total",
    "keyway_backend_reconnects_total",
    "keyway_backend_request_duration_seconds",
    "keyway_backend_connections",
    "keyway_client_connections",
    "keyway_client_connections_accepted_total",
    "keyway_client_connections_refused_total",
    "keyway_client_connections_closed_total",
    "keyway_received_bytes_total",
    "keyway_sent_bytes_total",
    "keyway_errors_total",
    "keyway_migration_redirects_total",
    "keyway_migration_key_moves_total",
    "keyway_table_version",
    "keyway_lease_remaining_seconds",
    "keyway_fenced",
    "keyway_held_requests",
    "keyway_build_info",
    "keyway_cores",
    // keyway-ctld (its API port).
    "keyway_ctld_leader",
    "keyway_ctld_cluster_version",
    "keyway_ctld_group_up",
    "keyway_ctld_server_up",
    "keyway_ctld_dataplanes_connected",
    "keyway_ctld_dataplane_acked_version",
    "keyway_ctld_dataplane_lease_remaining_seconds",
    "keyway_ctld_migrations_active",
    "keyway_ctld_migration_slots_done_total",
    "keyway_ctld_migration_keys_moved_total",
    "keyway_ctld_migration_errors_total",
    "keyway_ctld_failovers_total",
    "keyway_ctld_failover_duration_seconds",
    "keyway_ctld_store_write_duration_seconds",
    "keyway_ctld_api_requests_total",
];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every `keyway_…` name in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("keyway_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// `name` is a metric of the list, or a histogram's series of one.
fn known(name: &str) -> bool {
    let family = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| {
            name.strip_suffix(s)
                .filter(|f| f.ends_with("_seconds") && METRICS.contains(f))
        })
        .unwrap_or(name);
    METRICS.contains(&family)
}

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian prometheus, scripts/deps.sh)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_pass_promtool_and_name_only_exported_metrics() {
    let dir = deploy().join("prometheus");
    promtool(&["check", "rules", "keyway-alerts.yml"], &dir);
    promtool(&["test", "rules", "keyway-alerts.test.yml"], &dir);
    let text = std::fs::read_to_string(dir.join("keyway-alerts.yml")).unwrap();
    let used = names(&text);
    assert!(used.len() >= 8, "the rules use {used:?}");
    let unknown: Vec<&String> = used.iter().filter(|n| !known(n)).collect();
    assert!(unknown.is_empty(), "not exported: {unknown:?}");
    for alert in [
        "KeywayDataPlaneFenced",
        "KeywayGroupDown",
        "KeywayFailoverHappened",
        "KeywayHighP99Latency",
        "KeywayMigrationStalled",
        "KeywayLeaseAboutToExpire",
    ] {
        assert!(
            text.contains(&format!("alert: {alert}\n")),
            "{alert} is missing"
        );
    }
}

#[test]
fn the_dashboard_is_json_and_queries_only_exported_metrics() {
    let text = std::fs::read_to_string(deploy().join("grafana/keyway.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let mut used = BTreeSet::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            used.extend(names(t["expr"].as_str().expect("an expr")));
        }
    }
    let unknown: Vec<&String> = used.iter().filter(|n| !known(n)).collect();
    assert!(unknown.is_empty(), "not exported: {unknown:?}");
    for m in [
        "keyway_requests_total",
        "keyway_request_duration_seconds_bucket",
        "keyway_backend_request_duration_seconds_bucket",
        "keyway_client_connections",
        "keyway_ctld_group_up",
        "keyway_ctld_migrations_active",
        "keyway_ctld_failovers_total",
        "keyway_lease_remaining_seconds",
    ] {
        assert!(used.contains(m), "the dashboard does not show {m}");
    }
    assert!(!known("keyway_nonsense_total") && !known("keyway_fenced_bucket"));
}
