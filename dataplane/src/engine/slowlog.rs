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
//! Keyway does not time requests one by one (that would take a clock read
//! per request), so the merged log holds the groups' entries only.

use std::sync::Arc;

use keyway_protocol::resp::{array_elements, encode, integer_reply};

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
        let groups = self.names.len() as i64;
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
            let mut name = format!("group={}", self.names[g]).into_bytes();
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
                self.send_parts(st, req, Box::<LenSum>::default(), parts);
            }
            ServerCmd::SlowlogReset => {
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
                let merge = SlowlogMerge {
                    replies: vec![None; parts.len()],
                    names: names.clone(),
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

    fn merged(count: Option<usize>, replies: &[&[u8]]) -> String {
        let mut m: Box<dyn Combine> = Box::new(SlowlogMerge {
            names: (0..replies.len())
                .map(|i| Arc::from(format!("g{i}")))
                .collect(),
            replies: vec![None; replies.len()],
            count,
        });
        for (i, r) in replies.iter().enumerate() {
            m.add(i as u16, r);
        }
        let mut out = Vec::new();
        m.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn entries_of_every_group_merge_newest_first_with_their_group() {
        let a = list(&[entry(1, 300, "a2", ""), entry(0, 100, "a1", "")]);
        let b = list(&[entry(0, 200, "b1", "app")]);
        let out = merged(Some(10), &[&a, &b]);
        let want = String::from_utf8(list(&[
            entry(2, 300, "a2", "group=g0"),
            entry(1, 200, "b1", "group=g1 name=app"),
            entry(0, 100, "a1", "group=g0"),
        ]))
        .unwrap();
        assert_eq!(out, want);
        let two = merged(Some(1), &[&a, &b]);
        assert!(two.starts_with("*1\r\n*6\r\n:2\r\n:300\r\n"), "{two}");
        let failed = merged(None, &[&a, b"-ERR down\r\n"]);
        assert!(
            failed.starts_with("*2\r\n"),
            "a failed group is left out: {failed}"
        );
        assert_eq!(merged(None, &[b"-ERR down\r\n"]), "-ERR down\r\n");
    }
}
