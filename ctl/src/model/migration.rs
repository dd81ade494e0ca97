//! Slot migrations in the desired state (DESIGN §4, seeds 001 and 002): what
//! moves where, which phase data planes see, and the plans behind `rebalance`
//! and `drain`. The daemon's orchestrator (`crate::migrate`) drives each
//! migration through its phases; this module only holds and checks the state.
//!
//! Phases, as data planes see them:
//! 1. `Blocking`: commands on the slots are held. Every data plane must ack
//!    this version (or its lease end) before keys move, so no data plane
//!    still writes to the source while another moves keys away from it.
//! 2. `Moving`: data planes move each key a command names (MIGRATE) before
//!    sending the command to the target; ctld sweeps the rest in the
//!    background.
//! 3. Done: the target owns the slots.
//!
//! Cancelling a migration that is moving turns it around: source and target
//! swap, and it goes through `Blocking` and `Moving` again, back home.

use serde::{Deserialize, Serialize};

use super::slots::{format_slots, ranges_from_owners, SlotSet};
use super::{Cluster, ModelError};
use keyway_capnp::snapshot::{self, Phase};

/// How many finished migrations a cluster keeps for `keywayctl migrations`.
const HISTORY: usize = 16;

/// Errors kept in a migration's progress (the newest).
const MAX_ERRORS: usize = 8;

/// Where a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum MigrationState {
    /// Created; the orchestrator will publish the blocking step.
    Pending,
    /// Data planes hold commands on the slots; waiting for every data plane
    /// to ack `version`.
    Blocking {
        /// The version that blocked the slots.
        version: u64,
    },
    /// Keys are moving; ctld sweeps the source.
    Moving {
        /// The version that started the move.
        version: u64,
    },
    /// The target owns the slots.
    Done,
    /// Cancelled: the source owns the slots again.
    Cancelled,
}

/// How the sweep moves keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MoveSettings {
    /// Keys per MIGRATE call (default 100).
    pub batch: u32,
    /// Keys per second at most; 0 for no limit (default 0).
    pub rate: u64,
    /// MIGRATE calls in flight at once (default 1). The source runs one
    /// MIGRATE at a time and blocks while it does; more overlap ctld's round
    /// trips and the scan with it.
    pub concurrency: u32,
    /// MIGRATE timeout in milliseconds (default 5000). A key that cannot
    /// move within it is reported and retried alone with four times the
    /// timeout, up to `max_timeout_ms`.
    pub timeout_ms: u64,
    /// The longest timeout a big key is tried with before the sweep stops
    /// with an error naming it (default 300000; `resume` tries again).
    pub max_timeout_ms: u64,
}

impl Default for MoveSettings {
    fn default() -> Self {
        MoveSettings {
            batch: 100,
            rate: 0,
            concurrency: 1,
            timeout_ms: 5000,
            max_timeout_ms: 300_000,
        }
    }
}

/// A key too big to move within the timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BigKey {
    /// The key (lossy UTF-8).
    pub key: String,
    /// Its size as `MEMORY USAGE` reports it (0 if unknown).
    pub bytes: u64,
    /// The timeout that was too short.
    pub timed_out_ms: u64,
    /// The timeout it finally moved with, once it has.
    pub moved_with_timeout_ms: Option<u64>,
    /// How long the successful MIGRATE took (the source blocks meanwhile).
    pub move_ms: Option<u64>,
}

/// What the sweep has done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// Keys moved by the sweep (data planes move more on demand).
    pub keys_moved: u64,
    /// Keys found on both sides (a MIGRATE that timed out after the target
    /// restored the key) and deleted on the source.
    pub deleted_on_source: u64,
    /// Keys of the moving slots on the source when the move started,
    /// estimated from its size and the share of its slots that move.
    pub estimated_keys: Option<u64>,
    /// Full passes over the source finished.
    pub sweeps: u32,
    /// Where the current pass is (the source's SCAN cursor).
    pub cursor: u64,
    /// Keys of the moving slots the current pass has found so far; a pass
    /// that finds none ends the move.
    pub pass_found: u64,
    /// How much of the current pass is done, 0 to 1000 (from the cursor).
    pub pass_permille: u32,
    /// Recent keys per second.
    pub rate: u64,
    /// Unix milliseconds when it was created.
    pub created_ms: u64,
    /// Unix milliseconds when keys started moving.
    pub started_ms: Option<u64>,
    /// Unix milliseconds of the last update.
    pub updated_ms: u64,
    /// Unix milliseconds when it finished.
    pub finished_ms: Option<u64>,
    /// Data planes that have not yet acked the blocking version (while
    /// blocking).
    pub waiting_for: Vec<String>,
    /// The latest errors (retried), newest last.
    pub errors: Vec<String>,
    /// Keys too big for the timeout.
    pub big_keys: Vec<BigKey>,
    /// Why the sweep stopped, if it failed; `resume` tries again.
    pub failed: Option<String>,
}

impl Progress {
    /// Keeps an error, and only the newest few.
    pub fn error(&mut self, e: String) {
        if self.errors.len() >= MAX_ERRORS {
            self.errors.remove(0);
        }
        self.errors.push(e);
    }
}

/// One migration: slot ranges from one group to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// Unique within the cluster.
    pub id: u64,
    /// Slot ranges, inclusive.
    pub ranges: Vec<(u32, u32)>,
    /// Source group (the one that owns the slots while they move).
    pub from: String,
    /// Target group.
    pub to: String,
    /// Phase.
    pub state: MigrationState,
    /// The sweep is paused (data planes still move keys on demand).
    #[serde(default)]
    pub paused: bool,
    /// Being cancelled: `from` and `to` are swapped, moving keys back.
    #[serde(default)]
    pub cancelling: bool,
    /// How the sweep moves keys.
    #[serde(default)]
    pub settings: MoveSettings,
    /// What the sweep has done.
    #[serde(default)]
    pub progress: Progress,
}

impl Migration {
    /// Still to finish.
    pub fn active(&self) -> bool {
        matches!(
            self.state,
            MigrationState::Pending
                | MigrationState::Blocking { .. }
                | MigrationState::Moving { .. }
        )
    }

    /// Number of slots.
    pub fn slot_count(&self) -> u32 {
        self.ranges.iter().map(|&(a, b)| b - a + 1).sum()
    }

    /// Whether `slot` is one of its slots.
    pub fn has(&self, slot: u32) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= slot && slot <= b)
    }

    /// Its slots as operators write them.
    pub fn slots_text(&self) -> String {
        let slots: Vec<u32> = self.ranges.iter().flat_map(|&(a, b)| a..=b).collect();
        format_slots(&slots)
    }
}

/// One step of a plan: slots and the group they go to.
pub type PlannedMove = (SlotSet, String);

fn contiguous(slots: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &s in slots {
        match out.last_mut() {
            Some(r) if r.1.checked_add(1) == Some(s) => r.1 = s,
            _ => out.push((s, s)),
        }
    }
    out
}

impl Cluster {
    /// The migration `id`.
    pub fn migration(&self, id: u64) -> Result<&Migration, ModelError> {
        self.migrations.iter().find(|m| m.id == id).ok_or_else(|| {
            ModelError::not_found(format!("cluster {:?} has no migration {id}", self.name))
        })
    }

    /// The migration `id`, to change.
    pub fn migration_mut(&mut self, id: u64) -> Result<&mut Migration, ModelError> {
        let name = self.name.clone();
        self.migrations
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or_else(|| ModelError::not_found(format!("cluster {name:?} has no migration {id}")))
    }

    /// The unfinished migration a group takes part in, if any.
    pub fn migrating_group(&self, group: &str) -> Option<u64> {
        self.migrations
            .iter()
            .find(|m| m.active() && (m.from == group || m.to == group))
            .map(|m| m.id)
    }

    /// The active migration of each slot.
    fn migrating_slots(&self) -> Vec<Option<u64>> {
        let mut out = vec![None; self.slot_count as usize];
        for m in self.migrations.iter().filter(|m| m.active()) {
            for &(a, b) in &m.ranges {
                for s in a..=b.min(self.slot_count.saturating_sub(1)) {
                    out[s as usize] = Some(m.id);
                }
            }
        }
        out
    }

    /// Starts moving `slots` to group `to`: one migration per current owner.
    /// Slots `to` already owns are left out. Returns the new migrations' ids.
    pub fn migrate(
        &mut self,
        slots: &SlotSet,
        to: &str,
        settings: &MoveSettings,
        paused: bool,
        now_ms: u64,
    ) -> Result<Vec<u64>, ModelError> {
        let target = self.group_index(to)?;
        check_settings(settings).map_err(|e| ModelError::invalid(e.to_string()))?;
        if slots.slot_count() != self.slot_count {
            return Err(ModelError::invalid(format!(
                "slots of a cluster of {} slots, not {}",
                slots.slot_count(),
                self.slot_count
            )));
        }
        let owners = self.owners();
        let migrating = self.migrating_slots();
        let (mut unowned, mut busy) = (Vec::new(), Vec::new());
        let mut by_source: Vec<Vec<u32>> = vec![Vec::new(); self.groups.len()];
        for s in slots.iter() {
            match (owners[s as usize], migrating[s as usize]) {
                (_, Some(_)) => busy.push(s),
                (None, None) => unowned.push(s),
                (Some(g), None) if g != target => by_source[g].push(s),
                _ => {}
            }
        }
        if !busy.is_empty() {
            return Err(ModelError::conflict(format!(
                "slots {} are already migrating",
                format_slots(&busy)
            )));
        }
        if !unowned.is_empty() {
            return Err(ModelError::invalid(format!(
                "slots {} are not owned by any group: assign them instead",
                format_slots(&unowned)
            )));
        }
        let mut ids = Vec::new();
        for (g, slots) in by_source.into_iter().enumerate() {
            if slots.is_empty() {
                continue;
            }
            self.next_migration += 1;
            ids.push(self.next_migration);
            self.migrations.push(Migration {
                id: self.next_migration,
                ranges: contiguous(&slots),
                from: self.groups[g].name.clone(),
                to: to.to_string(),
                state: MigrationState::Pending,
                paused,
                cancelling: false,
                settings: settings.clone(),
                progress: Progress {
                    created_ms: now_ms,
                    updated_ms: now_ms,
                    ..Progress::default()
                },
            });
        }
        if ids.is_empty() {
            return Err(ModelError::invalid(format!(
                "group {to:?} already owns all those slots"
            )));
        }
        self.trim_history();
        Ok(ids)
    }

    /// The moves that leave every group (but `exclude`) with an even share of
    /// the owned slots: (ranges, target). Refused while migrations run.
    pub fn plan_balance(&self, exclude: Option<&str>) -> Result<Vec<PlannedMove>, ModelError> {
        if let Some(m) = self.migrations.iter().find(|m| m.active()) {
            return Err(ModelError::conflict(format!(
                "migration {} is still running; wait for it first",
                m.id
            )));
        }
        let excluded = exclude.map(|g| self.group_index(g)).transpose()?;
        let keep: Vec<usize> = (0..self.groups.len())
            .filter(|&g| Some(g) != excluded)
            .collect();
        if keep.is_empty() {
            return Err(ModelError::forbidden("no other group to move the slots to"));
        }
        let mut owned: Vec<Vec<u32>> = vec![Vec::new(); self.groups.len()];
        for (s, o) in self.owners().into_iter().enumerate() {
            if let Some(g) = o {
                owned[g].push(s as u32);
            }
        }
        let total: usize = owned.iter().map(Vec::len).sum();
        let mut want = vec![0usize; self.groups.len()];
        for (i, &g) in keep.iter().enumerate() {
            want[g] = total / keep.len() + usize::from(i < total % keep.len());
        }
        // Surplus slots, taken from the end of each group's slots; deficits
        // filled in group order.
        let mut surplus: Vec<u32> = Vec::new();
        for g in 0..self.groups.len() {
            if owned[g].len() > want[g] {
                surplus.extend_from_slice(&owned[g][want[g]..]);
            }
        }
        let mut plan = Vec::new();
        let mut next = 0;
        for &g in &keep {
            let need = want[g].saturating_sub(owned[g].len());
            if need == 0 {
                continue;
            }
            let mut give = SlotSet::new(self.slot_count);
            for &s in surplus.iter().skip(next).take(need) {
                give.insert(s);
            }
            next += need;
            plan.push((give, self.groups[g].name.clone()));
        }
        Ok(plan)
    }

    /// Pauses the sweep of migration `id` (keys still move on demand).
    pub fn pause(&mut self, id: u64) -> Result<(), ModelError> {
        let m = self.migration_mut(id)?;
        if !m.active() {
            return Err(ModelError::conflict(format!("migration {id} has finished")));
        }
        m.paused = true;
        Ok(())
    }

    /// Resumes a paused or failed sweep.
    pub fn resume(&mut self, id: u64) -> Result<(), ModelError> {
        let m = self.migration_mut(id)?;
        if !m.active() {
            return Err(ModelError::conflict(format!("migration {id} has finished")));
        }
        m.paused = false;
        m.progress.failed = None;
        Ok(())
    }

    /// Cancels migration `id`: before keys move it just ends; once they move,
    /// it turns around and moves them back, starting with the slots blocked
    /// in the cluster's next version (the one this change is saved as).
    /// Cancelling a cancel in progress changes nothing.
    pub fn cancel(&mut self, id: u64, now_ms: u64) -> Result<(), ModelError> {
        let next_version = self.version + 1;
        let m = self.migration_mut(id)?;
        if m.cancelling && m.active() {
            // Already on its way back.
            return Ok(());
        }
        match m.state {
            MigrationState::Pending | MigrationState::Blocking { .. } => {
                m.state = MigrationState::Cancelled;
                m.progress.finished_ms = Some(now_ms);
                m.progress.waiting_for.clear();
            }
            MigrationState::Moving { .. } => {
                // The way back: the target becomes the source (a
                // migration's slots belong to its source while they move),
                // and data planes hold the slots straight away. Never a
                // version with the slots stable on either side: their keys
                // are on both.
                std::mem::swap(&mut m.from, &mut m.to);
                m.cancelling = true;
                m.paused = false;
                m.state = MigrationState::Blocking {
                    version: next_version,
                };
                let p = &mut m.progress;
                p.failed = None;
                p.cursor = 0;
                p.pass_found = 0;
                p.pass_permille = 0;
                p.sweeps = 0;
                p.keys_moved = 0;
                p.rate = 0;
                p.estimated_keys = None;
            }
            MigrationState::Done | MigrationState::Cancelled => {
                return Err(ModelError::conflict(format!("migration {id} has finished")))
            }
        }
        m.progress.updated_ms = now_ms;
        let (ranges, back, source) = (m.ranges.clone(), m.cancelling, m.from.clone());
        if back {
            self.give(&ranges, &source)?;
        }
        self.trim_history();
        Ok(())
    }

    /// Makes group `to` the owner of `ranges`.
    fn give(&mut self, ranges: &[(u32, u32)], to: &str) -> Result<(), ModelError> {
        let g = self.group_index(to)?;
        let mut owners = self.owners();
        for &(a, b) in ranges {
            for s in a..=b.min(self.slot_count.saturating_sub(1)) {
                owners[s as usize] = Some(g);
            }
        }
        let names: Vec<String> = self.groups.iter().map(|g| g.name.clone()).collect();
        self.slots = ranges_from_owners(&owners, &names);
        Ok(())
    }

    /// The sweep found no key left: the target owns the slots.
    pub fn finish(&mut self, id: u64, now_ms: u64) -> Result<(), ModelError> {
        let m = self.migration(id)?.clone();
        if !matches!(m.state, MigrationState::Moving { .. }) {
            return Err(ModelError::conflict(format!(
                "migration {id} is not moving keys"
            )));
        }
        self.give(&m.ranges, &m.to)?;
        let m = self.migration_mut(id)?;
        m.state = if m.cancelling {
            MigrationState::Cancelled
        } else {
            MigrationState::Done
        };
        m.progress.finished_ms = Some(now_ms);
        m.progress.updated_ms = now_ms;
        m.progress.pass_permille = 1000;
        self.trim_history();
        Ok(())
    }

    fn trim_history(&mut self) {
        let finished = self.migrations.iter().filter(|m| !m.active()).count();
        let mut drop = finished.saturating_sub(HISTORY);
        self.migrations.retain(|m| {
            if drop > 0 && !m.active() {
                drop -= 1;
                false
            } else {
                true
            }
        });
    }

    /// The migrations data planes must know about, for the snapshot.
    pub(crate) fn snapshot_migrations(
        &self,
        index: impl Fn(&str) -> u16,
    ) -> Vec<snapshot::Migration> {
        let mut out = Vec::new();
        for m in &self.migrations {
            let phase = match m.state {
                MigrationState::Blocking { .. } => Phase::Blocked,
                MigrationState::Moving { .. } => Phase::Moving,
                _ => continue,
            };
            for &(first, last) in &m.ranges {
                out.push(snapshot::Migration {
                    first,
                    last,
                    from: index(&m.from),
                    to: index(&m.to),
                    phase,
                });
            }
        }
        out.sort_by_key(|m| m.first);
        out
    }
}

/// Most keys a MIGRATE call moves.
pub const MAX_BATCH: u32 = 10_000;

/// Most MIGRATE calls a sweep keeps in flight.
pub const MAX_CONCURRENCY: u32 = 64;

/// The longest MIGRATE timeout a sweep starts with (ten minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// The longest timeout a big key is retried with (one hour).
pub const MAX_MAX_TIMEOUT_MS: u64 = 3_600_000;

/// The highest rate limit, keys per second (0 is no limit).
pub const MAX_RATE: u64 = 100_000_000;

/// Checks a migration's settings against the bounds above.
pub fn check_settings(s: &MoveSettings) -> Result<(), SettingsError> {
    if s.batch == 0 || s.batch > MAX_BATCH {
        return Err(SettingsError::Batch);
    }
    if s.concurrency == 0 || s.concurrency > MAX_CONCURRENCY {
        return Err(SettingsError::Concurrency);
    }
    if s.rate > MAX_RATE {
        return Err(SettingsError::Rate);
    }
    if s.timeout_ms == 0 || s.timeout_ms > MAX_TIMEOUT_MS {
        return Err(SettingsError::Timeout);
    }
    if s.max_timeout_ms < s.timeout_ms || s.max_timeout_ms > MAX_MAX_TIMEOUT_MS {
        return Err(SettingsError::MaxTimeout);
    }
    Ok(())
}

/// A [`MoveSettings`] field out of its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// `batch`.
    #[error("batch must be from 1 to {MAX_BATCH} keys")]
    Batch,
    /// `concurrency`.
    #[error("concurrency must be from 1 to {MAX_CONCURRENCY}")]
    Concurrency,
    /// `rate`.
    #[error("rate must be at most {MAX_RATE} keys a second (0: no limit)")]
    Rate,
    /// `timeout_ms`.
    #[error("the timeout must be from 1 ms to {} s", MAX_TIMEOUT_MS / 1000)]
    Timeout,
    /// `max_timeout_ms`.
    #[error("the max timeout must be from the timeout to {} s", MAX_MAX_TIMEOUT_MS / 1000)]
    MaxTimeout,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cluster::tests::{create, g, none, set};
    use crate::model::ErrorKind;

    fn cluster() -> Cluster {
        let mut c = create("c", 16, vec![g("a", 1), g("b", 2)], 30_000).unwrap();
        c.grow(g("c", 3), &none()).unwrap();
        c
    }

    fn migrate(c: &mut Cluster, ranges: &[(u32, u32)], to: &str) -> Result<Vec<u64>, ModelError> {
        c.migrate(&set(ranges, 16), to, &MoveSettings::default(), false, 0)
    }

    #[test]
    fn migrate_makes_one_migration_per_source() {
        let mut c = cluster();
        let ids = migrate(&mut c, &[(6, 9)], "c").unwrap();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(
            (
                c.migrations[0].from.as_str(),
                c.migrations[0].ranges.clone()
            ),
            ("a", vec![(6, 7)])
        );
        assert_eq!(
            (
                c.migrations[1].from.as_str(),
                c.migrations[1].ranges.clone()
            ),
            ("b", vec![(8, 9)])
        );
        assert_eq!(c.migrations[1].slots_text(), "8-9");
        assert_eq!(
            migrate(&mut c, &[(7, 8)], "c").unwrap_err().kind,
            ErrorKind::Conflict
        );
        assert_eq!(
            migrate(&mut c, &[(0, 1)], "a").unwrap_err().kind,
            ErrorKind::Invalid,
            "a owns them already"
        );
        let e = c.shrink("c").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Forbidden, "the target of a migration");
        assert!(e.message.contains("migration 1"), "{}", e.message);
        assert_eq!(
            c.apply(&c.clone(), &none()).unwrap_err().kind,
            ErrorKind::Conflict,
            "no snapshot apply while migrating"
        );
    }

    #[test]
    fn phases_show_in_the_snapshot_and_finish_moves_ownership() {
        let mut c = cluster();
        let id = migrate(&mut c, &[(0, 3)], "c").unwrap()[0];
        assert!(
            c.snapshot().migrations.is_empty(),
            "pending is not published"
        );
        c.migration_mut(id).unwrap().state = MigrationState::Blocking { version: 2 };
        let s = c.snapshot();
        s.validate().unwrap();
        assert_eq!(s.migrations[0].phase, Phase::Blocked);
        assert_eq!((s.migrations[0].from, s.migrations[0].to), (0, 2));
        assert_eq!(
            c.finish(id, 1).unwrap_err().kind,
            ErrorKind::Conflict,
            "only a moving migration finishes"
        );
        c.migration_mut(id).unwrap().state = MigrationState::Moving { version: 3 };
        assert_eq!(c.snapshot().migrations[0].phase, Phase::Moving);
        c.finish(id, 1).unwrap();
        assert_eq!(c.slots_of(2), vec![0, 1, 2, 3]);
        assert!(c.snapshot().migrations.is_empty());
        assert_eq!(c.migration(id).unwrap().state, MigrationState::Done);
        c.shrink("a").unwrap_err();
    }

    #[test]
    fn cancel_before_moving_ends_and_after_turns_around() {
        let mut c = cluster();
        let id = migrate(&mut c, &[(0, 3)], "c").unwrap()[0];
        c.cancel(id, 5).unwrap();
        assert_eq!(c.migration(id).unwrap().state, MigrationState::Cancelled);
        assert_eq!(c.cancel(id, 5).unwrap_err().kind, ErrorKind::Conflict);
        let id = migrate(&mut c, &[(0, 3)], "c").unwrap()[0];
        c.migration_mut(id).unwrap().state = MigrationState::Moving { version: 5 };
        c.migration_mut(id).unwrap().progress.cursor = 77;
        c.cancel(id, 6).unwrap();
        let m = c.migration(id).unwrap();
        assert_eq!(
            (m.from.as_str(), m.to.as_str(), m.cancelling),
            ("c", "a", true)
        );
        assert_eq!(
            m.state,
            MigrationState::Blocking {
                version: c.version + 1
            },
            "blocked at once: never stable while keys are on both sides"
        );
        assert_eq!(m.progress.cursor, 0, "the way back sweeps from the start");
        assert_eq!(
            c.slots_of(2),
            vec![0, 1, 2, 3],
            "owned by the way back's source"
        );
        let s = c.snapshot();
        s.validate().unwrap();
        assert_eq!(s.migrations[0].phase, Phase::Blocked);
        c.cancel(id, 7).unwrap();
        assert_eq!(
            c.migration(id).unwrap().from,
            "c",
            "cancelling twice is one cancel"
        );
        c.migration_mut(id).unwrap().state = MigrationState::Moving { version: 7 };
        c.finish(id, 9).unwrap();
        assert_eq!(c.slots_of(0), (0..8).collect::<Vec<_>>(), "back home");
        assert_eq!(c.migration(id).unwrap().state, MigrationState::Cancelled);
    }

    #[test]
    fn balance_plans_even_shares() {
        let c = cluster();
        let plan = c.plan_balance(None).unwrap();
        // 16 slots over 3 groups: 6, 5, 5. a has 8 (gives 2), b has 8 (gives 3).
        assert_eq!(plan.len(), 1);
        assert_eq!(
            (plan[0].0.ranges(), plan[0].1.as_str()),
            (vec![(6, 7), (13, 15)], "c")
        );
        let drain = c.plan_balance(Some("a")).unwrap();
        let given: u32 = drain.iter().map(|(s, _)| s.len()).sum();
        assert_eq!(given, 8, "all of a's slots move");
        assert!(drain.iter().all(|(_, to)| to != "a"));
        let mut busy = c.clone();
        migrate(&mut busy, &[(0, 0)], "c").unwrap();
        assert_eq!(
            busy.plan_balance(None).unwrap_err().kind,
            ErrorKind::Conflict
        );
        let one = create("one", 16, vec![g("a", 1)], 30_000).unwrap();
        assert_eq!(
            one.plan_balance(Some("a")).unwrap_err().kind,
            ErrorKind::Forbidden
        );
    }

    #[test]
    fn settings_are_checked() {
        let mut c = cluster();
        for bad in [
            MoveSettings {
                batch: 0,
                ..MoveSettings::default()
            },
            MoveSettings {
                concurrency: 0,
                ..MoveSettings::default()
            },
            MoveSettings {
                timeout_ms: 10,
                max_timeout_ms: 5,
                ..MoveSettings::default()
            },
            MoveSettings {
                timeout_ms: u64::MAX,
                max_timeout_ms: u64::MAX,
                ..MoveSettings::default()
            },
            MoveSettings {
                max_timeout_ms: MAX_MAX_TIMEOUT_MS + 1,
                ..MoveSettings::default()
            },
            MoveSettings {
                rate: u64::MAX,
                ..MoveSettings::default()
            },
            MoveSettings {
                batch: MAX_BATCH + 1,
                ..MoveSettings::default()
            },
            MoveSettings {
                concurrency: MAX_CONCURRENCY + 1,
                ..MoveSettings::default()
            },
        ] {
            assert_eq!(
                c.migrate(&set(&[(0, 0)], 16), "c", &bad, false, 0)
                    .unwrap_err()
                    .kind,
                ErrorKind::Invalid,
                "{bad:?}"
            );
        }
        let most = MoveSettings {
            batch: MAX_BATCH,
            rate: MAX_RATE,
            concurrency: MAX_CONCURRENCY,
            timeout_ms: MAX_TIMEOUT_MS,
            max_timeout_ms: MAX_MAX_TIMEOUT_MS,
        };
        c.migrate(&set(&[(0, 0)], 16), "c", &most, false, 0)
            .unwrap();
    }

    #[test]
    fn history_is_bounded() {
        let mut c = cluster();
        for _ in 0..40 {
            let id = migrate(&mut c, &[(0, 0)], "c").unwrap()[0];
            c.cancel(id, 0).unwrap();
        }
        assert!(c.migrations.len() <= HISTORY + 1, "{}", c.migrations.len());
        assert_eq!(c.next_migration, 40, "ids are never reused");
    }
}
