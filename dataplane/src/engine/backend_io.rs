//! What the transport tells the [`Worker`] about backend connections:
//! connected, failed, bytes written, bytes read (replies, delivered through
//! a [`Sink`]).

use std::sync::Arc;

use slab::Slab;

use super::backend::{BackendConn, Internal, Link, Owner, MIN_BACKOFF_MS};
use super::dedicated::Use;
use super::replies::Refusal;
use super::sink::{BackendFault, Sink};
use super::{BackendId, Worker};

impl Worker {
    // ---- backends ---------------------------------------------------------

    pub(super) fn backend(&self, id: BackendId) -> Option<&BackendConn> {
        self.ctx
            .backends
            .conns
            .get(id.idx as usize)
            .filter(|b| b.gen == id.gen && b.has_socket())
    }

    /// Whether the driver should keep the socket of `id`.
    pub fn backend_live(&self, id: BackendId) -> bool {
        self.backend(id).is_some()
    }

    /// Whether `id` is a connection dedicated to one client at a time.
    #[cfg(test)]
    pub(crate) fn is_dedicated(&self, id: BackendId) -> bool {
        self.ctx
            .backends
            .conns
            .get(id.idx as usize)
            .is_some_and(|b| b.dedicated.is_some())
    }

    /// The connection for `id` is established.
    pub fn backend_connected(&mut self, id: BackendId) -> bool {
        let Some(conn) = self
            .ctx
            .backends
            .conns
            .get_mut(id.idx as usize)
            .filter(|b| b.gen == id.gen)
        else {
            return false;
        };
        if !matches!(conn.link, Link::Connecting { .. }) {
            return false;
        }
        conn.link = Link::Up;
        conn.backoff_ms = MIN_BACKOFF_MS;
        if !conn.subscriber && self.ctx.backends.pools[conn.pool].health.failures > 0 {
            // A PING tells when a failing backend answers again, even with
            // no request for it (a failing replica gets no reads).
            let version = self.ctx.cfg.table.version;
            conn.out
                .buf_mut()
                .extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
            conn.sent(Owner::Probe, version, self.ctx.now_ms);
            self.ctx.versions.add(version);
        }
        self.ctx.stats.backend_connects += 1;
        if let Some(g) = self.ctx.meters.group_of_pool(conn.pool) {
            g.connects += 1;
        }
        self.ctx.wake.backend(conn, id.idx as usize);
        true
    }

    /// Connecting failed or the connection broke: every request waiting on it
    /// gets an error, and the link backs off before the next attempt.
    pub fn backend_failed(&mut self, id: BackendId, reason: &str) {
        if self.backend(id).is_some() {
            self.fail_backend(id.idx as usize, reason);
            if !self.ctx.scripts.undo.is_empty() {
                self.ctx.run_undo();
            }
            self.resume_paused();
            self.run_deferred();
        }
    }

    /// Bytes to write to the backend.
    pub fn backend_output(&self, id: BackendId) -> &[u8] {
        match self.backend(id) {
            Some(b) if matches!(b.link, Link::Up) => b.out.pending(),
            _ => &[],
        }
    }

    /// `n` bytes of [`backend_output`](Self::backend_output) were written.
    pub fn backend_wrote(&mut self, id: BackendId, n: usize) {
        if let Some(conn) = self.ctx.backends.attempt(id) {
            conn.out.wrote(n);
            if self.ctx.meters.on {
                conn.stamp_handed(super::meters::now_ns());
            }
            self.ctx.written(n);
            self.release_backpressure(id.idx as usize);
        }
    }

    /// Takes the backend connection's unwritten requests (see
    /// [`client_take_output`](Self::client_take_output)).
    pub fn backend_take_output(&mut self, id: BackendId, mut spare: Vec<u8>) -> Vec<u8> {
        spare.clear();
        let out = match self.ctx.backends.attempt(id) {
            Some(b) if matches!(b.link, Link::Up) && !b.out.is_empty() => {
                let out = b.out.take(spare);
                if self.ctx.meters.on {
                    b.stamp_handed(super::meters::now_ns());
                }
                out
            }
            _ => return spare,
        };
        self.release_backpressure(id.idx as usize);
        out
    }

    /// The transport finished (or abandoned) the write of the requests it took
    /// last from the backend connection.
    pub fn backend_sent(&mut self, id: BackendId) {
        if let Some(b) = self.ctx.backends.attempt(id) {
            let n = b.out.transport_done();
            self.ctx.written(n);
        }
    }

    /// Bytes read from a backend: complete replies go to their clients.
    pub fn backend_input(&mut self, id: BackendId, data: &[u8]) {
        let idx = id.idx as usize;
        let max = self.ctx.cfg.limits.max_memory;
        let ctx = &mut self.ctx;
        ctx.memory.read(data.len(), &ctx.shared, ctx.core, max);
        if let Some(b) = ctx.backends.conns.get(idx) {
            if b.subscriber {
                return self.subscriber_input(id, data);
            }
            if b.monitor.is_some() {
                return self.monitor_input(id, data);
            }
        }
        self.ctx.meters.tick_clock();
        let (backends, mut sink) = self.delivery();
        let Some(conn) = backends
            .get_mut(idx)
            .filter(|b| b.gen == id.gen && matches!(b.link, Link::Up))
        else {
            return;
        };
        let result = if conn.inbuf.is_empty() {
            sink.replies(conn, data)
                .map(|used| conn.inbuf.extend_from_slice(&data[used..]))
        } else {
            conn.inbuf.extend_from_slice(data);
            let mut buf = std::mem::take(&mut conn.inbuf);
            sink.replies(conn, &buf).map(|used| {
                buf.drain(..used);
                if buf.is_empty() && buf.capacity() > 1 << 20 {
                    buf = Vec::new();
                }
                conn.inbuf = buf;
            })
        };
        sink.meters.end_batch();
        if !sink.scripts.noscript.is_empty() && sink.retry_noscript(conn) {
            // EVALSHAs answered NOSCRIPT, sent again (`engine::scripts`).
            sink.wake.backend(conn, idx);
        }
        let dedicated = self.ctx.backends.conns[idx].dedicated.is_some();
        if dedicated || !self.ctx.released.is_empty() || !self.ctx.unblocked.is_empty() {
            self.settle_dedicated(Some(idx));
        }
        match result {
            Ok(()) => {
                let now = self.ctx.now_ms;
                let p = self.ctx.backends.conns[idx].pool;
                if self.ctx.backends.pools[p].health.answered(now) {
                    self.ctx.health_turned(p);
                }
            }
            Err(fault) => {
                if fault == BackendFault::Unsolicited {
                    self.ctx.stats.backend_unsolicited += 1;
                }
                let reason = match fault {
                    BackendFault::AuthRefused => self.ctx.backends.auth_failure(idx),
                    _ => fault.to_string(),
                };
                self.fail_backend(idx, &reason);
            }
        }
        if !self.ctx.scripts.undo.is_empty() {
            self.ctx.run_undo();
        }
        self.resume_paused();
        self.run_deferred();
        self.ctx.report_if_drained();
    }

    /// The backend connections, and a [`Sink`] for replies over the rest.
    pub(super) fn delivery(&mut self) -> (&mut Slab<BackendConn>, Sink<'_>) {
        let ctx = &mut self.ctx;
        let sink = Sink {
            clients: &mut self.clients,
            wake: &mut ctx.wake,
            versions: &mut ctx.versions,
            stats: &mut ctx.stats,
            cmds: &mut ctx.cmds,
            meters: &mut ctx.meters,
            resume: &mut ctx.resume,
            sched: &mut ctx.sched,
            log: &mut ctx.log,
            now_ms: ctx.now_ms,
            hard_limit: ctx.cfg.limits.output_hard_limit as usize,
            reply_limit: ctx.cfg.reply_limit(),
            max_pipeline: ctx.cfg.limits.max_pipeline,
            scripts: &mut ctx.scripts,
            released: &mut ctx.released,
            unblocked: &mut ctx.unblocked,
            restores: &mut ctx.restores,
        };
        (&mut ctx.backends.conns, sink)
    }

    pub(super) fn fail_backend(&mut self, idx: usize, reason: &str) {
        // The errors below answer requests now: a timeout fires on the
        // tick, long after the batch whose clock the meters hold.
        self.ctx.meters.tick_clock();
        // A source that restarted from its persisted data may hold keys it
        // had moved: ask it again (`move_batch::MovedKeys`).
        self.ctx.sched.forget_known();
        let now = self.ctx.now_ms;
        let max_backoff = self.ctx.cfg.backend.max_backoff.0.max(MIN_BACKOFF_MS);
        let gen = self.ctx.backends.new_gen();
        let p = self.ctx.backends.conns[idx].pool;
        // Refused credentials are logged once a streak, not on every retry.
        let repeated = self.ctx.backends.pools[p].health.failures > 0
            && reason.starts_with(super::backends::AUTH_FAILED);
        if self.ctx.backends.pools[p].health.failed(now, reason) {
            self.ctx.health_turned(p);
        }
        let connecting = matches!(self.ctx.backends.conns[idx].link, Link::Connecting { .. });
        if let Some(g) = self.ctx.meters.group_of_pool(p) {
            g.errors[super::meters::backend_error_kind(reason, connecting)] += 1;
        }
        let pool = &self.ctx.backends.pools[p];
        let (core, group, addr) = (self.ctx.core, pool.group.clone(), pool.key.clone());
        let reason: Arc<str> = Arc::from(reason);
        let reply = Refusal::BackendDown {
            group: group.clone(),
            reason: reason.clone(),
        }
        .to_reply();
        let (backends, mut sink) = self.delivery();
        let conn = &mut backends[idx];
        if matches!(conn.link, Link::Up) && !repeated {
            tracing::warn!(core, %group, backend = ?addr, "backend lost: {reason}");
        } else {
            tracing::debug!(core, %group, backend = ?addr, "backend unavailable: {reason}");
        }
        sink.stats.backend_failures += 1;
        sink.stats.errors_backend += conn.inflight.len() as u64;
        for e in conn.inflight.drain(..) {
            sink.deliver(e, &reply);
        }
        conn.go_down(gen, now, reason, max_backoff);
        let dedicated = conn.dedicated.is_some();
        let subscriber = conn.subscriber;
        let monitor = conn.monitor.is_some();
        sink.wake.backends.push(idx as u32);
        if dedicated {
            // Not retried: its client (if any) got the error.
            self.ctx.backends.drop_dedicated(idx);
        }
        self.ctx.restores.clear();
        if !self.ctx.released.is_empty() || !self.ctx.unblocked.is_empty() {
            self.settle_dedicated(None);
        }
        self.release_backpressure(idx);
        if subscriber {
            self.subscriber_failed(idx);
        }
        if monitor {
            self.monitor_failed(idx);
        }
    }

    /// After replies on a dedicated connection (or errors for one that
    /// failed, `idx` `None`): pushes back what orphaned blocking commands
    /// popped, gives back the connections whose block ended, and returns
    /// connection `idx` to the free list if it was given back and is done.
    #[cold]
    fn settle_dedicated(&mut self, idx: Option<usize>) {
        let ctx = &mut self.ctx;
        if let Some(b) = idx {
            let version = ctx.cfg.table.version;
            for cmd in std::mem::take(&mut ctx.restores) {
                let conn = &mut ctx.backends.conns[b];
                conn.out.buf_mut().extend_from_slice(&cmd);
                conn.sent(Owner::Internal(Internal::Restored), version, ctx.now_ms);
                ctx.versions.add(version);
                ctx.wake.backend(conn, b);
            }
        }
        for (b, gen) in std::mem::take(&mut ctx.released) {
            ctx.release_conn(b, gen, false);
        }
        for (b, gen) in std::mem::take(&mut ctx.unblocked) {
            ctx.backends.unblock_answered(b, gen, ctx.now_ms);
        }
        let Some(b) = idx else { return };
        // A watch that ended gives its connection back once the client's
        // requests on it are all answered.
        let conn = &ctx.backends.conns[b];
        if let (true, Some(Use::Leased(ci, cg))) = (
            conn.inflight.is_empty(),
            conn.dedicated.as_ref().map(|d| d.state),
        ) {
            if let Some(c) = super::live_client(&mut self.clients, ci, cg) {
                if let Some(p) = c.st.pin.filter(|p| p.b == b && p.ending) {
                    c.st.pin = None;
                    ctx.release_conn(b, p.gen, false);
                }
            }
        }
        ctx.backends.settle(b, ctx.now_ms);
    }
}
