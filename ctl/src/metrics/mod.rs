//! keyway-ctld's metrics (`GET /metrics`, the names of
//! `/work/briefs/metrics-contract.md` as the README lists them).
//!
//! Two kinds of values:
//! - **counters and histograms** of what happened — API requests by route
//!   pattern and status, failovers and their duration, migration slots,
//!   keys and errors, store write latency — kept in one process-wide
//!   [`Registry`] ([`global`]): a term of an elected ctld has its own
//!   `Ctld`, but its counters must not restart with each term. Counters are
//!   atomics or maps behind a small lock, touched once per API request or
//!   per migration/failover step, never on a data plane's path;
//! - **gauges** of the state now — leader, cluster versions, group and
//!   server health, data planes connected, acked versions and leases,
//!   migrations active — read at scrape time from the active term's
//!   daemon ([`render`]); a standby has only `keyway_ctld_leader 0` and the
//!   counters.
//!
//! Label values are bounded: clusters, groups, servers and data planes are
//! what the desired state names; API routes are route patterns
//! (`/v1/clusters/{name}`), never raw paths.

pub mod histogram;
pub mod parse;
pub mod text;

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use histogram::{Histogram, FAILOVER_BUCKETS, LATENCY_BUCKETS};
use text::{Encoder, Kind};

use crate::daemon::Ctld;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A cluster's migration counters.
#[derive(Debug, Default, Clone, Copy)]
struct MigrationCounts {
    slots_done: u64,
    keys_moved: u64,
    errors: u64,
}

/// Everything counted since the process started.
#[derive(Debug)]
pub struct Registry {
    api: Mutex<BTreeMap<(String, u16), u64>>,
    failovers: Mutex<BTreeMap<(String, String, &'static str), u64>>,
    failover_duration: Histogram,
    store_file: Histogram,
    store_etcd: Histogram,
    migrations: Mutex<HashMap<String, MigrationCounts>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The process's registry.
pub fn global() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);
    &REGISTRY
}

/// A failover's outcome, the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverResult {
    /// The replica was promoted and published.
    Done,
    /// Abandoned before a promotion.
    Failed,
}

/// Which store a write went to, the `store` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded file store.
    File,
    /// etcd.
    Etcd,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::new()
    }
}

impl Registry {
    /// Nothing counted yet.
    pub fn new() -> Registry {
        Registry {
            api: Mutex::new(BTreeMap::new()),
            failovers: Mutex::new(BTreeMap::new()),
            failover_duration: Histogram::new(FAILOVER_BUCKETS),
            store_file: Histogram::new(LATENCY_BUCKETS),
            store_etcd: Histogram::new(LATENCY_BUCKETS),
            migrations: Mutex::new(HashMap::new()),
        }
    }

    /// An API request was answered.
    pub fn api_request(&self, route: &str, status: u16) {
        let mut api = lock(&self.api);
        match api.get_mut(&(route.to_string(), status)) {
            Some(n) => *n += 1,
            None => {
                api.insert((route.to_string(), status), 1);
            }
        }
    }

    /// A failover ended.
    pub fn failover(&self, cluster: &str, group: &str, result: FailoverResult, took: Duration) {
        let result = match result {
            FailoverResult::Done => "done",
            FailoverResult::Failed => "failed",
        };
        *lock(&self.failovers)
            .entry((cluster.to_string(), group.to_string(), result))
            .or_default() += 1;
        self.failover_duration.observe(took);
    }

    /// A store write took `took`.
    pub fn store_write(&self, kind: StoreKind, took: Duration) {
        match kind {
            StoreKind::File => self.store_file.observe(took),
            StoreKind::Etcd => self.store_etcd.observe(took),
        }
    }

    fn migration(&self, cluster: &str, f: impl FnOnce(&mut MigrationCounts)) {
        let mut m = lock(&self.migrations);
        match m.get_mut(cluster) {
            Some(c) => f(c),
            None => f(m.entry(cluster.to_string()).or_default()),
        }
    }

    /// A migration of `cluster` finished, having moved `slots` slots.
    pub fn migration_slots_done(&self, cluster: &str, slots: u64) {
        self.migration(cluster, |c| c.slots_done += slots);
    }

    /// Keys of `cluster` moved by a sweep.
    pub fn migration_keys_moved(&self, cluster: &str, keys: u64) {
        self.migration(cluster, |c| c.keys_moved += keys);
    }

    /// Errors of a migration of `cluster` (recorded in its progress).
    pub fn migration_errors(&self, cluster: &str, errors: u64) {
        self.migration(cluster, |c| c.errors += errors);
    }

    /// Drops the counters labelled with a deleted cluster (so that creating
    /// and deleting clusters does not grow the registry, nor `/metrics`,
    /// without bound; their series end).
    pub fn forget_cluster(&self, cluster: &str) {
        lock(&self.failovers).retain(|(c, _, _), _| c != cluster);
        lock(&self.migrations).remove(cluster);
    }
}

/// Times a store write and records it.
pub fn time_store_write<T>(kind: StoreKind, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    global().store_write(kind, t.elapsed());
    r
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The gauges of the active term's daemon.
fn state_gauges(e: &mut Encoder, ctld: &Ctld) {
    let state = ctld.state();
    e.family(
        "keyway_ctld_cluster_version",
        Kind::Gauge,
        "The version of each cluster's desired state.",
    );
    for (name, c) in &state.clusters {
        e.sample(
            "keyway_ctld_cluster_version",
            &[("cluster", name)],
            c.version as f64,
        );
    }
    let health: Vec<(String, Vec<crate::wire::GroupHealth>)> = state
        .clusters
        .iter()
        .map(|(name, c)| (name.clone(), ctld.health(c)))
        .collect();
    e.family(
        "keyway_ctld_group_up",
        Kind::Gauge,
        "1 if a group serves (ok or degraded), 0 if it is failing over or failed.",
    );
    for (cluster, groups) in &health {
        for g in groups {
            let up = g.state == "ok" || g.state == "degraded";
            e.sample(
                "keyway_ctld_group_up",
                &[("cluster", cluster), ("group", &g.group)],
                bool_value(up),
            );
        }
    }
    e.family(
        "keyway_ctld_server_up",
        Kind::Gauge,
        "1 if ctld's checks of a server pass; role is what the desired state lists it as.",
    );
    for (cluster, groups) in &health {
        for g in groups {
            for s in &g.servers {
                e.sample(
                    "keyway_ctld_server_up",
                    &[
                        ("cluster", cluster),
                        ("group", &s.group),
                        ("server", &s.address),
                        ("role", &s.listed_as),
                    ],
                    bool_value(s.health == "up"),
                );
            }
        }
    }
    let planes = ctld.dataplanes(None);
    let mut connected: BTreeMap<&str, u64> =
        state.clusters.keys().map(|c| (c.as_str(), 0)).collect();
    for p in planes.iter().filter(|p| p.connected) {
        if let Some(n) = connected.get_mut(p.cluster.as_str()) {
            *n += 1;
        }
    }
    e.family(
        "keyway_ctld_dataplanes_connected",
        Kind::Gauge,
        "Data planes with an open control session, by cluster.",
    );
    for (cluster, n) in &connected {
        e.sample(
            "keyway_ctld_dataplanes_connected",
            &[("cluster", cluster)],
            *n as f64,
        );
    }
    e.family(
        "keyway_ctld_dataplane_acked_version",
        Kind::Gauge,
        "The newest version each data plane acked.",
    );
    for p in &planes {
        e.sample(
            "keyway_ctld_dataplane_acked_version",
            &[("cluster", &p.cluster), ("dataplane", &p.id)],
            p.acked_version as f64,
        );
    }
    e.family(
        "keyway_ctld_dataplane_lease_remaining_seconds",
        Kind::Gauge,
        "Seconds left on each data plane's lease as ctld sees it (0: expired or none granted).",
    );
    for p in &planes {
        let left = p.lease_remaining_ms.unwrap_or(0) as f64 / 1000.0;
        e.sample(
            "keyway_ctld_dataplane_lease_remaining_seconds",
            &[("cluster", &p.cluster), ("dataplane", &p.id)],
            left,
        );
    }
    e.family(
        "keyway_ctld_migrations_active",
        Kind::Gauge,
        "Migrations not done nor cancelled, by cluster.",
    );
    for (name, c) in &state.clusters {
        let n = c.migrations.iter().filter(|m| m.active()).count();
        e.sample(
            "keyway_ctld_migrations_active",
            &[("cluster", name)],
            n as f64,
        );
    }
}

/// One of a cluster's migration counters.
type Field = fn(&MigrationCounts) -> u64;

/// The counters and histograms of the registry.
fn counters(e: &mut Encoder, r: &Registry) {
    let migrations: BTreeMap<String, MigrationCounts> = lock(&r.migrations)
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let families: [(&str, &str, Field); 3] = [
        (
            "keyway_ctld_migration_slots_done_total",
            "Slots whose migration finished, by cluster.",
            |c| c.slots_done,
        ),
        (
            "keyway_ctld_migration_keys_moved_total",
            "Keys ctld's sweeps moved (MIGRATE), by cluster.",
            |c| c.keys_moved,
        ),
        (
            "keyway_ctld_migration_errors_total",
            "Errors recorded in migrations' progress, by cluster.",
            |c| c.errors,
        ),
    ];
    for (name, help, get) in families {
        e.family(name, Kind::Counter, help);
        for (cluster, c) in &migrations {
            e.sample(name, &[("cluster", cluster)], get(c) as f64);
        }
    }
    e.family(
        "keyway_ctld_failovers_total",
        Kind::Counter,
        "Failovers and switchovers that ended, by result (done, failed: abandoned).",
    );
    for ((cluster, group, result), n) in lock(&r.failovers).iter() {
        e.sample(
            "keyway_ctld_failovers_total",
            &[("cluster", cluster), ("group", group), ("result", result)],
            *n as f64,
        );
    }
    e.family(
        "keyway_ctld_failover_duration_seconds",
        Kind::Histogram,
        "How long failovers took, from when ctld began driving them to their end.",
    );
    e.histogram(
        "keyway_ctld_failover_duration_seconds",
        &[],
        &r.failover_duration.values(),
    );
    e.family(
        "keyway_ctld_store_write_duration_seconds",
        Kind::Histogram,
        "How long saving the state took (fsync, or the etcd transaction).",
    );
    for (store, h) in [("file", &r.store_file), ("etcd", &r.store_etcd)] {
        let v = h.values();
        if v.counts.iter().any(|&n| n > 0) {
            e.histogram(
                "keyway_ctld_store_write_duration_seconds",
                &[("store", store)],
                &v,
            );
        }
    }
    e.family(
        "keyway_ctld_api_requests_total",
        Kind::Counter,
        "API requests answered, by route pattern and status.",
    );
    for ((route, status), n) in lock(&r.api).iter() {
        e.sample(
            "keyway_ctld_api_requests_total",
            &[("route", route), ("status", &status.to_string())],
            *n as f64,
        );
    }
}

/// The whole text: `active` is this term's daemon if this ctld is active.
pub fn render(active: Option<&Ctld>) -> String {
    let mut e = Encoder::new();
    e.family(
        "keyway_ctld_leader",
        Kind::Gauge,
        "1 if this keyway-ctld is the active one (always with the file store).",
    );
    e.sample("keyway_ctld_leader", &[], bool_value(active.is_some()));
    if let Some(ctld) = active {
        state_gauges(&mut e, ctld);
    }
    counters(&mut e, global());
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_clusters_counters_are_dropped() {
        let r = Registry::new();
        r.failover("gone", "g", FailoverResult::Done, Duration::from_millis(1));
        r.failover(
            "kept",
            "g",
            FailoverResult::Failed,
            Duration::from_millis(1),
        );
        r.migration_keys_moved("gone", 5);
        r.migration_keys_moved("kept", 5);
        r.forget_cluster("gone");
        let failovers = lock(&r.failovers);
        assert!(
            failovers.keys().all(|(c, _, _)| c == "kept"),
            "{failovers:?}"
        );
        assert_eq!(failovers.len(), 1);
        let migrations = lock(&r.migrations);
        assert!(!migrations.contains_key("gone") && migrations.contains_key("kept"));
    }

    #[test]
    fn every_family_is_written_once_and_reads_back() {
        global().api_request("/v1/clusters", 200);
        global().failover("c", "g", FailoverResult::Done, Duration::from_millis(300));
        global().migration_keys_moved("c", 5);
        let text = render(None);
        let mut families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or(""))
            .collect();
        let n = families.len();
        families.sort();
        families.dedup();
        assert_eq!(families.len(), n, "a family written twice: {text}");
        assert!(families.iter().all(|f| f.starts_with("keyway_ctld_")));
        let samples = parse::parse(&text).expect("the text reads back");
        assert_eq!(parse::sum(&samples, "keyway_ctld_leader", &[]), 0.0);
        assert!(
            parse::sum(
                &samples,
                "keyway_ctld_failovers_total",
                &[("result", "done")]
            ) >= 1.0
        );
        assert!(
            !text.contains("keyway_ctld_cluster_version"),
            "a standby has no state gauges"
        );
    }
}
