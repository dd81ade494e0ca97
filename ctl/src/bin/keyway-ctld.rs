//! `keyway-ctld`: the control daemon.
//!
//! Two runtimes, so that nothing the API does can delay a lease renewal:
//! control sessions (and the persister of acked versions) run on their own
//! thread and runtime; the API on the main one (the migration orchestrator
//! and its sweeps are threads). Both share the daemon ([`Ctld`]), whose
//! locks keep the sessions' path off the store (see `keyway_ctl::daemon`).
//! With `--store etcd:…` a third runtime, on its own thread, makes every
//! etcd call and runs the election (`keyway_ctl::etcd`); sessions and the
//! API follow this ctld's role (`keyway_ctl::leader`): active, or standby.
//!
//! What runs only on the active ctld is started and stopped in one place,
//! `keyway_ctl::leader::ActiveTasks`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use keyway_capnp::duration::{parse_duration, DurationError};
use keyway_ctl::auth::{Auth, Token};
use keyway_ctl::daemon::Ctld;
use keyway_ctl::etcd::election::Candidate;
use keyway_ctl::leader::{self, Addresses, Role};
use keyway_ctl::model::names::{check_lease, NameError};
use keyway_ctl::{api, control, store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// Keyway's control daemon: owns clusters' desired state, publishes numbered
/// snapshots to data planes, and serves the HTTP JSON API keywayctl uses.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Where state is kept: `file:PATH` (written atomically, checksummed;
    /// one ctld), or `etcd:http://HOST:PORT[,http://HOST:PORT…]` (several
    /// ctlds share one etcd; an election makes one of them active).
    #[arg(long, value_name = "STORE")]
    store: String,
    /// With an etcd store: the prefix of every key this ctld reads and
    /// writes (ctlds of one system share it).
    #[arg(long, default_value = keyway_ctl::etcd::DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// With an etcd store: the election lease's TTL (e.g. "5s"). A standby
    /// takes over within about this long after the active ctld dies; an
    /// active ctld that cannot renew it within this long stops granting
    /// leases and stands by. Also the longest an etcd call may take.
    #[arg(long, default_value = "5s", value_parser = parse_ttl)]
    election_ttl: Duration,
    /// HTTP JSON API address.
    #[arg(long, default_value = "127.0.0.1:7700")]
    api: SocketAddr,
    /// Address data planes dial for their control sessions.
    #[arg(long, default_value = "127.0.0.1:7800")]
    control: SocketAddr,
    /// Lease for clusters created without one (e.g. "30s", "500ms"), from 1s
    /// to 10m.
    #[arg(long, default_value = "30s", value_parser = parse_lease)]
    lease: Duration,
    /// A file holding the shared token (at most 4 KiB, trimmed): API clients
    /// send it as `Authorization: Bearer`, data planes in their Hello.
    /// Without it, ctld listens on loopback addresses only.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// The backend ACL user ctld's own Redis connections log in as (health
    /// checks, failover, migration): the data planes' `[backend]
    /// admin_username`. Needs --backend-password-file.
    #[arg(long, value_name = "USER", requires = "backend_password_file")]
    backend_username: Option<String>,
    /// A file holding the backend password (at most 4 KiB, trimmed); alone,
    /// it logs in as `default` (`requirepass`).
    #[arg(long, value_name = "PATH")]
    backend_password_file: Option<PathBuf>,
    /// Serve control sessions over TLS with this certificate (PEM, leaf
    /// first; with `--tls-key`).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require every data plane to present a certificate signed by this CA
    /// (PEM) on its control session: mutual TLS.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
}

/// Reads `--backend-password-file` and sets the backend login.
fn backend_login(args: &Args) -> anyhow::Result<()> {
    let Some(path) = &args.backend_password_file else {
        return Ok(());
    };
    let (password, warning) =
        Token::read_file(path).map_err(|e| anyhow::anyhow!("--backend-password-file: {e}"))?;
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    keyway_ctl::backend_login::set(keyway_ctl::backend_login::BackendLogin {
        username: args.backend_username.clone(),
        password,
    });
    Ok(())
}

/// A command-line value ctld refuses.
#[derive(Debug, thiserror::Error)]
enum ArgError {
    /// Not a duration.
    #[error(transparent)]
    Duration(#[from] DurationError),
    /// An election TTL out of bounds.
    #[error("the election TTL is whole seconds, from 2s to 60s")]
    Ttl,
    /// A lease out of bounds.
    #[error(transparent)]
    Lease(#[from] NameError),
}

fn parse_ttl(s: &str) -> Result<Duration, ArgError> {
    let d = parse_duration(s)?;
    if !(Duration::from_secs(2)..=Duration::from_secs(60)).contains(&d) || d.subsec_nanos() != 0 {
        return Err(ArgError::Ttl);
    }
    Ok(d)
}

fn parse_lease(s: &str) -> Result<Duration, ArgError> {
    let d = parse_duration(s)?;
    check_lease(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))?;
    Ok(d)
}

/// Who may connect: token holders, or — without a token — anyone, but then
/// only on loopback.
fn authentication(args: &Args) -> anyhow::Result<Auth> {
    if let Some(path) = &args.token_file {
        let (token, warning) = Token::read_file(path)?;
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        tracing::info!(
            "API requests and control sessions must carry the token of {} \
             (in clear text on the wire: TLS is not there yet)",
            path.display()
        );
        return Ok(Auth::Token(token));
    }
    for (addr, flag) in [(args.api, "--api"), (args.control, "--control")] {
        if !addr.ip().is_loopback() {
            anyhow::bail!(
                "refusing to listen on {addr} ({flag}) without authentication: anyone who \
                 can reach it could change every cluster and pose as a data plane. Give \
                 --token-file PATH (a file holding a shared secret; data planes then use \
                 keyway --control-token-file, keywayctl --token-file or KEYWAY_TOKEN), or \
                 listen on a loopback address"
            );
        }
    }
    tracing::info!(
        "no --token-file: the API and control sessions are not authenticated, \
         so ctld listens on loopback only"
    );
    Ok(Auth::LoopbackOnly)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("KEYWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let auth = match authentication(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("keyway-ctld: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = backend_login(&args) {
        eprintln!("keyway-ctld: {e}");
        return ExitCode::from(2);
    }
    let store = match keyway_ctl::etcd::endpoints(&args.store) {
        Some(Ok(endpoints)) => {
            match keyway_ctl::etcd::Etcd::connect(&endpoints, &args.etcd_prefix, args.election_ttl)
            {
                Ok(etcd) => Backing::Etcd(Box::new(etcd)),
                Err(e) => {
                    eprintln!("keyway-ctld: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        Some(Err(e)) => {
            eprintln!("keyway-ctld: {e}");
            return ExitCode::from(2);
        }
        None => match store::open(&args.store) {
            Ok((store, state)) => Backing::File(store, state),
            Err(e) => {
                eprintln!("keyway-ctld: {e}");
                return ExitCode::from(2);
            }
        },
    };
    match run(args, auth, store) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyway-ctld: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Where the state is.
enum Backing {
    /// One file, one ctld, always active.
    File(Box<dyn store::Store>, keyway_ctl::model::State),
    /// etcd, shared by several ctlds; loaded per term.
    Etcd(Box<keyway_ctl::etcd::Etcd>),
}

fn run(args: Args, auth: Auth, backing: Backing) -> anyhow::Result<()> {
    let api_listener = bind(args.api, "api")?;
    let control_listener = bind(args.control, "control")?;
    let api_addr = api_listener.local_addr()?;
    let control_addr = control_listener.local_addr()?;
    let me = Addresses {
        api: api_addr.to_string(),
        control: control_addr.to_string(),
    };
    let roles = Arc::new(watch::channel(Role::Standby(None)).0);

    // Control sessions: their own thread and runtime.
    let control_rt = runtime()?;
    let sessions = control_rt.handle().clone();
    let control_listener = {
        let _in = control_rt.enter();
        TcpListener::from_std(control_listener)?
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ListenerTls::load(
            cert.clone(),
            key.clone(),
            args.tls_ca.clone(),
        )?),
        _ => None,
    };
    let control_tls = tls.as_ref().map(|t| t.control.clone());
    let api_tls = tls.as_ref().map(|t| t.api.clone());
    let (r, a) = (roles.subscribe(), Arc::new(auth.clone()));
    std::thread::Builder::new()
        .name("keyway-control".into())
        .spawn(move || {
            control_rt.block_on(control::serve(control_listener, r, a, control_tls));
        })?;

    let app = api::leader::router(roles.subscribe(), auth.clone(), me.clone());
    let main_rt = runtime()?;
    main_rt.block_on(async move {
        if let Some(tls) = tls {
            tls.reload_on_sighup()?;
        }
        let api_listener = TcpListener::from_std(api_listener)?;
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| anyhow::anyhow!("cannot handle SIGTERM: {e}"))?;
        match backing {
            Backing::File(store, state) => {
                let described = store.describe();
                let clusters = state.clusters.len();
                let ctld = Arc::new(Ctld::new(state, store, args.lease));
                let routes = api::router(api::Api::new(ctld.clone(), auth));
                let tasks = leader::activate(ctld.clone(), routes, &roles, &sessions)
                    .map_err(|e| anyhow::anyhow!("cannot start the migration orchestrator: {e}"))?;
                tracing::info!(store = %described, clusters, "keyway-ctld serving api on {api_addr}, control on {control_addr}");
                println!("keyway-ctld api {api_addr} control {control_addr}");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                api::serve_tls(api_listener, app, api::Limits::default(), api_tls.clone(), shutdown(term)).await;
                // Sweeps record where they are before the process ends, and
                // acked versions not saved yet are.
                let _ = tokio::task::spawn_blocking(move || tasks.stop()).await;
            }
            Backing::Etcd(etcd) => {
                let described = format!("etcd prefix {}", etcd.prefix);
                let candidate = Arc::new(Candidate {
                    etcd: (*etcd).clone(),
                    me,
                    ttl: args.election_ttl,
                    roles: roles.clone(),
                    sessions,
                    auth,
                    default_lease: args.lease,
                });
                let (stop_tx, stop_rx) = watch::channel(false);
                let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                etcd.runtime().spawn(async move {
                    candidate.run(stop_rx).await;
                    let _ = done_tx.send(());
                });
                tracing::info!(store = %described, ttl = ?args.election_ttl, "keyway-ctld standing by on api {api_addr}, control {control_addr}; campaigning");
                println!("keyway-ctld api {api_addr} control {control_addr}");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                api::serve_tls(api_listener, app, api::Limits::default(), api_tls.clone(), shutdown(term)).await;
                stop_tx.send_replace(true);
                let _ = tokio::time::timeout(Duration::from_secs(30), done_rx).await;
            }
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// The TLS of the control listener (`--tls-ca`: data planes must present
/// a certificate) and of the API, from `--tls-cert/--tls-key/--tls-ca`,
/// read again on `SIGHUP` for new connections.
struct ListenerTls {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
    control: keyway_ctl::tls::ServerTls,
    api: keyway_ctl::tls::ServerTls,
}

impl ListenerTls {
    fn load(cert: PathBuf, key: PathBuf, ca: Option<PathBuf>) -> anyhow::Result<ListenerTls> {
        let (control, api) =
            Self::configs(&cert, &key, ca.as_deref()).map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
        Ok(ListenerTls {
            control: keyway_ctl::tls::ServerTls::new(control),
            api: keyway_ctl::tls::ServerTls::new(api),
            cert,
            key,
            ca,
        })
    }

    /// The control listener's configuration and the API's.
    fn configs(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: Option<&std::path::Path>,
    ) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>), keyway_ctl::tls::TlsError>
    {
        Ok((
            keyway_ctl::tls::server_config(cert, key, ca)?,
            keyway_ctl::tls::server_config(cert, key, None)?,
        ))
    }

    /// On each `SIGHUP`, reads the files again: new connections (control
    /// and API) get the new certificate, key and CA; established ones keep
    /// theirs. Files that do not load keep the current ones (logged).
    fn reload_on_sighup(self) -> anyhow::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())
            .map_err(|e| anyhow::anyhow!("cannot handle SIGHUP: {e}"))?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let (cert, key, ca) = (self.cert.clone(), self.key.clone(), self.ca.clone());
                let loaded =
                    tokio::task::spawn_blocking(move || Self::configs(&cert, &key, ca.as_deref()))
                        .await;
                match loaded {
                    Ok(Ok((control, api))) => {
                        self.control.replace(control);
                        self.api.replace(api);
                        tracing::info!(
                            "SIGHUP: TLS certificates reloaded: new connections use them"
                        );
                    }
                    Ok(Err(e)) => tracing::error!(
                        "SIGHUP: TLS reload rejected, keeping the current certificates: {e}"
                    ),
                    Err(e) => tracing::error!("SIGHUP: TLS reload failed: {e}"),
                }
            }
        });
        Ok(())
    }
}

async fn shutdown(mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
