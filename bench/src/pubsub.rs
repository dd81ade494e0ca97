//! The Pub/Sub fan-out benchmark: `subscribers` clients subscribed to one
//! channel, one publisher sending `messages` PUBLISHes (a window of them in
//! flight), against direct Redis and through keyway (one core, one Redis
//! group) in interleaved rounds. It measures messages delivered per second
//! (every subscriber receiving every message: from the first PUBLISH until
//! the last subscriber has its last message) and the CPU each process spent
//! per message delivered.
//!
//! Direct Redis writes each message to each of its subscribers; keyway's
//! core is ONE subscriber at Redis and copies each message to its clients.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::harness::{date_and_commit, machine, median};
use crate::procs::{cpu_seconds, Proc, TempDir};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Subscribed clients.
    pub subscribers: usize,
    /// Messages published per round.
    pub messages: usize,
    /// Payload bytes per message.
    pub payload: usize,
    /// PUBLISHes in flight at once.
    pub window: usize,
    /// Interleaved rounds.
    pub rounds: usize,
    /// The CPU keyway's one core runs on.
    pub cpu: usize,
    /// Where keyway is.
    pub bin_dir: PathBuf,
}

/// One round against one target.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Round number.
    pub round: usize,
    /// Messages delivered per second (messages × subscribers / elapsed).
    pub delivered_per_s: f64,
    /// Seconds from the first PUBLISH to the last message received.
    pub elapsed_s: f64,
    /// Keyway's CPU µs per message delivered (none for direct Redis).
    pub proxy_cpu_us: Option<f64>,
    /// Redis's CPU µs per message delivered.
    pub redis_cpu_us: f64,
}

/// Medians over rounds for one target.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Messages delivered per second.
    pub delivered_per_s: f64,
    /// Keyway's CPU µs per message delivered.
    pub proxy_cpu_us: Option<f64>,
    /// Redis's CPU µs per message delivered.
    pub redis_cpu_us: f64,
    /// Median over rounds of the ratio to direct Redis's delivery rate.
    pub ratio_to_direct: f64,
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When.
    pub date: String,
    /// At which commit.
    pub commit: String,
    /// The machine.
    pub machine: BTreeMap<String, String>,
    /// The command line.
    pub command: String,
    /// Subscribers, messages, payload bytes.
    pub subscribers: usize,
    /// Messages per round.
    pub messages: usize,
    /// Payload bytes.
    pub payload: usize,
    /// Per target, every round.
    pub samples: BTreeMap<String, Vec<Sample>>,
    /// Per target.
    pub summary: BTreeMap<String, Summary>,
}

fn request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn bulk_len(n: usize) -> usize {
    1 + n.to_string().len() + 2 + n + 2
}

/// Runs one round against `addr`: subscribes, publishes, waits for every
/// delivery; returns the elapsed seconds.
fn round(addr: SocketAddr, o: &Options, channel: &str) -> anyhow::Result<f64> {
    let confirm = request(&[b"SUBSCRIBE", channel.as_bytes()]);
    let confirm_len = 4 + bulk_len(9) + bulk_len(channel.len()) + 4;
    let msg_len = 4 + bulk_len(7) + bulk_len(channel.len()) + bulk_len(o.payload);
    let mut poll = Poll::new()?;
    let mut subs = Vec::with_capacity(o.subscribers);
    for i in 0..o.subscribers {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.write_all(&confirm)?;
        let mut buf = vec![0u8; confirm_len];
        s.read_exact(&mut buf)?;
        s.set_nonblocking(true)?;
        let mut s = MioStream::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)?;
        subs.push((s, 0usize));
    }
    // Let the subscription reach Redis (keyway confirms before Redis does).
    std::thread::sleep(Duration::from_millis(200));
    let want = o.messages * msg_len;
    let (messages, window, payload) = (o.messages, o.window, vec![b'x'; o.payload]);
    let channel_bytes = channel.as_bytes().to_vec();
    let start = Instant::now();
    let publisher = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut p = TcpStream::connect(addr)?;
        p.set_nodelay(true)?;
        let one = request(&[b"PUBLISH", &channel_bytes, &payload]);
        let (mut sent, mut answered) = (0, 0);
        let mut buf = vec![0u8; 64 << 10];
        while answered < messages {
            let mut batch = Vec::new();
            while sent < messages && sent - answered < window {
                batch.extend_from_slice(&one);
                sent += 1;
            }
            p.write_all(&batch)?;
            let n = p.read(&mut buf)?;
            anyhow::ensure!(n > 0, "the publisher's connection closed");
            answered += buf[..n].iter().filter(|&&b| b == b'\n').count();
        }
        Ok(())
    });
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 << 10];
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while done < subs.len() {
        anyhow::ensure!(Instant::now() < deadline, "deliveries did not finish");
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for ev in events.iter() {
            let (s, got) = &mut subs[ev.token().0];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => anyhow::bail!("a subscriber's connection closed"),
                    Ok(n) => {
                        *got += n;
                        if *got == want {
                            done += 1;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    publisher
        .join()
        .map_err(|_| anyhow::anyhow!("the publisher panicked"))??;
    Ok(elapsed)
}

/// Runs the benchmark.
pub fn run(o: &Options, command: String) -> anyhow::Result<Report> {
    let dir = TempDir::new("pubsub-bench");
    let redis = Proc::redis(dir.path(), None)?;
    let keyway = Proc::keyway(
        &o.bin_dir.join("keyway"),
        dir.path(),
        "keyway",
        redis.addr,
        o.cpu,
        "",
    )
    .context("starting keyway")?;
    let targets = [
        ("redis", redis.addr, None),
        ("keyway", keyway.addr, Some(keyway.pid())),
    ];
    let deliveries = (o.messages * o.subscribers) as f64;
    let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for r in 0..o.rounds {
        for (name, addr, proxy) in targets {
            let channel = format!("bench:{r}:{name}");
            let redis_before = cpu_seconds(redis.pid())?;
            let proxy_before = proxy.map(cpu_seconds).transpose()?;
            let elapsed = round(addr, o, &channel)?;
            let redis_cpu = cpu_seconds(redis.pid())? - redis_before;
            let proxy_cpu = match (proxy, proxy_before) {
                (Some(p), Some(b)) => Some(cpu_seconds(p)? - b),
                _ => None,
            };
            let s = Sample {
                round: r,
                delivered_per_s: deliveries / elapsed,
                elapsed_s: elapsed,
                proxy_cpu_us: proxy_cpu.map(|c| c * 1e6 / deliveries),
                redis_cpu_us: redis_cpu * 1e6 / deliveries,
            };
            eprintln!(
                "round {r} {name}: {:.0} messages delivered/s",
                s.delivered_per_s
            );
            samples.entry(name.to_string()).or_default().push(s);
        }
    }
    let direct: Vec<f64> = samples["redis"].iter().map(|s| s.delivered_per_s).collect();
    let summary = samples
        .iter()
        .map(|(t, v)| {
            let ratios = v
                .iter()
                .zip(&direct)
                .map(|(s, d)| s.delivered_per_s / d)
                .collect();
            let proxy: Vec<f64> = v.iter().filter_map(|s| s.proxy_cpu_us).collect();
            (
                t.clone(),
                Summary {
                    delivered_per_s: median(v.iter().map(|s| s.delivered_per_s).collect()),
                    proxy_cpu_us: (!proxy.is_empty()).then(|| median(proxy)),
                    redis_cpu_us: median(v.iter().map(|s| s.redis_cpu_us).collect()),
                    ratio_to_direct: median(ratios),
                },
            )
        })
        .collect();
    let (date, commit) = date_and_commit();
    Ok(Report {
        date,
        commit,
        machine: machine(),
        command,
        subscribers: o.subscribers,
        messages: o.messages,
        payload: o.payload,
        samples,
        summary,
    })
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "Measured {} at commit `{}` on {} ({} CPUs; {}).\n\nCommand: `{}`\n\n\
         {} subscribers of one channel, {} messages of {} bytes per round; medians over rounds. \
         Delivered: messages × subscribers / time from the first PUBLISH to the last message \
         received. CPU per message delivered.\n\n\
         | target | delivered/s | × redis | keyway CPU µs/msg | Redis CPU µs/msg |\n|---|---|---|---|---|\n",
        r.date,
        r.commit,
        r.machine.get("cpu").map_or("?", String::as_str),
        r.machine.get("cpus").map_or("?", String::as_str),
        r.machine.get("redis").map_or("?", String::as_str),
        r.command,
        r.subscribers,
        r.messages,
        r.payload,
    );
    for (t, x) in &r.summary {
        s.push_str(&format!(
            "| {t} | {:.0} | {:.2} | {} | {:.3} |\n",
            x.delivered_per_s,
            x.ratio_to_direct,
            x.proxy_cpu_us
                .map_or("-".to_string(), |c| format!("{c:.3}")),
            x.redis_cpu_us
        ));
    }
    s
}

/// Saves the JSON and the RESULTS.md section.
pub fn save(r: &Report, out: &Path, results_md: &str) -> anyhow::Result<()> {
    crate::harness::save_section(
        r,
        (&r.date, &r.commit),
        ("pubsub", "pubsub"),
        out,
        results_md,
        (
            "Pub/Sub fan-out",
            "`bench/pubsub.sh` (see `keyway-pubsub-bench --help`).",
        ),
        &markdown(r),
    )
}
