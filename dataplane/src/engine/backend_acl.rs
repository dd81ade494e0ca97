//! Which backend identity each command runs as, and the ACL rules of the
//! restricted backend user that keyway's client traffic authenticates as,
//! both derived from keyway's own [`policy`] table so that they cannot
//! drift apart.
//!
//! A script runs with the rights of the connection that calls it, and Redis
//! cannot tell a command a script calls from one a client sends. So every
//! backend connection authenticates as a *client* user (`[backend]
//! username`) that may run exactly what keyway forwards for its clients,
//! and nothing keyway refuses (`MIGRATE`, `SWAPDB`, `SELECT`, `DEBUG`,
//! `SHUTDOWN`, …): a one-key `EVAL` calling `redis.call('FLUSHDB')` gets
//! Redis's own `NOPERM` error. The administrative and dangerous commands
//! keyway itself fans out on purpose (`FLUSHALL`, `FLUSHDB`, `KEYS`,
//! `INFO`, `CONFIG`, `SLOWLOG`, `LATENCY`, `LASTSAVE`, `MONITOR`) and the
//! `MIGRATE`s of key moves run as the *admin* user: keyway switches the
//! connection with `AUTH admin …` just before the command and back with
//! `AUTH client …` just after, in the same write, so that no script of that
//! connection ever runs in between and the connection's order is kept
//! ([`Identity::Maintenance`], `Backends::elevate`).
//!
//! The client user is also allowed the few commands keyway sends on its
//! own connections: `AUTH`, `HELLO` (RESP3 connections), `PING` (probes of
//! a failing backend), `CLIENT ID` and `CLIENT UNBLOCK` (dedicated
//! connections of blocking commands). Scripts cannot call any of them but
//! `PING` (they are `noscript`).

use std::sync::OnceLock;

use keyway_protocol::command::{acl, all, flag, CommandSpec, COMMAND_IDS};

use super::policy::{policy, Policy};

/// The backend identity a command runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// The client (restricted) user: allowed by its rules.
    Client,
    /// The admin user, switched to around the command: denied to the client
    /// user.
    Maintenance,
    /// Keyway never sends it to a backend: denied to the client user.
    Never,
}

/// Commands keyway answers itself but sends on its own connections.
const INTERNAL: &[&str] = &["auth", "hello", "ping", "client|id", "client|unblock"];

fn decide(c: &CommandSpec) -> Identity {
    if !c.subcommands.is_empty() {
        // A container: its subcommands are decided one by one.
        return Identity::Never;
    }
    let admin = c.has(flag::ADMIN) || c.in_category(acl::ADMIN) || c.in_category(acl::DANGEROUS);
    match policy(c) {
        Policy::Route { .. }
        | Policy::Split(_)
        | Policy::Scripts(_)
        | Policy::Tx(_)
        | Policy::Block(_)
        | Policy::Wait
        | Policy::Kill
        | Policy::PubSub(_) => Identity::Client,
        Policy::FanOut(_)
        | Policy::Keyspace(_)
        | Policy::Server(_)
        | Policy::Diag(_)
        | Policy::Monitor => match admin {
            true => Identity::Maintenance,
            false => Identity::Client,
        },
        Policy::Local(_) if INTERNAL.contains(&c.name) => Identity::Client,
        Policy::Local(_) | Policy::Unsupported(_) => Identity::Never,
    }
}

/// The identity command `c` runs as.
#[inline]
pub fn identity(c: &CommandSpec) -> Identity {
    static TABLE: OnceLock<Vec<Identity>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = vec![Identity::Never; COMMAND_IDS];
        for c in all() {
            t[usize::from(c.id)] = decide(c);
        }
        t
    });
    table[usize::from(c.id)]
}

/// The command rules of the client user, for `ACL SETUSER`: `-@all`, then
/// `+name` (`+container|sub` for a subcommand) for each command it may run.
pub fn client_user_rules() -> String {
    let mut rules = String::from("-@all");
    for c in all().filter(|c| identity(c) == Identity::Client) {
        rules.push_str(" +");
        rules.push_str(c.name);
    }
    rules
}

/// The whole `ACL SETUSER` argument list after the user name, but the
/// password: the user is reset, enabled, has its `RESTORE` payloads
/// sanitized (`sanitize-payload`: a corrupt `DUMP` payload from a client is
/// refused with `-ERR Bad data format` rather than stored, wherever the
/// server's `sanitize-dump-payload` is `clients`; Redis 7.0's `reset`
/// implies it, named here so that it does not rest on that), may use every
/// key and channel, and runs [`client_user_rules`]. The password is added as
/// `>password`.
pub fn client_user_setuser() -> String {
    format!("reset on sanitize-payload ~* &* {}", client_user_rules())
}

#[cfg(test)]
mod tests {
    use keyway_protocol::command::{lookup, Lookup};

    use super::*;

    fn spec(name: &str) -> &'static CommandSpec {
        let (cmd, sub) = match name.split_once('|') {
            Some((c, s)) => (c, Some(s)),
            None => (name, None),
        };
        match lookup(cmd.as_bytes(), sub.map(str::as_bytes)) {
            Lookup::Found(c) => c,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn allowed(rules: &str, name: &str) -> bool {
        rules.split(' ').any(|r| r.strip_prefix('+') == Some(name))
    }

    #[test]
    fn the_client_user_may_run_what_keyway_forwards_and_nothing_it_refuses() {
        let rules = client_user_rules();
        assert!(rules.starts_with("-@all +"), "{rules}");
        for c in all().filter(|c| c.subcommands.is_empty()) {
            let p = policy(c);
            let forwarded = matches!(
                p,
                Policy::Route { .. }
                    | Policy::Split(_)
                    | Policy::Scripts(_)
                    | Policy::Tx(_)
                    | Policy::Block(_)
                    | Policy::Wait
                    | Policy::Kill
                    | Policy::PubSub(_)
            );
            if forwarded {
                assert!(allowed(&rules, c.name), "{}: forwarded, so allowed", c.name);
            }
            if let Policy::Unsupported(_) = p {
                assert!(!allowed(&rules, c.name), "{}: refused, so denied", c.name);
            }
            if identity(c) == Identity::Maintenance {
                assert!(
                    !allowed(&rules, c.name),
                    "{}: run as the admin user only",
                    c.name
                );
                assert!(
                    c.has(flag::ADMIN)
                        || c.in_category(acl::ADMIN)
                        || c.in_category(acl::DANGEROUS),
                    "{}: only administrative or dangerous commands need the admin user",
                    c.name
                );
            }
            if let (Policy::Local(_), true) = (p, allowed(&rules, c.name)) {
                assert!(
                    c.has(flag::NOSCRIPT) || c.name == "ping",
                    "{}: keyway's own commands allowed must be out of scripts' reach",
                    c.name
                );
            }
        }
    }

    #[test]
    fn what_the_issue_names_is_denied_and_everyday_traffic_allowed() {
        let rules = client_user_rules();
        for denied in [
            "flushdb",
            "flushall",
            "swapdb",
            "migrate",
            "keys",
            "move",
            "select",
            "config|set",
            "config|get",
            "debug",
            "shutdown",
            "replicaof",
            "acl|setuser",
            "client|kill",
            "monitor",
            "info",
        ] {
            assert!(!allowed(&rules, denied), "{denied} must be denied");
        }
        for ok in [
            "get",
            "set",
            "mget",
            "del",
            "eval",
            "evalsha",
            "fcall",
            "script|load",
            "script|kill",
            "function|kill",
            "function|load",
            "subscribe",
            "publish",
            "multi",
            "exec",
            "watch",
            "blpop",
            "restore",
            "scan",
            "dbsize",
            "auth",
            "hello",
            "ping",
            "client|id",
            "client|unblock",
        ] {
            assert!(allowed(&rules, ok), "{ok} must be allowed");
        }
        for (name, who) in [
            ("flushall", Identity::Maintenance),
            ("keys", Identity::Maintenance),
            ("info", Identity::Maintenance),
            ("config|set", Identity::Maintenance),
            ("slowlog|get", Identity::Maintenance),
            ("monitor", Identity::Maintenance),
            ("migrate", Identity::Never),
            ("dbsize", Identity::Client),
            ("get", Identity::Client),
        ] {
            assert_eq!(identity(spec(name)), who, "{name}");
        }
        assert!(client_user_setuser().starts_with("reset on sanitize-payload ~* &* -@all +"));
    }

    #[test]
    fn shared_copy_of_the_rules() {
        // keywayctl (which depends on the shared crate only) provisions
        // with this copy.
        let copy = keyway_capnp::backend_acl::CLIENT_USER_SETUSER;
        let want = client_user_setuser();
        if copy != want {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../capnp/src/backend_acl.rs");
            if std::env::var_os("KEYWAY_BLESS").is_some() {
                let text = std::fs::read_to_string(path).unwrap();
                std::fs::write(path, text.replace(copy, &want)).unwrap();
            } else {
                panic!(
                    "capnp/src/backend_acl.rs is stale: run \
                     `KEYWAY_BLESS=1 cargo test -p keyway --lib shared_copy_of_the_rules`"
                );
            }
        }
    }
}
