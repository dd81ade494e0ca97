//! The scheduler of requests kept back for a migration (see
//! [`super::moves`] for why they are kept back): requests held on blocked
//! slots until the table changes ([`Scheduler::release_held`],
//! [`Worker::expire_held`]), requests waiting for their keys' moves, and
//! requests kept behind an earlier one of their client. Each client's
//! kept-back requests go strictly in its order ([`Worker::walk_client`]);
//! move batches go when their route is free ([`Worker::flush_moves`]).
//!
//! The request path touches the scheduler only when a request is kept
//! back; after each event the worker tests [`Scheduler::is_idle`] (inline)
//! before it calls into any of this.

use slab::Slab;

use keyway_protocol::resp::encode;

use super::backend::{Link, Owner};
use super::client::{Client, ClientState};
use super::move_batch::{MoveBatches, Route};
use super::moves::Migrator;
use super::pending::{Deferred, Seq};
use super::replies::Refusal;
use super::route::{Place, Req};
use super::{live_client, moves, DeferredRef, Stats, Worker};
use crate::routing::GroupIndex;

/// The requests a core keeps back, and the moves they wait for.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    /// Requests held on blocked slots, released when the table changes.
    held: Vec<DeferredRef>,
    /// Clients (index, generation) whose first kept-back request may be
    /// ready to go: [`Worker::run_deferred`] walks them.
    walk: Vec<(u32, u32)>,
    /// On-demand moves, coalesced per source connection and target.
    batches: MoveBatches,
}

impl Scheduler {
    /// Keys known to be off their source under the current table (see
    /// `move_batch`).
    #[inline]
    pub(super) fn known(&self) -> &super::move_batch::MovedKeys {
        &self.batches.known
    }

    /// Forgets the keys known moved: a backend connection broke, and a
    /// source that restarted may hold keys again (an older copy of its data).
    pub(super) fn forget_known(&mut self) {
        self.batches.known.forget();
    }

    /// Requests held on blocked slots now.
    pub(super) fn held_count(&self) -> usize {
        self.held.len()
    }

    /// Nothing to walk and no move batch to send: the one test the hot
    /// path makes (held requests wait for a table change or a tick).
    #[inline]
    pub(super) fn is_idle(&self) -> bool {
        self.walk.is_empty() && !self.batches.has_waiting()
    }

    /// Client `idx` (generation `gen`) may have a kept-back request ready.
    #[inline]
    pub(super) fn ready(&mut self, idx: u32, gen: u32) {
        self.walk.push((idx, gen));
    }

    /// Queues the client for a walk of its kept-back requests if `seq` may
    /// go now (every move it needed failed at once).
    pub(super) fn ready_if(&mut self, st: &mut ClientState, seq: Seq) {
        if st.queue.deferred_mut(seq).is_some_and(|d| d.ready()) {
            self.ready(st.me.idx, st.me.gen);
        }
    }

    /// Keeps a new request back behind an earlier one of its client that is
    /// kept back; it is dispatched when its turn comes.
    pub(super) fn keep_behind(
        &mut self,
        st: &mut ClientState,
        req: Req<'_>,
        now_ms: u64,
        stats: &mut Stats,
    ) {
        let d = kept(
            Req {
                place: Place {
                    exec: req.place.exec,
                    ..Place::NEW
                },
                ..req
            },
            now_ms,
        );
        st.queue.push_deferred(d);
        stats.requests_kept_behind += 1;
    }

    /// Holds a request on a blocked slot (or for a group on hold) until the
    /// table changes.
    pub(super) fn hold(
        &mut self,
        st: &mut ClientState,
        req: Req<'_>,
        now_ms: u64,
        stats: &mut Stats,
    ) {
        let place = req.place;
        let mut d = kept(req, now_ms);
        d.held = true;
        let seq = keep_back(st, place, d);
        self.held.push((st.me.idx, st.me.gen, seq));
        if place.at.is_none() {
            stats.requests_held += 1;
        }
    }

    /// Adds a request's keys to the move batch of `route` (see
    /// `move_batch`); returns how many batches it joined.
    pub(super) fn join(
        &mut self,
        route: Route,
        keys: impl Iterator<Item = Vec<u8>>,
        waiter: DeferredRef,
    ) -> u16 {
        self.batches.join(route, keys, waiter)
    }

    /// A batch's MIGRATE reply stands for each of its requests' moves.
    pub(super) fn batch_replied(&mut self, clients: &mut Slab<Client>, id: u64, reply: &[u8]) {
        for (idx, gen, seq) in self.batches.answered(id, reply) {
            let Some(c) = live_client(clients, idx, gen) else {
                continue;
            };
            if c.st
                .queue
                .deferred_mut(seq)
                .is_some_and(|d| moves::move_replied(d, None, reply))
            {
                self.ready(idx, gen);
            }
        }
    }

    /// A move a kept-back request waited for ended: with `failure` (retried
    /// or answered), or dropped unsent (`dropped`: route it again).
    fn move_answered(
        &mut self,
        clients: &mut Slab<Client>,
        (idx, gen, seq): DeferredRef,
        failure: &str,
        dropped: bool,
    ) {
        let Some(c) = live_client(clients, idx, gen) else {
            return;
        };
        if let Some(d) = c.st.queue.deferred_mut(seq) {
            if dropped {
                d.moved_at = None;
            } else {
                d.failure.get_or_insert_with(|| failure.to_string());
            }
            d.moves_left = d.moves_left.saturating_sub(1);
            if d.ready() {
                self.ready(idx, gen);
            }
        }
    }

    /// The table changed: held requests may go (routed by the new table).
    pub(super) fn release_held(&mut self, clients: &mut Slab<Client>) {
        for (idx, gen, seq) in std::mem::take(&mut self.held) {
            let Some(c) = live_client(clients, idx, gen) else {
                continue;
            };
            if let Some(d) = c.st.queue.deferred_mut(seq) {
                d.held = false;
                self.ready(idx, gen);
            }
        }
    }

    /// Drops the move batches not sent yet; their requests are routed again.
    pub(super) fn drop_unsent_moves(&mut self, clients: &mut Slab<Client>) {
        for w in self.batches.drop_unsent() {
            self.move_answered(clients, w, "", true);
        }
    }
}

/// A request kept back, with its frame copied (or encoded, if it was not
/// read whole from the client).
pub(super) fn kept(req: Req<'_>, now_ms: u64) -> Deferred {
    let Req {
        args, raw, place, ..
    } = req;
    let frame = match raw {
        Some(bytes) => bytes.to_vec(),
        None => {
            let mut v = Vec::new();
            encode::request(&mut v, args);
            v
        }
    };
    Deferred {
        frame,
        attempt: place.attempt,
        since_ms: place.since_ms.unwrap_or(now_ms),
        exec: place.exec,
        ..Deferred::default()
    }
}

/// Puts `d` in the request's reply slot (a new one, or its own if it was
/// kept back before).
pub(super) fn keep_back(st: &mut ClientState, place: Place, d: Deferred) -> Seq {
    match place.at {
        None => st.queue.push_deferred(d),
        Some(seq) => {
            st.queue.set_deferred(seq, d);
            seq
        }
    }
}

impl Worker {
    /// Dispatches kept-back requests that may go now, each client's strictly
    /// in request order: moves done (or failed: tried again, or answered
    /// `-TRYAGAIN`), holds released, or nothing ahead of it kept back any
    /// more. Then sends the move batches that may go. One test when there
    /// is nothing to do.
    #[inline]
    pub(super) fn run_deferred(&mut self) {
        if !self.ctx.sched.is_idle() {
            self.walk_deferred();
        }
    }

    /// [`Worker::run_deferred`]'s work.
    #[inline(never)]
    fn walk_deferred(&mut self) {
        loop {
            while let Some((idx, gen)) = self.ctx.sched.walk.pop() {
                self.walk_client(idx, gen);
            }
            self.flush_moves();
            if self.ctx.sched.walk.is_empty() {
                return;
            }
        }
    }

    /// The table changed: held requests may go (routed by the new table).
    pub(super) fn release_held(&mut self) {
        self.ctx.sched.release_held(&mut self.clients);
    }

    /// Drops the move batches not sent yet; their requests are routed again.
    pub(super) fn drop_unsent_moves(&mut self) {
        self.ctx.sched.drop_unsent_moves(&mut self.clients);
    }

    /// Sends every move batch whose route has no MIGRATE in flight; the
    /// requests of a batch whose source is down get its error.
    pub(super) fn flush_moves(&mut self) {
        let ctx = &mut self.ctx;
        if !ctx.sched.batches.has_waiting() {
            return;
        }
        let timeout = moves::move_timeout(&ctx.cfg, 0);
        for ((b, target), mut batch) in ctx.sched.batches.ready() {
            let down = match ctx.backends.conns.get(b) {
                None => Some(Refusal::SourceGone),
                Some(_) => ctx.backends.down_error(b),
            };
            if let Some(why) = down {
                let msg = why.to_string();
                for w in batch.waiters {
                    ctx.sched.move_answered(&mut self.clients, w, &msg, false);
                }
                continue;
            }
            batch.keys.sort_unstable();
            batch.keys.dedup();
            ctx.stats.key_moves += 1;
            let version = ctx.cfg.table.version;
            // MIGRATE is a maintenance command (see `engine::backend_acl`).
            let admin = ctx.backends.elevate(b, ctx.now_ms);
            let (n, opts) = ctx.backends.migrate_options(target);
            let auth = (n, opts.to_vec());
            moves::write_migrate(
                ctx.backends.conns[b].out.buf_mut(),
                target,
                timeout,
                (auth.0, auth.1.as_slice()),
                batch.keys.iter().map(Vec::as_slice),
            );
            let id = ctx
                .sched
                .batches
                .sent((b, target), batch.waiters, batch.keys, version);
            let conn = &mut ctx.backends.conns[b];
            conn.sent(Owner::MoveBatch { id }, version, ctx.now_ms);
            ctx.versions.add(version);
            if matches!(conn.link, Link::Up) {
                ctx.wake.backend(conn, b);
            }
            if admin {
                ctx.backends.restore(b, ctx.now_ms);
            }
        }
    }

    /// Dispatches the client's first kept-back requests while they are
    /// ready; stops at the first that is not (or is kept back again).
    pub(super) fn walk_client(&mut self, idx: u32, gen: u32) {
        loop {
            let Some(c) = live_client(&mut self.clients, idx, gen) else {
                return;
            };
            if c.st.blocked.is_some() {
                // Nothing of a blocked client runs until its reply.
                return;
            }
            let head = c.st.queue.head();
            let seq = match c.st.queue.first_kept() {
                Some((seq, d)) if d.ready() && (!d.barrier || seq == head) => seq,
                _ => return,
            };
            let Some(d) = c.st.queue.take_deferred(seq) else {
                return;
            };
            let version = self.ctx.cfg.table.version;
            let mut place = Place {
                at: Some(seq),
                moved: d.moved_at == Some(version),
                attempt: d.attempt,
                since_ms: Some(d.since_ms),
                exec: d.exec,
            };
            if let Some(why) = &d.failure {
                if d.attempt + 1 >= self.ctx.cfg.migration.move_attempts {
                    self.ctx.stats.moves_failed += 1;
                    if d.exec {
                        // A transaction that fails ends its watch, as EXEC does.
                        self.ctx.end_watch(&mut c.st, true);
                    }
                    self.ctx
                        .refuse(&mut c.st, &Refusal::MoveFailed { why }, place);
                    self.ctx.after_output(&mut c.st);
                    continue;
                }
                place.attempt += 1;
                place.moved = false;
            }
            match self.reparser.parse(&d.frame) {
                Ok(Some(keyway_protocol::resp::Frame::Multibulk { .. })) => {
                    let args = self.reparser.args(&d.frame);
                    if place.moved && d.failure.is_none() && !d.busy.is_empty() {
                        let keys: Vec<(GroupIndex, Vec<u8>)> = d
                            .busy
                            .iter()
                            .filter_map(|&i| d.single.get(usize::from(i)))
                            .map(|&(g, k)| (g, args.get(k as usize).to_vec()))
                            .collect();
                        Migrator::of(&mut self.ctx).delete_busy(&mut c.st, seq, *d, keys);
                    } else {
                        let req = Req {
                            args: &args,
                            raw: Some(&d.frame),
                            place,
                        };
                        self.ctx.dispatch(&mut c.st, req);
                    }
                }
                _ => self
                    .ctx
                    .refuse(&mut c.st, &Refusal::KeptBackUnparsed, place),
            }
            self.ctx.after_output(&mut c.st);
        }
    }

    /// Answers `-TRYAGAIN` to requests held longer than `hold_timeout`.
    pub(super) fn expire_held(&mut self) {
        let limit = self.ctx.cfg.migration.hold_timeout.0;
        let now = self.ctx.now_ms;
        let mut keep = Vec::new();
        for (idx, gen, seq) in std::mem::take(&mut self.ctx.sched.held) {
            let Some(c) = live_client(&mut self.clients, idx, gen) else {
                continue;
            };
            let since = c.st.queue.deferred_mut(seq).map(|d| (d.since_ms, d.exec));
            match since {
                Some((s, exec)) if now.saturating_sub(s) > limit => {
                    let _ = c.st.queue.take_deferred(seq);
                    if exec {
                        self.ctx.end_watch(&mut c.st, true);
                    }
                    let place = Place {
                        at: Some(seq),
                        ..Place::NEW
                    };
                    self.ctx.refuse(&mut c.st, &Refusal::HoldExpired, place);
                    self.ctx.after_output(&mut c.st);
                    self.ctx.sched.ready(idx, gen);
                }
                Some(_) => keep.push((idx, gen, seq)),
                None => {}
            }
        }
        self.ctx.sched.held = keep;
    }
}
