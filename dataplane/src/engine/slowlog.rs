//! `SLOWLOG GET|LEN|RESET|HELP` over the groups.
//!
//! `GET [n]` asks every group for its `n` newest entries and merges them by
//! time, newest first, keeping `n` ([`SlowlogMerge`]). Each entry keeps
//! Redis's format (id, timestamp, duration in µs, arguments, client
//! address, client name) with two changes that say where it comes from:
//! its id becomes `id × groups + group index` (unique over the groups, and
//! stable from one call to the next), and its client-name field reads
//! `group=<name>`, followed by ` name=<client name>` when the client had
//! one. A group that fails is left out. `LEN` adds the groups' lengths
//! up; `RESET` resets every group.
//!
//! Keyway's own entries ([`OwnLog`], process-wide, bounded by
//! `limits.slowlog_max_len`) are requests it kept back (held while their
//! slot was about to migrate, or while their keys were moved) for
//! `limits.slowlog_log_slower_than` µs or more, measured at the core's
//! clock (100 ms ticks) when the request is finally forwarded
//! ([`Ctx::kept_slow`]); they merge as one more source, after the groups,
//! whose client-name field reads `keyway` (then ` name=<client name>`).
//! Keyway does not time other requests one by one (that would take a clock
//! read per request).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use keyway_protocol::resp::{array_elements, encode, integer_reply, Args};

use super::client::ClientState;
use super::config_cmd::{frame_of, help_reply, SameEverywhere};
use super::gather::{Gather, Undo, UndoCmd};
use super::policy::ServerCmd;
use super::replies::Refusal;
use super::route::{answer_in_place, Req};
use super::split::Combine;
use super::Ctx;
use crate::routing::GroupIndex;

const HELP: &[&str] = &[
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Prints this help.",
];

/// Redis's `SLOWLOG_ENTRY_MAX_ARGC` and `SLOWLOG_ENTRY_MAX_STRING`.
const MAX_ARGC: usize = 32;
const MAX_STRING: usize = 128;

/// Keyway's own slow entries, newest first (see the module docs).
#[derive(Debug, Default)]
pub struct OwnLog {
    inner: Mutex<(VecDeque<Vec<u8>>, i64)>,
}

impl OwnLog {
    fn push(&self, entry: impl FnOnce(i64) -> Vec<u8>, max_len: usize) {
        if let Ok(mut g) = self.inner.lock() {
            let (log, next) = &mut *g;
            let id = *next;
            *next += 1;
            log.push_front(entry(id));
            log.truncate(max_len);
        }
    }

    /// The newest `count` entries (all for `None`) as a `SLOWLOG GET` reply.
    fn reply(&self, count: Option<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        let Ok(g) = self.inner.lock() else {
            encode::array_header(&mut out, 0);
            return out;
        };
        let n = count.map_or(g.0.len(), |c| c.min(g.0.len()));
        encode::array_header(&mut out, n);
        for e in g.0.iter().take(n) {
            out.extend_from_slice(e);
        }
        out
    }

    fn len(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.0.len())
    }

    fn reset(&self) {
        if let Ok(mut g) = self.inner.lock() {
            g.0.clear();
        }
    }
}

/// An entry in Redis's format: arguments cut as Redis cuts them.
fn own_entry(id: i64, duration_us: u64, args: &Args<'_>, addr: &str, name: &[u8]) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut o = Vec::new();
    encode::array_header(&mut o, 6);
    encode::integer(&mut o, id);
    encode::integer(&mut o, now);
    encode::integer(&mut o, duration_us.min(i64::MAX as u64) as i64);
    let argc = args.len().min(MAX_ARGC);
    encode::array_header(&mut o, argc);
    for (i, a) in args.iter().take(argc).enumerate() {
        if i == MAX_ARGC - 1 && args.len() > MAX_ARGC {
            let more = args.len() - MAX_ARGC + 1;
            encode::bulk(&mut o, format!("... ({more} more arguments)").as_bytes());
        } else if a.len() > MAX_STRING {
            let mut cut = a[..MAX_STRING].to_vec();
            cut.extend_from_slice(format!("... ({} more bytes)", a.len() - MAX_STRING).as_bytes());
            encode::bulk(&mut o, &cut);
        } else {
            encode::bulk(&mut o, a);
        }
    }
    encode::bulk(&mut o, addr.as_bytes());
    encode::bulk(&mut o, name);
    o
}

/// One entry of a group's `SLOWLOG GET`.
#[derive(Debug)]
struct Entry<'a> {
    id: i64,
    time: i64,
    duration: &'a [u8],
    args: &'a [u8],
    addr: &'a [u8],
    name: &'a [u8],
}

/// A bulk string element's content.
fn bulk(el: &[u8]) -> Option<&[u8]> {
    let rest = el.strip_prefix(b"$")?;
    let nl = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
    rest.get(nl + 2..nl + 2 + len)
}

fn entries(reply: &[u8]) -> Option<Vec<Entry<'_>>> {
    array_elements(reply)?
        .map(|e| {
            let f: Vec<&[u8]> = array_elements(e)?.collect();
            if f.len() < 6 {
                return None;
            }
            Some(Entry {
                id: integer_reply(f[0])?,
                time: integer_reply(f[1])?,
                duration: f[2],
                args: f[3],
                addr: f[4],
                name: bulk(f[5])?,
            })
        })
        .collect()
}

/// `SLOWLOG GET`'s replies, merged by time.
#[derive(Debug)]
struct SlowlogMerge {
    /// The groups' names, then keyway's (the source of keyway's own
    /// entries, whose reply is `replies`' last).
    names: Box<[Arc<str>]>,
    replies: Vec<Option<Vec<u8>>>,
    /// How many entries at most (`None`: all).
    count: Option<usize>,
}

impl Combine for SlowlogMerge {
    fn add(&mut self, part: u16, reply: &[u8]) {
        if let Some(r) = self.replies.get_mut(usize::from(part)) {
            *r = Some(reply.to_vec());
        }
    }

    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Vec<UndoCmd> {
        // The groups, then keyway's own entries (the last source).
        let groups = self.names.len() as i64;
        let keyway = self.names.len() - 1;
        let mut all: Vec<(usize, Entry<'_>)> = Vec::new();
        let mut first_error = None;
        let mut any = false;
        for (g, r) in self.replies.iter().enumerate() {
            let Some(r) = r.as_deref() else { continue };
            match entries(r) {
                Some(es) => {
                    any = true;
                    all.extend(es.into_iter().map(|e| (g, e)));
                }
                None => {
                    first_error.get_or_insert(r);
                }
            }
        }
        if let (false, Some(e)) = (any, first_error) {
            out.extend_from_slice(e);
            return Vec::new();
        }
        // Newest first; among equal times, the higher new id first.
        all.sort_by(|(ga, a), (gb, b)| {
            (b.time, b.id * groups + *gb as i64).cmp(&(a.time, a.id * groups + *ga as i64))
        });
        if let Some(n) = self.count {
            all.truncate(n);
        }
        encode::array_header(out, all.len());
        for (g, e) in all {
            encode::array_header(out, 6);
            encode::integer(out, e.id.saturating_mul(groups).saturating_add(g as i64));
            encode::integer(out, e.time);
            out.extend_from_slice(e.duration);
            out.extend_from_slice(e.args);
            out.extend_from_slice(e.addr);
            let mut name = if g == keyway {
                b"keyway".to_vec()
            } else {
                format!("group={}", self.names[g]).into_bytes()
            };
            if !e.name.is_empty() {
                name.extend_from_slice(b" name=");
                name.extend_from_slice(e.name);
            }
            encode::bulk(out, &name);
        }
        Vec::new()
    }
}

/// `SLOWLOG LEN`'s replies added up (the first error if a group fails).
#[derive(Debug, Default)]
struct LenSum {
    sum: i64,
    error: Option<Vec<u8>>,
}

impl Combine for LenSum {
    fn add(&mut self, _part: u16, reply: &[u8]) {
        match integer_reply(reply) {
            Some(n) => self.sum = self.sum.saturating_add(n),
            None => {
                self.error.get_or_insert_with(|| reply.to_vec());
            }
        }
    }

    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Vec<UndoCmd> {
        match self.error {
            Some(e) => out.extend_from_slice(&e),
            None => encode::integer(out, self.sum),
        }
        Vec::new()
    }
}

impl Ctx {
    /// A kept-back request (first kept at `since_ms`) is forwarded at last:
    /// logged as keyway's own slow entry if it waited long enough.
    #[cold]
    #[inline(never)]
    pub(crate) fn kept_slow(&self, st: &ClientState, args: &Args<'_>, since_ms: u64) {
        let l = &self.cfg.limits;
        let us = self.now_ms.saturating_sub(since_ms).saturating_mul(1000);
        if l.slowlog_log_slower_than < 0
            || l.slowlog_max_len == 0
            || (us as i128) < i128::from(l.slowlog_log_slower_than)
        {
            return;
        }
        let mut name = Vec::new();
        if let Some(n) = st.name.as_deref() {
            name.extend_from_slice(b" name=");
            name.extend_from_slice(n);
        }
        let addr = st.peer.to_string();
        (self.shared.server.slowlog).push(
            |id| own_entry(id, us, args, &addr, &name),
            l.slowlog_max_len,
        );
    }

    pub(crate) fn slowlog_command(&mut self, st: &mut ClientState, cmd: ServerCmd, req: Req<'_>) {
        let (args, place) = (req.args, req.place);
        let names = self.group_names();
        let every = |frame: Vec<u8>| -> Vec<(GroupIndex, Vec<u8>)> {
            (0..names.len())
                .map(|g| (g as GroupIndex, frame.clone()))
                .collect()
        };
        match cmd {
            ServerCmd::SlowlogHelp => answer_in_place(st, &help_reply(HELP), place),
            ServerCmd::SlowlogLen => {
                let parts = every(frame_of(&req));
                let own = self.shared.server.slowlog.len() as i64;
                let sum = LenSum {
                    sum: own,
                    error: None,
                };
                self.send_parts(st, req, Box::new(sum), parts);
            }
            ServerCmd::SlowlogReset => {
                self.shared.server.slowlog.reset();
                let parts = every(frame_of(&req));
                if parts.is_empty() {
                    return answer_in_place(st, b"+OK\r\n", place);
                }
                let gather = Gather::new("SLOWLOG RESET", names.clone(), Undo::Nothing);
                self.send_parts(st, req, Box::new(SameEverywhere(gather)), parts);
            }
            ServerCmd::SlowlogGet => {
                if args.len() > 3 {
                    return self.refuse(st, &Refusal::SlowlogGetArgs { sub: args.get(1) }, place);
                }
                let count = match args.try_get(2) {
                    None => Some(10),
                    Some(a) => match std::str::from_utf8(a)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                    {
                        Some(-1) => None,
                        Some(n) if n >= 0 => Some(n as usize),
                        _ => return self.refuse(st, &Refusal::SlowlogCount, place),
                    },
                };
                let parts = every(frame_of(&req));
                let mut replies = vec![None; parts.len()];
                replies.push(Some(self.shared.server.slowlog.reply(count)));
                let mut sources = names.to_vec();
                sources.push(Arc::from("keyway"));
                let merge = SlowlogMerge {
                    replies,
                    names: sources.into(),
                    count,
                };
                self.send_parts(st, req, Box::new(merge), parts);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, t: i64, cmd: &str, name: &str) -> Vec<u8> {
        let mut o = Vec::new();
        encode::array_header(&mut o, 6);
        encode::integer(&mut o, id);
        encode::integer(&mut o, t);
        encode::integer(&mut o, 15);
        encode::array_header(&mut o, 1);
        encode::bulk(&mut o, cmd.as_bytes());
        encode::bulk(&mut o, b"127.0.0.1:5000");
        encode::bulk(&mut o, name.as_bytes());
        o
    }

    fn list(es: &[Vec<u8>]) -> Vec<u8> {
        let mut o = Vec::new();
        encode::array_header(&mut o, es.len());
        for e in es {
            o.extend_from_slice(e);
        }
        o
    }

    /// The merge of `groups`' replies and keyway's own `own`.
    fn merged(count: Option<usize>, groups: &[&[u8]], own: &[u8]) -> String {
        let mut names: Vec<Arc<str>> = (0..groups.len())
            .map(|i| Arc::from(format!("g{i}")))
            .collect();
        names.push(Arc::from("keyway"));
        let mut replies = vec![None; groups.len()];
        replies.push(Some(own.to_vec()));
        let mut m: Box<dyn Combine> = Box::new(SlowlogMerge {
            names: names.into(),
            replies,
            count,
        });
        for (i, r) in groups.iter().enumerate() {
            m.add(i as u16, r);
        }
        let mut out = Vec::new();
        m.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn entries_of_every_group_and_keyways_merge_newest_first_tagged() {
        let a = list(&[entry(1, 300, "a2", ""), entry(0, 100, "a1", "")]);
        let b = list(&[entry(0, 200, "b1", "app")]);
        let own = list(&[entry(0, 250, "k1", "")]);
        let out = merged(Some(10), &[&a, &b], &own);
        // ids: id × 3 sources + source index (g0, g1, keyway).
        let want = String::from_utf8(list(&[
            entry(3, 300, "a2", "group=g0"),
            entry(2, 250, "k1", "keyway"),
            entry(1, 200, "b1", "group=g1 name=app"),
            entry(0, 100, "a1", "group=g0"),
        ]))
        .unwrap();
        assert_eq!(out, want);
        let one = merged(Some(1), &[&a, &b], &own);
        assert!(one.starts_with("*1\r\n*6\r\n:3\r\n:300\r\n"), "{one}");
        let failed = merged(None, &[&a, b"-ERR down\r\n"], &list(&[]));
        assert!(
            failed.starts_with("*2\r\n"),
            "a failed group is left out: {failed}"
        );
    }

    #[test]
    fn keyways_entries_are_cut_as_redis_cuts_them_and_bounded() {
        let log = OwnLog::default();
        let long = "x".repeat(130);
        let mut words: Vec<&str> = vec!["MSET", &long];
        words.extend(std::iter::repeat_n("y", 40));
        let buf: Vec<u8> = words.concat().into_bytes();
        let mut spans = Vec::new();
        let mut at = 0;
        for w in &words {
            spans.push(keyway_protocol::resp::Span::new(at, w.len()));
            at += w.len();
        }
        let args = Args::new(&buf, &spans);
        for _ in 0..3 {
            log.push(|id| own_entry(id, 5, &args, "1.2.3.4:5", b""), 2);
        }
        assert_eq!(log.len(), 2, "bounded by slowlog_max_len");
        let reply = log.reply(None);
        let es = entries(&reply).unwrap();
        assert_eq!((es[0].id, es[1].id), (2, 1), "newest first");
        let a: Vec<&[u8]> = array_elements(es[0].args).unwrap().collect();
        assert_eq!(a.len(), 32);
        let cut = format!("{}... (2 more bytes)", "x".repeat(128));
        assert_eq!(a[1], format!("${}\r\n{cut}\r\n", cut.len()).as_bytes());
        let more = "... (11 more arguments)";
        assert_eq!(a[31], format!("${}\r\n{more}\r\n", more.len()).as_bytes());
        log.reset();
        assert_eq!(log.len(), 0);
    }
}
