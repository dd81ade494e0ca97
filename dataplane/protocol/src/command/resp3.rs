//! The RESP3 forms of `COMMAND`'s and `COMMAND DOCS`'s replies.
//!
//! The blobs ([`super::COMMANDS_RESP`], [`super::DOCS_RESP`]) are what Redis
//! answers a RESP2 client. A RESP3 client gets the same values with Redis
//! 7.0's RESP3 types, which this module restores from the shape Redis
//! documents for each reply (`addReplyCommandInfo`, `addReplyCommandDocs`):
//!
//! - a command's info (an array of 10): its flags, ACL categories and tips
//!   are sets; its key specs a set of maps (`flags` a set, `begin_search`
//!   and `find_keys` maps whose `spec` is a map); its subcommands an
//!   array of infos (an empty set when it has none);
//! - a command's docs (a map): `doc_flags` a set, `history` a set of
//!   `[version, text]` arrays, `arguments` an array of argument maps (whose
//!   `flags` is a set and `arguments` an array of argument maps),
//!   `subcommands` a map of name to docs.
//!
//! Everything else is copied as it is (strings and integers are the same in
//! both protocols). Input that is not the expected shape is copied
//! unchanged: the blobs are generated, so a test compares the result with a
//! real redis-server's RESP3 reply.

use crate::resp::{array_elements, encode};

/// Writes command info `el` (one element of `COMMAND`'s reply, as the
/// blob holds it) in RESP3.
pub fn info(el: &[u8], out: &mut Vec<u8>) {
    let Some(els) = array_elements(el) else {
        return out.extend_from_slice(el);
    };
    encode::array_header(out, els.remaining());
    for (i, e) in els.enumerate() {
        match i {
            2 | 6 | 7 => set_of(e, out, copy),
            8 => set_of(e, out, key_spec),
            // `addReplyCommandSubCommands`: an empty set, or an array.
            9 if e == b"*0\r\n" => encode::set_header(out, 0, true),
            9 => array_of(e, out, info),
            _ => copy(e, out),
        }
    }
}

/// Writes a command's `COMMAND DOCS` entry, its name then its docs map (as
/// [`super::CommandSpec::docs_bytes`] holds them), in RESP3.
pub fn docs_entry(entry: &[u8], out: &mut Vec<u8>) {
    let Some(name_len) = element_len(entry) else {
        return out.extend_from_slice(entry);
    };
    out.extend_from_slice(&entry[..name_len]);
    docs(&entry[name_len..], out);
}

/// `COMMAND`'s whole reply in RESP3 (converted once).
pub fn all_infos() -> &'static [u8] {
    static ONCE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let mut out = Vec::with_capacity(super::COMMANDS_RESP.len() * 11 / 10);
        match array_elements(super::COMMANDS_RESP) {
            Some(els) => {
                encode::array_header(&mut out, els.remaining());
                for e in els {
                    info(e, &mut out);
                }
            }
            None => out.extend_from_slice(super::COMMANDS_RESP),
        }
        out
    })
}

/// `COMMAND DOCS`'s whole reply in RESP3, a map (converted once).
pub fn all_docs() -> &'static [u8] {
    static ONCE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let mut out = Vec::with_capacity(super::DOCS_RESP.len() * 11 / 10);
        map_of(super::DOCS_RESP, &mut out, |_, v, out| docs(v, out));
        out
    })
}

/// The bytes of the element at the start of `buf`, if whole.
fn element_len(buf: &[u8]) -> Option<usize> {
    crate::resp::ReplyFramer::new().next(buf).ok().flatten()
}

fn copy(el: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(el);
}

/// A RESP2 array written as a set, each element by `each`.
fn set_of(el: &[u8], out: &mut Vec<u8>, each: fn(&[u8], &mut Vec<u8>)) {
    let Some(els) = array_elements(el) else {
        return out.extend_from_slice(el);
    };
    encode::set_header(out, els.remaining(), true);
    for e in els {
        each(e, out);
    }
}

/// A RESP2 array written as an array, each element by `each`.
fn array_of(el: &[u8], out: &mut Vec<u8>, each: fn(&[u8], &mut Vec<u8>)) {
    let Some(els) = array_elements(el) else {
        return out.extend_from_slice(el);
    };
    encode::array_header(out, els.remaining());
    for e in els {
        each(e, out);
    }
}

/// A flat RESP2 array of key, value pairs written as a map, each value by
/// `value(key, value, out)` (the key as its text).
fn map_of(el: &[u8], out: &mut Vec<u8>, value: fn(&[u8], &[u8], &mut Vec<u8>)) {
    let Some(mut els) = array_elements(el) else {
        return out.extend_from_slice(el);
    };
    if els.remaining() % 2 != 0 {
        return out.extend_from_slice(el);
    }
    encode::map_header(out, els.remaining() / 2, true);
    while let (Some(k), Some(v)) = (els.next(), els.next()) {
        out.extend_from_slice(k);
        value(text(k), v, out);
    }
}

/// The contents of a bulk or simple string element (empty otherwise).
fn text(el: &[u8]) -> &[u8] {
    let Some(eol) = el.iter().position(|&b| b == b'\r') else {
        return &[];
    };
    match el.first() {
        Some(b'+') => &el[1..eol],
        Some(b'$') => el.get(eol + 2..el.len().saturating_sub(2)).unwrap_or(&[]),
        _ => &[],
    }
}

fn key_spec(el: &[u8], out: &mut Vec<u8>) {
    map_of(el, out, |k, v, out| match k {
        b"flags" => set_of(v, out, copy),
        b"begin_search" | b"find_keys" => map_of(v, out, |k, v, out| match k {
            b"spec" => map_of(v, out, |_, v, out| copy(v, out)),
            _ => copy(v, out),
        }),
        _ => copy(v, out),
    });
}

fn docs(el: &[u8], out: &mut Vec<u8>) {
    map_of(el, out, |k, v, out| match k {
        b"doc_flags" | b"history" => set_of(v, out, copy),
        b"arguments" => array_of(v, out, argument),
        b"subcommands" => map_of(v, out, |_, v, out| docs(v, out)),
        _ => copy(v, out),
    });
}

fn argument(el: &[u8], out: &mut Vec<u8>) {
    map_of(el, out, |k, v, out| match k {
        b"flags" => set_of(v, out, copy),
        b"arguments" => array_of(v, out, argument),
        _ => copy(v, out),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_info_entry_gets_its_sets_and_maps() {
        // `COMMAND INFO get` from redis-server 7.0, RESP2 then RESP3.
        let two = b"*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n\
            *3\r\n+@read\r\n+@string\r\n+@fast\r\n*0\r\n*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RO\r\n\
            +access\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n\
            *2\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n\
            $4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n";
        let three = b"*10\r\n$3\r\nget\r\n:2\r\n~2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n\
            ~3\r\n+@read\r\n+@string\r\n+@fast\r\n~0\r\n~1\r\n%3\r\n$5\r\nflags\r\n~2\r\n+RO\r\n\
            +access\r\n$12\r\nbegin_search\r\n%2\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n\
            %1\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n%2\r\n$4\r\ntype\r\n$5\r\nrange\r\n\
            $4\r\nspec\r\n%3\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n~0\r\n";
        let mut out = Vec::new();
        info(two, &mut out);
        assert_eq!(
            out.escape_ascii().to_string(),
            three.escape_ascii().to_string()
        );
    }

    #[test]
    fn every_entry_converts_to_one_whole_reply() {
        for c in crate::command::all() {
            for (what, blob, f) in [
                ("info", c.info_bytes(), info as fn(&[u8], &mut Vec<u8>)),
                ("docs", c.docs_bytes(), docs_entry),
            ] {
                if blob.is_empty() {
                    continue;
                }
                let mut out = Vec::new();
                f(blob, &mut out);
                let mut framer = crate::resp::ReplyFramer::new();
                let first = framer.next(&out).unwrap();
                let whole = match what {
                    // A docs entry is two elements: the name, the map.
                    "docs" => first.and_then(|n| {
                        crate::resp::ReplyFramer::new()
                            .next(&out[n..])
                            .unwrap()
                            .map(|m| n + m)
                    }),
                    _ => first,
                };
                assert_eq!(whole, Some(out.len()), "{what} of {}", c.name);
            }
        }
    }
}
