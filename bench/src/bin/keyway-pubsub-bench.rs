//! `keyway-pubsub-bench`: Pub/Sub fan-out to many subscribers, direct Redis
//! against keyway (results in bench/RESULTS.md).

use std::path::PathBuf;

use clap::Parser;
use keyway_bench::pubsub::{markdown, run, save, Options};

/// Pub/Sub fan-out: subscribers of one channel, one publisher, messages
/// delivered per second and CPU per message, direct Redis and through
/// keyway (one core) in interleaved rounds.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Subscribed clients.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Messages published per round.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 32)]
    payload: usize,
    /// PUBLISHes in flight at once.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Interleaved rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The CPU keyway's one core runs on.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Where keyway is (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// The RESULTS.md whose Pub/Sub section is replaced ("-": none).
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
        subscribers: args.subscribers,
        messages: args.messages,
        payload: args.payload,
        window: args.window,
        rounds: args.rounds,
        cpu: args.cpu,
        bin_dir,
    };
    let command: Vec<String> = std::env::args().collect();
    let report = run(&o, command.join(" "))?;
    print!("{}", markdown(&report));
    save(&report, &args.out, &args.results_md)
}
