//! `keyway`: the data plane binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use keyway::config::Config;
use tracing_subscriber::EnvFilter;

/// A thread-per-core Redis proxy that routes every command to the group owning
/// its key's hash slot.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Config file (TOML); `SIGHUP` re-reads it.
    #[arg(long, short = 'c', value_name = "PATH")]
    config: PathBuf,
    /// Validate the config, print the slot map, and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("KEYWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = match Config::load(&args.config, 1) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keyway: {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    if args.check {
        let t = &config.live.table;
        println!(
            "{}: ok, {} slots, {} groups",
            args.config.display(),
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
        return ExitCode::SUCCESS;
    }
    match keyway::runtime::run(config, args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyway: {e:#}");
            ExitCode::FAILURE
        }
    }
}
