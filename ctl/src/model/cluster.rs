//! A cluster's desired state and the operations on it (seed 000/003's
//! lifecycle: create, grow, shrink, assign, edit groups, apply). Every
//! operation validates before it changes anything; the caller bumps the
//! version, persists and publishes.

use serde::{Deserialize, Serialize};

use super::migration::Migration;
use super::slots::{format_slots, ranges_from_owners, OwnedRange};
use super::ModelError;
use keyway_capnp::snapshot::{self, Snapshot};

/// A Redis group: a master and its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Unique within the cluster.
    pub name: String,
    /// `host:port` of the master.
    pub master: String,
    /// Replicas.
    #[serde(default)]
    pub replicas: Vec<Replica>,
    /// The master's zone or rack.
    #[serde(default)]
    pub zone: String,
}

/// A replica of a group's master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// `host:port`.
    pub address: String,
    /// Zone or rack.
    #[serde(default)]
    pub zone: String,
}

/// One cluster's desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Unique name.
    pub name: String,
    /// Bumped by every change.
    pub version: u64,
    /// Hash slots, fixed at creation.
    pub slot_count: u32,
    /// Lease granted to data planes, milliseconds.
    pub lease_millis: u64,
    /// Groups, in creation order.
    pub groups: Vec<Group>,
    /// Owned slot ranges, ascending.
    pub slots: Vec<OwnedRange>,
    /// Migrations, unfinished and recent.
    #[serde(default)]
    pub migrations: Vec<Migration>,
    /// The last migration id given.
    #[serde(default)]
    pub next_migration: u64,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Checks `host:port` (not resolved here: data planes resolve names).
pub fn valid_address(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{addr:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{addr:?} has no valid port")),
    }
}

impl Cluster {
    /// A new cluster at version 1 with `groups` sharing the slots evenly, in
    /// listed order.
    pub fn create(
        name: &str,
        slot_count: u32,
        groups: Vec<Group>,
        lease_millis: u64,
    ) -> Result<Cluster, ModelError> {
        if !valid_name(name) {
            return Err(ModelError::invalid(format!(
                "cluster name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        if !slot_count.is_power_of_two() || slot_count > snapshot::MAX_SLOTS {
            return Err(ModelError::invalid(format!(
                "slots = {slot_count}: must be a power of two from 1 to 16384"
            )));
        }
        if groups.is_empty() {
            return Err(ModelError::invalid("a cluster needs at least one group"));
        }
        if lease_millis < 1000 {
            return Err(ModelError::invalid("the lease must be at least 1s"));
        }
        let mut c = Cluster {
            name: name.to_string(),
            version: 1,
            slot_count,
            lease_millis,
            groups: Vec::new(),
            slots: Vec::new(),
            migrations: Vec::new(),
            next_migration: 0,
        };
        for g in groups {
            c.check_new_group(&g)?;
            c.groups.push(g);
        }
        let n = c.groups.len() as u32;
        let owners: Vec<Option<usize>> = (0..slot_count)
            .map(|s| Some(((u64::from(s) * u64::from(n)) / u64::from(slot_count)) as usize))
            .collect();
        c.slots = ranges_from_owners(&owners, &c.group_names());
        Ok(c)
    }

    fn group_names(&self) -> Vec<String> {
        self.groups.iter().map(|g| g.name.clone()).collect()
    }

    /// The index of group `name`.
    pub fn group_index(&self, name: &str) -> Result<usize, ModelError> {
        self.groups
            .iter()
            .position(|g| g.name == name)
            .ok_or_else(|| {
                ModelError::not_found(format!("cluster {:?} has no group {name:?}", self.name))
            })
    }

    /// Every address the cluster's groups use.
    fn addresses(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().flat_map(|g| {
            std::iter::once(g.master.as_str()).chain(g.replicas.iter().map(|r| r.address.as_str()))
        })
    }

    fn check_new_group(&self, g: &Group) -> Result<(), ModelError> {
        if !valid_name(&g.name) {
            return Err(ModelError::invalid(format!(
                "group name {:?}: 1 to 64 letters, digits, '-', '_' or '.'",
                g.name
            )));
        }
        if self.groups.iter().any(|o| o.name == g.name) {
            return Err(ModelError::conflict(format!(
                "cluster {:?} already has a group {:?}",
                self.name, g.name
            )));
        }
        valid_address(&g.master)
            .map_err(|e| ModelError::invalid(format!("group {:?}: master {e}", g.name)))?;
        for r in &g.replicas {
            valid_address(&r.address)
                .map_err(|e| ModelError::invalid(format!("group {:?}: replica {e}", g.name)))?;
        }
        let mine: Vec<&str> = std::iter::once(g.master.as_str())
            .chain(g.replicas.iter().map(|r| r.address.as_str()))
            .collect();
        for (i, a) in mine.iter().enumerate() {
            if mine[..i].contains(a) || self.addresses().any(|o| o == *a) {
                return Err(ModelError::conflict(format!(
                    "{a} is already used in cluster {:?}",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// Owner index of every slot.
    pub fn owners(&self) -> Vec<Option<usize>> {
        let mut owner = vec![None; self.slot_count as usize];
        for r in &self.slots {
            let g = self.groups.iter().position(|g| g.name == r.group);
            for s in r.first..=r.last.min(self.slot_count.saturating_sub(1)) {
                owner[s as usize] = g;
            }
        }
        owner
    }

    /// Slots owned by group `g`.
    pub fn slots_of(&self, g: usize) -> Vec<u32> {
        self.owners()
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == Some(g))
            .map(|(s, _)| s as u32)
            .collect()
    }

    /// Adds an empty group (seed 000's grow: the group gets slots by
    /// assignment or migration).
    pub fn grow(&mut self, g: Group) -> Result<(), ModelError> {
        self.check_new_group(&g)?;
        self.groups.push(g);
        Ok(())
    }

    /// Removes a group that owns no slots (seed 000: refused with 403 while it
    /// owns any).
    pub fn shrink(&mut self, group: &str) -> Result<(), ModelError> {
        let g = self.group_index(group)?;
        if let Some(id) = self.migrating_group(group) {
            return Err(ModelError::forbidden(format!(
                "group {group:?} takes part in migration {id}: wait for it to finish or cancel it"
            )));
        }
        let owned = self.slots_of(g);
        if !owned.is_empty() {
            return Err(ModelError::forbidden(format!(
                "group {group:?} still owns slots {}: move them to other groups first",
                format_slots(&owned)
            )));
        }
        if self.groups.len() == 1 {
            return Err(ModelError::forbidden("a cluster keeps at least one group"));
        }
        self.groups.remove(g);
        Ok(())
    }

    /// Gives unowned slots to a group.
    pub fn assign(&mut self, ranges: &[(u32, u32)], group: &str) -> Result<(), ModelError> {
        let g = self.group_index(group)?;
        let mut owners = self.owners();
        let mut taken = Vec::new();
        for &(a, b) in ranges {
            if b >= self.slot_count {
                return Err(ModelError::invalid(format!(
                    "slot {b} is beyond the last slot {}",
                    self.slot_count - 1
                )));
            }
            taken.extend((a..=b).filter(|&s| owners[s as usize].is_some()));
        }
        if !taken.is_empty() {
            taken.sort_unstable();
            taken.dedup();
            return Err(ModelError::conflict(format!(
                "slots {} are already owned; only unowned slots can be assigned",
                format_slots(&taken)
            )));
        }
        for &(a, b) in ranges {
            for s in a..=b {
                owners[s as usize] = Some(g);
            }
        }
        self.slots = ranges_from_owners(&owners, &self.group_names());
        Ok(())
    }

    /// Replaces a group's master address.
    pub fn set_master(&mut self, group: &str, master: &str) -> Result<(), ModelError> {
        let g = self.group_index(group)?;
        valid_address(master).map_err(ModelError::invalid)?;
        if self.groups[g].master != master && self.addresses().any(|a| a == master) {
            return Err(ModelError::conflict(format!(
                "{master} is already used in cluster {:?}",
                self.name
            )));
        }
        self.groups[g].master = master.to_string();
        Ok(())
    }

    /// Adds a replica to a group.
    pub fn add_replica(&mut self, group: &str, r: Replica) -> Result<(), ModelError> {
        let g = self.group_index(group)?;
        valid_address(&r.address).map_err(ModelError::invalid)?;
        if self.addresses().any(|a| a == r.address) {
            return Err(ModelError::conflict(format!(
                "{} is already used in cluster {:?}",
                r.address, self.name
            )));
        }
        self.groups[g].replicas.push(r);
        Ok(())
    }

    /// Removes a replica from a group.
    pub fn remove_replica(&mut self, group: &str, address: &str) -> Result<(), ModelError> {
        let g = self.group_index(group)?;
        let before = self.groups[g].replicas.len();
        self.groups[g].replicas.retain(|r| r.address != address);
        if self.groups[g].replicas.len() == before {
            return Err(ModelError::not_found(format!(
                "group {group:?} has no replica {address}"
            )));
        }
        Ok(())
    }

    /// Sets the zone of a group's master, or of one of its replicas.
    pub fn set_zone(
        &mut self,
        group: &str,
        replica: Option<&str>,
        zone: &str,
    ) -> Result<(), ModelError> {
        let g = self.group_index(group)?;
        match replica {
            None => self.groups[g].zone = zone.to_string(),
            Some(addr) => {
                let r = self.groups[g]
                    .replicas
                    .iter_mut()
                    .find(|r| r.address == addr)
                    .ok_or_else(|| {
                        ModelError::not_found(format!("group {group:?} has no replica {addr}"))
                    })?;
                r.zone = zone.to_string();
            }
        }
        Ok(())
    }

    /// Replaces groups, slots and lease with those of `desired` (an exported
    /// snapshot, edited). The name and slot count cannot change, and nothing
    /// may be migrating.
    pub fn apply(&mut self, desired: &Cluster) -> Result<(), ModelError> {
        if let Some(m) = self.migrations.iter().find(|m| m.active()) {
            return Err(ModelError::conflict(format!(
                "migration {} is running; wait for it to finish or cancel it before applying a snapshot",
                m.id
            )));
        }
        if desired.name != self.name {
            return Err(ModelError::invalid(format!(
                "the snapshot is of cluster {:?}, not {:?}",
                desired.name, self.name
            )));
        }
        if desired.slot_count != self.slot_count {
            return Err(ModelError::invalid(format!(
                "the slot count is fixed at {} for cluster {:?}",
                self.slot_count, self.name
            )));
        }
        let mut next = Cluster {
            name: self.name.clone(),
            version: self.version,
            slot_count: self.slot_count,
            lease_millis: desired.lease_millis,
            groups: Vec::new(),
            slots: Vec::new(),
            migrations: self.migrations.clone(),
            next_migration: self.next_migration,
        };
        if desired.groups.is_empty() {
            return Err(ModelError::invalid("a cluster needs at least one group"));
        }
        if next.lease_millis < 1000 {
            return Err(ModelError::invalid("the lease must be at least 1s"));
        }
        for g in &desired.groups {
            next.check_new_group(g)?;
            next.groups.push(g.clone());
        }
        let mut owners = vec![None; next.slot_count as usize];
        for r in &desired.slots {
            let g = next.group_index(&r.group)?;
            if r.last < r.first || r.last >= next.slot_count {
                return Err(ModelError::invalid(format!(
                    "slot range {}-{} is reversed or beyond the last slot",
                    r.first, r.last
                )));
            }
            for s in r.first..=r.last {
                if owners[s as usize].is_some() {
                    return Err(ModelError::invalid(format!(
                        "slot {s} is given to two groups"
                    )));
                }
                owners[s as usize] = Some(g);
            }
        }
        next.slots = ranges_from_owners(&owners, &next.group_names());
        *self = next;
        Ok(())
    }

    /// The snapshot data planes route by.
    pub fn snapshot(&self) -> Snapshot {
        let index =
            |name: &str| self.groups.iter().position(|g| g.name == name).unwrap_or(0) as u16;
        Snapshot {
            cluster: self.name.clone(),
            version: self.version,
            slot_count: self.slot_count,
            groups: self
                .groups
                .iter()
                .map(|g| snapshot::Group {
                    name: g.name.clone(),
                    master: g.master.clone(),
                    replicas: g
                        .replicas
                        .iter()
                        .map(|r| snapshot::Replica {
                            address: r.address.clone(),
                            zone: r.zone.clone(),
                        })
                        .collect(),
                    zone: g.zone.clone(),
                })
                .collect(),
            slot_ranges: self
                .slots
                .iter()
                .map(|r| snapshot::SlotRange {
                    first: r.first,
                    last: r.last,
                    group: index(&r.group),
                })
                .collect(),
            migrations: self.snapshot_migrations(|name| index(name)),
            lease_millis: self.lease_millis,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::ErrorKind;

    /// A group `name` with its master on loopback port `port`.
    pub(crate) fn g(name: &str, port: u16) -> Group {
        Group {
            name: name.into(),
            master: format!("127.0.0.1:{port}"),
            replicas: vec![],
            zone: String::new(),
        }
    }

    fn three() -> Cluster {
        Cluster::create(
            "c1",
            16384,
            vec![g("g1", 7001), g("g2", 7002), g("g3", 7003)],
            30_000,
        )
        .unwrap()
    }

    #[test]
    fn create_splits_slots_evenly_in_order() {
        let c = three();
        assert_eq!(c.version, 1);
        let r: Vec<(u32, u32, &str)> = c
            .slots
            .iter()
            .map(|r| (r.first, r.last, r.group.as_str()))
            .collect();
        assert_eq!(
            r,
            vec![(0, 5461, "g1"), (5462, 10922, "g2"), (10923, 16383, "g3")]
        );
        let s = c.snapshot();
        s.validate().unwrap();
        assert_eq!(s.slot_ranges[1].group, 1);
    }

    #[test]
    fn create_rejects_bad_input() {
        let cases = [
            Cluster::create("bad name", 16384, vec![g("g1", 1)], 30_000),
            Cluster::create("c", 1000, vec![g("g1", 1)], 30_000),
            Cluster::create("c", 16384, vec![], 30_000),
            Cluster::create("c", 16384, vec![g("g1", 1), g("g1", 2)], 30_000),
            Cluster::create("c", 16384, vec![g("g1", 1), g("g2", 1)], 30_000),
            Cluster::create(
                "c",
                16384,
                vec![Group {
                    master: "nohost".into(),
                    ..g("g1", 1)
                }],
                30_000,
            ),
            Cluster::create("c", 16384, vec![g("g1", 1)], 10),
        ];
        for c in cases {
            assert!(c.is_err());
        }
    }

    #[test]
    fn grow_then_shrink_refused_while_owning_slots() {
        let mut c = three();
        c.grow(g("g4", 7004)).unwrap();
        assert!(c.slots_of(3).is_empty());
        assert_eq!(c.grow(g("g4", 7005)).unwrap_err().kind, ErrorKind::Conflict);
        assert_eq!(c.grow(g("g5", 7001)).unwrap_err().kind, ErrorKind::Conflict);
        let e = c.shrink("g3").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Forbidden);
        assert!(e.message.contains("10923-16383"), "{}", e.message);
        c.shrink("g4").unwrap();
        assert_eq!(c.groups.len(), 3);
        assert_eq!(c.shrink("nope").unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn assign_takes_only_unowned_slots() {
        let mut c = Cluster::create("c", 16, vec![g("a", 1)], 30_000).unwrap();
        c.grow(g("b", 2)).unwrap();
        let e = c.assign(&[(3, 4)], "b").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.message.contains("3-4"));
        let mut d = c.clone();
        d.slots = vec![OwnedRange {
            first: 0,
            last: 9,
            group: "a".into(),
        }];
        c.apply(&d).unwrap();
        c.assign(&[(10, 12), (15, 15)], "b").unwrap();
        assert_eq!(c.slots_of(1), vec![10, 11, 12, 15]);
        c.shrink("b").unwrap_err();
    }

    #[test]
    fn replica_and_zone_edits() {
        let mut c = three();
        c.add_replica(
            "g1",
            Replica {
                address: "127.0.0.1:7101".into(),
                zone: "b".into(),
            },
        )
        .unwrap();
        assert_eq!(
            c.add_replica(
                "g2",
                Replica {
                    address: "127.0.0.1:7101".into(),
                    zone: String::new()
                }
            )
            .unwrap_err()
            .kind,
            ErrorKind::Conflict
        );
        c.set_zone("g1", None, "a").unwrap();
        c.set_zone("g1", Some("127.0.0.1:7101"), "c").unwrap();
        assert_eq!(c.groups[0].replicas[0].zone, "c");
        assert_eq!(
            c.set_zone("g1", Some("1.1.1.1:1"), "c").unwrap_err().kind,
            ErrorKind::NotFound
        );
        c.remove_replica("g1", "127.0.0.1:7101").unwrap();
        assert!(c.remove_replica("g1", "127.0.0.1:7101").is_err());
        c.set_master("g1", "127.0.0.1:8001").unwrap();
        assert_eq!(
            c.set_master("g1", "127.0.0.1:7002").unwrap_err().kind,
            ErrorKind::Conflict
        );
    }

    #[test]
    fn apply_validates_the_whole_snapshot() {
        let mut c = three();
        let mut d = c.clone();
        d.slots[0].group = "nope".into();
        assert_eq!(c.apply(&d).unwrap_err().kind, ErrorKind::NotFound);
        let mut d = c.clone();
        d.slots[1].first = 5000;
        assert!(c.apply(&d).unwrap_err().message.contains("two groups"));
        let mut d = c.clone();
        d.slot_count = 1024;
        assert!(c.apply(&d).is_err());
        let mut d = c.clone();
        d.name = "other".into();
        assert!(c.apply(&d).is_err());
        let mut d = c.clone();
        d.slots.pop();
        c.apply(&d).unwrap();
        assert_eq!(
            c.owners().iter().filter(|o| o.is_none()).count(),
            16384 - 10923
        );
    }
}
