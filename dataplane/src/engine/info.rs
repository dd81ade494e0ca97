//! `INFO` as one Redis 7.0 server would answer it, over the whole cluster.
//!
//! Sections keyway knows itself (`clients`, `replication`, `cpu`,
//! `modules`, `commandstats`, `errorstats`, `latencystats`, `cluster`,
//! `keyway`, most of `server` and `stats`) are built at dispatch from the
//! cores' counters; sections that describe the data (`memory`,
//! `persistence`, `keyspace`, the data side of `stats`, the Redis build in
//! `server`) come from `INFO <those sections>` sent to every group, merged
//! when every group has answered ([`InfoMerge`], a
//! [`Combine`](super::split::Combine)): counts are added up, flags and
//! times take the most telling group's (any load in progress, the oldest
//! save), ratios are computed again from the sums, `redis_version` is the
//! lowest of the groups'. A group that fails is left out and named in a
//! `keyway_groups_missing` field of each merged section.
//!
//! Also here: [`ServerShared`] (what `INFO`, `CONFIG RESETSTAT` share
//! across cores) and [`Ctx::server_command`], the entry of every
//! [`ServerCmd`].

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use keyway_protocol::command::{self, REDIS_VERSION};
use keyway_protocol::resp::encode;

use super::backend::Purpose;
use super::client::ClientState;
use super::gather::UndoCmd;
use super::info_text::{self as text, Fields};
use super::policy::ServerCmd;
use super::route::{answer_in_place, merge_in_place, Req};
use super::split::{Combine, Merge};
use super::{CommandStats, Ctx, Shared, Stats, Worker};
use crate::config::LiveConfig;
use crate::routing::GroupIndex;

/// What `INFO` and `CONFIG RESETSTAT` share across cores (touched only by
/// those commands).
#[derive(Debug)]
pub struct ServerShared {
    /// `run_id`: random, per process, 40 hex digits.
    pub run_id: String,
    /// `master_replid`: random too, as Redis's.
    replid: String,
    /// The counters as of the last `CONFIG RESETSTAT` (subtracted by INFO).
    reset: Mutex<Option<(Stats, CommandStats)>>,
    /// `instantaneous_ops_per_sec`: (when, requests then, rate).
    ops: Mutex<Option<(Instant, u64, u64)>>,
    /// Keyway's own `SLOWLOG` entries.
    pub(crate) slowlog: super::slowlog::OwnLog,
    /// Bumped by `CONFIG RESETSTAT`: the cores empty their command
    /// histograms (`INFO latencystats`) on their next tick.
    latency_epoch: std::sync::atomic::AtomicU64,
}

impl Default for ServerShared {
    fn default() -> Self {
        ServerShared {
            run_id: random_hex(1),
            replid: random_hex(2),
            reset: Mutex::new(None),
            ops: Mutex::new(None),
            slowlog: Default::default(),
            latency_epoch: Default::default(),
        }
    }
}

/// 40 hex digits from the process's hasher seeds, the time and the pid.
fn random_hex(salt: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(40);
    for i in 0..3u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(i);
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        let _ = write!(out, "{:016x}", h.finish());
    }
    out.truncate(40);
    out
}

impl ServerShared {
    /// Makes the current totals the zero of later `INFO`s.
    pub(crate) fn reset_stats(&self, stats: Stats, cmds: CommandStats) {
        if let Ok(mut r) = self.reset.lock() {
            *r = Some((stats, cmds));
        }
        if let Ok(mut o) = self.ops.lock() {
            *o = None;
        }
        self.latency_epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// How many `CONFIG RESETSTAT`s there have been.
    pub(crate) fn latency_epoch(&self) -> u64 {
        self.latency_epoch.load(Ordering::Relaxed)
    }

    /// Every core's counters since the last `CONFIG RESETSTAT`.
    pub(crate) fn totals(
        &self,
        shared: &Shared,
        core: usize,
        own: &Stats,
        cmds: &CommandStats,
    ) -> (Stats, CommandStats) {
        let (stats, cmds) = raw_totals(shared, core, own, cmds);
        match self.reset.lock().ok().and_then(|r| r.clone()) {
            Some((bs, bc)) => (stats.since(&bs), cmds.since(&bc)),
            None => (stats, cmds),
        }
    }

    /// Requests per second since the previous sample at least a second
    /// old (a sample is taken by `INFO`, so the first `INFO` says 0).
    fn ops_per_sec(&self, requests: u64) -> u64 {
        let Ok(mut o) = self.ops.lock() else { return 0 };
        let now = Instant::now();
        match *o {
            None => {
                *o = Some((now, requests, 0));
                0
            }
            Some((at, before, rate)) => {
                let secs = now.duration_since(at).as_secs_f64();
                if secs < 1.0 {
                    return rate;
                }
                let rate = (requests.saturating_sub(before) as f64 / secs) as u64;
                *o = Some((now, requests, rate));
                rate
            }
        }
    }
}

/// Every core's counters (this core's live, the others' as last published).
pub(crate) fn raw_totals(
    shared: &Shared,
    core: usize,
    own: &Stats,
    cmds: &CommandStats,
) -> (Stats, CommandStats) {
    let stats = shared.stats(core, own);
    let mut all = cmds.clone();
    for (i, r) in shared.reports.iter().enumerate() {
        if i != core {
            if let Ok(c) = r.commands.lock() {
                all.add(&c);
            }
        }
    }
    (stats, all)
}

impl Worker {
    /// Publishes how many of the core's clients are blocked, subscribed and
    /// watching keys (on each tick, for `INFO clients`).
    pub(super) fn publish_client_kinds(&self) {
        let mut kinds = [0u64; 3];
        for (_, c) in self.clients.iter() {
            kinds[0] += u64::from(c.st.blocked.is_some());
            kinds[1] += u64::from(c.st.subs.is_some());
            kinds[2] += u64::from(c.st.pin.is_some());
        }
        if let Some(r) = self.ctx.shared.reports.get(self.ctx.core) {
            for (slot, n) in r.client_kinds.iter().zip(kinds) {
                slot.store(n, Ordering::Relaxed);
            }
        }
    }
}

/// Clients blocked, subscribed, watching, over every core (as of each
/// core's last tick).
fn client_kinds(sh: &Shared) -> [u64; 3] {
    let mut kinds = [0u64; 3];
    for r in sh.reports.iter() {
        for (k, slot) in kinds.iter_mut().zip(&r.client_kinds) {
            *k += slot.load(Ordering::Relaxed);
        }
    }
    kinds
}

/// `INFO`'s sections, in the order Redis writes them (keyway's last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum Section {
    Server,
    Clients,
    Memory,
    Persistence,
    Stats,
    Replication,
    Cpu,
    Modules,
    Commandstats,
    Errorstats,
    Latencystats,
    Cluster,
    Keyspace,
    Keyway,
}

impl Section {
    pub(crate) const ALL: [Section; 14] = [
        Section::Server,
        Section::Clients,
        Section::Memory,
        Section::Persistence,
        Section::Stats,
        Section::Replication,
        Section::Cpu,
        Section::Modules,
        Section::Commandstats,
        Section::Errorstats,
        Section::Latencystats,
        Section::Cluster,
        Section::Keyspace,
        Section::Keyway,
    ];

    /// The header's name (`# Server`).
    pub(crate) fn title(self) -> &'static str {
        match self {
            Section::Server => "Server",
            Section::Clients => "Clients",
            Section::Memory => "Memory",
            Section::Persistence => "Persistence",
            Section::Stats => "Stats",
            Section::Replication => "Replication",
            Section::Cpu => "CPU",
            Section::Modules => "Modules",
            Section::Commandstats => "Commandstats",
            Section::Errorstats => "Errorstats",
            Section::Latencystats => "Latencystats",
            Section::Cluster => "Cluster",
            Section::Keyspace => "Keyspace",
            Section::Keyway => "Keyway",
        }
    }

    /// Whether the groups' `INFO` supplies part of it.
    fn needs_groups(self) -> bool {
        matches!(
            self,
            Section::Server
                | Section::Memory
                | Section::Persistence
                | Section::Stats
                | Section::Keyspace
        )
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// A set of sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Sections(u16);

impl Sections {
    /// What `INFO` without arguments (or `default`) shows: Redis's default
    /// sections plus `keyway`.
    const DEFAULT: Sections = Sections(
        (1 << Section::Server as u16)
            | (1 << Section::Clients as u16)
            | (1 << Section::Memory as u16)
            | (1 << Section::Persistence as u16)
            | (1 << Section::Stats as u16)
            | (1 << Section::Replication as u16)
            | (1 << Section::Cpu as u16)
            | (1 << Section::Modules as u16)
            | (1 << Section::Errorstats as u16)
            | (1 << Section::Cluster as u16)
            | (1 << Section::Keyspace as u16)
            | (1 << Section::Keyway as u16),
    );

    /// The sections `INFO arg…` asks for, as Redis 7.0 chooses them
    /// (`genInfoSectionDict`): none → default; `all` and `everything` →
    /// every section; `default` → the default ones; names case-insensitive;
    /// unknown names ignored.
    pub(crate) fn of<'a>(args: impl Iterator<Item = &'a [u8]>) -> Sections {
        let mut s = Sections(0);
        let mut any = false;
        for a in args {
            any = true;
            let a = a.to_ascii_lowercase();
            match a.as_slice() {
                b"all" | b"everything" => s.0 = u16::MAX,
                b"default" => s.0 |= Self::DEFAULT.0,
                b"module_list" => s.0 |= Section::Modules.bit(),
                name => {
                    if let Some(sec) = Section::ALL
                        .iter()
                        .find(|sec| sec.title().as_bytes().eq_ignore_ascii_case(name))
                    {
                        s.0 |= sec.bit();
                    }
                }
            }
        }
        if !any {
            return Self::DEFAULT;
        }
        s
    }

    pub(crate) fn has(self, sec: Section) -> bool {
        self.0 & sec.bit() != 0
    }

    /// The sections the groups must be asked for.
    fn asked_of_groups(self) -> Vec<Section> {
        Section::ALL
            .into_iter()
            .filter(|&s| self.has(s) && s.needs_groups())
            .collect()
    }
}

impl Ctx {
    /// Serves `INFO`, `CONFIG …`, `SLOWLOG …`.
    pub(crate) fn server_command(&mut self, st: &mut ClientState, cmd: ServerCmd, req: Req<'_>) {
        match cmd {
            ServerCmd::Info => self.info(st, req),
            ServerCmd::ConfigGet
            | ServerCmd::ConfigSet
            | ServerCmd::ConfigResetStat
            | ServerCmd::ConfigHelp => self.config_command(st, cmd, req),
            ServerCmd::SlowlogGet
            | ServerCmd::SlowlogLen
            | ServerCmd::SlowlogReset
            | ServerCmd::SlowlogHelp => self.slowlog_command(st, cmd, req),
        }
    }

    /// Sends each `(group, request)` as part `i` of one merged reply,
    /// merged by `c`. With no part, `c` answers at once.
    pub(crate) fn send_parts(
        &mut self,
        st: &mut ClientState,
        req: Req<'_>,
        c: Box<dyn Combine>,
        parts: Vec<(GroupIndex, Vec<u8>)>,
    ) {
        if parts.is_empty() {
            let mut out = Vec::new();
            let _ = c.finish(&mut out);
            return answer_in_place(st, &out, req.place);
        }
        let seq = merge_in_place(st, req.place, Merge::combine(c, parts.len()));
        self.stats.requests_split += 1;
        for (i, (g, bytes)) in parts.into_iter().enumerate() {
            let b = self.client_conn(st, g, false);
            self.enqueue(st, b, seq, Purpose::Part(i as u16), |out| {
                out.extend_from_slice(&bytes)
            });
        }
    }

    /// The group names of the current table.
    pub(crate) fn group_names(&self) -> Box<[Arc<str>]> {
        self.cfg
            .table
            .groups()
            .iter()
            .map(|g| g.name.clone())
            .collect()
    }

    fn info(&mut self, st: &mut ClientState, req: Req<'_>) {
        let sections = Sections::of(req.args.iter().skip(1));
        let names = self.group_names();
        let own = self.own_info(sections);
        let asked = sections.asked_of_groups();
        let mut parts = Vec::new();
        if !asked.is_empty() {
            let mut cmd = Vec::new();
            encode::array_header(&mut cmd, 1 + asked.len());
            encode::bulk(&mut cmd, b"INFO");
            for s in &asked {
                encode::bulk(&mut cmd, s.title().to_ascii_lowercase().as_bytes());
            }
            for g in 0..names.len() {
                parts.push((g as GroupIndex, cmd.clone()));
            }
        }
        let groups = if asked.is_empty() { 0 } else { names.len() };
        let merge = InfoMerge {
            sections,
            own,
            names,
            replies: vec![None; groups],
            resp3: st.resp3,
        };
        self.send_parts(st, req, Box::new(merge), parts);
    }

    /// Keyway's own fields of each section asked for.
    fn own_info(&self, sections: Sections) -> Vec<(Section, Fields)> {
        let sh = &*self.shared;
        let (stats, cmds) = sh.server.totals(sh, self.core, &self.stats, &self.cmds);
        let mut out = Vec::new();
        for sec in Section::ALL {
            if !sections.has(sec) {
                continue;
            }
            let f = match sec {
                Section::Server => server_fields(sh, &self.cfg),
                Section::Clients => clients_fields(sh, &self.cfg),
                Section::Stats => stats_fields(sh, &stats, &cmds),
                Section::Replication => replication_fields(sh),
                Section::Cpu => cpu_fields(),
                Section::Commandstats => commandstats_fields(&cmds),
                Section::Errorstats => cmds
                    .errors
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(code, n)| (format!("errorstat_{code}"), format!("count={n}")))
                    .collect(),
                Section::Cluster => vec![("cluster_enabled".into(), "0".into())],
                Section::Keyway => keyway_fields(sh, &self.cfg, self.core, &self.stats),
                Section::Memory => vec![
                    ("keyway_used_memory".into(), sh.memory_used().to_string()),
                    (
                        "keyway_max_memory".into(),
                        self.cfg.limits.max_memory.to_string(),
                    ),
                ],
                Section::Latencystats => {
                    latencystats_fields(sh, &self.meters, self.cfg.metrics.latency)
                }
                Section::Persistence | Section::Modules | Section::Keyspace => Vec::new(),
            };
            out.push((sec, f));
        }
        out
    }
}

fn kv(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// `os`: as Redis's `uname -s -r -m`.
fn os_name() -> &'static str {
    static OS: OnceLock<String> = OnceLock::new();
    OS.get_or_init(|| {
        // SAFETY: `uname` fills the zeroed struct we own; its fields are
        // NUL-terminated C strings.
        unsafe {
            let mut u: libc::utsname = std::mem::zeroed();
            if libc::uname(&mut u) != 0 {
                return std::env::consts::OS.to_string();
            }
            let f = |s: &[libc::c_char]| {
                std::ffi::CStr::from_ptr(s.as_ptr())
                    .to_string_lossy()
                    .into_owned()
            };
            format!("{} {} {}", f(&u.sysname), f(&u.release), f(&u.machine))
        }
    })
}

/// `config_file`: the absolute path given to `--config`, if any.
fn config_file() -> &'static str {
    static FILE: OnceLock<String> = OnceLock::new();
    FILE.get_or_init(|| {
        let args: Vec<String> = std::env::args().collect();
        let given = args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix("--config=").map(str::to_string).or_else(|| {
                (a == "--config")
                    .then(|| args.get(i + 1).cloned())
                    .flatten()
            })
        });
        given
            .map(|p| {
                std::fs::canonicalize(&p)
                    .map(|c| c.display().to_string())
                    .unwrap_or(p)
            })
            .unwrap_or_default()
    })
}

fn server_fields(sh: &Shared, _cfg: &LiveConfig) -> Fields {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let uptime = sh.started.elapsed().as_secs();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    vec![
        // The build fields are the lowest-versioned group's (see `InfoMerge`).
        kv("redis_version", REDIS_VERSION),
        kv("redis_git_sha1", "00000000"),
        kv("redis_git_dirty", "0"),
        kv("redis_build_id", "0"),
        kv("redis_mode", "standalone"),
        kv("os", os_name()),
        kv("arch_bits", usize::BITS),
        kv("monotonic_clock", "POSIX clock_gettime"),
        kv("multiplexing_api", "io_uring"),
        kv("atomicvar_api", "c11-builtin"),
        kv("gcc_version", "0.0.0"),
        kv("process_id", std::process::id()),
        kv("process_supervised", "no"),
        kv("run_id", &sh.server.run_id),
        kv("tcp_port", sh.listen_port.load(Ordering::Relaxed)),
        kv("server_time_usec", now.as_micros()),
        kv("uptime_in_seconds", uptime),
        kv("uptime_in_days", uptime / 86400),
        // Keyway's tick runs 10 times a second.
        kv("hz", 10),
        kv("configured_hz", 10),
        kv(
            "lru_clock",
            (now.as_millis() / 1000) as u64 & ((1 << 24) - 1),
        ),
        kv("executable", exe),
        kv("config_file", config_file()),
        kv("io_threads_active", 0),
        kv("keyway_version", env!("CARGO_PKG_VERSION")),
    ]
}

fn clients_fields(sh: &Shared, cfg: &LiveConfig) -> Fields {
    let [blocked, pubsub, watching] = client_kinds(sh);
    vec![
        kv("connected_clients", sh.clients.load(Ordering::Relaxed)),
        kv("cluster_connections", 0),
        kv("maxclients", cfg.limits.max_clients),
        kv("client_recent_max_input_buffer", 0),
        kv("client_recent_max_output_buffer", 0),
        kv("blocked_clients", blocked),
        kv("tracking_clients", 0),
        kv("clients_in_timeout_table", 0),
        // Redis 7.2's names.
        kv("pubsub_clients", pubsub),
        kv("watching_clients", watching),
    ]
}

/// Keyway's own counters under Redis's names; the other `stats` fields
/// are the groups' (see [`text::merge_section`]).
fn stats_fields(sh: &Shared, s: &Stats, cmds: &CommandStats) -> Fields {
    vec![
        kv("total_connections_received", s.clients_accepted),
        kv("total_commands_processed", s.requests),
        kv(
            "instantaneous_ops_per_sec",
            sh.server.ops_per_sec(s.requests),
        ),
        kv("rejected_connections", s.clients_rejected),
        kv("evicted_clients", s.clients_evicted_memory),
        kv("tracking_total_keys", 0),
        kv("tracking_total_items", 0),
        kv("tracking_total_prefixes", 0),
        kv("unexpected_error_replies", 0),
        kv("total_error_replies", cmds.error_replies),
        // Redis 7.2's names.
        kv("acl_access_denied_auth", s.acl_denied_auth),
        kv("acl_access_denied_cmd", s.acl_denied_cmd),
        kv("acl_access_denied_key", s.acl_denied_key),
        kv("acl_access_denied_channel", s.acl_denied_channel),
    ]
}

fn replication_fields(sh: &Shared) -> Fields {
    vec![
        kv("role", "master"),
        kv("connected_slaves", 0),
        kv("master_failover_state", "no-failover"),
        kv("master_replid", &sh.server.replid),
        kv("master_replid2", "0".repeat(40)),
        kv("master_repl_offset", 0),
        kv("second_repl_offset", -1),
        kv("repl_backlog_active", 0),
        kv("repl_backlog_size", 1048576),
        kv("repl_backlog_first_byte_offset", 0),
        kv("repl_backlog_histlen", 0),
    ]
}

/// Keyway's own CPU time (`getrusage`), as Redis formats it.
fn cpu_fields() -> Fields {
    let usage = |who| {
        // SAFETY: `getrusage` fills the zeroed struct we own.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `who` is one of the documented constants.
        unsafe { libc::getrusage(who, &mut u) };
        let t = |tv: libc::timeval| format!("{}.{:06}", tv.tv_sec, tv.tv_usec);
        (t(u.ru_stime), t(u.ru_utime))
    };
    let (sys, user) = usage(libc::RUSAGE_SELF);
    let (csys, cuser) = usage(libc::RUSAGE_CHILDREN);
    let (tsys, tuser) = usage(libc::RUSAGE_THREAD);
    vec![
        kv("used_cpu_sys", sys),
        kv("used_cpu_user", user),
        kv("used_cpu_sys_children", csys),
        kv("used_cpu_user_children", cuser),
        kv("used_cpu_sys_main_thread", tsys),
        kv("used_cpu_user_main_thread", tuser),
    ]
}

/// `cmdstat_<name>:calls=…`: `usec` is the time keyway held the requests
/// (from the read that brought each to its reply leaving for the client,
/// see `engine::meters`), not Redis's execution time; 0 with
/// `metrics.latency` off.
fn commandstats_fields(cmds: &CommandStats) -> Fields {
    command::all()
        .filter_map(|c| {
            let i = usize::from(c.id);
            let at = |v: &[u64]| v.get(i).copied().unwrap_or(0);
            let (calls, rejected) = (at(&cmds.calls), at(&cmds.rejected));
            let (failed, usec) = (at(&cmds.failed), at(&cmds.time_ns) / 1000);
            let per_call = if calls > 0 {
                usec as f64 / calls as f64
            } else {
                0.0
            };
            (calls + rejected > 0).then(|| {
                (
                    format!("cmdstat_{}", c.name),
                    format!(
                        "calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls={rejected},failed_calls={failed}"
                    ),
                )
            })
        })
        .collect()
}

/// The percentiles `INFO latencystats` shows (Redis's default
/// `latency-tracking-info-percentiles`).
const LATENCY_PERCENTILES: [f64; 3] = [50.0, 99.0, 99.9];

/// `latency_percentiles_usec_<name>:p50=…,p99=…,p99.9=…` for every command
/// served since the last `CONFIG RESETSTAT`, from keyway's own timing
/// (every core's histograms as of its last tick, this core's up to now):
/// what a client of keyway sees. Empty with `metrics.latency` off.
fn latencystats_fields(sh: &Shared, own: &super::meters::Meters, on: bool) -> Fields {
    if !on {
        return Vec::new();
    }
    let merged = super::meters::merged_commands(sh.reports.iter().map(|r| &r.meters), own);
    command::all()
        .filter_map(|c| {
            let h = merged.get(usize::from(c.id))?.as_ref()?;
            let mut v = String::new();
            for (i, p) in LATENCY_PERCENTILES.iter().enumerate() {
                let us = h.value_at_quantile(p / 100.0) as f64 / 1000.0;
                let _ = write!(v, "{}p{p}={us:.3}", if i > 0 { "," } else { "" });
            }
            Some((format!("latency_percentiles_usec_{}", c.name), v))
        })
        .collect()
}

fn keyway_fields(sh: &Shared, cfg: &LiveConfig, core: usize, own: &Stats) -> Fields {
    let t = &cfg.table;
    let mut f = vec![
        kv("cores", sh.cores),
        kv("core", core),
        kv("table_version", t.version),
        kv("slots", t.slot_count()),
        kv("groups", t.groups().len()),
    ];
    for (i, g) in t.groups().iter().enumerate() {
        f.push((
            format!("group{i}"),
            format!("name={},master={}", g.name, g.master_text),
        ));
    }
    f.push(kv("buffers_bytes", sh.memory_used()));
    f.push(kv("max_memory", cfg.limits.max_memory));
    for (name, v) in sh.stats(core, own).fields() {
        f.push(kv(name, v));
    }
    f
}

/// `INFO`'s reply being gathered: keyway's own sections and each group's
/// `INFO` text.
#[derive(Debug)]
struct InfoMerge {
    sections: Sections,
    own: Vec<(Section, Fields)>,
    names: Box<[Arc<str>]>,
    /// Each group's reply (by part = group index).
    replies: Vec<Option<Vec<u8>>>,
    resp3: bool,
}

impl Combine for InfoMerge {
    fn add(&mut self, part: u16, reply: &[u8]) {
        if let Some(r) = self.replies.get_mut(usize::from(part)) {
            *r = Some(reply.to_vec());
        }
    }

    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Vec<UndoCmd> {
        let mut groups = Vec::new();
        let mut missing = Vec::new();
        for (i, r) in self.replies.iter().enumerate() {
            match r.as_deref().and_then(text::info_text) {
                Some(t) => groups.push(text::parse(&t)),
                None => missing.push(self.names[i].to_string()),
            }
        }
        let mut body = String::new();
        for (sec, own) in &self.own {
            debug_assert!(self.sections.has(*sec));
            let fields = if sec.needs_groups() {
                let theirs: Vec<&Fields> = groups
                    .iter()
                    .map(|g| text::section(g, sec.title()))
                    .collect();
                let mut f = text::merge_section(*sec, own, &theirs);
                if !missing.is_empty() && *sec != Section::Keyspace {
                    f.push(kv("keyway_groups_missing", missing.join(",")));
                }
                f
            } else {
                own.clone()
            };
            if !body.is_empty() {
                body.push_str("\r\n");
            }
            let _ = write!(body, "# {}\r\n", sec.title());
            for (k, v) in fields {
                let _ = write!(body, "{k}:{v}\r\n");
            }
        }
        encode::verbatim(out, body.as_bytes(), self.resp3);
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(args: &[&str]) -> Sections {
        Sections::of(args.iter().map(|a| a.as_bytes()))
    }

    #[test]
    fn sections_are_chosen_as_redis_chooses_them() {
        let d = of(&[]);
        assert!(d.has(Section::Server) && d.has(Section::Keyspace) && d.has(Section::Errorstats));
        assert!(!d.has(Section::Commandstats) && !d.has(Section::Latencystats));
        assert_eq!(of(&["default"]), d);
        let all = of(&["ALL"]);
        assert!(Section::ALL.iter().all(|&s| all.has(s)));
        assert_eq!(of(&["everything"]), all);
        let two = of(&["Server", "keyspace", "nosuch"]);
        assert!(two.has(Section::Server) && two.has(Section::Keyspace));
        assert!(!two.has(Section::Clients));
        assert_eq!(of(&["nosuch"]), Sections(0));
        assert_eq!(
            of(&["keyway", "cpu"]).asked_of_groups(),
            Vec::<Section>::new(),
            "keyway's own sections need no group"
        );
        assert_eq!(
            of(&["memory", "cpu", "server"]).asked_of_groups(),
            vec![Section::Server, Section::Memory]
        );
    }

    #[test]
    fn run_ids_are_40_hex_digits_and_differ() {
        let a = random_hex(1);
        let b = random_hex(2);
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
