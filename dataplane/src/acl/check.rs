//! Whether a user may run a request, as Redis 7.0's `ACLSelectorCheckCmd`
//! decides: the command's bit, then each key against the key patterns that
//! grant what the key spec does with it (`access` needs `R`; `insert`,
//! `update`, `delete` need `W`), then each Pub/Sub channel (a `PSUBSCRIBE`
//! pattern must equal one of the user's channel patterns literally).

use keyway_protocol::command::{
    acl, extract_keys_with_flags, flag, key_flag, Begin, CommandSpec, Find,
};
use keyway_protocol::pattern::glob_match;
use keyway_protocol::resp::Args;

use super::rules::User;

/// Why a request is refused, and the argument that was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The command (`-NOPERM this user has no permissions to run …`).
    Command,
    /// A key, at this argument index.
    Key(u32),
    /// A channel, at this argument index.
    Channel(u32),
    /// A script or function call by a user whose commands, keys or
    /// channels are limited: keyway cannot see what a script runs, so it
    /// could not hold the script to the user's rules.
    Script,
}

/// Whether `spec` runs a script or a function (`EVAL`, `EVALSHA`, their
/// `_RO` forms, `FCALL`, `FCALL_RO`), or changes the code other users'
/// calls run (`FUNCTION LOAD|DELETE|FLUSH|RESTORE`, `SCRIPT FLUSH`: a
/// limited user replacing a library would have its code run by an
/// unlimited caller).
fn runs_script(spec: &CommandSpec) -> bool {
    spec.acl & acl::SCRIPTING != 0
        && (spec.name.starts_with("eval")
            || spec.name.starts_with("fcall")
            || matches!(
                spec.name,
                "function|load"
                    | "function|delete"
                    | "function|flush"
                    | "function|restore"
                    | "script|flush"
            ))
}

/// How a Pub/Sub command names channels.
enum Channels {
    None,
    /// `PUBLISH`/`SPUBLISH channel`.
    First,
    /// `SUBSCRIBE`/`SSUBSCRIBE channel…`.
    All,
    /// `PSUBSCRIBE pattern…`.
    Patterns,
}

fn channels_of(spec: &CommandSpec) -> Channels {
    if !spec.has(flag::PUBSUB) {
        return Channels::None;
    }
    match spec.name {
        "publish" | "spublish" => Channels::First,
        "subscribe" | "ssubscribe" => Channels::All,
        "psubscribe" => Channels::Patterns,
        _ => Channels::None,
    }
}

/// The key spec flags of a command whose only key is its first argument
/// (and that names no channel), and whether they vary with the arguments
/// (`SET … GET`, `BITFIELD`).
#[inline]
fn first_key_only(spec: &CommandSpec) -> Option<(u16, bool)> {
    match spec.key_specs {
        [ks] if ks.begin == Begin::Index(1)
            && ks.find
                == (Find::Range {
                    lastkey: 0,
                    step: 1,
                    limit: 0,
                })
            && ks.flags & key_flag::NOT_KEY == 0
            && !spec.has(flag::PUBSUB) =>
        {
            Some((ks.flags, ks.flags & key_flag::VARIABLE_FLAGS != 0))
        }
        _ => None,
    }
}

/// Every flag [`User::key_ok`] looks at: reading and each kind of write.
const ANY_USE: u16 = key_flag::ACCESS | key_flag::INSERT | key_flag::DELETE | key_flag::UPDATE;

impl User {
    /// Checks `args` (a call of `spec`, arity already checked) against the
    /// user's rules. `keys` is scratch space, left cleared.
    #[inline]
    pub fn check(
        &self,
        spec: &CommandSpec,
        args: &Args<'_>,
        keys: &mut Vec<(u32, u16)>,
    ) -> Result<(), Denied> {
        if !spec.has(flag::NO_AUTH) && !self.may_run(spec.id) {
            return Err(Denied::Command);
        }
        if !self.all_keys {
            if let Some((flags, variable)) = first_key_only(spec) {
                // `GET k`, `SET k v`, …: no key spec walk.
                let Some(k) = args.try_get(1) else {
                    return Ok(());
                };
                // Flags that vary (`SET k v [GET]`) are at most every
                // kind of use: a key granted all of them is granted what
                // the arguments make of it; otherwise walk the spec.
                let want = if variable { flags | ANY_USE } else { flags };
                if self.key_ok(k, want) {
                    return Ok(());
                }
                if !variable {
                    return Err(Denied::Key(1));
                }
            }
        }
        self.check_rest(spec, args, keys)
    }

    /// [`check`](Self::check) past the command's bit and the one-key fast
    /// case: every key by the key specs, then channels, then scripts.
    #[inline(never)]
    fn check_rest(
        &self,
        spec: &CommandSpec,
        args: &Args<'_>,
        keys: &mut Vec<(u32, u16)>,
    ) -> Result<(), Denied> {
        if !self.all_keys && !spec.key_specs.is_empty() {
            keys.clear();
            // Keys Redis cannot find are none to check (the command then
            // fails on its own).
            let _ = extract_keys_with_flags(spec, args, keys);
            let denied = keys
                .iter()
                .find(|&&(i, f)| !self.key_ok(args.get(i as usize), f))
                .map(|&(i, _)| i);
            keys.clear();
            if let Some(i) = denied {
                return Err(Denied::Key(i));
            }
        }
        if !self.all_channels {
            let (range, literal) = match channels_of(spec) {
                Channels::None => return self.script_check(spec),
                Channels::First => (1..2.min(args.len()), false),
                Channels::All => (1..args.len(), false),
                Channels::Patterns => (1..args.len(), true),
            };
            for i in range {
                if !self.channel_ok(args.get(i), literal) {
                    return Err(Denied::Channel(i as u32));
                }
            }
        }
        self.script_check(spec)
    }

    /// After Redis's own checks passed: a script or function call by a
    /// user limited in commands, keys or channels is refused
    /// ([`Denied::Script`]).
    fn script_check(&self, spec: &CommandSpec) -> Result<(), Denied> {
        if runs_script(spec) && !self.unrestricted() {
            return Err(Denied::Script);
        }
        Ok(())
    }

    /// Whether every key may be read (`~*`, `allkeys`, or `%R~*`), as
    /// Redis's `ACLUserCheckCmdWithUnrestrictedKeyAccess` asks for `SORT`'s
    /// `BY` and `GET`.
    pub fn reads_every_key(&self) -> bool {
        self.all_keys || self.keys.iter().any(|p| p.read && &*p.pattern == b"*")
    }

    /// `SORT … BY pattern` (with a `*`) or `SORT … GET` by a user who may not
    /// read every key: the option Redis refuses (`BY` or `GET`).
    pub fn sort_option_denied(&self, spec: &CommandSpec, args: &Args<'_>) -> Option<&'static str> {
        if !matches!(spec.name, "sort" | "sort_ro") || self.reads_every_key() {
            return None;
        }
        let mut i = 2;
        while i < args.len() {
            let a = args.get(i);
            let more = i + 1 < args.len();
            if a.eq_ignore_ascii_case(b"limit") && i + 2 < args.len() {
                i += 3;
            } else if a.eq_ignore_ascii_case(b"by") && more {
                if args.get(i + 1).contains(&b'*') {
                    return Some("BY");
                }
                i += 2;
            } else if a.eq_ignore_ascii_case(b"get") && more {
                return Some("GET");
            } else if a.eq_ignore_ascii_case(b"store") && more {
                i += 2;
            } else {
                i += 1;
            }
        }
        None
    }

    /// Whether `key`, used as key spec flags `flags` say, matches a pattern
    /// that grants that use.
    #[inline]
    pub fn key_ok(&self, key: &[u8], flags: u16) -> bool {
        if self.all_keys {
            return true;
        }
        let read = flags & key_flag::ACCESS != 0;
        let write = flags & (key_flag::INSERT | key_flag::DELETE | key_flag::UPDATE) != 0;
        self.keys
            .iter()
            .any(|p| (p.read || !read) && (p.write || !write) && p.matches(key))
    }

    /// Whether the user may use `channel` (a pattern compared literally when
    /// `literal`).
    pub fn channel_ok(&self, channel: &[u8], literal: bool) -> bool {
        self.all_channels
            || self.channels.iter().any(|c| {
                if literal {
                    **c == *channel
                } else {
                    glob_match(c, channel, false)
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use keyway_protocol::command::{lookup, Lookup};
    use keyway_protocol::resp::Span;

    use super::*;

    fn check(rules: &str, words: &[&str]) -> Result<(), Denied> {
        let u = User::parse("u", rules).unwrap();
        let mut buf = Vec::new();
        let mut spans = Vec::new();
        for w in words {
            spans.push(Span::new(buf.len(), w.len()));
            buf.extend_from_slice(w.as_bytes());
        }
        let args = Args::new(&buf, &spans);
        let spec = match lookup(words[0].as_bytes(), words.get(1).map(|w| w.as_bytes())) {
            Lookup::Found(s) => s,
            other => panic!("{words:?}: {other:?}"),
        };
        u.check(spec, &args, &mut Vec::new())
    }

    #[test]
    fn commands() {
        assert_eq!(
            check("+@all -@dangerous", &["flushall"]),
            Err(Denied::Command)
        );
        assert_eq!(check("+@all -@dangerous ~*", &["get", "k"]), Ok(()));
        assert_eq!(
            check("-@all", &["auth", "a", "b"]),
            Ok(()),
            "AUTH is no-auth"
        );
        assert_eq!(check("+@read ~*", &["set", "k", "v"]), Err(Denied::Command));
    }

    #[test]
    fn keys_match_patterns() {
        let r = "+@all ~app:*";
        assert_eq!(check(r, &["get", "app:1"]), Ok(()));
        assert_eq!(check(r, &["get", "x"]), Err(Denied::Key(1)));
        assert_eq!(
            check(r, &["mset", "app:1", "v", "x", "v"]),
            Err(Denied::Key(3))
        );
        assert_eq!(check(r, &["eval", "s", "1", "x"]), Err(Denied::Key(3)));
        assert_eq!(check(r, &["eval", "s", "1", "app:1"]), Err(Denied::Script));
        assert_eq!(check(r, &["ping"]), Ok(()));
        let r = "+@all ~[a-c]\\?*";
        assert_eq!(check(r, &["get", "b?x"]), Ok(()));
        assert_eq!(check(r, &["get", "bax"]), Err(Denied::Key(1)));
    }

    #[test]
    fn only_unrestricted_users_run_scripts() {
        // A script's own calls are out of keyway's sight: a user limited
        // in commands, keys or channels may not run one at all.
        for r in [
            "+@all ~app:* &*",
            "+@all ~* &chat:*",
            "+@all -@dangerous ~* &*",
        ] {
            for cmd in [
                &["eval", "return 1", "0"][..],
                &["evalsha_ro", "abc", "0"],
                &["fcall", "f", "0"],
                &["fcall_ro", "f", "0"],
            ] {
                assert_eq!(check(r, cmd), Err(Denied::Script), "{r}: {cmd:?}");
            }
            assert_eq!(check(r, &["script", "load", "return 1"]), Ok(()), "{r}");
            for cmd in [
                &["function", "load", "x"][..],
                &["function", "delete", "lib"],
                &["function", "flush"],
                &["function", "restore", "x"],
                &["script", "flush"],
            ] {
                assert_eq!(check(r, cmd), Err(Denied::Script), "{r}: {cmd:?}");
            }
            assert_eq!(check(r, &["function", "list"]), Ok(()), "{r}");
        }
        assert_eq!(check("+@all ~* &*", &["eval", "return 1", "0"]), Ok(()));
        assert_eq!(
            check("+@all -eval ~app:*", &["eval", "return 1", "0"]),
            Err(Denied::Command),
            "the command's own rule first"
        );
    }

    #[test]
    fn read_and_write_patterns() {
        let r = "+@all %R~r:* %W~w:*";
        assert_eq!(check(r, &["get", "r:1"]), Ok(()));
        assert_eq!(check(r, &["set", "r:1", "v"]), Err(Denied::Key(1)));
        assert_eq!(check(r, &["set", "w:1", "v"]), Ok(()));
        assert_eq!(check(r, &["get", "w:1"]), Err(Denied::Key(1)));
        assert_eq!(check(r, &["copy", "r:1", "w:2"]), Ok(()));
        assert_eq!(check(r, &["copy", "w:1", "r:2"]), Err(Denied::Key(1)));
        // `EXISTS` neither reads nor writes the value: any pattern will do.
        assert_eq!(check(r, &["exists", "w:1"]), Ok(()));
        // Flags that vary with the arguments: `SET … GET` reads too.
        assert_eq!(check(r, &["set", "w:1", "v", "get"]), Err(Denied::Key(1)));
        assert_eq!(check(r, &["set", "w:1", "v", "nx"]), Ok(()));
        assert_eq!(check(r, &["bitfield", "r:1", "get", "u8", "0"]), Ok(()));
        assert_eq!(
            check(r, &["bitfield", "r:1", "set", "u8", "0", "1"]),
            Err(Denied::Key(1))
        );
        // A pattern granting every use passes without the spec walk, the
        // same answer the walk gives; a key outside every pattern fails.
        let rw = "+@all ~k*";
        for cmd in [
            &["set", "k1", "v"][..],
            &["set", "k1", "v", "get"],
            &["bitfield", "k1", "set", "u8", "0", "1"],
        ] {
            assert_eq!(check(rw, cmd), Ok(()), "{cmd:?}");
            let mut other = cmd.to_vec();
            other[1] = "x1";
            assert_eq!(check(rw, &other), Err(Denied::Key(1)), "{other:?}");
        }
    }

    #[test]
    fn channels() {
        let r = "+@all ~* resetchannels &chat:*";
        assert_eq!(check(r, &["publish", "chat:1", "m"]), Ok(()));
        assert_eq!(check(r, &["publish", "x", "m"]), Err(Denied::Channel(1)));
        assert_eq!(
            check(r, &["subscribe", "chat:a", "x"]),
            Err(Denied::Channel(2))
        );
        assert_eq!(check(r, &["psubscribe", "chat:*"]), Ok(()));
        assert_eq!(
            check(r, &["psubscribe", "chat:a*"]),
            Err(Denied::Channel(1))
        );
        assert_eq!(check(r, &["ssubscribe", "x"]), Err(Denied::Channel(1)));
        assert_eq!(check(r, &["spublish", "chat:1", "m"]), Ok(()));
        assert_eq!(check(r, &["unsubscribe", "x"]), Ok(()));
        assert_eq!(check("+@all ~* &*", &["publish", "x", "m"]), Ok(()));
    }

    #[test]
    fn sort_patterns_are_options_not_keys() {
        let r = "+@all ~app:*";
        assert_eq!(check(r, &["sort", "app:1", "BY", "app:w_*"]), Ok(()));
        assert_eq!(
            check(r, &["sort", "app:1", "STORE", "x"]),
            Err(Denied::Key(3))
        );
        let u = User::parse("u", r).unwrap();
        let spans = |w: &[&str]| -> (Vec<u8>, Vec<keyway_protocol::resp::Span>) {
            let mut buf = Vec::new();
            let mut spans = Vec::new();
            for x in w {
                spans.push(keyway_protocol::resp::Span::new(buf.len(), x.len()));
                buf.extend_from_slice(x.as_bytes());
            }
            (buf, spans)
        };
        let sort = keyway_protocol::command::lookup::by_name(b"sort").unwrap();
        for (words, want) in [
            (&["sort", "app:1", "BY", "app:w_*"][..], Some("BY")),
            (&["sort", "app:1", "BY", "nosort"], None),
            (&["sort", "app:1", "GET", "#"], Some("GET")),
            (&["sort", "app:1", "LIMIT", "0", "1", "ALPHA"], None),
        ] {
            let (buf, sp) = spans(words);
            let args = Args::new(&buf, &sp);
            assert_eq!(u.sort_option_denied(sort, &args), want, "{words:?}");
        }
        let all = User::parse("u", "+@all %R~* %W~app:*").unwrap();
        let (buf, sp) = spans(&["sort", "app:1", "GET", "x_*"]);
        assert_eq!(all.sort_option_denied(sort, &Args::new(&buf, &sp)), None);
    }
}
