//! Commands keyway answers itself: connection commands (`PING`, `ECHO`,
//! `QUIT`, `SELECT 0`, `HELLO` (see `engine::resp3`), `AUTH`, `RESET`, `CLIENT SETNAME/GETNAME/ID/
//! INFO`), introspection (`COMMAND …`, `INFO`). Replies match Redis 7's byte
//! for byte where Redis would answer the same.

use keyway_protocol::command::{self, extract_keys, CommandSpec, Lookup};
use keyway_protocol::pattern::glob_match;
use keyway_protocol::resp::{encode, Args};

use super::client::{ClientState, Phase};
use super::policy::{CommandSub, Local};
use super::replies::Refusal;

/// What local commands may look at besides the client.
pub(crate) struct LocalCtx {
    pub core: usize,
    pub now_ms: u64,
}

/// Runs a local command; arity has been checked.
pub(crate) fn run(cmd: Local, st: &mut ClientState, args: &Args<'_>, ctx: &LocalCtx) {
    match cmd {
        // PING's arity is -1 but it takes one message at most, as Redis checks.
        Local::Ping if args.len() > 2 => st.refuse(&Refusal::WrongArity { command: "ping" }),
        Local::Ping => match args.try_get(1) {
            None => st.reply(|o| encode::simple(o, b"PONG")),
            Some(m) => st.reply(|o| encode::bulk(o, m)),
        },
        Local::Echo => st.reply(|o| encode::bulk(o, args.get(1))),
        Local::Quit => {
            st.reply(|o| encode::simple(o, b"OK"));
            st.phase = Phase::Draining;
        }
        Local::Select => match std::str::from_utf8(args.get(1))
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            None => st.refuse(&Refusal::NotAnInteger),
            Some(0) => st.reply(|o| encode::simple(o, b"OK")),
            Some(db) if db < 0 => st.refuse(&Refusal::DbIndexOutOfRange),
            Some(db) => st.refuse(&Refusal::SelectUnsupported { db }),
        },
        // (`Ctx::session_command` answers them: see `engine::auth`.)
        Local::Auth | Local::Acl(_) => {}
        // (`Ctx::hello` answers it first: see `engine::resp3`.)
        Local::Hello => super::resp3::answer_hello(st, args, super::route::Place::NEW),
        Local::Reset => {
            st.name = None;
            st.resp3 = false;
            // As Redis's RESET: `CLIENT REPLY` back to on.
            st.reply = 0;
            st.reply(|o| encode::simple(o, b"RESET"));
        }
        Local::Role => st.reply(|o| {
            encode::array_header(o, 3);
            encode::bulk(o, b"master");
            encode::integer(o, 0);
            encode::array_header(o, 0);
        }),
        Local::Command(sub) => command(sub, st, args),
        Local::Client(sub) => super::clients::client(sub, st, args, ctx),
        Local::Time => super::keyspace::time(st),
        Local::Tracking(cmd) => super::tracking::run(cmd, st, args),
    }
}

pub(crate) fn valid_client_name(n: &[u8]) -> bool {
    n.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

fn status_lines(o: &mut Vec<u8>, lines: &[&str]) {
    encode::array_header(o, lines.len());
    for l in lines {
        encode::simple(o, l.as_bytes());
    }
}

/// Finds a command by `name` or `container|sub`, as `COMMAND INFO/DOCS` take.
fn find(name: &[u8]) -> Option<&'static CommandSpec> {
    let (top, sub) = match name.iter().position(|&b| b == b'|') {
        Some(p) => (&name[..p], Some(&name[p + 1..])),
        None => (name, None),
    };
    let c = command::lookup::by_name(top)?;
    match sub {
        None => Some(c),
        Some(s) => command::lookup::subcommand(c, s),
    }
}

fn command(sub: CommandSub, st: &mut ClientState, args: &Args<'_>) {
    use super::commands;
    let r3 = st.resp3;
    match sub {
        CommandSub::All => st.reply(|o| o.extend_from_slice(commands::all_reply(r3))),
        CommandSub::Count => st.reply(|o| encode::integer(o, commands::count() as i64)),
        CommandSub::Info if args.len() == 2 => {
            st.reply(|o| o.extend_from_slice(commands::all_reply(r3)))
        }
        CommandSub::Info => st.reply(|o| {
            encode::array_header(o, args.len() - 2);
            for name in args.iter().skip(2) {
                match find(name).and_then(|c| commands::info(c, r3)) {
                    Some(entry) => o.extend_from_slice(entry),
                    None => encode::null_of(o, r3),
                }
            }
        }),
        CommandSub::Docs if args.len() == 2 => {
            st.reply(|o| o.extend_from_slice(commands::docs_all_reply(r3)))
        }
        CommandSub::Docs => {
            let found: Vec<&'static [u8]> = args
                .iter()
                .skip(2)
                .filter_map(find)
                .filter_map(|c| commands::docs(c, r3))
                .filter(|d| !d.is_empty())
                .collect();
            st.reply(|o| {
                encode::map_header(o, found.len(), r3);
                for d in found {
                    o.extend_from_slice(d);
                }
            });
        }
        CommandSub::List => command_list(st, args),
        CommandSub::GetKeys => command_getkeys(st, args),
        CommandSub::Help => {
            let lines = [
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "(no subcommand)",
                "    Return details about all Redis commands.",
                "COUNT",
                "    Return the total number of commands in this Redis server.",
                "LIST",
                "    Return a list of all commands in this Redis server.",
                "INFO [<command-name> ...]",
                "    Return details about multiple Redis commands.",
                "    If no command names are given, documentation details for all",
                "    commands are returned.",
                "DOCS [<command-name> ...]",
                "    Return documentation details about multiple Redis commands.",
                "    If no command names are given, documentation details for all",
                "    commands are returned.",
                "GETKEYS <full-command>",
                "    Return the keys from a full Redis command.",
                "HELP",
                "    Print this help.",
            ];
            st.reply(|o| status_lines(o, &lines));
        }
    }
}

fn command_list(st: &mut ClientState, args: &Args<'_>) {
    enum Filter<'a> {
        All,
        Module,
        Category(u32),
        Pattern(&'a [u8]),
    }
    let filter = match args.len() {
        2 => Filter::All,
        5 if args.get(2).eq_ignore_ascii_case(b"filterby") => {
            let (kind, value) = (args.get(3), args.get(4));
            if kind.eq_ignore_ascii_case(b"module") {
                Filter::Module
            } else if kind.eq_ignore_ascii_case(b"pattern") {
                Filter::Pattern(value)
            } else if kind.eq_ignore_ascii_case(b"aclcat") {
                match crate::acl::category_by_name(value) {
                    Some(bit) => Filter::Category(bit),
                    None => return st.reply(|o| encode::array_header(o, 0)),
                }
            } else {
                return st.refuse(&Refusal::Syntax);
            }
        }
        _ => return st.refuse(&Refusal::Syntax),
    };
    let names: Vec<&'static str> = command::all()
        .filter(|c| super::commands::listed(c))
        .filter(|c| match filter {
            Filter::All => true,
            Filter::Module => false,
            Filter::Category(bit) => c.in_category(bit),
            Filter::Pattern(p) => glob_match(p, c.name.as_bytes(), true),
        })
        .map(|c| c.name)
        .collect();
    st.reply(|o| {
        encode::array_header(o, names.len());
        for n in names {
            encode::bulk(o, n.as_bytes());
        }
    });
}

fn command_getkeys(st: &mut ClientState, args: &Args<'_>) {
    let sub = Args::new(args.buf(), &args.spans()[2..]);
    let spec = match command::lookup(sub.get(0), sub.try_get(1)) {
        Lookup::Found(c) => c,
        _ => return st.refuse(&Refusal::InvalidCommand),
    };
    if !spec.arity_ok(sub.len()) {
        return st.refuse(&Refusal::GetKeysArity);
    }
    let mut keys = Vec::new();
    if let Err(e) = extract_keys(spec, &sub, &mut keys) {
        return st.refuse(&Refusal::Keys(e));
    }
    if keys.is_empty() {
        return st.refuse(&Refusal::NoKeyArguments);
    }
    st.reply(|o| {
        encode::array_header(o, keys.len());
        for k in keys {
            encode::bulk(o, sub.get(k as usize));
        }
    });
}
