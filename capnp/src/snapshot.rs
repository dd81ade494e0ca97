//! The routing snapshot as plain Rust values, and its Cap'n Proto encoding
//! (`schema/snapshot.capnp`). The control plane builds one per version; data
//! planes decode it, validate it, and build their routing table from it.

use crate::generated::snapshot_capnp as schema;
use crate::DecodeError;

pub use crate::users::User;

/// Largest slot count (Redis Cluster's).
pub use crate::slot::MAX_SLOTS;

/// Most groups a cluster may have: one per slot at most. The control plane
/// refuses more and data planes accept up to this many, so a snapshot ctld
/// publishes is never one a data plane rejects for its size.
pub const MAX_GROUPS: usize = MAX_SLOTS as usize;

/// Longest group or zone name.
pub const MAX_NAME: usize = 64;

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

/// Longest `tls_server_name` (a DNS name's limit).
pub const MAX_SERVER_NAME: usize = 253;

/// Whether `name` may be a group's `tls_server_name`: 1 to
/// [`MAX_SERVER_NAME`] letters, digits, '-', '.', '_' and ':' (a DNS name or
/// an IP address; the data plane's TLS library has the last word).
pub fn valid_server_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
}

/// A rule of [`Snapshot::validate`] that a snapshot breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The cluster name is empty.
    #[error("snapshot without a cluster name")]
    NoCluster,
    /// The slot count is not a power of two up to [`MAX_SLOTS`].
    #[error("slot count {0} is not a power of two up to {MAX_SLOTS}")]
    SlotCount(u32),
    /// More than [`MAX_GROUPS`] groups.
    #[error("{0} groups: at most {MAX_GROUPS}")]
    TooManyGroups(usize),
    /// The group at this index has no name or no master.
    #[error("group {0} has no name or no master")]
    UnnamedGroup(usize),
    /// Two groups share this name.
    #[error("group {0:?} appears twice")]
    DuplicateGroup(String),
    /// A slot range overlaps the previous one, is reversed, or is past the
    /// last slot.
    #[error(
        "slot range {first}-{last} is out of order, reversed or beyond slot {}",
        slot_count - 1
    )]
    RangeOrder {
        /// First slot of the range.
        first: u32,
        /// Last slot of the range.
        last: u32,
        /// The snapshot's slot count.
        slot_count: u32,
    },
    /// A slot range names a group that does not exist.
    #[error("slot range {first}-{last} names group {group} of {groups}")]
    RangeGroup {
        /// First slot of the range.
        first: u32,
        /// Last slot of the range.
        last: u32,
        /// The group index it names.
        group: u16,
        /// How many groups there are.
        groups: usize,
    },
    /// A migration's range is reversed or past the last slot.
    #[error("migration of slots {first}-{last} is reversed or out of range")]
    MigrationRange {
        /// First slot.
        first: u32,
        /// Last slot.
        last: u32,
    },
    /// A migration's groups do not exist or are the same.
    #[error("migration of slots {first}-{last} has invalid groups {from} -> {to}")]
    MigrationGroups {
        /// First slot.
        first: u32,
        /// Last slot.
        last: u32,
        /// Source group index.
        from: u16,
        /// Target group index.
        to: u16,
    },
    /// A migrating slot is not owned by the migration's source.
    #[error("slot {slot} migrates from group {from} but is not owned by it")]
    MigrationNotOwned {
        /// The slot.
        slot: u32,
        /// The source group index.
        from: u16,
    },
    /// A slot is in two migrations.
    #[error("slot {0} is in two migrations")]
    TwoMigrations(u32),
    /// The lease is zero.
    #[error("lease of 0 ms")]
    NoLease,
    /// A group's name is not 1 to [`MAX_NAME`] letters, digits, '-', '_'
    /// and '.'.
    #[error(
        "group {0:?}: names are 1 to {MAX_NAME} characters of letters, digits, '-', '_' and '.'"
    )]
    GroupName(String),
    /// A zone (of a group's master, or of a replica) is not 1 to
    /// [`MAX_NAME`] printable characters without spaces.
    #[error("group {group:?}: {}zone {zone:?}: 1 to {MAX_NAME} printable characters without spaces",
        .replica.as_ref().map(|r| format!("replica {r}: ")).unwrap_or_default())]
    Zone {
        /// The group.
        group: String,
        /// The replica whose zone it is, if not the master's.
        replica: Option<String>,
        /// The zone.
        zone: String,
    },
    /// Two groups have one master.
    #[error("groups {first:?} and {second:?} have the same master {master}")]
    SameMaster {
        /// The group listed first.
        first: String,
        /// The other.
        second: String,
        /// The master's address.
        master: String,
    },
    /// A group's master is another group's replica.
    #[error("group {group:?}: master {master} is a replica of group {other:?}")]
    MasterIsReplica {
        /// The group.
        group: String,
        /// Its master.
        master: String,
        /// The group that has it as a replica.
        other: String,
    },
    /// A replica has no address.
    #[error("group {0:?}: a replica has no address")]
    ReplicaWithoutAddress(String),
    /// A group lists its master as a replica.
    #[error("group {group:?}: replica {replica} is the group's master")]
    ReplicaIsMaster {
        /// The group.
        group: String,
        /// The replica.
        replica: String,
    },
    /// A group lists a replica twice.
    #[error("group {group:?}: replica {replica} is listed twice")]
    ReplicaTwice {
        /// The group.
        group: String,
        /// The replica.
        replica: String,
    },
    /// A replica is also in another group (as master or replica).
    #[error("group {group:?}: replica {replica} is also in group {other:?}")]
    ReplicaElsewhere {
        /// The group.
        group: String,
        /// The replica.
        replica: String,
        /// The other group.
        other: String,
    },
    /// A group's `tls_server_name` is not a usable name, or is set without
    /// `tls`.
    #[error("group {group:?}: TLS server name {name:?}: {}", if *.tls {
        "1 to 253 letters, digits, '-', '.', '_' and ':'"
    } else {
        "needs TLS on"
    })]
    TlsServerName {
        /// The group.
        group: String,
        /// The name.
        name: String,
        /// Whether the group has TLS on.
        tls: bool,
    },
    /// The client users break a rule of [`crate::users::check_users`].
    #[error("{0}")]
    Users(#[from] crate::users::UserError),
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
    /// Client users replacing the data planes' own (passwords as hashes
    /// only); empty: each data plane keeps its config file's users.
    pub users: Vec<User>,
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
    /// Speak TLS to every server of the group (CA and client certificate
    /// from each host's own settings, never from the snapshot).
    pub tls: bool,
    /// The name servers' certificates must carry when `tls` is set; empty:
    /// each server's own host.
    pub tls_server_name: String,
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
    pub fn validate(&self) -> Result<(), SnapshotError> {
        if self.cluster.is_empty() {
            return Err(SnapshotError::NoCluster);
        }
        if !self.slot_count.is_power_of_two() || self.slot_count > MAX_SLOTS {
            return Err(SnapshotError::SlotCount(self.slot_count));
        }
        if self.groups.len() > MAX_GROUPS {
            return Err(SnapshotError::TooManyGroups(self.groups.len()));
        }
        self.check_groups()?;
        let mut next = 0u32;
        for r in &self.slot_ranges {
            if r.first < next || r.last < r.first || r.last >= self.slot_count {
                return Err(SnapshotError::RangeOrder {
                    first: r.first,
                    last: r.last,
                    slot_count: self.slot_count,
                });
            }
            if usize::from(r.group) >= self.groups.len() {
                return Err(SnapshotError::RangeGroup {
                    first: r.first,
                    last: r.last,
                    group: r.group,
                    groups: self.groups.len(),
                });
            }
            next = r.last + 1;
        }
        let owners = self.owners();
        let mut migrating = vec![false; self.slot_count as usize];
        for m in &self.migrations {
            if m.last < m.first || m.last >= self.slot_count {
                return Err(SnapshotError::MigrationRange {
                    first: m.first,
                    last: m.last,
                });
            }
            if usize::from(m.from) >= self.groups.len()
                || usize::from(m.to) >= self.groups.len()
                || m.from == m.to
            {
                return Err(SnapshotError::MigrationGroups {
                    first: m.first,
                    last: m.last,
                    from: m.from,
                    to: m.to,
                });
            }
            for s in m.first..=m.last {
                if owners[s as usize] != Some(m.from) {
                    return Err(SnapshotError::MigrationNotOwned {
                        slot: s,
                        from: m.from,
                    });
                }
                if std::mem::replace(&mut migrating[s as usize], true) {
                    return Err(SnapshotError::TwoMigrations(s));
                }
            }
        }
        if self.lease_millis == 0 {
            return Err(SnapshotError::NoLease);
        }
        crate::users::check_users(&self.users)?;
        Ok(())
    }

    /// The groups' own rules, the same for a control-plane snapshot and a
    /// standalone config file: valid and distinct names, valid zones, and
    /// every server (master or replica) in one place only.
    fn check_groups(&self) -> Result<(), SnapshotError> {
        let mut names = std::collections::HashSet::with_capacity(self.groups.len());
        // Every server address, with the group that has it and whether it is
        // that group's master.
        let mut servers: std::collections::HashMap<&str, (&str, bool)> =
            std::collections::HashMap::with_capacity(self.groups.len());
        let zone = |g: &Group, replica: Option<&Replica>| SnapshotError::Zone {
            group: g.name.clone(),
            replica: replica.map(|r| r.address.clone()),
            zone: replica.map_or(&g.zone, |r| &r.zone).clone(),
        };
        for (i, g) in self.groups.iter().enumerate() {
            if g.name.is_empty() || g.master.is_empty() {
                return Err(SnapshotError::UnnamedGroup(i));
            }
            if !valid_group_name(&g.name) {
                return Err(SnapshotError::GroupName(g.name.clone()));
            }
            if !names.insert(g.name.as_str()) {
                return Err(SnapshotError::DuplicateGroup(g.name.clone()));
            }
            if !g.zone.is_empty() && !valid_zone(&g.zone) {
                return Err(zone(g, None));
            }
            if !g.tls_server_name.is_empty() && (!g.tls || !valid_server_name(&g.tls_server_name)) {
                return Err(SnapshotError::TlsServerName {
                    group: g.name.clone(),
                    name: g.tls_server_name.clone(),
                    tls: g.tls,
                });
            }
            match servers.insert(g.master.as_str(), (g.name.as_str(), true)) {
                None => {}
                Some((other, true)) => {
                    return Err(SnapshotError::SameMaster {
                        first: other.to_string(),
                        second: g.name.clone(),
                        master: g.master.clone(),
                    })
                }
                Some((other, false)) => {
                    return Err(SnapshotError::MasterIsReplica {
                        group: g.name.clone(),
                        master: g.master.clone(),
                        other: other.to_string(),
                    })
                }
            }
            for r in &g.replicas {
                if !r.zone.is_empty() && !valid_zone(&r.zone) {
                    return Err(zone(g, Some(r)));
                }
                if r.address.is_empty() {
                    return Err(SnapshotError::ReplicaWithoutAddress(g.name.clone()));
                }
                let (group, replica) = (g.name.clone(), r.address.clone());
                match servers.insert(r.address.as_str(), (g.name.as_str(), false)) {
                    None => {}
                    Some((other, _)) if other == g.name && r.address == g.master => {
                        return Err(SnapshotError::ReplicaIsMaster { group, replica })
                    }
                    Some((other, _)) if other == g.name => {
                        return Err(SnapshotError::ReplicaTwice { group, replica })
                    }
                    Some((other, _)) => {
                        return Err(SnapshotError::ReplicaElsewhere {
                            group,
                            replica,
                            other: other.to_string(),
                        })
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
            gb.set_tls(g.tls);
            gb.set_tls_server_name(g.tls_server_name.as_str());
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
        let mut users = b.reborrow().init_users(self.users.len() as u32);
        for (i, u) in self.users.iter().enumerate() {
            let mut ub = users.reborrow().get(i as u32);
            ub.set_name(u.name.as_str());
            ub.set_rules(u.rules.as_str());
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
                tls: g.get_tls(),
                tls_server_name: text(g.get_tls_server_name())?,
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
        let mut users = Vec::new();
        for u in r.get_users()? {
            users.push(User {
                name: text(u.get_name())?,
                rules: text(u.get_rules())?,
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
            users,
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
                    tls: true,
                    tls_server_name: "redis.internal".into(),
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
            users: vec![User {
                name: "app".into(),
                rules: "on #2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b ~app:* +@all".into(),
            }],
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
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "slot range 8000-16383 is out of order, reversed or beyond slot 16383"
        );
        let mut s = sample();
        s.slot_ranges[1].group = 9;
        assert!(matches!(
            s.validate(),
            Err(SnapshotError::RangeGroup { group: 9, .. })
        ));
        let mut s = sample();
        s.slot_count = 1000;
        assert_eq!(s.validate(), Err(SnapshotError::SlotCount(1000)));
        let mut s = sample();
        s.groups[1].name = "g1".into();
        assert_eq!(
            s.validate(),
            Err(SnapshotError::DuplicateGroup("g1".into()))
        );
        let mut s = sample();
        s.migrations[0].to = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("invalid groups 0 -> 0"));
    }

    #[test]
    fn every_server_is_in_one_place_and_names_are_valid() {
        type Break = fn(&mut Snapshot);
        let cases: [(Break, &str); 12] = [
            (
                |s| s.groups[1].tls_server_name = "redis.internal".into(),
                "needs TLS on",
            ),
            (
                |s| s.groups[0].tls_server_name = "a b".into(),
                "TLS server name \"a b\"",
            ),
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
            (|s| s.users[0].rules = "on >secret".into(), "clear text"),
            (|s| s.users[0].rules = "+nosuch".into(), "rule '+nosuch'"),
        ];
        for (break_it, want) in cases {
            let mut s = sample();
            break_it(&mut s);
            let err = s.validate().unwrap_err().to_string();
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
