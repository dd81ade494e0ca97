//! What `COMMAND` tells clients: the commands keyway serves, so that a client
//! that probes `COMMAND` (redis-cli's hints, client libraries that check
//! which commands exist) learns the truth. A command whose policy is
//! [`Policy::Unsupported`] is left out of `COMMAND`, `COMMAND COUNT`,
//! `COMMAND LIST`, `COMMAND INFO` (nil, as for an unknown command) and
//! `COMMAND DOCS`; a container (`CLIENT`, `CONFIG`, …) stays when any of its
//! subcommands is served, and lists only those. Built once from Redis's own
//! reply bytes (`keyway_protocol::command::COMMANDS_RESP`/`DOCS_RESP`), so
//! every entry kept is byte for byte Redis's.

use std::sync::OnceLock;

use keyway_protocol::command::{self, resp3, CommandSpec, COMMANDS};
use keyway_protocol::resp::{encode, ReplyFramer};

use super::policy::{policy, Policy, RouteCheck};

/// Whether keyway serves `c` (in some form; see the README's command table).
pub fn served(c: &CommandSpec) -> bool {
    !matches!(policy(c), Policy::Unsupported(_))
}

/// Whether `COMMAND` lists `c`: it is served, or it is a container with a
/// served subcommand.
pub fn listed(c: &CommandSpec) -> bool {
    served(c) || c.subcommands.iter().any(served)
}

/// What `COMMAND` lists, built once.
struct Listing {
    /// The `COMMAND` reply.
    all: Vec<u8>,
    /// Each listed command's `COMMAND INFO` entry, by command id (empty when
    /// not listed).
    info: Vec<Vec<u8>>,
    /// Each listed command's `COMMAND DOCS` name and doc map, by command id.
    docs: Vec<Vec<u8>>,
    /// `COMMAND DOCS` without names.
    docs_all: Vec<u8>,
    /// The same four in RESP3 (`keyway_protocol::command::resp3`).
    all3: Vec<u8>,
    info3: Vec<Vec<u8>>,
    docs3: Vec<Vec<u8>>,
    docs_all3: Vec<u8>,
    /// The number of top-level commands listed (`COMMAND COUNT`).
    count: usize,
}

fn listing() -> &'static Listing {
    static LISTING: OnceLock<Listing> = OnceLock::new();
    LISTING.get_or_init(|| {
        let mut info = vec![Vec::new(); command::COMMAND_IDS];
        let mut docs = vec![Vec::new(); command::COMMAND_IDS];
        let mut entries = Vec::new();
        for c in COMMANDS.iter().filter(|c| listed(c)) {
            let entry = info_entry(c.info_bytes(), &|name| sub_served(c, name));
            for s in c.subcommands.iter().filter(|s| served(s)) {
                info[usize::from(s.id)] = s.info_bytes().to_vec();
                docs[usize::from(s.id)] = s.docs_bytes().to_vec();
            }
            docs[usize::from(c.id)] = docs_entry(c.docs_bytes(), &|name| sub_served(c, name));
            info[usize::from(c.id)] = entry.clone();
            entries.push(entry);
        }
        let mut all = Vec::new();
        encode::array_header(&mut all, entries.len());
        for e in &entries {
            all.extend_from_slice(e);
        }
        let mut docs_all = Vec::new();
        encode::array_header(&mut docs_all, entries.len() * 2);
        for c in COMMANDS.iter().filter(|c| listed(c)) {
            docs_all.extend_from_slice(&docs[usize::from(c.id)]);
        }
        let three = |e: &Vec<u8>, f: fn(&[u8], &mut Vec<u8>)| {
            let mut out = Vec::new();
            if !e.is_empty() {
                f(e, &mut out);
            }
            out
        };
        let info3: Vec<Vec<u8>> = info.iter().map(|e| three(e, resp3::info)).collect();
        let docs3: Vec<Vec<u8>> = docs.iter().map(|e| three(e, resp3::docs_entry)).collect();
        let mut all3 = Vec::new();
        encode::array_header(&mut all3, entries.len());
        let mut docs_all3 = Vec::new();
        encode::map_header(&mut docs_all3, entries.len(), true);
        for c in COMMANDS.iter().filter(|c| listed(c)) {
            all3.extend_from_slice(&info3[usize::from(c.id)]);
            docs_all3.extend_from_slice(&docs3[usize::from(c.id)]);
        }
        Listing {
            all,
            info,
            docs,
            docs_all,
            all3,
            info3,
            docs3,
            docs_all3,
            count: entries.len(),
        }
    })
}

fn sub_served(c: &CommandSpec, name: &[u8]) -> bool {
    c.subcommands
        .iter()
        .any(|s| s.name.as_bytes().eq_ignore_ascii_case(name) && served(s))
}

/// `COMMAND` (and `COMMAND INFO` without names), in RESP3 if `r3`.
pub fn all_reply(r3: bool) -> &'static [u8] {
    let l = listing();
    if r3 {
        &l.all3
    } else {
        &l.all
    }
}

/// `COMMAND DOCS` without names, in RESP3 if `r3`.
pub fn docs_all_reply(r3: bool) -> &'static [u8] {
    let l = listing();
    if r3 {
        &l.docs_all3
    } else {
        &l.docs_all
    }
}

/// `COMMAND COUNT`.
pub fn count() -> usize {
    listing().count
}

/// `c`'s `COMMAND INFO` entry, if `COMMAND` lists it (RESP3 if `r3`).
pub fn info(c: &CommandSpec, r3: bool) -> Option<&'static [u8]> {
    let l = listing();
    let e = &if r3 { &l.info3 } else { &l.info }[usize::from(c.id)];
    (!e.is_empty()).then_some(e.as_slice())
}

/// `c`'s `COMMAND DOCS` name and doc map, if `COMMAND` lists it (RESP3 if
/// `r3`).
pub fn docs(c: &CommandSpec, r3: bool) -> Option<&'static [u8]> {
    let l = listing();
    let e = &if r3 { &l.docs3 } else { &l.docs }[usize::from(c.id)];
    (!e.is_empty()).then_some(e.as_slice())
}

/// The elements of an aggregate (`*n`, `%n` counted as `2n`, `~n`), with
/// its type byte; `None` for anything else.
fn elements(reply: &[u8]) -> Option<(u8, Vec<&[u8]>)> {
    let kind = *reply.first()?;
    if !matches!(kind, b'*' | b'%' | b'~') {
        return None;
    }
    let line_end = reply.iter().position(|&b| b == b'\n')?;
    let n: usize = std::str::from_utf8(&reply[1..line_end.checked_sub(1)?])
        .ok()?
        .parse()
        .ok()?;
    let n = if kind == b'%' { n * 2 } else { n };
    let mut at = line_end + 1;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = ReplyFramer::new().next(&reply[at..]).ok()??;
        out.push(&reply[at..at + len]);
        at += len;
    }
    Some((kind, out))
}

/// The payload of a bulk or simple string element.
fn text(el: &[u8]) -> &[u8] {
    match el.first() {
        Some(b'+') => el.get(1..el.len().saturating_sub(2)).unwrap_or_default(),
        Some(b'$') => match el.iter().position(|&b| b == b'\n') {
            Some(p) => el
                .get(p + 1..el.len().saturating_sub(2))
                .unwrap_or_default(),
            None => &[],
        },
        _ => &[],
    }
}

fn header(out: &mut Vec<u8>, kind: u8, elements: usize) {
    let n = if kind == b'%' { elements / 2 } else { elements };
    out.push(kind);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A container's `COMMAND` entry with only the subcommands `keep` accepts
/// (the tenth element of a Redis 7 entry lists them); other entries as
/// they are.
fn info_entry(entry: &[u8], keep: &dyn Fn(&[u8]) -> bool) -> Vec<u8> {
    let Some((kind, els)) = elements(entry) else {
        return entry.to_vec();
    };
    let Some((sub_kind, subs)) = els.get(9).and_then(|s| elements(s)) else {
        return entry.to_vec();
    };
    let mut out = Vec::with_capacity(entry.len());
    header(&mut out, kind, els.len());
    for el in &els[..9] {
        out.extend_from_slice(el);
    }
    let kept: Vec<&[u8]> = subs
        .into_iter()
        .filter(|s| elements(s).is_some_and(|(_, e)| e.first().is_some_and(|n| keep(text(n)))))
        .collect();
    header(&mut out, sub_kind, kept.len());
    for s in kept {
        out.extend_from_slice(s);
    }
    for el in &els[10..] {
        out.extend_from_slice(el);
    }
    out
}

/// A container's `COMMAND DOCS` name and doc map with only the
/// subcommands `keep` accepts in its `subcommands` map.
fn docs_entry(entry: &[u8], keep: &dyn Fn(&[u8]) -> bool) -> Vec<u8> {
    // The name (a bulk string), then the doc map.
    let Ok(Some(name_len)) = ReplyFramer::new().next(entry) else {
        return entry.to_vec();
    };
    let (name, map) = entry.split_at(name_len);
    let Some((kind, els)) = elements(map) else {
        return entry.to_vec();
    };
    let mut out = Vec::with_capacity(entry.len());
    out.extend_from_slice(name);
    header(&mut out, kind, els.len());
    for pair in els.chunks(2) {
        out.extend_from_slice(pair[0]);
        let Some(&value) = pair.get(1) else { break };
        match elements(value) {
            Some((sub_kind, subs)) if text(pair[0]) == b"subcommands" => {
                let kept: Vec<&[u8]> = subs
                    .chunks(2)
                    .filter(|p| keep(text(p[0])))
                    .flatten()
                    .copied()
                    .collect();
                header(&mut out, sub_kind, kept.len());
                for s in kept {
                    out.extend_from_slice(s);
                }
            }
            _ => out.extend_from_slice(value),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use keyway_protocol::command::{lookup, Lookup};
    use keyway_protocol::resp::array_elements;

    use super::*;

    fn spec(name: &str, sub: Option<&str>) -> &'static CommandSpec {
        match lookup(name.as_bytes(), sub.map(str::as_bytes)) {
            Lookup::Found(c) => c,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn command_lists_only_what_keyway_serves() {
        let all: Vec<&[u8]> = array_elements(all_reply(false)).unwrap().collect();
        assert_eq!(all.len(), count());
        assert!(count() < COMMANDS.len(), "something is refused");
        let names: Vec<Vec<u8>> = all
            .iter()
            .map(|e| text(elements(e).unwrap().1[0]).to_vec())
            .collect();
        assert!(names.iter().any(|n| n == b"get"));
        assert!(
            names.iter().any(|n| n == b"client"),
            "a container with served subcommands"
        );
        assert!(!names.iter().any(|n| n == b"cluster"), "refused");
        assert!(!names.iter().any(|n| n == b"migrate"), "refused");
        assert_eq!(
            info(spec("get", None), false),
            Some(spec("get", None).info_bytes())
        );
        assert_eq!(info(spec("migrate", None), false), None);
        assert_eq!(info(spec("migrate", None), true), None);
        assert_eq!(docs(spec("migrate", None), false), None);
        assert!(docs(spec("get", None), true).is_some());
    }

    #[test]
    fn containers_list_only_their_served_subcommands() {
        let client = spec("client", None);
        let entry = info(client, false).unwrap();
        let (_, els) = elements(entry).unwrap();
        let (_, subs) = elements(els[9]).unwrap();
        let names: Vec<&[u8]> = subs
            .iter()
            .map(|s| text(elements(s).unwrap().1[0]))
            .collect();
        assert!(names.contains(&&b"client|id"[..]));
        for s in client.subcommands {
            assert_eq!(names.contains(&s.name.as_bytes()), served(s), "{}", s.name);
        }
        // The docs' subcommands map agrees.
        let d = docs(client, false).unwrap();
        let name_len = ReplyFramer::new().next(d).unwrap().unwrap();
        let (_, map) = elements(&d[name_len..]).unwrap();
        let subs = map
            .chunks(2)
            .find(|p| text(p[0]) == b"subcommands")
            .map(|p| elements(p[1]).unwrap().1)
            .unwrap();
        let doc_names: Vec<&[u8]> = subs.chunks(2).map(|p| text(p[0])).collect();
        assert_eq!(doc_names, names);
        // Every listed entry is still a well-formed reply.
        for r in [
            all_reply(false),
            docs_all_reply(false),
            all_reply(true),
            docs_all_reply(true),
        ] {
            assert_eq!(ReplyFramer::new().next(r).unwrap(), Some(r.len()));
        }
        assert_eq!(
            array_elements(docs_all_reply(false)).unwrap().remaining(),
            2 * count()
        );
    }
}

/// How the README's command table classes a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Served as a single Redis serves it.
    AsRedis,
    /// Served, with the difference the text says.
    Differs(&'static str),
    /// Refused, for the reason the text says.
    Refused(&'static str),
}

/// Differences worth a line in the table, by command name (the first match
/// wins; policies without an entry get a generic line).
const NOTES: &[(&str, &str)] = &[
    ("mget", "split by group, the values merged in key order"),
    (
        "mset",
        "split by group; `+OK` once every group has applied its part (not atomic across groups)",
    ),
    ("del", "split by group, the counts added"),
    ("unlink", "split by group, the counts added"),
    ("exists", "split by group, the counts added"),
    ("touch", "split by group, the counts added"),
    ("dbsize", "every group, the counts added"),
    ("select", "database 0 only"),
    (
        "hello",
        "answered by keyway; `HELLO 3` switches to RESP3 (see RESP3)",
    ),
    (
        "auth",
        "answered by keyway against its own users (`[[user]]`, see Authentication and ACL users)",
    ),
    ("acl|users", "keyway's own users"),
    ("acl|list", "keyway's own users"),
    ("acl|getuser", "keyway's own users (no selectors)"),
    ("acl|dryrun", "checked against keyway's own users"),
    (
        "acl|log",
        "keyway's own refusals and failed authentications, every core",
    ),
    (
        "acl|cat",
        "commands in table order (Redis's order is its dict's)",
    ),
    (
        "info",
        "answered by keyway: its own sections, and what the groups report merged",
    ),
    ("role", "keyway is a master without replicas of its own"),
    (
        "config|get",
        "from the group owning slot 0, plus keyway's own settings as `keyway-*`",
    ),
    (
        "config|set",
        "every group; set back where it succeeded if another group refused",
    ),
    ("config|resetstat", "every group and keyway's own counters"),
    (
        "slowlog|get",
        "every group's entries and keyway's, newest first, tagged with their group",
    ),
    ("slowlog|len", "the groups' and keyway's entries added"),
    ("slowlog|reset", "every group and keyway's own log"),
    ("command", "only the commands keyway serves are listed"),
    (
        "command|count",
        "only the commands keyway serves are counted",
    ),
    ("command|docs", "only the commands keyway serves are listed"),
    (
        "command|info",
        "only the commands keyway serves are listed (nil for the others)",
    ),
    ("command|list", "only the commands keyway serves are listed"),
    (
        "client|list",
        "keyway's own clients, on every core (`core=` added)",
    ),
    ("client|info", "keyway's own client (`core=` added)"),
    (
        "client|kill",
        "keyway's own clients, on every core (`MAXAGE` too)",
    ),
    (
        "client|pause",
        "applied at keyway on every core: held commands wait in keyway",
    ),
    ("client|unpause", "applied at keyway on every core"),
    (
        "client|unblock",
        "ends a keyway client's blocking command at its group",
    ),
    (
        "client|no-evict",
        "exempts the client from keyway's own `max_memory` eviction",
    ),
    (
        "client|tracking",
        "`on` is refused (invalidations would come from shared connections); `off` as Redis",
    ),
    (
        "multi",
        "all keys of a transaction in one group; see Transactions",
    ),
    (
        "exec",
        "all keys of a transaction in one group; see Transactions",
    ),
    (
        "watch",
        "leases a dedicated connection to the keys' group; see Transactions",
    ),
    (
        "wait",
        "every group the client wrote to since its last `WAIT`; the least count",
    ),
    (
        "eval",
        "routed by its keys; without keys, on the group owning slot 0",
    ),
    (
        "evalsha",
        "routed by its keys; without keys, on the group owning slot 0",
    ),
    (
        "eval_ro",
        "routed by its keys; without keys, on the group owning slot 0",
    ),
    (
        "evalsha_ro",
        "routed by its keys; without keys, on the group owning slot 0",
    ),
    (
        "fcall",
        "routed by its keys; without keys, on the group owning slot 0",
    ),
    (
        "fcall_ro",
        "routed by its keys; without keys, on the group owning slot 0",
    ),
    ("publish", "see Pub/Sub"),
    ("spublish", "see Pub/Sub"),
];

/// Commands keyway answers (or forwards) exactly as a single Redis does,
/// though its policy is not a plain route.
const AS_REDIS: &[&str] = &[
    "acl|genpass",
    "acl|help",
    "acl|whoami",
    "ping",
    "echo",
    "quit",
    "reset",
    "discard",
    "unwatch",
    "client|getname",
    "client|setname",
    "client|id",
    "client|help",
    "client|reply",
    "client|caching",
    "client|getredir",
    "client|trackinginfo",
    "command|help",
    "config|help",
    "slowlog|help",
    "command|getkeys",
    "pubsub|help",
    "script|help",
    "function|help",
    "object|help",
    "xinfo|help",
    "xgroup|help",
    "module|help",
    "lolwut",
    "pfselftest",
];

/// How keyway serves `c`, for the README's table.
pub fn serving(c: &CommandSpec) -> Serving {
    use super::policy::Keys;
    let note = NOTES
        .iter()
        .find(|(n, _)| *n == c.name)
        .map(|&(_, text)| text);
    let differs = |generic: &'static str| Serving::Differs(note.unwrap_or(generic));
    match policy(c) {
        Policy::Unsupported(why) => Serving::Refused(why),
        _ if note.is_some() => differs(""),
        _ if AS_REDIS.contains(&c.name) => Serving::AsRedis,
        Policy::Scripts(super::policy::ScriptCmd::DocumentedGroup) => {
            differs("answered by the group owning slot 0")
        }
        Policy::Route {
            check: RouteCheck::CopyDb,
            ..
        } => differs("database 0 only: `DB n` other than 0 is refused"),
        Policy::Route {
            keys: Keys::First, ..
        } => Serving::AsRedis,
        Policy::Route { .. } if c.key_specs.len() <= 1 && !multi_key(c) => Serving::AsRedis,
        Policy::Route { .. } => differs("all its keys must be in one group, else `-CROSSSLOT`"),
        Policy::Split(_) => differs("split by group and merged"),
        Policy::FanOut(_) => differs("sent to every group, the replies merged"),
        Policy::Scripts(_) => differs("every group (see Scripts and functions)"),
        Policy::Tx(_) => differs("see Transactions"),
        Policy::Block(_) => differs("on a dedicated backend connection; see Blocking commands"),
        Policy::Wait => differs("see `WAIT`"),
        Policy::Kill => differs("every group, each on a connection of its own"),
        Policy::Local(_) => differs("answered by keyway"),
        Policy::PubSub(_) => differs("see Pub/Sub"),
        Policy::Keyspace(_) => differs("every group; see The whole keyspace"),
        Policy::Server(_) => differs("see Server: INFO, CONFIG, SLOWLOG"),
        Policy::Monitor => differs("every group's stream, merged; see MONITOR, LATENCY, MEMORY"),
        Policy::Diag(super::diag::DiagCmd::DocumentedGroup) => {
            differs("the keyless group's (the owner of slot 0)")
        }
        Policy::Diag(_) => differs("every group, merged; see MONITOR, LATENCY, MEMORY"),
    }
}

/// Whether a key spec of `c` can name more than one key.
fn multi_key(c: &CommandSpec) -> bool {
    use keyway_protocol::command::Find;
    c.key_specs.iter().any(|k| match k.find {
        Find::Range { lastkey, .. } => lastkey != 0,
        _ => true,
    })
}

/// The README's table of every Redis 7.0 command (between the
/// `<!-- commands:begin -->` and `<!-- commands:end -->` markers; a unit
/// test keeps it current: `KEYWAY_BLESS=1 cargo test -p keyway --lib
/// readme_command_table` rewrites it).
pub fn readme_table() -> String {
    let mut t = String::from("| Command | Served | How, or why not |\n|---|---|---|\n");
    for c in command::all() {
        if !c.subcommands.is_empty() {
            // Containers are described by their subcommands.
            continue;
        }
        let name = c.name.replace('|', " ").to_uppercase();
        let (served, how) = match serving(c) {
            Serving::AsRedis => ("yes", String::new()),
            Serving::Differs(d) => ("with a difference", d.to_string()),
            Serving::Refused(why) => ("no", why.to_string()),
        };
        t.push_str(&format!(
            "| `{name}` | {served} | {} |\n",
            how.replace('|', "\\|")
        ));
    }
    t
}

#[cfg(test)]
mod readme {
    use super::*;

    #[test]
    fn readme_command_table_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let (begin, end) = ("<!-- commands:begin -->\n", "<!-- commands:end -->");
        let (Some(a), Some(b)) = (readme.find(begin), readme.find(end)) else {
            panic!("README.md lacks the {begin:?} … {end:?} markers");
        };
        let current = &readme[a + begin.len()..b];
        let want = readme_table();
        if current != want {
            if std::env::var_os("KEYWAY_BLESS").is_some() {
                let new = format!("{}{want}{}", &readme[..a + begin.len()], &readme[b..]);
                std::fs::write(path, new).unwrap();
            } else {
                panic!(
                    "README.md's command table is stale: run \
                     `KEYWAY_BLESS=1 cargo test -p keyway --lib readme_command_table`"
                );
            }
        }
    }
}
