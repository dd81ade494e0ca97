//! State shared by all cores: [`Shared`] (open clients, client ids, the
//! lease, memory) and one [`CoreReport`] per core, which the core publishes
//! (routing versions, counters, backend health, memory) and other threads
//! read; never touched per request.

use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwapOption;

use super::{health, PublishedStats, Stats};

/// How another thread wakes a core's transport: each transport has its own
/// (an eventfd its ring reads, a waker of its executor's task; see
/// `runtime`), installed in its [`CoreReport::waker`].
pub trait CoreWaker: Send + Sync + std::fmt::Debug {
    /// Makes the core load the latest config soon, even if it is idle
    /// (`Worker::config_changed`).
    fn wake(&self);
}

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
    /// Script bodies seen, for `NOSCRIPT` transparency (see
    /// [`super::scripts`]).
    pub scripts: super::ScriptRegistry,
    /// What `INFO`, `CONFIG RESETSTAT` and `SLOWLOG` share across cores
    /// (see [`super::info`]).
    pub server: super::info::ServerShared,
    /// `ACL LOG` (see [`super::acl_log`]).
    pub(crate) acl_log: std::sync::Mutex<super::acl_log::AclLog>,
    /// Failed `AUTH`s per client address (see [`super::auth`]).
    pub(crate) auth_failures: std::sync::Mutex<super::auth::AuthFailures>,
    /// The highest values `/metrics` has exported for its derived counters
    /// (see [`crate::metrics::Exported`]).
    pub exported: crate::metrics::Exported,
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
    /// How another thread wakes the core's transport to pick up a new
    /// config at once, even when idle (none: the core only looks on its
    /// next request or tick). The transport installs it while it runs.
    pub waker: ArcSwapOption<Box<dyn CoreWaker>>,
    /// The core's counters as of its last tick.
    pub stats: PublishedStats,
    /// Bytes the core holds in client and backend buffers (an estimate, kept
    /// within a megabyte of reads of the truth; see [`memory`]).
    pub memory: AtomicU64,
    /// How the core fares with each backend of its table, as of its last
    /// tick or backend state change.
    pub backends: health::PublishedHealth,
    /// Letters from other cores (`CLIENT LIST`, `KILL`, …; see
    /// [`super::mailbox`]), read when the core is woken or ticks.
    pub inbox: super::mailbox::Inbox,
    /// The core's per-command and per-error counters as of its last tick
    /// (locked on ticks and by `INFO`, never per request).
    pub commands: std::sync::Mutex<super::CommandStats>,
    /// The core's timing and per-group counters as of its last tick (see
    /// [`super::meters`]; locked on ticks with `try_lock`, by `/metrics`
    /// and by `INFO`, never per request).
    pub meters: std::sync::Mutex<super::meters::PublishedMeters>,
    /// The core's clients blocked on a command, subscribed, and watching
    /// keys, as of its last tick (`INFO clients`).
    pub client_kinds: [AtomicU64; 3],
    /// Requests held on blocked slots, as of its last tick.
    pub held: AtomicU64,
}

impl Default for CoreReport {
    fn default() -> Self {
        CoreReport {
            loaded: AtomicU64::new(0),
            oldest_inflight: AtomicU64::new(0),
            waker: ArcSwapOption::empty(),
            stats: PublishedStats::default(),
            memory: AtomicU64::new(0),
            backends: Default::default(),
            inbox: Default::default(),
            commands: Default::default(),
            meters: Default::default(),
            client_kinds: Default::default(),
            held: AtomicU64::new(0),
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
            scripts: Default::default(),
            server: Default::default(),
            acl_log: Default::default(),
            auth_failures: Default::default(),
            exported: Default::default(),
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
            if let Some(w) = r.waker.load().as_ref() {
                w.wake();
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
