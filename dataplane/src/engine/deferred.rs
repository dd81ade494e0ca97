//! The scheduler of requests kept back for a migration (see
//! [`super::moves`] for why they are kept back): requests held on blocked
//! slots until the table changes ([`Worker::release_held`],
//! [`Worker::expire_held`]), requests waiting for their keys' moves, and
//! requests kept behind an earlier one of their client. Each client's
//! kept-back requests go strictly in its order ([`Worker::walk_client`]);
//! move batches go when their route is free ([`Worker::flush_moves`]).

use super::backend::{Link, Owner};
use super::replies::Refusal;
use super::route::{Place, Req};
use super::{live_client, moves, DeferredRef, Worker};
use crate::routing::GroupIndex;

impl Worker {
    /// The table changed: held requests may go (routed by the new table).
    pub(super) fn release_held(&mut self) {
        for (idx, gen, seq) in std::mem::take(&mut self.ctx.held) {
            let Some(c) = live_client(&mut self.clients, idx, gen) else {
                continue;
            };
            if let Some(d) = c.st.queue.deferred_mut(seq) {
                d.held = false;
                self.ctx.walk.push((idx, gen));
            }
        }
    }

    /// Dispatches kept-back requests that may go now, each client's strictly
    /// in request order: moves done (or failed: tried again, or answered
    /// `-TRYAGAIN`), holds released, or nothing ahead of it kept back any
    /// more. Then sends the move batches that may go.
    pub(super) fn run_deferred(&mut self) {
        loop {
            while let Some((idx, gen)) = self.ctx.walk.pop() {
                self.walk_client(idx, gen);
            }
            self.flush_moves();
            if self.ctx.walk.is_empty() {
                return;
            }
        }
    }

    /// Sends every move batch whose route has no MIGRATE in flight; the
    /// requests of a batch whose source is down get its error.
    pub(super) fn flush_moves(&mut self) {
        if !self.ctx.batches.has_waiting() {
            return;
        }
        let timeout = self.ctx.first_move_timeout();
        for ((b, target), mut batch) in self.ctx.batches.ready() {
            let down = match self.ctx.backends.conns.get(b) {
                None => Some(Refusal::SourceGone),
                Some(_) => self.ctx.backends.down_error(b),
            };
            if let Some(why) = down {
                let msg = why.to_string();
                for w in batch.waiters {
                    self.move_answered(w, &msg, false);
                }
                continue;
            }
            batch.keys.sort_unstable();
            batch.keys.dedup();
            let id = self.ctx.batches.sent((b, target), batch.waiters);
            self.ctx.stats.key_moves += 1;
            let version = self.ctx.cfg.table.version;
            let conn = &mut self.ctx.backends.conns[b];
            moves::write_migrate(
                conn.out.buf_mut(),
                target,
                timeout,
                batch.keys.iter().map(Vec::as_slice),
            );
            conn.sent(Owner::MoveBatch { id }, version, self.ctx.now_ms);
            self.ctx.versions.add(version);
            if matches!(conn.link, Link::Up) {
                self.ctx.wake.backend(conn, b);
            }
        }
    }

    /// A move a kept-back request waited for ended: with `failure` (retried
    /// or answered), or dropped unsent (`dropped`: route it again).
    pub(super) fn move_answered(
        &mut self,
        (idx, gen, seq): DeferredRef,
        failure: &str,
        dropped: bool,
    ) {
        let Some(c) = live_client(&mut self.clients, idx, gen) else {
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
                self.ctx.walk.push((idx, gen));
            }
        }
    }

    /// Drops the move batches not sent yet; their requests are routed again.
    pub(super) fn drop_unsent_moves(&mut self) {
        for w in self.ctx.batches.drop_unsent() {
            self.move_answered(w, "", true);
        }
    }

    /// Dispatches the client's first kept-back requests while they are
    /// ready; stops at the first that is not (or is kept back again).
    pub(super) fn walk_client(&mut self, idx: u32, gen: u32) {
        loop {
            let Some(c) = live_client(&mut self.clients, idx, gen) else {
                return;
            };
            let seq = match c.st.queue.first_kept() {
                Some((seq, d)) if d.ready() => seq,
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
            };
            if let Some(why) = &d.failure {
                if d.attempt + 1 >= self.ctx.cfg.migration.move_attempts {
                    self.ctx.stats.moves_failed += 1;
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
                        self.ctx.delete_busy(&mut c.st, seq, *d, keys);
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
        for (idx, gen, seq) in std::mem::take(&mut self.ctx.held) {
            let Some(c) = live_client(&mut self.clients, idx, gen) else {
                continue;
            };
            let since = c.st.queue.deferred_mut(seq).map(|d| d.since_ms);
            match since {
                Some(s) if now.saturating_sub(s) > limit => {
                    let _ = c.st.queue.take_deferred(seq);
                    let place = Place {
                        at: Some(seq),
                        ..Place::NEW
                    };
                    self.ctx.refuse(&mut c.st, &Refusal::HoldExpired, place);
                    self.ctx.after_output(&mut c.st);
                    self.ctx.walk.push((idx, gen));
                }
                Some(_) => keep.push((idx, gen, seq)),
                None => {}
            }
        }
        self.ctx.held = keep;
    }
}
