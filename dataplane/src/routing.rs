//! The routing table: which group serves each hash slot, and where each group's
//! master is. A table is immutable; a new one is built off the request path and
//! swapped in whole (see [`crate::config::LiveConfig`] and `ArcSwap` in
//! [`crate::runtime`]), so a request is always routed by one consistent table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keyway_capnp::snapshot::Phase;
pub use keyway_capnp::snapshot::ReadFrom;
use keyway_protocol::slot::key_slot;

use crate::tls::BackendTls;

/// Index of a group in [`RoutingTable::groups`].
pub type GroupIndex = u16;

/// Who serves a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRoute {
    /// No group: keys in this slot get `-CLUSTERDOWN`.
    Unassigned,
    /// This group.
    Stable(GroupIndex),
    /// Commands are held (sent nowhere) until the next table: the slot is
    /// about to move from `from` to `to` (see
    /// [`keyway_capnp::snapshot::Phase::Blocked`]), or its group is on hold
    /// (`from == to`), or it is moving from or to a group on hold (see
    /// [`GroupRoute::hold`]).
    Blocked {
        /// Source group.
        from: GroupIndex,
        /// Target group.
        to: GroupIndex,
    },
    /// Moving key by key: each key a command names is moved from `from` to
    /// `to` (MIGRATE) before the command goes to `to`.
    Moving {
        /// Source group.
        from: GroupIndex,
        /// Target group.
        to: GroupIndex,
    },
}

impl SlotRoute {
    /// The group that owns the slot's data now (the source while moving).
    pub fn owner(self) -> Option<GroupIndex> {
        match self {
            SlotRoute::Unassigned => None,
            SlotRoute::Stable(g)
            | SlotRoute::Blocked { from: g, .. }
            | SlotRoute::Moving { from: g, .. } => Some(g),
        }
    }
}

/// One Redis group as the data plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRoute {
    /// The group's name, as it appears in errors.
    pub name: Arc<str>,
    /// The master's resolved address, or why it could not be resolved: the
    /// group's slots then get `-ERR backend … unavailable: <why>` while the
    /// other groups serve, and the control session resolves it again.
    pub master: Result<SocketAddr, Arc<str>>,
    /// The master as configured (`host:port`).
    pub master_text: String,
    /// The master's replicas, for reads (see `read_from`).
    pub replicas: Box<[ReplicaRoute]>,
    /// Where read-only commands go: the master (default), any up replica,
    /// or an up replica in the data plane's own zone.
    pub read_from: ReadFrom,
    /// Every command for the group is held until a table without the hold
    /// (a failover or switchover is under way): its slots route as
    /// [`SlotRoute::Blocked`], and nothing is written to it.
    pub hold: bool,
    /// TLS to the group's master and replicas (standalone `[[group]] tls`,
    /// or a snapshot group's `tls` with the data plane's `[backend] tls_*`),
    /// or why it could not be set up: the group is then unavailable, never
    /// reached in plain text. `None`: plain TCP.
    pub tls: Option<Result<BackendTls, Arc<str>>>,
}

impl GroupRoute {
    /// A group with a master only: no replicas, reads from the master, not
    /// on hold.
    pub fn master_only(
        name: &str,
        master: Result<SocketAddr, Arc<str>>,
        master_text: String,
    ) -> GroupRoute {
        GroupRoute {
            name: Arc::from(name),
            master,
            master_text,
            replicas: Box::new([]),
            read_from: ReadFrom::Master,
            hold: false,
            tls: None,
        }
    }
}

/// A replica of a group's master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRoute {
    /// Its resolved address, or why it did not resolve (it is then never
    /// read from).
    pub addr: Result<SocketAddr, Arc<str>>,
    /// As configured (`host:port`).
    pub text: String,
    /// Its zone ("" if unset).
    pub zone: Arc<str>,
}

/// Why a snapshot gives no table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The snapshot breaks one of [`keyway_capnp::snapshot::Snapshot::validate`]'s
    /// rules.
    #[error(transparent)]
    Invalid(#[from] keyway_capnp::snapshot::SnapshotError),
    /// Two of the snapshot's servers, named differently, resolve to one
    /// address.
    #[error("{first} and {second} are the same server {addr}")]
    SameServer {
        /// The first name, as `group "g": master host:port`.
        first: String,
        /// The second.
        second: String,
        /// The address both resolve to.
        addr: SocketAddr,
    },
}

/// An immutable slot → group map with a version.
#[derive(Debug)]
pub struct RoutingTable {
    /// Increases with every change; the control plane acks by version.
    pub version: u64,
    slot_count: u32,
    /// Per slot: a group index, [`UNASSIGNED`], or [`MOVE_BASE`]` + i` for
    /// `moves[i]`. Two bytes a slot, so the whole map of 16384 slots stays in
    /// a core's L1 cache, and a stable slot costs one load.
    slots: Box<[u16]>,
    /// Distinct (from, to, phase) of the slots being moved.
    moves: Box<[(GroupIndex, GroupIndex, bool)]>,
    groups: Box<[GroupRoute]>,
}

/// A slot no group owns.
const UNASSIGNED: u16 = u16::MAX;

/// Slot values from here on name an entry of `moves`.
const MOVE_BASE: u16 = 0xF000;

/// How long applying a snapshot waits for its masters' names to resolve; the
/// ones not resolved by then are tried again in the background.
const RESOLVE_WITHIN: Duration = Duration::from_secs(2);

/// Most groups a table can hold: the snapshot's own limit, which the control
/// plane enforces too (so ctld never publishes a table a data plane refuses).
pub const MAX_GROUPS: usize = keyway_capnp::snapshot::MAX_GROUPS;
const _: () = assert!(MAX_GROUPS <= MOVE_BASE as usize);

impl RoutingTable {
    /// A table; `slots.len()` must equal `slot_count`, a power of two, and every
    /// group index must name one of `groups`.
    pub fn new(
        version: u64,
        slot_count: u32,
        slots: &[SlotRoute],
        groups: Box<[GroupRoute]>,
    ) -> RoutingTable {
        assert_eq!(slots.len(), slot_count as usize, "one route per slot");
        assert!(slot_count.is_power_of_two());
        assert!(groups.len() <= MAX_GROUPS);
        let check = |g: GroupIndex| {
            assert!(
                usize::from(g) < groups.len(),
                "slot routed to a group that does not exist"
            );
            g
        };
        let mut moves: Vec<(GroupIndex, GroupIndex, bool)> = Vec::new();
        let mut code = |m: (GroupIndex, GroupIndex, bool)| -> u16 {
            let i = moves.iter().position(|&x| x == m).unwrap_or_else(|| {
                moves.push(m);
                moves.len() - 1
            });
            assert!(
                i < usize::from(UNASSIGNED - MOVE_BASE),
                "too many distinct migrations"
            );
            MOVE_BASE + i as u16
        };
        let held = |g: GroupIndex| groups[usize::from(g)].hold;
        // A group on hold: its slots, and moves from or to it, are blocked.
        let slots = slots
            .iter()
            .map(|r| match *r {
                SlotRoute::Unassigned => UNASSIGNED,
                SlotRoute::Stable(g) if held(check(g)) => code((g, g, true)),
                SlotRoute::Stable(g) => check(g),
                SlotRoute::Blocked { from, to } => code((check(from), check(to), true)),
                SlotRoute::Moving { from, to } => {
                    let (from, to) = (check(from), check(to));
                    code((from, to, held(from) || held(to)))
                }
            })
            .collect();
        RoutingTable {
            version,
            slot_count,
            slots,
            moves: moves.into(),
            groups,
        }
    }

    /// The table a control-plane snapshot describes (group masters and
    /// replicas resolved here, off the request path). A master that does not
    /// resolve leaves its group unavailable, not the whole table; a replica
    /// that does not resolve is not read from.
    pub fn from_snapshot(s: &keyway_capnp::snapshot::Snapshot) -> Result<RoutingTable, TableError> {
        s.validate().map_err(TableError::Invalid)?;
        let names = s.groups.iter().flat_map(|g| {
            std::iter::once(g.master.as_str()).chain(g.replicas.iter().map(|r| r.address.as_str()))
        });
        let resolved = crate::resolve::resolve_all(names, RESOLVE_WITHIN);
        RoutingTable::from_snapshot_with(s, &resolved)
    }

    /// The table a snapshot describes, its masters' addresses taken from
    /// `resolved` (by `host:port` text); no lookup happens here, and a
    /// master missing from it is unresolved.
    pub fn from_snapshot_with(
        s: &keyway_capnp::snapshot::Snapshot,
        resolved: &HashMap<String, Result<SocketAddr, Arc<str>>>,
    ) -> Result<RoutingTable, TableError> {
        s.validate().map_err(TableError::Invalid)?;
        let lookup = |name: &String| {
            resolved
                .get(name)
                .cloned()
                .unwrap_or_else(|| Err(Arc::from(format!("{name:?} is not resolved yet"))))
        };
        let groups: Box<[GroupRoute]> = s
            .groups
            .iter()
            .map(|g| GroupRoute {
                name: Arc::from(g.name.as_str()),
                master: lookup(&g.master),
                master_text: g.master.clone(),
                replicas: g
                    .replicas
                    .iter()
                    .map(|r| ReplicaRoute {
                        addr: lookup(&r.address),
                        text: r.address.clone(),
                        zone: Arc::from(r.zone.as_str()),
                    })
                    .collect(),
                read_from: g.read_from,
                hold: g.hold,
                tls: None,
            })
            .collect();
        let mut slots: Vec<SlotRoute> = s
            .owners()
            .into_iter()
            .map(|o| o.map_or(SlotRoute::Unassigned, SlotRoute::Stable))
            .collect();
        // Validated above: every migrating slot is owned by `from`, and in
        // one migration only.
        for m in &s.migrations {
            let route = match m.phase {
                Phase::Moving => SlotRoute::Moving {
                    from: m.from,
                    to: m.to,
                },
                Phase::Blocked => SlotRoute::Blocked {
                    from: m.from,
                    to: m.to,
                },
            };
            for slot in m.first..=m.last {
                slots[slot as usize] = route;
            }
        }
        Ok(RoutingTable::new(s.version, s.slot_count, &slots, groups))
    }

    /// Whether two of the table's servers, named differently, resolve to one
    /// address (the snapshot's rules compare names). A standalone file with
    /// such servers is refused; a managed data plane serves the snapshot
    /// anyway, as keyway-ctld decided on it, and says so in its log.
    pub fn same_server(&self) -> Result<(), TableError> {
        let mut seen: HashMap<SocketAddr, String> = HashMap::new();
        for g in self.groups.iter() {
            let master = std::iter::once((&g.master, "master", &g.master_text));
            let replicas = g.replicas.iter().map(|r| (&r.addr, "replica", &r.text));
            for (addr, role, text) in master.chain(replicas) {
                let Ok(addr) = addr else { continue };
                let this = format!("group {:?}: {role} {text}", g.name);
                if let Some(first) = seen.insert(*addr, this.clone()) {
                    return Err(TableError::SameServer {
                        first,
                        second: this,
                        addr: *addr,
                    });
                }
            }
        }
        Ok(())
    }

    /// The same routes under another version number.
    pub fn with_version(&self, version: u64) -> RoutingTable {
        RoutingTable {
            version,
            slot_count: self.slot_count,
            slots: self.slots.clone(),
            moves: self.moves.clone(),
            groups: self.groups.clone(),
        }
    }

    /// How many slots keys hash into.
    #[inline]
    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// The slot of `key`.
    #[inline]
    pub fn slot_of(&self, key: &[u8]) -> u32 {
        key_slot(key, self.slot_count)
    }

    /// Who serves `slot`.
    #[inline]
    pub fn route(&self, slot: u32) -> SlotRoute {
        match self.slots[slot as usize] {
            g if g < MOVE_BASE => SlotRoute::Stable(g),
            UNASSIGNED => SlotRoute::Unassigned,
            m => match self.moves[usize::from(m - MOVE_BASE)] {
                (from, to, true) => SlotRoute::Blocked { from, to },
                (from, to, false) => SlotRoute::Moving { from, to },
            },
        }
    }

    /// The groups whose master did not resolve.
    pub fn unresolved(&self) -> impl Iterator<Item = &GroupRoute> {
        self.groups.iter().filter(|g| g.master.is_err())
    }

    /// The `host:port` texts of masters and replicas that did not resolve.
    pub fn unresolved_names(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().flat_map(|g| {
            let master = g.master.is_err().then_some(g.master_text.as_str());
            let replicas = g
                .replicas
                .iter()
                .filter(|r| r.addr.is_err())
                .map(|r| r.text.as_str());
            master.into_iter().chain(replicas)
        })
    }

    /// Every master's and replica's resolution, by `host:port` text.
    pub fn resolutions(&self) -> HashMap<String, Result<SocketAddr, Arc<str>>> {
        let mut out = HashMap::new();
        for g in self.groups.iter() {
            out.insert(g.master_text.clone(), g.master.clone());
            for r in g.replicas.iter() {
                out.insert(r.text.clone(), r.addr.clone());
            }
        }
        out
    }

    /// Whether any group is on hold.
    pub fn has_holds(&self) -> bool {
        self.groups.iter().any(|g| g.hold)
    }

    /// Whether any slot is moving or about to.
    pub fn has_moves(&self) -> bool {
        !self.moves.is_empty()
    }

    /// The `(source, destination)` groups of the slots moving or about to
    /// (each pair once).
    pub fn move_pairs(&self) -> impl Iterator<Item = (GroupIndex, GroupIndex)> + '_ {
        self.moves.iter().map(|&(from, to, _)| (from, to))
    }

    /// The groups, indexed by [`GroupIndex`].
    #[inline]
    pub fn groups(&self) -> &[GroupRoute] {
        &self.groups
    }

    /// Sets the TLS of each group (in table order; `tls` may be shorter).
    pub fn set_backend_tls(&mut self, tls: Vec<Option<Result<BackendTls, Arc<str>>>>) {
        for (g, t) in self.groups.iter_mut().zip(tls) {
            g.tls = t;
        }
    }

    /// One group.
    #[inline]
    pub fn group(&self, g: GroupIndex) -> &GroupRoute {
        &self.groups[usize::from(g)]
    }

    /// Slot ranges owned by each group, for display: `(group, first, last)`.
    pub fn ranges(&self) -> Vec<(Option<GroupIndex>, u32, u32)> {
        let mut out: Vec<(Option<GroupIndex>, u32, u32)> = Vec::new();
        for s in 0..self.slot_count {
            let owner = self.route(s).owner();
            let s = s as usize;
            match out.last_mut() {
                Some((o, _, last)) if *o == owner && *last + 1 == s as u32 => *last = s as u32,
                _ => out.push((owner, s as u32, s as u32)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups `g0`, `g1`, … with masters on 127.0.0.1:7000, 7001, ….
    fn masters(n: u16) -> Box<[GroupRoute]> {
        (0..n)
            .map(|i| {
                let text = format!("127.0.0.1:{}", 7000 + i);
                GroupRoute::master_only(&format!("g{i}"), Ok(text.parse().unwrap()), text)
            })
            .collect()
    }

    /// Cluster "c" of 16 slots, all owned by group 0, with a 1 s lease.
    fn one_range_of_16() -> keyway_capnp::snapshot::Snapshot {
        keyway_capnp::snapshot::Snapshot {
            cluster: "c".into(),
            slot_count: 16,
            slot_ranges: vec![keyway_capnp::snapshot::SlotRange {
                first: 0,
                last: 15,
                group: 0,
            }],
            lease_millis: 1000,
            ..Default::default()
        }
    }

    fn table() -> RoutingTable {
        let groups = masters(2);
        let slots: Vec<SlotRoute> = (0..16)
            .map(|s| {
                if s < 8 {
                    SlotRoute::Stable(0)
                } else if s < 15 {
                    SlotRoute::Stable(1)
                } else {
                    SlotRoute::Unassigned
                }
            })
            .collect();
        RoutingTable::new(3, 16, &slots, groups)
    }

    #[test]
    fn moving_and_blocked_slots() {
        let groups = masters(3);
        let mut slots = vec![SlotRoute::Stable(0); 8];
        slots[2] = SlotRoute::Moving { from: 0, to: 1 };
        slots[3] = SlotRoute::Moving { from: 0, to: 1 };
        slots[5] = SlotRoute::Blocked { from: 0, to: 2 };
        let t = RoutingTable::new(1, 8, &slots, groups);
        assert!(t.has_moves());
        for (s, r) in slots.iter().enumerate() {
            assert_eq!(t.route(s as u32), *r);
        }
        assert_eq!(t.moves.len(), 2, "identical migrations share an entry");
        assert_eq!(
            t.ranges(),
            vec![(Some(0), 0, 7)],
            "moving slots still belong to their source"
        );
        assert_eq!(
            t.with_version(2).route(5),
            SlotRoute::Blocked { from: 0, to: 2 }
        );
    }

    #[test]
    fn snapshots_route_migrating_slots_by_phase() {
        use keyway_capnp::snapshot::{Group, Migration, Snapshot};
        let group = |n: &str, port: u16| Group {
            name: n.into(),
            master: format!("127.0.0.1:{port}"),
            ..Group::default()
        };
        let s = Snapshot {
            version: 4,
            groups: vec![group("a", 7000), group("b", 7001)],
            migrations: vec![
                Migration {
                    first: 2,
                    last: 3,
                    from: 0,
                    to: 1,
                    phase: Phase::Moving,
                },
                Migration {
                    first: 9,
                    last: 9,
                    from: 0,
                    to: 1,
                    phase: Phase::Blocked,
                },
            ],
            ..one_range_of_16()
        };
        let t = RoutingTable::from_snapshot(&s).unwrap();
        assert_eq!(t.route(1), SlotRoute::Stable(0));
        assert_eq!(t.route(2), SlotRoute::Moving { from: 0, to: 1 });
        assert_eq!(t.route(3), SlotRoute::Moving { from: 0, to: 1 });
        assert_eq!(t.route(4), SlotRoute::Stable(0));
        assert_eq!(t.route(9), SlotRoute::Blocked { from: 0, to: 1 });
        let mut bad = s.clone();
        bad.migrations[0].from = 1;
        assert!(RoutingTable::from_snapshot(&bad).is_err());
        // A master that does not resolve leaves its group unavailable, not
        // the table; it is resolved again, the others taken as they were.
        let mut typo = s.clone();
        typo.groups[1].master = "redis-typo.invalid:6379".into();
        let t = RoutingTable::from_snapshot(&typo).unwrap();
        assert_eq!(t.route(2), SlotRoute::Moving { from: 0, to: 1 });
        let names: Vec<&str> = t.unresolved().map(|g| &*g.name).collect();
        assert_eq!(names, ["b"]);
        assert!(t.group(0).master.is_ok());
        let mut known = t.resolutions();
        known.insert(
            "redis-typo.invalid:6379".into(),
            Ok("127.0.0.1:7009".parse().unwrap()),
        );
        let again = RoutingTable::from_snapshot_with(&typo, &known).unwrap();
        assert_eq!(again.unresolved().count(), 0);
        assert_eq!(again.group(1).master, Ok("127.0.0.1:7009".parse().unwrap()));
        // Two names of one server build a table (ctld decided on it) that
        // says so, whichever roles they have.
        let mut alias = s.clone();
        alias.groups[1].master = "localhost:7000".into();
        let err = RoutingTable::from_snapshot(&alias)
            .unwrap()
            .same_server()
            .unwrap_err();
        assert!(
            matches!(&err, TableError::SameServer { addr, .. } if addr.port() == 7000),
            "{err:?}"
        );
        alias.groups[1].master = "127.0.0.1:7001".into();
        alias.groups[1].replicas = vec![keyway_capnp::snapshot::Replica {
            address: "localhost:7000".into(),
            zone: String::new(),
        }];
        let err = RoutingTable::from_snapshot(&alias)
            .unwrap()
            .same_server()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "group \"a\": master 127.0.0.1:7000 and group \"b\": replica localhost:7000 \
             are the same server 127.0.0.1:7000"
        );
    }

    #[test]
    fn a_held_group_blocks_its_slots_and_moves_from_or_to_it() {
        let groups = |held: &[u16]| -> Box<[GroupRoute]> {
            let mut g = masters(3);
            for &i in held {
                g[usize::from(i)].hold = true;
            }
            g
        };
        let mut slots = vec![SlotRoute::Stable(0); 8];
        slots[1] = SlotRoute::Stable(1);
        slots[2] = SlotRoute::Moving { from: 0, to: 2 };
        slots[3] = SlotRoute::Moving { from: 1, to: 2 };
        slots[4] = SlotRoute::Stable(2);
        let t = RoutingTable::new(1, 8, &slots, groups(&[]));
        assert!(!t.has_holds());
        let t = RoutingTable::new(1, 8, &slots, groups(&[2]));
        assert!(t.has_holds());
        assert_eq!(t.route(0), SlotRoute::Stable(0));
        assert_eq!(t.route(1), SlotRoute::Stable(1));
        assert_eq!(
            t.route(2),
            SlotRoute::Blocked { from: 0, to: 2 },
            "to a held group"
        );
        assert_eq!(
            t.route(4),
            SlotRoute::Blocked { from: 2, to: 2 },
            "its own slot"
        );
        let t = RoutingTable::new(1, 8, &slots, groups(&[1]));
        assert_eq!(t.route(1), SlotRoute::Blocked { from: 1, to: 1 });
        assert_eq!(
            t.route(3),
            SlotRoute::Blocked { from: 1, to: 2 },
            "from a held group"
        );
        assert_eq!(t.route(2), SlotRoute::Moving { from: 0, to: 2 });
        assert_eq!(
            t.ranges()[0],
            (Some(0), 0, 0),
            "a held slot keeps its owner"
        );
    }

    #[test]
    fn snapshots_carry_replicas_read_policy_and_hold() {
        use keyway_capnp::snapshot::{Group, Replica, Snapshot};
        let s = Snapshot {
            version: 2,
            groups: vec![Group {
                name: "a".into(),
                master: "127.0.0.1:7000".into(),
                replicas: vec![
                    Replica {
                        address: "127.0.0.1:7100".into(),
                        zone: "z1".into(),
                    },
                    Replica {
                        address: "replica-typo.invalid:6379".into(),
                        zone: String::new(),
                    },
                ],
                read_from: ReadFrom::LocalZone,
                hold: true,
                ..Group::default()
            }],
            ..one_range_of_16()
        };
        let t = RoutingTable::from_snapshot(&s).unwrap();
        let g = t.group(0);
        assert_eq!((g.read_from, g.hold), (ReadFrom::LocalZone, true));
        assert_eq!(g.replicas[0].addr, Ok("127.0.0.1:7100".parse().unwrap()));
        assert_eq!(&*g.replicas[0].zone, "z1");
        assert!(g.replicas[1].addr.is_err(), "not resolved: never read from");
        let names: Vec<&str> = t.unresolved_names().collect();
        assert_eq!(names, ["replica-typo.invalid:6379"], "tried again later");
        assert_eq!(t.route(5), SlotRoute::Blocked { from: 0, to: 0 });
    }

    #[test]
    fn routes_and_ranges() {
        let t = table();
        assert_eq!(t.route(0), SlotRoute::Stable(0));
        assert_eq!(t.route(14), SlotRoute::Stable(1));
        assert_eq!(t.route(15), SlotRoute::Unassigned);
        assert_eq!(
            t.ranges(),
            vec![(Some(0), 0, 7), (Some(1), 8, 14), (None, 15, 15)]
        );
        assert_eq!(t.slot_of(b"foo"), 12182 % 16);
        assert_eq!(t.with_version(9).version, 9);
    }
}
