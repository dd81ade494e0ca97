//! The per-core proxy engine, without I/O.
//!
//! A [`Worker`] owns one core's clients, backend connections and counters.
//! A transport in [`crate::runtime`] — keyway's own io_uring loop (the
//! default) or glommio's executor — feeds it bytes read from sockets and
//! writes out the bytes it asks for; the worker parses requests, routes
//! them, batches them into backend write buffers, frames replies and puts
//! them back in each client's request order. It never blocks, locks or
//! allocates per request in the steady state, and it is driven the same way
//! whatever the transport. See `dataplane/LIFECYCLE.md` ("One core: the
//! engine") for which file holds which concern, the life of a request and
//! of a connection.

mod acl_cmd;
mod acl_log;
mod auth;
mod backend;
pub mod backend_acl;
#[cfg(test)]
mod backend_auth_tests;
mod backend_io;
mod backends;
pub mod blocking;
mod client;
mod clients;
#[cfg(test)]
mod clients_tests;
pub mod commands;
mod config_cmd;
#[cfg(test)]
mod count_tests;
mod dedicated;
mod deferred;
pub mod diag;
mod dispatch;
mod gather;
pub mod health;
#[cfg(test)]
mod hold_tests;
mod info;
mod info_text;
mod keyspace;
#[cfg(test)]
mod keyspace_tests;
mod limits;
#[cfg(test)]
mod limits_tests;
mod local;
mod mailbox;
pub mod meters;
mod monitor;
#[cfg(test)]
mod monitor_tests;
mod move_batch;
mod moves;
#[cfg(test)]
mod moves_tests;
mod outbuf;
mod pause;
mod pending;
pub mod policy;
pub mod pubsub;
#[cfg(test)]
mod pubsub_tests;
#[cfg(test)]
mod replica_tests;
mod replies;
mod resp3;
#[cfg(test)]
mod rig;
mod route;
mod scripts;
#[cfg(test)]
mod scripts_tests;
#[cfg(test)]
mod server_tests;
mod shared;
mod sink;
mod slowlog;
pub mod split;
mod stateful;
#[cfg(test)]
mod stateful_tests;
mod stats;
mod timers;
mod tracking;
mod tx_recheck;
mod versions;
mod worker;
#[cfg(test)]
mod worker_tests;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Cache};
use slab::Slab;

pub use backend::BackendId;
use backends::Backends;
use client::{Client, ClientState, Phase};
pub use client::{ClientId, ClientStatus};
use deferred::Scheduler;
pub use info::ServerShared;
use limits::close_for_output;
pub use replies::Rejected;
pub use scripts::ScriptRegistry;
pub use shared::{CoreReport, CoreWaker, Shared};
pub use stats::{CommandStats, PublishedStats, Stats};
pub use timers::{Drain, DRAIN};
use versions::VersionCounts;
pub use worker::Worker;

use crate::config::LiveConfig;
use crate::routing::GroupIndex;
use crate::tls::TlsConnect;

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
        /// Speak TLS on it, so.
        tls: Option<TlsConnect>,
    },
}

/// Connections whose output changed, for the driver to wake.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    pub clients: Vec<u32>,
    pub backends: Vec<u32>,
}

impl Wake {
    /// Marks client `st` for a wakeup (once, until the driver takes it).
    #[inline]
    fn client(&mut self, st: &mut ClientState) {
        if !st.dirty {
            st.dirty = true;
            self.clients.push(st.me.idx);
        }
    }

    /// Marks backend connection `b` for a wakeup (once, until the driver
    /// takes it).
    #[inline]
    fn backend(&mut self, conn: &mut backend::BackendConn, b: usize) {
        if !conn.dirty {
            conn.dirty = true;
            self.backends.push(b as u32);
        }
    }
}

/// Reusable buffers for routing and splitting.
#[derive(Debug, Default)]
struct Scratch {
    keys: Vec<u32>,
    groups: Vec<GroupIndex>,
    part_groups: Vec<GroupIndex>,
    key_parts: Vec<u16>,
    moves: Vec<route::Move>,
    /// Keys and their key spec flags, for ACL checks.
    acl_keys: Vec<(u32, u16)>,
}

/// A kept-back request: (client index, client generation, its reply slot).
type DeferredRef = (u32, u32, pending::Seq);

/// Everything in a worker but the clients, in parts, so that a client can be
/// updated while routing uses the rest. Its own methods are the request path
/// (`dispatch.rs`) and the core's reports (here); migration goes through
/// [`Scheduler`] and `moves::Migrator`, reply delivery through `sink::Sink`.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// This core's index.
    core: usize,
    /// What the cores publish to other threads.
    shared: Arc<Shared>,
    /// Where new configs are published.
    source: Cache<Arc<ArcSwap<LiveConfig>>, Arc<LiveConfig>>,
    /// The config this core routes by.
    cfg: Arc<LiveConfig>,
    /// Bumped on every config applied; clients refresh their parser limits.
    cfg_seq: u64,
    /// The backend connections and their pools.
    backends: Backends,
    /// The core's clock: `now_ms` is milliseconds since `epoch`, set at
    /// each tick.
    epoch: Instant,
    now_ms: u64,
    /// Connections whose output changed.
    wake: Wake,
    /// Table versions of the requests in flight.
    versions: VersionCounts,
    stats: Stats,
    /// Per-command and per-error counters (`INFO commandstats`,
    /// `errorstats`).
    cmds: CommandStats,
    /// Request and backend timing, per-group counters (see [`meters`]).
    meters: meters::Meters,
    scratch: Scratch,
    /// Paused clients whose pipeline has room again.
    resume: Vec<u32>,
    /// Requests kept back for a migration, and their moves.
    sched: Scheduler,
    /// The oldest in-flight version last published in the core's report.
    reported_oldest: u64,
    /// A backend connection whose write buffer the request just dispatched
    /// filled past `backend.write_buffer_limit`: its client is paused.
    backpressure: Option<usize>,
    /// This core's share of `limits.max_memory`.
    memory: limits::MemoryBudget,
    /// Rate limit of the log lines about closed clients.
    log: limits::LogLimit,
    /// Scripts this core knows, `EVALSHA`s it may retry, undos to send.
    scripts: scripts::ScriptCache,
    /// Dedicated connections whose blocking command was answered, to give
    /// back after the replies are delivered (see [`sink::Sink::released`]).
    released: Vec<(usize, u32)>,
    /// Dedicated connections a `CLIENT UNBLOCK` for which was answered
    /// (see [`sink::Sink::unblocked`]).
    unblocked: Vec<(usize, u32)>,
    /// Push-backs of what orphaned blocking commands popped (see
    /// [`sink::Sink::restores`]).
    restores: Vec<Vec<u8>>,
    /// Pub/Sub: who subscribes what, the subscriber connections.
    pubsub: pubsub::PubSub,
    /// `CLIENT` commands across cores: open asks, the pause (see
    /// [`clients`]).
    admin: clients::Admin,
    /// The request being dispatched is a maintenance command
    /// ([`backend_acl::Identity::Maintenance`]): [`Ctx::enqueue`] sends it
    /// as the admin login.
    maintenance: bool,
}

impl Ctx {
    /// `n` bytes left a buffer for a socket.
    #[inline]
    pub(super) fn written(&mut self, n: usize) {
        let max = self.cfg.limits.max_memory;
        self.memory.written(n, &self.shared, self.core, max);
    }

    /// Marks a client for a wakeup if it has output, and enforces the hard
    /// output limit.
    pub(super) fn after_output(&mut self, st: &mut ClientState) {
        let hard = self.cfg.limits.output_hard_limit as usize;
        if hard > 0 && st.pending_output() > hard && st.wants_replies() {
            close_for_output(st, hard, self.now_ms, &mut self.log, &mut self.wake);
            self.stats.clients_output_limit += 1;
        }
        // Replies keyway wrote itself wait while replies of later requests
        // of the same read are still to come from a backend (the `+OK` and
        // `+QUEUED`s of a transaction whose `EXEC` is out, a `PING` before a
        // `GET`): they leave together, in one write, as Redis writes the
        // replies of one read. The reply that completes the queue wakes the
        // client; a blocked client's are written at once.
        let hold = !st.queue.is_empty() && st.blocked.is_none();
        if (!st.out.is_empty() && !hold) || st.phase != Phase::Open {
            self.wake.client(st);
        } else if st.out.is_empty() && st.queue.released() != 0 {
            // Replies dropped (`CLIENT REPLY OFF`) outside a read: the
            // wakeup records them now (`Worker::take_wakeups`), not at the
            // client's next read.
            self.wake.client(st);
        }
    }

    /// Adopts a new snapshot: its backends ([`Backends::apply`]), its
    /// limits, and its version in the core's report.
    pub(super) fn apply(&mut self, cfg: Arc<LiveConfig>) {
        self.backends.apply(&cfg);
        for (p, pool) in self.backends.pools.iter().enumerate() {
            self.meters.pool_serves(p, &pool.group);
        }
        self.meters.on = cfg.metrics.latency;
        if !self.meters.on {
            self.meters.clock_ns = 0;
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
        self.pubsub_follow();
        self.report();
    }

    /// Publishes the version this core routes by and the oldest in flight.
    pub(super) fn report(&mut self) {
        let oldest = self.versions.oldest().unwrap_or(u64::MAX);
        self.reported_oldest = oldest;
        if let Some(r) = self.shared.reports.get(self.core) {
            r.oldest_inflight.store(oldest, Ordering::Release);
            r.loaded.store(self.cfg.table.version, Ordering::Release);
        }
    }

    /// Pool `p`'s backend went from up to failing or back: publish now, and
    /// tell the control thread.
    pub(super) fn health_turned(&mut self, p: usize) {
        let pool = &self.backends.pools[p];
        match pool.health.failures {
            0 => {
                tracing::info!(core = self.core, group = %pool.group, backend = %pool.text, "backend answers again")
            }
            _ => {
                tracing::debug!(core = self.core, group = %pool.group, backend = %pool.text, "backend failing")
            }
        }
        self.backends.health_turned = true;
        self.publish_health();
    }

    /// Copies the pools' health into the core's report (see the module
    /// documentation); bumps `Shared::health_changes` if a backend turned
    /// since the last copy.
    pub(super) fn publish_health(&mut self) {
        if let Some(r) = self.shared.reports.get(self.core) {
            if self.backends.publish_health(&r.backends, self.epoch) {
                self.shared.health_changes.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Reports at once when the oldest version in flight has drained, so
    /// that the data plane acks a new table without waiting for a tick.
    /// (Requests sent since the last report are under the loaded version,
    /// which an ack of that version does not wait for.)
    #[inline]
    pub(super) fn report_if_drained(&mut self) {
        if self.versions.oldest().unwrap_or(u64::MAX) > self.reported_oldest {
            self.report();
        }
    }
}

/// Client `idx`, if it is still generation `gen` (a slot may have been
/// reused by a newer client).
#[inline]
fn live_client(clients: &mut Slab<Client>, idx: u32, gen: u32) -> Option<&mut Client> {
    clients.get_mut(idx as usize).filter(|c| c.st.me.gen == gen)
}
