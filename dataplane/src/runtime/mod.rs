//! The process: one pinned thread per configured CPU, each serving its own
//! SO_REUSEPORT listener with one of two transports — glommio's executor
//! ([`glommio_driver`]) or keyway's own io_uring loop ([`uring_driver`]) —
//! and the main thread handling signals —
//! `SIGHUP` reloads the config file and swaps the routing snapshot, `SIGTERM`
//! and `SIGINT` drain and stop.

mod cert_watch;
mod glommio_driver;
pub mod listener;
mod uring_driver;
mod wake;

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::io::{IntoRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::admin;
use crate::config::{ClientTls, Config, FileConfig, LiveConfig, Mode, Overrides, Transport};
use crate::control::{self, ControlOptions};

use crate::engine::Shared;

/// How long to wait for a previous process to release the listen port.
const PORT_WAIT: Duration = Duration::from_secs(10);
/// How often each worker's timers run.
const TICK: Duration = Duration::from_millis(100);

/// One of a core's listening sockets.
pub(crate) struct CoreListener {
    pub fd: RawFd,
    /// Whether its clients speak TLS.
    pub tls: bool,
}

/// The server TLS configuration new TLS clients get, swapped on reload.
pub(crate) type TlsSource = Arc<ArcSwap<rustls::ServerConfig>>;

/// What a core needs from the process.
pub(crate) struct CoreSetup {
    pub index: usize,
    /// The plain and/or TLS listeners (at least one).
    pub listeners: Vec<CoreListener>,
    /// Present when a listener speaks TLS.
    pub tls: Option<TlsSource>,
    /// How long a TLS client's handshake may take (`tls.handshake_timeout`).
    pub handshake_timeout: Duration,
    pub source: Arc<ArcSwap<LiveConfig>>,
    pub shared: Arc<Shared>,
    pub stop: Arc<AtomicBool>,
}

/// A short reason for a socket error, as it appears in
/// `-ERR backend … unavailable: <reason>`.
pub(crate) fn describe(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        ConnectionAborted => "connection aborted".into(),
        BrokenPipe => "connection closed".into(),
        TimedOut => "timed out".into(),
        NotConnected => "not connected".into(),
        AddrNotAvailable => "address not available".into(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(p) => s[..p].to_string(),
                None => s,
            }
        }
    }
}

/// Where routing comes from.
#[derive(Debug)]
pub enum Routing {
    /// The config file's groups, re-read on `SIGHUP` (command-line overrides
    /// applied again).
    File {
        /// The config file.
        path: PathBuf,
        /// Values the command line set over the file's.
        overrides: Overrides,
    },
    /// keyway-ctld's snapshots.
    Control(ControlOptions),
}

/// The admin endpoint's address as others reach it: the bound one, with
/// the client listener's IP when bound to every interface (`0.0.0.0`).
fn admin_address(admin: SocketAddr, clients: SocketAddr) -> SocketAddr {
    if admin.ip().is_unspecified() && !clients.ip().is_unspecified() {
        SocketAddr::new(clients.ip(), admin.port())
    } else {
        admin
    }
}

/// Runs keyway with `config` until a stop signal, then drains and returns.
pub fn run(config: Config, routing: Routing) -> anyhow::Result<()> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    listener::wait_until_free(config.listen, PORT_WAIT)
        .context("waiting for the listen address")?;
    let sockets = listener::bind_group(config.listen, &config.cpus, config.backlog, config.steer)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = sockets[0]
        .local_addr()?
        .as_socket()
        .context("listener has no IP address")?;
    // TLS: on a port of its own beside `listen`, or on `listen` itself.
    let tls_source: Option<TlsSource> = config
        .tls
        .as_ref()
        .map(|t| Arc::new(ArcSwap::new(t.server.config().clone())));
    let main_tls = matches!(&config.tls, Some(t) if t.listen.is_none());
    let mut tls_sockets = Vec::new();
    let mut tls_local = main_tls.then_some(local);
    if let Some(addr) = config.tls.as_ref().and_then(|t| t.listen) {
        listener::wait_until_free(addr, PORT_WAIT).context("waiting for the TLS listen address")?;
        tls_sockets = listener::bind_group(addr, &config.cpus, config.backlog, config.steer)
            .with_context(|| format!("cannot listen on {addr} (tls.listen)"))?;
        tls_local = Some(
            tls_sockets[0]
                .local_addr()?
                .as_socket()
                .context("TLS listener has no IP address")?,
        );
    }
    let mut tls_sockets = tls_sockets.into_iter();
    let shared = Arc::new(Shared::new(config.cpus.len()));
    shared.listen_port.store(local.port(), Ordering::Relaxed);
    let source = Arc::new(ArcSwap::new(config.live.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicUsize::new(config.cpus.len()));

    let mut handles = Vec::new();
    for (index, (&cpu, socket)) in config.cpus.iter().zip(sockets).enumerate() {
        let mut listeners = vec![CoreListener {
            fd: socket.into_raw_fd(),
            tls: main_tls,
        }];
        if let Some(s) = tls_sockets.next() {
            listeners.push(CoreListener {
                fd: s.into_raw_fd(),
                tls: true,
            });
        }
        let setup = CoreSetup {
            index,
            listeners,
            tls: tls_source.clone(),
            handshake_timeout: config
                .tls
                .as_ref()
                .map_or(Duration::from_secs(10), |t| t.handshake_timeout),
            source: source.clone(),
            shared: shared.clone(),
            stop: stop.clone(),
        };
        let running = running.clone();
        let transport = config.transport;
        let handle = std::thread::Builder::new()
            .name(format!("keyway-core{index}"))
            .spawn(move || {
                // Counts the core out however it ends, panics included.
                let _running = Running(running);
                let result = match transport {
                    Transport::Glommio => glommio_driver::run(cpu, setup),
                    Transport::Uring => uring_driver::run(cpu, setup),
                };
                if let Err(e) = result {
                    tracing::error!(core = index, cpu, "core stopped: {e:#}");
                }
            })
            .context("cannot start a core thread")?;
        handles.push(handle);
    }
    tracing::info!(
        cores = config.cpus.len(),
        cpus = ?config.cpus,
        version = config.live.table.version,
        groups = config.live.table.groups().len(),
        "keyway listening on {local}"
    );
    let admin = match config.admin {
        Some(a) => Some(
            admin::start(
                a,
                source.clone(),
                shared.clone(),
                tls_source
                    .clone()
                    .filter(|_| config.tls.as_ref().is_some_and(|t| t.admin)),
            )
            .with_context(|| format!("cannot serve admin HTTP on {a}"))?,
        ),
        None => None,
    };
    if let Routing::Control(opts) = &routing {
        let mut opts = opts.clone();
        if opts.address.is_empty() {
            opts.address = local.to_string();
        }
        if let Some(a) = admin {
            opts.admin = admin_address(a, local).to_string();
            opts.admin_tls = config.tls.as_ref().is_some_and(|t| t.admin);
        }
        control::start(opts, source.clone(), shared.clone(), stop.clone())
            .context("cannot start the control session")?;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "keyway listening on {local}");
    if let Some(t) = tls_local {
        tracing::info!("TLS clients on {t}");
        let _ = writeln!(out, "keyway TLS listening on {t}");
    }
    if let Some(a) = admin {
        tracing::info!("admin HTTP on {a} (/healthz, /table)");
        let _ = writeln!(out, "keyway admin on {a}");
    }
    let _ = out.flush();
    drop(out);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let mut signals =
        Signals::new([SIGHUP, SIGTERM, SIGINT]).context("installing signal handlers")?;
    // A managed keyway's certificates are also re-read with a snapshot when
    // their files changed (see `cert_watch`).
    let mut cert_watch = match (&routing, &tls_source) {
        (Routing::Control(opts), Some(_)) => opts
            .config
            .as_deref()
            .map(|p| cert_watch::CertWatch::new(p, source.load().table.version)),
        _ => None,
    };
    'serve: loop {
        for sig in signals.pending() {
            match sig {
                SIGHUP => match &routing {
                    Routing::File { path, overrides } => {
                        reload(path, overrides, &source, &config, tls_source.as_ref());
                        shared.wake_cores();
                    }
                    Routing::Control(opts) => {
                        reload_credentials(opts, overrides_of(&config));
                        let before = cert_watch.as_ref().map(|w| w.stamp_now());
                        if let Some(path) = &opts.config {
                            reload_managed_tls(path, &config, tls_source.as_ref());
                        }
                        if let (Some(w), Some(before)) = (cert_watch.as_mut(), before) {
                            w.loaded(before);
                        }
                    }
                },
                _ => {
                    tracing::info!("stopping: finishing requests in flight");
                    break 'serve;
                }
            }
        }
        if let (Some(w), Routing::Control(opts)) = (cert_watch.as_mut(), &routing) {
            if let (true, Some(path)) = (w.due(source.load().table.version), &opts.config) {
                tracing::info!(
                    "a snapshot arrived and the [tls] files changed: reading them again"
                );
                let before = w.stamp_now();
                reload_managed_tls(path, &config, tls_source.as_ref());
                w.loaded(before);
            }
        }
        if running.load(Ordering::SeqCst) < config.cpus.len() {
            anyhow::bail!("a core stopped unexpectedly");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = h.join();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Publishes a reloaded TLS certificate for new connections (established
/// ones keep theirs); turning TLS on or off, or moving its port, needs a
/// restart.
fn reload_tls(new: Option<&ClientTls>, started: &Config, source: Option<&TlsSource>) {
    let (before, after) = (
        started.tls.as_ref().map(|t| t.listen),
        new.map(|t| t.listen),
    );
    if before != after {
        tracing::warn!(
            "[tls] turned on or off, or tls.listen changed: takes effect on restart only"
        );
    }
    if let (Some(new), Some(source)) = (new, source) {
        source.store(new.server.config().clone());
        tracing::info!("TLS certificate reloaded: new connections use it");
    }
}

/// A managed keyway's SIGHUP: routing comes from keyway-ctld, but the
/// settings file's `[tls]` certificates are read again (the rest of the
/// file takes a restart).
fn reload_managed_tls(path: &Path, started: &Config, tls: Option<&TlsSource>) {
    let loaded = FileConfig::read(path).and_then(|mut f| {
        f.listen = Some(started.listen.to_string());
        f.validate(0, Mode::Managed)
    });
    match loaded {
        Ok(new) => reload_tls(new.tls.as_ref(), started, tls),
        Err(e) => tracing::error!("TLS reload rejected, keeping the current certificates: {e}"),
    }
}

/// Decrements the count of running cores when a core ends.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The command-line values a managed keyway's settings file is read with:
/// those that were in effect at start.
fn overrides_of(config: &Config) -> Overrides {
    Overrides {
        listen: Some(config.listen.to_string()),
        admin: config.admin.map(|a| a.to_string()),
        cores: Some(config.cpus.len()),
        zone: config.live.zone.as_deref().map(str::to_string),
    }
}

/// A managed keyway's `SIGHUP`: routing comes from keyway-ctld, but the
/// backend credentials and backend TLS files of the settings file are read
/// again and handed to the control thread, which publishes them (see
/// `ControlOptions::reload`); a file that does not validate is logged and
/// ignored.
fn reload_credentials(opts: &control::ControlOptions, overrides: Overrides) {
    let Some(path) = &opts.config else {
        tracing::info!("SIGHUP ignored: routing comes from keyway-ctld, and there is no --config");
        return;
    };
    let loaded = FileConfig::read(path).and_then(|mut f| {
        overrides.apply(&mut f);
        f.validate(0, Mode::Managed)
    });
    match loaded {
        Ok(new) => {
            for w in &new.warnings {
                tracing::warn!("{w}");
            }
            if let Ok(mut pending) = opts.reload.lock() {
                *pending = Some(control::Reload {
                    logins: new.live.logins.clone(),
                    backend: new.live.backend.clone(),
                });
            }
            tracing::info!(
                "SIGHUP: backend credentials and TLS files read again (other settings need a restart)"
            );
        }
        Err(e) => tracing::error!("reload rejected, keeping the current credentials: {e}"),
    }
}

/// Re-reads the config file and publishes its routing and limits; a config
/// that does not validate is logged and ignored.
fn reload(
    path: &Path,
    overrides: &Overrides,
    source: &ArcSwap<LiveConfig>,
    started: &Config,
    tls: Option<&TlsSource>,
) {
    let current = source.load();
    let next = current.table.version + 1;
    let loaded = FileConfig::read(path).and_then(|mut f| {
        overrides.apply(&mut f);
        f.validate(next, Mode::Standalone)
    });
    match loaded {
        Ok(new) => {
            if new.listen != started.listen
                || new.cpus != started.cpus
                || new.steer != started.steer
                || new.backlog != started.backlog
            {
                tracing::warn!(
                    "listen, cores, steer and backlog changes take effect on restart only"
                );
            }
            for w in &new.warnings {
                tracing::warn!("{w}");
            }
            reload_tls(new.tls.as_ref(), started, tls);
            let groups = new.live.table.groups().len();
            source.store(new.live);
            tracing::info!(version = next, groups, "configuration reloaded");
        }
        Err(e) => tracing::error!(
            version = current.table.version,
            "reload rejected, keeping the current configuration: {e}"
        ),
    }
}
