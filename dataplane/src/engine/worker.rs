//! [`Worker`]: the API the transports call. A transport tells the worker
//! what happened on its sockets (a client accepted, bytes read, bytes
//! written, a connection lost) and asks what to do next (output to write,
//! connections to wake or open, whether a client is done); the worker never
//! does I/O itself. The request path reads top to bottom through
//! [`Worker::client_input`] → `Ctx::run_frames` → `Ctx::dispatch`
//! (`dispatch.rs`) → `Ctx::enqueue`, then [`Worker::backend_input`]
//! (`backend_io.rs`) → `Sink::replies` → `Sink::deliver` (`sink.rs`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Cache};
use keyway_protocol::resp::RequestParser;
use slab::Slab;

use super::client::{Client, ClientState, Phase};
use super::meters::now_ns;
use super::outbuf::OutBuf;
use super::{live_client, Action, ClientId, ClientStatus, Ctx, Rejected, Shared, Stats};
use crate::config::LiveConfig;

/// One core's proxy engine; see the module documentation.
#[derive(Debug)]
pub struct Worker {
    pub(super) clients: Slab<Client>,
    pub(super) ctx: Ctx,
    /// Parses kept-back requests again when they are dispatched.
    pub(super) reparser: RequestParser,
    /// Source of client generations.
    next_gen: u32,
    /// The backend connection slot the next client's requests go on
    /// (clients are spread over a pool's connections).
    next_conn_slot: usize,
    /// No more clients are accepted ([`Worker::begin_shutdown`]).
    shutting_down: bool,
    /// When a shutdown gives up on the clients still open (see
    /// [`Worker::drain_step`]).
    pub(super) drain_until: Option<Instant>,
}

impl Worker {
    /// A worker for core `core` reading routing from `source`.
    pub fn new(core: usize, source: Arc<ArcSwap<LiveConfig>>, shared: Arc<Shared>) -> Worker {
        let cfg = source.load_full();
        let mut ctx = Ctx {
            core,
            shared,
            source: Cache::new(source),
            cfg: cfg.clone(),
            cfg_seq: 0,
            backends: Default::default(),
            epoch: Instant::now(),
            now_ms: 0,
            wake: Default::default(),
            versions: Default::default(),
            stats: Stats::default(),
            cmds: Default::default(),
            meters: Default::default(),
            scratch: Default::default(),
            resume: Vec::new(),
            sched: Default::default(),
            reported_oldest: u64::MAX,
            backpressure: None,
            memory: Default::default(),
            log: Default::default(),
            scripts: Default::default(),
            released: Vec::new(),
            unblocked: Vec::new(),
            restores: Vec::new(),
            pubsub: Default::default(),
            admin: Default::default(),
            maintenance: false,
        };
        ctx.apply(cfg);
        Worker {
            clients: Slab::new(),
            ctx,
            reparser: RequestParser::new(super::stateful::trusted_limits()),
            next_gen: 0,
            next_conn_slot: core,
            shutting_down: false,
            drain_until: None,
        }
    }

    /// A new config may have been published: load it now.
    pub fn config_changed(&mut self) {
        self.refresh();
        self.ctx.report();
        // The same wakeup carries other cores' letters (`engine::mailbox`).
        self.read_mail();
    }

    /// The table version this core routes by.
    pub fn table_version(&self) -> u64 {
        self.ctx.cfg.table.version
    }

    /// The oldest table version with requests still in flight on this core.
    pub fn oldest_inflight_version(&self) -> Option<u64> {
        self.ctx.versions.oldest()
    }

    /// This core's counters.
    pub fn stats(&self) -> &Stats {
        &self.ctx.stats
    }

    /// TCP keepalive idle time for new client sockets, if enabled.
    pub fn keepalive(&self) -> Option<Duration> {
        self.ctx.cfg.limits.tcp_keepalive.enabled()
    }

    /// Open clients on this core.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Picks up a new routing snapshot if one was published.
    pub(super) fn refresh(&mut self) {
        let latest = self.ctx.source.load();
        if !Arc::ptr_eq(latest, &self.ctx.cfg) {
            let latest = latest.clone();
            let table_changed = latest.table.version != self.ctx.cfg.table.version;
            let users_changed = !Arc::ptr_eq(&latest.users, &self.ctx.cfg.users);
            self.ctx.apply(latest);
            if users_changed {
                self.users_changed();
            }
            for b in self.ctx.backends.stale_dedicated() {
                // Leased to a server no group uses now (a failover moved
                // its group's master): a watch or a block there is void.
                self.fail_backend(b, "the group's master changed");
            }
            // Moves not sent yet were decided under the old config: route
            // their requests again.
            self.drop_unsent_moves();
            if table_changed {
                self.monitors_follow();
                self.release_held();
                if self.ctx.backends.dedicated > 0 {
                    for (_, c) in self.clients.iter_mut() {
                        if c.st.blocked.is_some() {
                            self.ctx.reroute_blocked(&mut c.st, &mut self.reparser);
                        }
                    }
                }
            }
            self.run_deferred();
        }
    }

    // ---- clients ----------------------------------------------------------

    /// Registers a new client connection.
    pub fn accept(&mut self, peer: SocketAddr, local: SocketAddr) -> Result<ClientId, Rejected> {
        self.refresh();
        if self.shutting_down {
            return Err(Rejected::ShuttingDown);
        }
        let open = self.ctx.shared.clients.fetch_add(1, Ordering::Relaxed) + 1;
        if open > self.ctx.cfg.limits.max_clients {
            self.ctx.shared.clients.fetch_sub(1, Ordering::Relaxed);
            self.ctx.stats.clients_rejected += 1;
            if let Some(left_out) = self.ctx.log.allow(self.ctx.now_ms) {
                tracing::warn!(
                    %peer,
                    earlier_lines_left_out = left_out,
                    "refusing a client connection: limits.max_clients ({}) are open",
                    self.ctx.cfg.limits.max_clients
                );
            }
            return Err(Rejected::MaxClients);
        }
        if self.ctx.protected(peer) {
            self.ctx.shared.clients.fetch_sub(1, Ordering::Relaxed);
            return Err(Rejected::ProtectedMode);
        }
        self.ctx.stats.clients_accepted += 1;
        let users = &self.ctx.cfg.users;
        let user = users.default_user().clone();
        let authenticated = !users.auth_required();
        let acl_free = authenticated && user.unrestricted();
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_conn_slot = self.next_conn_slot.wrapping_add(1);
        let entry = self.clients.vacant_entry();
        let me = ClientId {
            idx: entry.key() as u32,
            gen: self.next_gen,
        };
        let now = self.ctx.now_ms;
        entry.insert(Client {
            parser: RequestParser::new(self.ctx.cfg.limits.request_limits()),
            st: ClientState {
                me,
                id: self
                    .ctx
                    .shared
                    .next_client_id
                    .fetch_add(1, Ordering::Relaxed)
                    + 1,
                peer,
                local,
                inbuf: Vec::new(),
                out: OutBuf::new(16 << 10),
                transport_bytes: 0,
                queue: Default::default(),
                name: None,
                phase: Phase::Open,
                conn_slot: self.next_conn_slot,
                created_ms: now,
                last_active_ms: now,
                partial_since_ms: None,
                soft_since_ms: None,
                paused: false,
                blocked_on: None,
                dirty: false,
                limits_version: self.ctx.cfg_seq,
                tx: None,
                pin: None,
                blocked: None,
                wrote: 0,
                wait_conns: Vec::new(),
                subs: None,
                resp3: false,
                monitor: None,
                last_cmd: "NULL",
                reply: 0,
                no_evict: false,
                postponed: false,
                user,
                authenticated,
                acl_free,
            },
        });
        Ok(me)
    }

    pub(super) fn client_mut(&mut self, id: ClientId) -> Option<&mut Client> {
        live_client(&mut self.clients, id.idx, id.gen)
    }

    pub(super) fn client(&self, id: ClientId) -> Option<&Client> {
        self.clients
            .get(id.idx as usize)
            .filter(|c| c.st.me.gen == id.gen)
    }

    /// Bytes read from a client.
    pub fn client_input(&mut self, id: ClientId, data: &[u8]) {
        self.refresh();
        if self.client(id).is_some() {
            self.process_client(id.idx as usize, data);
            if self.pubsub_ready() {
                self.release_ready();
            }
            self.resume_paused();
            self.run_deferred();
        }
    }

    /// Runs the client's buffered bytes plus `data` through the parser.
    pub(super) fn process_client(&mut self, idx: usize, data: &[u8]) {
        let now = self.ctx.now_ms;
        if !data.is_empty() {
            let max = self.ctx.cfg.limits.max_memory;
            let ctx = &mut self.ctx;
            ctx.memory.read(data.len(), &ctx.shared, ctx.core, max);
            ctx.stats.client_bytes_in += data.len() as u64;
        }
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        c.st.last_active_ms = now;
        self.ctx.meters.tick_clock();
        if c.st.inbuf.is_empty() {
            let used = self.ctx.run_frames(c, data);
            if used < data.len() && c.st.phase == Phase::Open {
                c.st.inbuf.extend_from_slice(&data[used..]);
            }
        } else {
            c.st.inbuf.extend_from_slice(data);
            let mut buf = std::mem::take(&mut c.st.inbuf);
            let used = self.ctx.run_frames(c, &buf);
            buf.drain(..used);
            if c.st.phase != Phase::Open {
                buf.clear();
            }
            if buf.is_empty() && buf.capacity() > 64 << 10 {
                buf = Vec::new();
            }
            c.st.inbuf = buf;
        }
        let st = &mut c.st;
        if st.queue.released() != 0 {
            // Replies keyway wrote itself (a muted client's are never
            // woken for: drained here, so the queue never keeps them).
            let now = if self.ctx.meters.on { now_ns() } else { 0 };
            self.ctx
                .meters
                .drain(&mut st.queue, now, &mut self.ctx.cmds);
        }
        st.partial_since_ms = if st.inbuf.is_empty() || !st.readable() || st.blocked.is_some() {
            None
        } else {
            st.partial_since_ms.or(Some(now))
        };
        self.ctx.after_output(st);
        if self.ctx.admin.posted {
            // Cold: a CLIENT command wrote to the mailbox or ended a pause.
            self.after_admin();
        }
    }

    /// Re-runs clients whose pipeline had filled, or whose backend's write
    /// buffer had, and now has room; the driver is woken to read from them
    /// again.
    pub(super) fn resume_paused(&mut self) {
        while let Some(idx) = self.ctx.resume.pop() {
            if self.clients.contains(idx as usize) {
                self.process_client(idx as usize, &[]);
                let st = &mut self.clients[idx as usize].st;
                self.ctx.wake.client(st);
            }
        }
    }

    /// Backend connection `b`'s write buffer drained: the clients paused
    /// because of it may be read again (unless their own pipeline is full).
    pub(super) fn release_backpressure(&mut self, b: usize) {
        let Some(conn) = self.ctx.backends.conns.get_mut(b) else {
            return;
        };
        if conn.waiters.is_empty()
            || conn.out.len() as u64 > self.ctx.cfg.backend.write_buffer_limit / 2
        {
            return;
        }
        for (idx, gen) in std::mem::take(&mut conn.waiters) {
            if let Some(c) = live_client(&mut self.clients, idx, gen) {
                if c.st.blocked_on == Some(b) {
                    c.st.blocked_on = None;
                    if !c.st.paused {
                        self.ctx.resume.push(idx);
                    }
                }
            }
        }
        self.resume_paused();
        self.run_deferred();
    }

    /// The client closed its sending side: answer what was asked, then close.
    pub fn client_eof(&mut self, id: ClientId) {
        let Some(c) = live_client(&mut self.clients, id.idx, id.gen) else {
            return;
        };
        if c.st.blocked.is_some() {
            // As Redis does, a client that closes while blocked is gone at
            // once: its block is ended at Redis (see `engine::blocking`).
            self.ctx.client_leaving(&mut c.st);
            c.st.phase = Phase::Kill;
            self.ctx.wake.client(&mut c.st);
        } else if c.st.phase == Phase::Open {
            c.st.phase = Phase::Draining;
        }
        // It reads nothing more: its subscriptions end now.
        self.client_leaves_pubsub(id.idx as usize);
        self.client_leaves_monitor(id.idx as usize);
    }

    /// What the driver should do with the client now.
    pub fn client_status(&self, id: ClientId) -> ClientStatus {
        self.client(id)
            .map_or(ClientStatus::Gone, |c| c.st.status())
    }

    /// Bytes to write to the client.
    pub fn client_output(&self, id: ClientId) -> &[u8] {
        self.client(id).map_or(&[], |c| c.st.out.pending())
    }

    /// `n` bytes of [`client_output`](Self::client_output) were written.
    pub fn client_wrote(&mut self, id: ClientId, n: usize) {
        let soft = self.ctx.cfg.limits.output_soft_limit as usize;
        if let Some(c) = self.client_mut(id) {
            c.st.out.wrote(n);
            if c.st.pending_output() <= soft {
                c.st.soft_since_ms = None;
            }
            self.ctx.written(n);
            self.ctx.stats.client_bytes_out += n as u64;
        }
    }

    /// The transport holds `bytes` for the client outside keyway's buffers
    /// now (see `ClientState::transport_bytes`): charged to
    /// `limits.max_memory` from now on, the change at once.
    pub fn client_transport_bytes(&mut self, id: ClientId, bytes: usize) {
        let Some(c) = self.client_mut(id) else {
            return;
        };
        let before = std::mem::replace(&mut c.st.transport_bytes, bytes);
        let ctx = &mut self.ctx;
        let max = ctx.cfg.limits.max_memory;
        if bytes > before {
            ctx.memory.read(bytes - before, &ctx.shared, ctx.core, max);
        } else {
            ctx.written(before - bytes);
        }
    }

    /// Takes the client's unwritten output (for a transport that writes
    /// asynchronously), leaving `spare` in its place; empty if none.
    pub fn client_take_output(&mut self, id: ClientId, mut spare: Vec<u8>) -> Vec<u8> {
        spare.clear();
        let soft = self.ctx.cfg.limits.output_soft_limit as usize;
        match self.client_mut(id) {
            Some(c) if !c.st.out.is_empty() => {
                let out = c.st.out.take(spare);
                if c.st.pending_output() <= soft {
                    c.st.soft_since_ms = None;
                }
                out
            }
            _ => spare,
        }
    }

    /// The transport finished (or abandoned) the write of the output it took
    /// last from the client (see [`client_take_output`](Self::client_take_output)).
    pub fn client_sent(&mut self, id: ClientId) {
        let soft = self.ctx.cfg.limits.output_soft_limit as usize;
        if let Some(c) = self.client_mut(id) {
            let n = c.st.out.transport_done();
            if c.st.pending_output() <= soft {
                c.st.soft_since_ms = None;
            }
            self.ctx.written(n);
            self.ctx.stats.client_bytes_out += n as u64;
        }
    }

    /// The client's socket is closed; forget it. Replies still in flight for it
    /// are dropped when they arrive.
    pub fn client_gone(&mut self, id: ClientId) {
        if let Some(c) = live_client(&mut self.clients, id.idx, id.gen) {
            if c.st.blocked.is_some() || c.st.pin.is_some() || c.st.tx.is_some() {
                self.ctx.client_leaving(&mut c.st);
            }
            if c.st.queue.released() != 0 {
                let now = if self.ctx.meters.on { now_ns() } else { 0 };
                self.ctx
                    .meters
                    .drain(&mut c.st.queue, now, &mut self.ctx.cmds);
            }
            self.client_leaves_pubsub(id.idx as usize);
            self.client_leaves_monitor(id.idx as usize);
            self.clients.remove(id.idx as usize);
            self.ctx.shared.clients.fetch_sub(1, Ordering::Relaxed);
            self.ctx.stats.clients_closed += 1;
        }
    }
    // ---- driver plumbing --------------------------------------------------

    /// Moves the indices of connections whose state changed (output to write,
    /// or closing) into `clients` and `backends`, for the driver to wake.
    /// The replies each woken client released since they were last
    /// recorded leave now: their times end here (one clock read).
    pub fn take_wakeups(&mut self, clients: &mut Vec<u32>, backends: &mut Vec<u32>) {
        let ctx = &mut self.ctx;
        let mut now = 0;
        for idx in ctx.wake.clients.drain(..) {
            if let Some(c) = self.clients.get_mut(idx as usize) {
                c.st.dirty = false;
                if c.st.queue.released() != 0 {
                    if now == 0 && ctx.meters.on {
                        now = now_ns();
                    }
                    ctx.meters.drain(&mut c.st.queue, now, &mut ctx.cmds);
                }
            }
            clients.push(idx);
        }
        for idx in self.ctx.wake.backends.drain(..) {
            if let Some(b) = self.ctx.backends.conns.get_mut(idx as usize) {
                b.dirty = false;
            }
            backends.push(idx);
        }
    }

    /// Moves pending driver actions into `out`.
    pub fn take_actions(&mut self, out: &mut Vec<Action>) {
        out.append(&mut self.ctx.backends.actions);
    }

    /// Stops accepting clients and lets every open client finish what it asked
    /// for, then close.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for (_, c) in self.clients.iter_mut() {
            if c.st.blocked.is_some() {
                // A blocked client would hold the shutdown until its
                // timeout: it is closed, as Redis closes it, and whatever
                // its command pops is pushed back (see `engine::blocking`).
                self.ctx.client_leaving(&mut c.st);
                c.st.phase = Phase::Kill;
            }
            if c.st.monitor.is_some() {
                // Its stream would never end.
                self.ctx.monitor_end(&mut c.st);
            }
            if c.st.phase == Phase::Open {
                c.st.phase = Phase::Draining;
                c.st.inbuf.clear();
            }
            self.ctx.wake.client(&mut c.st);
        }
    }
}
