//! `GET /metrics`: every core's counters and histograms in the Prometheus
//! text format (0.0.4), built on the admin thread, off the cores.
//!
//! Counters are summed from what each core published at its last tick
//! ([`crate::engine::PublishedStats`], its per-command counters, its
//! [`PublishedMeters`]); histograms are the cores' `hdrhistogram`s merged
//! ([`MergedMeters`]) and read at fixed bucket bounds. Counters count since
//! the process started: `CONFIG RESETSTAT` resets what `INFO` shows, never
//! these. A scrape locks each core's published copies once, briefly; its
//! work grows with cores, commands, families and groups, never with
//! clients. The names are the contract of issue 15 (README "Metrics").

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use hdrhistogram::Histogram;
use keyway_protocol::command;

use crate::config::LiveConfig;
use crate::control::state::unix_ms;
use crate::engine::meters::{MergedMeters, BACKEND_ERRORS, CONN_STATES, FAMILIES};
use crate::engine::{CommandStats, Shared, Stats};

/// Bucket bounds of the latency histograms, in seconds.
pub const BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// The Prometheus content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes metric families in the text format, one family at a time.
#[derive(Debug, Default)]
pub struct Encoder {
    out: String,
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

impl Encoder {
    /// Starts family `name` (`kind`: counter, gauge, histogram).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// One histogram's samples (nanoseconds, exported in seconds):
    /// cumulative buckets at [`BUCKETS`], `+Inf`, `_sum`, `_count`. A
    /// bucket counts the values within its bound to the histogram's
    /// precision (1%).
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &Histogram<u64>,
        sum_ns: u64,
    ) {
        let bucket = format!("{name}_bucket");
        let bounds: Vec<String> = BUCKETS.iter().map(|b| b.to_string()).collect();
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        for (b, le) in BUCKETS.iter().zip(&bounds) {
            let n = h.count_between(0, (b * 1e9) as u64);
            with_le.push(("le", le));
            self.sample(&bucket, &with_le, n);
            with_le.pop();
        }
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, h.len());
        self.sample(&format!("{name}_sum"), labels, sum_ns as f64 / 1e9);
        self.sample(&format!("{name}_count"), labels, h.len());
    }

    /// The text so far.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Every core's counters and per-command counters, since start.
fn totals(shared: &Shared) -> (Stats, CommandStats) {
    let mut stats = Stats::default();
    let mut cmds = CommandStats::default();
    for r in shared.reports.iter() {
        stats.add(&r.stats.load());
        if let Ok(c) = r.commands.lock() {
            cmds.add(&c);
        }
    }
    (stats, cmds)
}

/// The whole `/metrics` text.
pub fn render(live: &LiveConfig, shared: &Shared) -> String {
    let (stats, cmds) = totals(shared);
    let meters = MergedMeters::of(shared.reports.iter().map(|r| &r.meters));
    let mut e = Encoder::default();
    e.family("keyway_build_info", "gauge", "Keyway's version (always 1).");
    e.sample(
        "keyway_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    e.single(
        "keyway_cores",
        "gauge",
        "Cores serving clients.",
        shared.cores,
    );
    e.family(
        "keyway_core_requests_total",
        "counter",
        "Requests read, by core (a core serves its own clients: the balance between cores).",
    );
    for (i, r) in shared.reports.iter().enumerate() {
        let core = i.to_string();
        e.sample(
            "keyway_core_requests_total",
            &[("core", &core)],
            r.stats.load().requests,
        );
    }
    requests(&mut e, &cmds, &shared.exported);
    let latency = live.metrics.latency;
    if latency {
        e.family(
            "keyway_request_duration_seconds",
            "histogram",
            "Time from the read that brought a request to its reply handed to the client's socket, by command family.",
        );
        for (i, f) in FAMILIES.iter().enumerate() {
            e.histogram(
                "keyway_request_duration_seconds",
                &[("family", f)],
                &meters.family[i],
                meters.family_sum_ns[i],
            );
        }
    }
    backends(&mut e, &meters, latency);
    clients(&mut e, shared, &stats);
    e.single(
        "keyway_received_bytes_total",
        "counter",
        "Bytes read from clients.",
        stats.client_bytes_in,
    );
    e.single(
        "keyway_sent_bytes_total",
        "counter",
        "Bytes written to clients.",
        stats.client_bytes_out,
    );
    e.family(
        "keyway_errors_total",
        "counter",
        "Error replies sent to clients, by error code (as INFO errorstats).",
    );
    for (code, n) in &cmds.errors {
        e.sample("keyway_errors_total", &[("kind", code)], n);
    }
    e.single(
        "keyway_migration_redirects_total",
        "counter",
        "Requests sent to a migrating slot's target group (their keys already moved there).",
        stats.migration_redirects,
    );
    e.single(
        "keyway_migration_key_moves_total",
        "counter",
        "MIGRATE commands keyway sent to move a request's keys before it.",
        stats.key_moves,
    );
    e.single(
        "keyway_table_version",
        "gauge",
        "The routing table version served.",
        live.table.version,
    );
    let lease = shared.lease_until_unix_ms.load(Ordering::Relaxed);
    if lease > 0 {
        let left = lease.saturating_sub(unix_ms(SystemTime::now()));
        e.single(
            "keyway_lease_remaining_seconds",
            "gauge",
            "Time left on the lease from ctld (managed data planes only).",
            left as f64 / 1000.0,
        );
    }
    e.single(
        "keyway_fenced",
        "gauge",
        "1 while keyway refuses routed commands (no valid lease or no table).",
        u8::from(live.fence.is_some()),
    );
    let held: u64 = shared
        .reports
        .iter()
        .map(|r| r.held.load(Ordering::Relaxed))
        .sum();
    e.single(
        "keyway_held_requests",
        "gauge",
        "Requests held now because their slots are about to migrate.",
        held,
    );
    e.finish()
}

/// The highest value each derived counter was exported at. Two series are
/// differences of counters counted at different moments —
/// `keyway_requests_total{result="ok"}` is calls (counted when a request
/// is sent) less failures (counted when its error reply comes back), and
/// `keyway_client_connections_closed_total{reason="other"}` is closes
/// (counted when the socket is gone) less the named reasons (counted when
/// keyway decides to close) — so either could drop by the requests or
/// closes in between, which Prometheus would read as a counter reset. They
/// are exported as the highest value seen so far: never lower, exact again
/// once what was in between has settled.
#[derive(Debug, Default)]
pub struct Exported {
    ok: std::sync::OnceLock<Box<[AtomicU64]>>,
    closed_other: AtomicU64,
}

impl Exported {
    /// `value`, or the highest this command's `ok` was exported at.
    fn ok(&self, id: usize, value: u64) -> u64 {
        let ok = self.ok.get_or_init(|| {
            let n = command::all()
                .map(|c| usize::from(c.id) + 1)
                .max()
                .unwrap_or(0);
            (0..n).map(|_| AtomicU64::new(0)).collect()
        });
        match ok.get(id) {
            Some(high) => high.fetch_max(value, Ordering::Relaxed).max(value),
            None => value,
        }
    }

    /// `value`, or the highest `closed{reason="other"}` was exported at.
    fn closed_other(&self, value: u64) -> u64 {
        self.closed_other
            .fetch_max(value, Ordering::Relaxed)
            .max(value)
    }
}

/// `keyway_requests_total`.
fn requests(e: &mut Encoder, cmds: &CommandStats, exported: &Exported) {
    e.family(
        "keyway_requests_total",
        "counter",
        "Requests by command and result: ok, error (an error reply to a request that ran), refused (by keyway before it ran).",
    );
    for c in command::all() {
        let i = usize::from(c.id);
        let at = |v: &[u64]| v.get(i).copied().unwrap_or(0);
        let (calls, failed, refused) = (at(&cmds.calls), at(&cmds.failed), at(&cmds.rejected));
        if calls + refused == 0 {
            continue;
        }
        let name = c.name;
        e.sample(
            "keyway_requests_total",
            &[("command", name), ("result", "ok")],
            exported.ok(i, calls.saturating_sub(failed)),
        );
        e.sample(
            "keyway_requests_total",
            &[("command", name), ("result", "error")],
            failed,
        );
        e.sample(
            "keyway_requests_total",
            &[("command", name), ("result", "refused")],
            refused,
        );
    }
}

/// The `keyway_backend_*` families.
fn backends(e: &mut Encoder, m: &MergedMeters, latency: bool) {
    e.family(
        "keyway_backend_requests_total",
        "counter",
        "Sub-requests answered by a group's servers.",
    );
    for (g, gm) in &m.groups {
        e.sample(
            "keyway_backend_requests_total",
            &[("group", g)],
            gm.requests,
        );
    }
    e.family(
        "keyway_backend_errors_total",
        "counter",
        "Backend connection failures by group and kind.",
    );
    for (g, gm) in &m.groups {
        for (k, n) in BACKEND_ERRORS.iter().zip(gm.errors) {
            e.sample(
                "keyway_backend_errors_total",
                &[("group", g), ("kind", k)],
                n,
            );
        }
    }
    e.family(
        "keyway_backend_reconnects_total",
        "counter",
        "Backend connections established (the first ones included).",
    );
    for (g, gm) in &m.groups {
        e.sample(
            "keyway_backend_reconnects_total",
            &[("group", g)],
            gm.connects,
        );
    }
    e.family(
        "keyway_backend_connections",
        "gauge",
        "Backend connections by group and state.",
    );
    for (g, gm) in &m.groups {
        for (s, n) in CONN_STATES.iter().zip(gm.conns) {
            e.sample(
                "keyway_backend_connections",
                &[("group", g), ("state", s)],
                n,
            );
        }
    }
    if latency {
        e.family(
            "keyway_backend_request_duration_seconds",
            "histogram",
            "Time from a sub-request handed to the socket to its reply read, by group.",
        );
        for (g, gm) in &m.groups {
            e.histogram(
                "keyway_backend_request_duration_seconds",
                &[("group", g)],
                &gm.hist,
                gm.sum_ns,
            );
        }
    }
}

/// The `keyway_client_*` families.
fn clients(e: &mut Encoder, shared: &Shared, s: &Stats) {
    e.single(
        "keyway_client_connections",
        "gauge",
        "Client connections open.",
        shared.clients.load(Ordering::Relaxed),
    );
    e.single(
        "keyway_client_connections_accepted_total",
        "counter",
        "Client connections accepted.",
        s.clients_accepted,
    );
    e.family(
        "keyway_client_connections_refused_total",
        "counter",
        "Client connections refused, by reason.",
    );
    e.sample(
        "keyway_client_connections_refused_total",
        &[("reason", "max_clients")],
        s.clients_rejected,
    );
    e.family(
        "keyway_client_connections_closed_total",
        "counter",
        "Client connections closed, by reason (other: the client left, or a protocol error).",
    );
    let reasons = [
        ("output_limit", s.clients_output_limit),
        ("timeout", s.clients_timed_out),
        ("killed", s.clients_killed),
        ("max_memory", s.clients_evicted_memory),
        ("cross_protocol", s.clients_cross_protocol),
    ];
    let named: u64 = reasons.iter().map(|(_, n)| n).sum();
    for (r, n) in reasons {
        e.sample(
            "keyway_client_connections_closed_total",
            &[("reason", r)],
            n,
        );
    }
    e.sample(
        "keyway_client_connections_closed_total",
        &[("reason", "other")],
        shared
            .exported
            .closed_other(s.clients_closed.saturating_sub(named)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_counters_never_go_down() {
        let x = Exported::default();
        assert_eq!(x.ok(3, 5), 5);
        // A request counted ok while in flight turned out an error.
        assert_eq!(x.ok(3, 4), 5, "held at the highest exported");
        assert_eq!(x.ok(3, 5), 5);
        assert_eq!(x.ok(3, 6), 6, "exact again once past it");
        assert_eq!(x.ok(4, 1), 1, "per command");
        assert_eq!(x.ok(usize::MAX, 7), 7, "an unknown id passes through");
        assert_eq!(x.closed_other(2), 2);
        assert_eq!(x.closed_other(1), 2);
        assert_eq!(x.closed_other(3), 3);
    }
    use crate::engine::meters::histogram;

    #[test]
    fn label_values_are_escaped() {
        let mut e = Encoder::default();
        e.family("m", "gauge", "A gauge.");
        e.sample("m", &[("g", "a\"b\\c\nd"), ("x", "y")], 3);
        assert_eq!(
            e.finish(),
            "# HELP m A gauge.\n# TYPE m gauge\nm{g=\"a\\\"b\\\\c\\nd\",x=\"y\"} 3\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = histogram::<u64>();
        for ns in [10_000, 60_000, 60_000, 300_000, 2_000_000, 90_000_000_000] {
            h.saturating_record(ns);
        }
        let mut e = Encoder::default();
        e.histogram("t", &[("family", "string")], &h, 1_500_000_000);
        let text = e.finish();
        let counts: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("t_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(counts.len(), BUCKETS.len() + 1);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        assert_eq!(counts[0], 1, "≤ 50 µs: {text}");
        assert_eq!(counts[1], 3, "≤ 100 µs");
        assert_eq!(counts[3], 4, "≤ 500 µs");
        assert_eq!(counts[5], 5, "≤ 2.5 ms");
        assert_eq!(counts[BUCKETS.len() - 1], 5, "the 60 s one is above 5 s");
        assert_eq!(counts[BUCKETS.len()], 6, "+Inf counts all");
        assert!(text.contains("t_bucket{family=\"string\",le=\"0.00005\"} 1\n"));
        assert!(text.contains("t_bucket{family=\"string\",le=\"+Inf\"} 6\n"));
        assert!(text.contains("t_sum{family=\"string\"} 1.5\n"));
        assert!(text.contains("t_count{family=\"string\"} 6\n"));
    }

    #[test]
    fn metric_names_are_unique() {
        let shared = Shared::new(2);
        let cfg = crate::config::Config::parse(
            "listen='127.0.0.1:0'\n[[group]]\nname='a'\nmaster='127.0.0.1:7000'\n",
            1,
        )
        .unwrap();
        let text = render(&cfg.live, &shared);
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "each family once");
        assert!(names.contains(&"keyway_request_duration_seconds"));
        assert!(
            !names.contains(&"keyway_lease_remaining_seconds"),
            "standalone"
        );
    }
}
