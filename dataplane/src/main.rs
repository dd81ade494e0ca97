//! `keyway`: the data plane binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use keyway::config::{FileConfig, Mode, Overrides};
use keyway::control::state::StateDir;
use keyway::control::ControlOptions;
use keyway::runtime::Routing;
use tracing_subscriber::EnvFilter;

/// A thread-per-core Redis proxy that routes every command to the group owning
/// its key's hash slot. Standalone: `keyway --config keyway.toml`. Managed by
/// keyway-ctld: `keyway --control ADDR --cluster NAME --listen ADDR …`.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Config file (TOML). Standalone: groups and settings, re-read on
    /// `SIGHUP`. Managed: settings only (limits, backend, transport…), of
    /// which `SIGHUP` re-reads the backend credentials and TLS files.
    #[arg(long, short = 'c', value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the config, print the slot map, and exit (standalone).
    #[arg(long)]
    check: bool,
    /// Print the ACL rules of the restricted backend user keyway's client
    /// traffic runs as (`ACL SETUSER NAME <rules> >PASSWORD`), and exit.
    #[arg(long)]
    backend_acl: bool,
    /// Create or reset the restricted backend user (`[backend] username`,
    /// its password) on every server of every group, as the admin login,
    /// report per server, and exit (standalone).
    #[arg(long)]
    provision_backend_users: bool,
    /// keyway-ctld's control address: routing comes from its snapshots.
    /// Several ctlds on etcd: their addresses separated by commas; the
    /// data plane finds the active one by trying each.
    #[arg(
        long,
        env = "KEYWAY_CONTROL",
        value_name = "HOST:PORT[,HOST:PORT…]",
        requires = "cluster"
    )]
    control: Option<String>,
    /// The cluster to serve (with --control).
    #[arg(long, requires = "control")]
    cluster: Option<String>,
    /// Client listen address (overrides the file's `listen`).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Admin HTTP address for /healthz and /table (overrides the file's `admin`).
    #[arg(long, value_name = "HOST:PORT")]
    admin: Option<String>,
    /// Where a managed keyway keeps its id, last snapshot and lease.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Cores (the first N CPUs; overrides the file's `cores`).
    #[arg(long)]
    cores: Option<usize>,
    /// This data plane's zone or rack (overrides the file's `zone`): groups
    /// with `read_from = "local-zone"` read from replicas in this zone.
    #[arg(long, value_name = "ZONE")]
    zone: Option<String>,
    /// This data plane's id for keyway-ctld (default: the one in --state-dir,
    /// else HOSTNAME-PORT).
    #[arg(long)]
    id: Option<String>,
    /// A file holding the token keyway-ctld was started with
    /// (`keyway-ctld --token-file`), sent when the control session opens.
    #[arg(long, value_name = "PATH", requires = "control")]
    control_token_file: Option<PathBuf>,
    /// Speak TLS to keyway-ctld, verifying its certificate against this CA
    /// file (PEM); ctld started with `--tls-ca` also requires this data
    /// plane's own certificate (`--control-tls-cert`, `--control-tls-key`).
    #[arg(long, value_name = "PATH", requires = "control")]
    control_tls_ca: Option<PathBuf>,
    /// This data plane's certificate for the control session (PEM).
    #[arg(long, value_name = "PATH", requires_all = ["control_tls_ca", "control_tls_key"])]
    control_tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "PATH", requires = "control_tls_cert")]
    control_tls_key: Option<PathBuf>,
}

/// Reads a token file: at most 4 KiB, trimmed, not empty. Errors never
/// quote its content.
fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(4097).read_to_end(&mut bytes))
        .map_err(|e| anyhow::anyhow!("token file {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).unwrap_or_default();
    let token = text.trim();
    if token.is_empty() || token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!(
            "token file {}: it must hold one token of 1 to 4096 printable ASCII characters",
            path.display()
        );
    }
    Ok(token.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("KEYWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyway: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "keyway".into(), |h| h.trim().to_string())
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.backend_acl {
        println!("{}", keyway::engine::backend_acl::client_user_setuser());
        return Ok(ExitCode::SUCCESS);
    }
    let overrides = Overrides {
        listen: args.listen.clone(),
        admin: args.admin.clone(),
        cores: args.cores,
        zone: args.zone.clone(),
    };
    let mut file = match &args.config {
        Some(p) => FileConfig::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        None if args.control.is_some() => FileConfig::default(),
        None => anyhow::bail!("give --config FILE (standalone) or --control ADDR --cluster NAME (managed by keyway-ctld)"),
    };
    overrides.apply(&mut file);
    let Some(ctld) = args.control.clone() else {
        let path = args.config.clone().expect("checked above");
        let config = file
            .validate(1, Mode::Standalone)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if args.check {
            print_check(&path, &config);
            return Ok(ExitCode::SUCCESS);
        }
        if args.provision_backend_users {
            let timeout = config.live.backend.connect_timeout.duration().max(
                config
                    .live
                    .backend
                    .timeout
                    .enabled()
                    .unwrap_or(std::time::Duration::from_secs(5)),
            );
            let report = keyway::provision::provision(&config.live, timeout);
            for line in &report.lines {
                println!("{line}");
            }
            return Ok(match report.failed {
                0 => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            });
        }
        keyway::runtime::run(config, Routing::File { path, overrides })?;
        return Ok(ExitCode::SUCCESS);
    };
    let config = file.validate(0, Mode::Managed)?;
    let fallback_id = format!("{}-{}", hostname(), config.listen.port());
    let id = match (&args.id, &args.state_dir) {
        (Some(id), Some(dir)) => {
            StateDir::open(dir)?.id(id)?;
            id.clone()
        }
        (Some(id), None) => id.clone(),
        (None, Some(dir)) => StateDir::open(dir)?.id(&fallback_id)?,
        (None, None) => fallback_id,
    };
    let opts = ControlOptions {
        ctld,
        cluster: args
            .cluster
            .clone()
            .expect("clap requires --cluster with --control"),
        id,
        address: String::new(),
        admin: String::new(),
        admin_tls: false,
        state_dir: args.state_dir.clone(),
        token: args
            .control_token_file
            .as_deref()
            .map(read_token)
            .transpose()?,
        tls: match &args.control_tls_ca {
            Some(ca) => {
                let client = args
                    .control_tls_cert
                    .as_deref()
                    .zip(args.control_tls_key.as_deref());
                Some(
                    keyway::tls::BackendTls::load(Some(ca), client, None)
                        .map_err(|e| anyhow::anyhow!("control TLS: {e}"))?,
                )
            }
            None => None,
        },
        config: args.config.clone(),
        reload: Default::default(),
    };
    keyway::runtime::run(config, Routing::Control(opts))?;
    Ok(ExitCode::SUCCESS)
}

fn print_check(path: &std::path::Path, config: &keyway::config::Config) {
    let t = &config.live.table;
    println!(
        "{}: ok, {} slots, {} groups",
        path.display(),
        t.slot_count(),
        t.groups().len()
    );
    for (owner, first, last) in t.ranges() {
        let who = owner.map_or("(unassigned)".to_string(), |g| {
            let g = t.group(g);
            format!("{} {}", g.name, g.master_text)
        });
        println!("  {first}-{last} {who}");
    }
    for w in &config.warnings {
        println!("warning: {w}");
    }
}
