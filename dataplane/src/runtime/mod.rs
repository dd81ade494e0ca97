//! The process: one pinned glommio executor per configured CPU, each serving
//! its own SO_REUSEPORT listener, and the main thread handling signals —
//! `SIGHUP` reloads the config file and swaps the routing snapshot, `SIGTERM`
//! and `SIGINT` drain and stop.

mod core;
mod io;
pub mod listener;

use std::io::Write as _;
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use glommio::{LocalExecutorBuilder, Placement};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use self::core::{serve, CoreSetup};
use crate::config::{Config, LiveConfig};
use crate::engine::Shared;

/// How long to wait for a previous process to release the listen port.
const PORT_WAIT: Duration = Duration::from_secs(10);

/// Runs keyway with `config` (read from `path`, re-read on `SIGHUP`) until a
/// stop signal, then drains and returns.
pub fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
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
    let shared = Arc::new(Shared::new(config.cpus.len()));
    shared.listen_port.store(local.port(), Ordering::Relaxed);
    let source = Arc::new(ArcSwap::new(config.live.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicUsize::new(config.cpus.len()));

    let mut handles = Vec::new();
    for (index, (&cpu, socket)) in config.cpus.iter().zip(sockets).enumerate() {
        let setup = CoreSetup {
            index,
            listener_fd: socket.into_raw_fd(),
            source: source.clone(),
            shared: shared.clone(),
            stop: stop.clone(),
        };
        let running = running.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("keyway-core{index}"))
            .io_memory(64 << 10)
            .spawn(move || async move {
                // Counts the core out however it ends, panics included.
                let _running = Running(running);
                serve(setup).await;
            })
            .map_err(|e| anyhow::anyhow!("cannot start the executor for CPU {cpu}: {e}"))?;
        handles.push(handle);
    }
    tracing::info!(
        cores = config.cpus.len(),
        cpus = ?config.cpus,
        version = config.live.table.version,
        groups = config.live.table.groups().len(),
        "keyway listening on {local}"
    );
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "keyway listening on {local}");
    let _ = out.flush();
    drop(out);

    let mut signals =
        Signals::new([SIGHUP, SIGTERM, SIGINT]).context("installing signal handlers")?;
    'serve: loop {
        for sig in signals.pending() {
            match sig {
                SIGHUP => reload(&path, &source, &config),
                _ => {
                    tracing::info!("stopping: finishing requests in flight");
                    break 'serve;
                }
            }
        }
        if running.load(Ordering::SeqCst) < config.cpus.len() {
            anyhow::bail!("a core stopped unexpectedly");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = h.join();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Decrements the count of running cores when a core ends.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Re-reads the config file and publishes its routing and limits; a config
/// that does not validate is logged and ignored.
fn reload(path: &Path, source: &ArcSwap<LiveConfig>, started: &Config) {
    let current = source.load();
    let next = current.table.version + 1;
    match Config::load(path, next) {
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
