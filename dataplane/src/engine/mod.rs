//! The per-core proxy engine, without I/O.
//!
//! A [`Worker`] owns one core's clients, backend connections and counters. A
//! driver (the glommio runtime in [`crate::runtime`]) feeds it bytes read from
//! sockets and writes out the bytes it asks for; the worker parses requests,
//! routes them, batches them into backend write buffers, frames replies and
//! puts them back in each client's request order. It never blocks, locks or
//! allocates per request in the steady state, and it is driven the same way
//! whatever the transport. See `dataplane/LIFECYCLE.md` for the life of a
//! request and of a connection.

mod backend;
mod client;
#[cfg(test)]
mod count_tests;
mod dispatch;
pub mod health;
#[cfg(test)]
mod hold_tests;
mod limits;
#[cfg(test)]
mod limits_tests;
mod local;
mod move_batch;
mod moves;
#[cfg(test)]
mod moves_tests;
mod outbuf;
mod pending;
pub mod policy;
#[cfg(test)]
mod replica_tests;
mod replies;
#[cfg(test)]
mod rig;
mod route;
pub mod split;
mod stats;
mod versions;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Cache};
use keyway_protocol::resp::RequestParser;
use slab::Slab;

pub use backend::BackendId;
use backend::{BackendConn, Inflight, Link, Owner, Pool, PoolKey, Purpose, MIN_BACKOFF_MS};
use client::{Client, ClientState, Phase, CLOSING_LINGER_MS};
pub use client::{ClientId, ClientStatus};
use outbuf::OutBuf;
use replies::Refusal;
pub use replies::Rejected;
use route::Place;
pub use stats::{PublishedStats, Stats};
use versions::VersionCounts;

use crate::config::LiveConfig;
use crate::routing::{GroupIndex, GroupRoute, ReadFrom};

/// State shared by all cores (touched on connect and disconnect, never per
/// request).
#[derive(Debug)]
pub struct Shared {
    /// Open client connections, all cores.
    pub clients: AtomicUsize,
    /// Source of `CLIENT ID`s.
    pub next_client_id: AtomicU64,
    /// Process start.
    pub started: Instant,
    /// The port clients connect to (known once bound).
    pub listen_port: AtomicU16,
    /// Number of cores.
    pub cores: usize,
    /// What each core reports about routing versions, for acks.
    pub reports: Box<[CoreReport]>,
    /// A managed data plane's lease end (Unix milliseconds; 0 for none).
    pub lease_until_unix_ms: AtomicU64,
    /// Bumped (after publishing) whenever a core sees a backend go from up
    /// to failing or back: the control thread then sends an Ack soon.
    pub health_changes: AtomicU64,
}

/// One core's routing-version report, updated as it applies tables and on
/// every tick.
#[derive(Debug)]
pub struct CoreReport {
    /// The table version the core routes by.
    pub loaded: AtomicU64,
    /// The oldest version with requests in flight on the core (`u64::MAX`
    /// when none is).
    pub oldest_inflight: AtomicU64,
    /// An eventfd the core's transport watches to pick up a new config at
    /// once, even when idle (-1: the core only looks on its next request or
    /// tick).
    pub wake_fd: AtomicI32,
    /// The core's counters as of its last tick.
    pub stats: PublishedStats,
    /// Bytes the core holds in client and backend buffers (an estimate, kept
    /// within a megabyte of reads of the truth; see [`memory`]).
    pub memory: AtomicU64,
    /// How the core fares with each backend of its table, as of its last
    /// tick or backend state change.
    pub backends: health::PublishedHealth,
}

impl Default for CoreReport {
    fn default() -> Self {
        CoreReport {
            loaded: AtomicU64::new(0),
            oldest_inflight: AtomicU64::new(0),
            wake_fd: AtomicI32::new(-1),
            stats: PublishedStats::default(),
            memory: AtomicU64::new(0),
            backends: Default::default(),
        }
    }
}

impl Shared {
    /// Shared state for `cores` cores.
    pub fn new(cores: usize) -> Shared {
        Shared {
            clients: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(0),
            started: Instant::now(),
            listen_port: AtomicU16::new(0),
            cores,
            reports: (0..cores).map(|_| CoreReport::default()).collect(),
            lease_until_unix_ms: AtomicU64::new(0),
            health_changes: AtomicU64::new(0),
        }
    }

    /// Every core's backend health merged into reports for an Ack, failing
    /// backends first (see [`health::merge`]).
    pub fn backend_reports(&self, now: Instant) -> Vec<keyway_capnp::control::BackendReport> {
        let copies: Vec<Vec<health::BackendHealth>> =
            self.reports.iter().map(|r| r.backends.load()).collect();
        health::merge(copies.iter().map(Vec::as_slice), now)
    }

    /// Tells every core that watches for it that a new config was published
    /// (call after `ArcSwap::store`), so idle cores load it now.
    pub fn wake_cores(&self) {
        for r in self.reports.iter() {
            let fd = r.wake_fd.load(Ordering::Acquire);
            if fd >= 0 {
                let one = 1u64.to_ne_bytes();
                // SAFETY: writing 8 bytes from a live buffer to an eventfd the
                // core owns; a failure (a closed fd at shutdown) is harmless.
                let _ = unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
            }
        }
    }

    /// Bytes held in client and backend buffers by every core.
    pub fn memory_used(&self) -> u64 {
        self.reports
            .iter()
            .map(|r| r.memory.load(Ordering::Relaxed))
            .sum()
    }

    /// Every core's counters: `own` (the calling core's, current) plus what
    /// the others published at their last tick.
    pub fn stats(&self, core: usize, own: &Stats) -> Stats {
        let mut all = own.clone();
        for (i, r) in self.reports.iter().enumerate() {
            if i != core {
                all.add(&r.stats.load());
            }
        }
        all
    }

    /// The newest version V such that every core has loaded V (or newer) and
    /// no request routed under a version older than V is in flight anywhere:
    /// what a data plane may ack. `None` until every core has loaded a table.
    pub fn drained_version(&self) -> Option<u64> {
        let loaded = self
            .reports
            .iter()
            .map(|r| r.loaded.load(Ordering::Acquire))
            .min()?;
        let oldest = self
            .reports
            .iter()
            .map(|r| r.oldest_inflight.load(Ordering::Acquire))
            .min()?;
        (loaded > 0).then_some(loaded.min(oldest))
    }
}

/// Something only the driver can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a connection for `id` to `addr`, then report `backend_connected`
    /// or `backend_failed`.
    Connect {
        /// The connection attempt.
        id: BackendId,
        /// Where to.
        addr: SocketAddr,
        /// Give up after this long.
        timeout: Duration,
    },
}

/// Connections whose output changed, for the driver to wake.
#[derive(Debug, Default)]
struct Wake {
    clients: Vec<u32>,
    backends: Vec<u32>,
}

/// Reusable buffers for routing and splitting.
#[derive(Debug, Default)]
struct Scratch {
    keys: Vec<u32>,
    groups: Vec<GroupIndex>,
    part_groups: Vec<GroupIndex>,
    key_parts: Vec<u16>,
    moves: Vec<route::Move>,
}

/// Where a group's reads may go: replica pools, taken round robin.
#[derive(Debug, Default)]
struct ReplicaReads {
    pools: Box<[usize]>,
    next: usize,
}

/// A kept-back request: (client index, client generation, its reply slot).
type DeferredRef = (u32, u32, pending::Seq);

/// Everything in a worker but the clients, so a client can be updated while
/// routing uses the rest.
#[derive(Debug)]
pub(crate) struct Ctx {
    core: usize,
    shared: Arc<Shared>,
    source: Cache<Arc<ArcSwap<LiveConfig>>, Arc<LiveConfig>>,
    cfg: Arc<LiveConfig>,
    /// Bumped on every config applied; clients refresh their parser limits.
    cfg_seq: u64,
    backends: Slab<BackendConn>,
    pools: Vec<Pool>,
    pool_by_key: HashMap<PoolKey, usize>,
    /// The pool of each group's master in the current table.
    group_pools: Vec<usize>,
    /// Per group of the current table, the replica pools its read-only
    /// commands may go to (empty: the master).
    reads: Vec<ReplicaReads>,
    /// Whether any group reads from replicas: the one test the request
    /// path makes for replica reads when none does.
    replica_reads: bool,
    /// A backend went from up to failing or back since the cores' copy
    /// (see [`health`]) was last published with `health_changes` bumped.
    health_turned: bool,
    next_gen: u32,
    next_conn_slot: usize,
    epoch: Instant,
    now_ms: u64,
    wake: Wake,
    actions: Vec<Action>,
    versions: VersionCounts,
    stats: Stats,
    scratch: Scratch,
    /// Paused clients whose pipeline has room again.
    resume: Vec<u32>,
    /// Requests held on blocked slots, released when the table changes.
    held: Vec<DeferredRef>,
    /// Clients (index, generation) whose first kept-back request may be
    /// ready to go: [`Worker::run_deferred`] walks them.
    walk: Vec<(u32, u32)>,
    /// On-demand moves, coalesced per source connection and target.
    batches: move_batch::MoveBatches,
    /// The oldest in-flight version last published in the core's report.
    reported_oldest: u64,
    /// A backend connection whose write buffer the request just dispatched
    /// filled past `backend.write_buffer_limit`: its client is paused.
    backpressure: Option<usize>,
    /// This core's share of `limits.max_memory`.
    memory: limits::MemoryBudget,
    /// Rate limit of the log lines about closed clients.
    log: limits::LogLimit,
    shutting_down: bool,
}

/// One core's proxy engine; see the module documentation.
#[derive(Debug)]
pub struct Worker {
    clients: Slab<Client>,
    ctx: Ctx,
    /// Parses kept-back requests again when they are dispatched.
    reparser: RequestParser,
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
            backends: Slab::new(),
            pools: Vec::new(),
            pool_by_key: HashMap::new(),
            group_pools: Vec::new(),
            reads: Vec::new(),
            replica_reads: false,
            health_turned: false,
            next_gen: 0,
            next_conn_slot: core,
            epoch: Instant::now(),
            now_ms: 0,
            wake: Wake::default(),
            actions: Vec::new(),
            versions: VersionCounts::default(),
            stats: Stats::default(),
            scratch: Scratch::default(),
            resume: Vec::new(),
            held: Vec::new(),
            walk: Vec::new(),
            batches: Default::default(),
            reported_oldest: u64::MAX,
            backpressure: None,
            memory: Default::default(),
            log: Default::default(),
            shutting_down: false,
        };
        ctx.apply(cfg);
        Worker {
            clients: Slab::new(),
            ctx,
            reparser: RequestParser::new(Default::default()),
        }
    }

    /// A new config may have been published: load it now.
    pub fn config_changed(&mut self) {
        self.refresh();
        self.ctx.report();
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
    fn refresh(&mut self) {
        let latest = self.ctx.source.load();
        if !Arc::ptr_eq(latest, &self.ctx.cfg) {
            let latest = latest.clone();
            let table_changed = latest.table.version != self.ctx.cfg.table.version;
            self.ctx.apply(latest);
            // Moves not sent yet were decided under the old config: route
            // their requests again.
            self.drop_unsent_moves();
            if table_changed {
                self.release_held();
            }
            self.run_deferred();
        }
    }

    /// The table changed: held requests may go (routed by the new table).
    fn release_held(&mut self) {
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
    fn run_deferred(&mut self) {
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
    fn flush_moves(&mut self) {
        if !self.ctx.batches.has_waiting() {
            return;
        }
        let timeout = self.ctx.first_move_timeout();
        for ((b, target), mut batch) in self.ctx.batches.ready() {
            let down = match self.ctx.backends.get(b) {
                None => Some(Refusal::SourceGone),
                Some(_) => self.ctx.down_error(b),
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
            let conn = &mut self.ctx.backends[b];
            moves::write_migrate(
                conn.out.buf_mut(),
                target,
                timeout,
                batch.keys.iter().map(Vec::as_slice),
            );
            conn.inflight.push_back(Inflight {
                owner: Owner::MoveBatch { id },
                version,
                sent_ms: self.ctx.now_ms,
                end: conn.out.end_offset(),
            });
            self.ctx.versions.add(version);
            if !conn.dirty && matches!(conn.link, Link::Up) {
                conn.dirty = true;
                self.ctx.wake.backends.push(b as u32);
            }
        }
    }

    /// A move a kept-back request waited for ended: with `failure` (retried
    /// or answered), or dropped unsent (`dropped`: route it again).
    fn move_answered(&mut self, (idx, gen, seq): DeferredRef, failure: &str, dropped: bool) {
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
    fn drop_unsent_moves(&mut self) {
        for w in self.ctx.batches.drop_unsent() {
            self.move_answered(w, "", true);
        }
    }

    /// Dispatches the client's first kept-back requests while they are
    /// ready; stops at the first that is not (or is kept back again).
    fn walk_client(&mut self, idx: u32, gen: u32) {
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
                        self.ctx.dispatch(&mut c.st, &args, Some(&d.frame), place);
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
    fn expire_held(&mut self) {
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

    // ---- clients ----------------------------------------------------------

    /// Registers a new client connection.
    pub fn accept(&mut self, peer: SocketAddr, local: SocketAddr) -> Result<ClientId, Rejected> {
        self.refresh();
        if self.ctx.shutting_down {
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
        self.ctx.stats.clients_accepted += 1;
        self.ctx.next_gen = self.ctx.next_gen.wrapping_add(1);
        self.ctx.next_conn_slot = self.ctx.next_conn_slot.wrapping_add(1);
        let entry = self.clients.vacant_entry();
        let me = ClientId {
            idx: entry.key() as u32,
            gen: self.ctx.next_gen,
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
                queue: Default::default(),
                name: None,
                phase: Phase::Open,
                conn_slot: self.ctx.next_conn_slot,
                created_ms: now,
                last_active_ms: now,
                partial_since_ms: None,
                soft_since_ms: None,
                paused: false,
                blocked_on: None,
                dirty: false,
                limits_version: self.ctx.cfg_seq,
            },
        });
        Ok(me)
    }

    fn client_mut(&mut self, id: ClientId) -> Option<&mut Client> {
        live_client(&mut self.clients, id.idx, id.gen)
    }

    fn client(&self, id: ClientId) -> Option<&Client> {
        self.clients
            .get(id.idx as usize)
            .filter(|c| c.st.me.gen == id.gen)
    }

    /// Bytes read from a client.
    pub fn client_input(&mut self, id: ClientId, data: &[u8]) {
        self.refresh();
        if self.client(id).is_some() {
            self.process_client(id.idx as usize, data);
            self.resume_paused();
            self.run_deferred();
        }
    }

    /// Runs the client's buffered bytes plus `data` through the parser.
    fn process_client(&mut self, idx: usize, data: &[u8]) {
        let now = self.ctx.now_ms;
        if !data.is_empty() {
            let max = self.ctx.cfg.limits.max_memory;
            let ctx = &mut self.ctx;
            ctx.memory.read(data.len(), &ctx.shared, ctx.core, max);
        }
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        c.st.last_active_ms = now;
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
        st.partial_since_ms = if st.inbuf.is_empty() || !st.readable() {
            None
        } else {
            st.partial_since_ms.or(Some(now))
        };
        self.ctx.after_output(st);
    }

    /// Re-runs clients whose pipeline had filled, or whose backend's write
    /// buffer had, and now has room; the driver is woken to read from them
    /// again.
    fn resume_paused(&mut self) {
        while let Some(idx) = self.ctx.resume.pop() {
            if self.clients.contains(idx as usize) {
                self.process_client(idx as usize, &[]);
                let st = &mut self.clients[idx as usize].st;
                if !st.dirty {
                    st.dirty = true;
                    self.ctx.wake.clients.push(idx);
                }
            }
        }
    }

    /// Backend connection `b`'s write buffer drained: the clients paused
    /// because of it may be read again (unless their own pipeline is full).
    fn release_backpressure(&mut self, b: usize) {
        let Some(conn) = self.ctx.backends.get_mut(b) else {
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
        if let Some(c) = self.client_mut(id) {
            if c.st.phase == Phase::Open {
                c.st.phase = Phase::Draining;
            }
        }
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
        }
    }

    /// The client's socket is closed; forget it. Replies still in flight for it
    /// are dropped when they arrive.
    pub fn client_gone(&mut self, id: ClientId) {
        if self.client(id).is_some() {
            self.clients.remove(id.idx as usize);
            self.ctx.shared.clients.fetch_sub(1, Ordering::Relaxed);
            self.ctx.stats.clients_closed += 1;
        }
    }

    // ---- backends ---------------------------------------------------------

    fn backend(&self, id: BackendId) -> Option<&BackendConn> {
        self.ctx
            .backends
            .get(id.idx as usize)
            .filter(|b| b.gen == id.gen && b.has_socket())
    }

    /// Whether the driver should keep the socket of `id`.
    pub fn backend_live(&self, id: BackendId) -> bool {
        self.backend(id).is_some()
    }

    /// The connection for `id` is established.
    pub fn backend_connected(&mut self, id: BackendId) -> bool {
        let Some(conn) = self
            .ctx
            .backends
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
        if self.ctx.pools[conn.pool].health.failures > 0 {
            // A PING tells when a failing backend answers again, even with
            // no request for it (a failing replica gets no reads).
            let version = self.ctx.cfg.table.version;
            conn.out
                .buf_mut()
                .extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
            conn.inflight.push_back(Inflight {
                owner: Owner::Probe,
                version,
                sent_ms: self.ctx.now_ms,
                end: conn.out.end_offset(),
            });
            self.ctx.versions.add(version);
        }
        self.ctx.stats.backend_connects += 1;
        if !conn.dirty {
            conn.dirty = true;
            self.ctx.wake.backends.push(id.idx);
        }
        true
    }

    /// Connecting failed or the connection broke: every request waiting on it
    /// gets an error, and the link backs off before the next attempt.
    pub fn backend_failed(&mut self, id: BackendId, reason: &str) {
        if self.backend(id).is_some() {
            self.fail_backend(id.idx as usize, reason);
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
        if let Some(conn) = self
            .ctx
            .backends
            .get_mut(id.idx as usize)
            .filter(|b| b.gen == id.gen)
        {
            conn.out.wrote(n);
            self.ctx.written(n);
            self.release_backpressure(id.idx as usize);
        }
    }

    /// Takes the backend connection's unwritten requests (see
    /// [`client_take_output`](Self::client_take_output)).
    pub fn backend_take_output(&mut self, id: BackendId, mut spare: Vec<u8>) -> Vec<u8> {
        spare.clear();
        let out = match self.ctx.backends.get_mut(id.idx as usize) {
            Some(b) if b.gen == id.gen && matches!(b.link, Link::Up) && !b.out.is_empty() => {
                b.out.take(spare)
            }
            _ => return spare,
        };
        self.release_backpressure(id.idx as usize);
        out
    }

    /// The transport finished (or abandoned) the write of the requests it took
    /// last from the backend connection.
    pub fn backend_sent(&mut self, id: BackendId) {
        if let Some(b) = self
            .ctx
            .backends
            .get_mut(id.idx as usize)
            .filter(|b| b.gen == id.gen)
        {
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
        match result {
            Ok(()) => {
                let now = self.ctx.now_ms;
                let p = self.ctx.backends[idx].pool;
                if self.ctx.pools[p].health.answered(now) {
                    self.ctx.health_turned(p);
                }
            }
            Err(fault) => {
                if fault == BackendFault::Unsolicited {
                    self.ctx.stats.backend_unsolicited += 1;
                }
                self.fail_backend(idx, &fault.to_string());
            }
        }
        self.resume_paused();
        self.run_deferred();
        self.ctx.report_if_drained();
    }

    /// The backend connections, and a [`Sink`] for replies over the rest.
    fn delivery(&mut self) -> (&mut Slab<BackendConn>, Sink<'_>) {
        let ctx = &mut self.ctx;
        let sink = Sink {
            clients: &mut self.clients,
            wake: &mut ctx.wake,
            versions: &mut ctx.versions,
            stats: &mut ctx.stats,
            resume: &mut ctx.resume,
            walk: &mut ctx.walk,
            batches: &mut ctx.batches,
            log: &mut ctx.log,
            now_ms: ctx.now_ms,
            hard_limit: ctx.cfg.limits.output_hard_limit as usize,
            reply_limit: ctx.cfg.reply_limit(),
            max_pipeline: ctx.cfg.limits.max_pipeline,
        };
        (&mut ctx.backends, sink)
    }

    fn fail_backend(&mut self, idx: usize, reason: &str) {
        let now = self.ctx.now_ms;
        let max_backoff = self.ctx.cfg.backend.max_backoff.0.max(MIN_BACKOFF_MS);
        self.ctx.next_gen = self.ctx.next_gen.wrapping_add(1);
        let gen = self.ctx.next_gen;
        let p = self.ctx.backends[idx].pool;
        if self.ctx.pools[p].health.failed(now, reason) {
            self.ctx.health_turned(p);
        }
        let pool = &self.ctx.pools[p];
        let (core, group, addr) = (self.ctx.core, pool.group.clone(), pool.key.clone());
        let reason: Arc<str> = Arc::from(reason);
        let reply = Refusal::BackendDown {
            group: group.clone(),
            reason: reason.clone(),
        }
        .to_reply();
        let (backends, mut sink) = self.delivery();
        let conn = &mut backends[idx];
        if matches!(conn.link, Link::Up) {
            tracing::warn!(core, %group, backend = ?addr, "backend lost: {reason}");
        } else {
            tracing::debug!(core, %group, backend = ?addr, "backend unavailable: {reason}");
        }
        sink.stats.backend_failures += 1;
        sink.stats.errors_backend += conn.inflight.len() as u64;
        for e in conn.inflight.drain(..) {
            sink.deliver(e, &reply);
        }
        conn.reset_io();
        conn.gen = gen;
        conn.link = Link::Down {
            until_ms: now + conn.backoff_ms,
            reason,
        };
        conn.backoff_ms = (conn.backoff_ms * 2).min(max_backoff);
        sink.wake.backends.push(idx as u32);
        self.release_backpressure(idx);
    }

    // ---- driver plumbing --------------------------------------------------

    /// Moves the indices of connections whose state changed (output to write,
    /// or closing) into `clients` and `backends`, for the driver to wake.
    pub fn take_wakeups(&mut self, clients: &mut Vec<u32>, backends: &mut Vec<u32>) {
        for idx in self.ctx.wake.clients.drain(..) {
            if let Some(c) = self.clients.get_mut(idx as usize) {
                c.st.dirty = false;
            }
            clients.push(idx);
        }
        for idx in self.ctx.wake.backends.drain(..) {
            if let Some(b) = self.ctx.backends.get_mut(idx as usize) {
                b.dirty = false;
            }
            backends.push(idx);
        }
    }

    /// Moves pending driver actions into `out`.
    pub fn take_actions(&mut self, out: &mut Vec<Action>) {
        out.append(&mut self.ctx.actions);
    }

    /// Periodic work: picks up new routing, applies timeouts, retires idle
    /// connections. Call every 100 ms or so.
    pub fn tick(&mut self, now: Instant) {
        self.ctx.now_ms = now.saturating_duration_since(self.ctx.epoch).as_millis() as u64;
        self.refresh();
        self.tick_backends();
        self.tick_clients();
        self.tick_memory();
        self.expire_held();
        self.resume_paused();
        self.run_deferred();
        self.ctx.report();
        self.ctx.publish_health();
        if let Some(r) = self.ctx.shared.reports.get(self.ctx.core) {
            r.stats.publish(&self.ctx.stats);
        }
    }

    /// Counts what this core's buffers hold, publishes it, and while the
    /// process is over `max_memory` closes this core's largest clients until
    /// the core is back within its share.
    fn tick_memory(&mut self) {
        let max = self.ctx.cfg.limits.max_memory;
        let backends: usize = self
            .ctx
            .backends
            .iter()
            .map(|(_, b)| b.buffered_bytes())
            .sum();
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
            } else if n >= limits::EVICT_MIN {
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

    fn tick_backends(&mut self) {
        let now = self.ctx.now_ms;
        let timeout = self.ctx.cfg.backend.timeout.0;
        let connect_timeout = self.ctx.cfg.backend.connect_timeout.0;
        let mut failed: Vec<(usize, String)> = Vec::new();
        for (idx, conn) in self.ctx.backends.iter_mut() {
            match &conn.link {
                Link::Up => {
                    if let Some(front) = conn.inflight.front() {
                        if timeout > 0 && now.saturating_sub(front.sent_ms) > timeout {
                            failed.push((
                                idx,
                                format!("no reply within {}", self.ctx.cfg.backend.timeout),
                            ));
                        }
                    }
                }
                Link::Connecting { since_ms }
                    if now.saturating_sub(*since_ms) > connect_timeout + 1000 =>
                {
                    failed.push((
                        idx,
                        format!(
                            "connect timed out after {}",
                            self.ctx.cfg.backend.connect_timeout
                        ),
                    ));
                }
                Link::Down { until_ms, .. } if now >= *until_ms => conn.link = Link::Idle,
                _ => {}
            }
        }
        for (idx, reason) in failed {
            if reason.starts_with("no reply") {
                self.ctx.stats.backend_timeouts += 1;
            }
            self.fail_backend(idx, &reason);
        }
        self.ctx.probe_failing();
        // Close retired connections whose replies are all in.
        for p in 0..self.ctx.pools.len() {
            let mut i = 0;
            while i < self.ctx.pools[p].retiring.len() {
                let b = self.ctx.pools[p].retiring[i];
                let conn = &mut self.ctx.backends[b];
                if conn.inflight.is_empty() {
                    self.ctx.pools[p].retiring.swap_remove(i);
                    if conn.has_socket() {
                        self.ctx.wake.backends.push(b as u32);
                    }
                    conn.out.clear();
                    self.release_backpressure(b);
                    self.ctx.backends.remove(b);
                } else {
                    i += 1;
                }
            }
        }
    }

    fn tick_clients(&mut self) {
        let now = self.ctx.now_ms;
        let limits = &self.ctx.cfg.limits;
        for (_, c) in self.clients.iter_mut() {
            let st = &mut c.st;
            match st.phase {
                Phase::Kill => continue,
                Phase::Closing { since_ms } => {
                    if now.saturating_sub(since_ms) > CLOSING_LINGER_MS {
                        st.phase = Phase::Kill;
                        if !st.dirty {
                            st.dirty = true;
                            self.ctx.wake.clients.push(st.me.idx);
                        }
                    }
                    continue;
                }
                Phase::Open | Phase::Draining => {}
            }
            let before = st.phase;
            if let Some(idle) = limits.idle_timeout.enabled() {
                if st.queue.is_empty()
                    && st.inbuf.is_empty()
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
                    if !st.dirty {
                        st.dirty = true;
                        self.ctx.wake.clients.push(st.me.idx);
                    }
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
            if st.phase != before && !st.dirty {
                st.dirty = true;
                self.ctx.wake.clients.push(st.me.idx);
            }
        }
    }

    /// Stops accepting clients and lets every open client finish what it asked
    /// for, then close.
    pub fn begin_shutdown(&mut self) {
        self.ctx.shutting_down = true;
        for (_, c) in self.clients.iter_mut() {
            if c.st.phase == Phase::Open {
                c.st.phase = Phase::Draining;
                c.st.inbuf.clear();
            }
            if !c.st.dirty {
                c.st.dirty = true;
                self.ctx.wake.clients.push(c.st.me.idx);
            }
        }
    }
}

impl Ctx {
    /// `n` bytes left a buffer for a socket.
    #[inline]
    fn written(&mut self, n: usize) {
        let max = self.cfg.limits.max_memory;
        self.memory.written(n, &self.shared, self.core, max);
    }

    /// Marks a client for a wakeup if it has output, and enforces the hard
    /// output limit.
    fn after_output(&mut self, st: &mut ClientState) {
        let hard = self.cfg.limits.output_hard_limit as usize;
        if hard > 0 && st.pending_output() > hard && st.wants_replies() {
            close_for_output(st, hard, self.now_ms, &mut self.log, &mut self.wake);
            self.stats.clients_output_limit += 1;
        }
        if !st.dirty && (!st.out.is_empty() || st.phase != Phase::Open) {
            st.dirty = true;
            self.wake.clients.push(st.me.idx);
        }
    }

    /// Adopts a new snapshot: maps its groups' masters (and the replicas
    /// their reads may go to) to connection pools, creating pools for new
    /// addresses and retiring connections no group uses any more.
    fn apply(&mut self, cfg: Arc<LiveConfig>) {
        let mut used = vec![false; self.pools.len()];
        self.group_pools.clear();
        self.reads.clear();
        for g in cfg.table.groups() {
            let key = match &g.master {
                Ok(a) => PoolKey::Addr(*a),
                Err(_) => PoolKey::Unresolved(g.master_text.clone()),
            };
            let p = self.pool(key, g, &g.master_text, &cfg, &mut used);
            if let Err(why) = &g.master {
                for &b in &self.pools[p].conns {
                    // Never connects: its requests get the resolver's error
                    // until a table with the master resolved replaces it.
                    self.backends[b].link = Link::Down {
                        until_ms: u64::MAX,
                        reason: why.clone(),
                    };
                }
            }
            self.group_pools.push(p);
            let mut reads = Vec::new();
            for r in g.replicas.iter() {
                let local = match (g.read_from, &cfg.zone) {
                    (ReadFrom::Master, _) => continue,
                    (ReadFrom::Replica, _) => true,
                    (ReadFrom::LocalZone, Some(zone)) => r.zone == *zone,
                    (ReadFrom::LocalZone, None) => false,
                };
                if let (true, Ok(a)) = (local, &r.addr) {
                    reads.push(self.pool(PoolKey::Addr(*a), g, &r.text, &cfg, &mut used));
                }
            }
            self.reads.push(ReplicaReads {
                pools: reads.into(),
                next: 0,
            });
        }
        self.replica_reads = self.reads.iter().any(|r| !r.pools.is_empty());
        for (p, pool) in self.pools.iter_mut().enumerate() {
            pool.in_use = used[p];
            if !used[p] {
                pool.retiring.append(&mut pool.conns);
            }
        }
        if self.cfg.table.version != cfg.table.version {
            tracing::debug!(
                core = self.core,
                version = cfg.table.version,
                "routing table applied"
            );
        }
        self.memory
            .budget_changed(&self.shared, cfg.limits.max_memory);
        self.cfg = cfg;
        self.cfg_seq += 1;
        self.report();
    }

    /// The pool for `key` (created if new) with `backend.connections`
    /// connections, serving group `g` as `text`.
    fn pool(
        &mut self,
        key: PoolKey,
        g: &GroupRoute,
        text: &str,
        cfg: &LiveConfig,
        used: &mut Vec<bool>,
    ) -> usize {
        let wanted = cfg.backend.connections;
        let p = match self.pool_by_key.get(&key) {
            Some(&p) => p,
            None => {
                self.pools.push(Pool {
                    key: key.clone(),
                    group: g.name.clone(),
                    text: Arc::from(text),
                    conns: Vec::new(),
                    retiring: Vec::new(),
                    health: Default::default(),
                    in_use: true,
                });
                used.push(false);
                self.pool_by_key.insert(key, self.pools.len() - 1);
                self.pools.len() - 1
            }
        };
        used[p] = true;
        let pool = &mut self.pools[p];
        pool.group = g.name.clone();
        if *pool.text != *text {
            pool.text = Arc::from(text);
        }
        while pool.conns.len() < wanted {
            pool.conns.push(self.backends.insert(BackendConn::new(p)));
        }
        while pool.conns.len() > wanted {
            let b = pool.conns.pop().expect("non-empty");
            pool.retiring.push(b);
        }
        p
    }

    /// Publishes the version this core routes by and the oldest in flight.
    fn report(&mut self) {
        let oldest = self.versions.oldest().unwrap_or(u64::MAX);
        self.reported_oldest = oldest;
        if let Some(r) = self.shared.reports.get(self.core) {
            r.oldest_inflight.store(oldest, Ordering::Release);
            r.loaded.store(self.cfg.table.version, Ordering::Release);
        }
    }

    /// Reports at once when the oldest version in flight has drained, so
    /// that the data plane acks a new table without waiting for a tick.
    /// (Requests sent since the last report are under the loaded version,
    /// which an ack of that version does not wait for.)
    #[inline]
    fn report_if_drained(&mut self) {
        if self.versions.oldest().unwrap_or(u64::MAX) > self.reported_oldest {
            self.report();
        }
    }
}

/// Why a backend connection can no longer be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum BackendFault {
    /// It answered more than was asked: every later reply would go to the
    /// wrong request.
    #[error("the backend sent a reply no request asked for")]
    Unsolicited,
    /// It sent something that is not RESP.
    #[error("protocol error from backend: {0}")]
    Protocol(keyway_protocol::resp::ReplyError),
}

/// Whether a reply is owed on `conn`: its oldest request in flight has been
/// handed to the transport.
#[inline]
fn owed(conn: &BackendConn) -> bool {
    conn.inflight
        .front()
        .is_some_and(|f| f.end <= conn.out.handed())
}

/// Client `idx`, if it is still generation `gen` (a slot may have been
/// reused by a newer client).
#[inline]
fn live_client(clients: &mut Slab<Client>, idx: u32, gen: u32) -> Option<&mut Client> {
    clients.get_mut(idx as usize).filter(|c| c.st.me.gen == gen)
}

/// Closes a client for exceeding a limit (see
/// [`ClientState::close_for_limit`]), logs it with the client and the reason
/// (rate-limited), and wakes its driver.
fn close_client(
    st: &mut ClientState,
    reply: &Refusal<'_>,
    reason: &str,
    now_ms: u64,
    log: &mut limits::LogLimit,
    wake: &mut Wake,
) {
    st.close_for_limit(reply, now_ms);
    log_close(st, reason, now_ms, log);
    if !st.dirty {
        st.dirty = true;
        wake.clients.push(st.me.idx);
    }
}

/// Logs that a client is being closed by a limit, and why (rate-limited).
fn log_close(st: &ClientState, reason: &str, now_ms: u64, log: &mut limits::LogLimit) {
    if let Some(left_out) = log.allow(now_ms) {
        tracing::warn!(
            client = st.id,
            peer = %st.peer,
            earlier_lines_left_out = left_out,
            "closing a client connection: {reason}"
        );
    }
}

/// Closes a client whose unread replies exceed `limits.output_hard_limit`.
fn close_for_output(
    st: &mut ClientState,
    hard: usize,
    now_ms: u64,
    log: &mut limits::LogLimit,
    wake: &mut Wake,
) {
    let why = Refusal::HardLimit { limit: hard };
    close_client(
        st,
        &why,
        "its unread replies exceed limits.output_hard_limit",
        now_ms,
        log,
        wake,
    );
}

/// Where backend replies go: the clients and the bookkeeping around them.
struct Sink<'a> {
    clients: &'a mut Slab<Client>,
    wake: &'a mut Wake,
    versions: &'a mut VersionCounts,
    stats: &'a mut Stats,
    resume: &'a mut Vec<u32>,
    walk: &'a mut Vec<(u32, u32)>,
    batches: &'a mut move_batch::MoveBatches,
    log: &'a mut limits::LogLimit,
    now_ms: u64,
    /// `limits.output_hard_limit` (0: none).
    hard_limit: usize,
    /// The largest reply forwarded, and the setting that says so.
    reply_limit: (u64, &'static str),
    max_pipeline: usize,
}

impl Sink<'_> {
    /// A batch's MIGRATE reply stands for each of its requests' moves.
    fn batch_replied(&mut self, id: u64, reply: &[u8]) {
        for (idx, gen, seq) in self.batches.answered(id) {
            let Some(c) = live_client(self.clients, idx, gen) else {
                continue;
            };
            if c.st
                .queue
                .deferred_mut(seq)
                .is_some_and(|d| moves::move_replied(d, None, reply))
            {
                self.walk.push((idx, gen));
            }
        }
    }

    /// Frames every complete reply at the start of `buf` and delivers it to
    /// the request at the head of `conn`'s in-flight queue. Returns the bytes
    /// consumed, or why the connection can no longer be trusted.
    ///
    /// A reply is owed only for a request the transport has been handed
    /// (see [`Inflight::end`]): one more is a reply no request asked for,
    /// which would shift every later reply to the wrong request. A reply
    /// larger than the reply limit is read and dropped as it arrives, and
    /// its request gets an error naming the limit.
    fn replies(&mut self, conn: &mut BackendConn, buf: &[u8]) -> Result<usize, BackendFault> {
        let mut at = 0;
        loop {
            match conn.framer.next(&buf[at..]) {
                Ok(Some(len)) => {
                    if !owed(conn) {
                        return Err(BackendFault::Unsolicited);
                    }
                    let Some(entry) = conn.inflight.pop_front() else {
                        return Err(BackendFault::Unsolicited);
                    };
                    let size = conn.skipped + len as u64;
                    let (limit, key) = self.reply_limit;
                    if size > limit {
                        conn.skipped = 0;
                        self.stats.replies_too_large += 1;
                        let why = Refusal::ReplyTooLarge {
                            bytes: size,
                            key,
                            limit,
                        };
                        self.deliver(entry, &why.to_reply());
                    } else {
                        self.deliver(entry, &buf[at..at + len]);
                    }
                    at += len;
                }
                Ok(None) => {
                    let rest = buf.len() - at;
                    let size = conn.skipped + rest.max(conn.framer.bytes_needed()) as u64;
                    if size > self.reply_limit.0 {
                        if !owed(conn) {
                            return Err(BackendFault::Unsolicited);
                        }
                        let drop = conn.framer.discardable(rest);
                        conn.framer.rebase(drop);
                        conn.skipped += drop as u64;
                        at += drop;
                    }
                    return Ok(at);
                }
                Err(e) => return Err(BackendFault::Protocol(e)),
            }
        }
    }

    #[inline]
    fn deliver(&mut self, e: Inflight, reply: &[u8]) {
        self.versions.done(e.version);
        let (idx, gen, seq, purpose) = match e.owner {
            Owner::Client {
                idx,
                gen,
                seq,
                purpose,
            } => (idx, gen, seq, purpose),
            Owner::MoveBatch { id } => return self.batch_replied(id, reply),
            // The probe's reply only tells that the backend is up.
            Owner::Probe => return,
        };
        let Some(c) = live_client(self.clients, idx, gen) else {
            self.stats.replies_orphaned += 1;
            return;
        };
        let st = &mut c.st;
        if !st.wants_replies() {
            return;
        }
        match purpose {
            Purpose::Whole => st.queue.complete(seq, reply, st.out.buf_mut()),
            Purpose::Part(part) => {
                let hard = self.hard_limit;
                let stats = &mut *self.stats;
                st.queue
                    .complete_part(seq, part, reply, st.out.buf_mut(), hard, |n| {
                        stats.replies_too_large += 1;
                        Refusal::ReplyTooLarge {
                            bytes: n as u64,
                            key: "limits.output_hard_limit",
                            limit: hard as u64,
                        }
                        .to_reply()
                    });
            }
            Purpose::Move | Purpose::MoveKey(_) => {
                let single = match purpose {
                    Purpose::MoveKey(i) => Some(i),
                    _ => None,
                };
                if st
                    .queue
                    .deferred_mut(seq)
                    .is_some_and(|d| moves::move_replied(d, single, reply))
                {
                    self.walk.push((idx, gen));
                }
                return;
            }
        }
        if self.hard_limit > 0 && st.pending_output() > self.hard_limit {
            close_for_output(st, self.hard_limit, self.now_ms, self.log, self.wake);
            self.stats.clients_output_limit += 1;
            return;
        }
        if st.paused && st.queue.len() <= self.max_pipeline / 2 {
            st.paused = false;
            self.resume.push(idx);
        }
        if !st.dirty {
            st.dirty = true;
            self.wake.clients.push(idx);
        }
    }
}
