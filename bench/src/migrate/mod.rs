//! The online-migration benchmark: two Redis groups, keyway-ctld and one
//! keyway data plane on loopback; `keys` keys of `value_size` bytes on the
//! first group; an open-loop client load (latency from each request's
//! intended send time) through keyway over those keys.
//!
//! Each round measures the load for a while, then moves every slot to the
//! other group while the load runs, and records keys moved per second and
//! the client latency during the move against just before it. Rounds
//! alternate direction and repeat for each sweep rate limit; the report
//! gives medians ([`report`]). A last phase moves one big key (a hash of
//! `big_fields` fields) and measures what it does to client latency: the
//! source runs MIGRATE synchronously, so its other clients wait meanwhile.

pub mod report;
pub(crate) mod system;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use crate::harness::{date_and_commit, machine};
use crate::load::{self, LoadResult};
use crate::procs::{cpu_seconds, ctld_on_free_ports, managed_keyway, Proc, TempDir};
pub use report::{markdown, save, Summary};
use system::{big_hash, command, preload, spec, under_load, wait_serving, Ctl};

/// How to run.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Keys to move.
    pub keys: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Client load, requests per second (open loop; GET 80%, SET 20%).
    pub client_rate: f64,
    /// The client load's keys: the first this many of the keys (0: all),
    /// for a load on a hot set while every key moves.
    pub client_keys: u64,
    /// Client connections.
    pub connections: usize,
    /// Seconds of load measured before each move.
    pub baseline_seconds: f64,
    /// Moves per sweep rate.
    pub rounds: usize,
    /// Keys per MIGRATE of the sweep.
    pub batch: u32,
    /// The sweep's rate limits to measure, keys per second (0: none).
    pub sweep_rates: Vec<u64>,
    /// MIGRATE calls the sweep keeps in flight.
    pub concurrency: u32,
    /// Fields of the big key of the last phase (0: skip it).
    pub big_fields: u64,
    /// Seconds of load measured with a move under way and its sweep paused,
    /// before the rounds (0: skip it).
    pub paused_seconds: f64,
    /// Where keyway, keyway-ctld and keywayctl are.
    pub bin_dir: PathBuf,
}

/// CPU seconds of each process over a phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuSeconds {
    /// keyway-ctld (the sweep runs in it).
    pub ctld: f64,
    /// The keyway data plane.
    pub keyway: f64,
    /// The source Redis.
    pub source: f64,
    /// The target Redis.
    pub target: f64,
}

/// One move of the whole key space.
#[derive(Debug, Clone, Serialize)]
pub struct Move {
    /// The sweep's rate limit (0: none).
    pub sweep_rate: u64,
    /// From which group to which.
    pub direction: String,
    /// Keys on the source before the move.
    pub keys: u64,
    /// From the migrate command to the target owning every slot.
    pub seconds: f64,
    /// `keys / seconds`.
    pub keys_per_second: f64,
    /// Keys the sweep moved (the data plane moved the rest on demand).
    pub swept: u64,
    /// CPU seconds during the move.
    pub cpu_seconds: CpuSeconds,
    /// The client load just before the move.
    pub before: LoadResult,
    /// The client load during the move.
    pub during: LoadResult,
}

/// The big key's move.
#[derive(Debug, Clone, Serialize)]
pub struct BigKeyMove {
    /// Hash fields.
    pub fields: u64,
    /// `MEMORY USAGE` on the source.
    pub bytes: u64,
    /// From the migrate command to done (its slot, this key alone).
    pub seconds: f64,
    /// What the sweep reported (when the key did not move within the first
    /// timeout).
    pub reported: Value,
    /// The client load just before.
    pub before: LoadResult,
    /// The client load meanwhile (its other keys are on the same source).
    pub during: LoadResult,
}

/// The client load with every slot moving and the sweep paused: every
/// command moves its own key first (MIGRATE on the source, then the command
/// on the target). What the move's protocol costs a client, whatever the
/// sweep's pace.
#[derive(Debug, Clone, Serialize)]
pub struct PausedMove {
    /// Keys the commands moved meanwhile (on demand).
    pub moved_on_demand: u64,
    /// The client load just before the move.
    pub before: LoadResult,
    /// The client load while it was paused.
    pub paused: LoadResult,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When (UTC).
    pub date: String,
    /// `git describe`.
    pub commit: String,
    /// The machine.
    pub machine: std::collections::BTreeMap<String, String>,
    /// The command line.
    pub command: String,
    /// The options.
    pub options: Options,
    /// Seconds to write the keys (directly into the source).
    pub preload_seconds: f64,
    /// The paused move, if run.
    pub paused: Option<PausedMove>,
    /// Every move, in order.
    pub moves: Vec<Move>,
    /// Medians per sweep rate.
    pub summary: Vec<Summary>,
    /// The big key's move, if run.
    pub big_key: Option<BigKeyMove>,
}

fn cpu(p: &Proc) -> f64 {
    cpu_seconds(p.pid()).unwrap_or(0.0)
}

/// Runs the benchmark.
pub fn run(o: &Options, command_line: String) -> anyhow::Result<Report> {
    let bin = |name: &str| -> anyhow::Result<PathBuf> {
        let p = o.bin_dir.join(name);
        anyhow::ensure!(p.exists(), "{} is missing (build it first)", p.display());
        Ok(p)
    };
    let dir = TempDir::new("bench");
    let g1 = Proc::redis(&dir.0, None)?;
    let g2 = Proc::redis(&dir.0, None)?;
    let (ctld, control) = ctld_on_free_ports(&bin("keyway-ctld")?, &dir.0)?;
    let api = ctld.addr;
    let ctl = Ctl {
        bin: bin("keywayctl")?,
        api,
    };
    let group = |name: &str, p: &Proc| format!("{name}={}", p.addr);
    ctl.json(&["cluster", "create", "bench", "--group", &group("g1", &g1)])?;
    ctl.json(&["cluster", "grow", "bench", "--group", &group("g2", &g2)])?;
    let keyway = managed_keyway(&bin("keyway")?, &dir.0, &control.to_string())?;
    let listen = keyway.addr;
    wait_serving(listen)?;

    let t = std::time::Instant::now();
    preload(g1.addr, o.keys, o.value_size)?;
    let preload_seconds = t.elapsed().as_secs_f64();
    eprintln!("preloaded {} keys in {preload_seconds:.1}s", o.keys);

    let servers = [("g1", &g1), ("g2", &g2)];
    let mut at = 0;
    let paused = if o.paused_seconds > 0.0 {
        let p = paused_phase(listen, servers[1].1.addr, servers[1].0, &ctl, o)?;
        at = 1;
        Some(p)
    } else {
        None
    };
    let mut moves = Vec::new();
    for &rate in &o.sweep_rates {
        for _ in 0..o.rounds.max(1) {
            let (from, to) = (servers[at], servers[1 - at]);
            let before = load::run(&spec(listen, o, None, o.baseline_seconds))?;
            let cpu0 = [cpu(&ctld), cpu(&keyway), cpu(from.1), cpu(to.1)];
            let ((seconds, m), during) =
                under_load(listen, o, || ctl.migrate("0-16383", to.0, o, rate))?;
            let cpu1 = [cpu(&ctld), cpu(&keyway), cpu(from.1), cpu(to.1)];
            let left = command(from.1.addr, &["DBSIZE"])?;
            anyhow::ensure!(left == ":0", "keys left on the source: {left}");
            let mv = Move {
                sweep_rate: rate,
                direction: format!("{} -> {}", from.0, to.0),
                keys: o.keys,
                seconds,
                keys_per_second: o.keys as f64 / seconds,
                swept: m["progress"]["keys_moved"].as_u64().unwrap_or(0),
                cpu_seconds: CpuSeconds {
                    ctld: cpu1[0] - cpu0[0],
                    keyway: cpu1[1] - cpu0[1],
                    source: cpu1[2] - cpu0[2],
                    target: cpu1[3] - cpu0[3],
                },
                before,
                during,
            };
            eprintln!(
                "{} (sweep rate {rate}): {} keys in {seconds:.1}s, {:.0} keys/s; client p99 {} µs before, {} µs during; {} errors",
                mv.direction,
                o.keys,
                mv.keys_per_second,
                mv.before.latency_us.p99,
                mv.during.latency_us.p99,
                mv.during.errors
            );
            moves.push(mv);
            at = 1 - at;
        }
    }
    let summary = o
        .sweep_rates
        .iter()
        .map(|&rate| report::summarize(rate, &moves))
        .collect();
    let big_key = if o.big_fields > 0 {
        let (owner, other) = (servers[at], servers[1 - at]);
        Some(big_key_phase(listen, owner.1.addr, other.0, &ctl, o)?)
    } else {
        None
    };
    let (date, commit) = date_and_commit();
    Ok(Report {
        date,
        commit,
        machine: machine(),
        command: command_line,
        options: o.clone(),
        preload_seconds,
        paused,
        moves,
        summary,
        big_key,
    })
}

/// Measures the load before and during a move of every slot to group `to`
/// (at `to_addr`) whose sweep is paused, then lets the move finish.
fn paused_phase(
    listen: SocketAddr,
    to_addr: SocketAddr,
    to: &str,
    ctl: &Ctl,
    o: &Options,
) -> anyhow::Result<PausedMove> {
    let before = load::run(&spec(listen, o, None, o.baseline_seconds))?;
    let id = ctl.start("0-16383", to, o, 0, true)?;
    // Past the blocking step: commands move their keys from here on.
    ctl.wait_for(&id, "moving")?;
    let on_target = |addr| -> anyhow::Result<u64> {
        let n = command(addr, &["DBSIZE"])?;
        Ok(n.trim_start_matches(':').parse()?)
    };
    let was = on_target(to_addr)?;
    let paused = load::run(&spec(listen, o, None, o.paused_seconds))?;
    let moved_on_demand = on_target(to_addr)?.saturating_sub(was);
    ctl.json(&["migration", "resume", "bench", &id])?;
    ctl.wait_for(&id, "done")?;
    eprintln!(
        "sweep paused: client p99 {} µs before, {} µs paused; {moved_on_demand} keys moved on demand",
        before.latency_us.p99, paused.latency_us.p99
    );
    Ok(PausedMove {
        moved_on_demand,
        before,
        paused,
    })
}

/// Moves one big hash from `owner` (which holds every key now) to group
/// `to`, alone in its slot, while the load runs on the other keys.
fn big_key_phase(
    listen: SocketAddr,
    owner: SocketAddr,
    to: &str,
    ctl: &Ctl,
    o: &Options,
) -> anyhow::Result<BigKeyMove> {
    let key = "bighash";
    let slot = keyway_protocol::slot::key_slot(key.as_bytes(), 16384);
    big_hash(owner, key, o.big_fields)?;
    let bytes = command(owner, &["MEMORY", "USAGE", key, "SAMPLES", "0"])?
        .trim_start_matches(':')
        .parse()
        .unwrap_or(0);
    eprintln!("big key: {} fields, {bytes} bytes", o.big_fields);
    let before = load::run(&spec(listen, o, None, o.baseline_seconds))?;
    let ((seconds, m), during) =
        under_load(listen, o, || ctl.migrate(&slot.to_string(), to, o, 0))?;
    eprintln!(
        "big key moved in {seconds:.2}s; client p99 {} µs, max {} µs (before: {} µs, {} µs)",
        during.latency_us.p99, during.latency_us.max, before.latency_us.p99, before.latency_us.max
    );
    Ok(BigKeyMove {
        fields: o.big_fields,
        bytes,
        seconds,
        reported: m["progress"]["big_keys"].clone(),
        before,
        during,
    })
}
