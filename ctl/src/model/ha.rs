//! High availability in the desired state (DESIGN §5): how ctld watches a
//! cluster's servers ([`HaSettings`]), a failover under way
//! ([`FailoverProgress`], persisted so that a restarted or newly elected
//! ctld finishes it), former masters waiting to be made replicas
//! ([`Group::demoting`]), and the history of failovers ([`FailoverRecord`]).
//!
//! A failover changes a group in two published versions: the first holds
//! the group's commands at every data plane ([`Group::hold`]); once every
//! data plane has acked it (or its lease has ended) ctld promotes the new
//! master, and the second version routes to it and lifts the hold.

use serde::{Deserialize, Serialize};

use super::cluster::{Cluster, Group, Replica};
use super::names::parse_address;
use super::slots::quote;
use super::ModelError;

/// How many finished failovers a cluster remembers.
pub const HISTORY: usize = 32;

/// Bounds of the settings, in milliseconds.
pub const MIN_INTERVAL_MS: u64 = 100;
/// At most a minute between checks.
pub const MAX_INTERVAL_MS: u64 = 60_000;
/// At most ten minutes before a master is failed.
pub const MAX_DOWN_AFTER_MS: u64 = 600_000;

/// How ctld watches and heals a cluster's groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaSettings {
    /// Every server is checked (PING, INFO replication) this often.
    pub check_interval_ms: u64,
    /// A master whose checks have failed this long (and that most data
    /// planes reporting on it fail too) is failed.
    pub down_after_ms: u64,
    /// Fail a failed master over to its best replica by itself.
    pub auto_failover: bool,
    /// A replica further behind the master's last seen offset than this is
    /// never promoted automatically (an operator may, with `--force`).
    pub max_lag_bytes: u64,
}

impl Default for HaSettings {
    fn default() -> HaSettings {
        HaSettings {
            check_interval_ms: 1000,
            down_after_ms: 5000,
            auto_failover: true,
            max_lag_bytes: 1 << 20,
        }
    }
}

impl HaSettings {
    /// Checks the bounds; the error names the setting.
    pub fn check(&self) -> Result<(), ModelError> {
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&self.check_interval_ms) {
            return Err(ModelError::invalid(format!(
                "check_interval_ms = {}: must be {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}",
                self.check_interval_ms
            )));
        }
        if self.down_after_ms < self.check_interval_ms || self.down_after_ms > MAX_DOWN_AFTER_MS {
            return Err(ModelError::invalid(format!(
                "down_after_ms = {}: must be at least check_interval_ms ({}) and at most \
                 {MAX_DOWN_AFTER_MS}",
                self.down_after_ms, self.check_interval_ms
            )));
        }
        Ok(())
    }
}

/// Why a failover happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailoverKind {
    /// ctld found the master failed.
    Automatic,
    /// An operator asked (`keywayctl failover`): the old master is alive and
    /// the replica catches up before it is promoted.
    Switchover,
}

/// A failover under way in a group (persisted: a restarted ctld finishes
/// it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverProgress {
    /// Numbered with the cluster's failovers.
    pub id: u64,
    /// Why.
    pub kind: FailoverKind,
    /// The master being replaced.
    pub from: String,
    /// The replica being promoted.
    pub to: String,
    /// The version that holds the group: promotion waits until every data
    /// plane has acked it or lost its lease.
    pub hold_version: u64,
    /// When it started (Unix milliseconds).
    pub started_ms: u64,
    /// The master's replication offset last seen, and the promoted
    /// replica's when it was chosen (bytes ctld saw written that the replica
    /// may lack: a lower bound of what the failover can lose).
    #[serde(default)]
    pub master_offset: u64,
    /// See `master_offset`.
    #[serde(default)]
    pub replica_offset: u64,
}

/// A finished (or abandoned) failover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRecord {
    /// Its id.
    pub id: u64,
    /// The group.
    pub group: String,
    /// Why.
    pub kind: FailoverKind,
    /// The old master.
    pub from: String,
    /// The new master (the old one if it did not happen).
    pub to: String,
    /// Unix milliseconds.
    pub started_ms: u64,
    /// Unix milliseconds.
    pub finished_ms: u64,
    /// "done", or why it did not happen.
    pub outcome: String,
    /// The old master's offset last seen minus the promoted replica's:
    /// writes ctld knows the new master lacks (0 for a switchover, which
    /// waits for the replica to catch up).
    #[serde(default)]
    pub offset_gap: u64,
}

/// Ends failover `p` of `g`: the hold is lifted, and its history entry is
/// returned, ending at `now_ms`: promoted (`why` is `None`), or abandoned
/// for `why` (then the old master stays, and nothing is lost).
fn end(g: &mut Group, p: &FailoverProgress, now_ms: u64, why: Option<&str>) -> FailoverRecord {
    g.hold = false;
    g.failover = None;
    let (to, outcome, offset_gap) = match why {
        None => (
            p.to.clone(),
            "done".to_string(),
            // A switchover promotes only once the replica has caught up.
            match p.kind {
                FailoverKind::Switchover => 0,
                FailoverKind::Automatic => p.master_offset.saturating_sub(p.replica_offset),
            },
        ),
        Some(why) => (p.from.clone(), why.to_string(), 0),
    };
    FailoverRecord {
        id: p.id,
        group: g.name.clone(),
        kind: p.kind,
        from: p.from.clone(),
        to,
        started_ms: p.started_ms,
        finished_ms: now_ms,
        outcome,
        offset_gap,
    }
}

impl Cluster {
    fn group_mut(&mut self, group: &str) -> Result<&mut Group, ModelError> {
        let g = self.group_index(group)?;
        Ok(&mut self.groups[g])
    }

    /// Starts a failover of `group` from master `from` to replica `to`: the
    /// group is held and the progress recorded. Refused while another
    /// failover of the group runs, or if its master is no longer `from`
    /// (changed since the decision).
    pub fn begin_failover(
        &mut self,
        group: &str,
        kind: FailoverKind,
        (from, to): (&str, &str),
        offsets: (u64, u64),
        now_ms: u64,
    ) -> Result<u64, ModelError> {
        let id = self.next_failover + 1;
        let version = self.version + 1;
        let g = self.group_mut(group)?;
        if g.master != from {
            return Err(ModelError::conflict(format!(
                "group {group:?}'s master changed to {} meanwhile",
                quote(&g.master)
            )));
        }
        if let Some(p) = &g.failover {
            return Err(ModelError::conflict(format!(
                "group {group:?} is failing over already (failover {} to {})",
                p.id,
                quote(&p.to)
            )));
        }
        if !g.replicas.iter().any(|r| r.address == to) {
            return Err(ModelError::not_found(format!(
                "group {group:?} has no replica {}",
                quote(to)
            )));
        }
        g.hold = true;
        g.failover = Some(FailoverProgress {
            id,
            kind,
            from: g.master.clone(),
            to: to.to_string(),
            hold_version: version,
            started_ms: now_ms,
            master_offset: offsets.0,
            replica_offset: offsets.1,
        });
        self.next_failover = id;
        Ok(id)
    }

    /// Finishes failover `id` of `group`: the promoted replica becomes the
    /// master, the hold is lifted, and the old master goes to `demoting`:
    /// listed (and read from) as a replica only once ctld sees it follow the
    /// new master with its link up.
    pub fn finish_failover(
        &mut self,
        group: &str,
        id: u64,
        now_ms: u64,
    ) -> Result<FailoverRecord, ModelError> {
        let g = self.group_mut(group)?;
        let p = match &g.failover {
            Some(p) if p.id == id => p.clone(),
            _ => {
                return Err(ModelError::conflict(format!(
                    "failover {id} of group {group:?} is not under way"
                )))
            }
        };
        let pos = g
            .replicas
            .iter()
            .position(|r| r.address == p.to)
            .ok_or_else(|| {
                ModelError::conflict(format!(
                    "replica {} left group {group:?} during the failover",
                    quote(&p.to)
                ))
            })?;
        let promoted = g.replicas.remove(pos);
        let old = Replica {
            address: std::mem::replace(&mut g.master, promoted.address),
            zone: std::mem::replace(&mut g.zone, promoted.zone),
        };
        g.demoting.push(old);
        let record = end(g, &p, now_ms, None);
        self.remember(record.clone());
        Ok(record)
    }

    /// Abandons failover `id` of `group` (nothing was promoted): the hold is
    /// lifted and `why` recorded.
    pub fn abandon_failover(
        &mut self,
        group: &str,
        id: u64,
        why: &str,
        now_ms: u64,
    ) -> Result<(), ModelError> {
        let g = self.group_mut(group)?;
        let p = match &g.failover {
            Some(p) if p.id == id => p.clone(),
            _ => return Ok(()),
        };
        let record = end(g, &p, now_ms, Some(why));
        self.remember(record);
        Ok(())
    }

    fn remember(&mut self, r: FailoverRecord) {
        self.failovers.push(r);
        if self.failovers.len() > HISTORY {
            let extra = self.failovers.len() - HISTORY;
            self.failovers.drain(..extra);
        }
    }

    /// A former master of `group` is now a replica of the current master:
    /// it joins the replicas (and data planes may read from it).
    pub fn demoted(&mut self, group: &str, address: &str) -> Result<(), ModelError> {
        let g = self.group_mut(group)?;
        let pos = g
            .demoting
            .iter()
            .position(|r| r.address == address)
            .ok_or_else(|| {
                ModelError::not_found(format!(
                    "group {group:?} has no former master {} to demote",
                    quote(address)
                ))
            })?;
        let r = g.demoting.remove(pos);
        g.replicas.push(r);
        Ok(())
    }

    /// Checks the failover state of every group: a hold only with a failover
    /// under way, which names the group's master and one of its replicas.
    pub(super) fn validate_ha(&self) -> Result<(), ModelError> {
        self.ha.check()?;
        for g in &self.groups {
            let invalid = |m: String| ModelError::invalid(format!("group {:?}: {m}", g.name));
            for r in &g.demoting {
                parse_address(&r.address).map_err(|e| invalid(format!("former master {e}")))?;
            }
            match &g.failover {
                None if g.hold => {
                    return Err(invalid("held without a failover under way".into()));
                }
                Some(p) => {
                    if !g.hold || p.from != g.master {
                        return Err(invalid(format!(
                            "failover {} from {} does not hold the group's master",
                            p.id,
                            quote(&p.from)
                        )));
                    }
                    if !g.replicas.iter().any(|r| r.address == p.to) {
                        return Err(invalid(format!(
                            "failover {} promotes {}, which is not a replica",
                            p.id,
                            quote(&p.to)
                        )));
                    }
                    if p.id == 0 || p.id > self.next_failover {
                        return Err(invalid(format!("failover id {} out of range", p.id)));
                    }
                }
                None => {}
            }
        }
        if self.failovers.len() > HISTORY {
            return Err(ModelError::invalid(format!(
                "{} failover records: at most {HISTORY}",
                self.failovers.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cluster::tests::{g, none};

    const M: &str = "127.0.0.1:7001";
    const R: &str = "127.0.0.1:7101";

    fn cluster() -> Cluster {
        let mut a = g("a", 7001);
        a.zone = "z1".into();
        a.replicas.push(Replica {
            address: "127.0.0.1:7101".into(),
            zone: "z2".into(),
        });
        let c = Cluster::create("c", 1024, vec![a, g("b", 7002)], 30_000, &none()).unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn a_failover_holds_then_promotes_and_parks_the_old_master() {
        let mut c = cluster();
        let id = c
            .begin_failover("a", FailoverKind::Automatic, (M, R), (100, 90), 1)
            .unwrap();
        c.version += 1;
        c.validate().unwrap();
        assert!(c.groups[0].hold);
        assert!(c.snapshot().groups[0].hold);
        let again = c.begin_failover("a", FailoverKind::Automatic, (M, R), (0, 0), 1);
        assert_eq!(again.unwrap_err().kind, crate::model::ErrorKind::Conflict);
        let r = c.finish_failover("a", id, 2).unwrap();
        c.version += 1;
        c.validate().unwrap();
        assert_eq!(r.offset_gap, 10);
        let a = &c.groups[0];
        assert_eq!(
            (a.master.as_str(), a.zone.as_str()),
            ("127.0.0.1:7101", "z2")
        );
        assert!(a.replicas.is_empty() && !a.hold && a.failover.is_none());
        assert_eq!(a.demoting[0].address, "127.0.0.1:7001");
        // Not routed to until demoted.
        let snap = c.snapshot();
        assert!(snap.groups[0].replicas.is_empty());
        c.demoted("a", "127.0.0.1:7001").unwrap();
        c.validate().unwrap();
        assert_eq!(c.snapshot().groups[0].replicas[0].address, "127.0.0.1:7001");
        assert_eq!(c.failovers.len(), 1);
    }

    #[test]
    fn a_switchover_records_no_gap_and_abandoning_lifts_the_hold() {
        let mut c = cluster();
        // Decided on a master that changed meanwhile: refused.
        let e = c
            .begin_failover("a", FailoverKind::Switchover, ("127.0.0.1:9", R), (5, 5), 1)
            .unwrap_err();
        assert_eq!(e.kind, crate::model::ErrorKind::Conflict);
        let id = c
            .begin_failover("a", FailoverKind::Switchover, (M, R), (9, 5), 1)
            .unwrap();
        assert_eq!(c.finish_failover("a", id, 2).unwrap().offset_gap, 0);
        c.demoted("a", M).unwrap();
        let id = c
            .begin_failover("a", FailoverKind::Switchover, (R, M), (5, 5), 3)
            .unwrap();
        c.abandon_failover("a", id, "the replica did not catch up", 4)
            .unwrap();
        assert!(!c.groups[0].hold);
        assert_eq!(
            c.failovers.last().unwrap().outcome,
            "the replica did not catch up"
        );
        assert!(c
            .begin_failover("a", FailoverKind::Automatic, (R, "127.0.0.1:9"), (0, 0), 1)
            .is_err());
    }

    #[test]
    fn inconsistent_failover_state_is_refused() {
        let mut c = cluster();
        c.groups[0].hold = true;
        assert!(c.validate().is_err(), "a hold needs a failover");
        let mut c = cluster();
        c.ha.down_after_ms = 10;
        assert!(c.validate().is_err());
        let mut c = cluster();
        c.begin_failover("a", FailoverKind::Automatic, (M, R), (0, 0), 1)
            .unwrap();
        c.groups[0].replicas.clear();
        assert!(c.validate().is_err());
        // A former master keeps its address from being used elsewhere.
        let mut c = cluster();
        let id = c
            .begin_failover("a", FailoverKind::Automatic, (M, R), (0, 0), 1)
            .unwrap();
        c.finish_failover("a", id, 2).unwrap();
        assert!(c.grow(g("x", 7001), &none()).is_err());
    }
}
