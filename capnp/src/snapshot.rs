//! The routing snapshot as plain Rust values, and its Cap'n Proto encoding
//! (`schema/snapshot.capnp`). The control plane builds one per version; data
//! planes decode it, validate it, and build their routing table from it.

use crate::generated::snapshot_capnp as schema;
use crate::DecodeError;

/// Largest slot count (Redis Cluster's).
pub const MAX_SLOTS: u32 = 16384;

/// Most groups a cluster may have: one per slot at most. The control plane
/// refuses more and data planes accept up to this many, so a snapshot ctld
/// publishes is never one a data plane rejects for its size.
pub const MAX_GROUPS: usize = MAX_SLOTS as usize;

/// Longest group or zone name.
pub const MAX_NAME: usize = 64;

/// What a zone may be, for messages.
const ZONE_RULE: &str = "1 to 64 printable characters without spaces";

/// Whether `name` is a usable group name: 1 to [`MAX_NAME`] letters, digits,
/// '-', '_' and '.'. (The control plane's own rule is stricter: it also wants
/// a letter or digit first.)
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `zone` is a usable zone name: 1 to [`MAX_NAME`] printable ASCII
/// characters, no spaces.
pub fn valid_zone(zone: &str) -> bool {
    !zone.is_empty() && zone.len() <= MAX_NAME && zone.bytes().all(|b| b.is_ascii_graphic())
}

/// A whole routing snapshot of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The cluster's name.
    pub cluster: String,
    /// Increases with every change.
    pub version: u64,
    /// Hash slots: a power of two up to 16384.
    pub slot_count: u32,
    /// Groups; ranges and migrations name them by index.
    pub groups: Vec<Group>,
    /// Owned slot ranges, ascending and disjoint.
    pub slot_ranges: Vec<SlotRange>,
    /// Ranges being moved key by key.
    pub migrations: Vec<Migration>,
    /// How long a data plane may serve without a heartbeat, in milliseconds.
    pub lease_millis: u64,
}

/// A Redis group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    /// Unique within the cluster.
    pub name: String,
    /// `host:port` of the master.
    pub master: String,
    /// Replicas of the master.
    pub replicas: Vec<Replica>,
    /// The master's zone or rack ("" if unset).
    pub zone: String,
    /// Where read-only commands go.
    pub read_from: ReadFrom,
    /// Data planes hold the group's commands until a version without it (a
    /// failover or switchover under way).
    pub hold: bool,
}

/// Where data planes send a group's read-only commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// Every command to the master.
    #[default]
    Master,
    /// Read-only commands to an up replica; the master if none is up.
    Replica,
    /// As `Replica`, among the replicas in the data plane's own zone only.
    LocalZone,
}

/// A replica of a group's master.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replica {
    /// `host:port`.
    pub address: String,
    /// Zone or rack ("" if unset).
    pub zone: String,
}

/// Slots `first..=last`, owned by group index `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRange {
    /// First slot.
    pub first: u32,
    /// Last slot (inclusive).
    pub last: u32,
    /// Owner.
    pub group: u16,
}

/// Slots `first..=last` moving from group index `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// First slot.
    pub first: u32,
    /// Last slot (inclusive).
    pub last: u32,
    /// Source group.
    pub from: u16,
    /// Target group.
    pub to: u16,
    /// What data planes do with these slots.
    pub phase: Phase,
}

/// A migration's phase, as data planes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Move each key from `from` before sending its command to `to`.
    #[default]
    Moving,
    /// Hold commands (send them nowhere) until the next version.
    Blocked,
}

impl Snapshot {
    /// Checks the snapshot's own consistency (not reachability of servers).
    pub fn validate(&self) -> Result<(), String> {
        if self.cluster.is_empty() {
            return Err("snapshot without a cluster name".into());
        }
        if !self.slot_count.is_power_of_two() || self.slot_count > MAX_SLOTS {
            return Err(format!(
                "slot count {} is not a power of two up to {MAX_SLOTS}",
                self.slot_count
            ));
        }
        if self.groups.len() > MAX_GROUPS {
            return Err(format!(
                "{} groups: at most {MAX_GROUPS}",
                self.groups.len()
            ));
        }
        self.check_groups()?;
        let mut next = 0u32;
        for r in &self.slot_ranges {
            if r.first < next || r.last < r.first || r.last >= self.slot_count {
                return Err(format!(
                    "slot range {}-{} is out of order, reversed or beyond slot {}",
                    r.first,
                    r.last,
                    self.slot_count - 1
                ));
            }
            if usize::from(r.group) >= self.groups.len() {
                return Err(format!(
                    "slot range {}-{} names group {} of {}",
                    r.first,
                    r.last,
                    r.group,
                    self.groups.len()
                ));
            }
            next = r.last + 1;
        }
        let owners = self.owners();
        let mut migrating = vec![false; self.slot_count as usize];
        for m in &self.migrations {
            if m.last < m.first || m.last >= self.slot_count {
                return Err(format!(
                    "migration of slots {}-{} is reversed or out of range",
                    m.first, m.last
                ));
            }
            if usize::from(m.from) >= self.groups.len()
                || usize::from(m.to) >= self.groups.len()
                || m.from == m.to
            {
                return Err(format!(
                    "migration of slots {}-{} has invalid groups {} -> {}",
                    m.first, m.last, m.from, m.to
                ));
            }
            for s in m.first..=m.last {
                if owners[s as usize] != Some(m.from) {
                    return Err(format!(
                        "slot {s} migrates from group {} but is not owned by it",
                        m.from
                    ));
                }
                if std::mem::replace(&mut migrating[s as usize], true) {
                    return Err(format!("slot {s} is in two migrations"));
                }
            }
        }
        if self.lease_millis == 0 {
            return Err("lease of 0 ms".into());
        }
        Ok(())
    }

    /// The groups' own rules, the same for a control-plane snapshot and a
    /// standalone config file: valid and distinct names, valid zones, and
    /// every server (master or replica) in one place only.
    fn check_groups(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::with_capacity(self.groups.len());
        // Every server address, with the group that has it and whether it is
        // that group's master.
        let mut servers: std::collections::HashMap<&str, (&str, bool)> =
            std::collections::HashMap::with_capacity(self.groups.len());
        for (i, g) in self.groups.iter().enumerate() {
            if g.name.is_empty() || g.master.is_empty() {
                return Err(format!("group {i} has no name or no master"));
            }
            if !valid_group_name(&g.name) {
                return Err(format!(
                    "group {:?}: names are 1 to {MAX_NAME} characters of letters, digits, '-', '_' and '.'",
                    g.name
                ));
            }
            if !names.insert(g.name.as_str()) {
                return Err(format!("group {:?} appears twice", g.name));
            }
            if !g.zone.is_empty() && !valid_zone(&g.zone) {
                return Err(format!(
                    "group {:?}: zone {:?}: {ZONE_RULE}",
                    g.name, g.zone
                ));
            }
            match servers.insert(g.master.as_str(), (g.name.as_str(), true)) {
                None => {}
                Some((other, true)) => {
                    return Err(format!(
                        "groups {other:?} and {:?} have the same master {}",
                        g.name, g.master
                    ))
                }
                Some((other, false)) => {
                    return Err(format!(
                        "group {:?}: master {} is a replica of group {other:?}",
                        g.name, g.master
                    ))
                }
            }
            for r in &g.replicas {
                if !r.zone.is_empty() && !valid_zone(&r.zone) {
                    return Err(format!(
                        "group {:?}: replica {}: zone {:?}: {ZONE_RULE}",
                        g.name, r.address, r.zone
                    ));
                }
                if r.address.is_empty() {
                    return Err(format!("group {:?}: a replica has no address", g.name));
                }
                match servers.insert(r.address.as_str(), (g.name.as_str(), false)) {
                    None => {}
                    Some((other, _)) if other == g.name && r.address == g.master => {
                        return Err(format!(
                            "group {:?}: replica {} is the group's master",
                            g.name, r.address
                        ))
                    }
                    Some((other, _)) if other == g.name => {
                        return Err(format!(
                            "group {:?}: replica {} is listed twice",
                            g.name, r.address
                        ))
                    }
                    Some((other, _)) => {
                        return Err(format!(
                            "group {:?}: replica {} is also in group {other:?}",
                            g.name, r.address
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// The owner of every slot (`None`: unowned), expanded from the ranges.
    pub fn owners(&self) -> Vec<Option<u16>> {
        let mut owner = vec![None; self.slot_count as usize];
        for r in &self.slot_ranges {
            for s in r.first..=r.last.min(self.slot_count.saturating_sub(1)) {
                owner[s as usize] = Some(r.group);
            }
        }
        owner
    }

    /// Fills a Cap'n Proto builder.
    pub fn write(&self, mut b: schema::snapshot::Builder<'_>) {
        b.set_cluster(self.cluster.as_str());
        b.set_version(self.version);
        b.set_slot_count(self.slot_count);
        b.set_lease_millis(self.lease_millis);
        let mut groups = b.reborrow().init_groups(self.groups.len() as u32);
        for (i, g) in self.groups.iter().enumerate() {
            let mut gb = groups.reborrow().get(i as u32);
            gb.set_name(g.name.as_str());
            gb.set_master(g.master.as_str());
            gb.set_zone(g.zone.as_str());
            gb.set_read_from(match g.read_from {
                ReadFrom::Master => schema::ReadFrom::Master,
                ReadFrom::Replica => schema::ReadFrom::Replica,
                ReadFrom::LocalZone => schema::ReadFrom::LocalZone,
            });
            gb.set_hold(g.hold);
            let mut reps = gb.init_replicas(g.replicas.len() as u32);
            for (j, r) in g.replicas.iter().enumerate() {
                let mut rb = reps.reborrow().get(j as u32);
                rb.set_address(r.address.as_str());
                rb.set_zone(r.zone.as_str());
            }
        }
        let mut ranges = b.reborrow().init_slot_ranges(self.slot_ranges.len() as u32);
        for (i, r) in self.slot_ranges.iter().enumerate() {
            let mut rb = ranges.reborrow().get(i as u32);
            rb.set_first(r.first);
            rb.set_last(r.last);
            rb.set_group(r.group);
        }
        let mut migs = b.init_migrations(self.migrations.len() as u32);
        for (i, m) in self.migrations.iter().enumerate() {
            let mut mb = migs.reborrow().get(i as u32);
            mb.set_first(m.first);
            mb.set_last(m.last);
            mb.set_from(m.from);
            mb.set_to(m.to);
            mb.set_phase(match m.phase {
                Phase::Moving => schema::MigrationPhase::Moving,
                Phase::Blocked => schema::MigrationPhase::Blocked,
            });
        }
    }

    /// Reads a Cap'n Proto reader.
    pub fn read(r: schema::snapshot::Reader<'_>) -> Result<Snapshot, DecodeError> {
        let text = |t: capnp::Result<capnp::text::Reader<'_>>| -> Result<String, DecodeError> {
            Ok(t?
                .to_str()
                .map_err(|_| DecodeError::Invalid("text is not UTF-8".into()))?
                .to_string())
        };
        let mut groups = Vec::new();
        for g in r.get_groups()? {
            let mut replicas = Vec::new();
            for rep in g.get_replicas()? {
                replicas.push(Replica {
                    address: text(rep.get_address())?,
                    zone: text(rep.get_zone())?,
                });
            }
            let read_from = match g.get_read_from() {
                Ok(schema::ReadFrom::Master) => ReadFrom::Master,
                Ok(schema::ReadFrom::Replica) => ReadFrom::Replica,
                Ok(schema::ReadFrom::LocalZone) => ReadFrom::LocalZone,
                Err(e) => return Err(DecodeError::Invalid(format!("unknown read policy {}", e.0))),
            };
            groups.push(Group {
                name: text(g.get_name())?,
                master: text(g.get_master())?,
                replicas,
                zone: text(g.get_zone())?,
                read_from,
                hold: g.get_hold(),
            });
        }
        let slot_ranges = r
            .get_slot_ranges()?
            .iter()
            .map(|s| SlotRange {
                first: s.get_first(),
                last: s.get_last(),
                group: s.get_group(),
            })
            .collect();
        let mut migrations = Vec::new();
        for m in r.get_migrations()? {
            let phase = match m.get_phase() {
                Ok(schema::MigrationPhase::Moving) => Phase::Moving,
                Ok(schema::MigrationPhase::Blocked) => Phase::Blocked,
                Err(e) => {
                    return Err(DecodeError::Invalid(format!(
                        "unknown migration phase {}",
                        e.0
                    )))
                }
            };
            migrations.push(Migration {
                first: m.get_first(),
                last: m.get_last(),
                from: m.get_from(),
                to: m.get_to(),
                phase,
            });
        }
        Ok(Snapshot {
            cluster: text(r.get_cluster())?,
            version: r.get_version(),
            slot_count: r.get_slot_count(),
            groups,
            slot_ranges,
            migrations,
            lease_millis: r.get_lease_millis(),
        })
    }

    /// The snapshot as one standalone Cap'n Proto message.
    pub fn encode(&self) -> Vec<u8> {
        let mut msg = capnp::message::Builder::new_default();
        self.write(msg.init_root());
        capnp::serialize::write_message_to_words(&msg)
    }

    /// Decodes a message made by [`encode`](Self::encode).
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        let msg = crate::read_message(bytes)?;
        Snapshot::read(msg.get_root()?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> Snapshot {
        Snapshot {
            cluster: "prod".into(),
            version: 7,
            slot_count: 16384,
            groups: vec![
                Group {
                    name: "g1".into(),
                    master: "10.0.0.1:6379".into(),
                    replicas: vec![Replica {
                        address: "10.0.1.1:6379".into(),
                        zone: "b".into(),
                    }],
                    zone: "a".into(),
                    read_from: ReadFrom::LocalZone,
                    hold: false,
                },
                Group {
                    name: "g2".into(),
                    master: "10.0.0.2:6379".into(),
                    hold: true,
                    ..Group::default()
                },
            ],
            slot_ranges: vec![
                SlotRange {
                    first: 0,
                    last: 8191,
                    group: 0,
                },
                SlotRange {
                    first: 8192,
                    last: 16383,
                    group: 1,
                },
            ],
            migrations: vec![Migration {
                first: 100,
                last: 200,
                from: 0,
                to: 1,
                phase: Phase::Blocked,
            }],
            lease_millis: 30_000,
        }
    }

    #[test]
    fn round_trips() {
        let s = sample();
        s.validate().unwrap();
        assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn validation_names_the_problem() {
        let mut s = sample();
        s.slot_ranges[1].first = 8000;
        assert!(s.validate().unwrap_err().contains("out of order"));
        let mut s = sample();
        s.slot_ranges[1].group = 9;
        assert!(s.validate().unwrap_err().contains("names group 9"));
        let mut s = sample();
        s.slot_count = 1000;
        assert!(s.validate().unwrap_err().contains("power of two"));
        let mut s = sample();
        s.groups[1].name = "g1".into();
        assert!(s.validate().unwrap_err().contains("twice"));
        let mut s = sample();
        s.migrations[0].to = 0;
        assert!(s.validate().unwrap_err().contains("invalid groups"));
    }

    #[test]
    fn every_server_is_in_one_place_and_names_are_valid() {
        type Break = fn(&mut Snapshot);
        let cases: [(Break, &str); 8] = [
            (
                |s| s.groups[1].master = "10.0.0.1:6379".into(),
                "have the same master",
            ),
            (
                |s| s.groups[1].master = "10.0.1.1:6379".into(),
                "is a replica of group",
            ),
            (
                |s| s.groups[0].replicas[0].address = "10.0.0.1:6379".into(),
                "is the group's master",
            ),
            (
                |s| {
                    let r = s.groups[0].replicas[0].clone();
                    s.groups[0].replicas.push(r)
                },
                "listed twice",
            ),
            (
                |s| {
                    let r = s.groups[0].replicas[0].clone();
                    s.groups[1].replicas.push(r)
                },
                "also in group \"g1\"",
            ),
            (|s| s.groups[0].name = "a b".into(), "names are"),
            (|s| s.groups[0].zone = "a b".into(), "zone"),
            (|s| s.groups[0].replicas[0].zone = "x".repeat(65), "zone"),
        ];
        for (break_it, want) in cases {
            let mut s = sample();
            break_it(&mut s);
            let err = s.validate().unwrap_err();
            assert!(err.contains(want), "{err:?} does not say {want:?}");
        }
    }

    #[test]
    fn owners_expand_ranges() {
        let mut s = sample();
        s.slot_count = 8;
        s.slot_ranges = vec![
            SlotRange {
                first: 1,
                last: 2,
                group: 1,
            },
            SlotRange {
                first: 5,
                last: 7,
                group: 0,
            },
        ];
        assert_eq!(
            s.owners(),
            vec![
                None,
                Some(1),
                Some(1),
                None,
                None,
                Some(0),
                Some(0),
                Some(0)
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Snapshot::decode(b"").is_err());
        assert!(Snapshot::decode(&[0xff; 64]).is_err());
        let mut bytes = sample().encode();
        bytes.truncate(bytes.len() / 2);
        assert!(Snapshot::decode(&bytes).is_err());
    }
}
