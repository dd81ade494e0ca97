//! Key extraction: which arguments of a request are keys, computed from Redis 7
//! key specs exactly as Redis's `getKeysUsingKeySpecs` does, plus the one
//! command-specific rule a proxy needs beyond them (`SORT`'s `STORE` and its
//! `BY`/`GET` patterns).

use crate::resp::Args;
use crate::slot::hash_tag;

use super::{key_flag, Begin, CommandSpec, Find};

/// Why the keys of a request could not be determined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A key-count argument is not an integer.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// A key-count argument is negative.
    #[error("Number of keys can't be negative")]
    NegativeKeyCount,
    /// The arguments run out before the keys the spec promises.
    #[error("Number of keys can't be greater than number of args")]
    TooFewArguments,
    /// The command's key positions depend on logic the proxy does not model.
    #[error("the keys of this command cannot be determined by a proxy")]
    Undeterminable,
    /// A `SORT ... BY/GET` pattern would read keys on any node.
    #[error("SORT BY/GET patterns must contain a hash tag, outside of which the '*' stands, so that every key they name lives with the sorted key")]
    PatternWithoutHashTag,
}

/// Appends the argument indices of `spec`'s keys in `args` to `out`, in key-spec
/// order. `args` must already satisfy the command's arity.
pub fn extract_keys(
    spec: &CommandSpec,
    args: &Args<'_>,
    out: &mut Vec<u32>,
) -> Result<(), KeyError> {
    walk(spec, args, true, &mut |i, _| out.push(i))
}

/// Appends the argument indices of `spec`'s keys in `args` to `out` with
/// their key spec's [`key_flag`](super::key_flag) bits, skipping specs
/// flagged `not_key` (sharded channels) and `SORT`'s `BY`/`GET` patterns, as
/// Redis's ACL checks them (`SORT`'s sorted key is `RO|ACCESS`, its `STORE`
/// destination `OW|UPDATE`; keys of `variable_flags` specs get the flags
/// Redis's `SET` and `BITFIELD` give them).
pub fn extract_keys_with_flags(
    spec: &CommandSpec,
    args: &Args<'_>,
    out: &mut Vec<(u32, u16)>,
) -> Result<(), KeyError> {
    walk(spec, args, false, &mut |i, f| out.push((i, f)))
}

/// `routing`: also `not_key` specs and `SORT` patterns (what routing must
/// place), else only what Redis's ACL checks.
fn walk(
    spec: &CommandSpec,
    args: &Args<'_>,
    routing: bool,
    out: &mut impl FnMut(u32, u16),
) -> Result<(), KeyError> {
    if spec.has_unknown_keys() {
        return match spec.name {
            "sort" | "sort_ro" => sort_keys(args, spec.name == "sort", routing, out),
            _ => Err(KeyError::Undeterminable),
        };
    }
    let argc = args.len() as i64;
    for ks in spec.key_specs {
        if !routing && ks.flags & key_flag::NOT_KEY != 0 {
            continue;
        }
        let first = match ks.begin {
            Begin::Index(i) => i64::from(i),
            Begin::Keyword { keyword, startfrom } => {
                match find_keyword(args, keyword.as_bytes(), i64::from(startfrom)) {
                    Some(i) => i + 1,
                    None => continue,
                }
            }
            Begin::Unknown => return Err(KeyError::Undeterminable),
        };
        let (first, last, step) = match ks.find {
            Find::Range {
                lastkey,
                step,
                limit,
            } => {
                let lastkey = i64::from(lastkey);
                let last = if lastkey >= 0 {
                    first + lastkey
                } else if limit == 0 {
                    argc + lastkey
                } else {
                    first + ((argc - first) / i64::from(limit) + lastkey)
                };
                (first, last, i64::from(step))
            }
            Find::Keynum {
                keynumidx,
                firstkey,
                step,
            } => {
                let idx = first + i64::from(keynumidx);
                if idx >= argc {
                    return Err(KeyError::TooFewArguments);
                }
                let numkeys = parse_count(args.get(idx as usize)).ok_or(KeyError::NotAnInteger)?;
                if numkeys < 0 {
                    return Err(KeyError::NegativeKeyCount);
                }
                if numkeys == 0 {
                    continue;
                }
                let first = first + i64::from(firstkey);
                (first, first + numkeys - 1, i64::from(step))
            }
            Find::Unknown => return Err(KeyError::Undeterminable),
        };
        if last >= argc || last < first || first >= argc || first < 1 || step < 1 {
            return Err(KeyError::TooFewArguments);
        }
        let mut i = first;
        let flags = if ks.flags & key_flag::VARIABLE_FLAGS != 0 {
            variable_flags(spec.name, args, ks.flags)
        } else {
            ks.flags
        };
        while i <= last {
            out(i as u32, flags);
            i += step;
        }
    }
    Ok(())
}

/// The flags of a key whose spec says `variable_flags`, as Redis's
/// `setGetKeys` and `bitfieldGetKeys` give them.
fn variable_flags(name: &str, args: &Args<'_>, spec_flags: u16) -> u16 {
    use key_flag::{ACCESS, OW, RO, RW, UPDATE};
    match name {
        "set" => {
            let get = (3..args.len()).any(|i| args.get(i).eq_ignore_ascii_case(b"get"));
            if get {
                RW | ACCESS | UPDATE
            } else {
                OW | UPDATE
            }
        }
        "bitfield" => {
            let argc = args.len();
            let mut i = 2;
            let mut readonly = true;
            while i < argc {
                let (a, more) = (args.get(i), argc - i - 1);
                if a.eq_ignore_ascii_case(b"get") && more >= 2 {
                    i += 3;
                } else if a.eq_ignore_ascii_case(b"overflow") && more >= 1 {
                    i += 2;
                } else {
                    readonly = false;
                    break;
                }
            }
            if readonly {
                RO | ACCESS
            } else {
                RW | ACCESS | UPDATE
            }
        }
        _ => spec_flags,
    }
}

/// Redis's keyword search: forwards from `startfrom` to the end, or backwards
/// from `argc + startfrom` to index 1 when `startfrom` is negative.
fn find_keyword(args: &Args<'_>, keyword: &[u8], startfrom: i64) -> Option<i64> {
    let argc = args.len() as i64;
    let found = |i: i64| args.get(i as usize).eq_ignore_ascii_case(keyword);
    if startfrom >= 0 {
        (startfrom.max(1)..argc).find(|&i| found(i))
    } else {
        let start = argc + startfrom;
        (1..=start.min(argc - 1)).rev().find(|&i| found(i))
    }
}

/// Parses a key count the way Redis's `string2ll` does (no sign but '-', no
/// leading zeros, no spaces).
fn parse_count(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(d - b'0');
    }
    if neg && v == 0 {
        return None;
    }
    Some(if neg { -v } else { v })
}

/// `SORT key [BY pattern] [LIMIT offset count] [GET pattern …] [ASC|DESC] [ALPHA]
/// [STORE destination]`: the sorted key, the last `STORE` destination (as Redis's
/// `sortGetKeys`), and every `BY`/`GET` pattern that names keys, as a pseudo-key
/// whose hash tag is the tag of every key it can name.
fn sort_keys(
    args: &Args<'_>,
    store_allowed: bool,
    patterns: bool,
    out: &mut impl FnMut(u32, u16),
) -> Result<(), KeyError> {
    const READ: u16 = key_flag::RO | key_flag::ACCESS;
    out(1, READ);
    let mut store = None;
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i);
        if a.eq_ignore_ascii_case(b"limit") {
            i += 3;
            continue;
        }
        if a.eq_ignore_ascii_case(b"by") || a.eq_ignore_ascii_case(b"get") {
            if let Some(pattern) = args.try_get(i + 1).filter(|_| patterns) {
                if pattern_names_keys(pattern) {
                    if !pattern_is_tagged(pattern) {
                        return Err(KeyError::PatternWithoutHashTag);
                    }
                    out((i + 1) as u32, READ);
                }
            }
            i += 2;
            continue;
        }
        if store_allowed && a.eq_ignore_ascii_case(b"store") && i + 1 < args.len() {
            store = Some((i + 1) as u32);
        }
        i += 1;
    }
    if let Some(s) = store {
        out(s, key_flag::OW | key_flag::UPDATE);
    }
    Ok(())
}

/// A pattern names keys when it substitutes elements with `*` (`GET #` names the
/// element itself, and a pattern without `*` reads nothing).
fn pattern_names_keys(pattern: &[u8]) -> bool {
    pattern != b"#" && memchr::memchr(b'*', key_part(pattern)).is_some()
}

/// Whether every key the pattern can name shares one hash tag: the pattern has a
/// tag, and the `*` lies outside it.
fn pattern_is_tagged(pattern: &[u8]) -> bool {
    let key = key_part(pattern);
    let tag = hash_tag(key);
    tag.len() != key.len() && memchr::memchr(b'*', tag).is_none()
}

/// The key part of a pattern: before `->field`, which selects a hash field.
fn key_part(pattern: &[u8]) -> &[u8] {
    match memchr::memmem::find(pattern, b"->") {
        Some(p) => &pattern[..p],
        None => pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::lookup::by_name;
    use crate::resp::Span;

    fn keys_of(words: &[&str]) -> Result<Vec<String>, KeyError> {
        let mut buf = Vec::new();
        let mut spans = Vec::new();
        for w in words {
            spans.push(Span::new(buf.len(), w.len()));
            buf.extend_from_slice(w.as_bytes());
        }
        let args = Args::new(&buf, &spans);
        let spec = by_name(words[0].as_bytes()).expect(words[0]);
        let spec = if spec.subcommands.is_empty() {
            spec
        } else {
            crate::command::lookup::subcommand(spec, words[1].as_bytes()).expect(words[1])
        };
        assert!(spec.arity_ok(words.len()), "arity of {words:?}");
        let mut out = Vec::new();
        extract_keys(spec, &args, &mut out)?;
        Ok(out.iter().map(|&i| words[i as usize].to_string()).collect())
    }

    fn ok(words: &[&str]) -> Vec<String> {
        keys_of(words).unwrap_or_else(|e| panic!("{words:?}: {e}"))
    }

    #[test]
    fn single_and_range_keys() {
        assert_eq!(ok(&["GET", "a"]), ["a"]);
        assert_eq!(ok(&["set", "a", "1", "EX", "10"]), ["a"]);
        assert_eq!(ok(&["MGET", "a", "b", "c"]), ["a", "b", "c"]);
        assert_eq!(ok(&["MSET", "a", "1", "b", "2"]), ["a", "b"]);
        assert_eq!(ok(&["DEL", "a", "b"]), ["a", "b"]);
        assert_eq!(ok(&["RENAME", "a", "b"]), ["a", "b"]);
        assert_eq!(ok(&["LMOVE", "a", "b", "LEFT", "RIGHT"]), ["a", "b"]);
        assert!(ok(&["PING"]).is_empty());
    }

    #[test]
    fn keynum_specs() {
        assert_eq!(ok(&["EVAL", "return 1", "2", "a", "b", "x"]), ["a", "b"]);
        assert!(ok(&["EVAL", "return 1", "0"]).is_empty());
        assert_eq!(
            keys_of(&["EVAL", "s", "3", "a"]),
            Err(KeyError::TooFewArguments)
        );
        assert_eq!(keys_of(&["EVAL", "s", "x"]), Err(KeyError::NotAnInteger));
        assert_eq!(
            keys_of(&["EVAL", "s", "-1"]),
            Err(KeyError::NegativeKeyCount)
        );
        assert_eq!(
            ok(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]),
            ["d", "a", "b"]
        );
        assert_eq!(ok(&["LMPOP", "2", "a", "b", "LEFT"]), ["a", "b"]);
    }

    #[test]
    fn keyword_specs() {
        assert_eq!(
            ok(&["XREAD", "COUNT", "2", "STREAMS", "a", "b", "0", "0"]),
            ["a", "b"]
        );
        assert_eq!(
            ok(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"]),
            ["s"]
        );
        assert_eq!(
            ok(&["GEORADIUS", "a", "0", "0", "1", "km", "STORE", "d"]),
            ["a", "d"]
        );
        assert_eq!(ok(&["GEORADIUS", "a", "0", "0", "1", "km"]), ["a"]);
    }

    #[test]
    fn subcommand_keys() {
        assert_eq!(ok(&["OBJECT", "ENCODING", "k"]), ["k"]);
        assert_eq!(ok(&["XINFO", "STREAM", "s"]), ["s"]);
        assert_eq!(ok(&["MEMORY", "USAGE", "k"]), ["k"]);
    }

    #[test]
    fn sort_store_and_patterns() {
        assert_eq!(ok(&["SORT", "a"]), ["a"]);
        assert_eq!(ok(&["SORT", "a", "STORE", "x", "STORE", "y"]), ["a", "y"]);
        assert_eq!(
            ok(&["SORT", "a", "LIMIT", "0", "10", "ALPHA", "STORE", "d"]),
            ["a", "d"]
        );
        assert_eq!(ok(&["SORT", "a", "BY", "nosort"]), ["a"]);
        assert_eq!(ok(&["SORT", "a", "GET", "#"]), ["a"]);
        assert_eq!(
            ok(&["SORT", "{u}a", "BY", "{u}w_*", "GET", "{u}o_*->f"]),
            ["{u}a", "{u}w_*", "{u}o_*->f"]
        );
        assert_eq!(
            keys_of(&["SORT", "a", "BY", "w_*"]),
            Err(KeyError::PatternWithoutHashTag)
        );
        assert_eq!(
            keys_of(&["SORT", "a", "GET", "{w_*}"]),
            Err(KeyError::PatternWithoutHashTag)
        );
        assert_eq!(ok(&["SORT_RO", "a", "STORE", "x"]), ["a"]);
    }

    #[test]
    fn counts_parse_like_string2ll() {
        assert_eq!(parse_count(b"0"), Some(0));
        assert_eq!(parse_count(b"12"), Some(12));
        assert_eq!(parse_count(b"-3"), Some(-3));
        assert_eq!(parse_count(b"012"), None);
        assert_eq!(parse_count(b"+1"), None);
        assert_eq!(parse_count(b" 1"), None);
        assert_eq!(parse_count(b""), None);
        assert_eq!(parse_count(b"-0"), None);
    }
}
