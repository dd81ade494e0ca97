//! `keyway-takeover-bench`: how long keyway-ctld's leadership takes to move
//! when the active ctld is killed (results in bench/RESULTS.md).

use std::path::PathBuf;

use clap::Parser;
use keyway_bench::takeover::{markdown, run, save, Options};

/// Leader takeover: `kill -9` the active keyway-ctld of three on one etcd,
/// and time until a standby is active, the data plane is in session with
/// it, and an API write succeeds.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Kills per election TTL.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Election TTLs to measure, seconds, comma-separated.
    #[arg(long, default_value = "5,2", value_delimiter = ',')]
    ttls: Vec<u64>,
    /// Where keyway, keyway-ctld and keywayctl are (default: next to this
    /// binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// The RESULTS.md whose takeover section is replaced ("-": none).
    #[arg(long, default_value = "bench/RESULTS.md")]
    results_md: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match args.bin_dir {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    };
    let o = Options {
        runs: args.runs,
        ttls: args.ttls,
        bin_dir,
    };
    let command: Vec<String> = std::env::args().collect();
    let report = run(&o, command.join(" "))?;
    print!("{}", markdown(&report));
    save(&report, &args.out, &args.results_md)
}
