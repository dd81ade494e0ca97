//! `keyway-ctld`: the control daemon.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use keyway_ctl::cli::parse_duration;
use keyway_ctl::daemon::Ctld;
use keyway_ctl::{api, control, migrate, store};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Keyway's control daemon: owns clusters' desired state, publishes numbered
/// snapshots to data planes, and serves the HTTP JSON API keywayctl uses.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Where state is kept: `file:PATH` (written atomically, checksummed).
    #[arg(long, value_name = "STORE")]
    store: String,
    /// HTTP JSON API address.
    #[arg(long, default_value = "127.0.0.1:7700")]
    api: SocketAddr,
    /// Address data planes dial for their control sessions.
    #[arg(long, default_value = "127.0.0.1:7800")]
    control: SocketAddr,
    /// Lease for clusters created without one (e.g. "30s", "500ms").
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    lease: Duration,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("KEYWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (store, state) = match store::open(&args.store) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keyway-ctld: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyway-ctld: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args, store, state)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyway-ctld: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    args: Args,
    store: Box<dyn store::Store>,
    state: keyway_ctl::model::State,
) -> anyhow::Result<()> {
    let described = store.describe();
    let clusters = state.clusters.len();
    let ctld = Arc::new(Ctld::new(state, store, args.lease));
    let api_listener = TcpListener::bind(args.api)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (api): {e}", args.api))?;
    let control_listener = TcpListener::bind(args.control)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (control): {e}", args.control))?;
    let api_addr = api_listener.local_addr()?;
    let control_addr = control_listener.local_addr()?;
    tokio::spawn(control::serve(control_listener, ctld.clone()));
    let app = api::router(ctld.clone());
    tracing::info!(store = %described, clusters, "keyway-ctld serving api on {api_addr}, control on {control_addr}");
    println!("keyway-ctld api {api_addr} control {control_addr}");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let orchestrator = migrate::start(ctld.clone(), stop.clone())
        .map_err(|e| anyhow::anyhow!("cannot start the migration orchestrator: {e}"))?;
    axum::serve(api_listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    // Sweeps record where they are before the process ends.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || orchestrator.join()).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
