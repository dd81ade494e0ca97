//! Every error reply the engine writes, in one place: Redis's own messages
//! where keyway answers on Redis's behalf (unknown commands, arity, `AUTH`,
//! `HELLO`, `CROSSSLOT`…), and keyway's (a backend down, a limit, a hold).
//!
//! A [`Refusal`] borrows what it names and is written straight into the
//! client's output ([`Refusal::encode`]): refusing a request allocates
//! nothing but the reply's bytes. Its `Display` is the message without the
//! leading `-`.

use std::fmt::{self, Display, Write as _};
use std::sync::Arc;

use keyway_protocol::command::{CommandSpec, KeyError};
use keyway_protocol::resp::{Args, ProtocolError};

use crate::config::units::Millis;

/// Why a request (or a connection) is answered with an error.
#[derive(Debug, Clone)]
pub(crate) enum Refusal<'a> {
    // ---- routing ----------------------------------------------------------
    /// A request's keys are in more than one group.
    CrossSlot,
    /// A key's slot has no group in the table.
    ClusterDown { slot: u32 },
    /// A request routed by keys had none (cannot happen for a command whose
    /// keys were found).
    NoKeyToRoute,
    /// Keys could not be found in the request.
    Keys(KeyError),
    /// Group `group`'s backend is down (or its address did not resolve).
    BackendDown { group: Arc<str>, reason: Arc<str> },
    /// The table fences routed requests.
    Fenced { reason: &'a str },
    /// Over `limits.max_memory`.
    Oom { max: u64 },

    // ---- commands ---------------------------------------------------------
    /// Redis's message for an unknown command.
    UnknownCommand { args: &'a Args<'a> },
    /// Redis's message for an unknown subcommand of `command`.
    UnknownSubcommand {
        sub: &'a [u8],
        command: &'static str,
    },
    /// Redis's message for a wrong argument count.
    WrongArity { command: &'a str },
    /// A command keyway does not serve, and why.
    Unsupported { spec: &'a CommandSpec, why: &'a str },
    /// A keyed command sent without keys.
    Keyless { spec: &'a CommandSpec, why: &'a str },
    /// A malformed request (the connection then closes).
    Protocol(ProtocolError),

    // ---- requests kept back for a migration -------------------------------
    /// The keys could not be moved in `move_attempts`.
    MoveFailed { why: &'a str },
    /// A move batch's source connection left the slab.
    SourceGone,
    /// A kept-back request's frame did not parse again.
    KeptBackUnparsed,
    /// A hold lasted longer than `migration.hold_timeout`.
    HoldExpired,

    // ---- limits (the connection then closes) ------------------------------
    /// The core closes its largest clients while over `limits.max_memory`.
    EvictedForMemory { max: u64, held: usize },
    /// A request stayed incomplete longer than the partial-request timeout.
    PartialTimeout { after: &'a Millis },
    /// Unread replies above the soft output limit for too long.
    SoftLimit { limit: usize, after: &'a Millis },
    /// Unread replies above the hard output limit.
    HardLimit { limit: usize },
    /// A reply larger than the setting `key` allows.
    ReplyTooLarge {
        bytes: u64,
        key: &'a str,
        limit: u64,
    },
    /// A split command's part got a reply of an unexpected type.
    UnexpectedPartReply { reply: &'a [u8] },
    /// A command sent to every group did not get the same reply from each
    /// (see `engine::gather`): what failed where, and what was undone.
    GroupsDisagree { command: &'a str, report: &'a str },

    // ---- commands answered locally ----------------------------------------
    /// Redis's message for a bad integer argument (`SELECT x`).
    NotAnInteger,
    /// `SELECT n` with n ≠ 0.
    SelectUnsupported { db: i64 },
    /// Redis's `SCAN` cursor error (a cursor keyway cannot decode or whose
    /// group does not exist; see `engine::keyspace`).
    InvalidCursor,
    /// `SELECT` of a negative database, as Redis words it.
    DbIndexOutOfRange,
    /// Redis's `AUTH <password>` with no password configured.
    AuthWithoutPassword,
    /// Redis's wrong password message.
    WrongPass,
    /// Redis's `syntax error`.
    Syntax,
    // ---- authentication and ACL users (see `engine::auth`) ---------------
    /// A command before `AUTH` while the default user needs a password.
    NoAuth,
    /// `HELLO` without `AUTH` before authenticating.
    NoAuthHello,
    /// The user may not run the command (its full name, `config|get`).
    NoPermCommand { name: &'a str },
    /// `COPY … DB n` with n other than 0.
    CopyOtherDb { db: i64 },
    /// A script or function call by a user with limited rules (see
    /// `acl::Denied::Script`).
    NoPermScript { name: &'a str },
    /// The user may not use one of the keys.
    NoPermKey,
    /// The user may not use one of the channels.
    NoPermChannel,
    /// A queued command the user's rules no longer allow at `EXEC` (the
    /// users changed meanwhile; Redis 7.0's `execCommand` text).
    NoPermAtExec { reason: &'static str },
    /// Too many failed `AUTH`s from the client's address.
    AuthRateLimited { secs: u64 },
    /// `SORT … BY pattern`/`GET` by a user who may not read every key.
    SortOptionDenied { option: &'a str },
    /// `ACL CAT x`.
    UnknownCategory { name: &'a [u8] },
    /// `ACL DRYRUN x …`.
    UserNotFound { name: &'a [u8] },
    /// `ACL DRYRUN u x …`.
    CommandNotFound { name: &'a [u8] },
    /// `ACL GENPASS 0`.
    GenpassBits,
    /// An `ACL` subcommand called with arguments it does not take.
    AclSubcommandSyntax { sub: &'a [u8] },
    // ---- CLIENT (see `engine::clients`), as Redis 7.0 words them --------
    /// `CLIENT KILL ip:port` matched no client.
    NoSuchClient,
    /// `CLIENT KILL ID 0` or not a number.
    ClientIdNotPositive,
    /// `CLIENT LIST ID x`.
    InvalidClientId,
    /// `TYPE x` of `CLIENT LIST`/`KILL`.
    UnknownClientType { name: &'a [u8] },
    /// `CLIENT KILL USER x` of a user other than `default`.
    NoSuchUser { name: &'a [u8] },
    /// `CLIENT PAUSE x`.
    TimeoutNotInteger,
    /// `CLIENT PAUSE -1`.
    TimeoutNegative,
    /// `CLIENT PAUSE` longer than `limits.client_pause_max`.
    PauseTooLong { max_ms: u64 },
    /// `CLIENT PAUSE n x`.
    PauseMode,
    /// `CLIENT UNBLOCK id x`.
    UnblockReason,
    /// A `CLIENT` subcommand with a wrong number of arguments, as Redis
    /// words it for those it checks itself.
    SubcommandSyntax { sub: &'a [u8] },
    /// Too many `CLIENT LIST|KILL|PAUSE|UNPAUSE|UNBLOCK` in flight on a core.
    TooManyClientAsks { max: usize },
    /// Redis's `HELLO x` message.
    ProtocolNotAnInteger,
    /// `HELLO n`, n not 2 or 3.
    NoProto,
    /// `CLIENT TRACKING on` (see `engine::tracking`).
    TrackingUnsupported,
    /// Redis's `CLIENT CACHING` of a client without tracking.
    CachingWithoutTracking,
    /// Redis's `CLIENT TRACKING … REDIRECT a REDIRECT b`.
    TrackingRedirectTwice,
    /// Redis's message for an unknown `HELLO` option.
    HelloOption { option: &'a [u8] },
    /// Redis's message for a client name with spaces or special characters.
    BadClientName,
    /// Redis's `COMMAND GETKEYS` of an unknown command.
    InvalidCommand,
    /// Redis's `COMMAND GETKEYS` with a wrong argument count.
    GetKeysArity,
    /// Redis's `COMMAND GETKEYS` of a command without keys.
    NoKeyArguments,

    // ---- INFO, CONFIG, SLOWLOG (see `engine::info`) -------------------------
    /// `CONFIG SET keyway-…`: keyway's settings come from its config.
    KeywaySetting { name: &'a [u8] },
    /// Redis's `SLOWLOG GET` with a bad count.
    SlowlogCount,
    /// Redis's `SLOWLOG GET a b` (too many arguments; `sub` as given).
    SlowlogGetArgs { sub: &'a [u8] },

    // ---- transactions and dedicated connections ---------------------------
    /// Redis's `EXEC` outside `MULTI`.
    ExecWithoutMulti,
    /// Redis's `DISCARD` outside `MULTI`.
    DiscardWithoutMulti,
    /// Redis's nested `MULTI`.
    MultiNested,
    /// Redis's `WATCH` inside `MULTI`.
    WatchInMulti,
    /// Redis's message for a command flagged `no-multi` inside `MULTI`.
    NotAllowedInMulti,
    /// Redis's `EXEC` after an error while queueing.
    ExecAbort,
    /// Redis's `EXEC` refused itself (`why`: the error without its code).
    ExecAbortBecause { why: &'a str },
    /// A command keyway answers itself, which cannot be queued.
    LocalInMulti { spec: &'a CommandSpec },
    /// A command that cannot be part of a transaction at keyway.
    NotInTransaction { spec: &'a CommandSpec, why: &'a str },
    /// The queued commands exceed `limits.max_request_bytes`.
    TransactionTooLarge { limit: u64 },
    /// More queued commands than `limits.max_arguments`.
    TransactionTooManyCommands { limit: usize },
    /// The queued keys are no longer in one group at `EXEC`.
    TransactionSplit,
    /// Every dedicated connection of the core is in use.
    DedicatedLimit { limit: usize },
    // ---- Pub/Sub ----------------------------------------------------------
    /// Redis's message for a command other than (un)subscribe, `PING`,
    /// `QUIT` and `RESET` in RESP2 subscribed mode (`command` is the full
    /// name: `client|id`).
    SubscribedMode { command: &'a str },
    /// A client would have more than `limits.max_subscriptions`.
    TooManySubscriptions { max: usize },
    // ---- MONITOR ----------------------------------------------------------
    /// Redis's message for a keyspace command from a client in `MONITOR`
    /// mode (Redis flags it a replica).
    MonitorKeyspace,
    /// A group's `MONITOR` connection failed or was refused: the stream
    /// would miss that group's commands.
    MonitorLost { group: Arc<str>, reason: &'a str },
}

/// A new client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// `limits.max_clients` connections are open.
    #[error("ERR max number of clients reached")]
    MaxClients,
    /// The worker is shutting down.
    #[error("ERR keyway is shutting down")]
    ShuttingDown,
    /// Protected mode: a client from a non-loopback address while the
    /// default user needs no password (Redis 7.0's text, in keyway's
    /// terms).
    #[error("DENIED keyway is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to keyway you may adopt one of the following solutions: 1) Just disable protected mode by setting 'protected_mode = false' in keyway's config file and reloading it (SIGHUP) or restarting keyway, however MAKE SURE keyway is not publicly accessible from internet if you do so. 2) If you started keyway manually just for testing, restart it with 'protected_mode = false' in its config file. 3) Set up an authentication password for the default user: a [[user]] named \"default\" with a password rule. NOTE: You only need to do one of the above things in order for keyway to start accepting connections from the outside.")]
    ProtectedMode,
}

/// At most `max` bytes of `b`, as text.
struct Lossy<'b>(&'b [u8], usize);

impl Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0[..self.0.len().min(self.1)];
        f.write_str(&String::from_utf8_lossy(b))
    }
}

/// `CLIENT KILL` for `client|kill`.
struct CommandName<'s>(&'s CommandSpec);

impl Display for CommandName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.name.chars() {
            f.write_char(if c == '|' {
                ' '
            } else {
                c.to_ascii_uppercase()
            })?;
        }
        Ok(())
    }
}

/// Redis's listing of an unknown command's first arguments: each quoted
/// and followed by a space, while fewer than 128 bytes are listed, each cut
/// to what is left of the 128.
struct Listed<'s>(&'s Args<'s>);

impl Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut listed = String::new();
        for a in self.0.iter().skip(1) {
            if listed.len() >= 128 {
                break;
            }
            let room = 128 - listed.len();
            listed.push('\'');
            listed.push_str(&String::from_utf8_lossy(&a[..a.len().min(room)]));
            listed.push_str("' ");
        }
        f.write_str(&listed)
    }
}

impl Display for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Refusal::*;
        match self {
            CrossSlot => f.write_str("CROSSSLOT Keys in request don't hash to the same group"),
            ClusterDown { slot } => {
                write!(f, "CLUSTERDOWN Hash slot {slot} is not served by any group")
            }
            NoKeyToRoute => f.write_str("ERR no key to route by"),
            Keys(e) => write!(f, "ERR {e}"),
            BackendDown { group, reason } => {
                write!(f, "ERR backend {group} unavailable: {reason}")
            }
            Fenced { reason } => write!(f, "TRYAGAIN keyway is fenced: {reason}"),
            Oom { max } => write!(
                f,
                "OOM command not allowed when keyway's client and backend buffers exceed \
                 limits.max_memory ({max} bytes)"
            ),
            UnknownCommand { args } => write!(
                f,
                "ERR unknown command '{}', with args beginning with: {}",
                Lossy(args.get(0), 128),
                Listed(args)
            ),
            UnknownSubcommand { sub, command } => write!(
                f,
                "ERR unknown subcommand '{}'. Try {} HELP.",
                Lossy(sub, 128),
                command.to_ascii_uppercase()
            ),
            WrongArity { command } => {
                write!(f, "ERR wrong number of arguments for '{command}' command")
            }
            Unsupported { spec, why } => {
                write!(
                    f,
                    "ERR keyway does not support '{}': {why}",
                    CommandName(spec)
                )
            }
            Keyless { spec, why } => write!(
                f,
                "ERR keyway does not support '{}' without keys: {why}",
                CommandName(spec)
            ),
            Protocol(e) => write!(f, "ERR {e}"),
            MoveFailed { why } => {
                write!(
                    f,
                    "TRYAGAIN keyway could not move this command's keys: {why}"
                )
            }
            SourceGone => f.write_str("ERR internal error: the source connection is gone"),
            KeptBackUnparsed => {
                f.write_str("ERR internal error: a kept-back request did not parse")
            }
            HoldExpired => f.write_str(
                "TRYAGAIN the slot is on hold while a migration or failover is prepared; try again",
            ),
            EvictedForMemory { max, held } => write!(
                f,
                "ERR closing the connection: keyway's buffers exceed limits.max_memory ({max} \
                 bytes) and this connection held the most ({held} bytes)"
            ),
            PartialTimeout { after } => {
                write!(
                    f,
                    "ERR request incomplete after {after}; closing the connection"
                )
            }
            SoftLimit { limit, after } => write!(
                f,
                "ERR closing the connection: its unread replies stayed above \
                 limits.output_soft_limit ({limit} bytes) for {after}"
            ),
            HardLimit { limit } => write!(
                f,
                "ERR closing the connection: its unread replies exceed \
                 limits.output_hard_limit ({limit} bytes)"
            ),
            ReplyTooLarge { bytes, key, limit } => write!(
                f,
                "ERR the reply ({bytes} bytes) is larger than keyway's {key} ({limit} bytes); \
                 it was not sent"
            ),
            GroupsDisagree { command, report } => {
                write!(f, "ERR keyway: {command} {report}")
            }
            UnexpectedPartReply { reply } => write!(
                f,
                "ERR unexpected reply from a backend to a split command: {:?}",
                String::from_utf8_lossy(&reply[..reply.len().min(40)])
            ),
            NotAnInteger => f.write_str("ERR value is not an integer or out of range"),
            InvalidCursor => f.write_str("ERR invalid cursor"),
            DbIndexOutOfRange => f.write_str("ERR DB index is out of range"),
            SelectUnsupported { db } => write!(
                f,
                "ERR SELECT {db} is not supported: keyway serves database 0 only"
            ),
            AuthWithoutPassword => f.write_str(
                "ERR AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?",
            ),
            WrongPass => {
                f.write_str("WRONGPASS invalid username-password pair or user is disabled.")
            }
            Syntax => f.write_str("ERR syntax error"),
            NoAuth => f.write_str("NOAUTH Authentication required."),
            NoAuthHello => f.write_str(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise \
                 the HELLO AUTH <user> <pass> option can be used to authenticate the client and \
                 select the RESP protocol version at the same time",
            ),
            NoPermCommand { name } => write!(
                f,
                "NOPERM this user has no permissions to run the '{name}' command"
            ),
            NoPermScript { name } => write!(
                f,
                "NOPERM this user has no permissions to run the '{name}' command: keyway cannot \
                 check what a script runs, so only users with every command, key and channel \
                 may run scripts"
            ),
            CopyOtherDb { db } => write!(
                f,
                "ERR COPY to database {db} is not supported: keyway serves database 0 only"
            ),
            NoPermKey => f.write_str(
                "NOPERM this user has no permissions to access one of the keys used as arguments",
            ),
            NoPermChannel => f.write_str(
                "NOPERM this user has no permissions to access one of the channels used as \
                 arguments",
            ),
            NoPermAtExec { reason } => write!(
                f,
                "NOPERM ACLs rules changed between the moment the transaction was accumulated \
                 and the EXEC call. This command is no longer allowed for the following \
                 reason: {reason}"
            ),
            AuthRateLimited { secs } => write!(
                f,
                "WRONGPASS too many failed authentication attempts from this address \
                 (auth.max_failures); try again in {secs} s"
            ),
            SortOptionDenied { option } => write!(
                f,
                "ERR {option} option of SORT denied due to insufficient ACL permissions."
            ),
            UnknownCategory { name } => {
                write!(f, "ERR Unknown category '{}'", Lossy(name, 128))
            }
            UserNotFound { name } => write!(f, "ERR User '{}' not found", Lossy(name, 128)),
            CommandNotFound { name } => {
                write!(f, "ERR Command '{}' not found", Lossy(name, 128))
            }
            GenpassBits => f.write_str(
                "ERR ACL GENPASS argument must be the number of bits for the output password, \
                 a positive number up to 4096",
            ),
            AclSubcommandSyntax { sub } => write!(
                f,
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try ACL HELP.",
                Lossy(sub, 128)
            ),
            NoSuchClient => f.write_str("ERR No such client"),
            ClientIdNotPositive => f.write_str("ERR client-id should be greater than 0"),
            InvalidClientId => f.write_str("ERR Invalid client ID"),
            UnknownClientType { name } => {
                write!(f, "ERR Unknown client type '{}'", Lossy(name, 128))
            }
            NoSuchUser { name } => write!(f, "ERR No such user '{}'", Lossy(name, 128)),
            TimeoutNotInteger => f.write_str("ERR timeout is not an integer or out of range"),
            TimeoutNegative => f.write_str("ERR timeout is negative"),
            PauseMode => f.write_str("ERR CLIENT PAUSE mode must be WRITE or ALL"),
            PauseTooLong { max_ms } => write!(
                f,
                "ERR keyway: a CLIENT PAUSE longer than {max_ms} ms is refused \
                 (limits.client_pause_max)"
            ),
            UnblockReason => f.write_str("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR"),
            SubcommandSyntax { sub } => write!(
                f,
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                Lossy(sub, 128)
            ),
            TooManyClientAsks { max } => write!(
                f,
                "ERR keyway: {max} CLIENT LIST/KILL/PAUSE/UNPAUSE/UNBLOCK requests are already \
                 in flight on this core (limits.client_commands_in_flight); try again"
            ),
            KeywaySetting { name } => write!(
                f,
                "ERR keyway setting '{}' comes from keyway's config file or the control \
                 plane's snapshot and cannot be changed with CONFIG SET",
                Lossy(name, 128)
            ),
            SlowlogCount => f.write_str("ERR count should be greater than or equal to -1"),
            SlowlogGetArgs { sub } => write!(
                f,
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try SLOWLOG HELP.",
                Lossy(sub, 128)
            ),
            ProtocolNotAnInteger => {
                f.write_str("ERR Protocol version is not an integer or out of range")
            }
            NoProto => f.write_str("NOPROTO unsupported protocol version"),
            TrackingUnsupported => f.write_str(
                "ERR keyway does not support CLIENT TRACKING on: invalidations come from the Redis \
                 server of each key's group, and keyway has no per-client tracking connections to \
                 forward them yet, so it refuses rather than miss one (tracking stays off)",
            ),
            CachingWithoutTracking => f.write_str(
                "ERR CLIENT CACHING can be called only when the client is in tracking mode with \
                 OPTIN or OPTOUT mode enabled",
            ),
            TrackingRedirectTwice => {
                f.write_str("ERR A client can only redirect to a single other client")
            }
            HelloOption { option } => write!(
                f,
                "ERR Syntax error in HELLO option '{}'",
                Lossy(option, usize::MAX)
            ),
            BadClientName => f.write_str(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ),
            InvalidCommand => f.write_str("ERR Invalid command specified"),
            GetKeysArity => f.write_str("ERR Invalid number of arguments specified for command"),
            NoKeyArguments => f.write_str("ERR The command has no key arguments"),
            ExecWithoutMulti => f.write_str("ERR EXEC without MULTI"),
            DiscardWithoutMulti => f.write_str("ERR DISCARD without MULTI"),
            MultiNested => f.write_str("ERR MULTI calls can not be nested"),
            WatchInMulti => f.write_str("ERR WATCH inside MULTI is not allowed"),
            NotAllowedInMulti => f.write_str("ERR Command not allowed inside a transaction"),
            ExecAbort => f.write_str("EXECABORT Transaction discarded because of previous errors."),
            ExecAbortBecause { why } => {
                write!(f, "EXECABORT Transaction discarded because of: {why}")
            }
            LocalInMulti { spec } => write!(
                f,
                "ERR keyway answers '{}' itself and cannot queue it in a transaction; \
                 send it before MULTI or after EXEC",
                CommandName(spec)
            ),
            NotInTransaction { spec, why } => write!(
                f,
                "ERR keyway cannot queue '{}' in a transaction: {why}",
                CommandName(spec)
            ),
            TransactionTooLarge { limit } => write!(
                f,
                "ERR the transaction's commands exceed limits.max_request_bytes ({limit} \
                 bytes) together"
            ),
            TransactionTooManyCommands { limit } => write!(
                f,
                "ERR a transaction holds at most limits.max_arguments ({limit}) commands"
            ),
            TransactionSplit => f.write_str(
                "TRYAGAIN the transaction's keys are no longer in one group (the routing \
                 table changed while it was queued); the transaction was discarded",
            ),
            DedicatedLimit { limit } => write!(
                f,
                "ERR every dedicated backend connection of this keyway core is in use \
                 (backend.dedicated_connections = {limit}); WATCH and blocking commands \
                 need one"
            ),
            SubscribedMode { command } => write!(
                f,
                "ERR Can't execute '{command}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / \
                 QUIT / RESET are allowed in this context"
            ),
            TooManySubscriptions { max } => write!(
                f,
                "ERR keyway allows a client at most limits.max_subscriptions ({max}) channels, \
                 patterns and shard channels; nothing was subscribed"
            ),
            MonitorKeyspace => write!(f, "ERR Replica can't interact with the keyspace"),
            MonitorLost { group, reason } => write!(
                f,
                "ERR keyway: MONITOR of group '{group}' failed ({reason}); the monitor stream \
                 ends"
            ),
        }
    }
}

/// Writes into a reply buffer, with CR and LF turned into spaces (an error
/// reply is one line).
struct Line<'o>(&'o mut Vec<u8>);

impl fmt::Write for Line<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend(
            s.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        Ok(())
    }
}

impl Refusal<'_> {
    /// Appends the error reply: `-`, the message on one line, CRLF (as
    /// `resp::encode::error` of the message).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(b'-');
        // Writing to a Vec cannot fail.
        let _ = write!(Line(out), "{self}");
        out.extend_from_slice(b"\r\n");
    }

    /// The error reply in a buffer of its own.
    pub(crate) fn to_reply(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use keyway_protocol::resp::{encode, Span};

    use super::*;

    #[test]
    fn unknown_command_lists_arguments_as_redis_does() {
        let buf = b"FOObarbaz";
        let spans = [Span::new(0, 3), Span::new(3, 3), Span::new(6, 3)];
        assert_eq!(
            Refusal::UnknownCommand {
                args: &Args::new(buf, &spans)
            }
            .to_string(),
            "ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' "
        );
        // Redis lists arguments while fewer than 128 bytes are listed, each
        // cut to the room left: one 300-byte argument shows as 128 bytes,
        // and the next is not listed.
        let mut buf = b"FOO".to_vec();
        buf.extend_from_slice(&[b'x'; 300]);
        buf.extend_from_slice(b"yy");
        let spans = [Span::new(0, 3), Span::new(3, 300), Span::new(303, 2)];
        let x128 = "x".repeat(128);
        assert_eq!(
            Refusal::UnknownCommand {
                args: &Args::new(&buf, &spans)
            }
            .to_string(),
            format!("ERR unknown command 'FOO', with args beginning with: '{x128}' ")
        );
    }

    #[test]
    fn an_error_reply_is_one_line_as_encode_error_writes_it() {
        for r in [
            Refusal::Fenced {
                reason: "line one\r\nline two\n",
            },
            Refusal::CrossSlot,
            Refusal::ClusterDown { slot: 7 },
        ] {
            let mut expected = Vec::new();
            encode::error(&mut expected, &r.to_string());
            assert_eq!(r.to_reply(), expected, "{r:?}");
        }
        assert_eq!(
            Refusal::Fenced { reason: "a\r\nb" }.to_reply(),
            b"-TRYAGAIN keyway is fenced: a  b\r\n"
        );
    }
}
