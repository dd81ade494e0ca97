//! Health of every server of every cluster (DESIGN §5), and the decisions
//! taken from it.
//!
//! ctld checks each master, replica and former master every
//! `check_interval_ms` (PING and INFO replication, [`probe`]); data planes
//! report how they fare with the servers they use in their acks. A master is
//! **failed** when ctld's checks have failed for `down_after_ms` (counted
//! from the first failed check after its last good one) **and**, among the data planes whose reports on
//! it are fresh, more fail it than reach it ([`Tally::agrees_down`]): a ctld
//! cut off from a master that data planes still reach does not fail it
//! over. With no fresh report, ctld's own view decides.
//!
//! What is kept here is not persisted: a restarted or newly elected ctld
//! starts with every server unknown and counts `down_after` from its own
//! first checks.

pub mod failover;
pub mod probe;
pub mod supervisor;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::{Cluster, Group, HaSettings};
use crate::wire::{GroupHealth, ServerView};
pub use probe::{ProbeError, Replication};

/// ctld's own view of one server.
#[derive(Debug, Clone, Default)]
pub struct ServerState {
    /// When ctld first checked it (this ctld's life).
    pub first_check: Option<Instant>,
    /// Its last good check.
    pub last_ok: Option<Instant>,
    /// Its last check.
    pub last_check: Option<Instant>,
    /// Failed checks since the last good one.
    pub failures: u32,
    /// The first of them.
    pub failing_since: Option<Instant>,
    /// Why the last failed check failed.
    pub last_error: String,
    /// What its last good check said.
    pub replication: Option<Replication>,
}

impl ServerState {
    /// The last check succeeded.
    pub fn up(&self) -> bool {
        self.last_check.is_some() && self.failures == 0
    }

    /// ctld's checks have failed for at least `down_after`: every check
    /// since the first failed one (after the last good one) failed, and that
    /// first one is `down_after` old.
    pub fn down_for(&self, now: Instant, down_after: Duration) -> bool {
        self.failing_since
            .is_some_and(|since| now.saturating_duration_since(since) >= down_after)
    }

    /// Records a check's result.
    pub fn record(&mut self, at: Instant, r: Result<Replication, ProbeError>) {
        self.first_check.get_or_insert(at);
        self.last_check = Some(at);
        match r {
            Ok(rep) => {
                self.last_ok = Some(at);
                self.failures = 0;
                self.failing_since = None;
                self.replication = Some(rep);
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                self.failing_since.get_or_insert(at);
                self.last_error = e.to_string();
            }
        }
    }
}

/// What the data planes reporting on one server say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Their last attempt failed.
    pub failing: u32,
    /// They had a reply within `down_after`.
    pub reaching: u32,
}

impl Tally {
    /// Counts one data plane's report on a server: `failures` consecutive
    /// failures, the last `since_failure` before the report, and a success
    /// `since_success` before it. A data plane sends a report at once when
    /// a server turns from up to failing, so one whose last report had a
    /// success within `down_after` and no failure still reaches it, and one
    /// whose last attempt failed within `down_after` fails it (the caller
    /// drops reports older than `REPORT_FRESH`); one with no recent traffic
    /// abstains.
    pub fn count(
        &mut self,
        failures: u32,
        since_success: Option<Duration>,
        since_failure: Option<Duration>,
        down_after: Duration,
    ) {
        if failures > 0 && since_failure.is_some_and(|s| s < down_after) {
            self.failing += 1;
        } else if since_success.is_some_and(|s| s < down_after) {
            self.reaching += 1;
        }
    }

    /// Most data planes that report on the server fail it (or none
    /// reports).
    pub fn agrees_down(&self) -> bool {
        self.failing > self.reaching || self.failing + self.reaching == 0
    }
}

/// Every server's state, by cluster and address.
#[derive(Debug, Default)]
pub struct Board {
    servers: HashMap<(String, String), ServerState>,
    /// Groups that are failed and cannot be healed, with why.
    stuck: HashMap<(String, String), String>,
}

impl Board {
    /// One server's state.
    pub fn get(&self, cluster: &str, addr: &str) -> Option<&ServerState> {
        self.servers.get(&(cluster.to_string(), addr.to_string()))
    }

    /// Records a check.
    pub fn record(
        &mut self,
        cluster: &str,
        addr: &str,
        at: Instant,
        r: Result<Replication, ProbeError>,
    ) {
        self.servers
            .entry((cluster.to_string(), addr.to_string()))
            .or_default()
            .record(at, r);
    }

    /// Forgets the servers and groups no cluster lists any more: keeps only
    /// the (cluster, server address) pairs in `servers` and the (cluster,
    /// group) pairs in `groups`.
    pub fn retain(
        &mut self,
        servers: &HashSet<(String, String)>,
        groups: &HashSet<(String, String)>,
    ) {
        self.servers.retain(|k, _| servers.contains(k));
        self.stuck.retain(|k, _| groups.contains(k));
    }

    /// Marks a group as failed without a way to heal it (or clears it).
    pub fn set_stuck(&mut self, cluster: &str, group: &str, why: Option<String>) {
        let k = (cluster.to_string(), group.to_string());
        match why {
            Some(w) => {
                self.stuck.insert(k, w);
            }
            None => {
                self.stuck.remove(&k);
            }
        }
    }

    /// Why a group is failed and not healed, if it is.
    pub fn stuck(&self, cluster: &str, group: &str) -> Option<&str> {
        self.stuck
            .get(&(cluster.to_string(), group.to_string()))
            .map(String::as_str)
    }
}

/// The verdict on a group's master: at least two failed checks in a row,
/// failing for `down_after`, and the data planes agree.
pub fn master_failed(s: Option<&ServerState>, tally: Tally, ha: &HaSettings, now: Instant) -> bool {
    let down_after = Duration::from_millis(ha.down_after_ms);
    s.is_some_and(|s| s.failures >= 2 && s.down_for(now, down_after)) && tally.agrees_down()
}

/// Replicas this close (bytes) to the most advanced one count as level:
/// among them, one in another zone than the master's is preferred.
pub const ZONE_WINDOW: u64 = 64 << 10;

/// The replica to promote in place of `g`'s master: up (a good check within
/// two intervals), a replica by its own word, of this master (`follows`),
/// synced since it started and not in a full sync (not empty), not further
/// behind the master's last seen offset than `max_lag_bytes` (unless
/// `force`; when the master's offset is unknown — never seen by this ctld —
/// behind the most advanced replica), then the highest offset, preferring
/// another zone than the master's among replicas within [`ZONE_WINDOW`] of
/// it. The error says why there is none, replica by replica.
pub fn choose_replica(
    g: &Group,
    state: impl Fn(&str) -> Option<ServerState>,
    master_offset: u64,
    ha: &HaSettings,
    force: bool,
    now: Instant,
) -> Result<(String, u64), NoReplica> {
    let fresh = Duration::from_millis(ha.check_interval_ms * 2 + 500);
    let mut why = Vec::new();
    let mut eligible: Vec<(&str, &str, u64)> = Vec::new();
    for r in &g.replicas {
        let s = state(&r.address);
        let Some(s) = s.filter(|s| s.up() && s.last_ok.is_some_and(|t| now - t <= fresh)) else {
            why.push(format!("{} is not up", r.address));
            continue;
        };
        let rep = s.replication.clone().unwrap_or_default();
        if rep.is_master() {
            why.push(format!("{} says it is a master", r.address));
            continue;
        }
        if !failover::follows(&rep, &g.master) {
            why.push(format!(
                "{} replicates {}, not the master",
                r.address,
                rep.master.as_deref().unwrap_or("nothing")
            ));
            continue;
        }
        if !rep.synced {
            why.push(format!(
                "{} has not synced with its master since it started, or is in a full sync",
                r.address
            ));
            continue;
        }
        eligible.push((r.address.as_str(), r.zone.as_str(), rep.offset));
    }
    let top = eligible.iter().map(|e| e.2).max().unwrap_or(0);
    let reference = if master_offset > 0 {
        master_offset
    } else {
        top
    };
    eligible.retain(|&(addr, _, offset)| {
        let lag = reference.saturating_sub(offset);
        let ok = lag <= ha.max_lag_bytes || force;
        if !ok {
            why.push(format!(
                "{addr} is {lag} bytes behind the master's last seen offset (max_lag_bytes {})",
                ha.max_lag_bytes
            ));
        }
        ok
    });
    let top = eligible.iter().map(|e| e.2).max().unwrap_or(0);
    let best = eligible.iter().max_by_key(|&&(_, zone, offset)| {
        let level = offset + ZONE_WINDOW >= top;
        let other_zone = g.zone.is_empty() || zone != g.zone;
        (level && other_zone, offset)
    });
    match best {
        Some(&(addr, _, offset)) => Ok((addr.to_string(), offset)),
        None if g.replicas.is_empty() => Err(NoReplica::NoneListed),
        None => Err(NoReplica::NoneEligible(why)),
    }
}

/// Why [`choose_replica`] found no replica to promote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoReplica {
    /// The group has no replica.
    #[error("it has no replica")]
    NoneListed,
    /// Why each replica cannot be promoted, replica by replica.
    #[error("no replica can be promoted: {}", .0.join("; "))]
    NoneEligible(Vec<String>),
}

/// The health view of every group of `c`.
pub fn view(
    c: &Cluster,
    board: &Board,
    tally: impl Fn(&str) -> Tally,
    now: Instant,
) -> Vec<GroupHealth> {
    let ms = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_millis() as u64);
    c.groups
        .iter()
        .map(|g| {
            let mut servers = Vec::new();
            let listed = std::iter::once((g.master.as_str(), "master"))
                .chain(g.replicas.iter().map(|r| (r.address.as_str(), "replica")))
                .chain(
                    g.demoting
                        .iter()
                        .map(|r| (r.address.as_str(), "former-master")),
                );
            let mut master_failed_now = false;
            let mut replica_down = false;
            for (addr, what) in listed {
                let s = board.get(&c.name, addr);
                let t = tally(addr);
                let failed = what == "master" && master_failed(s, t, &c.ha, now);
                master_failed_now |= failed;
                let health = match s {
                    None => "unknown",
                    Some(_) if failed => "failed",
                    Some(s) if s.up() => "up",
                    Some(_) => "down",
                };
                replica_down |= what == "replica" && health != "up";
                servers.push(ServerView {
                    group: g.name.clone(),
                    address: addr.to_string(),
                    listed_as: what.to_string(),
                    health: health.to_string(),
                    last_ok_ms_ago: s.and_then(|s| ms(s.last_ok)),
                    last_error: s
                        .filter(|s| s.failures > 0)
                        .map(|s| s.last_error.clone())
                        .unwrap_or_default(),
                    role: s.and_then(|s| s.replication.as_ref().map(|r| r.role.clone())),
                    offset: s.and_then(|s| s.replication.as_ref().map(|r| r.offset)),
                    link_up: s
                        .and_then(|s| s.replication.as_ref())
                        .filter(|r| !r.is_master())
                        .map(|r| r.link_up),
                    dataplanes_failing: t.failing,
                    dataplanes_reaching: t.reaching,
                });
            }
            let problem = board.stuck(&c.name, &g.name).map(str::to_string);
            let state = if g.failover.is_some() {
                "failing-over"
            } else if master_failed_now || problem.is_some() {
                "failed"
            } else if replica_down {
                "degraded"
            } else {
                "ok"
            };
            GroupHealth {
                group: g.name.clone(),
                state: state.to_string(),
                problem,
                servers,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Replica;

    fn rep(role: &str, offset: u64) -> Result<Replication, ProbeError> {
        Ok(Replication {
            role: role.into(),
            offset,
            synced: true,
            master: (role == "slave").then(|| "m:1".to_string()),
            ..Replication::default()
        })
    }

    #[test]
    fn a_master_is_failed_only_after_down_after_and_with_the_data_planes() {
        let ha = HaSettings::default();
        let t0 = Instant::now();
        let mut s = ServerState::default();
        s.record(t0, rep("master", 10));
        s.record(
            t0 + Duration::from_secs(1),
            Err(ProbeError::Server("refused".into())),
        );
        let none = Tally::default();
        // One failed check is never enough, however long ago.
        assert!(!master_failed(
            Some(&s),
            none,
            &ha,
            t0 + Duration::from_secs(60)
        ));
        s.record(
            t0 + Duration::from_secs(2),
            Err(ProbeError::Server("refused".into())),
        );
        // Counted from the first failed check, not from the last good one.
        assert!(!master_failed(
            Some(&s),
            none,
            &ha,
            t0 + Duration::from_millis(5900)
        ));
        assert!(master_failed(
            Some(&s),
            none,
            &ha,
            t0 + Duration::from_secs(6)
        ));
        // Data planes that still reach it veto ctld's view.
        let mut t = Tally::default();
        let after = Duration::from_secs(5);
        t.count(0, Some(Duration::from_millis(50)), None, after);
        t.count(0, Some(Duration::from_millis(80)), None, after);
        t.count(3, None, Some(Duration::from_millis(10)), after);
        assert_eq!((t.failing, t.reaching), (1, 2));
        assert!(!master_failed(
            Some(&s),
            t,
            &ha,
            t0 + Duration::from_secs(9)
        ));
        // No recent traffic abstains.
        let mut t = Tally::default();
        t.count(0, Some(Duration::from_secs(6)), None, after);
        t.count(0, None, None, after);
        // An old failure (an idle connection closed long ago) abstains too.
        t.count(1, None, Some(Duration::from_secs(60)), after);
        t.count(2, Some(Duration::from_secs(6)), Some(Duration::ZERO), after);
        assert_eq!((t.failing, t.reaching), (1, 0));
        assert!(master_failed(Some(&s), t, &ha, t0 + Duration::from_secs(9)));
        // A good check clears it; never checked is never failed.
        s.record(t0 + Duration::from_secs(10), rep("master", 11));
        assert!(!master_failed(
            Some(&s),
            none,
            &ha,
            t0 + Duration::from_secs(20)
        ));
        assert!(!master_failed(None, none, &ha, t0));
        // Never up since ctld started: counted from the first check.
        let mut n = ServerState::default();
        n.record(t0, Err(ProbeError::Server("refused".into())));
        n.record(
            t0 + Duration::from_secs(1),
            Err(ProbeError::Server("refused".into())),
        );
        assert!(master_failed(
            Some(&n),
            none,
            &ha,
            t0 + Duration::from_secs(5)
        ));
    }

    #[test]
    fn the_replica_chosen_is_up_synced_close_and_in_another_zone() {
        let ha = HaSettings::default();
        let now = Instant::now();
        let mut g = Group {
            name: "g".into(),
            master: "m:1".into(),
            zone: "a".into(),
            ..Group::default()
        };
        for (addr, zone) in [("r1:1", "a"), ("r2:1", "b"), ("r3:1", "b"), ("r4:1", "c")] {
            g.replicas.push(Replica {
                address: addr.into(),
                zone: zone.into(),
            });
        }
        let states: HashMap<&str, ServerState> = [
            ("r1:1", rep("slave", 1000)),
            ("r2:1", rep("slave", 900)),
            ("r3:1", rep("slave", 950)),
            ("r4:1", Err(ProbeError::Server("down".into()))),
        ]
        .into_iter()
        .map(|(a, r)| {
            let mut s = ServerState::default();
            s.record(now, r);
            (a, s)
        })
        .collect();
        let get = |a: &str| states.get(a).cloned();
        // r1 has the highest offset but shares the master's zone.
        assert_eq!(
            choose_replica(&g, get, 1000, &ha, false, now).unwrap(),
            ("r3:1".to_string(), 950)
        );
        // Too far behind: none, unless forced.
        let strict = HaSettings {
            max_lag_bytes: 10,
            ..ha
        };
        // Only r1 is close enough: its zone does not matter then.
        assert_eq!(
            choose_replica(&g, get, 1000, &strict, false, now)
                .unwrap()
                .0,
            "r1:1"
        );
        let e = choose_replica(&g, get, 2000, &strict, false, now)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("r3:1 is 1050 bytes behind") && e.contains("r4:1 is not up"),
            "{e}"
        );
        assert_eq!(
            choose_replica(&g, get, 2000, &strict, true, now).unwrap().0,
            "r3:1"
        );
        // The master's offset unknown (a new ctld): measured against the
        // most advanced replica, r1; r3 is 50 behind.
        let tight = HaSettings {
            max_lag_bytes: 60,
            ..ha
        };
        assert_eq!(
            choose_replica(&g, get, 0, &tight, false, now).unwrap().0,
            "r3:1"
        );
        let tighter = HaSettings {
            max_lag_bytes: 10,
            ..ha
        };
        assert_eq!(
            choose_replica(&g, get, 0, &tighter, false, now).unwrap().0,
            "r1:1"
        );
        // Far ahead of the others, a same-zone replica wins.
        let far = |a: &str| match a {
            "r1:1" => {
                let mut s = ServerState::default();
                s.record(now, rep("slave", 1_000_000));
                Some(s)
            }
            other => get(other),
        };
        assert_eq!(
            choose_replica(&g, far, 0, &ha, false, now).unwrap().0,
            "r1:1"
        );
        // A replica of another master is never promoted.
        let stranger = |a: &str| {
            let mut s = ServerState::default();
            s.record(
                now,
                Ok(Replication {
                    master: Some(format!("other:{a}")),
                    ..rep("slave", 5000).unwrap()
                }),
            );
            Some(s)
        };
        let e = choose_replica(&g, stranger, 0, &ha, true, now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the master"), "{e}");
        // An empty replica is never promoted; nor one that says it is a master.
        let mut s = ServerState::default();
        s.record(
            now,
            Ok(Replication {
                role: "slave".into(),
                offset: 1,
                master: Some("m:1".into()),
                ..Replication::default()
            }),
        );
        let mut m = ServerState::default();
        m.record(now, rep("master", 5000));
        let only = |a: &str| match a {
            "r1:1" => Some(s.clone()),
            "r2:1" => Some(m.clone()),
            _ => None,
        };
        let e = choose_replica(&g, only, 0, &ha, true, now)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has not synced") && e.contains("says it is a master"),
            "{e}"
        );
        g.replicas.clear();
        assert_eq!(
            choose_replica(&g, get, 0, &ha, false, now)
                .unwrap_err()
                .to_string(),
            "it has no replica"
        );
    }
}
