//! The `ACL` subcommands keyway answers about its own users, in Redis 7.0's
//! formats (RESP2 and RESP3): `WHOAMI`, `CAT`, `USERS`, `LIST`, `GETUSER`,
//! `DRYRUN`, `LOG`, `GENPASS`, `HELP`. `SETUSER`, `DELUSER`, `LOAD` and
//! `SAVE` are refused (`engine::policy`): users come from the config file or
//! keyway-ctld's snapshot.

use std::io::Read as _;
use std::time::Instant;

use keyway_protocol::command::{self, Lookup};
use keyway_protocol::resp::{encode, Args};

use super::client::ClientState;
use super::policy::AclSub;
use super::replies::Refusal;
use super::Ctx;
use crate::acl::{category_by_name, Denied, User, CATEGORIES};

/// Redis 7.0's `ACL HELP`.
const HELP: &[&str] = &[
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CAT [<category>]",
    "    List all commands that belong to <category>, or all command categories",
    "    when no category is specified.",
    "DELUSER <username> [<username> ...]",
    "    Delete a list of users.",
    "DRYRUN <username> <command> [<arg> ...]",
    "    Returns whether the user can execute the given command without executing the command.",
    "GETUSER <username>",
    "    Get the user's details.",
    "GENPASS [<bits>]",
    "    Generate a secure 256-bit user password. The optional `bits` argument can",
    "    be used to specify a different size.",
    "LIST",
    "    Show users details in config file format.",
    "LOAD",
    "    Reload users from the ACL file.",
    "LOG [<count> | RESET]",
    "    Show the ACL log entries.",
    "SAVE",
    "    Save the current config to the ACL file.",
    "SETUSER <username> <attribute> [<attribute> ...]",
    "    Create or modify a user with the specified attributes.",
    "USERS",
    "    List all the registered usernames.",
    "WHOAMI",
    "    Return the current connection username.",
    "HELP",
    "    Prints this help.",
];

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn bulks<'a>(o: &mut Vec<u8>, items: impl ExactSizeIterator<Item = &'a [u8]>) {
    encode::array_header(o, items.len());
    for i in items {
        encode::bulk(o, i);
    }
}

impl Ctx {
    /// Answers `ACL sub …`; arity has been checked.
    pub(super) fn acl_command(&mut self, sub: AclSub, st: &mut ClientState, args: &Args<'_>) {
        let r3 = st.resp3;
        let n = args.len();
        let users = self.cfg.users.clone();
        match sub {
            AclSub::WhoAmI => {
                let name = st.user.name.clone();
                st.reply(|o| encode::bulk(o, name.as_bytes()));
            }
            AclSub::Users => st.reply(|o| bulks(o, users.iter().map(|u| u.name.as_bytes()))),
            AclSub::List => {
                let lines: Vec<String> = users.iter().map(|u| u.describe()).collect();
                st.reply(|o| bulks(o, lines.iter().map(|l| l.as_bytes())));
            }
            AclSub::Help => st.reply(|o| {
                encode::array_header(o, HELP.len());
                for l in HELP {
                    encode::simple(o, l.as_bytes());
                }
            }),
            AclSub::Cat if n == 2 => {
                st.reply(|o| bulks(o, CATEGORIES.iter().map(|(c, _)| c.as_bytes())))
            }
            AclSub::Cat if n == 3 => match category_by_name(args.get(2)) {
                None => st.refuse(&Refusal::UnknownCategory { name: args.get(2) }),
                Some(bit) => {
                    let names: Vec<&str> = command::all()
                        .filter(|c| c.in_category(bit))
                        .map(|c| c.name)
                        .collect();
                    st.reply(|o| bulks(o, names.iter().map(|n| n.as_bytes())));
                }
            },
            AclSub::GetUser => match users.get(args.get(2)) {
                None => st.reply(|o| encode::null_of(o, r3)),
                Some(u) => st.reply(|o| getuser(o, u, r3)),
            },
            AclSub::DryRun => dry_run(st, args, &users, &mut self.scratch.acl_keys),
            AclSub::Log if n <= 3 => {
                let count = match args.try_get(2) {
                    None => 10,
                    Some(a) if a.eq_ignore_ascii_case(b"reset") => {
                        if let Ok(mut log) = self.shared.acl_log.lock() {
                            log.reset();
                        }
                        return st.reply(|o| encode::simple(o, b"OK"));
                    }
                    Some(a) => match parse_i64(a) {
                        Some(c) => c.max(0) as usize,
                        None => return st.refuse(&Refusal::NotAnInteger),
                    },
                };
                let mut out = Vec::new();
                if let Ok(log) = self.shared.acl_log.lock() {
                    log.write(&mut out, count, r3, Instant::now());
                }
                st.reply(|o| o.extend_from_slice(&out));
            }
            AclSub::GenPass if n <= 3 => {
                let bits = match args.try_get(2).map(parse_i64) {
                    None => 256,
                    Some(None) => return st.refuse(&Refusal::NotAnInteger),
                    Some(Some(b)) if b <= 0 || b > 4096 => return st.refuse(&Refusal::GenpassBits),
                    Some(Some(b)) => b as usize,
                };
                match genpass(bits) {
                    Ok(p) => st.reply(|o| encode::bulk(o, p.as_bytes())),
                    Err(e) => {
                        tracing::error!("ACL GENPASS: cannot read /dev/urandom: {e}");
                        st.refuse(&Refusal::Syntax)
                    }
                }
            }
            AclSub::Cat | AclSub::Log | AclSub::GenPass => {
                st.refuse(&Refusal::AclSubcommandSyntax { sub: args.get(1) })
            }
        }
    }
}

/// `ACL GETUSER`'s reply.
fn getuser(o: &mut Vec<u8>, u: &User, r3: bool) {
    encode::map_header(o, 6, r3);
    encode::bulk(o, b"flags");
    let flags = u.flags();
    encode::set_header(o, flags.len(), r3);
    for f in flags {
        encode::bulk(o, f.as_bytes());
    }
    encode::bulk(o, b"passwords");
    let hashes = u.password_hashes();
    bulks(o, hashes.iter().map(|h| h.as_bytes()));
    for (k, v) in [
        ("commands", u.commands_text()),
        ("keys", u.keys_text()),
        ("channels", u.channels_text()),
    ] {
        encode::bulk(o, k.as_bytes());
        encode::bulk(o, v.as_bytes());
    }
    encode::bulk(o, b"selectors");
    encode::array_header(o, 0);
}

/// `ACL DRYRUN user command arg…`: `+OK`, or why not as a bulk string.
fn dry_run(
    st: &mut ClientState,
    args: &Args<'_>,
    users: &crate::acl::Users,
    keys: &mut Vec<(u32, u16)>,
) {
    let Some(user) = users.get(args.get(2)) else {
        return st.refuse(&Refusal::UserNotFound { name: args.get(2) });
    };
    let sub = Args::new(args.buf(), &args.spans()[3..]);
    let spec = match command::lookup(sub.get(0), sub.try_get(1)) {
        Lookup::Found(c) => c,
        _ => return st.refuse(&Refusal::CommandNotFound { name: sub.get(0) }),
    };
    if !spec.arity_ok(sub.len()) {
        return st.refuse(&Refusal::WrongArity { command: spec.name });
    }
    let why = match user.check(spec, &sub, keys) {
        Ok(()) => return st.reply(|o| encode::simple(o, b"OK")),
        Err(Denied::Command) => {
            format!(
                "This user has no permissions to run the '{}' command",
                spec.name
            )
        }
        Err(Denied::Script) => format!(
            "This user has no permissions to run the '{}' command: keyway cannot check what \
             a script runs, so only users with every command, key and channel may run scripts",
            spec.name
        ),
        Err(Denied::Key(i)) => format!(
            "This user has no permissions to access the '{}' key",
            String::from_utf8_lossy(sub.get(i as usize))
        ),
        Err(Denied::Channel(i)) => format!(
            "This user has no permissions to access the '{}' channel",
            String::from_utf8_lossy(sub.get(i as usize))
        ),
    };
    st.reply(|o| encode::bulk(o, why.as_bytes()));
}

/// `bits` random bits as hex (rounded up to a whole digit), from the
/// kernel's random source, as Redis's `ACL GENPASS`.
fn genpass(bits: usize) -> std::io::Result<String> {
    let chars = bits.div_ceil(4);
    let mut raw = vec![0u8; chars.div_ceil(2)];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    let mut s = String::with_capacity(chars + 1);
    for b in raw {
        s.push_str(&format!("{b:02x}"));
    }
    s.truncate(chars);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genpass_lengths() {
        assert_eq!(genpass(256).unwrap().len(), 64);
        assert_eq!(genpass(32).unwrap().len(), 8);
        assert_eq!(genpass(5).unwrap().len(), 2);
        assert!(genpass(4096)
            .unwrap()
            .bytes()
            .all(|b| b.is_ascii_hexdigit()));
        assert_ne!(genpass(128).unwrap(), genpass(128).unwrap());
    }
}
