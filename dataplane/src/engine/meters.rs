//! Per-core request timing and per-group backend counters (`/metrics`,
//! `INFO latencystats`, the times of `INFO commandstats`).
//!
//! The clock is read once per batch, never per request: once when a read
//! from a client is parsed ([`Meters::clock_ns`] is set before the batch's
//! requests are dispatched, and each request carries that time in its
//! [`Stamp`], kept run-length encoded by the client's reply queue), once
//! when a client's replies are handed to the transport (the driver takes
//! the woken clients' output, see `Worker::take_wakeups`, or a read ends
//! with replies keyway wrote itself): the replies released since are
//! drained from the queue a run at a time, so a pipeline of one command
//! read at once is recorded once, `n` times. On the backend side, once
//! when a backend connection's requests are handed to the transport and
//! once when a read of its replies is framed: the replies of one read to
//! requests of one write are counted as one run ([`Meters::backend_begin`]
//! and [`Meters::backend_run`]). The clock is `CLOCK_MONOTONIC` through the vDSO (`clock_gettime`, tens of
//! nanoseconds, no system call): a coarse tick would round a 50 µs request
//! to 0 or to a whole tick.
//!
//! Histograms are `hdrhistogram`s of nanoseconds from 1 ns to 60 s (longer
//! is counted as 60 s), two significant digits, never resized: one per
//! command family (u64 counts, about 30 KiB each), one per backend group,
//! and for `INFO latencystats` one per command (also u64 counts: a core
//! serving a million requests a second would fill a u32 bucket in an
//! hour) allocated on the tick for commands the core has served (never on
//! the request path). On every tick a core adds what it recorded since the
//! last tick into its [`PublishedMeters`] (behind a mutex taken by the tick
//! with `try_lock`, by `/metrics` and by `INFO`, never per request) and
//! starts its own again from zero; the admin thread merges the cores'
//! published copies at scrape, so a scrape's work depends on the number of
//! cores, families and groups, not of clients.

use std::sync::Arc;
use std::sync::OnceLock;

use hdrhistogram::Histogram;
use keyway_protocol::command;

/// The longest time a histogram tells apart (longer counts as this).
pub const HIGHEST_NS: u64 = 60_000_000_000;

/// Significant digits the histograms keep (values are within 1%).
pub const SIGFIG: u8 = 2;

/// A new, empty, fixed-range histogram.
pub fn histogram<T: hdrhistogram::Counter>() -> Histogram<T> {
    // Constant bounds, which are valid: never fails.
    Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG)
        .unwrap_or_else(|e| unreachable!("histogram bounds: {e}"))
}

/// Nanoseconds on the monotonic clock.
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes into the timespec we own;
    // CLOCK_MONOTONIC always exists on Linux (it cannot fail).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The command families (Redis's command groups, `COMMAND DOCS`'s `group`)
/// as `/metrics` labels them; `other` for a command without one.
pub const FAMILIES: [&str; 18] = [
    "string",
    "hash",
    "list",
    "set",
    "sorted_set",
    "stream",
    "pubsub",
    "scripting",
    "transactions",
    "connection",
    "server",
    "generic",
    "geo",
    "hyperloglog",
    "bitmap",
    "cluster",
    "sentinel",
    "other",
];

/// Each command id's family (an index into [`FAMILIES`]), read once from
/// the `COMMAND DOCS` reply the command table was generated from.
pub fn families() -> &'static [u8] {
    static TABLE: OnceLock<Box<[u8]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = vec![(FAMILIES.len() - 1) as u8; command::COMMAND_IDS];
        for c in command::all() {
            if let Some(slot) = t.get_mut(usize::from(c.id)) {
                *slot = family_of_docs(c.docs_bytes());
            }
        }
        t.into_boxed_slice()
    })
}

/// The family named by the first `group` key of a raw `COMMAND DOCS`
/// entry (its own `group` comes before its arguments' names).
fn family_of_docs(docs: &[u8]) -> u8 {
    const KEY: &[u8] = b"$5\r\ngroup\r\n$";
    let other = (FAMILIES.len() - 1) as u8;
    let Some(at) = docs.windows(KEY.len()).position(|w| w == KEY) else {
        return other;
    };
    let rest = &docs[at + KEY.len()..];
    let Some(nl) = rest.iter().position(|&b| b == b'\r') else {
        return other;
    };
    let Some(len) = std::str::from_utf8(&rest[..nl])
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return other;
    };
    let Some(name) = rest.get(nl + 2..nl + 2 + len) else {
        return other;
    };
    let name = String::from_utf8_lossy(name).replace('-', "_");
    FAMILIES
        .iter()
        .position(|f| *f == name)
        .map_or(other, |i| i as u8)
}

/// No command: a reply that is not timed (a refusal, a second reply of
/// the same request).
pub const NO_CMD: u16 = u16::MAX;

/// What a request's reply slot carries: its command (if it ran) and the
/// clock of the read that brought it (0: not timed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The clock of the batch the request was read in.
    pub start_ns: u64,
    /// Its command id, or [`NO_CMD`].
    pub cmd: u16,
}

impl Default for Stamp {
    fn default() -> Self {
        Stamp {
            start_ns: 0,
            cmd: NO_CMD,
        }
    }
}

/// Why a backend connection failed, as `/metrics` labels it.
pub const BACKEND_ERRORS: [&str; 6] = ["timeout", "connect", "closed", "auth", "tls", "protocol"];

/// The [`BACKEND_ERRORS`] index of a failure, from its reason (and
/// whether the connection was still being opened).
pub fn backend_error_kind(reason: &str, connecting: bool) -> usize {
    let lower = reason.to_ascii_lowercase();
    if lower.starts_with("no reply within") || lower.contains("timed out") {
        0
    } else if lower.starts_with("tls") || lower.contains(" tls") {
        4
    } else if reason.starts_with(super::backends::AUTH_FAILED) || lower.contains("credentials") {
        3
    } else if lower.contains("protocol") || lower.contains("no request asked for") {
        5
    } else if connecting {
        1
    } else {
        2
    }
}

/// Backend connection states, as `/metrics` labels them.
pub const CONN_STATES: [&str; 4] = ["up", "connecting", "down", "idle"];

/// One backend group's counters and timing on a core.
#[derive(Debug, Clone)]
pub struct GroupMeter {
    /// Backend connections by [`CONN_STATES`] state, as of the last tick.
    pub conns: [u64; CONN_STATES.len()],
    /// Replies read (sub-requests answered).
    pub requests: u64,
    /// Connections established.
    pub connects: u64,
    /// Connection failures by [`BACKEND_ERRORS`] kind.
    pub errors: [u64; BACKEND_ERRORS.len()],
    /// Sum of the sub-requests' times (ns).
    pub sum_ns: u64,
    /// Sub-request written → reply read, ns (the core's: since the last
    /// tick; published: since start).
    pub hist: Histogram<u64>,
}

impl Default for GroupMeter {
    fn default() -> Self {
        GroupMeter {
            conns: [0; CONN_STATES.len()],
            requests: 0,
            connects: 0,
            errors: [0; BACKEND_ERRORS.len()],
            sum_ns: 0,
            hist: histogram(),
        }
    }
}

/// Backend replies of one read to requests of one write: one time, counted
/// once (see [`Meters::backend_run`]).
#[derive(Debug, Clone, Copy)]
pub struct BackendRun {
    /// The group (index into [`Meters::group_names`]; `u32::MAX`: none).
    group: u32,
    /// The stream offset the run's hand-off covers up to: a reply to a
    /// request ending past it starts a new run.
    upto: u64,
    /// When those requests were handed to the transport (0: not timed).
    sent_ns: u64,
    /// Replies counted.
    n: u64,
}

impl Default for BackendRun {
    fn default() -> Self {
        BackendRun {
            group: u32::MAX,
            upto: 0,
            sent_ns: 0,
            n: 0,
        }
    }
}

/// Times of commands not yet given a histogram a core keeps until its
/// next tick (more are left out of `INFO latencystats`).
pub const PENDING: usize = 256;

/// One core's meters; see the module documentation.
#[derive(Debug)]
pub struct Meters {
    /// Each command id's family.
    families: &'static [u8],
    /// Recording latency (`metrics.latency`).
    pub on: bool,
    /// The clock of the batch being processed (0 when `on` is false).
    pub clock_ns: u64,
    /// By family, since the last tick.
    family: Box<[Histogram<u64>]>,
    /// By family, since start (ns).
    family_sum_ns: Box<[u64]>,
    /// By command id, since the last tick; allocated on the tick for the
    /// commands served.
    commands: Box<[Option<Box<Histogram<u64>>>]>,
    /// Times of commands with no histogram yet (command id, ns), at most
    /// [`PENDING`]: recorded once the tick has allocated theirs.
    pending: Vec<(u16, u64, u64)>,
    /// The backend replies being counted (see
    /// [`backend_run`](Self::backend_run)).
    pub brun: BackendRun,
    /// Group names met, in order (only grows).
    pub group_names: Vec<Arc<str>>,
    /// Each backend pool's index in `group_names`.
    pool_group: Vec<u32>,
    /// By index of `group_names`.
    pub groups: Vec<GroupMeter>,
    /// The `CONFIG RESETSTAT` this core last cleared its command
    /// histograms for (see [`Meters::flush`]).
    reset_epoch: u64,
}

impl Default for Meters {
    fn default() -> Self {
        Meters {
            families: families(),
            on: true,
            clock_ns: 0,
            family: (0..FAMILIES.len()).map(|_| histogram()).collect(),
            family_sum_ns: vec![0; FAMILIES.len()].into_boxed_slice(),
            commands: (0..command::COMMAND_IDS).map(|_| None).collect(),
            pending: Vec::with_capacity(PENDING),
            brun: BackendRun::default(),
            group_names: Vec::new(),
            pool_group: Vec::new(),
            groups: Vec::new(),
            reset_epoch: 0,
        }
    }
}

impl Meters {
    /// Reads the clock for a new batch (when recording).
    #[inline]
    pub fn tick_clock(&mut self) {
        if self.on {
            self.clock_ns = now_ns();
        }
    }

    /// The stamp of a request read in the current batch.
    #[inline]
    pub fn stamp(&self, cmd: u16) -> Stamp {
        Stamp {
            start_ns: self.clock_ns,
            cmd,
        }
    }

    /// Records the replies `queue` released (see `engine::pending`),
    /// handed to the transport at `now_ns` (0: not timed): their
    /// failures, and their times when recording.
    #[inline]
    pub fn drain(
        &mut self,
        queue: &mut super::pending::ReplyQueue,
        now_ns: u64,
        cmds: &mut super::CommandStats,
    ) {
        let timed = self.on && now_ns != 0;
        queue.drain(|stamp, n, errors| {
            let id = usize::from(stamp.cmd);
            if errors > 0 {
                if let Some(f) = cmds.failed.get_mut(id) {
                    *f += errors;
                }
            }
            if timed && stamp.start_ns != 0 {
                // At least 1 ns, as Redis counts a command that took
                // less than its clock tells apart.
                let ns = now_ns.saturating_sub(stamp.start_ns).max(1);
                self.record(stamp.cmd, ns, n, cmds);
            }
        });
    }

    /// Records the backend replies counted last: call at the end of a
    /// read of replies and on the tick.
    #[inline]
    pub fn end_batch(&mut self) {
        self.end_backend_run();
    }

    /// Records `n` replies to command `cmd` that took `ns` each.
    #[inline]
    fn record(&mut self, cmd: u16, ns: u64, n: u64, cmds: &mut super::CommandStats) {
        let id = usize::from(cmd);
        let f = usize::from(self.families.get(id).copied().unwrap_or(0));
        if let (Some(h), Some(s)) = (self.family.get_mut(f), self.family_sum_ns.get_mut(f)) {
            h.saturating_record_n(ns, n);
            *s += ns * n;
        }
        if let Some(t) = cmds.time_ns.get_mut(id) {
            *t += ns * n;
        }
        match self.commands.get_mut(id) {
            Some(Some(h)) => h.saturating_record_n(ns, n),
            // Never allocates: its capacity is fixed.
            Some(None) if self.pending.len() < PENDING => self.pending.push((cmd, ns, n)),
            _ => {}
        }
    }

    /// A read of replies on a connection of pool `pool` begins: its
    /// replies are counted for the pool's group.
    #[inline]
    pub fn backend_begin(&mut self, pool: usize) {
        self.end_backend_run();
        self.brun = BackendRun {
            group: self.pool_group.get(pool).copied().unwrap_or(u32::MAX),
            upto: 0,
            sent_ns: 0,
            n: 0,
        };
    }

    /// The reply to a request whose bytes end at stream offset `end` was
    /// read: counted in the current run if that request was handed to the
    /// transport with the run's (the common case: a test and an
    /// increment), else a new run starts with the hand-off `handoff`
    /// gives (`BackendConn::handoff_of`). Call
    /// [`backend_begin`](Self::backend_begin) first.
    #[inline(always)]
    pub fn backend_run(&mut self, end: u64, handoff: impl FnOnce(u64) -> (u64, u64)) {
        if end > self.brun.upto {
            self.next_backend_run(end, handoff);
        }
        self.brun.n += 1;
    }

    #[cold]
    #[inline(never)]
    fn next_backend_run(&mut self, end: u64, handoff: impl FnOnce(u64) -> (u64, u64)) {
        let group = self.brun.group;
        self.end_backend_run();
        let (upto, sent_ns) = if self.on { handoff(end) } else { (u64::MAX, 0) };
        self.brun = BackendRun {
            group,
            upto,
            sent_ns,
            n: 0,
        };
    }

    /// Records the current backend run (and leaves it empty).
    #[inline]
    fn end_backend_run(&mut self) {
        let BackendRun {
            group, sent_ns, n, ..
        } = self.brun;
        if n == 0 {
            return;
        }
        self.brun.n = 0;
        let timed = sent_ns != 0 && self.on;
        let ns = self.clock_ns.saturating_sub(sent_ns).max(1);
        if let Some(m) = self.groups.get_mut(group as usize) {
            m.requests += n;
            if timed {
                m.hist.saturating_record_n(ns, n);
                m.sum_ns += ns * n;
            }
        }
    }

    /// The counters of pool `pool`'s group.
    pub fn group_of_pool(&mut self, pool: usize) -> Option<&mut GroupMeter> {
        let g = *self.pool_group.get(pool)?;
        self.groups.get_mut(g as usize)
    }

    /// Counts the backend connections by group and state (on the tick):
    /// `conns` yields each connection's pool and [`CONN_STATES`] index.
    pub fn count_connections(&mut self, conns: impl Iterator<Item = (usize, usize)>) {
        for g in self.groups.iter_mut() {
            g.conns = [0; CONN_STATES.len()];
        }
        for (pool, state) in conns {
            if let Some(g) = self.group_of_pool(pool) {
                if let Some(n) = g.conns.get_mut(state) {
                    *n += 1;
                }
            }
        }
    }

    /// Pool `p` serves group `name` (a table was loaded): off the request
    /// path, the only place the per-group arrays grow.
    pub fn pool_serves(&mut self, p: usize, name: &Arc<str>) {
        let g = match self.group_names.iter().position(|n| n == name) {
            Some(g) => g,
            None => {
                self.group_names.push(name.clone());
                self.groups.push(GroupMeter::default());
                self.group_names.len() - 1
            }
        };
        if self.pool_group.len() <= p {
            self.pool_group.resize(p + 1, u32::MAX);
        }
        self.pool_group[p] = g as u32;
    }

    /// On the tick: allocates the histograms of commands timed for the
    /// first time (recording their pending times), and adds what was
    /// recorded since the last tick into `published` (skipped if it is
    /// being read: the next tick does it). A new `CONFIG RESETSTAT`
    /// (`reset_epoch`) empties the command histograms. Call
    /// [`end_batch`](Self::end_batch) first.
    pub fn flush(&mut self, reset_epoch: u64, published: &std::sync::Mutex<PublishedMeters>) {
        for (id, ns, n) in self.pending.drain(..) {
            if let Some(h) = self.commands.get_mut(usize::from(id)) {
                h.get_or_insert_with(|| Box::new(histogram()))
                    .saturating_record_n(ns, n);
            }
        }
        let Ok(mut p) = published.try_lock() else {
            return;
        };
        let p = &mut *p;
        if reset_epoch != self.reset_epoch {
            self.reset_epoch = reset_epoch;
            for h in self.commands.iter_mut().flatten() {
                h.reset();
            }
            p.commands.iter_mut().for_each(|h| *h = None);
        }
        if p.family.is_empty() {
            p.family = (0..FAMILIES.len()).map(|_| histogram()).collect();
            p.commands = (0..command::COMMAND_IDS).map(|_| None).collect();
        }
        for (dst, src) in p.family.iter_mut().zip(self.family.iter_mut()) {
            if !src.is_empty() {
                let _ = dst.add(&*src);
                src.reset();
            }
        }
        p.family_sum_ns.resize(self.family_sum_ns.len(), 0);
        p.family_sum_ns.copy_from_slice(&self.family_sum_ns);
        for (dst, src) in p.commands.iter_mut().zip(self.commands.iter_mut()) {
            if let Some(src) = src.as_deref_mut().filter(|h| !h.is_empty()) {
                let _ = dst.get_or_insert_with(|| Box::new(histogram())).add(&*src);
                src.reset();
            }
        }
        for (i, m) in self.groups.iter_mut().enumerate() {
            if p.groups.len() <= i {
                p.groups
                    .push((self.group_names[i].clone(), GroupMeter::default()));
            }
            let dst = &mut p.groups[i].1;
            dst.conns = m.conns;
            dst.requests = m.requests;
            dst.connects = m.connects;
            dst.errors = m.errors;
            dst.sum_ns = m.sum_ns;
            if !m.hist.is_empty() {
                let _ = dst.hist.add(&m.hist);
                m.hist.reset();
            }
        }
        p.latency = self.on;
    }

    /// Adds the command histograms recorded since the last tick into
    /// `into` (for `INFO latencystats` on this core).
    pub fn add_commands(&self, into: &mut [Option<Histogram<u64>>]) {
        for (dst, src) in into.iter_mut().zip(self.commands.iter()) {
            if let Some(src) = src.as_deref().filter(|h| !h.is_empty()) {
                add_into(dst.get_or_insert_with(histogram), src);
            }
        }
    }
}

/// A core's meters as of its last tick (see the module documentation).
#[derive(Debug, Default)]
pub struct PublishedMeters {
    /// Latency was being recorded at the last tick.
    pub latency: bool,
    /// By family, since start.
    pub family: Vec<Histogram<u64>>,
    /// By family, since start (ns).
    pub family_sum_ns: Vec<u64>,
    /// By command id, since the last `CONFIG RESETSTAT`.
    pub commands: Vec<Option<Box<Histogram<u64>>>>,
    /// By group name (in the order the core met them), since start.
    pub groups: Vec<(Arc<str>, GroupMeter)>,
}

/// Every core's meters merged (by family, by group name).
#[derive(Debug)]
pub struct MergedMeters {
    /// By family.
    pub family: Vec<Histogram<u64>>,
    /// By family (ns).
    pub family_sum_ns: Vec<u64>,
    /// By group name, in the order first met.
    pub groups: Vec<(Arc<str>, GroupMeter)>,
}

impl MergedMeters {
    /// Merges the cores' published meters.
    pub fn of<'a>(cores: impl Iterator<Item = &'a std::sync::Mutex<PublishedMeters>>) -> Self {
        let mut m = MergedMeters {
            family: (0..FAMILIES.len()).map(|_| histogram()).collect(),
            family_sum_ns: vec![0; FAMILIES.len()],
            groups: Vec::new(),
        };
        for core in cores {
            let Ok(p) = core.lock() else { continue };
            m.add(&p);
        }
        m
    }

    /// Adds one core's published meters.
    pub fn add(&mut self, p: &PublishedMeters) {
        for (a, b) in self.family.iter_mut().zip(&p.family) {
            let _ = a.add(b);
        }
        for (a, b) in self.family_sum_ns.iter_mut().zip(&p.family_sum_ns) {
            *a += b;
        }
        for (name, g) in &p.groups {
            let i = match self.groups.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    self.groups.push((name.clone(), GroupMeter::default()));
                    self.groups.len() - 1
                }
            };
            let m = &mut self.groups[i].1;
            for (a, b) in m.conns.iter_mut().zip(g.conns) {
                *a += b;
            }
            m.requests += g.requests;
            m.connects += g.connects;
            for (a, b) in m.errors.iter_mut().zip(g.errors) {
                *a += b;
            }
            m.sum_ns += g.sum_ns;
            let _ = m.hist.add(&g.hist);
        }
    }
}

/// Adds `src` into `dst` (same bounds: never fails).
fn add_into(dst: &mut Histogram<u64>, src: &Histogram<u64>) {
    let _ = dst.add(src);
}

/// Every core's command histograms merged (since the last `CONFIG
/// RESETSTAT`), by command id, plus `own`'s unpublished ones.
pub fn merged_commands<'a>(
    cores: impl Iterator<Item = &'a std::sync::Mutex<PublishedMeters>>,
    own: &Meters,
) -> Vec<Option<Histogram<u64>>> {
    let mut out: Vec<Option<Histogram<u64>>> = (0..command::COMMAND_IDS).map(|_| None).collect();
    for core in cores {
        let Ok(p) = core.lock() else { continue };
        for (dst, src) in out.iter_mut().zip(&p.commands) {
            if let Some(src) = src.as_deref().filter(|h| !h.is_empty()) {
                add_into(dst.get_or_insert_with(histogram), src);
            }
        }
    }
    own.add_commands(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_come_from_command_docs() {
        let name = |cmd: &str| {
            let c = command::all().find(|c| c.name == cmd).unwrap();
            FAMILIES[usize::from(families()[usize::from(c.id)])]
        };
        assert_eq!(name("get"), "string");
        assert_eq!(name("hset"), "hash");
        assert_eq!(name("zadd"), "sorted_set");
        assert_eq!(name("ping"), "connection");
        assert_eq!(name("config|get"), "server");
        assert_eq!(name("del"), "generic");
        assert_eq!(name("xgroup|create"), "stream");
        assert_eq!(name("multi"), "transactions");
        assert!(
            command::all().all(|c| families()[usize::from(c.id)] < (FAMILIES.len() - 1) as u8),
            "every command has a family"
        );
    }

    /// A queue with one reply released per stamp in `stamps`, `failed`
    /// saying which were errors.
    fn released(stamps: &[Stamp], failed: &[bool]) -> crate::engine::pending::ReplyQueue {
        let mut q = crate::engine::pending::ReplyQueue::default();
        let mut out = Vec::new();
        for (s, f) in stamps.iter().zip(failed) {
            q.stamp = *s;
            q.push_local(&mut out, |o| {
                o.extend_from_slice(if *f { b"-ERR x\r\n" } else { b"+OK\r\n" })
            });
        }
        q
    }

    #[test]
    fn drained_replies_are_timed_by_family_and_command() {
        let mut m = Meters::default();
        let mut cmds = crate::engine::CommandStats::default();
        let get = command::all().find(|c| c.name == "get").unwrap().id;
        m.clock_ns = 1_000;
        let s = m.stamp(get);
        let mut q = released(&[s, s], &[false, true]);
        assert_eq!(q.released(), 2);
        m.drain(&mut q, 6_000, &mut cmds);
        assert_eq!(q.released(), 0);
        assert_eq!(cmds.time_ns[usize::from(get)], 10_000);
        assert_eq!(cmds.failed[usize::from(get)], 1);
        assert_eq!(m.family[0].len(), 2, "string family");
        assert_eq!(m.family_sum_ns[0], 10_000);
        assert!(
            m.commands[usize::from(get)].is_none(),
            "allocated on the tick"
        );
        assert_eq!(m.pending.len(), 1, "one run of two");
        let published = std::sync::Mutex::new(PublishedMeters::default());
        m.flush(0, &published);
        assert!(m.pending.is_empty());
        assert!(m.family[0].is_empty(), "flushed");
        let merged = MergedMeters::of([&published, &published].into_iter());
        assert_eq!(merged.family[0].len(), 4, "two cores' copies added");
        assert_eq!(merged.family_sum_ns[0], 20_000);
        m.drain(&mut released(&[s], &[false]), 2_000, &mut cmds);
        let per_cmd = merged_commands([&published].into_iter(), &m);
        assert_eq!(per_cmd[usize::from(get)].as_ref().unwrap().len(), 3);
        m.flush(1, &published);
        let per_cmd = merged_commands([&published].into_iter(), &m);
        assert!(per_cmd[usize::from(get)].is_none(), "emptied by RESETSTAT");
    }

    #[test]
    fn untimed_replies_count_only_their_failures() {
        let mut m = Meters::default();
        let mut cmds = crate::engine::CommandStats::default();
        let get = command::all().find(|c| c.name == "get").unwrap().id;
        let set = command::all().find(|c| c.name == "set").unwrap().id;
        // Read with latency off (clock 0), a refusal (no command), and a
        // reply taking less than the clock tells apart.
        let off = m.stamp(get);
        m.clock_ns = 5_000;
        let quick = m.stamp(set);
        let mut q = released(
            &[off, off, Stamp::default(), quick, quick],
            &[true, false, true, false, true],
        );
        m.drain(&mut q, 5_000, &mut cmds);
        assert_eq!(cmds.failed[usize::from(get)], 1);
        assert_eq!(cmds.failed[usize::from(set)], 1);
        assert_eq!(cmds.time_ns[usize::from(get)], 0, "not timed");
        assert_eq!(cmds.time_ns[usize::from(set)], 2, "1 ns each, as Redis");
        assert_eq!(m.family[0].len(), 2);
    }

    #[test]
    fn groups_are_merged_by_name() {
        let mut m = Meters::default();
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        m.pool_serves(0, &a);
        m.pool_serves(3, &b);
        m.clock_ns = 500;
        // Two replies to one write at 200, one to a write at 300.
        m.backend_begin(0);
        m.backend_run(10, |_| (20, 200));
        m.backend_run(20, |_| unreachable!("same hand-off"));
        m.backend_run(30, |_| (30, 300));
        m.backend_begin(3);
        m.backend_run(10, |_| (10, 0));
        m.backend_begin(7);
        m.backend_run(10, |_| (10, 1));
        m.group_of_pool(3).unwrap().errors[1] += 1;
        m.end_batch();
        let published = std::sync::Mutex::new(PublishedMeters::default());
        m.flush(0, &published);
        let mut other = Meters::default();
        other.pool_serves(0, &b);
        other.backend_begin(0);
        other.backend_run(1, |_| (1, 0));
        other.end_batch();
        let published2 = std::sync::Mutex::new(PublishedMeters::default());
        other.flush(0, &published2);
        let merged = MergedMeters::of([&published, &published2].into_iter());
        let names: Vec<&str> = merged.groups.iter().map(|(n, _)| &**n).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(merged.groups[0].1.requests, 3);
        assert_eq!(merged.groups[0].1.hist.len(), 3);
        assert_eq!(merged.groups[0].1.sum_ns, 2 * 300 + 200);
        assert_eq!(merged.groups[1].1.requests, 2);
        assert_eq!(merged.groups[1].1.errors[1], 1);
    }

    #[test]
    fn backend_failures_are_classified() {
        assert_eq!(
            BACKEND_ERRORS[backend_error_kind("no reply within 1s", false)],
            "timeout"
        );
        assert_eq!(
            BACKEND_ERRORS[backend_error_kind("Connection refused (os error 111)", true)],
            "connect"
        );
        assert_eq!(
            BACKEND_ERRORS[backend_error_kind("connection closed by the backend", false)],
            "closed"
        );
        assert_eq!(BACKEND_ERRORS[backend_error_kind("TLS: bad", true)], "tls");
        assert_eq!(
            BACKEND_ERRORS
                [backend_error_kind("authentication as backend user \"u\" failed: x", false)],
            "auth"
        );
        assert_eq!(
            BACKEND_ERRORS[backend_error_kind("protocol error from backend: x", false)],
            "protocol"
        );
    }
}
