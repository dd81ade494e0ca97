//! Every change to a cluster as a value: [`Change`] names what the API, the
//! migration orchestrator and the failover supervisor ask of the model, and
//! [`Cluster::dispatch`] is the one function that applies one (as Sōzu's
//! `ConfigState::dispatch`). A change can be logged (`Debug`, and the short
//! `Display` the daemon logs) and tested here without a daemon; the daemon
//! (`crate::daemon::Ctld::change`) wraps `dispatch` in copy → validate →
//! persist → publish.

use std::collections::BTreeMap;
use std::fmt;

use super::{
    ClientUser, Cluster, FailoverKind, Group, MigrationState, ModelError, MoveSettings, ReadFrom,
    Replica, Resolved, SlotSet,
};

/// A change to one cluster. Times are Unix milliseconds, given by the caller
/// so that applying a change is deterministic.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Adds a group (no slots).
    Grow {
        /// The group.
        group: Group,
        /// What its addresses resolved to.
        resolved: Resolved,
    },
    /// Removes a group that owns no slots.
    Shrink {
        /// The group's name.
        group: String,
    },
    /// Edits a group, in this order: master, master's zone, replicas added,
    /// replicas removed, replicas' zones, read policy, TLS.
    EditGroup {
        /// The group's name.
        group: String,
        /// The edits.
        edit: GroupChanges,
        /// What new addresses resolved to.
        resolved: Resolved,
    },
    /// Gives unowned slots to a group.
    Assign {
        /// Slot ranges as operators write them (`"0-100,200"`).
        slots: String,
        /// The group.
        group: String,
    },
    /// Replaces the cluster with an exported and edited copy.
    Apply {
        /// The desired cluster.
        desired: Box<Cluster>,
        /// What its new addresses resolved to.
        resolved: Resolved,
        /// Apply even if the cluster changed since `desired` was exported.
        force: bool,
    },
    /// Health-check, failover and lease settings; `None` keeps a setting.
    Settings {
        /// How often each server is checked.
        check_interval_ms: Option<u64>,
        /// How long a master's checks fail before it is failed.
        down_after_ms: Option<u64>,
        /// Fail masters over automatically.
        auto_failover: Option<bool>,
        /// The most a replica may lag to be promoted automatically.
        max_lag_bytes: Option<u64>,
        /// The data planes' lease (checked by the caller).
        lease_ms: Option<u64>,
    },
    /// Starts moving slots to a group: one migration per current owner.
    Migrate {
        /// Slot ranges as operators write them.
        slots: String,
        /// The target group.
        to: String,
        /// How keys move.
        settings: MoveSettings,
        /// Start with the sweep paused.
        paused: bool,
        /// Now.
        now_ms: u64,
    },
    /// Starts the migrations that even out the slots (rebalance) or empty
    /// one group (drain).
    Balance {
        /// The group to empty (drain), or none (rebalance).
        drain: Option<String>,
        /// How keys move.
        settings: MoveSettings,
        /// Start with the sweeps paused.
        paused: bool,
        /// Now.
        now_ms: u64,
    },
    /// Pauses a migration's sweep.
    Pause {
        /// The migration.
        id: u64,
    },
    /// Resumes a migration's sweep.
    Resume {
        /// The migration.
        id: u64,
    },
    /// Cancels a migration.
    Cancel {
        /// The migration.
        id: u64,
        /// Now.
        now_ms: u64,
    },
    /// Moves migrations to their next phase, in the version this change
    /// creates.
    Advance {
        /// The migrations.
        ids: Vec<u64>,
        /// The phase: `Blocking` (true: `Moving`).
        moving: bool,
        /// Now.
        now_ms: u64,
    },
    /// Finishes a migration whose sweep found no key left, if it is still
    /// moving in the version the sweep ran under.
    FinishMigration {
        /// The migration.
        id: u64,
        /// The version its sweep ran under.
        version: u64,
        /// Now.
        now_ms: u64,
    },
    /// Starts a failover of a group from its master to a replica.
    BeginFailover {
        /// The group.
        group: String,
        /// Switchover (the master is up) or automatic.
        kind: FailoverKind,
        /// The master it replaces.
        from: String,
        /// The replica promoted.
        to: String,
        /// The master's and the replica's replication offsets.
        offsets: (u64, u64),
        /// Now.
        now_ms: u64,
    },
    /// Abandons a failover (nothing was promoted).
    AbandonFailover {
        /// The group.
        group: String,
        /// The failover.
        id: u64,
        /// Why.
        why: String,
        /// Now.
        now_ms: u64,
    },
    /// Finishes a failover: the replica is the group's master.
    FinishFailover {
        /// The group.
        group: String,
        /// The failover.
        id: u64,
        /// Now.
        now_ms: u64,
    },
    /// Replaces the cluster's client users (checked, passwords already
    /// hashed: see `model::users::prepare`); empty: the data planes keep
    /// their config files' users.
    SetUsers {
        /// The users.
        users: Vec<ClientUser>,
    },
    /// A former master follows the new one: list it as a replica.
    Demoted {
        /// The group.
        group: String,
        /// The former master.
        address: String,
    },
}

/// The edits of [`Change::EditGroup`] (the API's `GroupEdit`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupChanges {
    /// New master address.
    pub master: Option<String>,
    /// The master's zone.
    pub zone: Option<String>,
    /// Replicas to add.
    pub add_replicas: Vec<Replica>,
    /// Replicas to remove, by address.
    pub remove_replicas: Vec<String>,
    /// Zones of existing replicas, by address.
    pub replica_zones: BTreeMap<String, String>,
    /// Where data planes send read-only commands.
    pub read_from: Option<ReadFrom>,
    /// TLS to the group's servers on or off (off also forgets the server
    /// name).
    pub tls: Option<bool>,
    /// The name the servers' certificates must carry ("" for none: each
    /// server's own host).
    pub tls_server_name: Option<String>,
}

/// What a change created: the ids of the migrations started
/// ([`Change::Migrate`], [`Change::Balance`]) or of the failover begun
/// ([`Change::BeginFailover`]); empty otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The new migrations' or failover's ids.
    pub ids: Vec<u64>,
}

impl fmt::Display for Change {
    /// One line for logs: the kind and what it names, not every field.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Grow { group, .. } => write!(f, "grow by group {:?}", group.name),
            Change::Shrink { group } => write!(f, "shrink group {group:?}"),
            Change::EditGroup { group, .. } => write!(f, "edit group {group:?}"),
            Change::Assign { slots, group } => write!(f, "assign slots {slots} to {group:?}"),
            Change::Apply { force, .. } => write!(f, "apply a snapshot (force: {force})"),
            Change::Settings { .. } => f.write_str("edit settings"),
            Change::Migrate { slots, to, .. } => write!(f, "migrate slots {slots} to {to:?}"),
            Change::Balance { drain: Some(g), .. } => write!(f, "drain group {g:?}"),
            Change::Balance { drain: None, .. } => f.write_str("rebalance"),
            Change::Pause { id } => write!(f, "pause migration {id}"),
            Change::Resume { id } => write!(f, "resume migration {id}"),
            Change::Cancel { id, .. } => write!(f, "cancel migration {id}"),
            Change::Advance { ids, moving, .. } => {
                let to = if *moving { "moving" } else { "blocking" };
                write!(f, "advance migrations {ids:?} to {to}")
            }
            Change::FinishMigration { id, .. } => write!(f, "finish migration {id}"),
            Change::BeginFailover {
                group, to, kind, ..
            } => {
                write!(f, "begin a {kind:?} failover of group {group:?} to {to}")
            }
            Change::AbandonFailover { group, id, .. } => {
                write!(f, "abandon failover {id} of group {group:?}")
            }
            Change::FinishFailover { group, id, .. } => {
                write!(f, "finish failover {id} of group {group:?}")
            }
            Change::Demoted { group, address } => {
                write!(f, "list {address} as a replica of group {group:?}")
            }
            Change::SetUsers { users } => write!(f, "set {} client users", users.len()),
        }
    }
}

impl Cluster {
    /// Applies `change` to this cluster (not its version, which the daemon
    /// bumps, nor the validation of the whole, which it runs after). On an
    /// error the cluster may be partly changed: apply to a copy.
    pub fn dispatch(&mut self, change: &Change) -> Result<Applied, ModelError> {
        let none = Ok(Applied::default());
        match change {
            Change::Grow { group, resolved } => self.grow(group.clone(), resolved).and(none),
            Change::Shrink { group } => self.shrink(group).and(none),
            Change::EditGroup {
                group,
                edit,
                resolved,
            } => self.edit_group(group, edit, resolved).and(none),
            Change::Assign { slots, group } => {
                let slots = SlotSet::parse(slots, self.slot_count).map_err(ModelError::from)?;
                self.assign(&slots, group).and(none)
            }
            Change::Apply {
                desired,
                resolved,
                force,
            } => {
                if !force && desired.version != self.version {
                    return Err(ModelError::conflict(format!(
                        "cluster {:?} changed since this snapshot was exported (version {} then, \
                         {} now); export it again, or apply with force",
                        self.name, desired.version, self.version
                    )));
                }
                self.apply(desired, resolved).and(none)
            }
            Change::Settings {
                check_interval_ms,
                down_after_ms,
                auto_failover,
                max_lag_bytes,
                lease_ms,
            } => {
                let ha = &mut self.ha;
                ha.check_interval_ms = check_interval_ms.unwrap_or(ha.check_interval_ms);
                ha.down_after_ms = down_after_ms.unwrap_or(ha.down_after_ms);
                ha.auto_failover = auto_failover.unwrap_or(ha.auto_failover);
                ha.max_lag_bytes = max_lag_bytes.unwrap_or(ha.max_lag_bytes);
                ha.check()?;
                if let Some(l) = lease_ms {
                    self.lease_millis = *l;
                }
                none
            }
            Change::Migrate {
                slots,
                to,
                settings,
                paused,
                now_ms,
            } => {
                let slots = SlotSet::parse(slots, self.slot_count).map_err(ModelError::from)?;
                let ids = self.migrate(&slots, to, settings, *paused, *now_ms)?;
                Ok(Applied { ids })
            }
            Change::Balance {
                drain,
                settings,
                paused,
                now_ms,
            } => {
                let mut ids = Vec::new();
                for (slots, to) in self.plan_balance(drain.as_deref())? {
                    ids.extend(self.migrate(&slots, &to, settings, *paused, *now_ms)?);
                }
                Ok(Applied { ids })
            }
            Change::Pause { id } => self.pause(*id).and(none),
            Change::Resume { id } => self.resume(*id).and(none),
            Change::Cancel { id, now_ms } => self.cancel(*id, *now_ms).and(none),
            Change::Advance {
                ids,
                moving,
                now_ms,
            } => self.advance(ids, *moving, *now_ms).and(none),
            Change::FinishMigration {
                id,
                version,
                now_ms,
            } => {
                if self.migration(*id)?.state != (MigrationState::Moving { version: *version }) {
                    return Err(ModelError::conflict(
                        "the migration changed while its sweep ended",
                    ));
                }
                self.finish(*id, *now_ms).and(none)
            }
            Change::BeginFailover {
                group,
                kind,
                from,
                to,
                offsets,
                now_ms,
            } => {
                let id = self.begin_failover(group, *kind, (from, to), *offsets, *now_ms)?;
                Ok(Applied { ids: vec![id] })
            }
            Change::AbandonFailover {
                group,
                id,
                why,
                now_ms,
            } => self.abandon_failover(group, *id, why, *now_ms).and(none),
            Change::FinishFailover { group, id, now_ms } => {
                self.finish_failover(group, *id, *now_ms).and(none)
            }
            Change::Demoted { group, address } => self.demoted(group, address).and(none),
            Change::SetUsers { users } => {
                super::users::check(users)?;
                self.users = users.clone();
                none
            }
        }
    }

    fn edit_group(
        &mut self,
        group: &str,
        e: &GroupChanges,
        resolved: &Resolved,
    ) -> Result<(), ModelError> {
        if let Some(m) = &e.master {
            self.set_master(group, m, resolved)?;
        }
        if let Some(z) = &e.zone {
            self.set_zone(group, None, z)?;
        }
        for r in &e.add_replicas {
            self.add_replica(group, r.clone(), resolved)?;
        }
        for a in &e.remove_replicas {
            self.remove_replica(group, a)?;
        }
        for (a, z) in &e.replica_zones {
            self.set_zone(group, Some(a), z)?;
        }
        if let Some(r) = e.read_from {
            let g = self.group_index(group)?;
            self.groups[g].read_from = r;
        }
        if e.tls.is_some() || e.tls_server_name.is_some() {
            let i = self.group_index(group)?;
            let g = &mut self.groups[i];
            if let Some(on) = e.tls {
                g.tls = on;
                if !on {
                    g.tls_server_name = None;
                }
            }
            if let Some(n) = &e.tls_server_name {
                g.tls_server_name = Some(n.clone()).filter(|n| !n.is_empty());
            }
            super::cluster::check_group(g)?;
        }
        Ok(())
    }

    /// Moves migrations `ids` to `Blocking` (or `Moving`) in the version
    /// this change creates.
    fn advance(&mut self, ids: &[u64], moving: bool, now_ms: u64) -> Result<(), ModelError> {
        let version = self.version.saturating_add(1);
        for &id in ids {
            let m = self.migration_mut(id)?;
            m.state = if moving {
                MigrationState::Moving { version }
            } else {
                MigrationState::Blocking { version }
            };
            let p = &mut m.progress;
            p.waiting_for.clear();
            p.updated_ms = now_ms;
            if moving {
                p.started_ms.get_or_insert(now_ms);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
