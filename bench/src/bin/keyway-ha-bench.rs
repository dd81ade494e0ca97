//! `keyway-ha-bench`: how long a group's writes stop when keyway-ctld fails
//! its killed master over, for each `down_after`, and how long a switchover
//! pauses them (results in bench/RESULTS.md).

use std::path::PathBuf;

use clap::Parser;
use keyway_bench::ha::{markdown, run, save, Options};

/// Failover benchmark: kill -9 of a master to the first write answered by
/// its replica, and switchover pauses.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Kills per `down_after`.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// `down_after` values to measure, milliseconds, comma-separated.
    #[arg(long, default_value = "5000,1000", value_delimiter = ',')]
    down_after_ms: Vec<u64>,
    /// How often ctld checks each server, milliseconds.
    #[arg(long, default_value_t = 1000)]
    check_interval_ms: u64,
    /// Switchovers to measure.
    #[arg(long, default_value_t = 10)]
    switchovers: usize,
    /// Where keyway, keyway-ctld and keywayctl are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Directory for `<date>-<commit>-failover.json`.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Markdown file whose failover section is replaced ("-" to skip).
    #[arg(long, default_value = "bench/RESULTS.md")]
    results_md: String,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let o = Options {
        kills: a.kills,
        down_after_ms: a.down_after_ms,
        check_interval_ms: a.check_interval_ms,
        switchovers: a.switchovers,
        bin_dir: a.bin_dir,
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let r = run(&o, command)?;
    print!("{}", markdown(&r));
    save(&r, &a.out, &a.results_md)
}
