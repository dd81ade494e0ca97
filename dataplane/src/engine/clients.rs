//! `CLIENT` subcommands, describing keyway's own clients in Redis 7.0's
//! formats (never keyway's backend connections).
//!
//! - `SETNAME`, `GETNAME`, `ID`, `INFO`, `HELP`, `REPLY`, `NO-EVICT` look at
//!   the asking client only ([`client`], called by `engine::local`).
//! - `LIST`, `KILL`, `PAUSE`, `UNPAUSE`, `UNBLOCK` look at every core's
//!   clients: [`Ctx::client_command`] checks the arguments as Redis does,
//!   takes a reply slot and asks every core through `engine::mailbox`;
//!   each core answers from its clients ([`Worker::answer`]); the last
//!   answer completes the slot ([`Worker::ask_done`]).
//!
//! `CLIENT LIST`/`INFO` lines have Redis 7.0's fields in its order, then
//! one of keyway's, `core=` (the core serving the client: clients that
//! split fields on spaces ignore it, as they ignore fields newer Redis
//! versions add); the values are keyway's: `fd=-1` (the socket belongs to the transport, not
//! the engine), `qbuf` what is buffered of an incomplete request, `rbs` its
//! capacity, `obl` unwritten output, `oll`/`omem` the replies held for
//! order, `tot-mem` everything the client holds (`ClientState::
//! buffered_bytes`), `argv-mem=0` (arguments are parsed in place),
//! `user=` the client's user, `redir=-1`. Flags: `P` subscribed, `x` in `MULTI`, `b`
//! blocked (a blocking command, or held by `CLIENT PAUSE`), `c` closing
//! after its replies, `A` being closed, `e` no-evict, else `N`.
//!
//! `CLIENT PAUSE` is applied at keyway, on every core (`engine::pause`):
//! while it lasts, `Ctx::run_frames` tests one core-local flag per request
//! and holds the client whose next command Redis would hold (every command
//! with `ALL`, with `WRITE` those flagged `write` and Redis's
//! `may-replicate` ones, and an `EXEC` of some): the client is not read
//! (`ClientState::postponed`) and its request stays in its input buffer,
//! which counts in the memory limits, until the pause ends (`CLIENT
//! UNPAUSE`, or the tick after its timeout), when it is parsed again in
//! order.
//!
//! `CLIENT REPLY OFF|SKIP`: the request's reply slot is muted
//! (`ReplyQueue::mute_next`), or a local reply written at once is taken
//! back ([`Ctx::dispatch_muted`]); a client with no `CLIENT REPLY` state
//! pays one test of `ClientState::reply` per request.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use keyway_protocol::resp::{encode, Args};

use super::client::{ClientState, Phase};
use super::local::{valid_client_name, LocalCtx};
use super::mailbox::{self, Answer, Ask, Letter, Question};
use super::pause::{pause_args, PauseMode};
use super::policy::ClientSub;
use super::pubsub::Kind;
use super::replies::Refusal;
use super::route::Req;
use super::{Ctx, Worker};

/// Bits of `ClientState::reply`, as Redis's `CLIENT_REPLY_*` flags.
pub(crate) mod reply {
    /// `CLIENT REPLY OFF`.
    pub const OFF: u8 = 1;
    /// `CLIENT REPLY SKIP` was the last command: skip the next one's reply.
    pub const SKIP_NEXT: u8 = 2;
    /// The command running now is skipped.
    pub const SKIP: u8 = 4;
}

/// A client type of `CLIENT LIST TYPE`/`CLIENT KILL TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientType {
    Normal,
    /// `replica` or `slave`: keyway has none.
    Replica,
    /// `master`: keyway has none.
    Master,
    /// Subscribed to something.
    PubSub,
}

impl ClientType {
    fn parse(name: &[u8]) -> Option<ClientType> {
        let all = [
            (&b"normal"[..], ClientType::Normal),
            (b"slave", ClientType::Replica),
            (b"replica", ClientType::Replica),
            (b"pubsub", ClientType::PubSub),
            (b"master", ClientType::Master),
        ];
        all.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, t)| t)
    }

    fn of(st: &ClientState) -> ClientType {
        if st.subs.is_some() {
            ClientType::PubSub
        } else {
            ClientType::Normal
        }
    }
}

/// Which clients `CLIENT LIST` shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListFilter {
    kind: Option<ClientType>,
    /// `ID id…`, in the order given (the reply's order).
    ids: Option<Vec<u64>>,
    /// The same, sorted, to look clients up.
    sorted: Vec<u64>,
}

/// Which clients `CLIENT KILL` closes.
#[derive(Debug, Clone, Default)]
pub(crate) struct KillFilter {
    id: Option<u64>,
    addr: Option<Box<[u8]>>,
    laddr: Option<Box<[u8]>>,
    kind: Option<ClientType>,
    skipme: bool,
    /// Authenticated as this user (`USER name`).
    user: Option<Box<[u8]>>,
    /// Older than this many seconds (`MAXAGE`, as Redis 7.4 has it).
    maxage: Option<u64>,
    /// The asking client: its core and `CLIENT ID`.
    asker: (usize, u64),
}

/// A core's `CLIENT` state beyond its clients: open asks, the pause.
#[derive(Debug, Default)]
pub(crate) struct Admin {
    /// The worker has admin work after the request being read: mail to
    /// read, or a pause that ended (tested once per client read).
    pub posted: bool,
    /// This core's asks awaiting other cores' answers.
    pub asks: mailbox::Asks,
    /// The pause in force (the one test per request while none is).
    pub pause: Option<(PauseMode, Instant)>,
    /// Clients held by the pause: (index, generation).
    pub postponed: Vec<(u32, u32)>,
}

/// Redis 7.0's `CLIENT HELP`: keyway answers every subcommand it lists
/// (`TRACKING on` with a refusal: see `engine::tracking`).
const HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CACHING (YES|NO)",
    "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
    "GETREDIR",
    "    Return the client ID we are redirecting to when tracking is enabled.",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are:",
    "    * ADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made from the specified address",
    "    * LADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made to specified local address",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Kill connections by type.",
    "    * USER <username>",
    "      Kill connections authenticated by <username>.",
    "    * SKIPME (YES|NO)",
    "      Skip killing current connection (default: yes).",
    "LIST [options ...]",
    "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Return clients of specified type.",
    "UNPAUSE",
    "    Stop the current client pause, resuming traffic.",
    "PAUSE <timeout> [WRITE|ALL]",
    "    Suspend all, or just write, clients for <timeout> milliseconds.",
    "REPLY (ON|OFF|SKIP)",
    "    Control the replies sent to the current connection.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "UNBLOCK <clientid> [TIMEOUT|ERROR]",
    "    Unblock the specified blocked client.",
    "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
    "         [OPTIN] [OPTOUT] [NOLOOP]",
    "    Control server assisted client side caching.",
    "TRACKINGINFO",
    "    Report tracking status for the current connection.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "HELP",
    "    Prints this help.",
];

/// The `CLIENT` subcommands about the asking client only.
pub(crate) fn client(sub: ClientSub, st: &mut ClientState, args: &Args<'_>, ctx: &LocalCtx) {
    match sub {
        ClientSub::SetName => {
            let n = args.get(2);
            if !valid_client_name(n) {
                return st.refuse(&Refusal::BadClientName);
            }
            st.name = (!n.is_empty()).then(|| n.into());
            st.reply(|o| encode::simple(o, b"OK"));
        }
        ClientSub::GetName => match st.name.clone() {
            Some(n) => st.reply(|o| encode::bulk(o, &n)),
            None => {
                let resp3 = st.resp3;
                st.reply(|o| encode::null_of(o, resp3))
            }
        },
        ClientSub::Id => {
            let id = st.id as i64;
            st.reply(|o| encode::integer(o, id));
        }
        ClientSub::Info => {
            let mut line = String::new();
            client_line(&mut line, st, ctx.now_ms, ctx.core);
            line.push('\n');
            let resp3 = st.resp3;
            st.reply(|o| encode::verbatim(o, line.as_bytes(), resp3));
        }
        ClientSub::Help => st.reply(|o| {
            encode::array_header(o, HELP.len());
            for l in HELP {
                encode::simple(o, l.as_bytes());
            }
        }),
        ClientSub::Reply => {
            let v = args.get(2);
            if v.eq_ignore_ascii_case(b"on") {
                st.reply &= !(reply::OFF | reply::SKIP | reply::SKIP_NEXT);
                st.reply(|o| encode::simple(o, b"OK"));
            } else if v.eq_ignore_ascii_case(b"off") {
                st.reply |= reply::OFF;
            } else if v.eq_ignore_ascii_case(b"skip") {
                if st.reply & reply::OFF == 0 {
                    st.reply |= reply::SKIP_NEXT;
                }
            } else {
                st.refuse(&Refusal::Syntax);
            }
        }
        ClientSub::NoEvict => {
            let v = args.get(2);
            if v.eq_ignore_ascii_case(b"on") {
                st.no_evict = true;
            } else if v.eq_ignore_ascii_case(b"off") {
                st.no_evict = false;
            } else {
                return st.refuse(&Refusal::Syntax);
            }
            st.reply(|o| encode::simple(o, b"OK"));
        }
        // Served by `Ctx::client_command`.
        ClientSub::List
        | ClientSub::Kill
        | ClientSub::Pause
        | ClientSub::Unpause
        | ClientSub::Unblock => st.refuse(&Refusal::Syntax),
    }
}

/// Appends client `st`'s `CLIENT LIST` line (without its newline), with
/// Redis 7.0's fields in its order, then keyway's `core=` (the core that
/// serves the client); `now_ms` is its core's clock.
pub(crate) fn client_line(out: &mut String, st: &ClientState, now_ms: u64, core: usize) {
    let age = now_ms.saturating_sub(st.created_ms) / 1000;
    let idle = now_ms.saturating_sub(st.last_active_ms) / 1000;
    let name = st
        .name
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let mut flags = String::new();
    if st.monitor.is_some() {
        // Redis's CLIENT_SLAVE|CLIENT_MONITOR, first.
        flags.push('O');
    }
    if st.subs.is_some() {
        flags.push('P');
    }
    if st.tx.is_some() {
        flags.push('x');
    }
    if st.blocked.is_some() || st.postponed {
        flags.push('b');
    }
    match st.phase {
        Phase::Draining => flags.push('c'),
        Phase::Closing { .. } | Phase::Kill => flags.push('A'),
        Phase::Open => {}
    }
    if st.no_evict {
        flags.push('e');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    let (sub, psub, ssub) = st.subs.as_ref().map_or((0, 0, 0), |s| {
        (
            s.of_kind(Kind::Channel),
            s.of_kind(Kind::Pattern),
            s.of_kind(Kind::Shard),
        )
    });
    let multi = st.tx.as_ref().map_or(-1, |t| t.queued() as i64);
    let multi_mem = st.tx.as_ref().map_or(0, |t| t.bytes());
    let qbuf = st.inbuf.len();
    let rbs = st.inbuf.capacity();
    let events = match (st.readable() && st.phase == Phase::Open, !st.out.is_empty()) {
        (true, true) => "rw",
        (true, false) => "r",
        (false, true) => "w",
        (false, false) => "",
    };
    let _ = write!(
        out,
        "id={} addr={} laddr={} fd=-1 name={name} age={age} idle={idle} flags={flags} db=0 \
         sub={sub} psub={psub} ssub={ssub} multi={multi} qbuf={qbuf} qbuf-free={} argv-mem=0 \
         multi-mem={multi_mem} rbs={rbs} rbp={rbs} obl={} oll={} omem={} tot-mem={} \
         events={events} cmd={} user={} redir=-1 resp={} core={core}",
        st.id,
        st.peer,
        st.local,
        rbs - qbuf,
        st.out.len(),
        st.queue.len(),
        st.queue.held_bytes(),
        st.buffered_bytes(),
        st.last_cmd,
        st.user.name,
        if st.resp3 { 3 } else { 2 },
    );
}

pub(crate) fn parse_i64(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// `CLIENT LIST`'s arguments, checked as Redis checks them.
fn list_filter<'a>(args: &Args<'a>) -> Result<ListFilter, Refusal<'a>> {
    let n = args.len();
    if n == 4 && args.get(2).eq_ignore_ascii_case(b"type") {
        let t = args.get(3);
        let kind = ClientType::parse(t).ok_or(Refusal::UnknownClientType { name: t })?;
        return Ok(ListFilter {
            kind: Some(kind),
            ..Default::default()
        });
    }
    if n > 3 && args.get(2).eq_ignore_ascii_case(b"id") {
        let mut ids = Vec::with_capacity(n - 3);
        for i in 3..n {
            let id = parse_i64(args.get(i)).ok_or(Refusal::InvalidClientId)?;
            ids.push(id.max(0) as u64);
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        return Ok(ListFilter {
            kind: None,
            ids: Some(ids),
            sorted,
        });
    }
    if n != 2 {
        return Err(Refusal::Syntax);
    }
    Ok(ListFilter::default())
}

/// `CLIENT KILL`'s arguments, checked as Redis checks them; also whether
/// it is the old form (`CLIENT KILL ip:port`).
fn kill_filter<'a>(
    args: &Args<'a>,
    asker: (usize, u64),
    users: &crate::acl::Users,
) -> Result<(KillFilter, bool), Refusal<'a>> {
    let n = args.len();
    if n == 3 {
        let f = KillFilter {
            addr: Some(args.get(2).into()),
            asker,
            ..Default::default()
        };
        return Ok((f, true));
    }
    let mut f = KillFilter {
        skipme: true,
        asker,
        ..Default::default()
    };
    let mut i = 2;
    while i < n {
        let (opt, more) = (args.get(i), i + 1 < n);
        if !more {
            return Err(Refusal::Syntax);
        }
        let v = args.get(i + 1);
        if opt.eq_ignore_ascii_case(b"id") {
            match parse_i64(v) {
                Some(id) if id > 0 => f.id = Some(id as u64),
                _ => return Err(Refusal::ClientIdNotPositive),
            }
        } else if opt.eq_ignore_ascii_case(b"type") {
            let kind = ClientType::parse(v).ok_or(Refusal::UnknownClientType { name: v })?;
            f.kind = Some(kind);
        } else if opt.eq_ignore_ascii_case(b"addr") {
            f.addr = Some(v.into());
        } else if opt.eq_ignore_ascii_case(b"laddr") {
            f.laddr = Some(v.into());
        } else if opt.eq_ignore_ascii_case(b"user") {
            if users.get(v).is_none() {
                return Err(Refusal::NoSuchUser { name: v });
            }
            f.user = Some(v.into());
        } else if opt.eq_ignore_ascii_case(b"skipme") {
            if v.eq_ignore_ascii_case(b"yes") {
                f.skipme = true;
            } else if v.eq_ignore_ascii_case(b"no") {
                f.skipme = false;
            } else {
                return Err(Refusal::Syntax);
            }
        } else if opt.eq_ignore_ascii_case(b"maxage") {
            // 0: no filter, as in Redis 7.4.
            match parse_i64(v) {
                Some(age) if age >= 0 => f.maxage = (age > 0).then_some(age as u64),
                _ => return Err(Refusal::NotAnInteger),
            }
        } else {
            return Err(Refusal::Syntax);
        }
        i += 2;
    }
    Ok((f, false))
}

impl KillFilter {
    fn keeps(&self, st: &ClientState, core: usize, now_ms: u64) -> bool {
        let me = self.asker == (core, st.id);
        let text_eq = |want: &Option<Box<[u8]>>, have: std::net::SocketAddr| {
            want.as_deref()
                .is_none_or(|w| w == have.to_string().as_bytes())
        };
        text_eq(&self.addr, st.peer)
            && text_eq(&self.laddr, st.local)
            && self.kind.is_none_or(|k| k == ClientType::of(st))
            && self.id.is_none_or(|id| id == st.id)
            && self
                .user
                .as_deref()
                .is_none_or(|u| u == st.user.name.as_bytes())
            && self
                .maxage
                .is_none_or(|a| now_ms.saturating_sub(st.created_ms) / 1000 > a)
            && !(me && self.skipme)
    }
}

impl ListFilter {
    fn keeps(&self, st: &ClientState) -> bool {
        self.kind.is_none_or(|k| k == ClientType::of(st))
            && (self.ids.is_none() || self.sorted.binary_search(&st.id).is_ok())
    }
}

/// `CLIENT UNBLOCK`'s arguments: the client, and whether with an error.
fn unblock_args<'a>(args: &Args<'a>) -> Result<(u64, bool), Refusal<'a>> {
    if args.len() > 4 {
        return Err(Refusal::SubcommandSyntax { sub: args.get(1) });
    }
    let id = parse_i64(args.get(2)).ok_or(Refusal::NotAnInteger)?;
    let error = match args.try_get(3) {
        None => false,
        Some(r) if r.eq_ignore_ascii_case(b"timeout") => false,
        Some(r) if r.eq_ignore_ascii_case(b"error") => true,
        Some(_) => return Err(Refusal::UnblockReason),
    };
    Ok((id.max(0) as u64, error))
}

impl Ctx {
    /// `CLIENT LIST|KILL|PAUSE|UNPAUSE|UNBLOCK`: checks the arguments, then
    /// asks every core (see the module documentation).
    pub(crate) fn client_command(&mut self, st: &mut ClientState, sub: ClientSub, req: Req<'_>) {
        let args = req.args;
        self.stats.requests_local += 1;
        let parsed = match sub {
            ClientSub::List => list_filter(args).map(|f| (Question::List(Arc::new(f)), false)),
            ClientSub::Kill => kill_filter(args, (self.core, st.id), &self.cfg.users)
                .map(|(f, old)| (Question::Kill(Arc::new(f)), old)),
            ClientSub::Pause => {
                let max_ms = self.cfg.limits.client_pause_max.0;
                pause_args(args, max_ms)
                    .map(|(until, mode)| (Question::Pause { until, mode }, false))
            }
            ClientSub::Unpause => Ok((Question::Unpause, false)),
            ClientSub::Unblock => {
                unblock_args(args).map(|(id, error)| (Question::Unblock { id, error }, false))
            }
            _ => Err(Refusal::Syntax),
        };
        let (what, old_form) = match parsed {
            Ok(p) => p,
            Err(why) => return self.refuse(st, &why, req.place),
        };
        let max = self.cfg.limits.client_commands_in_flight;
        if !self.admin.asks.has_room(max) {
            let why = Refusal::TooManyClientAsks { max };
            return self.refuse(st, &why, req.place);
        }
        // This core applies a pause at once, so that the client's next
        // request (maybe in the same read) is held already.
        match what {
            Question::Pause { until, mode } => self.pause(until, mode),
            Question::Unpause => self.unpause(),
            _ => {}
        }
        let seq = st.queue.push_waiting();
        let cores = self.shared.cores.max(1);
        let ask = self
            .admin
            .asks
            .open(st.me, seq, cores, what.clone(), old_form);
        for to in 0..cores {
            let what = what.clone();
            mailbox::post(
                &self.shared,
                to,
                Letter::Ask {
                    from: self.core,
                    ask,
                    what,
                },
            );
            if to != self.core {
                mailbox::wake(&self.shared, to);
            }
        }
        self.admin.posted = true;
    }

    /// Dispatches a request of a client with `CLIENT REPLY` state: its
    /// reply is dropped if replies are off or skipped.
    pub(crate) fn dispatch_muted(&mut self, st: &mut ClientState, req: Req<'_>) {
        if st.reply & reply::SKIP_NEXT != 0 {
            st.reply = (st.reply & !reply::SKIP_NEXT) | reply::SKIP;
        }
        let muting = st.reply & (reply::OFF | reply::SKIP) != 0;
        let out_len = st.out.buf_mut().len();
        let seq = muting.then(|| st.queue.mute_next());
        self.dispatch(st, req);
        // `CLIENT REPLY ON` clears the state: its own `+OK` goes out.
        let mute = st.reply & (reply::OFF | reply::SKIP) != 0;
        st.reply &= !reply::SKIP;
        let Some(seq) = seq else { return };
        if !mute {
            st.queue.unmute(seq);
        } else if st.queue.next_seq() == seq {
            // No slot taken: any reply was written at once; take it back.
            st.queue.unmute(seq);
            st.out.buf_mut().truncate(out_len);
        }
    }
}

impl Worker {
    /// Answers another core's (or this core's) question from this core's
    /// clients.
    pub(crate) fn answer(&mut self, what: &Question) -> Answer {
        let core = self.ctx.core;
        let now = self.ctx.now_ms;
        match what {
            Question::List(f) => {
                // Bounded by the output limit: a reply past it closes the
                // asking client anyway.
                let limit = match self.ctx.cfg.limits.output_hard_limit as usize {
                    0 => usize::MAX,
                    n => n,
                };
                let mut bytes = 0;
                let mut lines = Vec::new();
                for (_, c) in self.clients.iter() {
                    if bytes > limit {
                        break;
                    }
                    if f.keeps(&c.st) {
                        let mut line = String::new();
                        client_line(&mut line, &c.st, now, core);
                        bytes += line.len() + 1;
                        lines.push((c.st.id, line));
                    }
                }
                Answer::Lines(lines)
            }
            Question::Kill(f) => {
                let doomed: Vec<usize> = self
                    .clients
                    .iter()
                    .filter(|(_, c)| c.st.phase != Phase::Kill && f.keeps(&c.st, core, now))
                    .map(|(i, _)| i)
                    .collect();
                for &idx in &doomed {
                    self.kill_client(idx, f.asker == (core, self.clients[idx].st.id));
                }
                Answer::Count(doomed.len() as u64)
            }
            Question::Unblock { id, error } => {
                let found = self
                    .clients
                    .iter()
                    .find(|(_, c)| c.st.id == *id && c.st.blocked.is_some())
                    .map(|(i, _)| i);
                Answer::Count(match found {
                    Some(idx) => self.unblock_client(idx, *error) as u64,
                    None => 0,
                })
            }
            Question::Pause { until, mode } => {
                self.ctx.pause(*until, *mode);
                Answer::Done
            }
            Question::Unpause => {
                self.ctx.admin.pause = None;
                self.end_pause();
                Answer::Done
            }
        }
    }

    /// `CLIENT KILL` of client `idx`: closed at once, as when it leaves
    /// (a blocking command ended at Redis, subscriptions dropped); the
    /// asking client itself is closed after its reply, as Redis does.
    fn kill_client(&mut self, idx: usize, asker: bool) {
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        self.ctx.stats.clients_killed += 1;
        if asker {
            c.st.phase = Phase::Draining;
            c.st.inbuf.clear();
            return;
        }
        if c.st.blocked.is_some() || c.st.pin.is_some() || c.st.tx.is_some() {
            self.ctx.client_leaving(&mut c.st);
        }
        c.st.phase = Phase::Kill;
        self.ctx.wake.client(&mut c.st);
        self.client_leaves_pubsub(idx);
    }

    /// `CLIENT UNBLOCK` of client `idx`, blocked: `CLIENT UNBLOCK <Redis's
    /// id> TIMEOUT|ERROR` on each connection its block runs on, so that its
    /// command gets Redis's own reply (nil or `-UNBLOCKED …`). Whether it
    /// was sent.
    fn unblock_client(&mut self, idx: usize, error: bool) -> bool {
        let st = &self.clients[idx].st;
        let Some(bl) = st.blocked.as_ref() else {
            return false;
        };
        let (client, seq) = ((st.me.idx, st.me.gen), bl.seq);
        let conns: Vec<usize> = std::iter::once(bl.b)
            .chain(st.wait_conns.iter().map(|&(b, _)| b))
            .collect();
        let ctx = &mut self.ctx;
        let (cfg, now, versions, wake) = (&*ctx.cfg, ctx.now_ms, &mut ctx.versions, &mut ctx.wake);
        let mut sent = false;
        for b in conns {
            sent |= ctx
                .backends
                .unblock_for_user(b, client, seq, error, cfg, now, versions, wake);
        }
        sent
    }

    /// The last answer to `ask` came: its reply goes in the asking
    /// client's slot.
    pub(crate) fn ask_done(&mut self, mut ask: Ask) {
        // A list longer than the output limit closes the client anyway:
        // its text stops there (`ID` may name one client many times).
        let limit = match self.ctx.cfg.limits.output_hard_limit as usize {
            0 => usize::MAX,
            n => n,
        };
        let Some(c) = super::live_client(&mut self.clients, ask.client.idx, ask.client.gen) else {
            return;
        };
        let st = &mut c.st;
        let mut reply = Vec::new();
        match &ask.what {
            Question::List(f) => {
                let mut text = String::new();
                match &f.ids {
                    Some(ids) => {
                        let by_id: std::collections::HashMap<u64, &str> =
                            ask.lines.iter().map(|(i, l)| (*i, l.as_str())).collect();
                        for id in ids {
                            if text.len() > limit {
                                break;
                            }
                            if let Some(l) = by_id.get(id) {
                                text.push_str(l);
                                text.push('\n');
                            }
                        }
                    }
                    None => {
                        ask.lines.sort_unstable_by_key(|(id, _)| *id);
                        for (_, l) in &ask.lines {
                            if text.len() > limit {
                                break;
                            }
                            text.push_str(l);
                            text.push('\n');
                        }
                    }
                }
                encode::verbatim(&mut reply, text.as_bytes(), st.resp3);
            }
            Question::Kill(_) if ask.old_form => match ask.count {
                0 => Refusal::NoSuchClient.encode(&mut reply),
                _ => encode::simple(&mut reply, b"OK"),
            },
            Question::Kill(_) | Question::Unblock { .. } => {
                encode::integer(&mut reply, ask.count as i64)
            }
            Question::Pause { .. } | Question::Unpause => encode::simple(&mut reply, b"OK"),
        }
        st.queue.complete(ask.seq, &reply, st.out.buf_mut());
        self.ctx.after_output(st);
    }
}
