//! The `keyway.toml` file: what it may contain, its defaults, and how it becomes
//! the process settings ([`Config`]) and the first routing snapshot
//! ([`LiveConfig`]). Unknown keys are errors. Every default is documented here
//! and in the README's configuration section.

mod groups;
pub mod units;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use keyway_protocol::resp::RequestLimits;
use keyway_protocol::slot::{valid_slot_count, DEFAULT_SLOTS};
use serde::Deserialize;

use crate::resolve::resolve;
use crate::routing::{ReadFrom, RoutingTable, SlotRoute};
use units::Millis;

/// Why a config was rejected; the message names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// `cores = 2` (CPUs 0 and 1) or `cores = [2, 3]` (those CPUs).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Cores {
    /// The first N CPUs this process may run on.
    Count(usize),
    /// These CPU ids.
    List(Vec<usize>),
}

impl Default for Cores {
    fn default() -> Self {
        Cores::Count(1)
    }
}

/// How new connections are spread across cores.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Steer {
    /// Kernel SO_REUSEPORT hashing of the 4-tuple.
    #[default]
    None,
    /// Each connection goes to the core running on the CPU that received it
    /// (SO_INCOMING_CPU plus a reuseport CBPF program); pair with NIC IRQ
    /// affinity (`perf/`) so each NIC queue's CPU serves its own connections.
    Cpu,
}

/// How sockets are driven on each core.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// glommio's executor and TCP streams (`recv`/`send` after an io_uring poll).
    Glommio,
    /// keyway's own io_uring loop: multishot accept and receive into a provided
    /// buffer ring, sends batched and submitted once per loop turn. The
    /// default: about half glommio's CPU per request (see `perf/README.md`).
    #[default]
    Uring,
}

/// Client-facing limits (`[limits]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most client connections across all cores (default 10000, as Redis).
    pub max_clients: usize,
    /// Close a client idle this long with nothing in flight; "0" never (default).
    #[serde(deserialize_with = "units::duration")]
    pub idle_timeout: Millis,
    /// Close a client that leaves a request incomplete this long (default "30s").
    #[serde(deserialize_with = "units::duration")]
    pub partial_request_timeout: Millis,
    /// Largest request (default "512mb").
    #[serde(deserialize_with = "units::size")]
    pub max_request_bytes: u64,
    /// Most arguments per request (default 1048576).
    pub max_arguments: usize,
    /// Largest argument, Redis's proto-max-bulk-len (default "512mb").
    #[serde(deserialize_with = "units::size")]
    pub max_bulk_bytes: u64,
    /// Requests a client may have awaiting replies before keyway stops reading
    /// from it until replies drain (default 65536).
    pub max_pipeline: usize,
    /// Close a client whose unread replies exceed this, and answer an error
    /// instead of any single reply larger than this (default "1gb"; "0" no
    /// limit, as in Redis). At least `max_bulk_bytes` plus 1mb, so that any
    /// value a client may write it can read back.
    #[serde(deserialize_with = "units::size")]
    pub output_hard_limit: u64,
    /// Close a client whose unread replies stay above this for
    /// `output_soft_timeout` (default "64mb" for "60s"; "0" no limit).
    #[serde(deserialize_with = "units::size")]
    pub output_soft_limit: u64,
    /// See `output_soft_limit`.
    #[serde(deserialize_with = "units::duration")]
    pub output_soft_timeout: Millis,
    /// TCP keepalive idle time on client sockets; "0" off (default "300s").
    #[serde(deserialize_with = "units::duration")]
    pub tcp_keepalive: Millis,
    /// The budget for every client and backend buffer of the process
    /// together (default: half the machine's memory, and at least twice
    /// `max_request_bytes`; "0" no budget). Over it, routed requests get
    /// `-OOM` and the clients holding the most are closed, largest first.
    #[serde(deserialize_with = "units::size")]
    pub max_memory: u64,
}

/// `max_memory` not given: [`FileConfig::validate`] picks the default.
const AUTO_MEMORY: u64 = u64::MAX;

/// The most a request (or one of its arguments) may be: argument positions
/// are 32-bit offsets into the request's buffer.
pub const MAX_REQUEST_BYTES: u64 = u32::MAX as u64;

/// What `max_memory` must hold at least: one largest request, read and sent
/// on, and one largest reply.
fn least_memory(limits: &Limits, backend: &BackendSettings) -> u64 {
    limits
        .max_request_bytes
        .saturating_mul(2)
        .max(reply_limit(limits, backend).0)
}

/// The largest reply keyway forwards, and the setting that says so.
fn reply_limit(limits: &Limits, backend: &BackendSettings) -> (u64, &'static str) {
    let hard = limits.output_hard_limit;
    if hard > 0 && hard < backend.max_reply_bytes {
        (hard, "limits.output_hard_limit")
    } else {
        (backend.max_reply_bytes, "backend.max_reply_bytes")
    }
}

fn half_of_memory() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && size > 0 {
        (pages as u64).saturating_mul(size as u64) / 2
    } else {
        4 << 30
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 10_000,
            idle_timeout: Millis(0),
            partial_request_timeout: Millis(30_000),
            max_request_bytes: 512 << 20,
            max_arguments: 1 << 20,
            max_bulk_bytes: 512 << 20,
            max_pipeline: 65_536,
            output_hard_limit: 1 << 30,
            output_soft_limit: 64 << 20,
            output_soft_timeout: Millis(60_000),
            tcp_keepalive: Millis(300_000),
            max_memory: AUTO_MEMORY,
        }
    }
}

impl Limits {
    /// The parser's view of these limits.
    pub fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            max_request_bytes: self.max_request_bytes as usize,
            max_arguments: self.max_arguments,
            max_bulk_bytes: self.max_bulk_bytes as usize,
            max_inline_bytes: 64 << 10,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_clients == 0 {
            return Err(invalid("limits.max_clients must be at least 1"));
        }
        if self.max_arguments == 0 || self.max_pipeline == 0 {
            return Err(invalid(
                "limits.max_arguments and limits.max_pipeline must be at least 1",
            ));
        }
        if self.max_bulk_bytes > self.max_request_bytes {
            return Err(invalid(
                "limits.max_bulk_bytes cannot exceed limits.max_request_bytes",
            ));
        }
        if self.max_request_bytes < 1024 {
            return Err(invalid("limits.max_request_bytes must be at least 1024"));
        }
        if self.max_request_bytes > MAX_REQUEST_BYTES {
            return Err(invalid(format!(
                "limits.max_request_bytes is at most {MAX_REQUEST_BYTES} bytes (4gb - 1): \
                 keyway addresses a request's arguments with 32-bit offsets"
            )));
        }
        if self.max_arguments > i32::MAX as usize {
            return Err(invalid(format!(
                "limits.max_arguments is at most {}",
                i32::MAX
            )));
        }
        if self.output_hard_limit > 0
            && self.output_hard_limit < self.max_bulk_bytes.saturating_add(1 << 20)
        {
            return Err(invalid(format!(
                "limits.output_hard_limit ({} bytes) must be \"0\" (no limit) or at least \
                 limits.max_bulk_bytes ({} bytes) plus 1mb: a value a client may write must be readable",
                self.output_hard_limit, self.max_bulk_bytes
            )));
        }
        if self.output_hard_limit > 0 && self.output_soft_limit > self.output_hard_limit {
            return Err(invalid(
                "limits.output_soft_limit cannot exceed limits.output_hard_limit",
            ));
        }
        Ok(())
    }
}

/// Backend connection settings (`[backend]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BackendSettings {
    /// Pipelined connections per core per Redis server (default 1).
    pub connections: usize,
    /// Give up connecting after this long (default "1s").
    #[serde(deserialize_with = "units::duration")]
    pub connect_timeout: Millis,
    /// Fail a connection whose oldest request has waited this long for its
    /// reply (default "5s"; "0" waits forever).
    #[serde(deserialize_with = "units::duration")]
    pub timeout: Millis,
    /// Longest wait between reconnection attempts; the backoff doubles from
    /// 50ms up to this (default "2s").
    #[serde(deserialize_with = "units::duration")]
    pub max_backoff: Millis,
    /// Requests waiting to be written to one backend connection before keyway
    /// stops reading from the clients that feed it, until the connection
    /// drains (default "64mb").
    #[serde(deserialize_with = "units::size")]
    pub write_buffer_limit: u64,
    /// Largest reply keyway buffers from a backend: a larger one is read and
    /// dropped, and its request gets an error naming this limit (default
    /// "1gb"). Replies are also bounded by `limits.output_hard_limit`.
    #[serde(deserialize_with = "units::size")]
    pub max_reply_bytes: u64,
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            connections: 1,
            connect_timeout: Millis(1000),
            timeout: Millis(5000),
            max_backoff: Millis(2000),
            write_buffer_limit: 64 << 20,
            max_reply_bytes: 1 << 30,
        }
    }
}

/// How keys are moved while slots migrate (`[migration]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationSettings {
    /// MIGRATE timeout for the keys one command names; doubled on each retry
    /// and capped at 80% of `backend.timeout`, so that a slow MIGRATE never
    /// fails the whole backend connection (default "1s").
    #[serde(deserialize_with = "units::duration")]
    pub move_timeout: Millis,
    /// Attempts to move a command's keys before it gets `-TRYAGAIN`
    /// (default 3).
    pub move_attempts: u8,
    /// Longest a command on a slot about to migrate is held before it gets
    /// `-TRYAGAIN` (default "2s"; the hold normally lasts until every data
    /// plane has acked the step, a fraction of a second).
    #[serde(deserialize_with = "units::duration")]
    pub hold_timeout: Millis,
}

impl Default for MigrationSettings {
    fn default() -> Self {
        MigrationSettings {
            move_timeout: Millis(1000),
            move_attempts: 3,
            hold_timeout: Millis(2000),
        }
    }
}

/// One `[[group]]`: a Redis master and the slots it serves.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Unique name, used in errors and by the control plane.
    pub name: String,
    /// `host:port` of the master.
    pub master: String,
    /// Slot ranges (`"0-8191"`, `"9000"`); groups without them share the slots
    /// no group names, evenly and in listed order.
    pub slots: Option<Vec<String>>,
    /// The master's replicas (none by default); read from only when
    /// `read_from` says so.
    #[serde(default, rename = "replica")]
    pub replicas: Vec<ReplicaConfig>,
    /// Where read-only commands go: "master" (default), "replica" (any up
    /// replica, round robin; the master when none is up) or "local-zone"
    /// (an up replica whose zone is keyway's own `zone`; the master when
    /// none is, or when keyway has no zone). Replica reads may be stale by
    /// the replication lag.
    #[serde(default)]
    pub read_from: ReadFromConfig,
}

/// One `[[group.replica]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// `host:port` of the replica.
    pub address: String,
    /// Its zone or rack (none by default), for `read_from = "local-zone"`.
    #[serde(default)]
    pub zone: String,
}

/// `read_from` of a group.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReadFromConfig {
    /// Every command to the master.
    #[default]
    Master,
    /// Read-only commands to any up replica.
    Replica,
    /// Read-only commands to an up replica in keyway's own zone.
    LocalZone,
}

impl ReadFromConfig {
    /// As written in the file.
    pub fn name(self) -> &'static str {
        match self {
            ReadFromConfig::Master => "master",
            ReadFromConfig::Replica => "replica",
            ReadFromConfig::LocalZone => "local-zone",
        }
    }
}

impl From<ReadFromConfig> for ReadFrom {
    fn from(r: ReadFromConfig) -> ReadFrom {
        match r {
            ReadFromConfig::Master => ReadFrom::Master,
            ReadFromConfig::Replica => ReadFrom::Replica,
            ReadFromConfig::LocalZone => ReadFrom::LocalZone,
        }
    }
}

/// The whole file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Client listen address (`port 0` picks a free port and logs it);
    /// required unless given on the command line.
    #[serde(default)]
    pub listen: Option<String>,
    /// Admin HTTP address (`/healthz`, `/table`); none by default.
    #[serde(default)]
    pub admin: Option<String>,
    /// Cores to run on (default 1).
    #[serde(default)]
    pub cores: Cores,
    /// This data plane's zone or rack (none by default; `keyway --zone`
    /// overrides it): groups with `read_from = "local-zone"` read from the
    /// replicas in this zone.
    #[serde(default)]
    pub zone: Option<String>,
    /// Slot count: a power of two up to 16384 (default 16384); standalone
    /// mode only.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Connection steering across cores (default "none").
    #[serde(default)]
    pub steer: Steer,
    /// Socket transport (default "uring").

    #[serde(default)]
    pub transport: Transport,
    /// Listen backlog per core (default 4096; the kernel caps it at somaxconn).
    #[serde(default = "default_backlog")]
    pub backlog: u32,
    /// Client limits.
    #[serde(default)]
    pub limits: Limits,
    /// Backend connections.
    #[serde(default)]
    pub backend: BackendSettings,
    /// Key moves during migrations.
    #[serde(default)]
    pub migration: MigrationSettings,
    /// Redis groups.
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupConfig>,
}

fn default_slots() -> u32 {
    DEFAULT_SLOTS
}

fn default_backlog() -> u32 {
    4096
}

/// Everything that may change on reload, swapped as one: routing and limits.
#[derive(Debug)]
pub struct LiveConfig {
    /// Slot → group routing.
    pub table: RoutingTable,
    /// Why keyway refuses routed commands with `-TRYAGAIN`, when it does: a
    /// managed data plane without a valid lease or without a table yet.
    pub fence: Option<Arc<str>>,
    /// Client limits.
    pub limits: Limits,
    /// Backend connection settings.
    pub backend: BackendSettings,
    /// Key moves during migrations.
    pub migration: MigrationSettings,
    /// This data plane's zone, for `read_from = "local-zone"`.
    pub zone: Option<Arc<str>>,
}

impl LiveConfig {
    /// The largest reply keyway forwards, and the setting that says so: the
    /// smaller of `backend.max_reply_bytes` and `limits.output_hard_limit`.
    pub fn reply_limit(&self) -> (u64, &'static str) {
        reply_limit(&self.limits, &self.backend)
    }
}

/// A validated config: process settings fixed at start, plus the live part.
#[derive(Debug)]
pub struct Config {
    /// Client listen address.
    pub listen: SocketAddr,
    /// Admin HTTP address.
    pub admin: Option<SocketAddr>,
    /// CPU ids, one executor each.
    pub cpus: Vec<usize>,
    /// Connection steering.
    pub steer: Steer,
    /// Socket transport.
    pub transport: Transport,
    /// Listen backlog.
    pub backlog: u32,
    /// The first live snapshot.
    pub live: Arc<LiveConfig>,
    /// Things worth a log line that are not errors.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates a standalone config file, giving the routing table
    /// `version`.
    pub fn load(path: &Path, version: u64) -> Result<Config, ConfigError> {
        FileConfig::read(path)?.validate(version, Mode::Standalone)
    }

    /// Parses and validates standalone config text.
    pub fn parse(text: &str, version: u64) -> Result<Config, ConfigError> {
        FileConfig::parse(text)?.validate(version, Mode::Standalone)
    }
}

/// Values given on the command line, which take precedence over the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--admin`.
    pub admin: Option<String>,
    /// `--cores`.
    pub cores: Option<usize>,
    /// `--zone`.
    pub zone: Option<String>,
}

impl Overrides {
    /// Sets the overridden values in `f`.
    pub fn apply(&self, f: &mut FileConfig) {
        if let Some(l) = &self.listen {
            f.listen = Some(l.clone());
        }
        if let Some(a) = &self.admin {
            f.admin = Some(a.clone());
        }
        if let Some(c) = self.cores {
            f.cores = Cores::Count(c);
        }
        if let Some(z) = &self.zone {
            f.zone = Some(z.clone());
        }
    }
}

/// Where routing comes from.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The file's `[[group]]`s.
    Standalone,
    /// keyway-ctld's snapshots: the file holds settings only, and keyway
    /// starts fenced until it has a table and a lease.
    Managed,
}

impl Default for FileConfig {
    /// Every key at its documented default (an empty file).
    fn default() -> FileConfig {
        FileConfig::parse("").expect("an empty config parses")
    }
}

impl FileConfig {
    /// Reads a config file (not yet validated).
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        FileConfig::parse(&text)
    }

    /// Parses config text (not yet validated).
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }
}

impl FileConfig {
    /// Checks every value and builds the routing table (standalone) or an
    /// empty, fenced one (managed).
    pub fn validate(self, version: u64, mode: Mode) -> Result<Config, ConfigError> {
        let listen = self
            .listen
            .as_deref()
            .ok_or_else(|| invalid("listen is required"))?;
        let listen = resolve(listen).map_err(|e| invalid(format!("listen: {e}")))?;
        let admin = match &self.admin {
            Some(a) => Some(resolve(a).map_err(|e| invalid(format!("admin: {e}")))?),
            None => None,
        };
        let cpus = cpus(&self.cores)?;
        if !valid_slot_count(self.slots) {
            return Err(invalid(format!(
                "slots = {}: must be a power of two from 1 to 16384",
                self.slots
            )));
        }
        if self.backlog == 0 {
            return Err(invalid("backlog must be at least 1"));
        }
        let mut limits = self.limits;
        if limits.max_memory == AUTO_MEMORY {
            limits.max_memory = half_of_memory().max(least_memory(&limits, &self.backend));
        }
        limits.validate()?;
        let least = least_memory(&limits, &self.backend);
        if limits.max_memory > 0 && limits.max_memory < least {
            return Err(invalid(format!(
                "limits.max_memory ({} bytes) must be \"0\" (no budget) or at least {least} bytes: \
                 twice limits.max_request_bytes (a largest request is buffered as read and as sent on) \
                 and the largest reply ({} bytes, {})",
                limits.max_memory,
                reply_limit(&limits, &self.backend).0,
                reply_limit(&limits, &self.backend).1,
            )));
        }
        if self.backend.connections == 0 || self.backend.connections > 64 {
            return Err(invalid("backend.connections must be from 1 to 64"));
        }
        if self.backend.connect_timeout.0 == 0 {
            return Err(invalid("backend.connect_timeout must be more than 0"));
        }
        if self.backend.write_buffer_limit < 64 << 10 {
            return Err(invalid("backend.write_buffer_limit must be at least 64kb"));
        }
        if self.backend.max_reply_bytes < limits.max_bulk_bytes.saturating_add(1 << 20) {
            return Err(invalid(format!(
                "backend.max_reply_bytes ({} bytes) must be at least limits.max_bulk_bytes ({} bytes) \
                 plus 1mb: a value a client may write must be readable",
                self.backend.max_reply_bytes, limits.max_bulk_bytes
            )));
        }
        if self.migration.move_attempts == 0 || self.migration.move_timeout.0 == 0 {
            return Err(invalid(
                "migration.move_attempts and migration.move_timeout must be more than 0",
            ));
        }
        if self.migration.move_attempts > 10 {
            return Err(invalid("migration.move_attempts must be at most 10"));
        }
        if let Some(z) = &self.zone {
            if !keyway_capnp::snapshot::valid_zone(z) {
                return Err(invalid(format!(
                    "zone {z:?}: 1 to {} printable characters without spaces",
                    keyway_capnp::snapshot::MAX_NAME
                )));
            }
        }
        let mut warnings = Vec::new();
        let (table, fence) = match mode {
            Mode::Standalone => (
                groups::standalone_table(
                    version,
                    self.slots,
                    &self.groups,
                    self.zone.as_deref(),
                    &mut warnings,
                )?,
                None,
            ),
            Mode::Managed => {
                if !self.groups.is_empty() {
                    return Err(invalid("[[group]] is for standalone use: a managed keyway gets its groups from keyway-ctld"));
                }
                let empty: Vec<SlotRoute> = vec![SlotRoute::Unassigned; self.slots as usize];
                (
                    RoutingTable::new(0, self.slots, &empty, Box::new([])),
                    Some(Arc::from("no routing table from keyway-ctld yet")),
                )
            }
        };
        Ok(Config {
            listen,
            admin,

            cpus,
            steer: self.steer,
            transport: self.transport,
            backlog: self.backlog,
            live: Arc::new(LiveConfig {
                table,
                fence,
                limits,
                backend: self.backend,
                migration: self.migration,
                zone: self.zone.as_deref().map(Arc::from),
            }),

            warnings,
        })
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bitmask, zeroed before use; sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn cpus(cores: &Cores) -> Result<Vec<usize>, ConfigError> {
    let allowed = allowed_cpus();
    let cpus: Vec<usize> = match cores {
        Cores::Count(0) => return Err(invalid("cores must be at least 1")),
        Cores::Count(n) if *n > allowed.len() => {
            return Err(invalid(format!(
                "cores = {n}, but this process may only run on {} CPUs ({allowed:?})",
                allowed.len()
            )))
        }
        Cores::Count(n) => allowed[..*n].to_vec(),
        Cores::List(list) => list.clone(),
    };
    if cpus.is_empty() {
        return Err(invalid("cores must name at least one CPU"));
    }
    for (i, c) in cpus.iter().enumerate() {
        if !allowed.contains(c) {
            return Err(invalid(format!(
                "cores: CPU {c} is not available to this process ({allowed:?})"
            )));
        }
        if cpus[..i].contains(c) {
            return Err(invalid(format!("cores: CPU {c} is listed twice")));
        }
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, 1)
    }

    #[test]
    fn the_readme_minimum_works() {
        let c = parse(
            r#"
            listen = "127.0.0.1:6380"
            cores = 1
            slots = 16384
            [[group]]
            name = "g1"
            master = "127.0.0.1:7001"
            slots = ["0-8191"]
            [[group]]
            name = "g2"
            master = "127.0.0.1:7002"
            "#,
        )
        .unwrap();
        let t = &c.live.table;
        assert_eq!(t.route(0), SlotRoute::Stable(0));
        assert_eq!(t.route(8191), SlotRoute::Stable(0));
        assert_eq!(t.route(8192), SlotRoute::Stable(1));
        assert_eq!(t.route(16383), SlotRoute::Stable(1));
        assert_eq!(
            c.live.limits,
            Limits {
                max_memory: c.live.limits.max_memory,
                ..Limits::default()
            }
        );
        assert_eq!(c.live.backend, BackendSettings::default());
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn slots_split_evenly_in_listed_order() {
        let c = parse(
            r#"
            listen = "127.0.0.1:0"
            slots = 1024
            [[group]]
            name = "a"
            master = "127.0.0.1:1"
            [[group]]
            name = "b"
            master = "127.0.0.1:2"
            [[group]]
            name = "c"
            master = "127.0.0.1:3"
            "#,
        )
        .unwrap();
        let t = &c.live.table;
        assert_eq!(t.route(0), SlotRoute::Stable(0));
        assert_eq!(t.route(341), SlotRoute::Stable(0));
        assert_eq!(t.route(342), SlotRoute::Stable(1));
        assert_eq!(t.route(683), SlotRoute::Stable(2));
        assert_eq!(t.route(1023), SlotRoute::Stable(2));
    }

    #[test]
    fn errors_name_the_problem() {
        let base = "listen = \"127.0.0.1:0\"\n";
        let cases = [
            ("bogus = 1\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "unknown field"),
            ("[[group]]\nname='a'\nmaster='127.0.0.1:1'\nbogus=2", "unknown field"),
            ("[limits]\nmax_clientz = 3\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "unknown field"),
            ("slots = 1000\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "power of two"),
            ("", "at least one Redis group"),
            ("[[group]]\nname='a'\nmaster='127.0.0.1:1'\n[[group]]\nname='a'\nmaster='127.0.0.1:2'", "defined twice"),
            ("[[group]]\nname='a'\nmaster='127.0.0.1:1'\n[[group]]\nname='b'\nmaster='127.0.0.1:1'", "same master"),
            ("[[group]]\nname='a'\nmaster='127.0.0.1:1'\n[[group]]\nname='b'\nmaster='localhost:1'", "are the same server 127.0.0.1:1"),
            (
                "[[group]]\nname='a'\nmaster='127.0.0.1:1'\nslots=['0-10']\n[[group]]\nname='b'\nmaster='127.0.0.1:2'\nslots=['10']",
                "slot 10 is assigned to both",
            ),
            ("[[group]]\nname='a'\nmaster='127.0.0.1:1'\nslots=['0-99999']", "slots go from 0 to 16383"),
            ("[[group]]\nname='a'\nmaster='127.0.0.1:1'\nslots=['9-3']", "reversed"),
            ("[[group]]\nname='a b'\nmaster='127.0.0.1:1'", "names are"),
            ("[[group]]\nname='a'\nmaster='nowhere'", "master"),
            ("cores = 0\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "at least 1"),
            ("cores = [9999]\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "not available"),
            ("[limits]\nidle_timeout = '5'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "unit"),
            ("[limits]\noutput_soft_limit='2gb'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "cannot exceed"),
            ("[limits]\nmax_request_bytes='4gb'\nmax_bulk_bytes='1mb'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "32-bit offsets"),
            ("[limits]\nmax_arguments=4294967296\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "max_arguments is at most"),
            ("[limits]\noutput_hard_limit='256mb'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "must be readable"),
            ("[limits]\nmax_bulk_bytes='10mb'\noutput_hard_limit='10mb'\noutput_soft_limit='1mb'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "plus 1mb"),
            ("[limits]\nmax_memory='100mb'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "twice"),
            ("[limits]\nmax_memory='900mb'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "the largest reply (1073741824 bytes, backend.max_reply_bytes)"),
            ("[backend]\nwrite_buffer_limit='1kb'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "write_buffer_limit"),
            ("[backend]\nmax_reply_bytes='1kb'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "max_reply_bytes"),
            ("[backend]\nmax_reply_bytes='300mb'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "must be readable"),
            ("[backend]\nconnections=0\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "backend.connections"),
            ("[migration]\nmove_attempts=11\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "at most 10"),
            ("[migration]\nmove_attempts=0\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "more than 0"),
            ("[migration]\nhold_timeoutz='1s'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "unknown field"),
        ];
        for (body, want) in cases {
            let err = parse(&format!("{base}{body}")).expect_err(body).to_string();
            assert!(
                err.contains(want),
                "{body:?}: {err:?} does not mention {want:?}"
            );
        }
    }

    #[test]
    fn replicas_read_policy_and_zone() {
        let c = parse(
            r#"
            listen = "127.0.0.1:0"
            zone = "z1"
            [[group]]
            name = "a"
            master = "127.0.0.1:7000"
            read_from = "local-zone"
            [[group.replica]]
            address = "127.0.0.1:7100"
            zone = "z1"
            [[group.replica]]
            address = "127.0.0.1:7101"
            [[group]]
            name = "b"
            master = "127.0.0.1:7001"
            "#,
        )
        .unwrap();
        let a = c.live.table.group(0);
        assert_eq!(a.read_from, ReadFrom::LocalZone);
        assert_eq!(a.replicas.len(), 2);
        assert_eq!((&*a.replicas[0].zone, &*a.replicas[1].zone), ("z1", ""));
        assert_eq!(
            c.live.table.group(1).read_from,
            ReadFrom::Master,
            "the default"
        );
        assert_eq!(c.live.zone.as_deref(), Some("z1"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        let mut f = FileConfig::parse(
            "listen='127.0.0.1:0'\n[[group]]\nname='a'\nmaster='127.0.0.1:7000'\nread_from='local-zone'\n\
             [[group.replica]]\naddress='127.0.0.1:7100'\nzone='z2'",
        )
        .unwrap();
        let warned = f.clone().validate(1, Mode::Standalone).unwrap().warnings;
        assert!(warned[0].contains("keyway has no zone"), "{warned:?}");
        Overrides {
            zone: Some("z2".into()),
            ..Overrides::default()
        }
        .apply(&mut f);
        let c = f.validate(1, Mode::Standalone).unwrap();
        assert_eq!(c.live.zone.as_deref(), Some("z2"), "--zone");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn replica_errors_name_the_problem() {
        let base = "listen = \"127.0.0.1:0\"\n";
        let g = "[[group]]\nname='a'\nmaster='127.0.0.1:1'\n";
        let cases = [
            (format!("{g}read_from='replicas'"), "unknown variant"),
            (format!("{g}[[group.replica]]\naddress='127.0.0.1:1'"), "is the group's master"),
            (
                format!("{g}[[group.replica]]\naddress='127.0.0.1:2'\n[[group.replica]]\naddress='127.0.0.1:2'"),
                "listed twice",
            ),
            (format!("{g}[[group.replica]]\naddress='nowhere'"), "replica"),
            (format!("{g}[[group.replica]]\naddress='127.0.0.1:2'\nzone='a b'"), "zone"),
            (format!("{g}[[group.replica]]\naddress='127.0.0.1:2'\nport=3"), "unknown field"),
            (format!("zone=''\n{g}"), "zone"),
        ];
        for (body, want) in cases {
            let err = parse(&format!("{base}{body}"))
                .expect_err(&body)
                .to_string();
            assert!(
                err.contains(want),
                "{body:?}: {err:?} does not mention {want:?}"
            );
        }
        let c = parse(&format!("{base}{g}read_from='replica'")).unwrap();
        assert!(c.warnings[0].contains("no replicas"), "{:?}", c.warnings);
    }

    #[test]
    fn zero_output_limits_mean_none_as_in_redis() {
        let c = parse(
            "listen='127.0.0.1:0'\n[limits]\noutput_hard_limit='0'\noutput_soft_limit='0'\nmax_memory='0'\n\
             [[group]]\nname='a'\nmaster='127.0.0.1:1'",
        )
        .unwrap();
        assert_eq!(c.live.limits.output_hard_limit, 0);
        assert_eq!(
            c.live.reply_limit(),
            (1 << 30, "backend.max_reply_bytes"),
            "no hard limit: replies are bounded by the backend's"
        );
        let c = parse(
            "listen='127.0.0.1:0'\n[limits]\nmax_bulk_bytes='1mb'\noutput_hard_limit='4mb'\noutput_soft_limit='1mb'\n\
             [[group]]\nname='a'\nmaster='127.0.0.1:1'",
        )
        .unwrap();
        assert_eq!(c.live.reply_limit(), (4 << 20, "limits.output_hard_limit"));
        let c = parse("listen='127.0.0.1:0'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'").unwrap();
        assert!(
            c.live.limits.max_memory >= 1 << 30 && c.live.limits.max_memory < AUTO_MEMORY,
            "a budget by default, room for a largest request: {}",
            c.live.limits.max_memory
        );
    }

    #[test]
    fn unowned_slots_are_a_warning() {
        let c = parse(
            "listen='127.0.0.1:0'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'\nslots=['0-100']",
        )
        .unwrap();
        assert_eq!(c.live.table.route(101), SlotRoute::Unassigned);
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn limits_and_units() {
        let c = parse(
            "listen='127.0.0.1:0'\n[limits]\nmax_clients=5\nidle_timeout='10s'\nmax_request_bytes='1mb'\nmax_bulk_bytes=4096\n\
             [backend]\ntimeout='0'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'",
        )
        .unwrap();
        assert_eq!(c.live.limits.max_clients, 5);
        assert_eq!(c.live.limits.idle_timeout, Millis(10_000));
        assert_eq!(c.live.limits.request_limits().max_request_bytes, 1 << 20);
        assert_eq!(c.live.limits.request_limits().max_bulk_bytes, 4096);
        assert_eq!(c.live.backend.timeout.enabled(), None);
    }
}
