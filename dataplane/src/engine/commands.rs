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

use keyway_protocol::command::{self, CommandSpec, COMMANDS};
use keyway_protocol::resp::{encode, ReplyFramer};

use super::policy::{policy, Policy};

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
        Listing {
            all,
            info,
            docs,
            docs_all,
            count: entries.len(),
        }
    })
}

fn sub_served(c: &CommandSpec, name: &[u8]) -> bool {
    c.subcommands
        .iter()
        .any(|s| s.name.as_bytes().eq_ignore_ascii_case(name) && served(s))
}

/// `COMMAND` (and `COMMAND INFO` without names).
pub fn all_reply() -> &'static [u8] {
    &listing().all
}

/// `COMMAND DOCS` without names.
pub fn docs_all_reply() -> &'static [u8] {
    &listing().docs_all
}

/// `COMMAND COUNT`.
pub fn count() -> usize {
    listing().count
}

/// `c`'s `COMMAND INFO` entry, if `COMMAND` lists it.
pub fn info(c: &CommandSpec) -> Option<&'static [u8]> {
    let e = &listing().info[usize::from(c.id)];
    (!e.is_empty()).then_some(e.as_slice())
}

/// `c`'s `COMMAND DOCS` name and doc map, if `COMMAND` lists it.
pub fn docs(c: &CommandSpec) -> Option<&'static [u8]> {
    let e = &listing().docs[usize::from(c.id)];
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
        let all: Vec<&[u8]> = array_elements(all_reply()).unwrap().collect();
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
            info(spec("get", None)),
            Some(spec("get", None).info_bytes())
        );
        assert_eq!(info(spec("migrate", None)), None);
        assert_eq!(docs(spec("migrate", None)), None);
        assert!(docs(spec("get", None)).is_some());
    }

    #[test]
    fn containers_list_only_their_served_subcommands() {
        let client = spec("client", None);
        let entry = info(client).unwrap();
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
        let d = docs(client).unwrap();
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
        for r in [all_reply(), docs_all_reply()] {
            assert_eq!(ReplyFramer::new().next(r).unwrap(), Some(r.len()));
        }
        assert_eq!(
            array_elements(docs_all_reply()).unwrap().remaining(),
            2 * count()
        );
    }
}
