//! The high-availability benchmark: how long a group's writes stop when its
//! master is killed (`kill -9`, healed by keyway-ctld alone), for each
//! `down_after`, and how long a switchover (`keywayctl failover`) pauses
//! them. One group (a master and a replica) behind one keyway; a writer
//! sends SET to the group through keyway without pause and records when
//! each write was answered.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use crate::harness::{date_and_commit, machine};
use crate::migrate::system::{command, wait_serving, Ctl};
use crate::procs::{ctld_on_free_ports, managed_keyway, Proc, TempDir};

/// What to measure.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Kills per `down_after`.
    pub kills: usize,
    /// The `down_after` values, milliseconds.
    pub down_after_ms: Vec<u64>,
    /// How often ctld checks each server, milliseconds.
    pub check_interval_ms: u64,
    /// Switchovers.
    pub switchovers: usize,
    /// Where the binaries are.
    pub bin_dir: PathBuf,
}

/// p50 and max of a series, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Each one.
    pub each_ms: Vec<u64>,
    /// Median.
    pub p50_ms: u64,
    /// Largest.
    pub max_ms: u64,
}

impl Series {
    fn of(mut v: Vec<u64>) -> Series {
        let each_ms = v.clone();
        v.sort_unstable();
        Series {
            p50_ms: v.get(v.len() / 2).copied().unwrap_or(0),
            max_ms: v.last().copied().unwrap_or(0),
            each_ms,
        }
    }
}

/// Kills with one `down_after`.
#[derive(Debug, Clone, Serialize)]
pub struct Kills {
    /// The setting, milliseconds.
    pub down_after_ms: u64,
    /// From `kill -9` to the first write answered by the new master.
    pub to_first_write: Series,
    /// Writes answered OK before the kill that the new master lacks (the
    /// writer's own keys, async replication), per kill.
    pub lost_writes: Vec<u64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When.
    pub date: String,
    /// Which commit.
    pub commit: String,
    /// Where.
    pub machine: std::collections::BTreeMap<String, String>,
    /// The command line.
    pub command: String,
    /// Settings.
    pub options: Options,
    /// One entry per `down_after`.
    pub kills: Vec<Kills>,
    /// Longest time a write waited during each switchover.
    pub switchover_pause: Series,
    /// How long ctld took from the request to the new version, per
    /// switchover.
    pub switchover_took: Series,
}

/// The system under test.
struct System {
    dir: TempDir,
    ctl: Ctl,
    /// Servers by address; `None` while killed.
    servers: Vec<(SocketAddr, Option<Proc>)>,
    listen: SocketAddr,
    _ctld: Proc,
    _keyway: Proc,
}

impl System {
    fn start(o: &Options) -> anyhow::Result<System> {
        let bin = |name: &str| -> anyhow::Result<PathBuf> {
            let p = o.bin_dir.join(name);
            anyhow::ensure!(p.exists(), "{} is missing (build it first)", p.display());
            Ok(p)
        };
        let dir = TempDir::new("bench");
        let m = Proc::redis(&dir.0, None)?;
        let r = Proc::redis_replica(&dir.0, m.addr)?;
        let (ctld, control) = ctld_on_free_ports(&bin("keyway-ctld")?, &dir.0)?;
        let api = ctld.addr;
        let ctl = Ctl {
            bin: bin("keywayctl")?,
            api,
        };
        ctl.json(&[
            "cluster",
            "create",
            "bench",
            "--group",
            &format!("g1={}", m.addr),
        ])?;
        ctl.json(&["group", "bench", "g1", "--add-replica", &r.addr.to_string()])?;
        let keyway = managed_keyway(&bin("keyway")?, &dir.0, &control.to_string())?;
        let listen = keyway.addr;
        wait_serving(listen)?;
        Ok(System {
            dir,
            ctl,
            servers: vec![(m.addr, Some(m)), (r.addr, Some(r))],
            listen,
            _ctld: ctld,
            _keyway: keyway,
        })
    }

    fn group(&self) -> anyhow::Result<Value> {
        let c = self.ctl.json(&["cluster", "show", "bench"])?;
        Ok(c["groups"][0].clone())
    }

    /// Waits until the group's replica is listed, follows the master, and
    /// has caught up.
    fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let g = self.group()?;
            if let (Some(m), Some(r)) = (g["master"].as_str(), g["replicas"][0]["address"].as_str())
            {
                let info = info(r.parse()?).unwrap_or_default();
                let minfo = info_offset(m.parse()?);
                let port = m.rsplit(':').next().unwrap_or_default();
                if g["demoting"].is_null()
                    && info.contains(&format!("master_port:{port}"))
                    && info.contains("master_link_status:up")
                    && minfo.is_some()
                {
                    return Ok(());
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "the group did not heal: {g}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `INFO replication` of `addr`, whole.
fn info(addr: SocketAddr) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    use std::io::{Read, Write};
    s.write_all(b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n")?;
    let mut buf = vec![0u8; 16 << 10];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn info_offset(addr: SocketAddr) -> Option<u64> {
    info(addr)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A writer: SET `w:N` = N through keyway, one at a time, forever; records
/// when each write that was answered OK was sent and answered.
struct Writer {
    stop: Arc<AtomicBool>,
    /// (answered, N, sent).
    oks: Arc<Mutex<Vec<(Instant, u64, Instant)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(addr: SocketAddr) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let oks = Arc::new(Mutex::new(Vec::new()));
        let (s, o) = (stop.clone(), oks.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("{{w}}:{n}");
                let sent = Instant::now();
                match command(addr, &["SET", &key, &n.to_string()]) {
                    Ok(r) if r == "+OK" => o.lock().unwrap().push((Instant::now(), n, sent)),
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Writer {
            stop,
            oks,
            thread: Some(thread),
        }
    }

    /// When the first write sent after `t` was answered OK.
    fn first_ok_after(&self, t: Instant) -> Option<Instant> {
        self.oks
            .lock()
            .unwrap()
            .iter()
            .find(|(_, _, sent)| *sent > t)
            .map(|x| x.0)
    }

    /// Writes answered OK before `t`.
    fn acked_before(&self, t: Instant) -> Vec<u64> {
        self.oks
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _, _)| *at < t)
            .map(|x| x.1)
            .collect()
    }

    /// The longest wait between two answers within `from..to`.
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let oks = self.oks.lock().unwrap();
        let mut prev = from;
        let mut gap = Duration::ZERO;
        for (at, _, _) in oks.iter().filter(|(at, _, _)| *at > from && *at <= to) {
            gap = gap.max(*at - prev);
            prev = *at;
        }
        gap
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the benchmark.
pub fn run(o: &Options, command_line: String) -> anyhow::Result<Report> {
    let mut kills = Vec::new();
    for &down_after in &o.down_after_ms {
        let mut sys = System::start(o)?;
        sys.ctl.json(&[
            "cluster",
            "set",
            "bench",
            "--check-interval",
            &format!("{}ms", o.check_interval_ms),
            "--down-after",
            &format!("{down_after}ms"),
        ])?;
        let mut times = Vec::new();
        let mut lost = Vec::new();
        for i in 0..o.kills {
            sys.wait_healthy()?;
            let writer = Writer::start(sys.listen);
            std::thread::sleep(Duration::from_millis(500));
            let master: SocketAddr = sys.group()?["master"]
                .as_str()
                .context("a master")?
                .parse()?;
            let slot = sys
                .servers
                .iter_mut()
                .find(|(a, _)| *a == master)
                .context("the master is one of ours")?;
            drop(slot.1.take());
            // Reaped: nothing it answers from now on.
            let killed = Instant::now();
            let first = loop {
                if let Some(t) = writer.first_ok_after(killed) {
                    break t;
                }
                anyhow::ensure!(
                    killed.elapsed() < Duration::from_secs(120),
                    "writes did not resume"
                );
                std::thread::sleep(Duration::from_millis(5));
            };
            let took = (first - killed).as_millis() as u64;
            let acked = writer.acked_before(killed);
            drop(writer);
            // Acknowledged writes the new master lacks.
            let new_master: SocketAddr = sys.group()?["master"]
                .as_str()
                .context("a master")?
                .parse()?;
            let mut missing = 0u64;
            for n in acked.iter().rev().take(2000) {
                if command(new_master, &["EXISTS", &format!("{{w}}:{n}")])? == ":0" {
                    missing += 1;
                }
            }
            let _ = command(new_master, &["FLUSHALL"]);
            eprintln!("down_after {down_after} ms, kill {}: writes resumed after {took} ms, {missing} acknowledged writes lost", i + 1);
            times.push(took);
            lost.push(missing);
            // The old master comes back, empty, and is made a replica.
            let port = master.port();
            let back = Proc::redis_on(&sys.dir.0, port)?;
            slot_of(&mut sys.servers, master).1 = Some(back);
        }
        kills.push(Kills {
            down_after_ms: down_after,
            to_first_write: Series::of(times),
            lost_writes: lost,
        });
    }
    // Switchovers.
    let sys = System::start(o)?;
    let mut pauses = Vec::new();
    let mut took = Vec::new();
    for i in 0..o.switchovers {
        sys.wait_healthy()?;
        let writer = Writer::start(sys.listen);
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        let r = sys
            .ctl
            .json(&["failover", "bench", "--group", "g1", "--wait"])?;
        let t1 = Instant::now();
        std::thread::sleep(Duration::from_millis(100));
        let pause = writer
            .longest_gap(t0, t1 + Duration::from_millis(100))
            .as_millis() as u64;
        drop(writer);
        anyhow::ensure!(r["outcome"] == "done", "switchover {}: {r}", i + 1);
        let ms = r["finished_ms"].as_u64().unwrap_or(0) - r["started_ms"].as_u64().unwrap_or(0);
        eprintln!(
            "switchover {}: writes paused at most {pause} ms; ctld took {ms} ms",
            i + 1
        );
        pauses.push(pause);
        took.push(ms);
    }
    let (date, commit) = date_and_commit();
    Ok(Report {
        date,
        commit,
        machine: machine(),
        command: command_line,
        options: o.clone(),
        kills,
        switchover_pause: Series::of(pauses),
        switchover_took: Series::of(took),
    })
}

fn slot_of(
    servers: &mut [(SocketAddr, Option<Proc>)],
    a: SocketAddr,
) -> &mut (SocketAddr, Option<Proc>) {
    servers
        .iter_mut()
        .find(|(x, _)| *x == a)
        .expect("a server of ours")
}

/// The report as markdown.
pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "Run {} at {} on {} ({} CPUs): one group (master + replica) behind one keyway, \
         ctld checking every {} ms; a writer SETs through keyway without pause.\n\n\
         | `down_after` | kills | kill -9 → first write, p50 | max | target (down_after + 2 s) | acknowledged writes lost per kill |\n\
         |---|---|---|---|---|---|\n",
        r.commit,
        r.date,
        r.machine.get("cpu").map_or("?", String::as_str),
        r.machine.get("cpus").map_or("?", String::as_str),
        r.options.check_interval_ms,
    );
    for k in &r.kills {
        s.push_str(&format!(
            "| {} ms | {} | {} ms | {} ms | {} ms | {:?} |\n",
            k.down_after_ms,
            k.to_first_write.each_ms.len(),
            k.to_first_write.p50_ms,
            k.to_first_write.max_ms,
            k.down_after_ms + 2000,
            k.lost_writes
        ));
    }
    s.push_str(&format!(
        "\nSwitchover (`keywayctl failover --wait`, {} runs): writes paused p50 {} ms, max {} ms \
         (target < 1000 ms); ctld's whole switchover p50 {} ms, max {} ms.\n",
        r.switchover_pause.each_ms.len(),
        r.switchover_pause.p50_ms,
        r.switchover_pause.max_ms,
        r.switchover_took.p50_ms,
        r.switchover_took.max_ms
    ));
    s
}

/// Writes the JSON under `out` and replaces the failover section of
/// `results_md`.
pub fn save(r: &Report, out: &std::path::Path, results_md: &str) -> anyhow::Result<()> {
    crate::harness::save_section(
        r,
        (&r.date, &r.commit),
        ("failover", "failover"),
        out,
        results_md,
        (
            "High availability: failover and switchover",
            "`bench/failover.sh` (see `keyway-ha-bench --help`).",
        ),
        &markdown(r),
    )
}
