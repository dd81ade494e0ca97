//! Case-insensitive command lookup without allocation: an open-addressing table
//! over the generated command list, built once, probed with a hash of the
//! lower-cased name.

use std::sync::OnceLock;

use super::{CommandSpec, COMMANDS};

/// What a command name (and, for containers, subcommand name) resolves to.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    /// A command or subcommand.
    Found(&'static CommandSpec),
    /// No such command.
    UnknownCommand,
    /// The container exists but has no such subcommand.
    UnknownSubcommand(&'static CommandSpec),
}

const TABLE_BITS: u32 = 10;
const TABLE_SIZE: usize = 1 << TABLE_BITS;

struct Index {
    /// Index into `COMMANDS` plus one; 0 is empty.
    slots: [u16; TABLE_SIZE],
}

#[inline]
fn hash(name: &[u8]) -> usize {
    // FNV-1a over ASCII-lower-cased bytes.
    let mut h: u32 = 0x811c_9dc5;
    for &b in name {
        h ^= u32::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> TABLE_BITS)) as usize & (TABLE_SIZE - 1)
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        assert!(COMMANDS.len() < TABLE_SIZE / 2, "command index too small");
        let mut slots = [0u16; TABLE_SIZE];
        for (i, c) in COMMANDS.iter().enumerate() {
            let mut h = hash(c.name.as_bytes());
            while slots[h] != 0 {
                h = (h + 1) & (TABLE_SIZE - 1);
            }
            slots[h] = (i + 1) as u16;
        }
        Index { slots }
    })
}

/// Finds a top-level command by name, ignoring ASCII case.
#[inline]
pub fn by_name(name: &[u8]) -> Option<&'static CommandSpec> {
    let idx = index();
    let mut h = hash(name);
    loop {
        let slot = idx.slots[h];
        if slot == 0 {
            return None;
        }
        let c = &COMMANDS[usize::from(slot) - 1];
        if c.name.len() == name.len() && c.name.as_bytes().eq_ignore_ascii_case(name) {
            return Some(c);
        }
        h = (h + 1) & (TABLE_SIZE - 1);
    }
}

/// Finds `sub` among a container's subcommands, ignoring ASCII case.
pub fn subcommand(container: &'static CommandSpec, sub: &[u8]) -> Option<&'static CommandSpec> {
    container.subcommands.iter().find(|s| {
        let short = &s.name.as_bytes()[container.name.len() + 1..];
        short.eq_ignore_ascii_case(sub)
    })
}

/// Resolves a request's command: `name` is its first argument, `sub` its second
/// (if any), used only when `name` is a container such as `OBJECT` or `CONFIG`.
/// A container called without a subcommand resolves to the container itself,
/// whose arity then rejects it, as Redis does.
#[inline]
pub fn lookup(name: &[u8], sub: Option<&[u8]>) -> Lookup {
    let Some(c) = by_name(name) else {
        return Lookup::UnknownCommand;
    };
    if c.subcommands.is_empty() {
        return Lookup::Found(c);
    }
    match sub {
        None => Lookup::Found(c),
        Some(s) => match subcommand(c, s) {
            Some(sc) => Lookup::Found(sc),
            None => Lookup::UnknownSubcommand(c),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_found_in_any_case() {
        for c in COMMANDS {
            assert!(std::ptr::eq(by_name(c.name.as_bytes()).expect(c.name), c));
            let upper = c.name.to_ascii_uppercase();
            assert!(std::ptr::eq(by_name(upper.as_bytes()).expect(c.name), c));
        }
        assert!(by_name(b"nosuchcommand").is_none());
        assert!(by_name(b"").is_none());
        assert!(by_name(b"ge").is_none());
    }

    #[test]
    fn containers_resolve_subcommands() {
        match lookup(b"object", Some(b"ENCODING")) {
            Lookup::Found(c) => assert_eq!(c.name, "object|encoding"),
            other => panic!("{other:?}"),
        }
        match lookup(b"OBJECT", Some(b"bogus")) {
            Lookup::UnknownSubcommand(c) => assert_eq!(c.name, "object"),
            other => panic!("{other:?}"),
        }
        match lookup(b"object", None) {
            Lookup::Found(c) => assert_eq!(c.name, "object"),
            other => panic!("{other:?}"),
        }
        match lookup(b"get", Some(b"x")) {
            Lookup::Found(c) => assert_eq!(c.name, "get"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(lookup(b"nope", None), Lookup::UnknownCommand));
    }
}
