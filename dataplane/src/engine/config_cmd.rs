//! `CONFIG GET|SET|RESETSTAT|REWRITE|HELP` over the groups.
//!
//! - `GET pattern…` asks the documented group (the owner of slot 0, as
//!   `FUNCTION LIST`) and adds keyway's own settings matching a pattern as
//!   `keyway-<section>.<name>` pairs (`keyway-limits.max_clients`), values
//!   as the config file writes them; a map in RESP3, whatever the
//!   protocol of the group's reply ([`ConfigGetMerge`]).
//! - `SET p v …` goes to every group, each preceded on the same connection
//!   by `CONFIG GET p …` of the same names (the values before), so that
//!   where a group refuses, the groups that accepted are set back to what
//!   they had ([`ConfigSetMerge`]) and the error names each group that
//!   refused. The same error from every group reads as Redis's own.
//!   `keyway-*` names are refused: they come from keyway's config.
//! - `RESETSTAT` resets every group's statistics and keyway's counters (a
//!   baseline INFO subtracts, [`super::info::ServerShared`]).
//! - `REWRITE` is refused: the groups' files are theirs.

use std::sync::Arc;

use keyway_protocol::command::{self, Lookup};
use keyway_protocol::pattern::glob_match;
use keyway_protocol::resp::{array_elements, encode, Args};

use super::client::ClientState;
use super::gather::{Gather, Undo, UndoCmd};
use super::info::raw_totals;
use super::policy::ServerCmd;
use super::replies::Refusal;
use super::route::{answer_in_place, Req, Target};
use super::split::Combine;
use super::Ctx;
use crate::config::LiveConfig;
use crate::routing::GroupIndex;

/// A command sent to every group that must get the same reply from each
/// (`CONFIG RESETSTAT`, `SLOWLOG RESET`; see [`Gather`]).
#[derive(Debug)]
pub(crate) struct SameEverywhere(pub Gather);

impl Combine for SameEverywhere {
    fn add(&mut self, part: u16, reply: &[u8]) {
        self.0.add(part, reply)
    }

    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Vec<UndoCmd> {
        self.0.finish(false, out)
    }
}

/// Keyway's settings as `CONFIG GET` shows them.
fn keyway_settings(cfg: &LiveConfig) -> Vec<(String, String)> {
    let l = &cfg.limits;
    let b = &cfg.backend;
    let m = &cfg.migration;
    let mut v: Vec<(&str, String)> = vec![
        ("limits.max_clients", l.max_clients.to_string()),
        ("limits.idle_timeout", l.idle_timeout.to_string()),
        (
            "limits.partial_request_timeout",
            l.partial_request_timeout.to_string(),
        ),
        ("limits.max_request_bytes", l.max_request_bytes.to_string()),
        ("limits.max_arguments", l.max_arguments.to_string()),
        ("limits.max_bulk_bytes", l.max_bulk_bytes.to_string()),
        ("limits.max_pipeline", l.max_pipeline.to_string()),
        ("limits.output_hard_limit", l.output_hard_limit.to_string()),
        ("limits.output_soft_limit", l.output_soft_limit.to_string()),
        (
            "limits.output_soft_timeout",
            l.output_soft_timeout.to_string(),
        ),
        ("limits.tcp_keepalive", l.tcp_keepalive.to_string()),
        ("limits.max_memory", l.max_memory.to_string()),
        ("limits.max_subscriptions", l.max_subscriptions.to_string()),
        (
            "limits.script_registry_bytes",
            l.script_registry_bytes.to_string(),
        ),
        (
            "limits.slowlog_log_slower_than",
            l.slowlog_log_slower_than.to_string(),
        ),
        ("limits.slowlog_max_len", l.slowlog_max_len.to_string()),
        (
            "limits.client_commands_in_flight",
            l.client_commands_in_flight.to_string(),
        ),
        ("limits.client_pause_max", l.client_pause_max.to_string()),
        ("backend.connections", b.connections.to_string()),
        ("backend.connect_timeout", b.connect_timeout.to_string()),
        ("backend.timeout", b.timeout.to_string()),
        ("backend.max_backoff", b.max_backoff.to_string()),
        (
            "backend.write_buffer_limit",
            b.write_buffer_limit.to_string(),
        ),
        ("backend.max_reply_bytes", b.max_reply_bytes.to_string()),
        (
            "backend.dedicated_connections",
            b.dedicated_connections.to_string(),
        ),
        ("migration.move_timeout", m.move_timeout.to_string()),
        ("migration.move_attempts", m.move_attempts.to_string()),
        ("migration.hold_timeout", m.hold_timeout.to_string()),
        // Never the users: their rules hold password hashes.
        ("protected_mode", cfg.protected_mode.to_string()),
        ("auth.max_failures", cfg.auth.max_failures.to_string()),
        ("auth.failure_window", cfg.auth.failure_window.to_string()),
        (
            "auth.tracked_addresses",
            cfg.auth.tracked_addresses.to_string(),
        ),
        ("auth.acllog_max_len", cfg.auth.acllog_max_len.to_string()),
    ];
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.into_iter()
        .map(|(k, val)| (format!("keyway-{k}"), val))
        .collect()
}

/// The elements of an array (`*`) or map (`%`, as its 2n elements) reply.
fn pairs(reply: &[u8]) -> Option<Vec<&[u8]>> {
    if reply.first() == Some(&b'%') {
        // As an array of twice the length: rewrite the header only.
        let nl = reply.iter().position(|&b| b == b'\n')?;
        let n: usize = std::str::from_utf8(&reply[1..nl - 1]).ok()?.parse().ok()?;
        let mut framer = keyway_protocol::resp::ReplyFramer::new();
        let mut at = nl + 1;
        let mut out = Vec::with_capacity(2 * n);
        for _ in 0..2 * n {
            let len = framer.next(&reply[at..]).ok()??;
            framer.reset();
            out.push(&reply[at..at + len]);
            at += len;
        }
        return Some(out);
    }
    Some(array_elements(reply)?.collect())
}

/// A bulk (or simple) string element's content.
fn content(el: &[u8]) -> Option<&[u8]> {
    match el.first()? {
        b'$' => {
            let nl = el.iter().position(|&b| b == b'\n')?;
            let len: usize = std::str::from_utf8(&el[1..nl - 1]).ok()?.parse().ok()?;
            el.get(nl + 1..nl + 1 + len)
        }
        b'+' => el.get(1..el.len().checked_sub(2)?),
        _ => None,
    }
}

/// Redis 7.0's settings that hold a password (the backends' own, or their
/// TLS keys'): `CONFIG GET` through keyway shows them as [`HIDDEN`].
const SECRET_SETTINGS: [&[u8]; 4] = [
    b"requirepass",
    b"masterauth",
    b"tls-key-file-pass",
    b"tls-client-key-file-pass",
];

/// What `CONFIG GET` shows for a set secret setting.
const HIDDEN: &[u8] = b"(hidden by keyway)";

/// `CONFIG GET`'s reply: the group's pairs plus keyway's.
#[derive(Debug)]
struct ConfigGetMerge {
    keyway: Vec<(String, String)>,
    reply: Option<Vec<u8>>,
    resp3: bool,
}

impl Combine for ConfigGetMerge {
    fn add(&mut self, _part: u16, reply: &[u8]) {
        self.reply = Some(reply.to_vec());
    }

    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Vec<UndoCmd> {
        let theirs = match self.reply.as_deref() {
            None => Vec::new(),
            Some(r) if r.first() == Some(&b'-') => {
                out.extend_from_slice(r);
                return Vec::new();
            }
            Some(r) => match pairs(r) {
                Some(p) if p.len() % 2 == 0 => p,
                _ => {
                    out.extend_from_slice(&Refusal::UnexpectedPartReply { reply: r }.to_reply());
                    return Vec::new();
                }
            },
        };
        encode::map_header(out, theirs.len() / 2 + self.keyway.len(), self.resp3);
        for pair in theirs.chunks(2) {
            out.extend_from_slice(pair[0]);
            // A backend password keyway holds is not shown to its clients
            // (see README, "Backend authentication").
            let secret = content(pair[0])
                .is_some_and(|n| SECRET_SETTINGS.iter().any(|s| n.eq_ignore_ascii_case(s)));
            match pair.get(1) {
                Some(v) if secret && content(v).is_some_and(|v| !v.is_empty()) => {
                    encode::bulk(out, HIDDEN)
                }
                Some(v) => out.extend_from_slice(v),
                None => {}
            }
        }
        for (k, v) in &self.keyway {
            encode::bulk(out, k.as_bytes());
            encode::bulk(out, v.as_bytes());
        }
        Vec::new()
    }
}

/// `CONFIG SET`'s replies: part `2g` is group g's `CONFIG GET` of the
/// names (the values before), part `2g + 1` its `CONFIG SET`.
#[derive(Debug)]
struct ConfigSetMerge {
    names: Box<[Arc<str>]>,
    replies: Vec<Option<Vec<u8>>>,
}

fn error_text(reply: &[u8]) -> String {
    let body = reply.strip_prefix(b"-").unwrap_or(reply);
    let body = body.strip_suffix(b"\r\n").unwrap_or(body);
    String::from_utf8_lossy(&body[..body.len().min(200)]).replace(['\r', '\n'], " ")
}

impl Combine for ConfigSetMerge {
    fn add(&mut self, part: u16, reply: &[u8]) {
        if let Some(r) = self.replies.get_mut(usize::from(part)) {
            *r = Some(reply.to_vec());
        }
    }

    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Vec<UndoCmd> {
        let set = |g: usize| {
            self.replies[2 * g + 1]
                .as_deref()
                .unwrap_or(b"-ERR no reply\r\n")
        };
        let groups = self.names.len();
        let failed: Vec<usize> = (0..groups)
            .filter(|&g| set(g).first() != Some(&b'+'))
            .collect();
        if failed.is_empty() {
            out.extend_from_slice(b"+OK\r\n");
            return Vec::new();
        }
        if failed.len() == groups && (0..groups).all(|g| set(g) == set(0)) {
            // Every group refused alike: Redis's own error.
            out.extend_from_slice(set(0));
            return Vec::new();
        }
        let refused: Vec<String> = failed
            .iter()
            .map(|&g| format!("{} ({})", self.names[g], error_text(set(g))))
            .collect();
        let mut report = format!("failed on group(s) {}", refused.join(", "));
        let mut undo = Vec::new();
        let mut restored = Vec::new();
        let mut kept = Vec::new();
        for g in (0..groups).filter(|g| !failed.contains(g)) {
            let before = self.replies[2 * g].as_deref().and_then(pairs);
            match before {
                Some(p) if !p.is_empty() && p.len() % 2 == 0 => {
                    let mut cmd = Vec::new();
                    encode::array_header(&mut cmd, 2 + p.len());
                    encode::bulk(&mut cmd, b"CONFIG");
                    encode::bulk(&mut cmd, b"SET");
                    for el in &p {
                        match content(el) {
                            Some(c) => encode::bulk(&mut cmd, c),
                            None => encode::bulk(&mut cmd, b""),
                        }
                    }
                    undo.push((g as u16, cmd));
                    restored.push(self.names[g].to_string());
                }
                _ => kept.push(self.names[g].to_string()),
            }
        }
        if !restored.is_empty() {
            report.push_str(&format!(
                "; it succeeded on {}, set back to the previous values there",
                restored.join(", ")
            ));
        }
        if !kept.is_empty() {
            report.push_str(&format!(
                "; it succeeded on {}, where the previous values could not be read and the new ones stay",
                kept.join(", ")
            ));
        }
        let why = Refusal::GroupsDisagree {
            command: "CONFIG SET",
            report: &report,
        };
        out.extend_from_slice(&why.to_reply());
        undo
    }
}

const HELP: &[&str] = &[
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "REWRITE",
    "    Rewrite the configuration file.",
    "HELP",
    "    Prints this help.",
];

/// Redis's `addReplyHelp`: one status line each.
pub(crate) fn help_reply(lines: &[&str]) -> Vec<u8> {
    let mut o = Vec::new();
    encode::array_header(&mut o, lines.len());
    for l in lines {
        encode::simple(&mut o, l.as_bytes());
    }
    o
}

/// The whole request as a multibulk frame.
pub(crate) fn frame_of(req: &Req<'_>) -> Vec<u8> {
    match req.raw {
        Some(b) => b.to_vec(),
        None => {
            let mut v = Vec::new();
            encode::request(&mut v, req.args);
            v
        }
    }
}

/// `cmd arg…` as a multibulk frame.
fn request(words: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    encode::array_header(&mut v, words.len());
    for w in words {
        encode::bulk(&mut v, w);
    }
    v
}

impl Ctx {
    pub(crate) fn config_command(&mut self, st: &mut ClientState, cmd: ServerCmd, req: Req<'_>) {
        let args: &Args<'_> = req.args;
        let place = req.place;
        match cmd {
            ServerCmd::ConfigHelp => answer_in_place(st, &help_reply(HELP), place),
            ServerCmd::ConfigGet => {
                let keyway: Vec<(String, String)> = keyway_settings(&self.cfg)
                    .into_iter()
                    .filter(|(k, _)| {
                        args.iter()
                            .skip(2)
                            .any(|p| glob_match(p, k.as_bytes(), true))
                    })
                    .collect();
                let merge = ConfigGetMerge {
                    keyway,
                    reply: None,
                    resp3: st.resp3,
                };
                let groups = self.cfg.table.groups().len();
                let g = match super::scripts::documented_group(&self.cfg.table) {
                    Ok(Target::Group(g) | Target::Master(g)) => Some(g),
                    _ if groups > 0 => Some(0),
                    _ => None,
                };
                let parts = g.map(|g| (g, frame_of(&req))).into_iter().collect();
                self.send_parts(st, req, Box::new(merge), parts);
            }
            ServerCmd::ConfigSet => {
                if args.len() % 2 != 0 {
                    return self.refuse(st, &Refusal::Syntax, place);
                }
                let names: Vec<&[u8]> = args.iter().skip(2).step_by(2).collect();
                if let Some(n) = names
                    .iter()
                    .find(|n| n.len() >= 7 && n[..7].eq_ignore_ascii_case(b"keyway-"))
                {
                    return self.refuse(st, &Refusal::KeywaySetting { name: n }, place);
                }
                if self.cfg.table.has_holds() {
                    // A group is changing masters: set the new one, as
                    // `SCRIPT LOAD` waits (`Ctx::every_group`).
                    return self.sched.hold(st, req, self.now_ms, &mut self.stats);
                }
                let groups = self.group_names();
                let mut get: Vec<&[u8]> = vec![b"CONFIG", b"GET"];
                get.extend(names.iter().copied());
                let get = request(&get);
                let set = frame_of(&req);
                let mut parts = Vec::new();
                for g in 0..groups.len() {
                    parts.push((g as GroupIndex, get.clone()));
                    parts.push((g as GroupIndex, set.clone()));
                }
                let merge = ConfigSetMerge {
                    replies: vec![None; parts.len()],
                    names: groups,
                };
                self.send_parts(st, req, Box::new(merge), parts);
            }
            ServerCmd::ConfigResetStat => {
                let sh = self.shared.clone();
                let (mut stats, mut cmds) = raw_totals(&sh, self.core, &self.stats, &self.cmds);
                // As in Redis, the RESETSTAT itself counts after the reset.
                stats.requests = stats.requests.saturating_sub(1);
                if let Lookup::Found(spec) = command::lookup(b"config", Some(b"resetstat")) {
                    if let Some(n) = cmds.calls.get_mut(usize::from(spec.id)) {
                        *n = n.saturating_sub(1);
                    }
                }
                sh.server.reset_stats(stats, cmds);
                let names = self.group_names();
                let frame = frame_of(&req);
                let parts = (0..names.len())
                    .map(|g| (g as GroupIndex, frame.clone()))
                    .collect();
                let gather = Gather::new("CONFIG RESETSTAT", names, Undo::Nothing);
                if self.cfg.table.groups().is_empty() {
                    return answer_in_place(st, b"+OK\r\n", place);
                }
                self.send_parts(st, req, Box::new(SameEverywhere(gather)), parts);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: impl Combine + 'static, replies: &[&[u8]]) -> (String, Vec<UndoCmd>) {
        let mut c: Box<dyn Combine> = Box::new(c);
        for (i, r) in replies.iter().enumerate() {
            c.add(i as u16, r);
        }
        let mut out = Vec::new();
        let undo = c.finish(&mut out);
        (String::from_utf8(out).unwrap(), undo)
    }

    fn names(n: usize) -> Box<[Arc<str>]> {
        (0..n).map(|i| Arc::from(format!("g{i}"))).collect()
    }

    #[test]
    fn config_get_adds_keyways_pairs_in_either_protocol() {
        let m = |resp3| ConfigGetMerge {
            keyway: vec![("keyway-limits.max_clients".into(), "10".into())],
            reply: None,
            resp3,
        };
        let resp2 = b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n";
        let resp3 = b"%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n";
        let want2 =
            "*4\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$25\r\nkeyway-limits.max_clients\r\n$2\r\n10\r\n";
        assert_eq!(run(m(false), &[resp2]).0, want2);
        assert_eq!(run(m(false), &[resp3]).0, want2, "a RESP3 group reply");
        assert!(run(m(true), &[resp2])
            .0
            .starts_with("%2\r\n$9\r\nmaxmemory"));
        assert_eq!(run(m(false), &[b"-ERR x\r\n"]).0, "-ERR x\r\n");
    }

    #[test]
    fn config_get_hides_backend_passwords() {
        let m = ConfigGetMerge {
            keyway: Vec::new(),
            reply: None,
            resp3: false,
        };
        let reply = b"*8\r\n$11\r\nrequirepass\r\n$6\r\nsecret\r\n$10\r\nmasterauth\r\n$0\r\n\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$17\r\ntls-key-file-pass\r\n$2\r\nkp\r\n";
        assert_eq!(
            run(m, &[reply]).0,
            "*8\r\n$11\r\nrequirepass\r\n$18\r\n(hidden by keyway)\r\n$10\r\nmasterauth\r\n$0\r\n\r\n\
             $9\r\nmaxmemory\r\n$1\r\n0\r\n$17\r\ntls-key-file-pass\r\n$18\r\n(hidden by keyway)\r\n",
            "a set password hidden, an empty one shown as it is"
        );
    }

    #[test]
    fn config_set_is_undone_where_it_succeeded_if_a_group_refused() {
        let before = b"*2\r\n$9\r\nmaxmemory\r\n$3\r\n100\r\n";
        let refused =
            b"-ERR CONFIG SET failed (possibly related to argument 'maxmemory') - nope\r\n";
        let merge = ConfigSetMerge {
            names: names(2),
            replies: vec![None; 4],
        };
        let (out, undo) = run(merge, &[before, b"+OK\r\n", before, refused]);
        assert_eq!(
            out,
            "-ERR keyway: CONFIG SET failed on group(s) g1 (ERR CONFIG SET failed (possibly related to \
             argument 'maxmemory') - nope); it succeeded on g0, set back to the previous values there\r\n"
        );
        assert_eq!(
            undo,
            vec![(
                0,
                b"*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$9\r\nmaxmemory\r\n$3\r\n100\r\n".to_vec()
            )]
        );
        let merge = ConfigSetMerge {
            names: names(2),
            replies: vec![None; 4],
        };
        let (out, undo) = run(merge, &[before, refused, before, refused]);
        assert_eq!(out.as_bytes(), refused, "refused alike: Redis's error");
        assert!(undo.is_empty());
        let merge = ConfigSetMerge {
            names: names(2),
            replies: vec![None; 4],
        };
        assert_eq!(
            run(merge, &[before, b"+OK\r\n", before, b"+OK\r\n"]).0,
            "+OK\r\n"
        );
    }
}
