//! The request path of the commands that give a client state at a backend:
//! transactions (`MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`) and
//! blocking commands (see [`super::blocking`]). The rest of the request path
//! is in `dispatch.rs`.
//!
//! ## Transactions
//!
//! keyway queues a transaction itself: `MULTI` answers `+OK`, each command
//! is checked as Redis checks it when queueing (unknown command, arity,
//! `no-multi`) plus keyway's own rule — every key of the transaction, and of
//! its `WATCH`, in one group, else `-CROSSSLOT` — and answered `+QUEUED`;
//! an error there makes `EXEC` answer `-EXECABORT`, as in Redis. At `EXEC`
//! the whole block — `MULTI`, the commands, `EXEC` — is appended to one
//! backend connection in one piece, so no other client's request comes
//! between its commands: a transaction without `WATCH` needs no connection
//! of its own and runs on the client's shared, pipelined connection.
//! Redis's `+OK` and `+QUEUED` replies to the block are dropped
//! ([`Purpose::Skip`]); `EXEC`'s reply is the client's.
//!
//! `WATCH` is different: Redis keeps the watched keys per connection, and
//! any other client's `EXEC`, `DISCARD` or `UNWATCH` on it would end the
//! watch. So `WATCH` leases a dedicated connection to the keys' group (see
//! [`super::dedicated`]), which the client keeps — every request of the
//! client to that group goes on it, in order — until `EXEC`, `DISCARD`,
//! `UNWATCH`, `RESET` or its leaving. If that connection fails, the watch
//! is lost and `EXEC` answers nil, as if a watched key had changed (the
//! client retries, as it does for a real conflict).
//!
//! If the users changed while the transaction was queued, `EXEC` checks
//! its commands against the user's new rules first, as Redis does (see
//! [`super::tx_recheck`]).
//!
//! An `EXEC` whose keys are on a migrating slot is kept back while they
//! move, as any command is (see [`super::moves`]): keyway encodes it as a
//! request `EXEC <count> <block> <key>…` ([`Place::exec`]: only keyway makes
//! one) that the migration path moves keys for and dispatches again.
//!
//! ## Blocking commands
//!
//! See [`super::blocking`]: sent on a dedicated connection (the client's
//! `WATCH` connection if it has one to that group), with the client's later
//! requests read but not run until the reply.

use keyway_protocol::command::{self, extract_keys, flag, Lookup};
use keyway_protocol::resp::{encode, Frame, RequestLimits, RequestParser};

use super::backend::{Internal, Purpose};
use super::blocking::{self, Blocking};
use super::client::{Blocked, ClientState, Phase, Pin};
use super::moves::Migrator;
use super::policy::{copy_to_other_db, policy, Local, Policy, RouteCheck, TxCmd};
use super::pubsub::PubSubCmd;
use super::replies::Refusal;
use super::route::{answer_in_place, KeysRoute, Place, Req, Target};
use super::Ctx;
use crate::routing::{GroupIndex, SlotRoute};

/// A transaction being queued (`MULTI` is open).
#[derive(Debug, Default)]
pub(crate) struct Tx {
    /// The queued commands' frames, in order.
    pub(super) frames: Vec<u8>,
    count: u32,
    /// The group every key queued so far is in.
    group: Option<GroupIndex>,
    /// The queued commands' keys, each encoded as a bulk string.
    keys: Vec<u8>,
    nkeys: u32,
    /// A command was refused while queueing: `EXEC` aborts.
    dirty: bool,
    /// A command `CLIENT PAUSE WRITE` holds is queued: so is `EXEC` (see
    /// `engine::pause`).
    pub writes: bool,
    /// The users changed while it was queued, or a `SORT … BY|GET` the
    /// user may not use is queued: `EXEC` checks its commands again (see
    /// `engine::tx_recheck`).
    pub recheck: bool,
}

impl Tx {
    /// Bytes it holds.
    pub fn bytes(&self) -> usize {
        self.frames.capacity() + self.keys.capacity()
    }

    /// Commands queued (`CLIENT LIST`'s `multi=`).
    pub fn queued(&self) -> u32 {
        self.count
    }
}

/// Limits for frames keyway built itself and parses again (a kept-back
/// request, a transaction's `EXEC`): its own, so as large as can be.
pub(crate) fn trusted_limits() -> RequestLimits {
    RequestLimits {
        max_request_bytes: u32::MAX as usize,
        max_arguments: i32::MAX as usize,
        max_bulk_bytes: u32::MAX as usize,
        max_inline_bytes: 64 << 10,
        unauthenticated: false,
    }
}

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";
const NIL_ARRAY: &[u8] = b"*-1\r\n";
/// `PUBLISH __keyway__:wait ""`: see [`Ctx::wait`].
const WAIT_BUMP: &[u8] = b"*3\r\n$7\r\nPUBLISH\r\n$15\r\n__keyway__:wait\r\n$0\r\n\r\n";

/// Why a `PING`/`ECHO`/`SELECT 0` may be queued: Redis answers them as
/// keyway would.
fn runs_at_backend(local: Local, args: &keyway_protocol::resp::Args<'_>) -> bool {
    match local {
        Local::Ping | Local::Echo | Local::Time => true,
        Local::Select => args.try_get(1) == Some(b"0"),
        _ => false,
    }
}

impl Ctx {
    /// A request from a client inside `MULTI`: queued, refused (making
    /// `EXEC` abort), or one of the commands Redis runs at once there.
    /// Returns false for `QUIT` and `RESET`, which go the usual way.
    pub(super) fn in_multi(&mut self, st: &mut ClientState, req: Req<'_>) -> bool {
        let Req {
            args, raw, place, ..
        } = req;
        let spec = match command::lookup(args.get(0), args.try_get(1)) {
            Lookup::Found(s) => s,
            Lookup::UnknownCommand => {
                return self.tx_error(st, &Refusal::UnknownCommand { args });
            }
            Lookup::UnknownSubcommand(c) => {
                let why = Refusal::UnknownSubcommand {
                    sub: args.get(1),
                    command: c.name,
                };
                return self.tx_error(st, &why);
            }
        };
        let policy = policy(spec);
        if !spec.arity_ok(args.len()) {
            let arity = Refusal::WrongArity { command: spec.name };
            if policy == Policy::Tx(TxCmd::Exec) {
                // Redis discards the transaction at once.
                let text = arity.to_string();
                let why = text.strip_prefix("ERR ").unwrap_or(&text);
                self.end_tx(st, true);
                self.refuse(st, &Refusal::ExecAbortBecause { why }, place);
                return true;
            }
            return self.tx_error(st, &arity);
        }
        match policy {
            Policy::Tx(TxCmd::Exec) => {
                self.exec(st, place);
                return true;
            }
            Policy::Tx(TxCmd::Discard) => {
                self.stats.requests_local += 1;
                self.end_tx(st, true);
                st.reply(|o| encode::simple(o, b"OK"));
                return true;
            }
            Policy::Tx(TxCmd::Multi) => {
                self.refuse(st, &Refusal::MultiNested, place);
                return true;
            }
            Policy::Tx(TxCmd::Watch) => {
                self.refuse(st, &Refusal::WatchInMulti, place);
                return true;
            }
            Policy::Local(Local::Quit | Local::Reset) => return false,
            _ => {}
        }
        if spec.has(flag::NO_MULTI) {
            return self.tx_error(st, &Refusal::NotAllowedInMulti);
        }
        // ACL rules at queue time, as Redis checks them. `SORT`'s `BY`/`GET`
        // patterns are checked by Redis when the command runs: it is
        // queued, and its error is in `EXEC`'s reply (see
        // `engine::tx_recheck`).
        let mut sort_denied = false;
        if !st.acl_free {
            match self.acl_refusal(st, spec, args, true) {
                Some(Refusal::SortOptionDenied { .. }) => sort_denied = true,
                Some(why) => return self.tx_error(st, &why),
                None => {}
            }
        }
        let mut keys = std::mem::take(&mut self.scratch.keys);
        keys.clear();
        let found = match policy {
            Policy::Local(l) if runs_at_backend(l, args) => Ok(()),
            Policy::Local(_) => Err(Refusal::LocalInMulti { spec }),
            Policy::Route {
                check: RouteCheck::CopyDb,
                ..
            } => match copy_to_other_db(args) {
                Some(db) => Err(Refusal::CopyOtherDb { db }),
                None => extract_keys(spec, args, &mut keys).map_err(Refusal::Keys),
            },
            Policy::Route { .. } | Policy::Block(_) => {
                extract_keys(spec, args, &mut keys).map_err(Refusal::Keys)
            }
            Policy::Split(kind) => {
                if kind == super::split::SplitKind::Mset && args.len() % 2 == 0 {
                    Err(Refusal::WrongArity { command: "mset" })
                } else {
                    keys.extend((1..args.len()).step_by(kind.stride()).map(|i| i as u32));
                    Ok(())
                }
            }
            // Queued as Redis queues it; the watch ends with EXEC anyway.
            Policy::Tx(_) => Ok(()),
            // Redis answers it at once inside a transaction.
            Policy::Wait => Ok(()),
            Policy::Kill => Err(Refusal::NotInTransaction {
                spec,
                why: "it must reach every group",
            }),
            // Routed by its channel, like a key.
            Policy::PubSub(PubSubCmd::Publish) => {
                keys.push(1);
                Ok(())
            }
            Policy::PubSub(PubSubCmd::Help) => Ok(()),
            Policy::PubSub(_) => Err(Refusal::NotInTransaction {
                spec,
                why: "subscriptions are kept by keyway, not by a backend connection",
            }),
            Policy::FanOut(_) | Policy::Keyspace(_) | Policy::Server(_) => {
                Err(Refusal::NotInTransaction {
                    spec,
                    why: "it must reach every group",
                })
            }
            // FUNCTION LIST|DUMP|STATS: on the keyless group, as outside.
            Policy::Scripts(super::policy::ScriptCmd::DocumentedGroup) => Ok(()),
            Policy::Scripts(_) => Err(Refusal::NotInTransaction {
                spec,
                why: "it must reach every group",
            }),
            Policy::Monitor => Err(Refusal::NotInTransaction {
                spec,
                why: "it needs connections of its own",
            }),
            Policy::Diag(_) => Err(Refusal::NotInTransaction {
                spec,
                why: "it must reach every group",
            }),
            Policy::Unsupported(why) => Err(Refusal::Unsupported { spec, why }),
        };
        let keyless_routed = keys.is_empty()
            && matches!(
                policy,
                Policy::Route { .. } | Policy::Scripts(super::policy::ScriptCmd::DocumentedGroup)
            );
        let group = found.and_then(|()| self.group_of(args, &keys));
        // A routed command naming no keys (a script called with none) runs
        // where it would outside a transaction: on the keyless group.
        let group = match group {
            Ok(None) if keyless_routed => match self.keyless_group() {
                Some(g) => Ok(Some(g)),
                None => Err(Refusal::ClusterDown { slot: 0 }),
            },
            other => other,
        };
        let group = match group {
            Ok(g) => g,
            Err(why) => {
                self.scratch.keys = keys;
                return self.tx_error(st, &why);
            }
        };
        let pin_group = self.watching(st).map(|p| p.group);
        let limit = self.cfg.limits.max_request_bytes;
        let Some(tx) = st.tx.as_mut() else {
            self.scratch.keys = keys;
            return false;
        };
        if let Some(g) = group {
            if tx.group.or(pin_group).is_some_and(|t| t != g) {
                self.scratch.keys = keys;
                return self.tx_error(st, &Refusal::CrossSlot);
            }
            tx.group = Some(g);
        }
        // Each queued command is one reply awaited at EXEC (an `Inflight`
        // of 48 bytes): bounded as a request's arguments are.
        let most = self.cfg.limits.max_arguments;
        if tx.count as usize >= most {
            self.scratch.keys = keys;
            return self.tx_error(st, &Refusal::TransactionTooManyCommands { limit: most });
        }
        let before = tx.frames.len();
        match raw {
            Some(bytes) => tx.frames.extend_from_slice(bytes),
            None => encode::request(&mut tx.frames, args),
        }
        if tx.frames.len() as u64 > limit {
            tx.frames.truncate(before);
            self.scratch.keys = keys;
            return self.tx_error(st, &Refusal::TransactionTooLarge { limit });
        }
        // Queued as it is: `EXEC` replaces it with its error, after checking
        // it again (its user may have lost `SORT` meanwhile).
        tx.recheck |= sort_denied;
        tx.count += 1;
        tx.writes |= super::pause::held_in_write_pause(spec);
        for &k in &keys {
            encode::bulk(&mut tx.keys, args.get(k as usize));
            tx.nkeys += 1;
        }
        self.scratch.keys = keys;
        self.stats.requests_local += 1;
        st.reply(|o| encode::simple(o, b"QUEUED"));
        true
    }

    /// The group all of `keys` are in (`None` for no keys), whatever the
    /// state of their slots.
    fn group_of(
        &mut self,
        args: &keyway_protocol::resp::Args<'_>,
        keys: &[u32],
    ) -> Result<Option<GroupIndex>, Refusal<'static>> {
        if keys.is_empty() {
            return Ok(None);
        }
        let mut groups = std::mem::take(&mut self.scratch.groups);
        let mut moves = std::mem::take(&mut self.scratch.moves);
        let place = Place {
            moved: true,
            ..Place::NEW
        };
        let r = self.route_keys(args, keys, &mut groups, &mut moves, place);
        let first = groups.first().copied();
        let one = groups.iter().all(|&g| Some(g) == first);
        self.scratch.groups = groups;
        self.scratch.moves = moves;
        r?;
        if !one {
            return Err(Refusal::CrossSlot);
        }
        Ok(first)
    }

    /// Refuses a command inside `MULTI`: `EXEC` will abort.
    pub(super) fn tx_error(&mut self, st: &mut ClientState, why: &Refusal<'_>) -> bool {
        if let Some(tx) = st.tx.as_mut() {
            tx.dirty = true;
        }
        self.refuse(st, why, Place::NEW);
        true
    }

    /// Ends the transaction and the watch, if any (`unwatch`: the watch
    /// may still be on at Redis).
    pub(super) fn end_tx(&mut self, st: &mut ClientState, unwatch: bool) {
        st.tx = None;
        self.end_watch(st, unwatch);
    }

    /// The watch is over: `UNWATCH` is sent if it may still be on
    /// (`unwatch`), and the connection is given back once what the client
    /// has in flight on it is answered (see [`Pin::ending`]).
    pub(super) fn end_watch(&mut self, st: &mut ClientState, unwatch: bool) {
        let Some(mut p) = st.pin else {
            return;
        };
        if !self.pin_alive(st, p) {
            st.pin = None;
            return;
        }
        if unwatch && !p.ending {
            let (cfg, now) = (&*self.cfg, self.now_ms);
            let (versions, wake) = (&mut self.versions, &mut self.wake);
            self.backends.send_internal(
                p.b,
                super::dedicated::UNWATCH,
                Internal::Ignore,
                cfg,
                now,
                versions,
                wake,
            );
        }
        p.ending = true;
        st.pin = Some(p);
        if self.backends.conns[p.b].inflight.is_empty() {
            st.pin = None;
            self.release_conn(p.b, p.gen, false);
        }
    }

    /// The watch, if the client watches keys now (not one ending).
    fn watching(&self, st: &ClientState) -> Option<Pin> {
        st.pin.filter(|p| !p.ending)
    }

    /// Gives dedicated connection `b` back (see [`super::dedicated`]), if
    /// it is still generation `gen` (a connection that failed was retired,
    /// and its slab index may serve another connection now).
    pub(super) fn release_conn(&mut self, b: usize, gen: u32, unwatch: bool) {
        if self.backends.conns.get(b).is_none_or(|c| c.gen != gen) {
            return;
        }
        let (cfg, now) = (&*self.cfg, self.now_ms);
        self.backends
            .release(b, unwatch, cfg, now, &mut self.versions, &mut self.wake);
    }

    /// Whether the client's `WATCH` connection is still the one it leased.
    fn pin_alive(&self, st: &ClientState, p: Pin) -> bool {
        self.backends.conns.get(p.b).is_some_and(|c| {
            c.gen == p.gen
                && c.dedicated
                    .as_ref()
                    .is_some_and(|d| d.state == super::dedicated::Use::Leased(st.me.idx, st.me.gen))
        })
    }

    /// The connection for client `st`'s request to group `g`: its `WATCH`
    /// connection if it has one there, else the pool's. (Not inlined: the
    /// request path of a client without one only tests `ClientState::pin`.)
    #[inline(never)]
    pub(super) fn client_conn(&mut self, st: &ClientState, g: GroupIndex, read: bool) -> usize {
        if let Some(p) = st.pin {
            if p.group == g && self.pin_alive(st, p) {
                return p.b;
            }
        }
        self.backends
            .conn(g, read, st.conn_slot, self.now_ms, st.resp3)
    }

    /// `EXEC` of the open transaction.
    fn exec(&mut self, st: &mut ClientState, place: Place) {
        let Some(mut tx) = st.tx.take() else {
            return self.refuse(st, &Refusal::ExecWithoutMulti, place);
        };
        if tx.dirty {
            self.end_tx(st, true);
            return self.refuse(st, &Refusal::ExecAbort, place);
        }
        if let Some(reason) = self.cfg.fence.clone() {
            self.end_tx(st, true);
            return self.refuse(st, &Refusal::Fenced { reason: &reason }, place);
        }
        if self.memory.over {
            self.end_tx(st, true);
            self.stats.requests_oom += 1;
            let max = self.cfg.limits.max_memory;
            return self.refuse(st, &Refusal::Oom { max }, place);
        }
        // After the refusals of the whole EXEC: an EXEC that runs nothing
        // logs no ACL refusal of its commands.
        if tx.recheck {
            self.recheck_tx(st, &mut tx);
        }
        if tx.count == 0 && self.watching(st).is_none() {
            self.stats.requests_local += 1;
            return answer_in_place(st, b"*0\r\n", place);
        }
        // The common case: every key on a stable slot of one group, nothing
        // of the client kept back: the block goes out as it is queued.
        if place.at.is_none() && !st.queue.has_kept() {
            if let Some(g) = self.stable_group(&tx, st) {
                let pin = self.watching(st);
                let count = tx.count as usize;
                return self.send_block(st, place, pin, g, count, |out| {
                    out.extend_from_slice(MULTI);
                    out.extend_from_slice(&tx.frames);
                    out.extend_from_slice(EXEC);
                });
            }
        }
        // Else keys move or wait first: EXEC <count> <MULTI … EXEC> <key>…,
        // a request the migration path can keep back and dispatch again.
        let mut block = Vec::with_capacity(MULTI.len() + tx.frames.len() + EXEC.len());
        block.extend_from_slice(MULTI);
        block.extend_from_slice(&tx.frames);
        block.extend_from_slice(EXEC);
        let mut frame = Vec::with_capacity(block.len() + tx.keys.len() + 64);
        encode::array_header(&mut frame, 3 + tx.nkeys as usize);
        encode::bulk(&mut frame, b"EXEC");
        encode::bulk(&mut frame, tx.count.to_string().as_bytes());
        encode::bulk(&mut frame, &block);
        frame.extend_from_slice(&tx.keys);
        drop(block);
        let mut parser = RequestParser::new(trusted_limits());
        let Ok(Some(Frame::Multibulk { .. })) = parser.parse(&frame) else {
            self.end_tx(st, true);
            return self.refuse(st, &Refusal::KeptBackUnparsed, place);
        };
        let args = parser.args(&frame);
        let req = Req {
            args: &args,
            raw: Some(&frame),
            place: Place {
                exec: true,
                ..place
            },
        };
        self.exec_block(st, req);
    }

    /// The group of a transaction whose keys are all on stable slots of
    /// one group (the watch's, or the keyless group, if it has none);
    /// `None` if any key's slot is moving, held or unassigned.
    fn stable_group(&self, tx: &Tx, st: &ClientState) -> Option<GroupIndex> {
        let table = &self.cfg.table;
        let mut group = None;
        let mut rest = tx.keys.as_slice();
        while !rest.is_empty() {
            // `$<len>\r\n<key>\r\n`, as `in_multi` encoded it.
            let eol = rest.iter().position(|&c| c == b'\r')?;
            let len: usize = std::str::from_utf8(rest.get(1..eol)?).ok()?.parse().ok()?;
            let key = rest.get(eol + 2..eol + 2 + len)?;
            rest = rest.get(eol + 4 + len..)?;
            match table.route(table.slot_of(key)) {
                SlotRoute::Stable(g) if group.is_none_or(|x| x == g) => group = Some(g),
                _ => return None,
            }
        }
        match group {
            Some(g) => Some(g),
            None => self
                .watching(st)
                .map(|p| p.group)
                .or_else(|| match table.route(0) {
                    SlotRoute::Stable(g) => Some(g),
                    _ => None,
                }),
        }
    }

    /// Sends a transaction's block (a request `EXEC <count> <block>
    /// <key>…`, see the module documentation) to its keys' group, after
    /// moving them if their slot migrates.
    pub(super) fn exec_block(&mut self, st: &mut ClientState, req: Req<'_>) {
        let Req { args, place, .. } = req;
        if place.at.is_none() && st.queue.has_kept() {
            return self
                .sched
                .keep_behind(st, req, self.now_ms, &mut self.stats);
        }
        let count: usize = std::str::from_utf8(args.get(1))
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let pin = self.watching(st);
        let g = if args.len() <= 3 {
            pin.map_or_else(|| self.keyless_group(), |p| Some(p.group))
        } else {
            let mut keys = std::mem::take(&mut self.scratch.keys);
            keys.clear();
            keys.extend((3..args.len()).map(|i| i as u32));
            let mut groups = std::mem::take(&mut self.scratch.groups);
            let mut moves = std::mem::take(&mut self.scratch.moves);
            let r = self.route_keys(args, &keys, &mut groups, &mut moves, place);
            let first = groups.first().copied();
            let one = groups.iter().all(|&g| Some(g) == first);
            self.scratch.keys = keys;
            self.scratch.groups = groups;
            self.scratch.moves = moves;
            match r {
                Err(why) => {
                    self.end_watch(st, true);
                    return self.refuse(st, &why, place);
                }
                Ok(KeysRoute::Wait(t)) => {
                    return match t {
                        Target::Hold => self.sched.hold(st, req, self.now_ms, &mut self.stats),
                        _ => Migrator::of(self).move_first(st, req),
                    };
                }
                Ok(_) if !one => {
                    self.end_watch(st, true);
                    return self.refuse(st, &Refusal::TransactionSplit, place);
                }
                Ok(_) => first,
            }
        };
        let Some(g) = g else {
            self.end_watch(st, true);
            let slot = 0;
            return self.refuse(st, &Refusal::ClusterDown { slot }, place);
        };
        let block = args.get(2);
        self.send_block(st, place, pin, g, count, |out| out.extend_from_slice(block));
    }

    /// Sends a transaction of `count` commands to group `g` (on the watch
    /// connection `pin`, if it watches keys): `write` appends `MULTI`, the
    /// commands and `EXEC` in one piece; MULTI's and each `+QUEUED` reply are
    /// dropped, EXEC's is the client's.
    fn send_block(
        &mut self,
        st: &mut ClientState,
        place: Place,
        pin: Option<Pin>,
        g: GroupIndex,
        count: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let b = match pin {
            Some(p) => {
                if p.group != g || !self.pin_alive(st, p) {
                    // The watched keys moved to another group (their
                    // move is a write), or the watch was lost with its
                    // connection: abort as a changed watched key does.
                    self.end_watch(st, true);
                    self.stats.requests_local += 1;
                    let nil: &[u8] = if st.resp3 { b"_\r\n" } else { NIL_ARRAY };
                    return answer_in_place(st, nil, place);
                }
                p.b
            }
            // A connection whose watch ended keeps the client's order.
            None => self.client_conn(st, g, false),
        };
        if let Some(why) = self.backends.down_error(b) {
            self.stats.errors_backend += 1;
            self.stats.requests_local += 1;
            self.end_watch(st, true);
            return super::route::answer_error(st, &why, place);
        }
        let seq = match place.at {
            None => st.queue.push_waiting(),
            Some(seq) => {
                st.queue.set_waiting(seq);
                seq
            }
        };
        self.stats.requests_forwarded += 1;
        self.stats.transactions += 1;
        st.wrote |= super::route::group_bit(g);
        self.enqueue(st, b, seq, Purpose::Skip, write);
        let version = self.cfg.table.version;
        let conn = &mut self.backends.conns[b];
        for _ in 0..count {
            conn.sent(st.owner(seq, Purpose::Skip), version, self.now_ms);
            self.versions.add(version);
        }
        conn.sent(st.owner(seq, Purpose::Whole), version, self.now_ms);
        self.versions.add(version);
        // EXEC ends the watch at Redis.
        self.end_watch(st, false);
    }

    /// The group a request without keys runs on: the owner of slot 0 (the
    /// documented choice for keyless transactions and scripts).
    pub(super) fn keyless_group(&self) -> Option<GroupIndex> {
        match self.cfg.table.route(0) {
            SlotRoute::Stable(g) => Some(g),
            SlotRoute::Moving { to, .. } | SlotRoute::Blocked { to, .. } => Some(to),
            SlotRoute::Unassigned => None,
        }
    }

    /// `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH` outside a transaction.
    pub(super) fn tx_command(&mut self, st: &mut ClientState, cmd: TxCmd, req: Req<'_>) {
        let place = req.place;
        match cmd {
            TxCmd::Multi => {
                self.stats.requests_local += 1;
                st.tx = Some(Box::default());
                st.reply(|o| encode::simple(o, b"OK"));
            }
            TxCmd::Exec => self.refuse(st, &Refusal::ExecWithoutMulti, place),
            TxCmd::Discard => self.refuse(st, &Refusal::DiscardWithoutMulti, place),
            TxCmd::Watch => self.watch(st, req),
            TxCmd::Unwatch => match self.watching(st) {
                Some(p) if self.pin_alive(st, p) => {
                    if place.at.is_none() && st.queue.has_kept() {
                        return self
                            .sched
                            .keep_behind(st, req, self.now_ms, &mut self.stats);
                    }
                    self.forward_on(st, p.b, req);
                    self.end_watch(st, false);
                }
                _ => {
                    self.end_watch(st, false);
                    self.stats.requests_local += 1;
                    answer_in_place(st, b"+OK\r\n", place);
                }
            },
        }
    }

    /// `WATCH key…`: on the client's dedicated connection to the keys'
    /// group (leased now if it has none).
    fn watch(&mut self, st: &mut ClientState, req: Req<'_>) {
        let Req { args, place, .. } = req;
        if place.at.is_none() && st.queue.has_kept() {
            return self
                .sched
                .keep_behind(st, req, self.now_ms, &mut self.stats);
        }
        let keys: Vec<u32> = (1..args.len() as u32).collect();
        let target = self.target_of_keys(args, &keys, place);
        let g = match target {
            Ok(Target::Group(g) | Target::Master(g)) => g,
            other => return self.send_to_target(st, other, false, req),
        };
        let b = match st.pin {
            Some(p) if p.group != g && !p.ending => {
                return self.refuse(st, &Refusal::CrossSlot, place)
            }
            Some(p) if p.group == g && self.pin_alive(st, p) => {
                // Watching more keys, or watching again on the connection
                // of an ended watch.
                st.pin = Some(Pin { ending: false, ..p });
                p.b
            }
            Some(p) if !p.ending => {
                // The watch was lost with its connection: EXEC will abort
                // (nil), whatever is watched now.
                self.stats.requests_local += 1;
                return answer_in_place(st, b"+OK\r\n", place);
            }
            _ => {
                if !self.nothing_ahead(st, place) {
                    // On a new connection it must not overtake what the
                    // client has in flight (an ended watch's connection
                    // included, given back once they are answered).
                    return self.keep_until_answered(st, req);
                }
                if let Some(old) = st.pin.take() {
                    // An ended watch's connection (keyway's UNWATCH may still
                    // be in flight on it): given back once that is answered.
                    if self.pin_alive(st, old) {
                        self.release_conn(old.b, old.gen, !old.ending);
                    }
                }
                match self.lease(st, g) {
                    Ok(b) => {
                        let gen = self.backends.conns[b].gen;
                        st.pin = Some(Pin {
                            group: g,
                            b,
                            gen,
                            ending: false,
                        });
                        b
                    }
                    Err(why) => return self.refuse(st, &why, place),
                }
            }
        };
        self.forward_on(st, b, req);
    }

    /// Whether every earlier request of the client has been answered.
    pub(super) fn nothing_ahead(&self, st: &ClientState, place: Place) -> bool {
        match place.at {
            None => st.queue.is_empty(),
            Some(seq) => seq == st.queue.head(),
        }
    }

    /// Keeps a request back until every earlier request of its client has
    /// been answered (see [`super::pending::Deferred::barrier`]).
    pub(super) fn keep_until_answered(&mut self, st: &mut ClientState, req: Req<'_>) {
        let place = req.place;
        let mut d = super::deferred::kept(req, self.now_ms);
        d.barrier = true;
        let seq = super::deferred::keep_back(st, place, d);
        if seq == st.queue.head() {
            self.sched.ready(st.me.idx, st.me.gen);
        }
    }

    /// A dedicated connection to group `g` for client `st`.
    fn lease(&mut self, st: &ClientState, g: GroupIndex) -> Result<usize, Refusal<'static>> {
        let client = (st.me.idx, st.me.gen);
        let r = self.backends.lease(
            g,
            client,
            &self.cfg,
            self.now_ms,
            &mut self.versions,
            st.resp3,
        );
        if r.is_ok() {
            self.stats.dedicated_leases += 1;
        }
        r
    }

    /// A blocking command: routed by its keys, sent on a dedicated
    /// connection; the client runs nothing more until its reply.
    pub(super) fn block(&mut self, st: &mut ClientState, blocking: Blocking, req: Req<'_>) {
        let Req { args, place, .. } = req;
        if place.at.is_none() && st.queue.has_kept() {
            return self
                .sched
                .keep_behind(st, req, self.now_ms, &mut self.stats);
        }
        let spec = match command::lookup(args.get(0), args.try_get(1)) {
            Lookup::Found(s) => s,
            _ => return self.refuse(st, &Refusal::NoKeyToRoute, place),
        };
        let mut keys = std::mem::take(&mut self.scratch.keys);
        keys.clear();
        let target = match extract_keys(spec, args, &mut keys) {
            // A bad key count Redis refuses at once (without blocking):
            // its own words, from the shared connection.
            Err(_) if super::keyspace::redis_refuses_bad_numkeys(spec) => {
                self.scratch.keys = keys;
                let to = super::scripts::documented_group(&self.cfg.table);
                return self.send_to_target(st, to, false, req);
            }
            Err(e) => Err(Refusal::Keys(e)),
            Ok(()) if keys.is_empty() && super::keyspace::redis_refuses_bad_numkeys(spec) => {
                self.scratch.keys = keys;
                let to = super::scripts::documented_group(&self.cfg.table);
                return self.send_to_target(st, to, false, req);
            }
            Ok(()) if keys.is_empty() => Err(Refusal::NoKeyToRoute),
            Ok(()) => self.target_of_keys(args, &keys, place),
        };
        self.scratch.keys = keys;
        let g = match target {
            Ok(Target::Group(g) | Target::Master(g)) => g,
            other => return self.send_to_target(st, other, false, req),
        };
        if st.phase != Phase::Open {
            // The client closed (EOF) before its turn came: as Redis drops
            // such a client, the command does not run (see `client_eof`).
            st.phase = Phase::Kill;
            return;
        }
        let (b, leased) = match st.pin {
            Some(p) if p.group == g && self.pin_alive(st, p) => (p.b, false),
            _ if !self.nothing_ahead(st, place) => return self.keep_until_answered(st, req),
            _ => match self.lease(st, g) {
                Ok(b) => (b, true),
                Err(why) => return self.refuse(st, &why, place),
            },
        };
        let gen = self.backends.conns[b].gen;
        let Some(seq) = self.forward_on(st, b, req) else {
            if leased {
                self.release_conn(b, gen, false);
            }
            return;
        };
        st.wrote |= super::route::group_bit(g);
        let block_ms = blocking.block_ms(args);
        self.uncount(b, blocking::deadline_ms(self.now_ms, block_ms));
        self.stats.requests_blocking += 1;
        let frame = match req.raw {
            Some(bytes) => bytes.into(),
            None => {
                let mut v = Vec::new();
                encode::request(&mut v, args);
                v.into()
            }
        };
        let resend = blocking.can_resend(args);
        st.blocked = Some(Blocked {
            seq,
            b,
            gen,
            leased,
            restore: blocking.restore(args),
            parts: 1,
            again: Some(Box::new(blocking::Again {
                frame,
                blocking,
                group: g,
                started_ms: self.now_ms,
                block_ms,
                unblocking: false,
                resend,
            })),
        });
    }

    /// `WAIT numreplicas timeout`: on each group the client wrote to since
    /// its last `WAIT` (the keyless group if none), once everything it sent
    /// before has been answered; the reply is the least of the groups'.
    ///
    /// Redis counts the replicas that acknowledged the connection's last
    /// write; the client's writes went on shared connections, so on a
    /// dedicated one keyway first sends `PUBLISH` to a channel nobody
    /// listens to (a write Redis propagates to replicas, which sets the
    /// connection's replication offset past every write it has run), then
    /// `WAIT`.
    pub(super) fn wait(&mut self, st: &mut ClientState, req: Req<'_>) {
        let Req { args, place, .. } = req;
        if place.at.is_none() && st.queue.has_kept() {
            return self
                .sched
                .keep_behind(st, req, self.now_ms, &mut self.stats);
        }
        if !self.nothing_ahead(st, place) {
            return self.keep_until_answered(st, req);
        }
        if st.phase != Phase::Open {
            st.phase = Phase::Kill;
            return;
        }
        let n = self.cfg.table.groups().len();
        // Nothing written: Redis answers such a connection at once with its
        // replicas; so does the keyless group, without the offset bump.
        let bump = st.wrote != 0;
        let mut groups: Vec<GroupIndex> = (0..n.min(u16::MAX as usize))
            .map(|g| g as GroupIndex)
            .filter(|&g| st.wrote & super::route::group_bit(g) != 0)
            .collect();
        if groups.is_empty() {
            match self.keyless_group() {
                Some(g) => groups.push(g),
                None => return self.refuse(st, &Refusal::ClusterDown { slot: 0 }, place),
            }
        }
        // A dedicated connection per group (the client's WATCH one where
        // it has one).
        // (connection, its generation, leased for this WAIT)
        let mut conns: Vec<(usize, u32, bool)> = Vec::with_capacity(groups.len());
        for &g in &groups {
            let got = match st.pin {
                Some(p) if p.group == g && self.pin_alive(st, p) => Ok((p.b, p.gen, false)),
                _ => self
                    .lease(st, g)
                    .map(|b| (b, self.backends.conns[b].gen, true)),
            };
            match got {
                Ok(c) => conns.push(c),
                Err(why) => {
                    for (b, gen, leased) in conns {
                        if leased {
                            self.release_conn(b, gen, false);
                        }
                    }
                    return self.refuse(st, &why, place);
                }
            }
        }
        st.wrote = 0;
        let timeout_ms = std::str::from_utf8(args.get(2))
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .and_then(|t| u64::try_from(t).ok());
        let deadline = blocking::deadline_ms(self.now_ms, timeout_ms);
        let one = conns.len() == 1;
        let seq = if one {
            match place.at {
                None => st.queue.push_waiting(),
                Some(seq) => {
                    st.queue.set_waiting(seq);
                    seq
                }
            }
        } else {
            let merge = super::split::Merge::new(super::split::SplitKind::Min, conns.len(), &[]);
            super::route::merge_in_place(st, place, merge)
        };
        self.stats.requests_forwarded += 1;
        self.stats.requests_blocking += 1;
        for (i, &(b, _, _)) in conns.iter().enumerate() {
            if bump {
                let (cfg, now) = (&*self.cfg, self.now_ms);
                let (versions, wake) = (&mut self.versions, &mut self.wake);
                self.backends.send_internal(
                    b,
                    WAIT_BUMP,
                    Internal::Ignore,
                    cfg,
                    now,
                    versions,
                    wake,
                );
            }
            let purpose = if one {
                Purpose::Whole
            } else {
                Purpose::Part(i as u16)
            };
            self.enqueue(st, b, seq, purpose, |out| encode::request(out, args));
            self.uncount(b, deadline);
        }
        let (b, gen, leased) = conns[0];
        st.wait_conns = conns[1..]
            .iter()
            .filter(|c| c.2)
            .map(|c| (c.0, c.1))
            .collect();
        st.blocked = Some(Blocked {
            seq,
            b,
            gen,
            leased,
            restore: blocking::Restore::Nothing,
            parts: conns.len() as u16,
            again: None,
        });
    }

    /// The request just sent on connection `b` is a blocked command: its
    /// reply is awaited until `deadline_ms` (see [`blocking::deadline_ms`]),
    /// and it does not hold back a new table's ack
    /// ([`super::versions::UNCOUNTED`]).
    fn uncount(&mut self, b: usize, deadline_ms: u64) {
        if let Some(e) = self.backends.conns[b].inflight.back_mut() {
            e.sent_ms = deadline_ms;
            if e.version != super::versions::UNCOUNTED {
                self.versions.done(e.version);
                e.version = super::versions::UNCOUNTED;
            }
        }
    }

    /// A new table: blocked commands whose keys it moves to another group
    /// (or puts on a migrating or held slot) are unblocked at Redis, to be
    /// sent again by the new table (see [`blocking::Again`]).
    pub(super) fn reroute_blocked(&mut self, st: &mut ClientState, parser: &mut RequestParser) {
        let Some(bl) = st.blocked.as_mut() else {
            return;
        };
        let (b, gen) = (bl.b, bl.gen);
        if self.backends.conns.get(b).is_none_or(|c| c.gen != gen) {
            return;
        }
        let Some(again) = bl.again.as_mut() else {
            return;
        };
        if again.unblocking {
            return;
        }
        let Ok(Some(Frame::Multibulk { .. })) = parser.parse(&again.frame) else {
            return;
        };
        let args = parser.args(&again.frame);
        let Lookup::Found(spec) = command::lookup(args.get(0), args.try_get(1)) else {
            return;
        };
        let mut keys = Vec::new();
        if extract_keys(spec, &args, &mut keys).is_err() {
            return;
        }
        let mut groups = Vec::new();
        let mut moves = Vec::new();
        let r = self.route_keys(&args, &keys, &mut groups, &mut moves, Place::NEW);
        if matches!(r, Ok(KeysRoute::Stable)) && groups.iter().all(|&g| g == again.group) {
            return;
        }
        again.unblocking = true;
        self.stats.blocked_rerouted += 1;
        let seq = bl.seq;
        let owner = st.owner(seq, Purpose::Whole);
        if let Some(d) = self.backends.conns[b].dedicated.as_mut() {
            d.unblocking = Some(0);
            d.unblock_for = Some(owner);
            d.unblock_reason = None;
        }
        let now = self.now_ms;
        let (cfg, versions, wake) = (&*self.cfg, &mut self.versions, &mut self.wake);
        self.backends.tick_unblock(b, cfg, now, versions, wake);
    }

    /// `SCRIPT KILL`, `FUNCTION KILL`: sent to every group, each on a
    /// dedicated connection — the script to kill may be running on the
    /// client's own shared connection, whose next request Redis would not
    /// read before the script ends. The replies are merged
    /// ([`super::split::SplitKind::Kill`]); the connections go back with
    /// them.
    pub(super) fn kill(&mut self, st: &mut ClientState, req: Req<'_>) {
        let Req { args, place, .. } = req;
        let n = self.cfg.table.groups().len();
        let mut conns: Vec<(usize, u32)> = Vec::with_capacity(n);
        for g in 0..n {
            match self.lease(st, g as GroupIndex) {
                Ok(b) => conns.push((b, self.backends.conns[b].gen)),
                Err(why) => {
                    for (b, gen) in conns {
                        self.release_conn(b, gen, false);
                    }
                    return self.refuse(st, &why, place);
                }
            }
        }
        let Some(&(b, gen)) = conns.first() else {
            return self.refuse(st, &Refusal::ClusterDown { slot: 0 }, place);
        };
        let merge = super::split::Merge::new(super::split::SplitKind::Kill, n, &[]);
        let seq = super::route::merge_in_place(st, place, merge);
        self.stats.requests_split += 1;
        for (i, &(b, _)) in conns.iter().enumerate() {
            self.enqueue(st, b, seq, Purpose::Part(i as u16), |out| {
                encode::request(out, args)
            });
        }
        st.wait_conns = conns[1..].to_vec();
        st.blocked = Some(Blocked {
            seq,
            b,
            gen,
            leased: true,
            restore: blocking::Restore::Nothing,
            parts: n as u16,
            again: None,
        });
    }

    /// `RESET`: leaves the transaction and the watch.
    pub(super) fn reset_state(&mut self, st: &mut ClientState) {
        self.end_tx(st, true);
    }

    /// The client is leaving (closed, or its socket gone): a blocking
    /// command in flight is ended at Redis and whatever it popped pushed
    /// back ([`super::dedicated`]); its dedicated connections go back.
    pub(super) fn client_leaving(&mut self, st: &mut ClientState) {
        if let Some(bl) = st.blocked.take() {
            let client = (st.me.idx, st.me.gen);
            self.stats.blocked_clients_left += 1;
            let extra = std::mem::take(&mut st.wait_conns);
            let conns = std::iter::once((bl.b, bl.gen, bl.leased))
                .chain(extra.into_iter().map(|(b, gen)| (b, gen, true)));
            for (b, gen, leased) in conns {
                if self.backends.conns.get(b).is_none_or(|c| c.gen != gen) {
                    continue;
                }
                self.backends.orphan(b, client, bl.seq, bl.restore);
                let now = self.now_ms;
                let (cfg, versions, wake) = (&*self.cfg, &mut self.versions, &mut self.wake);
                self.backends.tick_unblock(b, cfg, now, versions, wake);
                if leased {
                    self.release_conn(b, gen, false);
                }
            }
        }
        st.tx = None;
        if let Some(p) = st.pin.take() {
            if self.pin_alive(st, p) {
                self.release_conn(p.b, p.gen, !p.ending);
            }
        }
    }
}
