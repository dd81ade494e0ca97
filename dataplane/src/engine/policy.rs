//! How keyway serves each Redis command: routed by its keys, split across
//! groups, answered locally, fanned out, or refused with a reason. Decided once
//! per command from the generated table's flags and categories plus the few
//! rules below; looked up per request by command id.

use std::sync::OnceLock;

use keyway_protocol::command::{acl, all, flag, Begin, CommandSpec, Find, KeySpec, COMMAND_IDS};

use super::blocking::Blocking;
use super::diag::DiagCmd;
use super::pubsub::{Kind, PubSubCmd};
use super::split::SplitKind;
use super::tracking::TrackingCmd;

/// Commands keyway answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// `PING [message]`.
    Ping,
    /// `ECHO message`.
    Echo,
    /// `QUIT`.
    Quit,
    /// `SELECT db` (only 0).
    Select,
    /// `HELLO [protover …]`.
    Hello,
    /// `AUTH …`.
    Auth,
    /// `RESET`.
    Reset,
    /// `ROLE`: keyway is a master without replicas of its own.
    Role,
    /// `COMMAND` and its subcommands.
    Command(CommandSub),
    /// `CLIENT` subcommands a proxy can answer truthfully.
    Client(ClientSub),
    /// `TIME`: keyway's own clock (see `engine::keyspace`).
    Time,
    /// `CLIENT TRACKING|CACHING|GETREDIR|TRACKINGINFO` (see
    /// `engine::tracking`).
    Tracking(TrackingCmd),
    /// `ACL` subcommands about keyway's own users (see `engine::acl_cmd`).
    Acl(AclSub),
}

/// `ACL` subcommands keyway answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclSub {
    /// `ACL WHOAMI`.
    WhoAmI,
    /// `ACL CAT [category]`.
    Cat,
    /// `ACL USERS`.
    Users,
    /// `ACL LIST`.
    List,
    /// `ACL GETUSER name`.
    GetUser,
    /// `ACL DRYRUN user command arg…`.
    DryRun,
    /// `ACL LOG [count | RESET]`.
    Log,
    /// `ACL GENPASS [bits]`.
    GenPass,
    /// `ACL HELP`.
    Help,
}

/// `COMMAND` subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandSub {
    /// `COMMAND`.
    All,
    /// `COMMAND COUNT`.
    Count,
    /// `COMMAND INFO [name …]`.
    Info,
    /// `COMMAND DOCS [name …]`.
    Docs,
    /// `COMMAND LIST [FILTERBY …]`.
    List,
    /// `COMMAND GETKEYS command arg …`.
    GetKeys,
    /// `COMMAND HELP`.
    Help,
}

/// `CLIENT` subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSub {
    /// `CLIENT SETNAME name`.
    SetName,
    /// `CLIENT GETNAME`.
    GetName,
    /// `CLIENT ID`.
    Id,
    /// `CLIENT INFO`.
    Info,
    /// `CLIENT HELP`.
    Help,
    /// `CLIENT LIST [TYPE t | ID id…]`: every core's clients.
    List,
    /// `CLIENT KILL ip:port | filter value…`: on every core.
    Kill,
    /// `CLIENT PAUSE timeout [WRITE|ALL]`: on every core.
    Pause,
    /// `CLIENT UNPAUSE`: on every core.
    Unpause,
    /// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`: wherever the client is.
    Unblock,
    /// `CLIENT REPLY ON|OFF|SKIP`.
    Reply,
    /// `CLIENT NO-EVICT on|off`.
    NoEvict,
}

impl ClientSub {
    /// Whether it looks at the clients of every core (served by
    /// `engine::clients` through the mailbox, not by `engine::local`).
    pub fn cross_core(self) -> bool {
        matches!(
            self,
            ClientSub::List
                | ClientSub::Kill
                | ClientSub::Pause
                | ClientSub::Unpause
                | ClientSub::Unblock
        )
    }
}

/// Script and function management (see `engine::scripts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptCmd {
    /// `SCRIPT LOAD`: every group, the body remembered.
    Load,
    /// `SCRIPT EXISTS`: every group, 1 where every group has it.
    Exists,
    /// `SCRIPT FLUSH`: every group, keyway forgets the bodies too.
    Flush,
    /// `FUNCTION LOAD`: every group, undone where it succeeded if it
    /// failed elsewhere (without `REPLACE`).
    FunctionLoad,
    /// `FUNCTION DELETE|FLUSH|RESTORE`: every group.
    EveryGroup,
    /// `FUNCTION LIST|DUMP|STATS`, `SCRIPT HELP`, `FUNCTION HELP`, and
    /// keyless commands whose reply is the same on every group (`OBJECT
    /// HELP`, `XINFO HELP`, `LOLWUT`, …): the documented group (the owner of
    /// slot 0).
    DocumentedGroup,
}

/// Keyspace-wide commands served over every group (see `engine::keyspace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyspaceCmd {
    /// `SCAN cursor …`: one group at a time, the cursor naming the group.
    Scan,
    /// `RANDOMKEY`: every group asked, one key picked.
    RandomKey,
    /// `FLUSHALL`, `FLUSHDB`: on every group, `+OK` when all did.
    Flush,
}

/// Server introspection and administration over every group (see
/// `engine::info`, `engine::config_cmd`, `engine::slowlog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCmd {
    /// `INFO [section …]`: keyway's own sections merged with the groups'.
    Info,
    /// `CONFIG GET pattern…`: the documented group plus `keyway-*`.
    ConfigGet,
    /// `CONFIG SET p v…`: every group, undone where it succeeded if a
    /// group refused.
    ConfigSet,
    /// `CONFIG RESETSTAT`: every group and keyway's counters.
    ConfigResetStat,
    /// `CONFIG HELP`.
    ConfigHelp,
    /// `SLOWLOG GET [n]`: every group's entries merged by time.
    SlowlogGet,
    /// `SLOWLOG LEN`: the sum over groups.
    SlowlogLen,
    /// `SLOWLOG RESET`: every group.
    SlowlogReset,
    /// `SLOWLOG HELP`.
    SlowlogHelp,
}

/// Transaction commands (see [`super::stateful`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxCmd {
    /// `MULTI`.
    Multi,
    /// `EXEC`.
    Exec,
    /// `DISCARD`.
    Discard,
    /// `WATCH key…`.
    Watch,
    /// `UNWATCH`.
    Unwatch,
}

/// What a routed command's arguments are looked at for before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteCheck {
    /// Nothing.
    None,
    /// The command blocks when given a `BLOCK` option (`XREAD`,
    /// `XREADGROUP`): it is then served as a [`Policy::Block`].
    StreamBlock,
    /// `COPY … DB n`: a database other than 0 is refused (keyway serves
    /// database 0 only; a key copied elsewhere would be out of its sight).
    CopyDb,
}

/// Where a routed command's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Exactly one key, the first argument (`GET k`, `SET k v`, `INCR k`, …):
    /// no key-spec walk.
    First,
    /// Wherever the key specs say.
    Specs,
}

/// How a command is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Forwarded whole to the group owning its keys; all keys must share a group
    /// (else `-CROSSSLOT`).
    Route {
        /// Where the keys are.
        keys: Keys,
        /// Why a call without keys cannot be served.
        keyless: &'static str,
        /// An option looked at before routing (see [`RouteCheck`]).
        check: RouteCheck,
    },
    /// Split by group and merged (`MGET`, `MSET`, `DEL`, …).
    Split(SplitKind),
    /// Sent to every group and merged (`DBSIZE`).
    FanOut(SplitKind),
    /// Script and function management.
    Scripts(ScriptCmd),
    /// A transaction command.
    Tx(TxCmd),
    /// A keyspace-wide command (`SCAN`, `RANDOMKEY`, `FLUSHALL`, …).
    Keyspace(KeyspaceCmd),
    /// A blocking command, routed by its keys to a dedicated connection.
    Block(Blocking),
    /// `WAIT`, on the groups the client wrote to.
    Wait,
    /// `SCRIPT KILL`, `FUNCTION KILL`: on every group, each on a connection
    /// of its own (the shared one may be the one running the script).
    Kill,
    /// Answered by keyway.
    Local(Local),
    /// `INFO`, `CONFIG`, `SLOWLOG`: keyway's own answer merged with every
    /// group's.
    Server(ServerCmd),
    /// Pub/Sub, served by [`super::pubsub`].
    PubSub(PubSubCmd),
    /// `MONITOR`: a `MONITOR` connection per group, merged (see
    /// [`super::monitor`]).
    Monitor,
    /// `LATENCY …` and `MEMORY …` but `MEMORY USAGE` (routed by its key):
    /// fanned out and merged, or the documented group's (see
    /// [`super::diag`]).
    Diag(DiagCmd),
    /// Refused: the reason completes "keyway does not support 'X': …".
    Unsupported(&'static str),
}

const KEYLESS: &str = "commands without keys cannot be routed to a group";
/// A script or function call without keys goes to the documented group
/// (`engine::scripts::documented_group`); this reason is never shown.
const SCRIPT_KEYLESS: &str = "scripts without keys run on the group owning slot 0";
const TRANSACTIONS: &str = "this transaction command is not supported";
const PUBSUB: &str = "this Pub/Sub command is not supported";
const BLOCKING: &str = "this blocking command is not supported";
const CLUSTER: &str = "keyway is not a Redis Cluster node; use it as one Redis server";
const ADMIN: &str = "server administration commands must be sent to each Redis server directly";
const REWRITE: &str = "keyway does not rewrite the groups' config files; run CONFIG REWRITE on \
                       each Redis server directly (keyway's own settings live in its config file \
                       or the control plane's snapshot)";
const ACL: &str = "keyway's users come from its config file ([[user]]) or keyway-ctld's \
                   snapshot, and change on reload; the groups' ACLs are administered on each \
                   Redis server directly";
const SCRIPT_DEBUG: &str = "script debugging needs a backend connection of its own";

fn decide(c: &CommandSpec) -> Policy {
    let local = |l| Policy::Local(l);
    match c.name {
        "ping" => return local(Local::Ping),
        "echo" => return local(Local::Echo),
        "quit" => return local(Local::Quit),
        "select" => return local(Local::Select),
        "hello" => return local(Local::Hello),
        "auth" => return local(Local::Auth),
        "reset" => return local(Local::Reset),
        "role" => return local(Local::Role),
        "info" => return Policy::Server(ServerCmd::Info),
        "config|get" => return Policy::Server(ServerCmd::ConfigGet),
        "config|set" => return Policy::Server(ServerCmd::ConfigSet),
        "config|resetstat" => return Policy::Server(ServerCmd::ConfigResetStat),
        "config|rewrite" => return Policy::Unsupported(REWRITE),
        "config|help" => return Policy::Server(ServerCmd::ConfigHelp),
        "slowlog|get" => return Policy::Server(ServerCmd::SlowlogGet),
        "slowlog|len" => return Policy::Server(ServerCmd::SlowlogLen),
        "slowlog|reset" => return Policy::Server(ServerCmd::SlowlogReset),
        "slowlog|help" => return Policy::Server(ServerCmd::SlowlogHelp),
        "command" => return local(Local::Command(CommandSub::All)),
        "command|count" => return local(Local::Command(CommandSub::Count)),
        "command|info" => return local(Local::Command(CommandSub::Info)),
        "command|docs" => return local(Local::Command(CommandSub::Docs)),
        "command|list" => return local(Local::Command(CommandSub::List)),
        "command|getkeys" => return local(Local::Command(CommandSub::GetKeys)),
        "command|help" => return local(Local::Command(CommandSub::Help)),
        "command|getkeysandflags" => return Policy::Unsupported("use COMMAND GETKEYS"),
        "client|setname" => return local(Local::Client(ClientSub::SetName)),
        "client|getname" => return local(Local::Client(ClientSub::GetName)),
        "client|id" => return local(Local::Client(ClientSub::Id)),
        "client|info" => return local(Local::Client(ClientSub::Info)),
        "client|help" => return local(Local::Client(ClientSub::Help)),
        "client|tracking" => return local(Local::Tracking(TrackingCmd::Tracking)),
        "client|caching" => return local(Local::Tracking(TrackingCmd::Caching)),
        "client|getredir" => return local(Local::Tracking(TrackingCmd::GetRedir)),
        "client|trackinginfo" => return local(Local::Tracking(TrackingCmd::Info)),
        "client|list" => return local(Local::Client(ClientSub::List)),
        "client|kill" => return local(Local::Client(ClientSub::Kill)),
        "client|pause" => return local(Local::Client(ClientSub::Pause)),
        "client|unpause" => return local(Local::Client(ClientSub::Unpause)),
        "client|unblock" => return local(Local::Client(ClientSub::Unblock)),
        "client|reply" => return local(Local::Client(ClientSub::Reply)),
        "client|no-evict" => return local(Local::Client(ClientSub::NoEvict)),
        "acl|whoami" => return local(Local::Acl(AclSub::WhoAmI)),
        "acl|cat" => return local(Local::Acl(AclSub::Cat)),
        "acl|users" => return local(Local::Acl(AclSub::Users)),
        "acl|list" => return local(Local::Acl(AclSub::List)),
        "acl|getuser" => return local(Local::Acl(AclSub::GetUser)),
        "acl|dryrun" => return local(Local::Acl(AclSub::DryRun)),
        "acl|log" => return local(Local::Acl(AclSub::Log)),
        "acl|genpass" => return local(Local::Acl(AclSub::GenPass)),
        "acl|help" => return local(Local::Acl(AclSub::Help)),
        "mget" => return Policy::Split(SplitKind::Mget),
        "mset" => return Policy::Split(SplitKind::Mset),
        "del" | "unlink" | "exists" | "touch" => return Policy::Split(SplitKind::Sum),
        "dbsize" => return Policy::FanOut(SplitKind::Sum),
        "subscribe" => return Policy::PubSub(PubSubCmd::Subscribe(Kind::Channel)),
        "psubscribe" => return Policy::PubSub(PubSubCmd::Subscribe(Kind::Pattern)),
        "ssubscribe" => return Policy::PubSub(PubSubCmd::Subscribe(Kind::Shard)),
        "unsubscribe" => return Policy::PubSub(PubSubCmd::Unsubscribe(Kind::Channel)),
        "punsubscribe" => return Policy::PubSub(PubSubCmd::Unsubscribe(Kind::Pattern)),
        "sunsubscribe" => return Policy::PubSub(PubSubCmd::Unsubscribe(Kind::Shard)),
        "publish" | "spublish" => return Policy::PubSub(PubSubCmd::Publish),
        "pubsub|help" => return Policy::PubSub(PubSubCmd::Help),
        // Every group answers for its own channels (and every one for
        // the patterns keyway subscribes on all): see README, "Pub/Sub".
        "pubsub|channels" | "pubsub|shardchannels" => return Policy::FanOut(SplitKind::Union),
        "pubsub|numsub" | "pubsub|shardnumsub" => return Policy::FanOut(SplitKind::NumSub),
        "pubsub|numpat" => return Policy::FanOut(SplitKind::Max),
        "migrate" => return Policy::Unsupported("it would move keys behind keyway's back"),
        "move" | "swapdb" => return Policy::Unsupported("keyway serves database 0 only"),
        // Keyspace-wide: see `engine::keyspace` and README, "The whole
        // keyspace".
        "keys" => return Policy::FanOut(SplitKind::Union),
        "scan" => return Policy::Keyspace(KeyspaceCmd::Scan),
        "randomkey" => return Policy::Keyspace(KeyspaceCmd::RandomKey),
        "flushdb" | "flushall" => return Policy::Keyspace(KeyspaceCmd::Flush),
        "lastsave" => return Policy::FanOut(SplitKind::Min),
        "time" => return local(Local::Time),
        "multi" => return Policy::Tx(TxCmd::Multi),
        "exec" => return Policy::Tx(TxCmd::Exec),
        "discard" => return Policy::Tx(TxCmd::Discard),
        "watch" => return Policy::Tx(TxCmd::Watch),
        "unwatch" => return Policy::Tx(TxCmd::Unwatch),
        "wait" => return Policy::Wait,
        "monitor" => return Policy::Monitor,
        "blpop" | "brpop" | "blmove" | "brpoplpush" | "blmpop" | "bzpopmin" | "bzpopmax"
        | "bzmpop" => {
            if let Some(b) = Blocking::of(c.name) {
                return Policy::Block(b);
            }
        }
        "copy" => {
            return Policy::Route {
                keys: Keys::Specs,
                keyless: KEYLESS,
                check: RouteCheck::CopyDb,
            };
        }
        // XREAD/XREADGROUP are flagged blocking; only their BLOCK form is.
        "xread" | "xreadgroup" => {
            return Policy::Route {
                keys: Keys::Specs,
                keyless: KEYLESS,
                check: RouteCheck::StreamBlock,
            };
        }
        _ => {}
    }
    if let Some(d) = DiagCmd::of(c.name) {
        return Policy::Diag(d);
    }
    if c.name.starts_with("client|") || c.name == "client" {
        return Policy::Unsupported(
            "this CLIENT subcommand would describe keyway's backend connections, not yours",
        );
    }
    if c.name.starts_with("acl") {
        return Policy::Unsupported(ACL);
    }
    if c.name.starts_with("cluster") || matches!(c.name, "asking" | "readonly" | "readwrite") {
        return Policy::Unsupported(CLUSTER);
    }
    match c.name {
        "script|load" => return Policy::Scripts(ScriptCmd::Load),
        "script|exists" => return Policy::Scripts(ScriptCmd::Exists),
        "script|flush" => return Policy::Scripts(ScriptCmd::Flush),
        "function|load" => return Policy::Scripts(ScriptCmd::FunctionLoad),
        "function|delete" | "function|flush" | "function|restore" => {
            return Policy::Scripts(ScriptCmd::EveryGroup)
        }
        "function|list" | "function|dump" | "function|stats" | "function|help" | "script|help" => {
            return Policy::Scripts(ScriptCmd::DocumentedGroup)
        }
        // Keyless, the same on every group, harmless: Redis's own reply.
        "object|help" | "xinfo|help" | "xgroup|help" | "module|help" | "lolwut" | "pfselftest" => {
            return Policy::Scripts(ScriptCmd::DocumentedGroup)
        }
        "script|kill" | "function|kill" => return Policy::Kill,
        "script|debug" => return Policy::Unsupported(SCRIPT_DEBUG),
        _ => {}
    }
    if c.name.starts_with("script") || c.name.starts_with("function") {
        return Policy::Unsupported("this SCRIPT or FUNCTION form is not supported");
    }
    if c.in_category(acl::TRANSACTION) {
        return Policy::Unsupported(TRANSACTIONS);
    }
    if c.has(flag::PUBSUB) || c.in_category(acl::PUBSUB) {
        return Policy::Unsupported(PUBSUB);
    }
    if c.has(flag::BLOCKING) || c.in_category(acl::BLOCKING) {
        return Policy::Unsupported(BLOCKING);
    }
    if c.in_category(acl::SCRIPTING) && !c.key_specs.is_empty() {
        return Policy::Route {
            keys: Keys::Specs,
            keyless: SCRIPT_KEYLESS,
            check: RouteCheck::None,
        };
    }
    if c.key_specs.is_empty() {
        if c.has(flag::ADMIN) || c.in_category(acl::ADMIN) || c.in_category(acl::DANGEROUS) {
            return Policy::Unsupported(ADMIN);
        }
        return Policy::Unsupported(KEYLESS);
    }
    if c.has(flag::ADMIN) {
        return Policy::Unsupported(ADMIN);
    }
    let first_only = |k: &KeySpec| {
        k.begin == Begin::Index(1)
            && k.find
                == Find::Range {
                    lastkey: 0,
                    step: 1,
                    limit: 0,
                }
    };
    let keys = match c.key_specs {
        [only] if first_only(only) && c.arity.abs() >= 2 => Keys::First,
        _ => Keys::Specs,
    };
    Policy::Route {
        keys,
        keyless: KEYLESS,
        check: RouteCheck::None,
    }
}

/// The policy of `c`.
#[inline]
pub fn policy(c: &CommandSpec) -> Policy {
    static TABLE: OnceLock<Vec<Policy>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = vec![Policy::Unsupported(KEYLESS); COMMAND_IDS];
        for c in all() {
            t[usize::from(c.id)] = decide(c);
        }
        t
    });
    table[usize::from(c.id)]
}

/// The database a `COPY source destination [DB n] [REPLACE]` names, when it
/// is a number other than 0 (a value that is no number is left to Redis's
/// own error).
pub fn copy_to_other_db(args: &keyway_protocol::resp::Args<'_>) -> Option<i64> {
    let mut i = 3;
    let mut db = None;
    while i < args.len() {
        if args.get(i).eq_ignore_ascii_case(b"db") && i + 1 < args.len() {
            db = std::str::from_utf8(args.get(i + 1))
                .ok()
                .and_then(|t| t.parse::<i64>().ok());
            i += 2;
        } else {
            i += 1;
        }
    }
    db.filter(|&n| n != 0)
}

/// Whether an `XREAD`/`XREADGROUP` call blocks (has a `BLOCK` option before
/// `STREAMS`).
pub fn stream_read_blocks(args: &keyway_protocol::resp::Args<'_>) -> bool {
    super::blocking::stream_block_at(args).is_some()
}

#[cfg(test)]
mod tests {
    use keyway_protocol::command::{lookup, Lookup};

    use super::*;

    fn of(name: &str, sub: Option<&str>) -> Policy {
        match lookup(name.as_bytes(), sub.map(str::as_bytes)) {
            Lookup::Found(c) => policy(c),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn single_key_commands_skip_the_key_spec_walk() {
        for name in [
            "get", "set", "incr", "lpush", "hset", "zadd", "expire", "append",
        ] {
            assert!(
                matches!(
                    of(name, None),
                    Policy::Route {
                        keys: Keys::First,
                        ..
                    }
                ),
                "{name}"
            );
        }
        for name in ["rename", "eval", "lmove", "sort", "georadius", "xread"] {
            assert!(
                !matches!(
                    of(name, None),
                    Policy::Route {
                        keys: Keys::First,
                        ..
                    }
                ),
                "{name}"
            );
        }
        assert!(matches!(
            of("object", Some("encoding")),
            Policy::Route {
                keys: Keys::Specs,
                ..
            }
        ));
    }

    #[test]
    fn data_commands_route() {
        for name in [
            "get", "set", "incr", "lpush", "hset", "zadd", "xadd", "rename", "msetnx", "eval",
            "sort", "lmove",
        ] {
            assert!(
                matches!(of(name, None), Policy::Route { .. }),
                "{name}: {:?}",
                of(name, None)
            );
        }
        assert!(matches!(
            of("object", Some("encoding")),
            Policy::Route { .. }
        ));
        assert!(matches!(of("xread", None), Policy::Route { .. }));
        assert!(matches!(of("copy", None), Policy::Route { .. }));
    }

    #[test]
    fn transactions_and_blocking_commands_have_their_own_policies() {
        assert_eq!(of("multi", None), Policy::Tx(TxCmd::Multi));
        assert_eq!(of("exec", None), Policy::Tx(TxCmd::Exec));
        assert_eq!(of("discard", None), Policy::Tx(TxCmd::Discard));
        assert_eq!(of("watch", None), Policy::Tx(TxCmd::Watch));
        assert_eq!(of("unwatch", None), Policy::Tx(TxCmd::Unwatch));
        for name in [
            "blpop",
            "brpop",
            "blmove",
            "brpoplpush",
            "blmpop",
            "bzpopmin",
            "bzpopmax",
            "bzmpop",
        ] {
            assert!(matches!(of(name, None), Policy::Block(_)), "{name}");
        }
        assert!(matches!(
            of("xread", None),
            Policy::Route {
                check: RouteCheck::StreamBlock,
                ..
            }
        ));
    }

    #[test]
    fn multi_key_commands_split() {
        assert_eq!(of("mget", None), Policy::Split(SplitKind::Mget));
        assert_eq!(of("mset", None), Policy::Split(SplitKind::Mset));
        for name in ["del", "unlink", "exists", "touch"] {
            assert_eq!(of(name, None), Policy::Split(SplitKind::Sum));
        }
        assert_eq!(of("dbsize", None), Policy::FanOut(SplitKind::Sum));
    }

    #[test]
    fn pubsub_commands_are_served() {
        assert_eq!(
            of("subscribe", None),
            Policy::PubSub(PubSubCmd::Subscribe(Kind::Channel))
        );
        assert_eq!(
            of("sunsubscribe", None),
            Policy::PubSub(PubSubCmd::Unsubscribe(Kind::Shard))
        );
        for name in ["publish", "spublish"] {
            assert_eq!(of(name, None), Policy::PubSub(PubSubCmd::Publish), "{name}");
        }
        assert_eq!(of("pubsub", Some("numpat")), Policy::FanOut(SplitKind::Max));
        assert_eq!(
            of("pubsub", Some("channels")),
            Policy::FanOut(SplitKind::Union)
        );
        assert_eq!(
            of("pubsub", Some("shardnumsub")),
            Policy::FanOut(SplitKind::NumSub)
        );
        for c in all() {
            if c.has(flag::PUBSUB) {
                assert!(
                    !matches!(policy(c), Policy::Unsupported(_)),
                    "{}: every Pub/Sub command is served",
                    c.name
                );
            }
        }
    }

    #[test]
    fn what_cannot_be_served_is_refused_with_a_reason() {
        let cases = [
            ("cluster", Some("info"), CLUSTER),
            ("readonly", None, CLUSTER),
            ("shutdown", None, ADMIN),
            ("debug", None, ADMIN),
            ("script", Some("debug"), SCRIPT_DEBUG),
            ("swapdb", None, "keyway serves database 0 only"),
            ("move", None, "keyway serves database 0 only"),
        ];
        for (name, sub, why) in cases {
            assert_eq!(of(name, sub), Policy::Unsupported(why), "{name} {sub:?}");
        }
        assert!(matches!(
            of("client", Some("kill")),
            Policy::Local(Local::Client(ClientSub::Kill))
        ));
        assert!(matches!(of("migrate", None), Policy::Unsupported(_)));
        assert!(matches!(of("move", None), Policy::Unsupported(_)));
    }

    #[test]
    fn keyspace_commands_reach_every_group() {
        assert_eq!(of("keys", None), Policy::FanOut(SplitKind::Union));
        assert_eq!(of("scan", None), Policy::Keyspace(KeyspaceCmd::Scan));
        assert_eq!(
            of("randomkey", None),
            Policy::Keyspace(KeyspaceCmd::RandomKey)
        );
        for name in ["flushall", "flushdb"] {
            assert_eq!(of(name, None), Policy::Keyspace(KeyspaceCmd::Flush));
        }
        assert_eq!(of("lastsave", None), Policy::FanOut(SplitKind::Min));
        assert_eq!(of("dbsize", None), Policy::FanOut(SplitKind::Sum));
        assert_eq!(of("time", None), Policy::Local(Local::Time));
    }

    #[test]
    fn script_and_function_management_is_served() {
        assert_eq!(of("script", Some("load")), Policy::Scripts(ScriptCmd::Load));
        assert_eq!(
            of("script", Some("exists")),
            Policy::Scripts(ScriptCmd::Exists)
        );
        assert_eq!(
            of("script", Some("flush")),
            Policy::Scripts(ScriptCmd::Flush)
        );
        assert_eq!(
            of("function", Some("load")),
            Policy::Scripts(ScriptCmd::FunctionLoad)
        );
        for sub in ["delete", "flush", "restore"] {
            assert_eq!(
                of("function", Some(sub)),
                Policy::Scripts(ScriptCmd::EveryGroup),
                "{sub}"
            );
        }
        for sub in ["list", "dump", "stats", "help"] {
            assert_eq!(
                of("function", Some(sub)),
                Policy::Scripts(ScriptCmd::DocumentedGroup),
                "{sub}"
            );
        }
        for name in [
            "eval",
            "evalsha",
            "eval_ro",
            "evalsha_ro",
            "fcall",
            "fcall_ro",
        ] {
            assert!(
                matches!(
                    of(name, None),
                    Policy::Route {
                        keyless: SCRIPT_KEYLESS,
                        ..
                    }
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn monitor_latency_and_memory_are_served() {
        assert_eq!(of("monitor", None), Policy::Monitor);
        assert_eq!(of("latency", Some("latest")), Policy::Diag(DiagCmd::Latest));
        assert_eq!(
            of("latency", Some("help")),
            Policy::Diag(DiagCmd::DocumentedGroup)
        );
        assert_eq!(
            of("memory", Some("stats")),
            Policy::Diag(DiagCmd::MemoryStats)
        );
        assert_eq!(of("memory", Some("doctor")), Policy::Diag(DiagCmd::Doctor));
        assert!(
            matches!(
                of("memory", Some("usage")),
                Policy::Route {
                    keys: Keys::Specs,
                    ..
                }
            ),
            "MEMORY USAGE is routed by its key"
        );
        for c in all() {
            if c.name.starts_with("latency|") || c.name.starts_with("memory|") {
                assert!(
                    !matches!(policy(c), Policy::Unsupported(_)),
                    "{}: served",
                    c.name
                );
            }
        }
    }

    #[test]
    fn every_command_has_a_policy() {
        // The table is indexed by command id: every command must have an
        // id of its own, inside the table, so that no command reads another's
        // policy or the table's placeholder.
        let mut seen = vec![None; COMMAND_IDS];
        for c in all() {
            let id = usize::from(c.id);
            assert!(id < COMMAND_IDS, "{}: id {id} outside the table", c.name);
            if let Some(other) = seen[id].replace(c.name) {
                panic!("{} and {other} share id {id}", c.name);
            }
            assert_eq!(policy(c), decide(c), "{}: the table's policy", c.name);
            if let Policy::Unsupported(why) = policy(c) {
                assert!(!why.is_empty(), "{}: refused without a reason", c.name);
            }
        }
        assert!(seen.iter().any(Option::is_some));
    }
}
