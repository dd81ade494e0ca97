//! The one check of a whole cluster: the model's rules, then the snapshot's
//! (`Snapshot::validate`, what data planes check). Every change is checked
//! with it before it is saved (`crate::daemon::Ctld::change`), and the store
//! checks every cluster with it when ctld starts, so a state that a change
//! could not produce is never served — whatever wrote the file.

use std::collections::HashSet;

use super::addresses::{Resolved, Used};
use super::cluster::check_group;
use super::migration::check_settings;
use super::names::{check_lease, check_name, MAX_GROUPS};
use super::slots::SlotSet;
use super::{Cluster, ModelError};
use keyway_capnp::snapshot::MAX_SLOTS;

impl Cluster {
    /// Checks every rule a cluster must follow; the message names the rule.
    pub fn validate(&self) -> Result<(), ModelError> {
        let invalid = ModelError::invalid;
        check_name("cluster", &self.name).map_err(ModelError::from)?;
        if !self.slot_count.is_power_of_two() || self.slot_count > MAX_SLOTS {
            return Err(invalid(format!(
                "slot count {} is not a power of two from 1 to {MAX_SLOTS}",
                self.slot_count
            )));
        }
        if self.version == 0 {
            return Err(invalid("version 0: versions start at 1".into()));
        }
        check_lease(self.lease_millis).map_err(ModelError::from)?;
        if self.groups.is_empty() || self.groups.len() > MAX_GROUPS {
            return Err(invalid(format!(
                "{} groups: a cluster has 1 to {MAX_GROUPS}",
                self.groups.len()
            )));
        }
        let none = Resolved::none();
        let mut used = Used::new(&self.name, &none);
        let mut names = HashSet::with_capacity(self.groups.len());
        for g in &self.groups {
            check_group(g)?;
            if !names.insert(g.name.as_str()) {
                return Err(invalid(format!("group {:?} appears twice", g.name)));
            }
            for a in g.addresses() {
                used.claim(a).map_err(|e| invalid(e.message))?;
            }
        }
        let mut next = 0u32;
        for r in &self.slots {
            if r.first < next || r.last < r.first || r.last >= self.slot_count {
                return Err(invalid(format!(
                    "slot range {}-{} is out of order, overlapping, reversed or beyond slot {}",
                    r.first,
                    r.last,
                    self.slot_count - 1
                )));
            }
            if !names.contains(r.group.as_str()) {
                return Err(invalid(format!(
                    "slot range {}-{} names no group of the cluster",
                    r.first, r.last
                )));
            }
            next = r.last + 1;
        }
        self.validate_migrations(&names)?;
        self.validate_ha()?;
        self.snapshot()
            .validate()
            .map_err(|e| invalid(e.to_string()))
    }

    fn validate_migrations(&self, groups: &HashSet<&str>) -> Result<(), ModelError> {
        let invalid = ModelError::invalid;
        let mut ids = HashSet::with_capacity(self.migrations.len());
        let mut active = SlotSet::new(self.slot_count);
        for m in &self.migrations {
            let what = format!("migration {}", m.id);
            if !ids.insert(m.id) || m.id == 0 || m.id > self.next_migration {
                return Err(invalid(format!(
                    "{what}: ids are unique, from 1 to the last given ({})",
                    self.next_migration
                )));
            }
            // Finished migrations are history: their groups may be gone.
            if m.active() && (!groups.contains(m.from.as_str()) || !groups.contains(m.to.as_str()))
            {
                return Err(invalid(format!(
                    "{what} moves slots between groups the cluster does not have"
                )));
            }
            if m.from == m.to {
                return Err(invalid(format!("{what} moves slots to their own group")));
            }
            let mine = SlotSet::from_ranges(&m.ranges, self.slot_count)
                .map_err(|e| invalid(format!("{what}: slots {e}")))?;
            if mine.is_empty() {
                return Err(invalid(format!("{what} has no slots")));
            }
            if m.active() {
                check_settings(&m.settings).map_err(|e| invalid(format!("{what}: {e}")))?;
                for &(a, b) in &m.ranges {
                    active.insert_range(a, b).map_err(|_| {
                        invalid(format!(
                            "{what}: slots {a}-{b} are in two running migrations"
                        ))
                    })?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::model::cluster::tests::{create, g};
    use crate::model::{Migration, MigrationState, MoveSettings, OwnedRange};

    fn rule(c: &crate::model::Cluster) -> String {
        c.validate().unwrap_err().message
    }

    #[test]
    fn every_rule_is_checked_and_named() {
        let good = create("c", 16, vec![g("a", 1), g("b", 2)], 30_000).unwrap();
        good.validate().unwrap();
        let mut c = good.clone();
        c.slot_count = 0;
        assert!(rule(&c).contains("slot count 0"), "{}", rule(&c));
        let mut c = good.clone();
        c.name = "..".into();
        assert!(rule(&c).contains("cluster name"));
        let mut c = good.clone();
        c.lease_millis = 5;
        assert!(rule(&c).contains("lease"));
        let mut c = good.clone();
        c.groups.clear();
        assert!(rule(&c).contains("0 groups"));
        let mut c = good.clone();
        c.groups[1].name = "a".into();
        assert!(rule(&c).contains("appears twice"));
        let mut c = good.clone();
        c.groups[1].master = c.groups[0].master.clone();
        assert!(rule(&c).contains("already used"));
        let mut c = good.clone();
        c.groups[1].master = "x\0y:1".into();
        assert!(rule(&c).contains("master"));
        let mut c = good.clone();
        c.slots.push(OwnedRange {
            first: 3,
            last: 4,
            group: "a".into(),
        });
        assert!(rule(&c).contains("out of order"));
        let mut c = good.clone();
        c.slots[0].group = "zz".into();
        assert!(rule(&c).contains("names no group"));
        let mut c = good.clone();
        c.version = 0;
        assert!(rule(&c).contains("version 0"));
    }

    #[test]
    fn migrations_are_checked() {
        let mut good = create("c", 16, vec![g("a", 1), g("b", 2)], 30_000).unwrap();
        good.next_migration = 1;
        good.migrations.push(Migration {
            id: 1,
            ranges: vec![(0, 3)],
            from: "a".into(),
            to: "b".into(),
            state: MigrationState::Moving { version: 1 },
            paused: false,
            cancelling: false,
            settings: MoveSettings::default(),
            progress: Default::default(),
        });
        good.validate().unwrap();
        let mut c = good.clone();
        c.migrations[0].to = "a".into();
        assert!(rule(&c).contains("own group"));
        let mut c = good.clone();
        c.migrations[0].to = "gone".into();
        assert!(rule(&c).contains("groups the cluster does not have"));
        c.migrations[0].state = MigrationState::Done;
        c.validate()
            .expect("a finished migration may name a group shrunk since");
        let mut c = good.clone();
        c.migrations[0].ranges = vec![(0, 3), (2, 5)];
        assert!(rule(&c).contains("named twice"));
        let mut c = good.clone();
        c.migrations[0].ranges = vec![(0, 99)];
        assert!(rule(&c).contains("slots go from 0 to 15"));
        let mut c = good.clone();
        c.migrations[0].id = 7;
        assert!(rule(&c).contains("ids are unique"));
        let mut c = good.clone();
        c.migrations[0].settings.timeout_ms = u64::MAX;
        assert!(rule(&c).contains("timeout"), "{}", rule(&c));
        let mut c = good.clone();
        let mut twin = c.migrations[0].clone();
        twin.id = 2;
        c.next_migration = 2;
        c.migrations.push(twin);
        assert!(rule(&c).contains("two running migrations"));
        let mut c = good;
        c.migrations[0].ranges = vec![(8, 9)];
        assert!(
            rule(&c).contains("not owned"),
            "the snapshot's rules too: {}",
            rule(&c)
        );
    }
}
