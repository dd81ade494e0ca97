//! The HTTP API's request and response bodies: what `keyway-ctld`'s server
//! ([`crate::api`]) reads and writes and what `keywayctl` ([`crate::cli`],
//! [`crate::client`]) sends and reads. Plain serde types over the pure model
//! ([`crate::model`]), no server code (no axum, no tokio), so the CLI depends
//! on this module and the model only, never on the server's `api` or
//! `daemon`. Field names and defaults are the JSON API: renaming one breaks
//! older CLIs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{
    Cluster, FailoverKind, Group, HaSettings, Migration, MigrationState, MoveSettings, ReadFrom,
    Replica,
};

/// Every error reply's body: `{"error": "..."}`, with a status that says
/// what kind (see [`crate::api`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and, where it can, what to do.
    pub error: String,
}

/// `?force=true`: accept addresses that do not resolve (and, on snapshot
/// apply, a snapshot exported before the cluster last changed).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Force {
    /// Force it.
    #[serde(default)]
    pub force: bool,
}

// Clusters, groups, slots and data planes.

/// `POST /v1/clusters`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCluster {
    /// Name.
    pub name: String,
    /// Slot count (default 16384).
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Groups; the slots are split evenly among them in this order.
    pub groups: Vec<Group>,
    /// Lease for its data planes (default: ctld's `--lease`).
    #[serde(default)]
    pub lease_ms: Option<u64>,
    /// Health checks and automatic failover (default: checks every second,
    /// a master failed after 5 s, automatic failover on).
    #[serde(default)]
    pub ha: Option<HaSettings>,
}

fn default_slots() -> u32 {
    16384
}

/// `PATCH /v1/clusters/{name}/groups/{group}`: any of these edits.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEdit {
    /// New master address.
    #[serde(default)]
    pub master: Option<String>,
    /// The master's zone.
    #[serde(default)]
    pub zone: Option<String>,
    /// Replicas to add.
    #[serde(default)]
    pub add_replicas: Vec<Replica>,
    /// Replicas to remove, by address.
    #[serde(default)]
    pub remove_replicas: Vec<String>,
    /// Zones of existing replicas, by address.
    #[serde(default)]
    pub replica_zones: BTreeMap<String, String>,
    /// Where data planes send read-only commands.
    #[serde(default)]
    pub read_from: Option<ReadFrom>,
    /// TLS to the group's servers on or off (off also forgets the server
    /// name).
    #[serde(default)]
    pub tls: Option<bool>,
    /// The name the servers' certificates must carry ("" for none: each
    /// server's own host).
    #[serde(default)]
    pub tls_server_name: Option<String>,
}

/// `POST /v1/clusters/{name}/slots`: give unowned slots to a group.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// Ranges, e.g. `"0-100,200"`.
    pub slots: String,
    /// The group.
    pub group: String,
}

/// One line of `GET /v1/clusters`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterSummary {
    /// Name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// Slot count.
    pub slots: u32,
    /// Number of groups.
    pub groups: usize,
    /// Data planes known to serve it.
    pub dataplanes: usize,
}

/// `GET /v1/clusters/{name}`.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// The desired state.
    #[serde(flatten)]
    pub cluster: Cluster,
    /// Its data planes.
    pub dataplanes: Vec<DataPlaneView>,
    /// Every group's and server's health, as ctld's checks and the data
    /// planes' reports see it.
    pub health: Vec<GroupHealth>,
}

/// A data plane as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataPlaneView {
    /// Its id.
    pub id: String,
    /// The cluster it serves.
    pub cluster: String,
    /// Where its clients connect.
    pub address: String,
    /// A control session is open.
    pub connected: bool,
    /// The newest version it acked.
    pub acked_version: u64,
    /// Nothing routed under an older version is in flight there.
    pub drained: bool,
    /// Milliseconds left on its lease as ctld sees it (none: expired or never
    /// granted by this ctld).
    pub lease_remaining_ms: Option<u64>,
    /// It refuses requests: it says so, or its lease has expired.
    pub fenced: bool,
    /// Where its admin endpoint (`/metrics`, `/table`) listens, as its
    /// latest session's Hello said (empty: none, or not said).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub admin: String,
    /// The admin endpoint speaks HTTPS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin_tls: bool,
}

/// One structured event (`GET /v1/clusters/{name}/events`,
/// `crate::events`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Its number: increasing across the process's events.
    pub seq: u64,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The cluster.
    pub cluster: String,
    /// Who caused it: `api` or `ctld`.
    pub who: String,
    /// The API peer's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The API request's method and route pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// `change`, `created`, `deleted`, `failover` or `migration`.
    pub kind: String,
    /// What: for a change, the new version and the change; for a step,
    /// the step and its details.
    pub what: serde_json::Value,
}

// Health and failover.

/// One group's health as `cluster show` and the API show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GroupHealth {
    /// The group.
    pub group: String,
    /// "ok", "degraded" (a replica is down), "failing-over", or "failed".
    pub state: String,
    /// Why it is failed and not healed, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Its servers.
    pub servers: Vec<ServerView>,
}

/// One server as `cluster show` and the API show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ServerView {
    /// Its group.
    pub group: String,
    /// `host:port`.
    pub address: String,
    /// What the desired state says it is: "master", "replica" or
    /// "former-master" (failed over, to be made a replica when back).
    pub listed_as: String,
    /// "up", "down" (checks failing), "failed" (a master down for
    /// `down_after` that the data planes fail too), or "unknown" (not
    /// checked yet).
    pub health: String,
    /// Milliseconds since the last good check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ok_ms_ago: Option<u64>,
    /// The last failed check's reason.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub last_error: String,
    /// Its role as it says (`INFO replication`), from the last good check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Its replication offset, from the last good check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// A replica's link to its master is up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_up: Option<bool>,
    /// Data planes whose last attempt on it failed.
    pub dataplanes_failing: u32,
    /// Data planes that had a reply from it recently.
    pub dataplanes_reaching: u32,
}

/// `POST /v1/clusters/{name}/groups/{group}/failover`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// The replica to promote (default: the best one, as an automatic
    /// failover would choose).
    #[serde(default)]
    pub to: Option<String>,
    /// Promote even a replica that is down by ctld's checks or lagging,
    /// and fail over a master that is down (no catch-up wait then).
    #[serde(default)]
    pub force: bool,
}

/// The answer: the failover started (see the cluster's `failovers` for its
/// end).
#[derive(Debug, Serialize, Deserialize)]
pub struct FailoverStarted {
    /// Its id.
    pub failover: u64,
    /// The replica being promoted.
    pub to: String,
    /// "switchover" (the master is up: its replica catches up first, no
    /// write is lost) or "automatic" (forced while the master is down).
    pub kind: FailoverKind,
}

/// `PATCH /v1/clusters/{name}`: any of these settings.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterEdit {
    /// How often each server is checked.
    #[serde(default)]
    pub check_interval_ms: Option<u64>,
    /// How long a master's checks fail before it is failed.
    #[serde(default)]
    pub down_after_ms: Option<u64>,
    /// Fail masters over automatically.
    #[serde(default)]
    pub auto_failover: Option<bool>,
    /// The most a replica may lag to be promoted automatically.
    #[serde(default)]
    pub max_lag_bytes: Option<u64>,
    /// The data planes' lease.
    #[serde(default)]
    pub lease_ms: Option<u64>,
}

// Migrations.

/// `POST /v1/clusters/{name}/migrations`: move slots to a group.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartMigration {
    /// Ranges, e.g. `"0-100,200"`.
    pub slots: String,
    /// The target group.
    pub to: String,
    /// How the sweep moves keys.
    #[serde(default)]
    pub settings: MoveSettings,
    /// Start with the sweep paused (data planes still move keys on demand).
    #[serde(default)]
    pub paused: bool,
}

/// `POST /v1/clusters/{name}/rebalance` and `/drain`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rebalance {
    /// For drain: the group whose slots all move to the others.
    #[serde(default)]
    pub group: Option<String>,
    /// How the sweeps move keys.
    #[serde(default)]
    pub settings: MoveSettings,
    /// Start with the sweeps paused.
    #[serde(default)]
    pub paused: bool,
}

/// A migration as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrationView {
    /// The migration.
    #[serde(flatten)]
    pub migration: Migration,
    /// Its slots, as operators write them.
    pub slots: String,
    /// Seconds left at the recent rate, while moving (an estimate: data
    /// planes move keys too).
    pub eta_s: Option<u64>,
}

impl MigrationView {
    /// The view of `m`.
    pub fn of(m: &Migration) -> MigrationView {
        let p = &m.progress;
        let eta_s = match (m.state, p.estimated_keys) {
            (MigrationState::Moving { .. }, Some(est)) if p.rate > 0 => {
                Some(est.saturating_sub(p.keys_moved) / p.rate)
            }
            _ => None,
        };
        MigrationView {
            slots: m.slots_text(),
            migration: m.clone(),
            eta_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_take_their_documented_defaults_and_refuse_unknown_fields() {
        let c: CreateCluster = serde_json::from_str(r#"{"name":"c","groups":[]}"#).unwrap();
        assert_eq!(
            (c.slots, c.lease_ms.is_none(), c.ha.is_none()),
            (16384, true, true)
        );
        let err = serde_json::from_str::<CreateCluster>(r#"{"name":"c","groups":[],"x":1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `x`"), "{err}");
        let f: Force = serde_json::from_str("{}").unwrap();
        assert!(!f.force);
    }

    #[test]
    fn the_error_body_is_one_field() {
        let e = ErrorBody {
            error: "no cluster \"c\"".into(),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(text, r#"{"error":"no cluster \"c\""}"#);
        assert_eq!(serde_json::from_str::<ErrorBody>(&text).unwrap(), e);
    }
}

// Client users.

/// `PUT /v1/clusters/{name}/users` (the whole list; empty: the data planes
/// keep their config files' users), and the reply of it and of `GET`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterUsers {
    /// The cluster's version (in replies; ignored in requests).
    #[serde(default)]
    pub version: u64,
    /// The users; in replies, passwords as `#sha256` hashes only.
    pub users: Vec<crate::model::ClientUser>,
}
