//! From parsed request to backend write buffer or local reply: command lookup,
//! arity, policy, key routing, splitting, and the enqueue itself.

use keyway_protocol::command::{self, acl, extract_keys, flag, CommandSpec, Lookup};
use keyway_protocol::resp::{encode, Args, Frame};

use super::backend::Purpose;
use super::backend_acl;
use super::client::{Client, ClientState, Phase};
use super::local::{self, LocalCtx};
use super::moves::Migrator;
use super::policy::{copy_to_other_db, policy, stream_read_blocks, Keys, Policy, RouteCheck};
use super::replies::Refusal;
use super::route::{
    answer_error, group_bit, groups_of_keys, merge_in_place, one_group, KeysRoute, Move, Place,
    Req, Target,
};
use super::split::{plan, write_part, Merge, SplitKind};
use super::Ctx;
use crate::routing::{GroupIndex, SlotRoute};

/// Whether a request's command is `POST` or `Host:`: the first lines of an
/// HTTP request, which Redis treats as an attack.
fn is_http(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:")
}

impl Ctx {
    /// Parses and dispatches the complete requests at the start of `buf`,
    /// returning how many bytes were consumed. Stops early when the client's
    /// pipeline is full (it is then paused) or it stops reading.
    pub(crate) fn run_frames(&mut self, c: &mut Client, buf: &[u8]) -> usize {
        // A client that must still authenticate gets Redis's limits for
        // one (10 arguments of 16 KiB), so it cannot make keyway hold a
        // large request before it has proved who it is.
        let mut unauth = !c.st.authenticated && self.cfg.users.auth_required();
        if c.st.limits_version != self.cfg_seq || c.parser.limits().unauthenticated != unauth {
            let limits = self.cfg.limits.request_limits();
            c.parser.set_limits(if unauth {
                limits.unauthenticated()
            } else {
                limits
            });
            c.st.limits_version = self.cfg_seq;
        }
        let max_pipeline = self.cfg.limits.max_pipeline;
        let mut at = 0;
        while at < buf.len() {
            if c.st.phase != Phase::Open {
                return buf.len();
            }
            if c.st.blocked_on.is_some() || c.st.blocked.is_some() {
                // Bytes that arrived before the transport stopped reading,
                // or while a blocking command of the client's is in flight.
                break;
            }
            if c.st.queue.len() >= max_pipeline {
                c.st.paused = true;
                break;
            }
            match c.parser.parse(&buf[at..]) {
                Ok(Some(frame)) => {
                    let len = frame.len();
                    let raw = match frame {
                        Frame::Multibulk { .. } => Some(&buf[at..at + len]),
                        Frame::Inline { .. } => None,
                        Frame::Empty { .. } => {
                            at += len;
                            continue;
                        }
                    };
                    let args = c.parser.args(&buf[at..]);
                    self.backpressure = None;
                    let req = Req {
                        args: &args,
                        raw,
                        place: Place::NEW,
                    };
                    // One test for `CLIENT PAUSE` (this core) and `CLIENT
                    // REPLY` (this client): see `engine::clients`.
                    if self.admin.pause.is_some() | (c.st.reply != 0) {
                        if !self.dispatch_admin(&mut c.st, req) {
                            break;
                        }
                    } else {
                        self.dispatch(&mut c.st, req);
                    }
                    if unauth && c.st.authenticated {
                        // Authenticated: the next request has the full limits.
                        c.parser.set_limits(self.cfg.limits.request_limits());
                        unauth = false;
                    }
                    at += len;
                    if let Some(b) = self.backpressure.take() {
                        // Stop reading this client until that connection
                        // drains (`Worker::release_backpressure`).
                        c.st.blocked_on = Some(b);
                        self.stats.clients_backpressured += 1;
                        self.backends.conns[b]
                            .waiters
                            .push((c.st.me.idx, c.st.me.gen));
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.stats.errors_protocol += 1;
                    c.st.fatal(&Refusal::Protocol(e));
                    return buf.len();
                }
            }
        }
        at
    }

    /// Serves one request; its [`Place`] says whether it is new or one kept
    /// back for a migration.
    pub(crate) fn dispatch(&mut self, st: &mut ClientState, req: Req<'_>) {
        let Req { args, place, .. } = req;
        if place.at.is_none() {
            self.stats.requests += 1;
            // Untimed unless it is counted as served below.
            st.queue.stamp.cmd = super::meters::NO_CMD;
        }
        if place.exec || st.tx.is_some() {
            // Cold: a transaction is open, or this is one's EXEC.
            if place.exec {
                return self.exec_block(st, req);
            }
            if place.at.is_none() && st.monitor.is_some() && self.monitor_in_multi(st, args) {
                return;
            }
            if place.at.is_none() && self.in_multi(st, req) {
                return;
            }
        }
        let spec = match command::lookup(args.get(0), args.try_get(1)) {
            Lookup::Found(s) => s,
            // Not Redis commands, so checked off the hot path.
            Lookup::UnknownCommand if is_http(args.get(0)) => return self.cross_protocol(st),
            Lookup::UnknownCommand => {
                return self.refuse(st, &Refusal::UnknownCommand { args }, place)
            }
            Lookup::UnknownSubcommand(c) => {
                let why = Refusal::UnknownSubcommand {
                    sub: args.get(1),
                    command: c.name,
                };
                return self.refuse(st, &why, place);
            }
        };
        st.last_cmd = spec.name;
        if !spec.arity_ok(args.len()) {
            self.cmds.reject(spec.id);
            let why = Refusal::WrongArity { command: spec.name };
            return self.refuse(st, &why, place);
        }
        // Authentication and ACL rules: one test for a client with nothing
        // to check (see `engine::auth`).
        if !st.acl_free {
            if let Some(why) = self.acl_refusal(st, spec, args, false) {
                self.cmds.reject(spec.id);
                return self.refuse(st, &why, place);
            }
        }
        // RESP2 subscribed mode: one test on a pointer for other clients
        // (a RESP3 client may send any command while subscribed).
        if st.subs.is_some()
            && !st.resp3
            && place.at.is_none()
            && self.subscribed_mode(st, spec, args)
        {
            return;
        }
        // MONITOR mode: one test on a pointer for other clients.
        if st.monitor.is_some() && place.at.is_none() && self.monitor_mode(st, spec, args) {
            return;
        }
        let policy = policy(spec);
        let routed = matches!(
            policy,
            Policy::Route { .. }
                | Policy::Split(_)
                | Policy::FanOut(_)
                | Policy::Scripts(_)
                | Policy::Block(_)
                | Policy::Wait
                | Policy::Tx(super::policy::TxCmd::Watch)
                | Policy::Keyspace(_)
        );
        if routed {
            if let Some(reason) = self.cfg.fence.clone() {
                self.cmds.reject(spec.id);
                return self.refuse(st, &Refusal::Fenced { reason: &reason }, place);
            }
        }
        if self.memory.over && routed && place.at.is_none() {
            self.cmds.reject(spec.id);
            self.stats.requests_oom += 1;
            let max = self.cfg.limits.max_memory;
            return self.refuse(st, &Refusal::Oom { max }, place);
        }
        if place.at.is_none()
            && st.queue.has_kept()
            && matches!(
                policy,
                Policy::Route { .. }
                    | Policy::Split(_)
                    | Policy::FanOut(_)
                    | Policy::Scripts(_)
                    | Policy::Block(_)
                    | Policy::Wait
                    | Policy::Keyspace(_)
            )
        {
            return self
                .sched
                .keep_behind(st, req, self.now_ms, &mut self.stats);
        }
        // A read may go to a replica (if its group reads from them); one
        // test when no group does.
        let read = self.backends.replica_reads && spec.has(flag::READONLY);
        // Once per request, not again when a kept-back one is dispatched
        // again (branch-free; an unsupported one is moved to the rejected).
        self.cmds.call(spec.id, place.at.is_none());
        if place.at.is_none() {
            st.queue.stamp = self.meters.stamp(spec.id);
        }
        match policy {
            Policy::Route {
                keys: Keys::First, ..
            } => {
                // The common case first: one key on a stable slot.
                let table = &self.cfg.table;
                let slot = table.slot_of(args.get(1));
                let target = match table.route(slot) {
                    SlotRoute::Stable(g) => {
                        if spec.has(flag::WRITE) {
                            st.wrote |= group_bit(g);
                        }
                        return self.forward(st, g, read, req);
                    }
                    SlotRoute::Unassigned => Err(Refusal::ClusterDown { slot }),
                    SlotRoute::Moving { .. } | SlotRoute::Blocked { .. } => {
                        self.target_of_keys(args, &[1], place)
                    }
                };
                self.send_to_target(st, target, read, req)
            }
            Policy::Route { keyless, check, .. } => self.route(st, spec, keyless, check, read, req),
            Policy::Split(kind) => self.split(st, kind, read, req),
            Policy::FanOut(kind) => {
                self.as_identity_of(spec, |ctx| ctx.fan_out(st, kind, read, req))
            }
            Policy::Scripts(cmd) => self.script_command(st, cmd, spec, req),
            Policy::Tx(cmd) => self.tx_command(st, cmd, req),
            Policy::Keyspace(cmd) => {
                self.as_identity_of(spec, |ctx| ctx.keyspace(st, cmd, spec, read, req))
            }
            Policy::Block(blocking) => self.block(st, blocking, req),
            Policy::Wait => self.wait(st, req),
            Policy::Kill => self.kill(st, req),
            Policy::Local(super::policy::Local::Client(sub)) if sub.cross_core() => {
                self.client_command(st, sub, req)
            }
            Policy::Local(cmd) => {
                if place.at.is_none() && st.queue.has_kept() {
                    // Behind a request kept back (a HELLO or RESET that
                    // waits, a migration): answered in its turn, in the
                    // protocol and state of that moment (`resp3::in_place`).
                    return self.keep_until_answered(st, req);
                }
                if cmd == super::policy::Local::Hello {
                    return self.hello(st, req);
                }
                if cmd == super::policy::Local::Reset && self.reset_waits(st, req) {
                    return;
                }
                self.stats.requests_local += 1;
                if cmd == super::policy::Local::Reset {
                    self.reset_state(st);
                    self.reset_protocol(st);
                    self.reset_user(st);
                }
                if let super::policy::Local::Auth | super::policy::Local::Acl(_) = cmd {
                    // They need the users and the shared logs (`engine::auth`).
                    return match place.at {
                        None => self.session_command(cmd, st, args),
                        Some(_) => super::resp3::in_place(st, place, |st| {
                            self.session_command(cmd, st, args)
                        }),
                    };
                }
                let ctx = LocalCtx {
                    core: self.core,
                    now_ms: self.now_ms,
                };
                match place.at {
                    None => local::run(cmd, st, args, &ctx),
                    // Kept back (see `engine::resp3`).
                    Some(_) => {
                        super::resp3::in_place(st, place, |st| local::run(cmd, st, args, &ctx))
                    }
                }
            }
            Policy::PubSub(cmd) => self.pubsub(st, cmd, req),
            Policy::Server(cmd) => {
                self.as_identity_of(spec, |ctx| ctx.server_command(st, cmd, req))
            }
            Policy::Monitor => self.monitor(st, req),
            Policy::Diag(cmd) => self.as_identity_of(spec, |ctx| ctx.diag(st, cmd, req)),
            Policy::Unsupported(why) => {
                self.cmds.unsupported(spec.id, place.at.is_none());
                st.queue.stamp.cmd = super::meters::NO_CMD;
                self.refuse(st, &Refusal::Unsupported { spec, why }, place);
            }
        }
    }

    /// An HTTP request reached the RESP port (a browser or `curl` made to
    /// talk to keyway by a hostile page: cross-protocol scripting). As Redis
    /// does, the connection is closed at once without a reply, and logged,
    /// so nothing after the request line runs.
    fn cross_protocol(&mut self, st: &mut ClientState) {
        self.stats.clients_cross_protocol += 1;
        if let Some(left_out) = self.log.allow(self.now_ms) {
            tracing::warn!(
                client = st.id,
                peer = %st.peer,
                earlier_lines_left_out = left_out,
                "possible security attack: a client sent an HTTP request (POST or Host:) to the RESP port; connection closed"
            );
        }
        st.inbuf = Vec::new();
        st.phase = Phase::Kill;
    }

    /// Answers an error in the request's place.
    pub(crate) fn refuse(&mut self, st: &mut ClientState, why: &Refusal<'_>, place: Place) {
        self.stats.requests_local += 1;
        self.stats.errors_refused += 1;
        self.cmds.error_reply(&why.to_reply());
        answer_error(st, why, place);
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        st: &mut ClientState,
        spec: &CommandSpec,
        keyless: &str,
        check: RouteCheck,
        read: bool,
        req: Req<'_>,
    ) {
        let Req { args, place, .. } = req;
        match check {
            RouteCheck::None => {}
            RouteCheck::StreamBlock if stream_read_blocks(args) => {
                if let Some(blocking) = super::blocking::Blocking::of(spec.name) {
                    return self.block(st, blocking, req);
                }
            }
            RouteCheck::StreamBlock => {}
            RouteCheck::CopyDb => {
                if let Some(db) = copy_to_other_db(args) {
                    return self.refuse(st, &Refusal::CopyOtherDb { db }, place);
                }
            }
        }
        let mut keys = std::mem::take(&mut self.scratch.keys);
        keys.clear();
        let scripting = spec.in_category(acl::SCRIPTING);
        let target = match extract_keys(spec, args, &mut keys) {
            // A bad key count Redis refuses itself: its own words.
            Err(_) if super::keyspace::redis_refuses_bad_numkeys(spec) => {
                super::scripts::documented_group(&self.cfg.table)
            }
            Err(e) => Err(Refusal::Keys(e)),
            // EVAL, FCALL… without keys: the documented group.
            Ok(()) if keys.is_empty() && scripting => {
                super::scripts::documented_group(&self.cfg.table)
            }
            Ok(()) if keys.is_empty() && super::keyspace::redis_refuses_bad_numkeys(spec) => {
                super::scripts::documented_group(&self.cfg.table)
            }
            Ok(()) if keys.is_empty() => Err(Refusal::Keyless { spec, why: keyless }),
            Ok(()) => self.target_of_keys(args, &keys, place),
        };
        self.scratch.keys = keys;
        if let Ok(Target::Group(g) | Target::Master(g)) = target {
            if spec.has(flag::WRITE) {
                st.wrote |= group_bit(g);
            }
        }
        if scripting {
            return self.send_script(st, spec, target, read, req);
        }
        self.send_to_target(st, target, read, req);
    }

    /// Sends, holds, moves first, or refuses, as the keys' target says; a
    /// `read` on stable slots may go to a replica.
    pub(crate) fn send_to_target(
        &mut self,
        st: &mut ClientState,
        target: Result<Target, Refusal<'_>>,
        read: bool,
        req: Req<'_>,
    ) {
        let place = req.place;
        match target {
            Ok(Target::Group(g)) => self.forward(st, g, read, req),
            Ok(Target::Master(g)) => self.forward(st, g, false, req),
            Ok(Target::Hold) => self.sched.hold(st, req, self.now_ms, &mut self.stats),
            Ok(Target::MoveFirst) => Migrator::of(self).move_first(st, req),
            Err(why) => self.refuse(st, &why, place),
        }
    }

    /// Sends the whole request to group `g`: to its master, or, for a
    /// `read`, to a replica it reads from if one is up.
    pub(super) fn forward(
        &mut self,
        st: &mut ClientState,
        g: GroupIndex,
        read: bool,
        req: Req<'_>,
    ) {
        let b = match st.pin {
            None => self
                .backends
                .conn(g, read, st.conn_slot, self.now_ms, st.resp3),
            Some(_) => self.client_conn(st, g, read),
        };
        self.forward_on(st, b, req);
    }

    /// Sends the whole request on connection `b`, or answers it with the
    /// backend's error if that is down; returns its reply slot if sent.
    #[inline(always)]
    pub(super) fn forward_on(
        &mut self,
        st: &mut ClientState,
        b: usize,
        req: Req<'_>,
    ) -> Option<u64> {
        let Req { args, raw, place } = req;
        if let Some(why) = self.backends.down_error(b) {
            self.stats.errors_backend += 1;
            self.stats.requests_local += 1;
            self.cmds.error_reply(&why.to_reply());
            answer_error(st, &why, place);
            return None;
        }
        let seq = match place.at {
            None => st.queue.push_waiting(),
            Some(seq) => {
                if let Some(since) = place.since_ms {
                    self.kept_slow(st, args, since);
                }
                st.queue.set_waiting(seq);
                seq
            }
        };
        self.stats.requests_forwarded += 1;
        self.enqueue(st, b, seq, Purpose::Whole, |out| match raw {
            Some(bytes) => out.extend_from_slice(bytes),
            None => encode::request(out, args),
        });
        Some(seq)
    }

    /// Splits a multi-key request by group; a request whose keys share one
    /// group is forwarded whole.
    fn split(&mut self, st: &mut ClientState, kind: SplitKind, read: bool, req: Req<'_>) {
        let Req { args, place, .. } = req;
        if kind == SplitKind::Mset && args.len() % 2 == 0 {
            let why = Refusal::WrongArity { command: "mset" };
            return self.refuse(st, &why, place);
        }
        let mut sc = std::mem::take(&mut self.scratch);
        sc.keys.clear();
        sc.groups.clear();
        sc.keys
            .extend((1..args.len()).step_by(kind.stride()).map(|i| i as u32));
        let read = match self.route_keys(args, &sc.keys, &mut sc.groups, &mut sc.moves, place) {
            Err(why) => {
                self.scratch = sc;
                return self.refuse(st, &why, place);
            }
            Ok(KeysRoute::Wait(t)) => {
                self.scratch = sc;
                return self.send_to_target(st, Ok(t), false, req);
            }
            Ok(KeysRoute::Stable) => read,
            Ok(KeysRoute::Moved) => false,
        };
        let first = sc.groups[0];
        if sc.groups.iter().all(|&g| g == first) {
            self.scratch = sc;
            return self.forward(st, first, read, req);
        }
        plan(&sc.groups, &mut sc.part_groups, &mut sc.key_parts);
        let merge = Merge::new(kind, sc.part_groups.len(), &sc.key_parts);
        let seq = merge_in_place(st, place, merge);
        self.stats.requests_split += 1;
        for (part, &g) in sc.part_groups.iter().enumerate() {
            let part = part as u16;
            if kind != SplitKind::Mget {
                // MSET, DEL, UNLINK write (EXISTS, TOUCH do not, but
                // counting them only makes a WAIT ask one group more).
                st.wrote |= group_bit(g);
            }
            let b = self.client_conn(st, g, read);
            self.enqueue(st, b, seq, Purpose::Part(part), |out| {
                write_part(out, kind, args, &sc.keys, &sc.key_parts, part)
            });
        }
        self.scratch = sc;
    }

    /// Sends the request to every group and merges the replies (`DBSIZE`);
    /// holds it whole while any group is on hold.
    pub(super) fn fan_out(
        &mut self,
        st: &mut ClientState,
        kind: SplitKind,
        read: bool,
        req: Req<'_>,
    ) {
        let merge = Merge::new(kind, self.cfg.table.groups().len(), &[]);
        self.fan_out_merged(st, merge, read, req);
    }

    /// Sends the request to every group, its replies merged by `merge`
    /// (one part per group); holds it whole while any group is on hold.
    pub(super) fn fan_out_merged(
        &mut self,
        st: &mut ClientState,
        merge: Merge,
        read: bool,
        req: Req<'_>,
    ) {
        let Req {
            args, raw, place, ..
        } = req;
        if self.cfg.table.has_holds() {
            return self.sched.hold(st, req, self.now_ms, &mut self.stats);
        }
        let groups = self.cfg.table.groups().len();
        let seq = merge_in_place(st, place, merge);
        self.stats.requests_split += 1;
        for g in 0..groups {
            let b = self.client_conn(st, g as GroupIndex, read);
            self.enqueue(st, b, seq, Purpose::Part(g as u16), |out| match raw {
                Some(bytes) => out.extend_from_slice(bytes),
                None => encode::request(out, args),
            });
        }
    }

    /// Appends a request (or part of one, or a move for it: `purpose`) for
    /// `seq` to backend `b`, or answers it with the backend's error if it is
    /// down.
    #[inline(always)]
    pub(crate) fn enqueue(
        &mut self,
        st: &mut ClientState,
        b: usize,
        seq: u64,
        purpose: Purpose,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        if let Some(why) = self.backends.down_error(b) {
            self.stats.errors_backend += 1;
            let reply = why.to_reply();
            let out = st.out.buf_mut();
            return match purpose {
                Purpose::Whole | Purpose::Script => st.queue.complete(seq, &reply, out),
                Purpose::Part(part) => {
                    // An undo of a fan-out that failed everywhere is empty.
                    let _ = st
                        .queue
                        .complete_part(seq, part, &reply, out, 0, |_| Vec::new());
                }
                // A transaction's EXEC gets the error (its slot waits).
                Purpose::Skip => {}
                // Moves go through `Migrator::send` once their source is
                // known to be up; one that found it down here would fail
                // as its reply would.
                Purpose::Move | Purpose::MoveKey(_) => {
                    if let Some(d) = st.queue.deferred_mut(seq) {
                        super::moves::move_replied(d, None, &reply);
                    }
                }
            };
        }
        let owner = st.owner(seq, purpose);
        let (cfg, now_ms) = (&*self.cfg, self.now_ms);
        // A maintenance command runs as the admin login (see
        // `engine::backend_acl`).
        let admin = self.maintenance && self.backends.elevate(b, now_ms);
        let (versions, wake) = (&mut self.versions, &mut self.wake);
        (self.backends).append(
            b,
            owner,
            cfg,
            now_ms,
            versions,
            wake,
            &mut self.backpressure,
            write,
        );
        if admin {
            self.backends.restore(b, now_ms);
        }
    }

    /// Runs `f`, whose requests are command `spec`'s, as the admin login
    /// if `spec` is a maintenance command.
    #[cold]
    fn as_identity_of(&mut self, spec: &CommandSpec, f: impl FnOnce(&mut Ctx)) {
        self.maintenance = backend_acl::identity(spec) == backend_acl::Identity::Maintenance;
        f(self);
        self.maintenance = false;
    }

    /// [`groups_of_keys`] under the current table and the keys this core
    /// knows moved (`move_batch::MovedKeys`).
    pub(crate) fn route_keys(
        &self,
        args: &Args<'_>,
        keys: &[u32],
        groups: &mut Vec<GroupIndex>,
        moves: &mut Vec<Move>,
        place: Place,
    ) -> Result<KeysRoute, Refusal<'static>> {
        groups_of_keys(
            &self.cfg.table,
            self.sched.known(),
            args,
            keys,
            groups,
            moves,
            place,
        )
    }

    /// The target of a request all of whose keys must be in one group.
    pub(crate) fn target_of_keys(
        &mut self,
        args: &Args<'_>,
        keys: &[u32],
        place: Place,
    ) -> Result<Target, Refusal<'static>> {
        let mut groups = std::mem::take(&mut self.scratch.groups);
        let mut moves = std::mem::take(&mut self.scratch.moves);
        let target = self
            .route_keys(args, keys, &mut groups, &mut moves, place)
            .and_then(|route| one_group(&groups, route));
        if let Ok(Target::Master(_)) = target {
            self.stats.migration_redirects += 1;
        }
        self.scratch.groups = groups;
        self.scratch.moves = moves;
        target
    }
}
