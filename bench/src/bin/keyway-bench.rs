//! `keyway-bench`: the side-by-side harness (direct Redis, twemproxy, keyway).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use keyway_bench::harness::{markdown, run, Options};

/// Runs direct Redis, twemproxy and keyway over one Redis on loopback, in
/// interleaved rounds, and reports medians, throughput ratios and each proxy's
/// CPU per request.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Interleaved rounds.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Requests per run.
    #[arg(short = 'n', long, default_value_t = 400_000)]
    requests: u64,
    /// The keyway binary.
    #[arg(long, default_value = "target/release/keyway")]
    keyway: PathBuf,
    /// Keyway transports to compare, comma-separated.
    #[arg(long, default_value = "glommio", value_delimiter = ',')]
    transports: Vec<String>,
    /// An earlier keyway build to run beside it (as `keyway-before`, default
    /// transport), e.g. one built from the commit before a change.
    #[arg(long, value_name = "PATH")]
    baseline: Option<PathBuf>,
    /// Leave twemproxy out.
    #[arg(long)]
    no_twemproxy: bool,
    /// CPU the proxies run on.
    #[arg(long, default_value_t = 0)]
    proxy_cpu: usize,
    /// Pin Redis to this CPU (by default the scheduler places it).
    #[arg(long)]
    redis_cpu: Option<usize>,
    /// Only the redis-benchmark GET/SET P1/P16 reference loads.
    #[arg(long)]
    reference_only: bool,
    /// Only the transaction load (MULTI, SET, INCR, EXEC as one request; on
    /// direct Redis and keyway: twemproxy has no transactions). With
    /// `--reference-only`: the reference loads and this one.
    #[arg(long)]
    transactions_only: bool,
    /// Rate of the open-loop latency load, requests per second.
    #[arg(long, default_value_t = 20_000.0)]
    open_rate: f64,
    /// Also run keyway with its clients over TLS (`keyway-tls`: a `[tls]`
    /// port with a certificate made by `openssl`, redis-benchmark `--tls`),
    /// beside plain TCP.
    #[arg(long)]
    tls: bool,
    /// Also run keyway with client users and ACL checks (`keyway-acl`:
    /// redis-benchmark authenticates as an ACL user with a key pattern and
    /// a category removed), beside plain keyway.
    #[arg(long)]
    acl: bool,
    /// Also run keyway with more settings, as `NAME=FILE`: a target named
    /// NAME whose config has FILE's lines appended (e.g. `[metrics]` /
    /// `latency = false`), beside plain keyway. Repeatable.
    #[arg(long, value_name = "NAME=FILE")]
    variant: Vec<String>,
    /// Directory for `<date>-<commit>.json`.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Markdown file whose side-by-side section is replaced with this run's
    /// tables ("-" to skip).
    #[arg(long, default_value = "bench/RESULTS.md")]
    results_md: String,
}

const START: &str = "<!-- side-by-side:start -->";
const END: &str = "<!-- side-by-side:end -->";

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut variants = Vec::new();
    for v in &a.variant {
        let (name, file) = v
            .split_once('=')
            .with_context(|| format!("--variant {v}: NAME=FILE"))?;
        let extra = std::fs::read_to_string(file)
            .with_context(|| format!("--variant {v}: reading {file}"))?;
        variants.push((name.to_string(), extra));
    }
    let o = Options {
        rounds: a.rounds.max(1),
        requests: a.requests,
        keyway: a.keyway.clone(),
        transports: a.transports.clone(),
        baseline: a.baseline.clone(),
        twemproxy: !a.no_twemproxy,
        proxy_cpu: a.proxy_cpu,
        redis_cpu: a.redis_cpu,
        reference_only: a.reference_only,
        transactions_only: a.transactions_only,
        open_rate: a.open_rate,
        tls: a.tls,
        acl: a.acl,
        variants,
    };
    let report = run(&o, command)?;
    let md = markdown(&report);
    println!("{md}");
    std::fs::create_dir_all(&a.out)?;
    let json = a
        .out
        .join(format!("{}-{}.json", &report.date[..10], report.commit));
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", json.display());
    if a.results_md != "-" {
        let path = PathBuf::from(&a.results_md);
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let section = format!("{START}\n{md}{END}");
        let new = match (old.find(START), old.find(END)) {
            (Some(s), Some(e)) if s < e => {
                format!("{}{section}{}", &old[..s], &old[e + END.len()..])
            }
            _ => format!("{old}\n## Side by side: direct Redis, twemproxy, keyway\n\n{section}\n"),
        };
        std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("updated {}", path.display());
    }
    Ok(())
}
