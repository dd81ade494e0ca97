//! The `keyway.toml` file: what it may contain, its defaults, and how it becomes
//! the process settings ([`Config`]) and the first routing snapshot
//! ([`LiveConfig`]). Unknown keys are errors. Every default is documented on
//! its field and in the README's configuration section.
//!
//! - `settings`: `[limits]`, `[backend]`, `[migration]`, checked together;
//! - `groups`: `[[group]]`s, turned into a routing snapshot and built into a
//!   table exactly as keyway-ctld's snapshots are;
//! - `cpus`: which CPUs the cores run on;
//! - `auth`: `[auth]` (failed-`AUTH` limits, the ACL log); `[[user]]`s are
//!   built into [`crate::acl::Users`];
//! - [`units`]: sizes and durations as written in the file.

mod auth;
mod cpus;
mod groups;
pub mod secrets;
mod settings;
pub mod units;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use keyway_protocol::slot::{valid_slot_count, DEFAULT_SLOTS};
use serde::Deserialize;

use crate::acl::{UserConfig, Users};
use crate::resolve::resolve;
use crate::routing::{RoutingTable, SlotRoute};
use crate::tls::{ServerTls, TlsSettings};
pub use auth::AuthSettings;
pub use groups::{GroupConfig, ReadFromConfig, ReplicaConfig};
pub use secrets::{BackendAuth, GroupLogins, Login};
use settings::reply_limit;
pub use settings::{
    BackendSettings, Limits, MetricsSettings, MigrationSettings, MAX_REQUEST_BYTES,
};
#[cfg(test)]
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
    /// What is measured (`[metrics]`).
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// Redis groups.
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupConfig>,
    /// Client users (`[[user]]`, Redis ACL rules); none: Redis's `default`
    /// user, `on nopass ~* &* +@all`.
    #[serde(default, rename = "user")]
    pub users: Vec<UserConfig>,
    /// With no password for the default user, accept clients from loopback
    /// addresses only, as Redis's `protected-mode` (default true).
    #[serde(default = "default_protected_mode")]
    pub protected_mode: bool,
    /// Failed-`AUTH` limits and the ACL log.
    #[serde(default)]
    pub auth: AuthSettings,
    /// TLS for clients (none by default).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

fn default_protected_mode() -> bool {
    true
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
    /// What is measured (`[metrics]`).
    pub metrics: MetricsSettings,
    /// This data plane's zone, for `read_from = "local-zone"`.
    pub zone: Option<Arc<str>>,
    /// Client users.
    pub users: Arc<Users>,
    /// `protected_mode`.
    pub protected_mode: bool,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// The backend logins (`[backend]` and `[[group]]` credentials), read
    /// when the file was.
    pub logins: Arc<BackendAuth>,
}

impl LiveConfig {
    /// The largest reply keyway forwards, and the setting that says so: the
    /// smaller of `backend.max_reply_bytes` and `limits.output_hard_limit`.
    pub fn reply_limit(&self) -> (u64, &'static str) {
        reply_limit(&self.limits, &self.backend)
    }
}

/// TLS for clients, validated: where, and the loaded certificate.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The TLS port beside `listen`; `None`: `listen` itself is TLS-only.
    pub listen: Option<SocketAddr>,
    /// The certificate, key and client verification new connections get.
    pub server: ServerTls,
    /// How long a client's handshake may take.
    pub handshake_timeout: std::time::Duration,
    /// The admin endpoint speaks HTTPS too (`[tls] admin`).
    pub admin: bool,
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
    /// TLS for clients.
    pub tls: Option<ClientTls>,
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
        toml::from_str(text).map_err(|e| ConfigError::Parse(parse_error(text, &e)))
    }
}

/// A TOML error as its position and message, without the source line the
/// `toml` crate quotes: that line may hold a `>password` of a `[[user]]`.
fn parse_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - start + 1;
            // The key the line sets (never its value), when it has one.
            let line_text = text[start..].lines().next().unwrap_or("");
            let key = line_text
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| {
                    !k.is_empty()
                        && k.len() <= 64
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
                });
            match key {
                Some(k) => format!("line {line}, column {column} ({k}): {}", e.message()),
                None => format!("line {line}, column {column}: {}", e.message()),
            }
        }
        None => e.message().to_string(),
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
        let cpus = cpus::cpus(&self.cores)?;
        if !valid_slot_count(self.slots) {
            return Err(invalid(format!(
                "slots = {}: must be a power of two from 1 to 16384",
                self.slots
            )));
        }
        if self.backlog == 0 {
            return Err(invalid("backlog must be at least 1"));
        }
        let mut warnings = Vec::new();
        let auth = self.backend_auth(&mut warnings)?;
        let tls = match &self.tls {
            Some(t) => Some(client_tls(t, listen)?),
            None => None,
        };
        let mut limits = self.limits;
        settings::check(&mut limits, &self.backend, &self.migration)?;
        if let Some(z) = &self.zone {
            if !keyway_capnp::snapshot::valid_zone(z) {
                return Err(invalid(format!(
                    "zone {z:?}: 1 to {} printable characters without spaces",
                    keyway_capnp::snapshot::MAX_NAME
                )));
            }
        }
        auth::check(&self.auth)?;
        let users = Users::from_config(&self.users).map_err(invalid)?;
        let (table, fence) = match mode {
            Mode::Standalone => (
                groups::standalone_table(
                    version,
                    self.slots,
                    &self.groups,
                    self.zone.as_deref(),
                    &self.backend,
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
            tls,
            live: Arc::new(LiveConfig {
                table,
                fence,
                limits,
                backend: self.backend,
                migration: self.migration,
                metrics: self.metrics,
                zone: self.zone.as_deref().map(Arc::from),
                users: Arc::new(users),
                protected_mode: self.protected_mode,
                auth: self.auth,
                logins: Arc::new(auth),
            }),

            warnings,
        })
    }
}

impl FileConfig {
    /// Reads the backend passwords of `[backend]` and of every group with
    /// credential keys of its own.
    fn backend_auth(&self, warnings: &mut Vec<String>) -> Result<BackendAuth, ConfigError> {
        let mut auth = BackendAuth {
            default: self.backend.credential_keys().resolve(warnings)?,
            groups: Default::default(),
        };
        for g in &self.groups {
            let section = format!("group {:?}", g.name);
            let keys = g.credential_keys(&section);
            if keys.any() {
                auth.groups.insert(g.name.clone(), keys.resolve(warnings)?);
            }
        }
        Ok(auth)
    }
}

/// Checks `[tls]` and loads its files.
fn client_tls(t: &TlsSettings, listen: SocketAddr) -> Result<ClientTls, ConfigError> {
    let tls_listen = match &t.listen {
        Some(l) => {
            let a = resolve(l).map_err(|e| invalid(format!("tls.listen: {e}")))?;
            if a == listen && a.port() != 0 {
                return Err(invalid(format!(
                    "tls.listen {a} is the same address as listen: leave tls.listen out to make listen TLS-only"
                )));
            }
            Some(a)
        }
        None => None,
    };
    if t.handshake_timeout.0 == 0 {
        return Err(invalid("tls.handshake_timeout must be at least 1ms"));
    }
    let server = ServerTls::load(t).map_err(|e| invalid(format!("tls: {e}")))?;
    Ok(ClientTls {
        listen: tls_listen,
        server,
        handshake_timeout: t.handshake_timeout.duration(),
        admin: t.admin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A standalone config from text, as version 1.
    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, 1)
    }

    #[test]
    fn a_toml_error_does_not_quote_the_line() {
        let text = "listen = \"127.0.0.1:0\"\n[[user]]\nname = \"app\"\nrules = \"on >Pa\"ssw0rdSecret ~* +@all\"\n";
        let Err(ConfigError::Parse(e)) = FileConfig::parse(text) else {
            panic!("a parse error");
        };
        assert!(!e.contains("ssw0rdSecret"), "{e}");
        assert!(
            e.starts_with("line 4, column ") && e.contains("(rules)"),
            "{e}"
        );
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
            ("[[group]]\nname='a'\nmaster='127.0.0.1:1'\n[[user]]\nname='u'\nrules='on +nosuch'", "user \"u\": rule '+nosuch': Unknown command"),
            ("[[group]]\nname='a'\nmaster='127.0.0.1:1'\n[[user]]\nname='u'\nrules='on <secret'", "rule '<***'"),
            ("[[group]]\nname='a'\nmaster='127.0.0.1:1'\n[[user]]\nname='u'\nbogus=1", "unknown field"),
            ("[auth]\ntracked_addresses=0\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "auth.tracked_addresses"),
            ("[auth]\nmax_failurez=1\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", "unknown field"),
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
    fn users_and_protected_mode() {
        let base = "listen='127.0.0.1:0'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'\n";
        let c = parse(base).unwrap();
        assert!(c.live.protected_mode);
        assert!(!c.live.users.auth_required());
        let c = parse(&format!(
            "protected_mode = false\n{base}[[user]]\nname='default'\nrules='on >p ~* &* +@all'\n"
        ))
        .unwrap();
        assert!(!c.live.protected_mode);
        assert!(c.live.users.auth_required());
        let shown = format!("{:?}", c.live);
        let hash = "148de9c5a7a44d19e56cd9ae1a554bf67847afb0c58f6e12fa29ac7ddfca9940";
        assert!(!shown.contains(hash), "no password hash in Debug: {shown}");
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
            c.live.limits.max_memory >= 1 << 30 && c.live.limits.max_memory < settings::AUTO_MEMORY,
            "a budget by default, room for a largest request: {}",
            c.live.limits.max_memory
        );
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
