//! The migration benchmark's medians, Markdown and files.

use std::path::Path;

use serde::Serialize;

use super::{CpuSeconds, Move, Report};
use crate::harness::median;
use crate::load::LoadResult;

/// The medians of the rounds of one sweep rate.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The sweep's rate limit (0: none).
    pub sweep_rate: u64,
    /// Rounds.
    pub rounds: usize,
    /// Median keys per second.
    pub keys_per_second: f64,
    /// Median seconds per move.
    pub seconds: f64,
    /// Median client p50 before the moves, µs.
    pub before_p50_us: u64,
    /// Median client p99 before the moves, µs.
    pub before_p99_us: u64,
    /// Median client p50 during the moves, µs.
    pub during_p50_us: u64,
    /// Median client p99 during the moves, µs.
    pub during_p99_us: u64,
    /// Median over rounds of p99 during / p99 just before.
    pub p99_ratio: f64,
    /// The largest client latency during any of the moves, µs.
    pub during_max_us: u64,
    /// Client errors during the moves.
    pub errors: u64,
    /// Median CPU seconds per move.
    pub cpu_seconds: CpuSeconds,
    /// Median over rounds of [`typical_p99`] before the moves, µs.
    pub before_typical_p99_us: u64,
    /// Median over rounds of [`typical_p99`] during the moves, µs.
    pub during_typical_p99_us: u64,
    /// Median over rounds of the p99 of a move's first 100 ms window, µs.
    pub first_window_p99_us: u64,
}

/// Windows this far into a load are "typical" (past a move's start).
const TYPICAL_FROM_MS: u64 = 300;

/// The median, over the load's windows from 300 ms on with at least 100
/// requests, of each window's p99: what a steady 100 ms looks like, apart
/// from a move's start; NaN without such windows.
pub fn typical_p99(l: &LoadResult) -> f64 {
    median(
        l.windows
            .iter()
            .filter(|w| w.start_ms >= TYPICAL_FROM_MS && w.requests >= 100)
            .map(|w| w.latency_us.p99 as f64)
            .collect(),
    )
}

/// The p99 of the load's first window (NaN without windows).
fn first_p99(l: &LoadResult) -> f64 {
    l.windows
        .first()
        .map_or(f64::NAN, |w| w.latency_us.p99 as f64)
}

/// A median or NaN as whole microseconds (0 for NaN).
fn us(x: f64) -> u64 {
    if x.is_finite() {
        x as u64
    } else {
        0
    }
}

/// The medians of the moves with sweep rate `rate`.
pub fn summarize(rate: u64, moves: &[Move]) -> Summary {
    let ms: Vec<&Move> = moves.iter().filter(|m| m.sweep_rate == rate).collect();
    let med = |f: &dyn Fn(&Move) -> f64| median(ms.iter().map(|m| f(m)).collect());
    let q = |l: &LoadResult, p99: bool| {
        (if p99 {
            l.latency_us.p99
        } else {
            l.latency_us.p50
        }) as f64
    };
    Summary {
        sweep_rate: rate,
        rounds: ms.len(),
        keys_per_second: med(&|m| m.keys_per_second),
        seconds: med(&|m| m.seconds),
        before_p50_us: med(&|m| q(&m.before, false)) as u64,
        before_p99_us: med(&|m| q(&m.before, true)) as u64,
        during_p50_us: med(&|m| q(&m.during, false)) as u64,
        during_p99_us: med(&|m| q(&m.during, true)) as u64,
        p99_ratio: med(&|m| q(&m.during, true) / q(&m.before, true).max(1.0)),
        during_max_us: ms
            .iter()
            .map(|m| m.during.latency_us.max)
            .max()
            .unwrap_or(0),
        errors: ms.iter().map(|m| m.during.errors + m.before.errors).sum(),
        cpu_seconds: CpuSeconds {
            ctld: med(&|m| m.cpu_seconds.ctld),
            keyway: med(&|m| m.cpu_seconds.keyway),
            source: med(&|m| m.cpu_seconds.source),
            target: med(&|m| m.cpu_seconds.target),
        },
        before_typical_p99_us: us(med(&|m| typical_p99(&m.before))),
        during_typical_p99_us: us(med(&|m| typical_p99(&m.during))),
        first_window_p99_us: us(med(&|m| first_p99(&m.during))),
    }
}

fn limit(rate: u64) -> String {
    if rate == 0 {
        "none".into()
    } else {
        format!("{rate} keys/s")
    }
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let get = |k: &str| r.machine.get(k).map_or("?", String::as_str);
    let o = &r.options;
    let mut s = format!(
        "Measured {} at commit `{}` on {} ({} CPUs, {}, kernel {}; {}).\n\n\
         Command: `{}`\n\n\
         {} keys of {} bytes move between two Redis groups — all 16384 slots, one migration, \
         {} rounds per sweep rate limit, alternating direction — while an open-loop client load \
         runs through one keyway data plane: {} req/s on {} connections, GET 80% / SET 20% over \
         {}, latency from each request's intended send time. Sweep batches of {} \
         keys, concurrency {}. \"before\" is {} s of the same load just before each move. \
         Medians over rounds; max is the largest of all rounds. \"Typical 100 ms p99\" is the \
         median, over the 100 ms windows from 300 ms into the load on, of each window's p99 \
         (a move's steady state, without its start); \"first 100 ms\" is the p99 of the \
         move's first 100 ms (its blocking step).\n\n\
         | sweep limit | keys/s | move s | client p50 µs before → during | client p99 µs before → during | p99 × | typical 100 ms p99 µs before → during | first 100 ms p99 µs | max µs during | errors | CPU s per move: ctld / keyway / source / target |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        r.date,
        r.commit,
        get("cpu"),
        get("cpus"),
        get("memory"),
        get("kernel"),
        get("redis"),
        r.command,
        o.keys,
        o.value_size,
        o.rounds,
        o.client_rate,
        o.connections,
        match o.client_keys {
            0 => "the same keys".to_string(),
            n => format!("the first {} of those keys (a hot set)", n.min(o.keys)),
        },
        o.batch,
        o.concurrency,
        o.baseline_seconds,
    );
    for m in &r.summary {
        let c = &m.cpu_seconds;
        s.push_str(&format!(
            "| {} | {:.0} | {:.1} | {} → {} | {} → {} | {:.1} | {} → {} | {} | {} | {} | {:.1} / {:.1} / {:.1} / {:.1} |\n",
            limit(m.sweep_rate),
            m.keys_per_second,
            m.seconds,
            m.before_p50_us,
            m.during_p50_us,
            m.before_p99_us,
            m.during_p99_us,
            m.p99_ratio,
            m.before_typical_p99_us,
            m.during_typical_p99_us,
            m.first_window_p99_us,
            m.during_max_us,
            m.errors,
            c.ctld,
            c.keyway,
            c.source,
            c.target
        ));
    }
    if let Some(p) = &r.paused {
        let (b, d) = (&p.before.latency_us, &p.paused.latency_us);
        s.push_str(&format!(
            "\nWith the sweep paused — a move of every slot under way, so that each command first \
             moves its own key (MIGRATE on the source) and then runs on the target: what the \
             move's protocol costs a client whatever the sweep's pace — {} s of the same load: \
             client p50 {} → {} µs, p99 {} → {} µs ({:.1}×), max {} µs; {} keys moved on demand; \
             {} errors.\n",
            o.paused_seconds,
            b.p50,
            d.p50,
            b.p99,
            d.p99,
            d.p99 as f64 / b.p99.max(1) as f64,
            d.max,
            p.moved_on_demand,
            p.before.errors + p.paused.errors,
        ));
    }
    s.push_str("\nEvery round:\n\n| sweep limit | direction | keys/s | swept by ctld | p99 µs before | p99 µs during | typical 100 ms p99 µs before → during | first 100 ms p99 µs | max µs during | errors |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for m in &r.moves {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} → {} | {} | {} | {} |\n",
            limit(m.sweep_rate),
            m.direction,
            m.keys_per_second,
            m.swept,
            m.before.latency_us.p99,
            m.during.latency_us.p99,
            us(typical_p99(&m.before)),
            us(typical_p99(&m.during)),
            us(first_p99(&m.during)),
            m.during.latency_us.max,
            m.during.errors
        ));
    }
    if let Some(b) = &r.big_key {
        s.push_str(&format!(
            "\nA big key: a hash of {} fields, {} bytes (`MEMORY USAGE`), moved alone (its slot) \
             in {:.2} s under the same load. Client latency µs just before → while it moves: p50 \
             {} → {}, p99 {} → {}, max {} → {}; {} errors. The source runs MIGRATE synchronously, \
             so its other clients wait for the whole transfer and restore: the max above is the \
             price of moving such a key, whoever moves it. Sweep report: `{}`.\n",
            b.fields,
            b.bytes,
            b.seconds,
            b.before.latency_us.p50,
            b.during.latency_us.p50,
            b.before.latency_us.p99,
            b.during.latency_us.p99,
            b.before.latency_us.max,
            b.during.latency_us.max,
            b.during.errors,
            b.reported
        ));
    }
    s
}

/// Writes the report's JSON under `out` and replaces the migration section of
/// `results_md` (unless it is "-").
pub fn save(r: &Report, out: &Path, results_md: &str) -> anyhow::Result<()> {
    crate::harness::save_section(
        r,
        (&r.date, &r.commit),
        ("migration", "migrate"),
        out,
        results_md,
        (
            "Online migration: keys per second and client latency",
            "`bench/migrate.sh` (see `keyway-migrate-bench --help`).",
        ),
        &markdown(r),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Quantiles, Window};

    fn q(p99: u64) -> Quantiles {
        Quantiles {
            p50: 1,
            p99,
            p999: p99,
            max: p99,
        }
    }

    #[test]
    fn the_typical_window_skips_the_start_and_thin_windows() {
        let w = |start_ms, requests, p99| Window {
            start_ms,
            requests,
            latency_us: q(p99),
        };
        let l = LoadResult {
            requests: 0,
            errors: 0,
            first_error: None,
            seconds: 1.0,
            throughput: 0.0,
            latency_us: q(0),
            windows: vec![
                w(0, 1000, 9000),
                w(100, 1000, 8000),
                w(200, 1000, 7000),
                w(300, 1000, 300),
                w(400, 1000, 500),
                w(500, 1000, 400),
                w(600, 20, 99_999),
            ],
        };
        assert_eq!(typical_p99(&l), 400.0, "the median of 300, 500, 400");
        assert_eq!(first_p99(&l), 9000.0);
        let empty = LoadResult {
            windows: vec![],
            ..l
        };
        assert!(typical_p99(&empty).is_nan() && first_p99(&empty).is_nan());
        assert_eq!(us(f64::NAN), 0);
    }
}
