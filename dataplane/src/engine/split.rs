//! Splitting a multi-key command across groups and merging the replies.
//!
//! `MGET k1 k2 k3` with k1, k3 on group A and k2 on B becomes `MGET k1 k3` to A
//! and `MGET k2` to B (one *part* per group, keys in request order); the reply is
//! rebuilt in the client's key order. `MSET` sends each group its pairs and
//! answers `+OK` when every part does; `DEL`, `UNLINK`, `EXISTS`, `TOUCH` (and
//! the `DBSIZE` fan-out) add up integer replies. Any error reply from a part
//! becomes the reply, the lowest part's first.

use keyway_protocol::resp::{array_elements, encode, integer_reply, Args};

use super::gather::{Gather, UndoCmd};
use super::replies::Refusal;

/// How the parts of a split request are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// One value per key, in key order (`MGET`).
    Mget,
    /// Key/value pairs; `+OK` when all parts succeed (`MSET`).
    Mset,
    /// Integer replies added up (`DEL`, `UNLINK`, `EXISTS`, `TOUCH`, `DBSIZE`).
    Sum,
    /// Sent to every group; the reply when all agree, else a report
    /// (script and function management; see [`super::gather`]).
    Same,
    /// Sent to every group; arrays of 0/1 combined, 1 where every group
    /// says 1 (`SCRIPT EXISTS`; see [`super::gather`]).
    AllOf,
    /// The least of integer replies (`WAIT` over several groups).
    Min,
    /// Arrays merged as a set, first appearance first (`PUBSUB CHANNELS`,
    /// `PUBSUB SHARDCHANNELS`, `KEYS`: a key moving between groups at that
    /// moment comes once).
    Union,
    /// `[name, count, …]` arrays of the same names, counts added up
    /// (`PUBSUB NUMSUB`, `PUBSUB SHARDNUMSUB`).
    NumSub,
    /// The largest integer reply (`PUBSUB NUMPAT`: every group has the
    /// patterns keyway subscribes).
    Max,
    /// `SCRIPT KILL`, `FUNCTION KILL` on every group: an error other than
    /// `NOTBUSY` (the lowest part's) if any, else `+OK` if a group killed
    /// one, else `NOTBUSY` as the groups say it.
    Kill,
    /// `LATENCY`/`MEMORY` on every group, merged by a
    /// [`DiagMerge`](super::diag::DiagMerge) (see [`super::diag`]).
    Diag,
    /// One part, a `SCAN` on group `group`: its cursor rewritten to name
    /// the group, or `next` once the group is done (see
    /// [`super::keyspace`]).
    Scan {
        /// The group scanned.
        group: crate::routing::GroupIndex,
        /// The group scanned after it (none: the scan ends with it).
        next: Option<crate::routing::GroupIndex>,
        /// The migrations' epoch the cursor carries.
        epoch: u8,
    },
    /// `RANDOMKEY` on every group: one of the keys answered, chosen by
    /// `pick` (see [`super::keyspace`]).
    RandomKey {
        /// A random number.
        pick: u32,
    },
}

impl SplitKind {
    /// Whether each part's reply is kept until all have arrived.
    fn keeps_replies(self) -> bool {
        matches!(
            self,
            SplitKind::Mget
                | SplitKind::Union
                | SplitKind::NumSub
                | SplitKind::Kill
                | SplitKind::Diag
                | SplitKind::Scan { .. }
                | SplitKind::RandomKey { .. }
        )
    }

    /// Arguments each key carries with it (the key included).
    pub fn stride(self) -> usize {
        match self {
            SplitKind::Mset => 2,
            _ => 1,
        }
    }
}

/// Assigns keys to parts: `groups[i]` is the group of key `i`. Fills
/// `part_groups` with each part's group, in first-appearance order, and
/// `key_parts[i]` with key `i`'s part.
pub fn plan<G: Copy + PartialEq>(groups: &[G], part_groups: &mut Vec<G>, key_parts: &mut Vec<u16>) {
    part_groups.clear();
    key_parts.clear();
    for &g in groups {
        let part = match part_groups.iter().position(|&p| p == g) {
            Some(p) => p,
            None => {
                part_groups.push(g);
                part_groups.len() - 1
            }
        };
        key_parts.push(part as u16);
    }
}

/// Writes part `part`'s sub-request: the command name, then for each key of the
/// part (in request order) the key and, for `MSET`, its value. `key_args[i]` is
/// the argument index of key `i`.
pub fn write_part(
    out: &mut Vec<u8>,
    kind: SplitKind,
    args: &Args<'_>,
    key_args: &[u32],
    key_parts: &[u16],
    part: u16,
) {
    let stride = kind.stride();
    let keys = key_parts.iter().filter(|&&p| p == part).count();
    encode::array_header(out, 1 + keys * stride);
    encode::bulk(out, args.get(0));
    for (&arg, _) in key_args.iter().zip(key_parts).filter(|(_, &p)| p == part) {
        for j in 0..stride {
            encode::bulk(out, args.get(arg as usize + j));
        }
    }
}

/// Replies of a command sent to every group merged by that command's own
/// code (`INFO`, `CONFIG`, `SLOWLOG`; see `engine::info`): each part's
/// reply is handed over as it arrives, errors included.
pub(crate) trait Combine: std::fmt::Debug {
    /// Part `part`'s reply.
    fn add(&mut self, part: u16, reply: &[u8]);
    /// The merged reply, and commands to send to groups afterwards (undos).
    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Vec<UndoCmd>;
}

/// The replies of a split request's parts as they arrive, and the merged reply
/// once all have.
#[derive(Debug)]
pub struct Merge {
    kind: SplitKind,
    /// `MGET`: each part's reply, kept until all have arrived.
    replies: Box<[Option<Vec<u8>>]>,
    /// `MGET`: the part of each key, in request order.
    key_parts: Box<[u16]>,
    remaining: usize,
    sum: i64,
    /// The error reply of the lowest part that failed, and that part.
    error: Option<(u16, Vec<u8>)>,
    /// Bytes of part replies kept until the merge completes.
    held: usize,
    /// `Same`/`AllOf`: every group's reply (see [`Gather`]).
    gather: Option<Box<Gather>>,
    /// A command's own merge (see [`Combine`]).
    combine: Option<Box<dyn Combine>>,
    /// `Diag`: how the kept replies merge.
    diag: Option<Box<super::diag::DiagMerge>>,
}

impl Merge {
    /// A merge of `parts` parts; `key_parts` as from [`plan`] (used by `MGET`).
    pub fn new(kind: SplitKind, parts: usize, key_parts: &[u16]) -> Merge {
        let (replies, key_parts) = if kind.keeps_replies() {
            (vec![None; parts].into_boxed_slice(), key_parts.into())
        } else {
            (Box::default(), Box::default())
        };
        Merge {
            kind,
            replies,
            key_parts,
            remaining: parts,
            sum: if kind == SplitKind::Min { i64::MAX } else { 0 },
            error: None,
            held: 0,
            gather: None,
            combine: None,
            diag: None,
        }
    }

    /// A merge of `parts` replies by `c` (see [`Combine`]).
    pub(crate) fn combine(c: Box<dyn Combine>, parts: usize) -> Merge {
        let mut m = Merge::new(SplitKind::Same, parts, &[]);
        m.combine = Some(c);
        m
    }

    /// A merge of a `LATENCY`/`MEMORY` command sent to every group.
    pub(crate) fn diag(d: super::diag::DiagMerge, parts: usize) -> Merge {
        let mut m = Merge::new(SplitKind::Diag, parts, &[]);
        m.diag = Some(Box::new(d));
        m
    }

    /// A merge of a command sent to every group (`Same` or `AllOf`), one
    /// part per group of `g`.
    pub(crate) fn gather(kind: SplitKind, g: Gather, parts: usize) -> Merge {
        let mut m = Merge::new(kind, parts, &[]);
        m.gather = Some(Box::new(g));
        m
    }

    /// Bytes of part replies this merge holds (they count against the
    /// client's output limits).
    #[inline]
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// The merged reply would exceed `limit` bytes: give up on it, free what
    /// is held, and answer `reply` (an error) once every part has replied.
    pub fn too_large(&mut self, reply: Vec<u8>) {
        for r in self.replies.iter_mut() {
            *r = None;
        }
        self.gather = None;
        self.combine = None;
        self.held = reply.len();
        self.error = Some((0, reply));
    }

    /// Records part `part`'s reply; true when every part has replied.
    pub fn add(&mut self, part: u16, reply: &[u8]) -> bool {
        if let Some(c) = self.combine.as_mut() {
            self.held += reply.len();
            c.add(part, reply);
        } else if let Some(g) = self.gather.as_mut() {
            self.held += reply.len();
            g.add(part, reply);
        } else if matches!(self.kind, SplitKind::Kill | SplitKind::Diag) {
            self.held += reply.len();
            self.replies[usize::from(part)] = Some(reply.to_vec());
        } else if reply.first() == Some(&b'-') {
            self.fail(part, reply.to_vec());
        } else {
            match self.kind {
                // Once an error decides the reply, the values are not kept.
                SplitKind::Mget
                | SplitKind::Union
                | SplitKind::NumSub
                | SplitKind::Scan { .. }
                | SplitKind::RandomKey { .. }
                    if self.error.is_some() => {}
                SplitKind::Mget
                | SplitKind::Union
                | SplitKind::NumSub
                | SplitKind::Scan { .. }
                | SplitKind::RandomKey { .. } => {
                    self.held += reply.len();
                    self.replies[usize::from(part)] = Some(reply.to_vec());
                }
                SplitKind::Mset => {
                    if reply != b"+OK\r\n" {
                        self.fail(part, unexpected(reply));
                    }
                }
                SplitKind::Sum => match integer_reply(reply) {
                    Some(n) => self.sum = self.sum.saturating_add(n),
                    None => self.fail(part, unexpected(reply)),
                },
                // Always with a gather, or kept (handled above).
                SplitKind::Same | SplitKind::AllOf | SplitKind::Kill | SplitKind::Diag => {}
                SplitKind::Min => match integer_reply(reply) {
                    Some(n) => self.sum = self.sum.min(n),
                    None => self.fail(part, unexpected(reply)),
                },
                SplitKind::Max => match integer_reply(reply) {
                    Some(n) => self.sum = self.sum.max(n),
                    None => self.fail(part, unexpected(reply)),
                },
            }
        }
        self.remaining -= 1;
        self.remaining == 0
    }

    fn fail(&mut self, part: u16, reply: Vec<u8>) {
        if self.error.as_ref().is_none_or(|(p, _)| part < *p) {
            self.held = reply.len();
            for r in self.replies.iter_mut() {
                *r = None;
            }
            self.error = Some((part, reply));
        }
    }

    /// The merged reply; call once every part has replied. Returns the
    /// commands that undo a partial success (see [`Gather`]).
    pub fn finish(self, out: &mut Vec<u8>) -> Vec<UndoCmd> {
        if let Some((_, e)) = self.error {
            out.extend_from_slice(&e);
            return Vec::new();
        }
        if let Some(g) = self.gather {
            return g.finish(self.kind == SplitKind::AllOf, out);
        }
        if let Some(c) = self.combine {
            return c.finish(out);
        }
        match self.kind {
            SplitKind::Same | SplitKind::AllOf => {
                encode::error(out, "ERR keyway: a fan-out without its replies")
            }
            SplitKind::Mset => out.extend_from_slice(b"+OK\r\n"),
            SplitKind::Sum | SplitKind::Min | SplitKind::Max => encode::integer(out, self.sum),
            SplitKind::Union => union(&self.replies, out),
            SplitKind::Kill => kill(&self.replies, out),
            SplitKind::Diag => match &self.diag {
                Some(d) => d.finish(&self.replies, out),
                None => encode::error(out, "ERR keyway: a fan-out without its merge"),
            },
            SplitKind::NumSub => numsub(&self.replies, out),
            SplitKind::Scan { group, next, epoch } => {
                super::keyspace::scan_reply(group, next, epoch, &self.replies, out)
            }
            SplitKind::RandomKey { pick } => super::keyspace::random_key(pick, &self.replies, out),
            SplitKind::Mget => {
                let mut parts = Vec::with_capacity(self.replies.len());
                for (p, r) in self.replies.iter().enumerate() {
                    let want = self
                        .key_parts
                        .iter()
                        .filter(|&&k| usize::from(k) == p)
                        .count();
                    match r.as_deref().and_then(array_elements) {
                        Some(els) if els.remaining() == want => parts.push(els),
                        _ => {
                            out.extend_from_slice(&unexpected(r.as_deref().unwrap_or_default()));
                            return Vec::new();
                        }
                    }
                }
                encode::array_header(out, self.key_parts.len());
                for &p in self.key_parts.iter() {
                    match parts[usize::from(p)].next() {
                        Some(el) => out.extend_from_slice(el),
                        None => encode::null(out),
                    }
                }
            }
        }
        Vec::new()
    }
}

/// `SCRIPT KILL`/`FUNCTION KILL` over the groups (see [`SplitKind::Kill`]).
fn kill(replies: &[Option<Vec<u8>>], out: &mut Vec<u8>) {
    let all = || replies.iter().flatten();
    let other_error = all().find(|r| r.first() == Some(&b'-') && !r.starts_with(b"-NOTBUSY"));
    let ok = all().find(|r| r.as_slice() == b"+OK\r\n");
    match other_error.or(ok).or_else(|| all().next()) {
        Some(r) => out.extend_from_slice(r),
        None => out.extend_from_slice(b"+OK\r\n"),
    }
}

#[cfg(test)]
mod kill_tests {
    use super::*;

    fn merged(replies: &[&[u8]]) -> Vec<u8> {
        let mut m = Merge::new(SplitKind::Kill, replies.len(), &[]);
        for (i, r) in replies.iter().enumerate() {
            m.add(i as u16, r);
        }
        let mut out = Vec::new();
        m.finish(&mut out);
        out
    }

    const NOTBUSY: &[u8] = b"-NOTBUSY No scripts in execution right now.\r\n";

    #[test]
    fn the_group_that_killed_a_script_answers_unless_another_could_not() {
        assert_eq!(merged(&[NOTBUSY, b"+OK\r\n", NOTBUSY]), b"+OK\r\n");
        assert_eq!(merged(&[NOTBUSY, NOTBUSY]), NOTBUSY);
        let unkillable = b"-UNKILLABLE Sorry the script already executed write commands.\r\n";
        assert_eq!(merged(&[b"+OK\r\n", unkillable, NOTBUSY]), unkillable);
    }
}

fn unexpected(reply: &[u8]) -> Vec<u8> {
    Refusal::UnexpectedPartReply { reply }.to_reply()
}

/// The parts' arrays as one, each element once, first appearance first.
fn union(replies: &[Option<Vec<u8>>], out: &mut Vec<u8>) {
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    for r in replies {
        let Some(els) = r.as_deref().and_then(array_elements) else {
            out.extend_from_slice(&unexpected(r.as_deref().unwrap_or_default()));
            return;
        };
        for el in els {
            if seen.insert(el) {
                all.push(el);
            }
        }
    }
    encode::array_header(out, all.len());
    for el in all {
        out.extend_from_slice(el);
    }
}

/// The parts' `[name, count, …]` arrays (the same names in the same order,
/// as each group answers the same request) as one, counts added up.
fn numsub(replies: &[Option<Vec<u8>>], out: &mut Vec<u8>) {
    let mut names: Vec<&[u8]> = Vec::new();
    let mut counts: Vec<i64> = Vec::new();
    for (p, r) in replies.iter().enumerate() {
        let bad = || unexpected(r.as_deref().unwrap_or_default());
        let Some(els) = r.as_deref().and_then(array_elements) else {
            return out.extend_from_slice(&bad());
        };
        if p > 0 && els.remaining() != names.len() * 2 {
            return out.extend_from_slice(&bad());
        }
        let els: Vec<&[u8]> = els.collect();
        for (i, pair) in els.chunks(2).enumerate() {
            let (Some(&name), Some(n)) = (pair.first(), pair.get(1).and_then(|n| integer_reply(n)))
            else {
                return out.extend_from_slice(&bad());
            };
            if p == 0 {
                names.push(name);
                counts.push(n);
            } else {
                counts[i] = counts[i].saturating_add(n);
            }
        }
    }
    encode::array_header(out, names.len() * 2);
    for (name, n) in names.iter().zip(counts) {
        out.extend_from_slice(name);
        encode::integer(out, n);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use keyway_protocol::resp::{Frame, RequestLimits, RequestParser, Span};
    use proptest::prelude::*;

    use super::*;

    /// A Redis stand-in for one group: enough of MGET/MSET/DEL/EXISTS to check
    /// that split-then-merge equals running the command on one server.
    fn execute(db: &mut HashMap<Vec<u8>, Vec<u8>>, args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        match args[0].as_slice() {
            b"MGET" => {
                encode::array_header(&mut out, args.len() - 1);
                for k in &args[1..] {
                    match db.get(k) {
                        Some(v) => encode::bulk(&mut out, v),
                        None => encode::null(&mut out),
                    }
                }
            }
            b"MSET" => {
                for kv in args[1..].chunks(2) {
                    db.insert(kv[0].clone(), kv[1].clone());
                }
                encode::simple(&mut out, b"OK");
            }
            b"DEL" => encode::integer(
                &mut out,
                args[1..].iter().filter(|k| db.remove(*k).is_some()).count() as i64,
            ),
            b"EXISTS" => encode::integer(
                &mut out,
                args[1..].iter().filter(|k| db.contains_key(*k)).count() as i64,
            ),
            _ => unreachable!(),
        }
        out
    }

    fn parse_one(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut p = RequestParser::new(RequestLimits::default());
        let Ok(Some(Frame::Multibulk { len })) = p.parse(bytes) else {
            panic!("bad sub-request")
        };
        assert_eq!(len, bytes.len());
        p.args(bytes).iter().map(<[u8]>::to_vec).collect()
    }

    /// Runs `args` split across `groups` backends and merges the replies.
    fn split_and_merge(
        kind: SplitKind,
        args: &[Vec<u8>],
        group_of: impl Fn(&[u8]) -> u8,
        dbs: &mut [HashMap<Vec<u8>, Vec<u8>>],
    ) -> Vec<u8> {
        let mut flat = Vec::new();
        let mut spans = Vec::new();
        for a in args {
            spans.push(Span::new(flat.len(), a.len()));
            flat.extend_from_slice(a);
        }
        let args_view = Args::new(&flat, &spans);
        let key_args: Vec<u32> = (1..args.len())
            .step_by(kind.stride())
            .map(|i| i as u32)
            .collect();
        let groups: Vec<u8> = key_args
            .iter()
            .map(|&i| group_of(&args[i as usize]))
            .collect();
        let (mut part_groups, mut key_parts) = (Vec::new(), Vec::new());
        plan(&groups, &mut part_groups, &mut key_parts);
        let mut merge = Merge::new(kind, part_groups.len(), &key_parts);
        // Deliver parts in reverse to show arrival order does not matter.
        for part in (0..part_groups.len()).rev() {
            let mut req = Vec::new();
            write_part(
                &mut req,
                kind,
                &args_view,
                &key_args,
                &key_parts,
                part as u16,
            );
            let reply = execute(&mut dbs[usize::from(part_groups[part])], &parse_one(&req));
            let done = merge.add(part as u16, &reply);
            assert_eq!(done, part == 0);
        }
        let mut out = Vec::new();
        merge.finish(&mut out);
        out
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(b'c'), Just(b'{'), Just(b'}')],
            0..5,
        )
    }

    proptest! {
        #[test]
        fn split_then_merge_equals_one_server(
            preload in proptest::collection::vec((key(), key()), 0..10),
            keys in proptest::collection::vec(key(), 1..12),
            values in proptest::collection::vec(key(), 12),
            groups in 1u8..5,
        ) {
            let group_of = |k: &[u8]| (keyway_protocol::slot::key_slot(k, 16384) % u32::from(groups)) as u8;
            let mut one = HashMap::new();
            let mut many = vec![HashMap::new(); usize::from(groups)];
            for (k, v) in &preload {
                one.insert(k.clone(), v.clone());
                many[usize::from(group_of(k))].insert(k.clone(), v.clone());
            }
            let cmd = |name: &[u8], with_values: bool| {
                let mut a = vec![name.to_vec()];
                for (i, k) in keys.iter().enumerate() {
                    a.push(k.clone());
                    if with_values { a.push(values[i].clone()); }
                }
                a
            };
            for (kind, args) in [
                (SplitKind::Mget, cmd(b"MGET", false)),
                (SplitKind::Sum, cmd(b"EXISTS", false)),
                (SplitKind::Mset, cmd(b"MSET", true)),
                (SplitKind::Mget, cmd(b"MGET", false)),
                (SplitKind::Sum, cmd(b"DEL", false)),
                (SplitKind::Sum, cmd(b"EXISTS", false)),
            ] {
                let want = execute(&mut one, &args);
                let got = split_and_merge(kind, &args, group_of, &mut many);
                prop_assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&args[0]));
            }
        }
    }

    #[test]
    fn errors_win_lowest_part_first() {
        let mut m = Merge::new(SplitKind::Sum, 3, &[0, 1, 2]);
        assert!(!m.add(2, b"-ERR two\r\n"));
        assert!(!m.add(0, b":1\r\n"));
        assert!(m.add(1, b"-ERR one\r\n"));
        let mut out = Vec::new();
        m.finish(&mut out);
        assert_eq!(out, b"-ERR one\r\n");
    }

    #[test]
    fn malformed_part_replies_become_errors() {
        let mut m = Merge::new(SplitKind::Mget, 2, &[0, 1, 0]);
        m.add(0, b"*1\r\n$1\r\na\r\n");
        m.add(1, b"*1\r\n$1\r\nb\r\n");
        let mut out = Vec::new();
        m.finish(&mut out);
        assert!(
            out.starts_with(b"-ERR unexpected reply"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let mut m = Merge::new(SplitKind::Mset, 1, &[0]);
        m.add(0, b":1\r\n");
        let mut out = Vec::new();
        m.finish(&mut out);
        assert!(out.starts_with(b"-ERR unexpected reply"));
    }

    #[test]
    fn pubsub_replies_merge_as_a_set_as_sums_per_channel_and_as_a_maximum() {
        let finish = |m: Merge| {
            let mut out = Vec::new();
            m.finish(&mut out);
            String::from_utf8(out).unwrap()
        };
        let mut m = Merge::new(SplitKind::Union, 3, &[]);
        assert!(!m.add(0, b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"));
        assert!(!m.add(1, b"*0\r\n"));
        assert!(m.add(2, b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n"));
        assert_eq!(
            finish(m),
            "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
            "each once"
        );
        let mut m = Merge::new(SplitKind::NumSub, 2, &[]);
        m.add(0, b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:0\r\n");
        m.add(1, b"*4\r\n$1\r\na\r\n:2\r\n$1\r\nb\r\n:5\r\n");
        assert_eq!(finish(m), "*4\r\n$1\r\na\r\n:3\r\n$1\r\nb\r\n:5\r\n");
        let mut m = Merge::new(SplitKind::NumSub, 2, &[]);
        m.add(0, b"*2\r\n$1\r\na\r\n:1\r\n");
        m.add(1, b"*0\r\n");
        assert!(
            finish(m).starts_with("-ERR unexpected reply"),
            "parts that disagree"
        );
        let mut m = Merge::new(SplitKind::Max, 3, &[]);
        m.add(0, b":2\r\n");
        m.add(1, b":3\r\n");
        m.add(2, b":1\r\n");
        assert_eq!(finish(m), ":3\r\n");
    }
}
