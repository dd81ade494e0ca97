//! The leader-takeover benchmark: etcd, three keyway-ctlds on it, one Redis
//! group and one keyway data plane that knows all three ctlds, with a client
//! INCRing through the data plane. Each run `kill -9`s the active ctld and
//! times, from the kill, until a standby says it is active, until the data
//! plane is in session with it, and until an API write succeeds; then the
//! killed ctld is started again (as a standby) for the next run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use crate::harness::{date_and_commit, machine};
use crate::procs::{free_port, managed_keyway, Proc, TempDir};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Kills per election TTL.
    pub runs: usize,
    /// Election TTLs to measure, in seconds.
    pub ttls: Vec<u64>,
    /// Where keyway, keyway-ctld and keywayctl are.
    pub bin_dir: PathBuf,
}

/// One kill.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Seconds from the kill until a standby said it is active.
    pub active_s: f64,
    /// … until the data plane was in session with it.
    pub session_s: f64,
    /// … until an API write (through any ctld) succeeded.
    pub write_s: f64,
    /// Client INCRs that failed from the kill until the write.
    pub client_errors: u64,
}

/// The runs of one election TTL.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// The election TTL, seconds.
    pub ttl_s: u64,
    /// Every run.
    pub runs: Vec<Run>,
    /// Client INCRs that failed over all runs.
    pub client_errors: u64,
    /// Client INCRs that succeeded over all runs.
    pub client_ok: u64,
}

/// Everything a benchmark run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When.
    pub date: String,
    /// At which commit.
    pub commit: String,
    /// The machine.
    pub machine: std::collections::BTreeMap<String, String>,
    /// The command line.
    pub command: String,
    /// Per TTL.
    pub series: Vec<Series>,
}

/// A bare HTTP request: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// One reply line (a short one: INCR's).
fn read_line(s: &mut TcpStream, buf: &mut [u8]) -> Option<String> {
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n") {
        let n = s.read(buf).ok().filter(|&n| n > 0)?;
        got.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&got).trim_end().to_string())
}

/// A ctld on etcd.
struct Ctld {
    api: SocketAddr,
    control: SocketAddr,
    proc: Option<Proc>,
}

impl Ctld {
    fn start(
        bin: &Path,
        etcd: &str,
        ttl: u64,
        api: SocketAddr,
        control: SocketAddr,
    ) -> anyhow::Result<Ctld> {
        let mut cmd = Command::new(bin);
        cmd.args(["--store", &format!("etcd:{etcd}")])
            .args(["--election-ttl", &format!("{ttl}s")])
            .args(["--api", &api.to_string(), "--control", &control.to_string()])
            .env("KEYWAY_LOG", "warn");
        let proc = Proc::spawn("keyway-ctld", api, &cmd, None)?;
        Ok(Ctld {
            api,
            control,
            proc: Some(proc),
        })
    }

    fn active(&self) -> bool {
        self.proc.is_some()
            && http(self.api, "GET", "/v1/leader", "")
                .is_some_and(|(s, b)| s == 200 && b.contains("\"active\":true"))
    }
}

fn wait(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let t = Instant::now();
    while !f() {
        anyhow::ensure!(
            t.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(t.elapsed())
}

/// The runs of one election TTL.
fn series(o: &Options, ttl: u64) -> anyhow::Result<Series> {
    let bin = |name: &str| -> anyhow::Result<PathBuf> {
        let p = o.bin_dir.join(name);
        anyhow::ensure!(p.exists(), "{} is missing (build it first)", p.display());
        Ok(p)
    };
    let dir = TempDir::new("bench");
    // The test kit's etcd: on loopback ports, started again on new ones
    // should another process take one first; dies with this process.
    let etcd = keyway_testkit::Etcd::start();
    let etcd_url = etcd.url.clone();
    let redis = Proc::redis(&dir.0, None)?;
    let ctld_bin = bin("keyway-ctld")?;
    let mut ctlds = Vec::new();
    for _ in 0..3 {
        let api: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let control: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        ctlds.push(Ctld::start(&ctld_bin, &etcd_url, ttl, api, control)?);
    }
    wait("a ctld to be active", Duration::from_secs(30), || {
        ctlds.iter().any(Ctld::active)
    })?;
    let leader = ctlds
        .iter()
        .find(|c| c.active())
        .context("an active ctld")?;
    let create = format!(
        r#"{{"name":"bench","groups":[{{"name":"g1","master":"{}"}}]}}"#,
        redis.addr
    );
    let (status, body) = http(leader.api, "POST", "/v1/clusters", &create).context("create")?;
    anyhow::ensure!(status == 201 || status == 200, "create: {status} {body}");
    let controls: Vec<String> = ctlds.iter().map(|c| c.control.to_string()).collect();
    let dp = managed_keyway(&bin("keyway")?, &dir.0, &controls.join(","))?;
    let listen = dp.addr;
    // Serving once it holds a lease (until then it answers -TRYAGAIN).
    wait("the data plane to serve", Duration::from_secs(30), || {
        TcpStream::connect(listen).is_ok_and(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 256];
            s.write_all(b"INCR bench:probe\r\n").is_ok()
                && read_line(&mut s, &mut buf).is_some_and(|r| r.starts_with(':'))
        })
    })?;

    // A client INCRing through the data plane all along.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
        std::thread::spawn(move || {
            let mut s = match TcpStream::connect(listen) {
                Ok(s) => s,
                Err(_) => return,
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::Relaxed) {
                let reply = if s.write_all(b"INCR bench:ctr\r\n").is_ok() {
                    read_line(&mut s, &mut buf)
                } else {
                    None
                };
                match reply {
                    Some(r) if r.starts_with(':') => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("client error: {other:?}");
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let connected = |api: SocketAddr| {
        http(api, "GET", "/v1/dataplanes", "").is_some_and(|(s, b)| {
            s == 200
                && serde_json::from_str::<Value>(&b)
                    .ok()
                    .and_then(|v| {
                        v.as_array()
                            .map(|a| a.iter().any(|d| d["connected"] == true))
                    })
                    .unwrap_or(false)
        })
    };
    let leader_api = ctlds.iter().find(|c| c.active()).context("active")?.api;
    wait(
        "the data plane to be in session",
        Duration::from_secs(30),
        || connected(leader_api),
    )?;
    ok.store(0, Ordering::Relaxed);
    errors.store(0, Ordering::Relaxed);

    let mut runs = Vec::new();
    for n in 0..o.runs {
        // A whole lease's worth of renewals before each kill.
        std::thread::sleep(Duration::from_secs(2));
        let old = ctlds
            .iter()
            .position(Ctld::active)
            .context("an active ctld")?;
        let errors_before = errors.load(Ordering::Relaxed);
        let killed = Instant::now();
        drop(ctlds[old].proc.take());
        let t_active = wait("a standby to be active", Duration::from_secs(60), || {
            ctlds.iter().any(Ctld::active)
        })?;
        let new = ctlds.iter().position(Ctld::active).context("active")?;
        let api = ctlds[new].api;
        wait("the data plane's session", Duration::from_secs(60), || {
            connected(api)
        })?;
        let t_session = killed.elapsed();
        let apis: Vec<SocketAddr> = ctlds.iter().map(|c| c.api).collect();
        let zone = format!(r#"{{"zone":"z{n}"}}"#);
        wait("an API write", Duration::from_secs(60), || {
            apis.iter().any(|&a| {
                http(a, "PATCH", "/v1/clusters/bench/groups/g1", &zone)
                    .is_some_and(|(s, _)| s == 200)
            })
        })?;
        let t_write = killed.elapsed();
        let run = Run {
            active_s: (t_active).as_secs_f64(),
            session_s: t_session.as_secs_f64(),
            write_s: t_write.as_secs_f64(),
            client_errors: errors.load(Ordering::Relaxed) - errors_before,
        };
        eprintln!("ttl {ttl}s run {}: {run:?}", n + 1);
        runs.push(run);
        let (api, control) = (ctlds[old].api, ctlds[old].control);
        ctlds[old] = Ctld::start(&ctld_bin, &etcd_url, ttl, api, control)?;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = client.join();
    Ok(Series {
        ttl_s: ttl,
        runs,
        client_errors: errors.load(Ordering::Relaxed),
        client_ok: ok.load(Ordering::Relaxed),
    })
}

/// Runs every series.
pub fn run(o: &Options, command: String) -> anyhow::Result<Report> {
    let series = o
        .ttls
        .iter()
        .map(|&t| series(o, t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (date, commit) = date_and_commit();
    Ok(Report {
        date,
        commit,
        machine: machine(),
        command,
        series,
    })
}

fn p50_max(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (
        s.get(s.len() / 2).copied().unwrap_or(0.0),
        s.last().copied().unwrap_or(0.0),
    )
}

/// The report as the RESULTS.md section.
pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "Measured {} at commit `{}` on {}.\n\nCommand: `{}`\n\n",
        r.date,
        r.commit,
        r.machine.get("cpu").cloned().unwrap_or_default(),
        r.command
    );
    s.push_str(
        "Seconds from `kill -9` of the active keyway-ctld until: a standby says it is active \
         (`GET /v1/leader`); the data plane is in session with it; an API write succeeds. \
         Three ctlds on one etcd, one data plane given all three control addresses, a client \
         INCRing through it all along.\n\n",
    );
    s.push_str("| election TTL | runs | active p50 / max | session p50 / max | API write p50 / max | client errors / requests |\n|---|---|---|---|---|---|\n");
    for x in &r.series {
        let col = |f: fn(&Run) -> f64| {
            let (p, m) = p50_max(&x.runs.iter().map(f).collect::<Vec<_>>());
            format!("{p:.2} / {m:.2}")
        };
        s.push_str(&format!(
            "| {}s | {} | {} | {} | {} | {} / {} |\n",
            x.ttl_s,
            x.runs.len(),
            col(|r| r.active_s),
            col(|r| r.session_s),
            col(|r| r.write_s),
            x.client_errors,
            x.client_ok + x.client_errors
        ));
    }
    s
}

/// Writes the report's JSON under `out` and replaces the takeover section
/// of `results_md` (unless it is "-").
pub fn save(r: &Report, out: &Path, results_md: &str) -> anyhow::Result<()> {
    crate::harness::save_section(
        r,
        (&r.date, &r.commit),
        ("takeover", "takeover"),
        out,
        results_md,
        (
            "keyway-ctld leader takeover",
            "`bench/takeover.sh` (see `keyway-takeover-bench --help`).",
        ),
        &markdown(r),
    )
}
