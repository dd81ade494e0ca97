//! The worker's periodic work ([`Worker::tick`], every 100 ms or so):
//! picking up a new table, backend timeouts and backoff, retiring
//! connections, client timeouts and output limits, the memory budget.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::client::{Phase, CLOSING_LINGER_MS};
use super::limits::{self, close_client, log_close};
use super::replies::Refusal;
use super::Worker;

/// Longest wait for clients to finish on shutdown.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Where a core stands, after a [`Worker::drain_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Not stopping: serve on.
    Serving,
    /// Stopping: accept no more clients (the transport stops accepting) and
    /// keep serving the open ones until they are done.
    Draining,
    /// Every client is done, or [`DRAIN`] has passed (logged with the
    /// clients left): the transport stops the core.
    Done,
}

impl Worker {
    /// The core's periodic step, the same for every transport: call every
    /// 100 ms or so with whether the process is stopping. The first time
    /// `stop` is seen, the worker stops accepting clients and lets the open
    /// ones finish ([`begin_shutdown`](Self::begin_shutdown)); then it
    /// ticks ([`tick`](Self::tick)); then it says whether the core is done:
    /// no client left, or none left waiting past [`DRAIN`].
    pub fn drain_step(&mut self, now: Instant, stop: bool) -> Drain {
        if stop && self.drain_until.is_none() {
            self.drain_until = Some(now + DRAIN);
            self.begin_shutdown();
        }
        self.tick(now);
        let Some(deadline) = self.drain_until else {
            return Drain::Serving;
        };
        let left = self.clients.len();
        if left == 0 && !self.ctx.backends.restoring() {
            return Drain::Done;
        }
        if now >= deadline {
            tracing::warn!(
                core = self.ctx.core,
                clients = left,
                "shutdown: closing clients still waiting for replies"
            );
            return Drain::Done;
        }
        Drain::Draining
    }

    /// Periodic work: picks up new routing, applies timeouts, retires idle
    /// connections. Call every 100 ms or so.
    pub fn tick(&mut self, now: Instant) {
        self.ctx.now_ms = now.saturating_duration_since(self.ctx.epoch).as_millis() as u64;
        self.refresh();
        self.tick_backends();
        self.pubsub_tick();
        self.tick_clients();
        self.tick_admin(now);
        self.tick_memory();
        self.expire_held();
        self.prune_scripts();
        self.resume_paused();
        self.run_deferred();
        self.ctx.report();
        self.publish_client_kinds();
        self.ctx.publish_health();
        if let Some(r) = self.ctx.shared.reports.get(self.ctx.core) {
            r.stats.publish(&self.ctx.stats);
            if let Ok(mut c) = r.commands.lock() {
                self.ctx.cmds.publish_into(&mut c);
            }
            r.held
                .store(self.ctx.sched.held_count() as u64, Ordering::Relaxed);
            let conns = self.ctx.backends.conns.iter().map(|(_, c)| {
                let state = match c.link {
                    super::backend::Link::Up => 0,
                    super::backend::Link::Connecting { .. } => 1,
                    super::backend::Link::Down { .. } => 2,
                    super::backend::Link::Idle => 3,
                };
                (c.pool, state)
            });
            self.ctx.meters.count_connections(conns);
            self.ctx.meters.end_batch();
            let epoch = self.ctx.shared.server.latency_epoch();
            self.ctx.meters.flush(epoch, &r.meters);
        }
    }

    /// Counts what this core's buffers hold, publishes it, and while the
    /// process is over `max_memory` closes this core's largest clients until
    /// the core is back within its share.
    pub(super) fn tick_memory(&mut self) {
        let max = self.ctx.cfg.limits.max_memory;
        let backends = self.ctx.backends.buffered_bytes();
        let mut total = backends as u64;
        // What clients already closing hold is freed within the linger, at
        // most: closing more clients for it would free nothing more.
        let mut leaving = 0u64;
        let mut big: Vec<(usize, u32)> = Vec::new();
        for (idx, c) in self.clients.iter() {
            let n = c.st.buffered_bytes();
            total += n as u64;
            if !c.st.wants_replies() {
                leaving += n as u64;
            } else if n >= limits::EVICT_MIN && !c.st.no_evict {
                big.push((n, idx as u32));
            }
        }
        let ctx = &mut self.ctx;
        ctx.memory.scanned(total, &ctx.shared, ctx.core, max);
        if !ctx.memory.over || big.is_empty() {
            return;
        }
        let share = max / ctx.shared.cores.max(1) as u64;
        big.sort_unstable_by(|a, b| b.cmp(a));
        let mut mine = total.saturating_sub(leaving);
        for (n, idx) in big {
            if mine <= share {
                break;
            }
            let st = &mut self.clients[idx as usize].st;
            let why = Refusal::EvictedForMemory { max, held: n };
            close_client(
                st,
                &why,
                "it held the most while keyway's buffers exceeded limits.max_memory",
                ctx.now_ms,
                &mut ctx.log,
                &mut ctx.wake,
            );
            ctx.stats.clients_evicted_memory += 1;
            mine = mine.saturating_sub(n as u64);
        }
    }

    /// Backend timeouts and backoff ([`Backends::expired`](super::backends::Backends::expired)),
    /// probes of failing backends, and retired connections closed once
    /// their replies are in.
    pub(super) fn tick_backends(&mut self) {
        let now = self.ctx.now_ms;
        for (idx, reason, timed_out) in self.ctx.backends.expired(now, &self.ctx.cfg) {
            if timed_out {
                self.ctx.stats.backend_timeouts += 1;
            }
            self.fail_backend(idx, &reason);
        }
        self.ctx.backends.probe_failing(self.ctx.now_ms);
        let ctx = &mut self.ctx;
        let fail =
            ctx.backends
                .tick_dedicated(&ctx.cfg, ctx.now_ms, &mut ctx.versions, &mut ctx.wake);
        for b in fail {
            self.fail_backend(b, "a block on it must end and CLIENT ID failed on it");
        }
        let mut closed = Vec::new();
        self.ctx.backends.close_retired(&mut closed);
        for (b, had_socket) in closed {
            if had_socket {
                self.ctx.wake.backends.push(b as u32);
            }
            self.release_backpressure(b);
            if self.ctx.backends.conns.remove(b).dedicated.is_some() {
                self.ctx.backends.dedicated -= 1;
            }
        }
    }

    pub(super) fn tick_clients(&mut self) {
        let now = self.ctx.now_ms;
        let limits = &self.ctx.cfg.limits;
        for (_, c) in self.clients.iter_mut() {
            let st = &mut c.st;
            match st.phase {
                Phase::Kill => continue,
                Phase::Closing { since_ms } => {
                    if now.saturating_sub(since_ms) > CLOSING_LINGER_MS {
                        st.phase = Phase::Kill;
                        self.ctx.wake.client(st);
                    }
                    continue;
                }
                Phase::Open | Phase::Draining => {}
            }
            let before = st.phase;
            if let Some(idle) = limits.idle_timeout.enabled() {
                // As in Redis, a subscriber is never idle.
                if st.queue.is_empty()
                    && st.inbuf.is_empty()
                    && st.subs.is_none()
                    && now.saturating_sub(st.last_active_ms) > idle.as_millis() as u64
                {
                    st.phase = Phase::Kill;
                    self.ctx.stats.clients_timed_out += 1;
                    log_close(
                        st,
                        "idle longer than limits.idle_timeout",
                        now,
                        &mut self.ctx.log,
                    );
                    self.ctx.wake.client(st);
                    continue;
                }
            }
            if let (Some(since), Some(limit)) = (
                st.partial_since_ms,
                limits.partial_request_timeout.enabled(),
            ) {
                if now.saturating_sub(since) > limit.as_millis() as u64 && st.phase == Phase::Open {
                    st.inbuf = Vec::new();
                    st.partial_since_ms = None;
                    st.fatal(&Refusal::PartialTimeout {
                        after: &limits.partial_request_timeout,
                    });
                    self.ctx.stats.clients_timed_out += 1;
                    log_close(
                        st,
                        "a request incomplete longer than limits.partial_request_timeout",
                        now,
                        &mut self.ctx.log,
                    );
                }
            }
            let soft = limits.output_soft_limit as usize;
            if soft > 0 && st.pending_output() > soft {
                let since = *st.soft_since_ms.get_or_insert(now);
                if now.saturating_sub(since) > limits.output_soft_timeout.0 {
                    let why = Refusal::SoftLimit {
                        limit: soft,
                        after: &limits.output_soft_timeout,
                    };
                    close_client(
                        st,
                        &why,
                        "its unread replies stayed above limits.output_soft_limit",
                        now,
                        &mut self.ctx.log,
                        &mut self.ctx.wake,
                    );
                    self.ctx.stats.clients_output_limit += 1;
                    continue;
                }
            } else {
                st.soft_since_ms = None;
            }
            if st.phase != before {
                self.ctx.wake.client(st);
            }
        }
    }
}
