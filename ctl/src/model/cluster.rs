//! A cluster's desired state and the operations on it (seed 000/003's
//! lifecycle: create, grow, shrink, assign, edit groups, apply). Every
//! operation validates before it changes anything; the caller bumps the
//! version, persists and publishes.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::addresses::{Resolved, Used};
use super::ha::{FailoverProgress, FailoverRecord, HaSettings};
use super::migration::Migration;
use super::names::{check_lease, check_name, check_zone, parse_address, MAX_GROUPS, MAX_REPLICAS};
use super::slots::{format_slots, quote, ranges_from_owners, OwnedRange, SlotSet};
use super::ModelError;
use keyway_capnp::snapshot::{self, Snapshot};

/// A Redis group: a master and its replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Where data planes send read-only commands.
    #[serde(default, skip_serializing_if = "ReadFrom::is_master")]
    pub read_from: ReadFrom,
    /// Data planes hold the group's commands: a failover or switchover is
    /// under way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold: bool,
    /// Former masters, failed over while down: each is made a replica of
    /// the current master when it returns, and only then listed (and read
    /// from) as one. Not in the snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub demoting: Vec<Replica>,
    /// A failover under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverProgress>,
    /// Data planes and keyway-ctld speak TLS to the group's servers, with
    /// the CA and client certificate of their own host (`[backend] tls_*`,
    /// `keyway-ctld --backend-tls-*`); false: plain TCP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// The name the servers' certificates must carry, with `tls`; none:
    /// each server's own host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

/// Where data planes send a group's read-only commands (`read_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadFrom {
    /// Every command to the master (the default).
    #[default]
    Master,
    /// Read-only commands to an up replica, the master if none is up.
    Replica,
    /// As `replica`, among the replicas in the data plane's zone only.
    LocalZone,
}

impl ReadFrom {
    fn is_master(&self) -> bool {
        *self == ReadFrom::Master
    }

    /// As the snapshot says it.
    pub fn wire(self) -> snapshot::ReadFrom {
        match self {
            ReadFrom::Master => snapshot::ReadFrom::Master,
            ReadFrom::Replica => snapshot::ReadFrom::Replica,
            ReadFrom::LocalZone => snapshot::ReadFrom::LocalZone,
        }
    }
}

/// Text that is not a [`ReadFrom`] (quoted, bounded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("read_from {0}: must be \"master\", \"replica\" or \"local-zone\"")]
pub struct ReadFromError(String);

impl std::str::FromStr for ReadFrom {
    type Err = ReadFromError;
    fn from_str(s: &str) -> Result<ReadFrom, ReadFromError> {
        match s {
            "master" => Ok(ReadFrom::Master),
            "replica" => Ok(ReadFrom::Replica),
            "local-zone" => Ok(ReadFrom::LocalZone),
            _ => Err(ReadFromError(format!("{s:?}"))),
        }
    }
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
    /// Health checks and automatic failover.
    #[serde(default)]
    pub ha: HaSettings,
    /// Recent failovers, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failovers: Vec<FailoverRecord>,
    /// The last failover id given.
    #[serde(default)]
    pub next_failover: u64,
    /// Client users replacing the data planes' own (none: each keeps its
    /// config file's); passwords as hashes only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<super::ClientUser>,
}

/// Checks a group's own fields: its name, addresses, zones and replica
/// count (not whether its addresses are used elsewhere).
pub fn check_group(g: &Group) -> Result<(), ModelError> {
    check_name("group", &g.name).map_err(ModelError::from)?;
    let invalid = |e: String| ModelError::invalid(format!("group {:?}: {e}", g.name));
    parse_address(&g.master).map_err(|e| invalid(format!("master {e}")))?;
    check_zone(&g.zone).map_err(ModelError::from)?;
    if g.replicas.len() > MAX_REPLICAS {
        return Err(invalid(format!(
            "{} replicas: at most {MAX_REPLICAS}",
            g.replicas.len()
        )));
    }
    for r in &g.replicas {
        check_replica(r)?;
    }
    if let Some(n) = &g.tls_server_name {
        if !g.tls {
            return Err(invalid(format!("tls_server_name {n:?} needs tls")));
        }
        if !snapshot::valid_server_name(n) {
            return Err(invalid(format!(
                "tls_server_name {:?}: 1 to {} letters, digits, '-', '.', '_' and ':'",
                n.chars().take(64).collect::<String>(),
                snapshot::MAX_SERVER_NAME
            )));
        }
    }
    Ok(())
}

fn check_replica(r: &Replica) -> Result<(), ModelError> {
    parse_address(&r.address).map_err(|e| ModelError::invalid(format!("replica {e}")))?;
    Ok(check_zone(&r.zone)?)
}

impl Group {
    /// Its master's, replicas' and former masters' addresses.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.master.as_str())
            .chain(self.replicas.iter().map(|r| r.address.as_str()))
            .chain(self.demoting.iter().map(|r| r.address.as_str()))
    }
}

impl Cluster {
    /// A new cluster at version 1 with `groups` sharing the slots evenly, in
    /// listed order. `resolved` is what the addresses resolved to, to find
    /// one server given twice.
    pub fn create(
        name: &str,
        slot_count: u32,
        groups: Vec<Group>,
        lease_millis: u64,
        resolved: &Resolved,
    ) -> Result<Cluster, ModelError> {
        check_name("cluster", name).map_err(ModelError::from)?;
        if !slot_count.is_power_of_two() || slot_count > snapshot::MAX_SLOTS {
            return Err(ModelError::invalid(format!(
                "slots = {slot_count}: must be a power of two from 1 to {}",
                snapshot::MAX_SLOTS
            )));
        }
        check_lease(lease_millis).map_err(ModelError::from)?;
        let mut c = Cluster {
            name: name.to_string(),
            version: 1,
            slot_count,
            lease_millis,
            groups: Vec::new(),
            slots: Vec::new(),
            migrations: Vec::new(),
            next_migration: 0,
            ha: HaSettings::default(),
            failovers: Vec::new(),
            next_failover: 0,
            users: Vec::new(),
        };
        c.set_groups(groups, resolved)?;
        let n = c.groups.len() as u64;
        let owners: Vec<Option<usize>> = (0..u64::from(slot_count))
            .map(|s| Some((s * n / u64::from(slot_count)) as usize))
            .collect();
        c.slots = ranges_from_owners(&owners, &c.group_names());
        Ok(c)
    }

    /// Replaces the groups with `groups`, checked as a whole: at least one,
    /// at most [`MAX_GROUPS`], names and servers each used once.
    fn set_groups(&mut self, groups: Vec<Group>, resolved: &Resolved) -> Result<(), ModelError> {
        if groups.is_empty() {
            return Err(ModelError::invalid("a cluster needs at least one group"));
        }
        if groups.len() > MAX_GROUPS {
            return Err(ModelError::invalid(format!(
                "{} groups: a cluster has at most {MAX_GROUPS}",
                groups.len()
            )));
        }
        let mut names = HashSet::with_capacity(groups.len());
        let mut used = Used::new(&self.name, resolved);
        for g in &groups {
            check_group(g)?;
            if !names.insert(g.name.as_str()) {
                return Err(ModelError::conflict(format!(
                    "cluster {:?} already has a group {:?}",
                    self.name, g.name
                )));
            }
            for a in g.addresses() {
                used.claim(a)?;
            }
        }
        self.groups = groups;
        Ok(())
    }

    fn group_names(&self) -> Vec<String> {
        self.groups.iter().map(|g| g.name.clone()).collect()
    }

    /// Group indexes by name.
    pub(crate) fn index(&self) -> HashMap<&str, usize> {
        self.groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.as_str(), i))
            .collect()
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

    /// The servers the cluster's groups use.
    fn used<'r>(&self, resolved: &'r Resolved) -> Used<'r> {
        let mut used = Used::new(&self.name, resolved);
        for a in self.groups.iter().flat_map(Group::addresses) {
            // A stored cluster is valid: its addresses are distinct.
            let _ = used.claim(a);
        }
        used
    }

    /// Owner index of every slot.
    pub fn owners(&self) -> Vec<Option<usize>> {
        let index = self.index();
        let mut owner = vec![None; self.slot_count as usize];
        for r in &self.slots {
            let g = index.get(r.group.as_str()).copied();
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
    pub fn grow(&mut self, g: Group, resolved: &Resolved) -> Result<(), ModelError> {
        check_group(&g)?;
        if self.groups.iter().any(|o| o.name == g.name) {
            return Err(ModelError::conflict(format!(
                "cluster {:?} already has a group {:?}",
                self.name, g.name
            )));
        }
        if self.groups.len() >= MAX_GROUPS {
            return Err(ModelError::invalid(format!(
                "cluster {:?} has {MAX_GROUPS} groups already: the most it may have",
                self.name
            )));
        }
        let mut used = self.used(resolved);
        for a in g.addresses() {
            used.claim(a)?;
        }
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
    pub fn assign(&mut self, slots: &SlotSet, group: &str) -> Result<(), ModelError> {
        let g = self.group_index(group)?;
        if slots.slot_count() != self.slot_count {
            return Err(ModelError::invalid(format!(
                "slots of a cluster of {} slots, not {}",
                slots.slot_count(),
                self.slot_count
            )));
        }
        let mut owners = self.owners();
        let taken: Vec<u32> = slots
            .iter()
            .filter(|&s| owners[s as usize].is_some())
            .collect();
        if !taken.is_empty() {
            return Err(ModelError::conflict(format!(
                "slots {} are already owned; only unowned slots can be assigned",
                format_slots(&taken)
            )));
        }
        for s in slots.iter() {
            owners[s as usize] = Some(g);
        }
        self.slots = ranges_from_owners(&owners, &self.group_names());
        Ok(())
    }

    /// Replaces a group's master address.
    pub fn set_master(
        &mut self,
        group: &str,
        master: &str,
        resolved: &Resolved,
    ) -> Result<(), ModelError> {
        let g = self.group_index(group)?;
        self.not_failing_over(g)?;
        parse_address(master).map_err(|e| ModelError::invalid(format!("master {e}")))?;
        if self.groups[g].master == master {
            return Ok(());
        }
        let mut used = self.used(resolved);
        used.release(&self.groups[g].master);
        used.claim(master)?;
        self.groups[g].master = master.to_string();
        Ok(())
    }

    /// Refuses to edit group `g`'s servers while it fails over.
    fn not_failing_over(&self, g: usize) -> Result<(), ModelError> {
        match &self.groups[g].failover {
            Some(p) => Err(ModelError::conflict(format!(
                "group {:?} is failing over to {} (failover {}); wait for it to finish",
                self.groups[g].name,
                quote(&p.to),
                p.id
            ))),
            None => Ok(()),
        }
    }

    /// Adds a replica to a group.
    pub fn add_replica(
        &mut self,
        group: &str,
        r: Replica,
        resolved: &Resolved,
    ) -> Result<(), ModelError> {
        let g = self.group_index(group)?;
        check_replica(&r)?;
        if self.groups[g].replicas.len() >= MAX_REPLICAS {
            return Err(ModelError::invalid(format!(
                "group {group:?} has {MAX_REPLICAS} replicas already: the most a group may have"
            )));
        }
        self.used(resolved).claim(&r.address)?;
        self.groups[g].replicas.push(r);
        Ok(())
    }

    /// Removes a replica from a group (or a former master waiting to be made
    /// one, which is then no longer looked after).
    pub fn remove_replica(&mut self, group: &str, address: &str) -> Result<(), ModelError> {
        let g = self.group_index(group)?;
        self.not_failing_over(g)?;
        let former = self.groups[g].demoting.len();
        self.groups[g].demoting.retain(|r| r.address != address);
        if self.groups[g].demoting.len() != former {
            return Ok(());
        }
        let before = self.groups[g].replicas.len();
        self.groups[g].replicas.retain(|r| r.address != address);
        if self.groups[g].replicas.len() == before {
            return Err(ModelError::not_found(format!(
                "group {group:?} has no replica {}",
                quote(address)
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
        check_zone(zone).map_err(ModelError::from)?;
        match replica {
            None => self.groups[g].zone = zone.to_string(),
            Some(addr) => {
                let r = self.groups[g]
                    .replicas
                    .iter_mut()
                    .find(|r| r.address == addr)
                    .ok_or_else(|| {
                        ModelError::not_found(format!(
                            "group {group:?} has no replica {}",
                            quote(addr)
                        ))
                    })?;
                r.zone = zone.to_string();
            }
        }
        Ok(())
    }

    /// Replaces groups, slots and lease with those of `desired` (an exported
    /// snapshot, edited). The name and slot count cannot change, and nothing
    /// may be migrating.
    pub fn apply(&mut self, desired: &Cluster, resolved: &Resolved) -> Result<(), ModelError> {
        if let Some(m) = self.migrations.iter().find(|m| m.active()) {
            return Err(ModelError::conflict(format!(
                "migration {} is running; wait for it to finish or cancel it before applying a snapshot",
                m.id
            )));
        }
        if desired.name != self.name {
            return Err(ModelError::invalid(format!(
                "the snapshot is of cluster {}, not {:?}",
                quote(&desired.name),
                self.name
            )));
        }
        if desired.slot_count != self.slot_count {
            return Err(ModelError::invalid(format!(
                "the slot count is fixed at {} for cluster {:?}",
                self.slot_count, self.name
            )));
        }
        check_lease(desired.lease_millis).map_err(ModelError::from)?;
        desired.ha.check()?;
        if let Some(g) = self.groups.iter().find(|g| g.failover.is_some()) {
            return Err(ModelError::conflict(format!(
                "group {:?} is failing over; wait for it to finish before applying a snapshot",
                g.name
            )));
        }
        if let Some(g) = desired
            .groups
            .iter()
            .find(|g| g.hold || g.failover.is_some())
        {
            return Err(ModelError::invalid(format!(
                "group {:?} of the snapshot is held or failing over: only ctld starts failovers",
                g.name
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
            ha: desired.ha,
            failovers: self.failovers.clone(),
            next_failover: self.next_failover,
            // Users are set on their own (`Change::SetUsers`): an exported
            // snapshot applied again keeps the cluster's.
            users: self.users.clone(),
        };
        next.set_groups(desired.groups.clone(), resolved)?;
        let index = next.index();
        let mut owners = vec![None; next.slot_count as usize];
        let mut given = SlotSet::new(next.slot_count);
        for r in &desired.slots {
            let g = *index.get(r.group.as_str()).ok_or_else(|| {
                ModelError::not_found(format!(
                    "slot range {}-{} names no group of the snapshot: {}",
                    r.first,
                    r.last,
                    quote(&r.group)
                ))
            })?;
            given.insert_range(r.first, r.last).map_err(|e| {
                ModelError::invalid(format!(
                    "slot range {e}; a slot is given to two groups at most once"
                ))
            })?;
            for s in r.first..=r.last {
                owners[s as usize] = Some(g);
            }
        }
        next.slots = ranges_from_owners(&owners, &next.group_names());
        *self = next;
        Ok(())
    }

    /// The snapshot data planes route by.
    pub fn snapshot(&self) -> Snapshot {
        let index = self.index();
        let index = |name: &str| index.get(name).copied().unwrap_or(0) as u16;
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
                    read_from: g.read_from.wire(),
                    hold: g.hold,
                    tls: g.tls,
                    tls_server_name: g.tls_server_name.clone().unwrap_or_default(),
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
            migrations: self.snapshot_migrations(index),
            lease_millis: self.lease_millis,
            users: self.users.iter().map(super::ClientUser::wire).collect(),
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
            ..Group::default()
        }
    }

    #[test]
    fn stored_groups_without_tls_read_unchanged() {
        // A group as stored before TLS existed.
        let old = r#"{"name":"a","master":"127.0.0.1:1","replicas":[],"zone":""}"#;
        let g: Group = serde_json::from_str(old).unwrap();
        assert!(!g.tls);
        assert_eq!(g.tls_server_name, None);
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            old,
            "written back as it was"
        );
        let mut t = g.clone();
        t.tls = true;
        t.tls_server_name = Some("redis.internal".into());
        let text = serde_json::to_string(&t).unwrap();
        assert!(
            text.contains(r#""tls":true,"tls_server_name":"redis.internal""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Group>(&text).unwrap(), t);
    }

    /// No resolution: addresses compare by canonical text.
    pub(crate) fn none() -> Resolved {
        Resolved::none()
    }

    /// `Cluster::create` with no resolution.
    pub(crate) fn create(
        name: &str,
        slots: u32,
        groups: Vec<Group>,
        lease: u64,
    ) -> Result<Cluster, ModelError> {
        Cluster::create(name, slots, groups, lease, &none())
    }

    pub(crate) fn set(ranges: &[(u32, u32)], slot_count: u32) -> SlotSet {
        SlotSet::from_ranges(ranges, slot_count).unwrap()
    }

    fn three() -> Cluster {
        create(
            "c1",
            16384,
            vec![g("g1", 7001), g("g2", 7002), g("g3", 7003)],
            30_000,
        )
        .unwrap()
    }

    fn replica(address: &str) -> Replica {
        Replica {
            address: address.into(),
            zone: String::new(),
        }
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
        c.validate().unwrap();
    }

    #[test]
    fn create_rejects_bad_input() {
        let cases = [
            create("bad name", 16384, vec![g("g1", 1)], 30_000),
            create(".", 16384, vec![g("g1", 1)], 30_000),
            create("..", 16384, vec![g("g1", 1)], 30_000),
            create("c", 1000, vec![g("g1", 1)], 30_000),
            create("c", 32768, vec![g("g1", 1)], 30_000),
            create("c", 16384, vec![], 30_000),
            create("c", 16384, vec![g("g1", 1), g("g1", 2)], 30_000),
            create("c", 16384, vec![g("g1", 1), g("g2", 1)], 30_000),
            create(
                "c",
                16384,
                vec![Group {
                    master: "nohost".into(),
                    ..g("g1", 1)
                }],
                30_000,
            ),
            create(
                "c",
                16384,
                vec![Group {
                    master: "a/b?c:1".into(),
                    ..g("g1", 1)
                }],
                30_000,
            ),
            create(
                "c",
                16384,
                vec![Group {
                    zone: "bad zone".into(),
                    ..g("g1", 1)
                }],
                30_000,
            ),
            create("c", 16384, vec![g("g1", 1)], 10),
            create("c", 16384, vec![g("g1", 1)], 600_001),
            create("c", 16384, vec![g("g1", 1)], u64::MAX),
        ];
        for (i, c) in cases.into_iter().enumerate() {
            assert!(c.is_err(), "case {i} was accepted");
        }
    }

    #[test]
    fn group_and_replica_counts_are_bounded_and_checked_in_linear_time() {
        // As many groups as slots: accepted (this took seconds when every
        // group's addresses were compared with every other's).
        let groups: Vec<Group> = (0..MAX_GROUPS)
            .map(|i| Group {
                name: format!("g{i}"),
                master: format!("10.{}.{}.1:6379", i / 256, i % 256),
                ..Group::default()
            })
            .collect();
        let mut c = create("big", 16384, groups.clone(), 30_000).unwrap();
        c.validate().unwrap();
        assert_eq!(c.slots.len(), MAX_GROUPS, "one slot each");
        let e = c.grow(g("one-more", 1), &none()).unwrap_err();
        assert!(e.message.contains("16384 groups already"), "{e}");
        let mut over = groups;
        over.push(g("one-more", 1));
        let e = create("big", 16384, over, 30_000).unwrap_err();
        assert!(e.message.contains("at most 16384"), "{e}");
        // Replicas: at most MAX_REPLICAS per group.
        let mut c = three();
        for i in 0..MAX_REPLICAS {
            c.add_replica("g1", replica(&format!("127.0.0.1:{}", 8000 + i)), &none())
                .unwrap();
        }
        let e = c
            .add_replica("g1", replica("127.0.0.1:9999"), &none())
            .unwrap_err();
        assert!(e.message.contains("16 replicas already"), "{e}");
        let mut many = g("gx", 1);
        many.replicas = (0..=MAX_REPLICAS)
            .map(|i| replica(&format!("127.0.0.2:{}", 100 + i)))
            .collect();
        assert!(create("c", 16, vec![many], 30_000)
            .unwrap_err()
            .message
            .contains("17 replicas: at most 16"));
    }

    #[test]
    fn grow_then_shrink_refused_while_owning_slots() {
        let mut c = three();
        c.grow(g("g4", 7004), &none()).unwrap();
        assert!(c.slots_of(3).is_empty());
        assert_eq!(
            c.grow(g("g4", 7005), &none()).unwrap_err().kind,
            ErrorKind::Conflict
        );
        assert_eq!(
            c.grow(g("g5", 7001), &none()).unwrap_err().kind,
            ErrorKind::Conflict
        );
        let e = c.shrink("g3").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Forbidden);
        assert!(e.message.contains("10923-16383"), "{}", e.message);
        c.shrink("g4").unwrap();
        assert_eq!(c.groups.len(), 3);
        assert_eq!(c.shrink("nope").unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn one_server_under_two_names_is_refused() {
        let mut c = three();
        let mut resolved = Resolved::none();
        resolved.insert("localhost:7001", vec!["127.0.0.1:7001".parse().unwrap()]);
        let e = c
            .grow(
                Group {
                    master: "localhost:7001".into(),
                    ..g("g4", 1)
                },
                &resolved,
            )
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.message.contains("same server as 127.0.0.1:7001"), "{e}");
        let e = c
            .add_replica("g2", replica("localhost:7001"), &resolved)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(c.set_master("g2", "localhost:7001", &resolved).is_err());
        // Its own master, under another name, is fine.
        c.set_master("g1", "localhost:7001", &resolved).unwrap();
        // Textual spellings of one IP clash without any resolution.
        assert!(c
            .add_replica("g3", replica("127.0.0.1:07002"), &none())
            .is_err());
    }

    #[test]
    fn assign_takes_only_unowned_slots() {
        let mut c = create("c", 16, vec![g("a", 1)], 30_000).unwrap();
        c.grow(g("b", 2), &none()).unwrap();
        let e = c.assign(&set(&[(3, 4)], 16), "b").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.message.contains("3-4"));
        let mut d = c.clone();
        d.slots = vec![OwnedRange {
            first: 0,
            last: 9,
            group: "a".into(),
        }];
        c.apply(&d, &none()).unwrap();
        c.assign(&set(&[(10, 12), (15, 15)], 16), "b").unwrap();
        assert_eq!(c.slots_of(1), vec![10, 11, 12, 15]);
        c.shrink("b").unwrap_err();
        assert_eq!(
            c.assign(&set(&[(13, 13)], 1024), "b").unwrap_err().kind,
            ErrorKind::Invalid,
            "a set of another slot count"
        );
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
            &none(),
        )
        .unwrap();
        assert_eq!(
            c.add_replica("g2", replica("127.0.0.1:7101"), &none())
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
        assert_eq!(
            c.set_zone("g1", None, "not a zone").unwrap_err().kind,
            ErrorKind::Invalid
        );
        c.remove_replica("g1", "127.0.0.1:7101").unwrap();
        assert!(c.remove_replica("g1", "127.0.0.1:7101").is_err());
        c.set_master("g1", "127.0.0.1:8001", &none()).unwrap();
        assert_eq!(
            c.set_master("g1", "127.0.0.1:7002", &none())
                .unwrap_err()
                .kind,
            ErrorKind::Conflict
        );
        assert_eq!(
            c.set_master("g1", "h:0", &none()).unwrap_err().kind,
            ErrorKind::Invalid
        );
    }

    #[test]
    fn apply_validates_the_whole_snapshot() {
        let mut c = three();
        let mut d = c.clone();
        d.slots[0].group = "nope".into();
        assert_eq!(c.apply(&d, &none()).unwrap_err().kind, ErrorKind::NotFound);
        let mut d = c.clone();
        d.slots[1].first = 5000;
        let e = c.apply(&d, &none()).unwrap_err();
        assert!(e.message.contains("two groups"), "{e}");
        let mut d = c.clone();
        d.slot_count = 1024;
        assert!(c.apply(&d, &none()).is_err());
        let mut d = c.clone();
        d.name = "other".into();
        assert!(c.apply(&d, &none()).is_err());
        let mut d = c.clone();
        d.lease_millis = 0;
        assert!(c.apply(&d, &none()).is_err());
        let mut d = c.clone();
        d.slots.pop();
        c.apply(&d, &none()).unwrap();
        assert_eq!(
            c.owners().iter().filter(|o| o.is_none()).count(),
            16384 - 10923
        );
        c.validate().unwrap();
    }
}
