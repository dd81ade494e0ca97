//! `keyway-migrate-bench`: moves a key space between two Redis groups through
//! keyway-ctld while a client load runs through keyway, and reports keys per
//! second and client latency during the move against before it.

use std::path::PathBuf;

use clap::Parser;
use keyway_bench::migrate::{markdown, run, save, Options};

/// Online-migration benchmark: keys per second, and client latency during the
/// move against before it (results in bench/RESULTS.md).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Keys to move.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Client load in requests per second (open loop).
    #[arg(long, default_value_t = 10_000.0)]
    client_rate: f64,
    /// The client load's keys: the first this many of the keys (0: all),
    /// for a load on a hot set while every key moves.
    #[arg(long, default_value_t = 0)]
    client_keys: u64,
    /// Client connections (each with one request at a time: enough that a
    /// few milliseconds more per request during a move do not cap the
    /// offered rate).
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Seconds of client load measured before each move.
    #[arg(long, default_value_t = 10.0)]
    baseline_seconds: f64,
    /// Moves per sweep rate limit (they alternate direction).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Keys per MIGRATE of the sweep.
    #[arg(long, default_value_t = 100)]
    batch: u32,
    /// The sweep's rate limits to measure, keys per second, comma-separated
    /// (0: none).
    #[arg(long, default_value = "0,20000", value_delimiter = ',')]
    sweep_rates: Vec<u64>,
    /// MIGRATE calls the sweep keeps in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Fields of the big key moved in the second phase (0: skip it).
    #[arg(long, default_value_t = 1_000_000)]
    big_fields: u64,
    /// Seconds of client load measured first with a move of every slot
    /// under way and its sweep paused: every command moves its own key (the
    /// move's floor, whatever the sweep's pace). 0 skips it.
    #[arg(long, default_value_t = 10.0)]
    paused_seconds: f64,
    /// Where keyway, keyway-ctld and keywayctl are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Directory for `<date>-<commit>-migrate.json`.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Markdown file whose migration section is replaced ("-" to skip).
    #[arg(long, default_value = "bench/RESULTS.md")]
    results_md: String,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let o = Options {
        keys: a.keys,
        value_size: a.value_size,
        client_rate: a.client_rate,
        client_keys: a.client_keys,
        connections: a.connections,
        baseline_seconds: a.baseline_seconds,
        rounds: a.rounds,
        batch: a.batch,
        sweep_rates: a.sweep_rates,
        concurrency: a.concurrency,
        big_fields: a.big_fields,
        paused_seconds: a.paused_seconds,
        bin_dir: a.bin_dir,
    };
    let report = run(&o, command)?;
    println!("{}", markdown(&report));
    save(&report, &a.out, &a.results_md)
}
