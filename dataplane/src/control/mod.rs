//! A managed data plane's control session with keyway-ctld (protocol in
//! `capnp/schema/control.capnp`), on its own thread, off the request path.
//!
//! The thread dials ctld, says hello, applies every snapshot it receives
//! (resolving group masters, then one `ArcSwap::store` that every core picks
//! up), acks a version once every core has loaded it and nothing routed under
//! an older one is in flight ([`Shared::drained_version`]), and requests a
//! lease every third of one. Every Ack carries how the data plane fares
//! with each backend ([`Shared::backend_reports`]); one is also sent soon
//! (at most one per [`HEALTH_ACK_GAP`]) after a backend goes from up to
//! failing or back, so ctld learns of a failure the data plane saw. The lease runs from when the answered ack was
//! sent. When it ends — ctld down, or cut off — the data plane fences itself:
//! routed commands get `-TRYAGAIN` and `/healthz` turns 503, until it is back
//! in session, current, and holds a lease again.
//!
//! A snapshot's client users (`Snapshot::users`, passwords as hashes only)
//! replace the config file's `[[user]]`s in the `LiveConfig` it publishes;
//! one without users brings back the config file's. A new `Users` is built
//! only when the list changes, so the cores run `Worker::users_changed` (the
//! clients of a removed or disabled user are closed, as on a standalone
//! reload) only then. Users that do not build refuse the whole snapshot,
//! as any other invalid snapshot: the data plane keeps the table and users
//! it has, and fences once ctld moves on without it.

mod group_tls;
pub mod state;
mod stream;

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use keyway_capnp::control::{Ack, FromDataPlane, Hello, ToDataPlane};
use keyway_capnp::frame::{check_len, write_frame, MAX_FRAME};
use keyway_capnp::snapshot::Snapshot;

use self::state::{unix_ms, StateDir};
use self::stream::ControlStream;
use crate::acl::{UserConfig, Users};
use crate::config::{BackendAuth, BackendSettings, LiveConfig};
use crate::engine::Shared;
use crate::routing::RoutingTable;
use crate::tls::BackendTls;

/// How to reach ctld and who this data plane is.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// ctld's control address (`host:port`), or several separated by
    /// commas (ctlds on etcd: the active one is found by trying each).
    pub ctld: String,
    /// The cluster served.
    pub cluster: String,
    /// This data plane's id (stable across restarts).
    pub id: String,
    /// Where clients connect, as reported to ctld.
    pub address: String,
    /// Where the snapshot and lease are kept, if anywhere.
    pub state_dir: Option<PathBuf>,
    /// The shared secret sent in the Hello (`--control-token-file`), if
    /// ctld requires one.
    pub token: Option<String>,
    /// Mutual TLS with ctld (`--control-tls-ca`, `--control-tls-cert`,
    /// `--control-tls-key`); plain TCP without.
    pub tls: Option<BackendTls>,
    /// The settings file (`--config`), whose backend credentials and
    /// backend TLS files `SIGHUP` re-reads.
    pub config: Option<PathBuf>,
    /// Backend credentials and TLS settings re-read on `SIGHUP`, for the
    /// control thread — the one publisher of a managed data plane's
    /// configs — to publish with its next table or fence.
    pub reload: Arc<std::sync::Mutex<Option<Reload>>>,
    /// Where the admin endpoint listens (`host:port`, filled in once it is
    /// bound; empty: none), named in the Hello so that ctld can list it.
    pub admin: String,
    /// The admin endpoint speaks HTTPS.
    pub admin_tls: bool,
}

/// What a managed data plane's `SIGHUP` read again.
#[derive(Debug)]
pub struct Reload {
    /// The backend logins.
    pub logins: Arc<BackendAuth>,
    /// `[backend]`, of which `tls_ca`, `tls_cert` and `tls_key` are taken
    /// (the rest needs a restart).
    pub backend: BackendSettings,
}

/// Why a control session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// ctld closed the connection.
    #[error("keyway-ctld closed the session")]
    Closed,
    /// A frame's length is out of bounds.
    #[error("{0}")]
    Frame(#[from] keyway_capnp::frame::FrameError),
    /// A frame does not decode.
    #[error("{0}")]
    Decode(#[from] keyway_capnp::DecodeError),
    /// ctld refused the session, saying why.
    #[error("keyway-ctld refused the session: {0}")]
    Refused(String),
}

impl SessionError {
    /// The session ended because that ctld stands by (control.capnp: its
    /// refusal starts with "standby").
    fn standby(&self) -> bool {
        matches!(self, SessionError::Refused(why) if why.starts_with("standby"))
    }
}

/// Why a snapshot was not applied.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    /// It is another cluster's.
    #[error("snapshot of cluster {got:?}, expected {want:?}")]
    OtherCluster {
        /// The snapshot's cluster.
        got: String,
        /// Ours.
        want: String,
    },
    /// It gives no table.
    #[error(transparent)]
    Table(#[from] crate::routing::TableError),
    /// Its client users do not build.
    #[error("client users: {0}")]
    Users(String),
}

/// The longest wait before another round of addresses when a ctld of the
/// last round stood by.
const STANDBY_BACKOFF: Duration = Duration::from_millis(200);

/// How often the session loop wakes when nothing arrives.
const POLL: Duration = Duration::from_millis(20);

/// … and while a newer table than the one acked waits to be drained.
const FAST_POLL: Duration = Duration::from_millis(2);

/// Least time between an Ack and one sent because a backend went from up
/// to failing or back (see [`Shared::health_changes`]).
const HEALTH_ACK_GAP: Duration = Duration::from_millis(100);

/// The longest time between two acks (and so between two backend reports):
/// ctld weighs a master's failure by the data planes' recent reports, so
/// they must be at most this old, whatever the lease.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// How often masters that did not resolve are resolved again.
const RESOLVE_RETRY: Duration = Duration::from_secs(2);

/// What the session thread knows.
struct Session {
    opts: ControlOptions,
    source: Arc<ArcSwap<LiveConfig>>,
    shared: Arc<Shared>,
    state: Option<StateDir>,
    /// The snapshot applied (published to the cores).
    snapshot: Option<Snapshot>,
    /// The lease's end, as this data plane counts it.
    lease_until: Option<Instant>,
    /// The last heartbeat said ctld's version is ours.
    current: bool,
    seq: u64,
    /// Send times of recent acks, by sequence number.
    sent: Vec<(u64, Instant)>,
    last_ack: Option<Instant>,
    acked: Option<u64>,
    /// `Shared::health_changes` as of the last Ack's reports.
    health_reported: u64,
    /// Masters of the applied snapshot that did not resolve, and when to try
    /// them again.
    unresolved: usize,
    next_resolve: Instant,
    /// Heartbeats received, over all sessions.
    heartbeats: u64,
    /// A lookup of those names running on its own threads (a resolver may
    /// take seconds to fail: the session must keep acking meanwhile).
    resolving: Option<mpsc::Receiver<Resolutions>>,
    /// The config file's users, served while snapshots carry none.
    file_users: Arc<Users>,
    /// The users published: the applied snapshot's, or the file's.
    users: Arc<Users>,
    /// The applied snapshot's groups' TLS, set on every table built from it.
    group_tls: group_tls::GroupTls,
}

/// Masters' resolutions by `host:port` text.
type Resolutions = HashMap<String, Result<SocketAddr, Arc<str>>>;

/// Starts the control thread; it restores the saved snapshot first.
pub fn start(
    opts: ControlOptions,
    source: Arc<ArcSwap<LiveConfig>>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let state = match &opts.state_dir {
        Some(d) => Some(StateDir::open(d)?),
        None => None,
    };
    let file_users = source.load().users.clone();
    let mut s = Session {
        users: file_users.clone(),
        file_users,
        opts,
        source,
        shared,
        state,
        snapshot: None,
        lease_until: None,
        current: true,
        seq: 0,
        sent: Vec::new(),
        last_ack: None,
        acked: None,
        health_reported: 0,
        unresolved: 0,
        next_resolve: Instant::now(),
        resolving: None,
        heartbeats: 0,
        group_tls: Vec::new(),
    };
    s.restore();
    std::thread::Builder::new()
        .name("keyway-control".into())
        .spawn(move || s.run(&stop))?;
    Ok(())
}

impl Session {
    /// Serves the saved snapshot for what remains of its lease.
    fn restore(&mut self) {
        let Some((snapshot, left)) = self.state.as_ref().and_then(StateDir::load) else {
            return;
        };
        if snapshot.cluster != self.opts.cluster {
            tracing::warn!(saved = %snapshot.cluster, "ignoring the saved snapshot of another cluster");
            return;
        }
        if !left.is_zero() {
            self.lease_until = Some(Instant::now() + left);
            self.shared
                .lease_until_unix_ms
                .store(unix_ms(SystemTime::now() + left), Ordering::Relaxed);
        }

        tracing::info!(
            version = snapshot.version,
            lease_left_ms = left.as_millis() as u64,
            "restored the saved snapshot"
        );
        if let Err(e) = self.apply(snapshot) {
            tracing::warn!("the saved snapshot does not apply: {e}");
        }
    }

    fn lease_valid(&self) -> bool {
        self.lease_until.is_some_and(|u| Instant::now() < u)
    }

    /// Why the data plane must refuse routed commands now, if it must.
    fn fence_reason(&self) -> Option<String> {
        if self.snapshot.is_none() {
            return Some("no routing table from keyway-ctld yet".into());
        }
        if !self.lease_valid() {
            return Some("its lease from keyway-ctld has expired".into());
        }
        if !self.current {
            return Some("keyway-ctld has a newer routing table that is not applied yet".into());
        }
        None
    }

    /// Publishes the current table with the current fence, if either changed.
    fn publish(&mut self, table: Option<RoutingTable>) {
        let fence = self.fence_reason();
        let live = self.source.load();
        let same_fence = live.fence.as_deref() == fence.as_deref();
        let reloaded = self
            .opts
            .reload
            .lock()
            .ok()
            .and_then(|mut pending| pending.take());
        if table.is_none() && same_fence && reloaded.is_none() {
            return;
        }
        let mut backend = live.backend.clone();
        let mut table = table;
        if let Some(r) = &reloaded {
            tracing::info!("backend credentials and TLS files reloaded");
            backend.tls_ca = r.backend.tls_ca.clone();
            backend.tls_cert = r.backend.tls_cert.clone();
            backend.tls_key = r.backend.tls_key.clone();
            if let Some(s) = &self.snapshot {
                self.group_tls = group_tls::of(s, &backend);
                let mut t = table.unwrap_or_else(|| live.table.with_version(live.table.version));
                t.set_backend_tls(self.group_tls.clone());
                table = Some(t);
            }
        }
        match &fence {
            Some(why) if !same_fence => tracing::warn!("fenced: {why}"),
            None if !same_fence => tracing::info!("serving (lease valid, table current)"),
            _ => {}
        }
        let table = table.unwrap_or_else(|| live.table.with_version(live.table.version));
        self.source.store(Arc::new(LiveConfig {
            table,
            fence: fence.map(Arc::from),
            limits: live.limits.clone(),
            backend,
            migration: live.migration.clone(),
            metrics: live.metrics.clone(),
            zone: live.zone.clone(),
            users: self.users.clone(),
            protected_mode: live.protected_mode,
            auth: live.auth.clone(),
            logins: reloaded.map_or_else(|| live.logins.clone(), |r| r.logins),
        }));
        self.shared.wake_cores();
    }

    /// Builds the snapshot's table and hands it to the cores.
    fn apply(&mut self, snapshot: Snapshot) -> Result<(), ApplyError> {
        if snapshot.cluster != self.opts.cluster {
            return Err(ApplyError::OtherCluster {
                got: snapshot.cluster,
                want: self.opts.cluster.clone(),
            });
        }
        let mut table = RoutingTable::from_snapshot(&snapshot)?;
        let users = self.users_of(&snapshot)?;
        self.group_tls = group_tls::of(&snapshot, &self.source.load().backend);
        table.set_backend_tls(self.group_tls.clone());
        tracing::info!(
            version = snapshot.version,
            groups = snapshot.groups.len(),
            "applying snapshot"
        );
        if let Err(e) = table.same_server() {
            tracing::warn!(version = snapshot.version, "{e}: they share connections");
        }
        self.note_unresolved(&table);
        self.users = users;
        self.snapshot = Some(snapshot);
        self.current = true;
        self.save();
        self.publish(Some(table));
        Ok(())
    }

    /// The users `snapshot` serves: its own (built again only when they
    /// differ from the applied snapshot's), or the config file's when it
    /// carries none.
    fn users_of(&self, snapshot: &Snapshot) -> Result<Arc<Users>, ApplyError> {
        let before = self.snapshot.as_ref().map(|s| s.users.as_slice());
        if before == Some(snapshot.users.as_slice()) {
            return Ok(self.users.clone());
        }
        if snapshot.users.is_empty() {
            tracing::info!(
                version = snapshot.version,
                "no client users from keyway-ctld: serving the config file's"
            );
            return Ok(self.file_users.clone());
        }
        let list: Vec<UserConfig> = snapshot
            .users
            .iter()
            .map(|u| UserConfig {
                name: u.name.clone(),
                rules: u.rules.clone(),
            })
            .collect();
        let users = Users::from_config(&list).map_err(ApplyError::Users)?;
        tracing::info!(
            version = snapshot.version,
            users = list.len(),
            "client users from keyway-ctld"
        );
        Ok(Arc::new(users))
    }

    /// Logs the groups whose master did not resolve (they answer errors; the
    /// others serve) and the replicas that did not (not read from), and
    /// schedules another try.
    fn note_unresolved(&mut self, table: &RoutingTable) {
        for g in table.unresolved() {
            if let Err(why) = &g.master {
                tracing::warn!(group = %g.name, "group unavailable until its master resolves: {why}");
            }
        }
        for g in table.groups() {
            for r in g.replicas.iter() {
                if let Err(why) = &r.addr {
                    tracing::warn!(group = %g.name, replica = %r.text, "replica not read from until it resolves: {why}");
                }
            }
        }
        self.unresolved = table.unresolved_names().count();
        self.next_resolve = Instant::now() + RESOLVE_RETRY;
    }

    /// Resolves again, in the background, the masters that did not
    /// resolve, every [`RESOLVE_RETRY`]; publishes the table again (same
    /// version) once fewer of them fail.
    fn retry_resolution(&mut self) {
        if let Some(rx) = &self.resolving {
            match rx.try_recv() {
                Ok(found) => {
                    self.resolving = None;
                    self.resolved(found);
                }
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => self.resolving = None,
            }
        }
        if self.unresolved == 0 || Instant::now() < self.next_resolve {
            return;
        }
        self.next_resolve = Instant::now() + RESOLVE_RETRY;
        let names: Vec<String> = self
            .source
            .load()
            .table
            .unresolved_names()
            .map(str::to_string)
            .collect();
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("keyway-resolve".into())
            .spawn(move || {
                let found = crate::resolve::resolve_all(
                    names.iter().map(String::as_str),
                    Duration::from_secs(10),
                );
                let _ = tx.send(found);
            });
        match spawned {
            Ok(_) => self.resolving = Some(rx),
            Err(e) => tracing::warn!("cannot start a resolver thread: {e}"),
        }
    }

    /// A background lookup came back: the table again with what resolves now.
    fn resolved(&mut self, found: Resolutions) {
        let Some(snapshot) = &self.snapshot else {
            return;
        };
        let mut known = self.source.load().table.resolutions();
        known.extend(found);
        let Ok(mut table) = RoutingTable::from_snapshot_with(snapshot, &known) else {
            return;
        };
        table.set_backend_tls(self.group_tls.clone());
        let still = table.unresolved_names().count();
        if still < self.unresolved {
            tracing::info!(still_unresolved = still, "a master or replica resolves now");
            self.unresolved = still;
            self.publish(Some(table));
        }
    }

    fn save(&self) {
        let (Some(dir), Some(s)) = (&self.state, &self.snapshot) else {
            return;
        };
        let left = self
            .lease_until
            .and_then(|u| u.checked_duration_since(Instant::now()))
            .unwrap_or_default();
        if let Err(e) = dir.save(s, SystemTime::now() + left) {
            tracing::warn!("cannot save the snapshot to {}: {e}", dir.0.display());
        }
    }

    /// Dials ctld until stopped. With several addresses (`--control A,B,C`:
    /// several ctlds on etcd, one of them active) it tries each in turn and
    /// moves to the next at once when one cannot be reached, refuses the
    /// session as a standby, or ends a session; it backs off only after a
    /// whole round of addresses served no session — at most
    /// [`STANDBY_BACKOFF`] when a ctld of the round stood by (a takeover is
    /// under way: the new leader is found soon after it wins).
    fn run(mut self, stop: &AtomicBool) {
        let addrs: Vec<String> = self
            .opts
            .ctld
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        let mut backoff = Duration::from_millis(100);
        let mut at = 0usize;
        let mut failed_in_round = 0usize;
        let mut standby_in_round = false;
        while !stop.load(Ordering::Relaxed) {
            let Some(addr) = addrs.get(at % addrs.len().max(1)).cloned() else {
                tracing::warn!("no keyway-ctld address to dial");
                self.idle(stop, Duration::from_secs(2));
                continue;
            };
            at = at.wrapping_add(1);
            let heard = self.heartbeats;
            match crate::resolve::resolve(&addr) {
                Err(e) => tracing::warn!("keyway-ctld address {addr}: {e}"),
                Ok(sa) => match TcpStream::connect_timeout(&sa, Duration::from_secs(1)) {
                    Ok(sock) => match ControlStream::open(sock, &addr, self.opts.tls.as_ref()) {
                        Ok(sock) => match self.session(sock, stop) {
                            Ok(()) => tracing::info!(ctld = %addr, "control session closed"),
                            Err(e) if e.standby() => {
                                standby_in_round = true;
                                tracing::debug!(ctld = %addr, "{e}; trying the next address")
                            }
                            Err(e) => tracing::warn!(ctld = %addr, "control session ended: {e}"),
                        },
                        Err(e) => {
                            tracing::warn!(ctld = %addr, "control session failed: TLS: {e}")
                        }
                    },
                    Err(e) => tracing::debug!("cannot reach keyway-ctld at {addr}: {e}"),
                },
            }
            // Only a session that was served starts the backoff over: one
            // refused at once (a wrong token, an unknown cluster) is retried
            // ever more slowly, up to 2 s.
            if self.heartbeats != heard {
                backoff = Duration::from_millis(100);
                failed_in_round = 0;
                continue;
            }
            failed_in_round += 1;
            if failed_in_round >= addrs.len() {
                failed_in_round = 0;
                if std::mem::take(&mut standby_in_round) {
                    backoff = backoff.min(STANDBY_BACKOFF);
                }
                self.idle(stop, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }

    /// Waits out a backoff while keeping the fence in step with the lease.
    fn idle(&mut self, stop: &AtomicBool, wait: Duration) {
        let until = Instant::now() + wait;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            self.retry_resolution();
            self.publish(None);
            std::thread::sleep(POLL);
        }
    }

    fn send(&mut self, sock: &mut ControlStream, m: &FromDataPlane) -> std::io::Result<()> {
        write_frame(sock, &m.encode())
    }

    fn ack(&mut self, sock: &mut ControlStream) -> std::io::Result<()> {
        self.seq += 1;
        let latest = self.snapshot.as_ref().map_or(0, |s| s.version);
        let version = self.shared.drained_version().unwrap_or(0).min(latest);
        self.health_reported = self.shared.health_changes.load(Ordering::Acquire);
        let now = Instant::now();
        let a = Ack {
            version,
            drained: version == latest && latest > 0,
            seq: self.seq,
            fenced: self.fence_reason().is_some(),
            backends: self.shared.backend_reports(now),
        };
        self.send(sock, &FromDataPlane::Ack(a))?;
        self.sent.push((self.seq, now));
        if self.sent.len() > 64 {
            self.sent.remove(0);
        }
        self.last_ack = Some(now);
        self.acked = Some(version);
        Ok(())
    }

    fn session(&mut self, mut sock: ControlStream, stop: &AtomicBool) -> Result<(), SessionError> {
        sock.set_read_timeout(Some(POLL))?;
        let mut polling = POLL;
        let hello = Hello {
            id: self.opts.id.clone(),
            cluster: self.opts.cluster.clone(),
            version: self.snapshot.as_ref().map_or(0, |s| s.version),
            address: self.opts.address.clone(),
            token: self.opts.token.clone().unwrap_or_default(),
            admin: self.opts.admin.clone(),
            admin_tls: self.opts.admin_tls,
        };
        self.send(&mut sock, &FromDataPlane::Hello(hello))?;
        tracing::info!(ctld = %self.opts.ctld, "control session open");
        self.last_ack = None;
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        while !stop.load(Ordering::Relaxed) {
            match sock.read(&mut chunk) {
                Ok(0) => return Err(SessionError::Closed),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
            while buf.len() >= 4 {
                let len = check_len([buf[0], buf[1], buf[2], buf[3]], MAX_FRAME)?;
                if buf.len() < 4 + len {
                    break;
                }
                let m = ToDataPlane::decode(&buf[4..4 + len])?;
                buf.drain(..4 + len);
                self.handle(m)?;
            }
            // Ack a newly drained version at once, and a backend's turn
            // from up to failing or back within HEALTH_ACK_GAP (ctld's
            // failure detection waits for it); otherwise ask for the lease
            // (and report) every third of it, or every REPORT_EVERY if
            // that is sooner.
            let lease =
                Duration::from_millis(self.snapshot.as_ref().map_or(3000, |s| s.lease_millis));
            let drained = self
                .shared
                .drained_version()
                .unwrap_or(0)
                .min(self.snapshot.as_ref().map_or(0, |s| s.version));
            let turned = self.shared.health_changes.load(Ordering::Acquire) != self.health_reported
                && self.last_ack.is_none_or(|t| t.elapsed() >= HEALTH_ACK_GAP);
            let due = self
                .last_ack
                .is_none_or(|t| t.elapsed() >= (lease / 3).min(REPORT_EVERY))
                || self.acked != Some(drained)
                || turned;
            if due {
                self.ack(&mut sock)?;
            }
            self.retry_resolution();
            self.publish(None);
            // While the newest table is not acked yet (cores loading it,
            // older requests finishing), look again soon: a migration waits
            // for this ack, holding commands meanwhile.
            let latest = self.snapshot.as_ref().map_or(0, |s| s.version);
            let wait = if self.acked.is_some_and(|a| a < latest) {
                FAST_POLL
            } else {
                POLL
            };
            if wait != polling {
                sock.set_read_timeout(Some(wait))?;
                polling = wait;
            }
        }
        Ok(())
    }

    fn handle(&mut self, m: ToDataPlane) -> Result<(), SessionError> {
        match m {
            ToDataPlane::Snapshot(s) => {
                let version = s.version;
                if let Err(e) = self.apply(s) {
                    tracing::error!(version, "cannot apply snapshot: {e}");
                    self.current = false;
                    self.publish(None);
                }
            }
            ToDataPlane::Heartbeat(h) => {
                self.heartbeats += 1;
                if let Some(&(_, sent)) = self.sent.iter().find(|(seq, _)| *seq == h.seq) {
                    let ours = self.snapshot.as_ref().map_or(0, |s| s.version);
                    self.lease_until = Some(sent + Duration::from_millis(h.lease_millis));
                    self.current = h.version == ours;
                    let until = SystemTime::now()
                        + self
                            .lease_until
                            .and_then(|u| u.checked_duration_since(Instant::now()))
                            .unwrap_or_default();
                    self.shared
                        .lease_until_unix_ms
                        .store(unix_ms(until), Ordering::Relaxed);
                    self.save();
                }
            }
            ToDataPlane::Refused(why) => return Err(SessionError::Refused(why)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod standby_tests {
    use super::SessionError;

    #[test]
    fn only_a_standby_refusal_moves_on_at_once() {
        let refused = |why: &str| SessionError::Refused(why.into());
        assert!(refused("standby: the active keyway-ctld is 10.0.0.1:7800").standby());
        assert_eq!(
            refused("standby: x").to_string(),
            "keyway-ctld refused the session: standby: x"
        );
        assert!(!refused("authentication failed").standby());
        assert!(
            !SessionError::Closed.standby(),
            "only ctld's refusal counts"
        );
    }
}
