//! `keyway-load`: drive a Redis-protocol server with a command mix and report
//! throughput and latency quantiles.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use keyway_bench::load::{parse_mix, run, LoadSpec, Stop};

/// Closed-loop (max throughput) or open-loop (fixed rate, latency corrected for
/// coordinated omission) load against a Redis-protocol server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:6380")]
    addr: SocketAddr,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(short = 'P', long, default_value_t = 1)]
    pipeline: usize,
    /// Key space: keys are drawn uniformly from this many.
    #[arg(short = 'r', long, default_value_t = 100_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(short = 'd', long, default_value_t = 3)]
    value_size: usize,
    /// Command mix, e.g. `get=50,set=20,mget=10,mset=5,incr=5,lpush=5,lpop=5`.
    /// `tx` is a transaction (`MULTI`, `SET`, `INCR`, `EXEC` on one hash tag),
    /// counted as one request.
    #[arg(long, default_value = "get=50,set=50")]
    mix: String,
    /// Keys per MGET/MSET.
    #[arg(long, default_value_t = 10)]
    multi_keys: usize,
    /// Stop after this many requests.
    #[arg(short = 'n', long, conflicts_with = "seconds")]
    requests: Option<u64>,
    /// Stop after this many seconds (default 10).
    #[arg(long)]
    seconds: Option<f64>,
    /// Open loop: this many requests per second in all.
    #[arg(long)]
    rate: Option<f64>,
    /// Threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let spec = LoadSpec {
        addr: a.addr,
        connections: a.connections,
        pipeline: a.pipeline,
        keys: a.keys,
        value_size: a.value_size,
        mix: parse_mix(&a.mix).map_err(anyhow::Error::msg)?,
        multi_keys: a.multi_keys,
        stop: match a.requests {
            Some(n) => Stop::Requests(n),
            None => Stop::Duration(Duration::from_secs_f64(a.seconds.unwrap_or(10.0))),
        },
        rate: a.rate,
        threads: a.threads,
        until: None,
        window: None,
    };
    let r = run(&spec)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let l = &r.latency_us;
        println!(
            "{} requests in {:.2}s: {:.0} req/s; latency µs p50 {} p99 {} p99.9 {} max {}; {} errors{}",
            r.requests,
            r.seconds,
            r.throughput,
            l.p50,
            l.p99,
            l.p999,
            l.max,
            r.errors,
            r.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
    }
    Ok(())
}
