//! `LATENCY` and `MEMORY` (but `MEMORY USAGE`, routed by its key like any
//! keyed command): sent to every group and merged, or served by the
//! documented group (the owner of slot 0, as for `FUNCTION LIST`).
//!
//! Merges keep Redis's reply shapes, so that clients parse them as they
//! would one server's (RESP3 maps, doubles and verbatim strings when the
//! client chose RESP3):
//! - `LATENCY LATEST`: one entry per event over all groups: the most recent
//!   sample's time and latency, the largest maximum.
//! - `LATENCY HISTORY event`: every group's samples, by time.
//! - `LATENCY RESET [event …]`: every group; the sum of their counts.
//! - `LATENCY DOCTOR`, `LATENCY GRAPH event`, `MEMORY DOCTOR`: each group's
//!   text under a `=== group <name> ===` header (a verbatim string in
//!   RESP3); `GRAPH` answers the first group's error when no group has
//!   samples of the event.
//! - `LATENCY HISTOGRAM [command …]`: per command, calls added up and the
//!   cumulative bucket counts added bucket by bucket (the buckets are the
//!   same powers of two on every server).
//! - `MEMORY STATS`: integer fields added up (bytes, counts; `db.N` per
//!   field), `keys.bytes-per-key` computed again from the sums, ratios and
//!   percentages (doubles) the mean of the groups'.
//! - `MEMORY PURGE`: every group, `+OK` when all say so.
//! - `LATENCY HELP`, `MEMORY HELP`, `MEMORY MALLOC-STATS`: the documented
//!   group's reply.
//!
//! A group's error reply (but for `DOCTOR`/`GRAPH` texts) becomes the reply,
//! the lowest group's first.

use std::collections::BTreeMap;
use std::sync::Arc;

use keyway_protocol::resp::encode;

use super::client::ClientState;
use super::route::Req;
use super::split::{Merge, SplitKind};
use super::Ctx;

/// A `LATENCY` or `MEMORY` subcommand keyway serves (see the module
/// documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagCmd {
    /// `LATENCY LATEST`.
    Latest,
    /// `LATENCY HISTORY event`.
    History,
    /// `LATENCY RESET [event …]`.
    Reset,
    /// `LATENCY DOCTOR`, `MEMORY DOCTOR`.
    Doctor,
    /// `LATENCY GRAPH event`.
    Graph,
    /// `LATENCY HISTOGRAM [command …]`.
    Histogram,
    /// `MEMORY STATS`.
    MemoryStats,
    /// `MEMORY PURGE`.
    Purge,
    /// `LATENCY HELP`, `MEMORY HELP`, `MEMORY MALLOC-STATS`.
    DocumentedGroup,
}

impl DiagCmd {
    /// The subcommand for a command-table name (`latency|latest`).
    pub fn of(name: &str) -> Option<DiagCmd> {
        Some(match name {
            "latency|latest" => DiagCmd::Latest,
            "latency|history" => DiagCmd::History,
            "latency|reset" => DiagCmd::Reset,
            "latency|doctor" | "memory|doctor" => DiagCmd::Doctor,
            "latency|graph" => DiagCmd::Graph,
            "latency|histogram" => DiagCmd::Histogram,
            "memory|stats" => DiagCmd::MemoryStats,
            "memory|purge" => DiagCmd::Purge,
            "latency|help" | "memory|help" | "memory|malloc-stats" => DiagCmd::DocumentedGroup,
            _ => return None,
        })
    }
}

/// How the groups' replies of a [`DiagCmd`] become one.
#[derive(Debug)]
pub(crate) struct DiagMerge {
    cmd: DiagCmd,
    resp3: bool,
    /// Group names, by part.
    groups: Vec<Arc<str>>,
}

impl Ctx {
    /// Serves a `LATENCY`/`MEMORY` subcommand (arity checked).
    pub(super) fn diag(&mut self, st: &mut ClientState, cmd: DiagCmd, req: Req<'_>) {
        let merge = match cmd {
            DiagCmd::DocumentedGroup => {
                let target = super::scripts::documented_group(&self.cfg.table);
                return self.send_to_target(st, target, false, req);
            }
            DiagCmd::Reset => Merge::new(SplitKind::Sum, self.cfg.table.groups().len(), &[]),
            // `+OK` when every part says `+OK`.
            DiagCmd::Purge => Merge::new(SplitKind::Mset, self.cfg.table.groups().len(), &[]),
            _ => {
                let groups = self
                    .cfg
                    .table
                    .groups()
                    .iter()
                    .map(|g| g.name.clone())
                    .collect();
                let d = DiagMerge {
                    cmd,
                    resp3: st.resp3,
                    groups,
                };
                Merge::diag(d, self.cfg.table.groups().len())
            }
        };
        self.fan_out_merged(st, merge, false, req);
    }
}

/// A reply value, RESP2 or RESP3 (maps read as flat arrays).
#[derive(Debug, Clone, PartialEq)]
enum V<'a> {
    Int(i64),
    Str(&'a [u8]),
    Double(f64),
    Arr(Vec<V<'a>>),
    Err(&'a [u8]),
    Nil,
}

impl<'a> V<'a> {
    fn int(&self) -> Option<i64> {
        match self {
            V::Int(n) => Some(*n),
            _ => None,
        }
    }

    fn str(&self) -> Option<&'a [u8]> {
        match self {
            V::Str(s) => Some(s),
            _ => None,
        }
    }

    fn arr(&self) -> Option<&[V<'a>]> {
        match self {
            V::Arr(a) => Some(a),
            _ => None,
        }
    }
}

/// Parses the value at the start of `buf`: it and its length.
fn parse(buf: &[u8], depth: u8) -> Option<(V<'_>, usize)> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    if nl < 2 || buf[nl - 1] != b'\r' || depth > 8 {
        return None;
    }
    let line = &buf[1..nl - 1];
    let head = nl + 1;
    let num = || std::str::from_utf8(line).ok()?.parse::<i64>().ok();
    Some(match buf[0] {
        b'+' => (V::Str(line), head),
        b'-' => (V::Err(&buf[..head]), head),
        b':' => (V::Int(num()?), head),
        b',' => (
            V::Double(std::str::from_utf8(line).ok()?.parse().ok()?),
            head,
        ),
        b'_' => (V::Nil, head),
        b'$' | b'=' => {
            let n = num()?;
            if n < 0 {
                return Some((V::Nil, head));
            }
            let body = buf.get(head..head + n as usize)?;
            if buf.get(head + n as usize..head + n as usize + 2)? != b"\r\n" {
                return None;
            }
            let body = match buf[0] {
                b'=' => body.get(4..)?,
                _ => body,
            };
            (V::Str(body), head + n as usize + 2)
        }
        b'*' | b'%' | b'~' => {
            let n = num()?;
            if n < 0 {
                return Some((V::Nil, head));
            }
            let n = if buf[0] == b'%' { n * 2 } else { n } as usize;
            let mut at = head;
            let mut els = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let (v, len) = parse(&buf[at..], depth + 1)?;
                els.push(v);
                at += len;
            }
            (V::Arr(els), at)
        }
        _ => return None,
    })
}

/// The whole of `reply` as one value.
fn value(reply: &[u8]) -> Option<V<'_>> {
    match parse(reply, 0)? {
        (v, len) if len == reply.len() => Some(v),
        _ => None,
    }
}

fn unexpected(out: &mut Vec<u8>, reply: &[u8]) {
    super::replies::Refusal::UnexpectedPartReply { reply }.encode(out);
}

impl DiagMerge {
    /// Writes the merged reply of every part's `replies` (all present).
    pub(crate) fn finish(&self, replies: &[Option<Vec<u8>>], out: &mut Vec<u8>) {
        let mut values = Vec::with_capacity(replies.len());
        for r in replies {
            let r = r.as_deref().unwrap_or_default();
            match value(r) {
                Some(V::Err(e)) if !matches!(self.cmd, DiagCmd::Doctor | DiagCmd::Graph) => {
                    return out.extend_from_slice(e)
                }
                Some(v) => values.push(v),
                None => return unexpected(out, r),
            }
        }
        let mut merged = Vec::new();
        let o = &mut merged;
        let ok = match self.cmd {
            DiagCmd::Latest => latest(&values, o),
            DiagCmd::History => history(&values, o),
            DiagCmd::Doctor | DiagCmd::Graph => {
                self.texts(&values, o);
                Some(())
            }
            DiagCmd::Histogram => histogram(&values, o, self.resp3),
            DiagCmd::MemoryStats => memory_stats(&values, o, self.resp3),
            DiagCmd::Reset | DiagCmd::Purge | DiagCmd::DocumentedGroup => None,
        };
        match ok {
            Some(()) => out.extend_from_slice(&merged),
            None => {
                let first = replies.iter().flatten().next();
                unexpected(out, first.map_or(&[][..], |r| r.as_slice()));
            }
        }
    }

    /// Each group's text under a header; the first error if no group has
    /// text.
    fn texts(&self, values: &[V<'_>], out: &mut Vec<u8>) {
        if !values.iter().any(|v| matches!(v, V::Str(_))) {
            if let Some(V::Err(e)) = values.first() {
                return out.extend_from_slice(e);
            }
        }
        let mut text = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let name = self.groups.get(i).map_or("?", |n| n);
            text.extend_from_slice(format!("=== group {name} ===\n").as_bytes());
            match v {
                V::Str(s) => text.extend_from_slice(s),
                V::Err(e) => {
                    let e = e.strip_prefix(b"-").unwrap_or(e);
                    text.extend_from_slice(e.strip_suffix(b"\r\n").unwrap_or(e));
                }
                _ => text.extend_from_slice(b"(no text)"),
            }
            if text.last() != Some(&b'\n') {
                text.push(b'\n');
            }
        }
        encode::verbatim(out, &text, self.resp3);
    }
}

/// `LATENCY LATEST`: per event, the most recent sample and the largest
/// maximum, events in first-seen order.
fn latest(values: &[V<'_>], out: &mut Vec<u8>) -> Option<()> {
    let mut events: Vec<(&[u8], i64, i64, i64)> = Vec::new();
    for v in values {
        for e in v.arr()? {
            let e = e.arr()?;
            let [name, ts, last, max] = e else {
                return None;
            };
            let (name, ts, last, max) = (name.str()?, ts.int()?, last.int()?, max.int()?);
            match events.iter_mut().find(|x| x.0 == name) {
                Some(x) => {
                    if ts > x.1 {
                        (x.1, x.2) = (ts, last);
                    }
                    x.3 = x.3.max(max);
                }
                None => events.push((name, ts, last, max)),
            }
        }
    }
    encode::array_header(out, events.len());
    for (name, ts, last, max) in events {
        encode::array_header(out, 4);
        encode::bulk(out, name);
        encode::integer(out, ts);
        encode::integer(out, last);
        encode::integer(out, max);
    }
    Some(())
}

/// `LATENCY HISTORY`: every group's `[time, latency]` samples, by time.
fn history(values: &[V<'_>], out: &mut Vec<u8>) -> Option<()> {
    let mut samples = Vec::new();
    for v in values {
        for s in v.arr()? {
            let [ts, lat] = s.arr()? else {
                return None;
            };
            samples.push((ts.int()?, lat.int()?));
        }
    }
    samples.sort_by_key(|s| s.0);
    encode::array_header(out, samples.len());
    for (ts, lat) in samples {
        encode::array_header(out, 2);
        encode::integer(out, ts);
        encode::integer(out, lat);
    }
    Some(())
}

/// `LATENCY HISTOGRAM`: per command, calls added up and cumulative bucket
/// counts added bucket by bucket.
fn histogram(values: &[V<'_>], out: &mut Vec<u8>, resp3: bool) -> Option<()> {
    let mut cmds: Vec<(&[u8], i64, BTreeMap<i64, i64>)> = Vec::new();
    for v in values {
        for pair in v.arr()?.chunks(2) {
            let [name, h] = pair else {
                return None;
            };
            let name = name.str()?;
            let (mut calls, mut buckets) = (None, None);
            for kv in h.arr()?.chunks(2) {
                match kv {
                    [k, n] if k.str()? == b"calls" => calls = n.int(),
                    [k, b] if k.str()? == b"histogram_usec" => buckets = b.arr(),
                    _ => {}
                }
            }
            let at = match cmds.iter().position(|c| c.0 == name) {
                Some(i) => i,
                None => {
                    cmds.push((name, 0, BTreeMap::new()));
                    cmds.len() - 1
                }
            };
            let c = &mut cmds[at];
            c.1 += calls?;
            // Cumulative counts: each bucket's own count is the rise.
            let mut before = 0;
            for b in buckets?.chunks(2) {
                let [us, cum] = b else {
                    return None;
                };
                let cum = cum.int()?;
                *c.2.entry(us.int()?).or_insert(0) += cum - before;
                before = cum;
            }
        }
    }
    encode::map_header(out, cmds.len(), resp3);
    for (name, calls, buckets) in cmds {
        encode::bulk(out, name);
        encode::map_header(out, 2, resp3);
        encode::bulk(out, b"calls");
        encode::integer(out, calls);
        encode::bulk(out, b"histogram_usec");
        encode::map_header(out, buckets.len(), resp3);
        let mut cum = 0;
        for (us, n) in buckets {
            cum += n;
            encode::integer(out, us);
            encode::integer(out, cum);
        }
    }
    Some(())
}

/// A merged `MEMORY STATS` field.
#[derive(Debug)]
enum Field<'a> {
    Int(i64),
    /// Sum and count, for the mean.
    Double(f64, u32),
    /// `db.N`: `[name, integer, …]` added up field by field.
    Pairs(Vec<(&'a [u8], i64)>),
    /// The first group's, as it is.
    Other(V<'a>),
}

/// `MEMORY STATS`: see the module documentation.
fn memory_stats(values: &[V<'_>], out: &mut Vec<u8>, resp3: bool) -> Option<()> {
    let mut fields: Vec<(&[u8], Field<'_>)> = Vec::new();
    for v in values {
        for kv in v.arr()?.chunks(2) {
            let [k, val] = kv else {
                return None;
            };
            let k = k.str()?;
            let double = |v: &V<'_>| match v {
                V::Double(d) => Some(*d),
                V::Str(s) => std::str::from_utf8(s).ok()?.parse::<f64>().ok(),
                _ => None,
            };
            let at = fields.iter().position(|f| f.0 == k);
            let new = match (at.map(|i| &mut fields[i].1), val) {
                (Some(Field::Int(n)), V::Int(m)) => {
                    *n += m;
                    None
                }
                (Some(Field::Double(s, c)), v) => {
                    *s += double(v)?;
                    *c += 1;
                    None
                }
                (Some(Field::Pairs(pairs)), V::Arr(a)) => {
                    for p in a.chunks(2) {
                        let [name, n] = p else {
                            return None;
                        };
                        let (name, n) = (name.str()?, n.int()?);
                        match pairs.iter_mut().find(|x| x.0 == name) {
                            Some(x) => x.1 += n,
                            None => pairs.push((name, n)),
                        }
                    }
                    None
                }
                (Some(_), _) => None,
                (None, V::Int(n)) => Some(Field::Int(*n)),
                (None, V::Arr(a)) => {
                    let mut pairs = Vec::new();
                    for p in a.chunks(2) {
                        let [name, n] = p else {
                            return None;
                        };
                        pairs.push((name.str()?, n.int()?));
                    }
                    Some(Field::Pairs(pairs))
                }
                (None, v) => match double(v) {
                    Some(d) => Some(Field::Double(d, 1)),
                    None => Some(Field::Other(v.clone())),
                },
            };
            if let Some(f) = new {
                fields.push((k, f));
            }
        }
    }
    let int = |name: &[u8]| {
        fields.iter().find_map(|f| match f {
            (k, Field::Int(n)) if *k == name => Some(*n),
            _ => None,
        })
    };
    let per_key = match (
        int(b"total.allocated"),
        int(b"startup.allocated"),
        int(b"keys.count"),
    ) {
        (Some(total), Some(startup), Some(keys)) if keys > 0 => Some((total - startup) / keys),
        (_, _, Some(_)) => Some(0),
        _ => None,
    };
    encode::map_header(out, fields.len(), resp3);
    for (k, f) in &fields {
        encode::bulk(out, k);
        match f {
            Field::Int(_) if *k == b"keys.bytes-per-key" && per_key.is_some() => {
                encode::integer(out, per_key.unwrap_or_default())
            }
            Field::Int(n) => encode::integer(out, *n),
            Field::Double(s, c) => encode::double(out, *s / f64::from((*c).max(1)), resp3),
            Field::Pairs(pairs) => {
                encode::map_header(out, pairs.len(), resp3);
                for (name, n) in pairs {
                    encode::bulk(out, name);
                    encode::integer(out, *n);
                }
            }
            Field::Other(v) => write_value(out, v, resp3),
        }
    }
    Some(())
}

/// Writes a value read by [`parse`] again (RESP2 shapes; doubles as
/// `encode::double`).
fn write_value(out: &mut Vec<u8>, v: &V<'_>, resp3: bool) {
    match v {
        V::Int(n) => encode::integer(out, *n),
        V::Str(s) => encode::bulk(out, s),
        V::Double(d) => encode::double(out, *d, resp3),
        V::Arr(a) => {
            encode::array_header(out, a.len());
            for x in a {
                write_value(out, x, resp3);
            }
        }
        V::Err(e) => out.extend_from_slice(e),
        V::Nil => encode::null_of(out, resp3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(cmd: DiagCmd, replies: &[&[u8]]) -> Vec<u8> {
        let d = DiagMerge {
            cmd,
            resp3: false,
            groups: (0..replies.len())
                .map(|i| Arc::from(format!("g{i}")))
                .collect(),
        };
        let replies: Vec<Option<Vec<u8>>> = replies.iter().map(|r| Some(r.to_vec())).collect();
        let mut out = Vec::new();
        d.finish(&replies, &mut out);
        out
    }

    #[test]
    fn latest_keeps_the_newest_sample_and_the_largest_maximum() {
        let a = b"*1\r\n*4\r\n$7\r\ncommand\r\n:100\r\n:5\r\n:9\r\n";
        let b = b"*2\r\n*4\r\n$7\r\ncommand\r\n:200\r\n:7\r\n:8\r\n*4\r\n$4\r\nfork\r\n:50\r\n:1\r\n:1\r\n";
        assert_eq!(
            merged(DiagCmd::Latest, &[a, b]),
            b"*2\r\n*4\r\n$7\r\ncommand\r\n:200\r\n:7\r\n:9\r\n*4\r\n$4\r\nfork\r\n:50\r\n:1\r\n:1\r\n"
        );
        assert_eq!(merged(DiagCmd::Latest, &[a]), a, "one group: Redis's reply");
    }

    #[test]
    fn resp3_clients_get_maps_doubles_and_verbatim_text() {
        let d = |cmd| DiagMerge {
            cmd,
            resp3: true,
            groups: vec![Arc::from("a")],
        };
        let run = |cmd, reply: &[u8]| {
            let mut out = Vec::new();
            d(cmd).finish(&[Some(reply.to_vec())], &mut out);
            String::from_utf8(out).expect("utf8")
        };
        let h = "*2\r\n$3\r\nget\r\n*4\r\n$5\r\ncalls\r\n:1\r\n$14\r\nhistogram_usec\r\n*2\r\n:2\r\n:1\r\n";
        assert_eq!(
            run(DiagCmd::Histogram, h.as_bytes()),
            "%1\r\n$3\r\nget\r\n%2\r\n$5\r\ncalls\r\n:1\r\n$14\r\nhistogram_usec\r\n%1\r\n:2\r\n:1\r\n"
        );
        // The same from a RESP3 backend.
        let h3 = "%1\r\n$3\r\nget\r\n%2\r\n$5\r\ncalls\r\n:1\r\n$14\r\nhistogram_usec\r\n%1\r\n:2\r\n:1\r\n";
        assert_eq!(
            run(DiagCmd::Histogram, h3.as_bytes()),
            run(DiagCmd::Histogram, h.as_bytes())
        );
        let stats =
            b"*4\r\n$13\r\nfragmentation\r\n$3\r\n1.5\r\n$4\r\ndb.0\r\n*2\r\n$1\r\nx\r\n:3\r\n";
        assert_eq!(
            run(DiagCmd::MemoryStats, stats),
            "%2\r\n$13\r\nfragmentation\r\n,1.5\r\n$4\r\ndb.0\r\n%1\r\n$1\r\nx\r\n:3\r\n"
        );
        assert_eq!(
            run(DiagCmd::Doctor, b"=7\r\ntxt:abc\r\n"),
            "=24\r\ntxt:=== group a ===\nabc\n\r\n"
        );
    }

    #[test]
    fn history_merges_by_time() {
        let a = b"*2\r\n*2\r\n:1\r\n:10\r\n*2\r\n:5\r\n:50\r\n";
        let b = b"*1\r\n*2\r\n:3\r\n:30\r\n";
        assert_eq!(
            merged(DiagCmd::History, &[a, b]),
            b"*3\r\n*2\r\n:1\r\n:10\r\n*2\r\n:3\r\n:30\r\n*2\r\n:5\r\n:50\r\n"
        );
    }

    #[test]
    fn histograms_add_bucket_counts() {
        let h = |n: &str, calls: i64, b: &[(i64, i64)]| {
            let mut o = format!(
                "${}\r\n{n}\r\n*4\r\n$5\r\ncalls\r\n:{calls}\r\n$14\r\nhistogram_usec\r\n*{}\r\n",
                n.len(),
                b.len() * 2
            );
            for (us, c) in b {
                o += &format!(":{us}\r\n:{c}\r\n");
            }
            o
        };
        let a = format!("*2\r\n{}", h("set", 3, &[(1, 2), (4, 3)]));
        let b = format!("*2\r\n{}", h("set", 2, &[(2, 1), (4, 2)]));
        let want = format!("*2\r\n{}", h("set", 5, &[(1, 2), (2, 3), (4, 5)]));
        assert_eq!(
            merged(DiagCmd::Histogram, &[a.as_bytes(), b.as_bytes()]),
            want.as_bytes()
        );
    }

    #[test]
    fn memory_stats_add_up_bytes_and_average_ratios() {
        let a = b"*8\r\n$15\r\ntotal.allocated\r\n:1000\r\n$17\r\nstartup.allocated\r\n:100\r\n$10\r\nkeys.count\r\n:3\r\n$18\r\nkeys.bytes-per-key\r\n:300\r\n";
        let b = b"*10\r\n$15\r\ntotal.allocated\r\n:2000\r\n$17\r\nstartup.allocated\r\n:100\r\n$10\r\nkeys.count\r\n:6\r\n$18\r\nkeys.bytes-per-key\r\n:300\r\n$13\r\nfragmentation\r\n$3\r\n1.5\r\n";
        let out = merged(DiagCmd::MemoryStats, &[a, b]);
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with("*10\r\n"), "{text}");
        assert!(text.contains("total.allocated\r\n:3000\r\n"), "{text}");
        assert!(
            text.contains("keys.bytes-per-key\r\n:311\r\n"),
            "(3000-200)/9: {text}"
        );
        assert!(text.contains("fragmentation\r\n$3\r\n1.5\r\n"), "{text}");
        assert_eq!(
            merged(DiagCmd::MemoryStats, &[a]),
            a,
            "one group: Redis's reply"
        );
    }

    #[test]
    fn doctor_texts_carry_every_group_and_errors_win_elsewhere() {
        let out = merged(DiagCmd::Doctor, &[b"$2\r\nhi\r\n", b"$3\r\nyo\n\r\n"]);
        assert_eq!(
            out,
            b"$40\r\n=== group g0 ===\nhi\n=== group g1 ===\nyo\n\r\n"
        );
        let none = b"-ERR No samples available for event 'x'\r\n";
        assert_eq!(merged(DiagCmd::Graph, &[none, none]), none);
        assert_eq!(
            merged(DiagCmd::Latest, &[b"*0\r\n", b"-ERR x\r\n"]),
            b"-ERR x\r\n"
        );
        assert!(merged(DiagCmd::Latest, &[b"+what\r\n"]).starts_with(b"-"));
    }
}
