//! Keyspace-wide commands over every group: `SCAN`, `KEYS`, `RANDOMKEY`,
//! `FLUSHALL`/`FLUSHDB`, `LASTSAVE`, `TIME` (`DBSIZE` is a plain fan-out).
//!
//! - `SCAN cursor [MATCH p] [COUNT n] [TYPE t]` visits the groups one after
//!   another. keyway's cursor is a decimal `u64` below 2⁶³ (so that clients
//!   parsing it as a signed or an unsigned 64-bit number both work): bits
//!   0..40 hold the group's own backend cursor, bits 40..55 the group index
//!   plus one, bits 55..63 the scan's epoch ([`encode_cursor`], [`At`]).
//!   Cursor `0` starts at the first group of the scan order with backend
//!   cursor 0; each request is sent, options as given (so `COUNT`, `MATCH`,
//!   `TYPE` and their errors are the group's own, as Redis words them), as
//!   `SCAN <backend cursor> …` to that group's master; the reply's cursor is
//!   rewritten: the same group with the group's new cursor, or, once the
//!   group answers 0, the next group with cursor 0, or `0` after the last
//!   group. A cursor keyway cannot decode (not a number as Redis's
//!   `strtoul` reads one, bit 63 set, a group part of 0, a group the table
//!   does not have) gets Redis's `-ERR invalid cursor`.
//!
//!   The scan plan ([`scan_plan`]) is computed from the current table at
//!   every step (the cursor names a group, not a position). Its order: the
//!   groups in index order, except that the source of every slot migration
//!   comes before its destination (a topological order of the migrations'
//!   edges, lowest index first; a cycle is broken by index). Its epoch: an
//!   8-bit hash of the migrations' (source, destination) pairs and of every
//!   slot's owner. A cursor whose epoch differs from the table's (a
//!   migration started or ended, slots changed owner, since it was given)
//!   starts the scan again from the first group (`INFO keyway`:
//!   `scans_restarted`). So a key that exists throughout a full iteration
//!   is returned at least once: while the migrations and owners stay the
//!   same, a key moved from S to D is either still in S when S is scanned
//!   or in D, scanned after S; when they change, the rest of the scan is a
//!   full scan under the new ones. Keys may come twice (from each side of a
//!   move, or again after a restart). Limits: a change whose epoch happens
//!   to hash the same (1 in 256) is not seen, and may make the scan skip a
//!   group or miss keys moved meanwhile; a scan through many changes
//!   (a long rebalance) restarts at each; group indices are the table's,
//!   so a table that removes groups invalidates the cursors naming them.
//! - `KEYS pattern`: every group, the arrays merged as a set
//!   (`SplitKind::Union`: a key moving between two groups at that moment
//!   comes once), held within `limits.output_hard_limit` like every merge.
//!   Unlike `SCAN`, the groups answer at slightly different moments, so a
//!   key a migration moves just then can be missing from the reply.
//! - `RANDOMKEY`: every group is asked; the reply is one of the keys
//!   answered, chosen at random among the groups that answered one (so a
//!   key of a small group is likelier than one of a large group, unlike
//!   Redis's uniform pick); nil only when every group answered nil.
//! - `FLUSHALL`/`FLUSHDB` (with `ASYNC`/`SYNC` as given): every group's
//!   master, merged by [`super::gather`]: Redis's `+OK` when every group
//!   answered it, else `-ERR keyway: FLUSHALL failed on group(s) …`
//!   naming the groups that failed and those flushed anyway.
//! - `LASTSAVE`: the oldest of the groups' (the moment by which everything
//!   was saved), `SplitKind::Min`.
//! - `TIME`: keyway's own clock (the host's real-time clock), not a
//!   backend's.
//! - A keyed command whose keys come from a key-count argument
//!   (`SINTERCARD`, `ZUNION`, `ZINTER`, `ZDIFF`, `ZINTERCARD`, the `…STORE`
//!   forms, `LMPOP`, `ZMPOP`, `BLMPOP`, `BZMPOP`; not scripts, whose
//!   errors keyway words as Redis does) with a count keyway cannot read
//!   (not an integer, negative, past the arguments) or of 0 keys is one
//!   Redis refuses before touching any key: it is sent as is to the group
//!   owning slot 0, so that the error is Redis's own
//!   ([`redis_refuses_bad_numkeys`]).

use std::hash::{BuildHasher, Hasher};

use keyway_protocol::command::{acl, CommandSpec, Find};
use keyway_protocol::resp::{array_elements, encode};

use super::backend::Purpose;
use super::client::ClientState;
use super::gather::Undo;
use super::policy::KeyspaceCmd;
use super::replies::Refusal;
use super::route::{merge_in_place, Req};
use super::split::{Merge, SplitKind};
use super::Ctx;
use crate::routing::{GroupIndex, RoutingTable};

/// Bits of a keyway cursor that hold the backend's cursor. A Redis cursor
/// is below the size of the key table scanned (a power of two): 2⁴⁰ slots
/// would take far more memory than any server has.
const BACKEND_BITS: u32 = 40;
/// Bits that hold the group index plus one (groups are fewer than 2¹⁵:
/// `routing::MAX_GROUPS`).
const GROUP_BITS: u32 = 15;
const BACKEND_MASK: u64 = (1 << BACKEND_BITS) - 1;
const GROUP_MASK: u64 = (1 << GROUP_BITS) - 1;
/// Bits 55..63: the scan's epoch ([`Plan::epoch`]); bit 63 stays clear.
const EPOCH_SHIFT: u32 = BACKEND_BITS + GROUP_BITS;
const _: () = assert!(crate::routing::MAX_GROUPS < (1 << GROUP_BITS));
const _: () = assert!(EPOCH_SHIFT + 8 == 63);

/// Where a `SCAN` cursor points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct At {
    /// The group to scan.
    pub group: GroupIndex,
    /// Its backend cursor.
    pub backend: u64,
    /// The epoch of the migrations when the cursor was given.
    pub epoch: u8,
}

/// keyway's cursor for `at`; `None` if the backend's cursor does not fit.
pub(crate) fn encode_cursor(at: At) -> Option<u64> {
    (at.backend <= BACKEND_MASK).then(|| {
        (u64::from(at.epoch) << EPOCH_SHIFT)
            | ((u64::from(at.group) + 1) << BACKEND_BITS)
            | at.backend
    })
}

/// A cursor as Redis reads it (`strtoul`, base 10: an optional sign, digits
/// to the end; a leading space, any other byte or an overflow is invalid;
/// the empty string is 0; a `-` negates modulo 2⁶⁴).
fn parse_cursor(arg: &[u8]) -> Option<u64> {
    let (neg, digits) = match arg.first() {
        Some(b'-') => (true, &arg[1..]),
        Some(b'+') => (false, &arg[1..]),
        _ => (false, arg),
    };
    if digits.is_empty() && !arg.is_empty() {
        // strtoul reads no number: eptr stays at the sign.
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(if neg { n.wrapping_neg() } else { n })
}

/// Where a `SCAN` cursor points: `None` for a cursor that starts a scan;
/// `Err` for an invalid cursor.
pub(crate) fn decode_cursor(arg: &[u8], groups: usize) -> Result<Option<At>, ()> {
    let n = parse_cursor(arg).ok_or(())?;
    if n == 0 {
        return Ok(None);
    }
    let g = (n >> BACKEND_BITS) & GROUP_MASK;
    if g == 0 || g > groups as u64 || n >> 63 != 0 {
        return Err(());
    }
    Ok(Some(At {
        group: (g - 1) as GroupIndex,
        backend: n & BACKEND_MASK,
        epoch: (n >> EPOCH_SHIFT) as u8,
    }))
}

/// How a scan goes through the groups under one table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The order it visits the groups in: index order, except that every
    /// migration's source comes before its destination (Kahn's algorithm,
    /// lowest ready index first; groups left in a cycle follow in index
    /// order).
    pub order: Vec<GroupIndex>,
    /// A hash (8 bits) of the migrations' (source, destination) pairs and
    /// of every slot's owner: a cursor given under other migrations or
    /// owners starts the scan again.
    pub epoch: u8,
}

/// The scan plan of `table`.
pub(crate) fn scan_plan(table: &RoutingTable) -> Plan {
    let n = table.groups().len();
    let mut edges: Vec<(GroupIndex, GroupIndex)> = table
        .move_pairs()
        .filter(|&(s, d)| s != d && usize::from(s) < n && usize::from(d) < n)
        .collect();
    edges.sort_unstable();
    edges.dedup();
    // Every slot's owner (about 10 µs for 16384 slots, once per step).
    let owners = (0..table.slot_count()).map(|s| match table.route(s).owner() {
        Some(g) => g,
        None => GroupIndex::MAX,
    });
    Plan {
        order: order_of(n, &edges),
        epoch: epoch_of(&edges, owners),
    }
}

/// FNV-1a of the sorted pairs and of the slots' owners, folded to 8 bits.
fn epoch_of(edges: &[(GroupIndex, GroupIndex)], owners: impl Iterator<Item = GroupIndex>) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    let pairs = edges.iter().flat_map(|&(s, d)| [s, d]);
    // A marker between the two lists.
    for v in pairs.chain([GroupIndex::MAX - 1]).chain(owners) {
        for b in v.to_le_bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    (h ^ (h >> 8) ^ (h >> 16) ^ (h >> 24)) as u8
}

fn order_of(n: usize, edges: &[(GroupIndex, GroupIndex)]) -> Vec<GroupIndex> {
    if edges.is_empty() {
        return (0..n as GroupIndex).collect();
    }
    let mut incoming = vec![0usize; n];
    for &(_, d) in edges {
        incoming[usize::from(d)] += 1;
    }
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n)
            .find(|&g| !done[g] && incoming[g] == 0)
            // A cycle (slots moving both ways): the lowest left.
            .or_else(|| (0..n).find(|&g| !done[g]));
        let Some(g) = next else { break };
        done[g] = true;
        order.push(g as GroupIndex);
        for &(s, d) in edges {
            if usize::from(s) == g && !done[usize::from(d)] {
                incoming[usize::from(d)] = incoming[usize::from(d)].saturating_sub(1);
            }
        }
    }
    order
}

/// Whether Redis refuses a call of `spec` whose key count keyway could not
/// read or that names no key (see the module docs): a command with a
/// key-count key spec that is not a script.
pub(crate) fn redis_refuses_bad_numkeys(spec: &CommandSpec) -> bool {
    !spec.in_category(acl::SCRIPTING)
        && spec
            .key_specs
            .iter()
            .any(|k| matches!(k.find, Find::Keynum { .. }))
}

/// The group after `g` in `order`, if any.
fn after(order: &[GroupIndex], g: GroupIndex) -> Option<GroupIndex> {
    let at = order.iter().position(|&x| x == g)?;
    order.get(at + 1).copied()
}

impl Ctx {
    /// Serves a keyspace-wide command (see the module docs).
    pub(super) fn keyspace(
        &mut self,
        st: &mut ClientState,
        cmd: KeyspaceCmd,
        spec: &CommandSpec,
        read: bool,
        req: Req<'_>,
    ) {
        match cmd {
            KeyspaceCmd::Scan => self.scan(st, req),
            KeyspaceCmd::RandomKey => {
                let pick = std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish() as u32;
                self.fan_out(st, SplitKind::RandomKey { pick }, read, req)
            }
            KeyspaceCmd::Flush => self.every_group(st, spec, SplitKind::Same, Undo::Nothing, req),
        }
    }

    /// One step of a `SCAN`: the cursor's group, on its master.
    fn scan(&mut self, st: &mut ClientState, req: Req<'_>) {
        let Req { args, place, .. } = req;
        if self.cfg.table.has_holds() {
            return self.sched.hold(st, req, self.now_ms, &mut self.stats);
        }
        let table = &self.cfg.table;
        let groups = table.groups().len();
        if groups == 0 {
            return self.refuse(st, &Refusal::ClusterDown { slot: 0 }, place);
        }
        let Plan { order, epoch } = scan_plan(table);
        let (group, cursor) = match decode_cursor(args.get(1), groups) {
            Err(()) => return self.refuse(st, &Refusal::InvalidCursor, place),
            Ok(None) => (order[0], 0),
            // The migrations changed since the cursor was given: the order
            // may have too, so the scan starts again (keys come again,
            // none is missed).
            Ok(Some(at)) if at.epoch != epoch => {
                self.stats.scans_restarted += 1;
                (order[0], 0)
            }
            Ok(Some(at)) => (at.group, at.backend),
        };
        let next = after(&order, group);
        let kind = SplitKind::Scan { group, next, epoch };
        let merge = Merge::new(kind, 1, &[]);
        let seq = merge_in_place(st, place, merge);
        self.stats.requests_split += 1;
        // The master: a replica's lag could hide a key just moved there.
        let b = self.client_conn(st, group, false);
        self.enqueue(st, b, seq, Purpose::Part(0), |out| {
            encode::array_header(out, args.len());
            encode::bulk(out, args.get(0));
            encode::bulk(out, cursor.to_string().as_bytes());
            for i in 2..args.len() {
                encode::bulk(out, args.get(i));
            }
        });
    }
}

fn unexpected(reply: &[u8]) -> Vec<u8> {
    Refusal::UnexpectedPartReply { reply }.to_reply()
}

/// A bulk string's content (`$3\r\nabc\r\n` → `abc`).
fn bulk_content(reply: &[u8]) -> Option<&[u8]> {
    let rest = reply.strip_prefix(b"$")?;
    let nl = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
    rest.get(nl + 2..nl + 2 + len)
}

/// `SCAN`'s reply from group `group`, its cursor rewritten (see the module
/// docs).
pub(crate) fn scan_reply(
    group: GroupIndex,
    next: Option<GroupIndex>,
    epoch: u8,
    replies: &[Option<Vec<u8>>],
    out: &mut Vec<u8>,
) {
    let reply = replies
        .first()
        .and_then(Option::as_deref)
        .unwrap_or_default();
    let parsed = array_elements(reply).and_then(|mut els| {
        if els.remaining() != 2 {
            return None;
        }
        let cursor = bulk_content(els.next()?)?;
        let cursor: u64 = std::str::from_utf8(cursor).ok()?.parse().ok()?;
        Some((cursor, els.next()?))
    });
    let Some((cursor, keys)) = parsed else {
        return out.extend_from_slice(&unexpected(reply));
    };
    let ours = if cursor != 0 {
        let at = At {
            group,
            backend: cursor,
            epoch,
        };
        match encode_cursor(at) {
            Some(c) => c,
            None => return out.extend_from_slice(&unexpected(reply)),
        }
    } else {
        match next {
            Some(group) => encode_cursor(At {
                group,
                backend: 0,
                epoch,
            })
            .unwrap_or_default(),
            None => 0,
        }
    };
    encode::array_header(out, 2);
    encode::bulk(out, ours.to_string().as_bytes());
    out.extend_from_slice(keys);
}

/// Whether a reply is a nil (RESP2 null bulk or array, RESP3 null).
fn is_nil(reply: &[u8]) -> bool {
    reply.starts_with(b"$-1\r\n") || reply.starts_with(b"*-1\r\n") || reply.starts_with(b"_\r\n")
}

/// `RANDOMKEY`: one of the keys the groups answered, the `pick`-th (modulo
/// their number); a nil as the first group sent it when none did.
pub(crate) fn random_key(pick: u32, replies: &[Option<Vec<u8>>], out: &mut Vec<u8>) {
    let keys: Vec<&[u8]> = replies
        .iter()
        .flatten()
        .map(Vec::as_slice)
        .filter(|r| !is_nil(r))
        .collect();
    if let Some(bad) = keys.iter().find(|r| bulk_content(r).is_none()) {
        return out.extend_from_slice(&unexpected(bad));
    }
    match keys.len() {
        0 => match replies.iter().flatten().next() {
            Some(nil) => out.extend_from_slice(nil),
            None => encode::null(out),
        },
        n => out.extend_from_slice(keys[pick as usize % n]),
    }
}

/// `TIME` from keyway's clock: seconds and microseconds, as bulk strings.
pub(crate) fn time(st: &mut ClientState) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs().to_string();
    let micros = now.subsec_micros().to_string();
    st.reply(|o| {
        encode::array_header(o, 2);
        encode::bulk(o, secs.as_bytes());
        encode::bulk(o, micros.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(group: GroupIndex, backend: u64, epoch: u8) -> At {
        At {
            group,
            backend,
            epoch,
        }
    }

    #[test]
    fn cursors_name_a_group_and_its_backend_cursor() {
        assert_eq!(decode_cursor(b"0", 3), Ok(None));
        assert_eq!(decode_cursor(b"", 3), Ok(None), "strtoul reads 0");
        for g in 0..3 {
            for backend in [0, 1, 17, BACKEND_MASK] {
                for epoch in [0, 1, 200, 255] {
                    let c = encode_cursor(at(g, backend, epoch)).unwrap();
                    assert!(c != 0 && c < 1 << 63);
                    let text = c.to_string();
                    assert_eq!(
                        decode_cursor(text.as_bytes(), 3),
                        Ok(Some(at(g, backend, epoch)))
                    );
                }
            }
        }
        assert_eq!(encode_cursor(at(0, BACKEND_MASK + 1, 0)), None);
        let g3 = encode_cursor(at(3, 5, 0)).unwrap().to_string();
        assert_eq!(decode_cursor(g3.as_bytes(), 3), Err(()), "no group 3");
        for bad in [
            &b"abc"[..],
            b" 1",
            b"1 ",
            b"-",
            b"+",
            b"12x",
            b"18446744073709551616",
            b"5",
            b"-1",
            b"9223372036854775808",
        ] {
            assert_eq!(decode_cursor(bad, 3), Err(()), "{bad:?}");
        }
        assert_eq!(decode_cursor(b"-0", 3), Ok(None));
        assert_eq!(decode_cursor(b"+0", 3), Ok(None));
    }

    #[test]
    fn the_epoch_changes_with_the_migrations_and_the_owners() {
        let owners = || [0u16, 0, 1, 1, 2, 2].into_iter();
        let none = epoch_of(&[], owners());
        let one = epoch_of(&[(2, 0)], owners());
        let two = epoch_of(&[(1, 0), (2, 0)], owners());
        assert!(none != one && one != two && none != two);
        assert_eq!(epoch_of(&[(2, 0)], owners()), one, "a function of both");
        let moved = epoch_of(&[], [0u16, 0, 1, 1, 2, 0].into_iter());
        assert_ne!(moved, none, "a slot that changed owner");
    }

    #[test]
    fn bad_key_counts_go_to_redis_only_for_commands_that_refuse_them() {
        let mut with: Vec<&str> = keyway_protocol::command::all()
            .filter(|c| redis_refuses_bad_numkeys(c))
            .map(|c| c.name)
            .collect();
        with.sort_unstable();
        assert_eq!(
            with,
            [
                "blmpop",
                "bzmpop",
                "lmpop",
                "sintercard",
                "zdiff",
                "zdiffstore",
                "zinter",
                "zintercard",
                "zinterstore",
                "zmpop",
                "zunion",
                "zunionstore"
            ]
        );
    }

    #[test]
    fn sources_come_before_destinations() {
        assert_eq!(order_of(3, &[]), vec![0, 1, 2]);
        assert_eq!(order_of(3, &[(2, 0)]), vec![1, 2, 0]);
        assert_eq!(order_of(3, &[(2, 1), (1, 0)]), vec![2, 1, 0]);
        assert_eq!(order_of(4, &[(3, 1)]), vec![0, 2, 3, 1]);
        // Slots moving both ways: every group still once.
        let mut cyc = order_of(3, &[(0, 1), (1, 0)]);
        cyc.sort_unstable();
        assert_eq!(cyc, vec![0, 1, 2]);
        assert_eq!(after(&[1, 2, 0], 1), Some(2));
        assert_eq!(after(&[1, 2, 0], 0), None);
    }

    fn one(r: &[u8]) -> Vec<Option<Vec<u8>>> {
        vec![Some(r.to_vec())]
    }

    #[test]
    fn scan_replies_carry_keyways_cursor() {
        let keys = b"*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        let mut reply = b"*2\r\n$2\r\n12\r\n".to_vec();
        reply.extend_from_slice(keys);
        let mut out = Vec::new();
        scan_reply(1, Some(2), 9, &one(&reply), &mut out);
        let c = encode_cursor(at(1, 12, 9)).unwrap().to_string();
        let mut want = format!("*2\r\n${}\r\n{c}\r\n", c.len()).into_bytes();
        want.extend_from_slice(keys);
        assert_eq!(out, want);
        // Group done: the next group from its start, or the end.
        let mut reply = b"*2\r\n$1\r\n0\r\n".to_vec();
        reply.extend_from_slice(keys);
        let mut out = Vec::new();
        scan_reply(1, Some(2), 9, &one(&reply), &mut out);
        let c = encode_cursor(at(2, 0, 9)).unwrap().to_string();
        assert!(out.starts_with(format!("*2\r\n${}\r\n{c}\r\n", c.len()).as_bytes()));
        let mut out = Vec::new();
        scan_reply(1, None, 9, &one(&reply), &mut out);
        assert!(out.starts_with(b"*2\r\n$1\r\n0\r\n*2\r\n"));
        let mut out = Vec::new();
        scan_reply(1, None, 9, &one(b":1\r\n"), &mut out);
        assert!(out.starts_with(b"-ERR unexpected reply"));
    }

    #[test]
    fn a_random_key_is_one_answered() {
        let parts = vec![
            Some(b"$-1\r\n".to_vec()),
            Some(b"$1\r\nx\r\n".to_vec()),
            Some(b"$-1\r\n".to_vec()),
        ];
        for pick in 0..4 {
            let mut out = Vec::new();
            random_key(pick, &parts, &mut out);
            assert_eq!(out, b"$1\r\nx\r\n");
        }
        let nils = vec![Some(b"$-1\r\n".to_vec()); 3];
        let mut out = Vec::new();
        random_key(7, &nils, &mut out);
        assert_eq!(out, b"$-1\r\n");
    }
}
