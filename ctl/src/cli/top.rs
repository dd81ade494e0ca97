//! `keywayctl top CLUSTER`: a live view of a cluster's data planes and
//! groups, redrawn every `--interval` (plain ANSI: clear the screen, print
//! the tables). Each round lists the data planes through ctld's API, scrapes
//! each one's admin endpoint (`http(s)://ADMIN/metrics`, HTTPS verified
//! against `--ca`) twice, `--interval` apart, and computes from the two
//! scrapes (`crate::metrics::parse`):
//! - per data plane: requests/s and errors/s (`keyway_requests_total`,
//!   errors being results other than `ok`), p50/p99 over the interval
//!   (`keyway_request_duration_seconds`, every family, interpolated within
//!   buckets), client connections (`keyway_client_connections`);
//! - per group, over every data plane: requests/s and p99
//!   (`keyway_backend_requests_total`,
//!   `keyway_backend_request_duration_seconds`);
//! - the migrations in flight, from ctld's API.
//!
//! Scrapes run at once, each bounded by [`SCRAPE_TIMEOUT`] and
//! [`MAX_SCRAPE`]: a data plane that does not answer is shown as
//! unreachable, never waited for. An admin endpoint listening on an
//! unspecified address (`0.0.0.0:P`) is reached at its data plane's client
//! host. `--json` prints one sample and exits.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;
use keyway_capnp::duration::parse_duration;
use serde::Serialize;

use super::CliError;
use crate::client::Client;
use crate::metrics::parse::{buckets, delta, label_values, parse, quantile, rate, sum, Sample};
use crate::model::MigrationState;
use crate::wire::{DataPlaneView, MigrationView};

/// How long one scrape may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_millis(800);

/// The largest metrics text read from a data plane.
pub const MAX_SCRAPE: u64 = 32 << 20;

/// `keywayctl top CLUSTER`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Cluster name.
    name: String,
    /// Time between the two scrapes of a sample, and between redraws
    /// (e.g. "1s", "500ms"; from 100ms to 1m).
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| e.to_string())?;
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&d) {
        return Err("the interval is from 100ms to 1m".into());
    }
    Ok(d)
}

/// One data plane over one interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlaneSample {
    /// Its id.
    pub id: String,
    /// Where its clients connect.
    pub address: String,
    /// The metrics URL scraped (empty: it names no admin endpoint).
    pub url: String,
    /// Connected to ctld.
    pub connected: bool,
    /// The version it acked.
    pub acked_version: u64,
    /// Seconds left on its lease as ctld sees it.
    pub lease_remaining_s: Option<f64>,
    /// Its metrics could be read, twice.
    pub reachable: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Requests per second whose result was not `ok`.
    pub errors_per_s: f64,
    /// Median latency over the interval, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency over the interval, in milliseconds.
    pub p99_ms: Option<f64>,
    /// Client connections open.
    pub client_connections: Option<f64>,
}

/// One group over one interval, over every reachable data plane.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupSample {
    /// The group.
    pub group: String,
    /// Backend requests per second.
    pub requests_per_s: f64,
    /// 99th percentile backend latency, in milliseconds.
    pub p99_ms: Option<f64>,
}

/// A migration in flight.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MigrationSample {
    /// Its id.
    pub id: u64,
    /// Its slots.
    pub slots: String,
    /// From and to.
    pub from: String,
    /// The target group.
    pub to: String,
    /// pending, blocking or moving (paused: moving, paused).
    pub phase: String,
    /// Keys moved so far.
    pub keys_moved: u64,
    /// Keys per second, recently.
    pub rate: u64,
}

/// One sample of a cluster: what `top --json` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopSample {
    /// The cluster.
    pub cluster: String,
    /// Seconds between the two scrapes.
    pub interval_s: f64,
    /// Its data planes.
    pub dataplanes: Vec<PlaneSample>,
    /// Its groups.
    pub groups: Vec<GroupSample>,
    /// Its migrations in flight.
    pub migrations: Vec<MigrationSample>,
}

/// The URL of a data plane's metrics.
fn metrics_url(d: &DataPlaneView) -> Option<String> {
    if d.admin.is_empty() {
        return None;
    }
    let (host, port) = d.admin.rsplit_once(':')?;
    let unspecified = matches!(host, "0.0.0.0" | "[::]" | "::" | "");
    let host = if unspecified {
        d.address.rsplit_once(':').map_or(host, |(h, _)| h)
    } else {
        host
    };
    let scheme = if d.admin_tls { "https" } else { "http" };
    Some(format!("{scheme}://{host}:{port}/metrics"))
}

fn scrape(agent: &ureq::Agent, url: &str) -> Result<Vec<Sample>, String> {
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let text = resp
        .body_mut()
        .with_config()
        .limit(MAX_SCRAPE)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    parse(&text).map_err(|e| format!("{url}: {e}"))
}

/// Scrapes every URL at once.
fn scrape_all(agent: &ureq::Agent, urls: &[Option<String>]) -> Vec<Result<Vec<Sample>, String>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = urls
            .iter()
            .map(|u| {
                s.spawn(move || match u {
                    Some(u) => scrape(agent, u),
                    None => Err("no admin endpoint".into()),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("scrape panicked".into())))
            .collect()
    })
}

fn ms(v: Option<f64>) -> Option<f64> {
    v.map(|s| s * 1000.0)
}

/// What two scrapes of one data plane, `secs` apart, say of it.
pub fn plane_sample(
    d: &DataPlaneView,
    url: Option<String>,
    first: &[Sample],
    second: &[Sample],
    secs: f64,
) -> PlaneSample {
    let total = |s: &[Sample]| sum(s, "keyway_requests_total", &[]);
    let ok = |s: &[Sample]| sum(s, "keyway_requests_total", &[("result", "ok")]);
    let lat = |s: &[Sample]| buckets(s, "keyway_request_duration_seconds", &[]);
    let window = delta(&lat(second), &lat(first));
    let conns = second
        .iter()
        .find(|s| s.name == "keyway_client_connections")
        .map(|s| s.value);
    let requests = rate(total(second), total(first), secs);
    PlaneSample {
        id: d.id.clone(),
        address: d.address.clone(),
        url: url.unwrap_or_default(),
        connected: d.connected,
        acked_version: d.acked_version,
        lease_remaining_s: d.lease_remaining_ms.map(|m| m as f64 / 1000.0),
        reachable: true,
        error: None,
        requests_per_s: requests,
        errors_per_s: (requests - rate(ok(second), ok(first), secs)).max(0.0),
        p50_ms: ms(quantile(0.5, &window)),
        p99_ms: ms(quantile(0.99, &window)),
        client_connections: conns,
    }
}

/// Every group's rate and p99 over the pairs of scrapes.
pub fn group_samples(pairs: &[(&[Sample], &[Sample])], secs: f64) -> Vec<GroupSample> {
    let mut groups: Vec<String> = pairs
        .iter()
        .flat_map(|(_, b)| label_values(b, "keyway_backend_requests_total", "group"))
        .collect();
    groups.sort();
    groups.dedup();
    groups
        .into_iter()
        .map(|g| {
            let want = [("group", g.as_str())];
            let mut requests = 0.0;
            let mut merged: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
            for (a, b) in pairs {
                requests += rate(
                    sum(b, "keyway_backend_requests_total", &want),
                    sum(a, "keyway_backend_requests_total", &want),
                    secs,
                );
                let name = "keyway_backend_request_duration_seconds";
                for (le, n) in delta(&buckets(b, name, &want), &buckets(a, name, &want)) {
                    merged.entry(le.max(0.0).to_bits()).or_insert((le, 0.0)).1 += n;
                }
            }
            let window: Vec<(f64, f64)> = merged.into_values().collect();
            GroupSample {
                group: g,
                requests_per_s: requests,
                p99_ms: ms(quantile(0.99, &window)),
            }
        })
        .collect()
}

fn migrations(c: &Client, cluster: &str) -> Result<Vec<MigrationSample>, CliError> {
    let list: Vec<MigrationView> = c.get(&format!("/v1/clusters/{cluster}/migrations"))?;
    Ok(list
        .into_iter()
        .filter(|m| m.migration.active())
        .map(|m| {
            let phase = match m.migration.state {
                MigrationState::Pending => "pending",
                MigrationState::Blocking { .. } => "blocking",
                MigrationState::Moving { .. } if m.migration.paused => "paused",
                MigrationState::Moving { .. } => "moving",
                MigrationState::Done => "done",
                MigrationState::Cancelled => "cancelled",
            };
            MigrationSample {
                id: m.migration.id,
                slots: m.slots,
                from: m.migration.from,
                to: m.migration.to,
                phase: phase.into(),
                keys_moved: m.migration.progress.keys_moved,
                rate: m.migration.progress.rate,
            }
        })
        .collect())
}

/// One sample: the listing, two scrapes `interval` apart, the migrations.
fn sample(
    c: &Client,
    agent: &ureq::Agent,
    cluster: &str,
    interval: Duration,
) -> Result<TopSample, CliError> {
    let planes: Vec<DataPlaneView> = c.get(&format!("/v1/clusters/{cluster}/dataplanes"))?;
    let urls: Vec<Option<String>> = planes.iter().map(metrics_url).collect();
    let t0 = Instant::now();
    let first = scrape_all(agent, &urls);
    std::thread::sleep(interval.saturating_sub(t0.elapsed()));
    let t1 = Instant::now();
    let second = scrape_all(agent, &urls);
    let secs = t1.duration_since(t0).as_secs_f64();
    let mut dataplanes = Vec::new();
    let mut pairs = Vec::new();
    for (i, d) in planes.iter().enumerate() {
        match (&first[i], &second[i]) {
            (Ok(a), Ok(b)) => {
                dataplanes.push(plane_sample(d, urls[i].clone(), a, b, secs));
                pairs.push((a.as_slice(), b.as_slice()));
            }
            (Err(e), _) | (_, Err(e)) => dataplanes.push(PlaneSample {
                id: d.id.clone(),
                address: d.address.clone(),
                url: urls[i].clone().unwrap_or_default(),
                connected: d.connected,
                acked_version: d.acked_version,
                lease_remaining_s: d.lease_remaining_ms.map(|m| m as f64 / 1000.0),
                reachable: false,
                error: Some(e.clone()),
                requests_per_s: 0.0,
                errors_per_s: 0.0,
                p50_ms: None,
                p99_ms: None,
                client_connections: None,
            }),
        }
    }
    Ok(TopSample {
        cluster: cluster.to_string(),
        interval_s: secs,
        groups: group_samples(&pairs, secs),
        dataplanes,
        migrations: migrations(c, cluster)?,
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The tables of one sample.
pub fn render(s: &TopSample) -> String {
    let mut out = format!(
        "keyway top — cluster {} — {} data plane(s), interval {:.1}s\n\n",
        s.cluster,
        s.dataplanes.len(),
        s.interval_s
    );
    let rows: Vec<Vec<String>> = s
        .dataplanes
        .iter()
        .map(|p| {
            let state = match (&p.error, p.connected) {
                (Some(e), _) => format!("unreachable: {e}"),
                (None, true) => "up".into(),
                (None, false) => "up (no ctld session)".into(),
            };
            vec![
                p.id.clone(),
                p.address.clone(),
                p.acked_version.to_string(),
                opt(p.lease_remaining_s, 1),
                format!("{:.1}", p.requests_per_s),
                format!("{:.1}", p.errors_per_s),
                opt(p.p50_ms, 3),
                opt(p.p99_ms, 3),
                opt(p.client_connections, 0),
                state,
            ]
        })
        .collect();
    out += &super::table_text(
        &[
            "DATAPLANE",
            "ADDRESS",
            "VERSION",
            "LEASE",
            "REQ/S",
            "ERR/S",
            "P50MS",
            "P99MS",
            "CONNS",
            "STATE",
        ],
        rows,
    );
    out.push('\n');
    let rows: Vec<Vec<String>> = s
        .groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                format!("{:.1}", g.requests_per_s),
                opt(g.p99_ms, 3),
            ]
        })
        .collect();
    out += &super::table_text(&["GROUP", "REQ/S", "P99MS"], rows);
    out.push('\n');
    if s.migrations.is_empty() {
        out += "no migration in flight\n";
    } else {
        let rows: Vec<Vec<String>> = s
            .migrations
            .iter()
            .map(|m| {
                vec![
                    m.id.to_string(),
                    m.slots.clone(),
                    format!("{} -> {}", m.from, m.to),
                    m.phase.clone(),
                    m.keys_moved.to_string(),
                    m.rate.to_string(),
                ]
            })
            .collect();
        out += &super::table_text(
            &["MIGRATION", "SLOTS", "MOVE", "PHASE", "KEYS", "KEYS/S"],
            rows,
        );
    }
    out
}

/// Runs `top`: once with `json`, else until interrupted.
pub fn run(c: &Client, ca: Option<&Path>, a: TopArgs, json: bool) -> Result<(), CliError> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(SCRAPE_TIMEOUT));
    if let Some(ca) = ca {
        config = config.tls_config(crate::client::tls_config(ca)?);
    }
    let agent: ureq::Agent = config.build().into();
    if json {
        let s = sample(c, &agent, &a.name, a.interval)?;
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    loop {
        let text = match sample(c, &agent, &a.name, a.interval) {
            Ok(s) => render(&s),
            Err(e) => format!("keyway top — cluster {}: {e}\n", a.name),
        };
        // Clear the screen, home the cursor, draw.
        print!("\x1b[2J\x1b[H{text}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(admin: &str, tls: bool) -> DataPlaneView {
        DataPlaneView {
            id: "dp1".into(),
            cluster: "c".into(),
            address: "10.0.0.5:6379".into(),
            connected: true,
            acked_version: 7,
            drained: true,
            lease_remaining_ms: Some(2500),
            fenced: false,
            admin: admin.into(),
            admin_tls: tls,
        }
    }

    #[test]
    fn the_metrics_url_comes_from_the_admin_endpoint() {
        assert_eq!(metrics_url(&plane("", false)), None);
        assert_eq!(
            metrics_url(&plane("10.0.0.5:9000", false)).as_deref(),
            Some("http://10.0.0.5:9000/metrics")
        );
        assert_eq!(
            metrics_url(&plane("0.0.0.0:9000", true)).as_deref(),
            Some("https://10.0.0.5:9000/metrics"),
            "an unspecified host is reached at the client address's host"
        );
    }

    fn scrape_text(
        ok: u64,
        err: u64,
        fast: u64,
        slow: u64,
        conns: u64,
        backend: u64,
    ) -> Vec<Sample> {
        let total = fast + slow;
        parse(&format!(
            "keyway_requests_total{{command=\"get\",result=\"ok\"}} {ok}\n\
             keyway_requests_total{{command=\"get\",result=\"error\"}} {err}\n\
             keyway_request_duration_seconds_bucket{{family=\"string\",le=\"0.0005\"}} {fast}\n\
             keyway_request_duration_seconds_bucket{{family=\"string\",le=\"0.001\"}} {total}\n\
             keyway_request_duration_seconds_bucket{{family=\"string\",le=\"+Inf\"}} {total}\n\
             keyway_request_duration_seconds_count{{family=\"string\"}} {total}\n\
             keyway_client_connections {conns}\n\
             keyway_backend_requests_total{{group=\"g1\"}} {backend}\n\
             keyway_backend_request_duration_seconds_bucket{{group=\"g1\",le=\"0.001\"}} {backend}\n\
             keyway_backend_request_duration_seconds_bucket{{group=\"g1\",le=\"+Inf\"}} {backend}\n"
        ))
        .expect("canned text parses")
    }

    #[test]
    fn a_sample_is_rates_and_quantiles_of_the_interval() {
        let a = scrape_text(100, 0, 100, 0, 3, 50);
        // In 2 s: 180 ok and 20 errors; 100 fast and 100 slow.
        let b = scrape_text(280, 20, 200, 100, 4, 250);
        let p = plane_sample(&plane("10.0.0.5:9000", false), None, &a, &b, 2.0);
        assert_eq!(p.requests_per_s, 100.0);
        assert_eq!(p.errors_per_s, 10.0);
        assert_eq!(p.client_connections, Some(4.0));
        let p50 = p.p50_ms.expect("observations");
        assert!(
            (p50 - 0.5).abs() < 1e-9,
            "rank 100 of 200 ends the fast bucket: {p50}"
        );
        let p99 = p.p99_ms.expect("observations");
        assert!(
            (p99 - 0.99).abs() < 1e-9,
            "rank 198: 98% into 0.5..1 ms: {p99}"
        );
        let g = group_samples(&[(&a, &b), (&a, &b)], 2.0);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].requests_per_s, 200.0, "summed over data planes");
        assert_eq!(g[0].p99_ms.map(|v| (v * 1000.0).round()), Some(990.0));
        let shown = render(&TopSample {
            cluster: "c".into(),
            interval_s: 2.0,
            dataplanes: vec![p],
            groups: g,
            migrations: Vec::new(),
        });
        assert!(shown.contains("dp1") && shown.contains("100.0"), "{shown}");
    }
}
