//! Settings that apply on reload: client limits (`[limits]`), backend
//! connections (`[backend]`) and key moves (`[migration]`), with their
//! documented defaults and the rules that keep them from contradicting each
//! other.

use std::path::PathBuf;

use keyway_protocol::resp::RequestLimits;
use serde::Deserialize;

use super::units::{self, Millis};
use super::{invalid, ConfigError};

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
    /// Most channels, patterns and shard channels one client may subscribe
    /// at once (default 10000); a `SUBSCRIBE` that would pass it is refused
    /// whole.
    pub max_subscriptions: usize,
    /// Script bodies keyway remembers (by SHA-1, process-wide, oldest
    /// forgotten first) so that a group answering `NOSCRIPT` to an
    /// `EVALSHA` gets the script loaded and the call retried (default
    /// "16mb"; "0" remembers none: `NOSCRIPT` is passed on).
    #[serde(deserialize_with = "units::size")]
    pub script_registry_bytes: u64,
    /// `CLIENT LIST|KILL|PAUSE|UNPAUSE|UNBLOCK` a core may have awaiting
    /// the other cores' answers (default 256); more are refused.
    pub client_commands_in_flight: usize,
    /// The longest `CLIENT PAUSE` keyway applies (default "60s"): a pause
    /// holds every client on every core, so a longer one is refused rather
    /// than let one request stop the data path for good.
    #[serde(deserialize_with = "units::duration")]
    pub client_pause_max: Millis,
    /// `SLOWLOG`: a request keyway kept back (held or moved during a
    /// migration) this many microseconds or more is logged as keyway's own
    /// slow entry (default 10000, as Redis's `slowlog-log-slower-than`;
    /// negative: none).
    pub slowlog_log_slower_than: i64,
    /// `SLOWLOG`: keyway's own entries kept (default 128, as Redis's
    /// `slowlog-max-len`; the oldest go first).
    pub slowlog_max_len: usize,
}

/// `max_memory` not given: [`FileConfig::validate`] picks the default.
pub(super) const AUTO_MEMORY: u64 = u64::MAX;

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
pub(super) fn reply_limit(limits: &Limits, backend: &BackendSettings) -> (u64, &'static str) {
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
            max_subscriptions: 10_000,
            script_registry_bytes: 16 << 20,
            client_commands_in_flight: 256,
            client_pause_max: Millis(60_000),
            slowlog_log_slower_than: 10_000,
            slowlog_max_len: 128,
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
            unauthenticated: false,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_clients == 0 {
            return Err(invalid("limits.max_clients must be at least 1"));
        }
        if self.client_commands_in_flight == 0 {
            return Err(invalid(
                "limits.client_commands_in_flight must be at least 1",
            ));
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
    /// Connections a core may dedicate to one client at a time, over all
    /// its backends (default 256): a client that `WATCH`es keys or runs a
    /// blocking command (`BLPOP`, `XREAD … BLOCK`, `WAIT`…) holds one of its
    /// group's, so that it neither blocks nor is disturbed by the clients
    /// sharing the pipelined connections. Beyond it such commands get an
    /// error naming this setting; "0" refuses them all.
    pub dedicated_connections: usize,
    /// The ACL user every backend connection authenticates as, with
    /// `password_file` or `password_env` (none by default: no `AUTH`;
    /// a password alone authenticates as `default`, as `requirepass`).
    /// Meant for a restricted user (`keyway backend-acl` prints its rules;
    /// see README, "Backend authentication").
    pub username: Option<String>,
    /// File holding the password of `username` (one trailing newline is
    /// dropped; re-read on reload).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password of `username` (instead
    /// of `password_file`).
    pub password_env: Option<String>,
    /// The privileged ACL user keyway switches to around its maintenance
    /// commands (fan-outs of `FLUSHALL`, `KEYS`, `CONFIG`…, `MIGRATE` of
    /// key moves, `MONITOR`), with `admin_password_file` or
    /// `admin_password_env` (none by default: they run as `username`).
    pub admin_username: Option<String>,
    /// File holding the password of `admin_username`.
    pub admin_password_file: Option<PathBuf>,
    /// Environment variable holding the password of `admin_username`.
    pub admin_password_env: Option<String>,
    /// CA certificates (PEM) that TLS groups' servers must be signed by
    /// (default: the system's bundle, /etc/ssl/certs/ca-certificates.crt):
    /// for every group keyway-ctld's snapshot marks `tls`, and for a
    /// standalone `[[group]]` with `tls = true` and no `tls_ca` of its own.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) to present to TLS groups' servers, with
    /// `tls_key` (none by default); the same fallback as `tls_ca`.
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
}

impl BackendSettings {
    /// `tls_cert` and `tls_key`, when both are set ([`check`] refuses one
    /// without the other).
    pub fn tls_client(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        }
    }

    /// Reads `tls_ca` (else the system's CA bundle) and the client
    /// certificate: the TLS every TLS group of a snapshot starts from.
    pub fn load_tls(&self) -> Result<crate::tls::BackendTls, crate::tls::TlsError> {
        crate::tls::BackendTls::load(self.tls_ca.as_deref(), self.tls_client(), None)
    }

    /// The credential keys of `[backend]`.
    pub(super) fn credential_keys(&self) -> super::secrets::CredentialKeys<'_> {
        super::secrets::CredentialKeys {
            section: "backend",
            username: self.username.as_deref(),
            password_file: self.password_file.as_deref(),
            password_env: self.password_env.as_deref(),
            admin_username: self.admin_username.as_deref(),
            admin_password_file: self.admin_password_file.as_deref(),
            admin_password_env: self.admin_password_env.as_deref(),
        }
    }
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
            dedicated_connections: 256,
            username: None,
            password_file: None,
            password_env: None,
            admin_username: None,
            admin_password_file: None,
            admin_password_env: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// What keyway measures beyond its counters (`[metrics]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Time every request and backend sub-request into per-core latency
    /// histograms (`/metrics`, `INFO latencystats`, the `usec` of `INFO
    /// commandstats`): two clock reads per batch of requests (default
    /// true). Off, the histograms are absent and the times are 0; live on
    /// reload.
    pub latency: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings { latency: true }
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

/// Checks the three sections together, picking `max_memory`'s default.
pub(super) fn check(
    limits: &mut Limits,
    backend: &BackendSettings,
    migration: &MigrationSettings,
) -> Result<(), ConfigError> {
    if limits.max_memory == AUTO_MEMORY {
        limits.max_memory = half_of_memory().max(least_memory(limits, backend));
    }
    limits.validate()?;
    let least = least_memory(limits, backend);
    if limits.max_memory > 0 && limits.max_memory < least {
        return Err(invalid(format!(
            "limits.max_memory ({} bytes) must be \"0\" (no budget) or at least {least} bytes: \
             twice limits.max_request_bytes (a largest request is buffered as read and as sent on) \
             and the largest reply ({} bytes, {})",
            limits.max_memory,
            reply_limit(limits, backend).0,
            reply_limit(limits, backend).1,
        )));
    }
    if backend.tls_cert.is_some() != backend.tls_key.is_some() {
        return Err(invalid("backend.tls_cert and backend.tls_key go together"));
    }
    if backend.tls_ca.is_some() || backend.tls_cert.is_some() {
        // Read now, so that a bad file fails the start or reload naming it.
        backend
            .load_tls()
            .map_err(|e| invalid(format!("backend: tls: {e}")))?;
    }
    if backend.connections == 0 || backend.connections > 64 {
        return Err(invalid("backend.connections must be from 1 to 64"));
    }
    if backend.dedicated_connections > 65_536 {
        return Err(invalid(
            "backend.dedicated_connections must be at most 65536",
        ));
    }
    if backend.connect_timeout.0 == 0 {
        return Err(invalid("backend.connect_timeout must be more than 0"));
    }
    if backend.write_buffer_limit < 64 << 10 {
        return Err(invalid("backend.write_buffer_limit must be at least 64kb"));
    }
    if backend.max_reply_bytes < limits.max_bulk_bytes.saturating_add(1 << 20) {
        return Err(invalid(format!(
            "backend.max_reply_bytes ({} bytes) must be at least limits.max_bulk_bytes ({} bytes) \
             plus 1mb: a value a client may write must be readable",
            backend.max_reply_bytes, limits.max_bulk_bytes
        )));
    }
    if migration.move_attempts == 0 || migration.move_timeout.0 == 0 {
        return Err(invalid(
            "migration.move_attempts and migration.move_timeout must be more than 0",
        ));
    }
    if migration.move_attempts > 10 {
        return Err(invalid("migration.move_attempts must be at most 10"));
    }
    Ok(())
}
