//! Case-insensitive command lookup without allocation: an open-addressing table
//! over the generated command list, built once, probed with a hash of the
//! lower-cased name. A name of at most 8 bytes (every command a client sends
//! in bulk: `get`, `set`, `hgetall`, …) is lower-cased and compared as one
//! u64, without a byte loop.

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
    /// Each command's name packed by [`packed`] (0 for a longer name).
    packed: Vec<u64>,
}

/// Lower-cases the ASCII letters of 8 bytes at once (SWAR: a byte is an
/// upper-case letter when it is above `@` and not above `Z`, high bit
/// clear).
#[inline(always)]
fn lower8(v: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let low7 = v & (0x7f * ONES);
    let above_at = low7 + (0x3f * ONES);
    let above_z = low7 + (0x25 * ONES);
    let upper = above_at & !above_z & !v & (0x80 * ONES);
    v | (upper >> 2)
}

/// A name of at most 8 bytes, lower-cased, as a u64 (little-endian, zero
/// padded: equal values are equal names of equal lengths, as no command
/// name holds a zero byte); None for a longer name.
#[inline(always)]
fn packed(name: &[u8]) -> Option<u64> {
    if name.len() > 8 {
        return None;
    }
    // A byte loop, not a copy into a buffer: names are short, and a
    // variable-length copy is a `memcpy` call.
    let mut v = 0u64;
    for (i, &b) in name.iter().enumerate() {
        v |= u64::from(b) << (8 * i);
    }
    Some(lower8(v))
}

#[inline]
fn hash(name: &[u8]) -> usize {
    if let Some(p) = packed(name) {
        return hash_packed(p);
    }
    // FNV-1a over ASCII-lower-cased bytes.
    let mut h: u32 = 0x811c_9dc5;
    for &b in name {
        h ^= u32::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> TABLE_BITS)) as usize & (TABLE_SIZE - 1)
}

#[inline(always)]
fn hash_packed(p: u64) -> usize {
    (p.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - TABLE_BITS)) as usize
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
        let packed = COMMANDS
            .iter()
            .map(|c| packed(c.name.as_bytes()).unwrap_or(0))
            .collect();
        Index { slots, packed }
    })
}

/// Finds a top-level command by name, ignoring ASCII case.
#[inline]
pub fn by_name(name: &[u8]) -> Option<&'static CommandSpec> {
    let idx = index();
    if let Some(p) = packed(name) {
        let mut h = hash_packed(p);
        loop {
            let slot = usize::from(idx.slots[h]);
            if slot == 0 {
                return None;
            }
            if idx.packed[slot - 1] == p {
                // A request's name may hold zero bytes, which pack as
                // padding: the lengths must agree too.
                return COMMANDS
                    .get(slot - 1)
                    .filter(|c| c.name.len() == name.len());
            }
            h = (h + 1) & (TABLE_SIZE - 1);
        }
    }
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
        assert!(by_name(b"get\0").is_none(), "a zero byte is no padding");
        assert!(by_name(b"GET\x80").is_none());
        // Bytes next to the letters are not letters.
        assert!(by_name(b"g@t").is_none());
        assert!(by_name(b"[et").is_none());
    }

    #[test]
    fn lower8_changes_only_ascii_upper_case_letters() {
        for b in 0..=255u8 {
            let v = u64::from_le_bytes([b, 0, b, 0x41, b, 0x7f, b, 0xc1]);
            let mut want = v.to_le_bytes();
            want.iter_mut().for_each(|c| *c = c.to_ascii_lowercase());
            assert_eq!(lower8(v).to_le_bytes(), want, "byte {b:#x}");
        }
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
