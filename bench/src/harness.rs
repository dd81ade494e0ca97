//! The side-by-side harness: one Redis, and in front of it twemproxy and keyway
//! (one instance per transport), all on loopback. Every load runs against every
//! target in interleaved rounds (A B C A B C …) so that drift on a shared
//! machine hits all of them alike; the report gives medians, medians of
//! per-round throughput ratios to direct Redis, and CPU microseconds per
//! request of each proxy (and of Redis behind it) from the scheduler's run
//! time of its threads (`/proc/PID/task/*/schedstat`).
//!
//! The transaction load (`MULTI`, `SET`, `INCR`, `EXEC` as one request) runs
//! on direct Redis and keyway only: twemproxy has no transactions (it does
//! not support `MULTI`/`EXEC`: it closes the connection); its row in the
//! report says so.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::load::{self, parse_mix, LoadSpec, Stop};
use crate::procs::{cpu_seconds, Proc, TempDir};

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Interleaved rounds; medians are over rounds.
    pub rounds: usize,
    /// Requests per run.
    pub requests: u64,
    /// The keyway binary.
    pub keyway: PathBuf,
    /// Keyway transports to compare (one keyway instance each).
    pub transports: Vec<String>,
    /// Another keyway binary (an earlier build) run beside it as
    /// `keyway-before`, on the default transport: a change measured against
    /// what it changed, in one run.
    pub baseline: Option<PathBuf>,
    /// Include twemproxy.
    pub twemproxy: bool,
    /// CPU for the proxies (each proxy runs alone on it while measured).
    pub proxy_cpu: usize,
    /// CPU for Redis; `None` lets the scheduler place it.
    pub redis_cpu: Option<usize>,
    /// Only the redis-benchmark reference loads.
    pub reference_only: bool,
    /// Only the transaction load.
    pub transactions_only: bool,
    /// Open-loop rate for the latency load, requests per second.
    pub open_rate: f64,
    /// Also run keyway (default transport) with clients over TLS, as
    /// `keyway-tls`: redis-benchmark `--tls` against its TLS port (the
    /// keyway-load loads speak no TLS and are not run on it).
    pub tls: bool,
    /// Also run keyway (default transport) with client users, as
    /// `keyway-acl`: a password on the default user and an ACL user `app`
    /// with a key pattern and a category removed (`on >… ~key:* &* +@all
    /// -@dangerous`); redis-benchmark authenticates as `app`, so every
    /// request passes the command, key and category checks (its keys,
    /// `key:…`, match the pattern). The keyway-load loads do not
    /// authenticate and are not run on it.
    pub acl: bool,
    /// More keyway targets (default transport), each named and given
    /// config lines appended to its file (`[metrics]\nlatency = false`,
    /// say), to measure a setting's cost side by side.
    pub variants: Vec<(String, String)>,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Requests per second.
    pub rps: f64,
    /// The proxy's CPU µs per request (none for direct Redis).
    pub proxy_cpu_us: Option<f64>,
    /// Redis's CPU µs per request.
    pub redis_cpu_us: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Error replies.
    pub errors: u64,
}

/// The medians of one load on one target.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Median requests per second.
    pub rps: f64,
    /// Median over rounds of this target's throughput / direct Redis's.
    pub ratio_to_direct: f64,
    /// Median proxy CPU µs per request.
    pub proxy_cpu_us: Option<f64>,
    /// Median Redis CPU µs per request.
    pub redis_cpu_us: f64,
    /// Median p50 latency, µs.
    pub p50_us: f64,
    /// Median p99 latency, µs.
    pub p99_us: f64,
    /// Errors in all rounds.
    pub errors: u64,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When (UTC, RFC 3339).
    pub date: String,
    /// `git describe` of the tree measured.
    pub commit: String,
    /// The machine.
    pub machine: BTreeMap<String, String>,
    /// The command line.
    pub command: String,
    /// Rounds run.
    pub rounds: usize,
    /// Requests per run.
    pub requests: u64,
    /// Targets, in run order.
    pub targets: Vec<String>,
    /// Loads, in run order, with what each means.
    pub loads: Vec<(String, String)>,
    /// Loads a target did not run, and why: (load, target, reason).
    pub not_run: Vec<(String, String, String)>,
    /// Every sample: load → target → one per round.
    pub samples: BTreeMap<String, BTreeMap<String, Vec<Sample>>>,
    /// load → target → medians.
    pub summary: BTreeMap<String, BTreeMap<String, Summary>>,
}

enum Kind {
    /// redis-benchmark `-c 50 -r 100000 -t TEST -P PIPELINE`.
    RedisBenchmark { test: &'static str, pipeline: usize },
    /// The bench tool.
    Tool(LoadSpec),
}

struct Load {
    name: String,
    what: String,
    kind: Kind,
    /// Why twemproxy does not run it, if it does not.
    not_on_twemproxy: Option<&'static str>,
}

/// The transaction load's name.
pub const TX_LOAD: &str = "MULTI/SET/INCR/EXEC P1";

struct Target {
    name: String,
    proc: Option<Proc>,
    addr: std::net::SocketAddr,
    /// The CA to verify it with, for a target clients reach over TLS.
    tls_ca: Option<PathBuf>,
    /// `--user`/`-a` for redis-benchmark, for a target that asks clients to
    /// authenticate.
    login: Option<(&'static str, &'static str)>,
}

fn loads(o: &Options) -> anyhow::Result<Vec<Load>> {
    let mut v = Vec::new();
    // PING is answered by keyway itself: one receive and one send per client
    // request, the floor a proxy cannot beat. GET through keyway against
    // PING on keyway is the hop's own cost.
    for (test, pipeline) in [
        ("get", 1),
        ("set", 1),
        ("ping_mbulk", 1),
        ("get", 16),
        ("set", 16),
        ("ping_mbulk", 16),
    ] {
        v.push(Load {
            name: format!(
                "{} P{pipeline}",
                test.trim_end_matches("_mbulk").to_uppercase()
            ),
            what: format!(
                "redis-benchmark -c 50 -r 100000 -n {} -t {test} -P {pipeline}",
                o.requests
            ),
            kind: Kind::RedisBenchmark { test, pipeline },
            not_on_twemproxy: None,
        });
    }
    if o.transactions_only && !o.reference_only {
        v.clear();
    }
    let tool = |conns,
                pipeline,
                mix: &str,
                multi,
                rate: Option<f64>,
                n: u64|
     -> anyhow::Result<LoadSpec> {
        Ok(LoadSpec {
            addr: ([127, 0, 0, 1], 0).into(),
            connections: conns,
            pipeline,
            keys: 100_000,
            value_size: 3,
            mix: parse_mix(mix).map_err(anyhow::Error::msg)?,
            multi_keys: multi,
            stop: Stop::Requests(n),
            rate,
            threads: 1,
            until: None,
            window: None,
        })
    };
    let tx = Load {
        name: TX_LOAD.into(),
        what: format!(
            "keyway-load -c 50 -P 1 --mix tx -n {} (a request is one transaction: MULTI, \
             SET, INCR, EXEC sent together; req/s are transactions/s, CPU µs per transaction)",
            o.requests / 4
        ),
        kind: Kind::Tool(tool(50, 1, "tx", 1, None, o.requests / 4)?),
        not_on_twemproxy: Some("twemproxy does not support MULTI/EXEC (it closes the connection)"),
    };
    if o.reference_only || o.transactions_only {
        if o.transactions_only {
            v.push(tx);
        }
        return Ok(v);
    }
    let mix = "get=50,set=20,incr=10,lpush=10,lpop=10";
    v.push(Load {
        name: "mix P1".into(),
        what: format!("keyway-load -c 50 -P 1 --mix {mix} -n {}", o.requests),
        kind: Kind::Tool(tool(50, 1, mix, 1, None, o.requests)?),
        not_on_twemproxy: None,
    });
    v.push(Load {
        name: "MGET10 P1".into(),
        what: format!(
            "keyway-load -c 50 -P 1 --mix mget --multi-keys 10 -n {}",
            o.requests / 4
        ),
        kind: Kind::Tool(tool(50, 1, "mget", 10, None, o.requests / 4)?),
        not_on_twemproxy: None,
    });
    let n = ((o.open_rate * 10.0) as u64).min(o.requests);
    v.push(Load {
        name: format!("open {}k/s", o.open_rate / 1000.0),
        what: format!("keyway-load -c 50 -P 4 --mix get=80,set=20 --rate {} -n {n} (latency from intended send time)", o.open_rate),
        kind: Kind::Tool(tool(50, 4, "get=80,set=20", 1, Some(o.open_rate), n)?),
        not_on_twemproxy: None,
    });
    v.push(tx);
    Ok(v)
}

fn run_one(load: &Load, target: &Target, redis_pid: u32, requests: u64) -> anyhow::Result<Sample> {
    let proxy_pid = target.proc.as_ref().map(Proc::pid);
    let proxy_before = proxy_pid.map(cpu_seconds).transpose()?;
    let redis_before = cpu_seconds(redis_pid)?;
    let (done, rps, p50, p99, errors) = match &load.kind {
        Kind::RedisBenchmark { test, pipeline } => {
            let mut cmd = Command::new("redis-benchmark");
            if let Some(ca) = &target.tls_ca {
                cmd.arg("--tls").arg("--cacert").arg(ca);
            }
            if let Some((user, pass)) = target.login {
                cmd.args(["--user", user, "-a", pass]);
            }
            let out = cmd
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &target.addr.port().to_string(),
                    "-c",
                    "50",
                    "-r",
                    "100000",
                ])
                .args([
                    "-n",
                    &requests.to_string(),
                    "-t",
                    test,
                    "-P",
                    &pipeline.to_string(),
                    "--csv",
                ])
                .output()
                .context("running redis-benchmark")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let row = text
                .lines()
                .find(|l| !l.starts_with("\"test\"") && l.starts_with('"'))
                .with_context(|| {
                    format!(
                        "no result from redis-benchmark on {}: {}",
                        target.name,
                        String::from_utf8_lossy(&out.stderr)
                    )
                })?;
            let f: Vec<f64> = row
                .split(',')
                .skip(1)
                .map(|c| c.trim_matches('"').parse().unwrap_or(f64::NAN))
                .collect();
            (requests, f[0], f[3] * 1000.0, f[5] * 1000.0, 0)
        }
        Kind::Tool(spec) => {
            let mut spec = spec.clone();
            spec.addr = target.addr;
            let r = load::run(&spec)?;
            (
                r.requests,
                r.throughput,
                r.latency_us.p50 as f64,
                r.latency_us.p99 as f64,
                r.errors,
            )
        }
    };
    let per_req = |before: f64, after: f64| (after - before) * 1e6 / done.max(1) as f64;
    Ok(Sample {
        rps,
        proxy_cpu_us: match (proxy_pid, proxy_before) {
            (Some(pid), Some(b)) => Some(per_req(b, cpu_seconds(pid)?)),
            _ => None,
        },
        redis_cpu_us: per_req(redis_before, cpu_seconds(redis_pid)?),
        p50_us: p50,
        p99_us: p99,
        errors,
    })
}

/// The median of `v` (NaN if empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// What the machine is: CPU, cores, memory, kernel, Redis and twemproxy
/// versions.
pub fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']));
    m.insert("cpu".into(), model.unwrap_or("unknown").to_string());
    m.insert(
        "cpus".into(),
        std::thread::available_parallelism()
            .map_or(0, |n| n.get())
            .to_string(),
    );
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    m.insert(
        "memory".into(),
        mem.lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("MemTotal:")
            .trim()
            .to_string(),
    );
    let uname = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    m.insert("kernel".into(), uname.unwrap_or_default());
    for (name, args) in [
        ("redis", vec!["redis-server", "--version"]),
        ("twemproxy", vec!["nutcracker", "--version"]),
    ] {
        let v = Command::new(args[0]).args(&args[1..]).output().map(|o| {
            let t = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            t.lines().next().unwrap_or("").trim().to_string()
        });
        m.insert(name.into(), v.unwrap_or_default());
    }
    m
}

/// Runs every load on every target and summarizes.
pub fn run(o: &Options, command: String) -> anyhow::Result<Report> {
    let dir = TempDir::new("bench");
    let redis = Proc::redis(&dir.0, o.redis_cpu)?;
    let mut targets = vec![Target {
        name: "redis".into(),
        addr: redis.addr,
        proc: None,
        tls_ca: None,
        login: None,
    }];
    if o.twemproxy {
        let p = Proc::nutcracker(&dir.0, redis.addr, Some(o.proxy_cpu))?;
        targets.push(Target {
            name: "twemproxy".into(),
            addr: p.addr,
            proc: Some(p),
            tls_ca: None,
            login: None,
        });
    }
    let mut keyways: Vec<(String, &PathBuf, String)> = o
        .transports
        .iter()
        .map(|t| {
            (
                format!("keyway-{t}"),
                &o.keyway,
                format!("transport = \"{t}\""),
            )
        })
        .collect();
    if let Some(b) = &o.baseline {
        keyways.push(("keyway-before".into(), b, String::new()));
    }
    for (name, extra) in &o.variants {
        keyways.push((name.clone(), &o.keyway, extra.clone()));
    }
    for (name, bin, extra) in keyways {
        let p = Proc::keyway(bin, &dir.0, &name, redis.addr, o.proxy_cpu, &extra)?;
        targets.push(Target {
            name,
            addr: p.addr,
            proc: Some(p),
            tls_ca: None,
            login: None,
        });
    }
    if o.tls {
        // Plain on its `listen` (the readiness check), TLS beside it.
        let certs = keyway_testkit::tls::Certs::generate(&dir.0);
        let tls_port = keyway_testkit::free_port();
        let extra = format!(
            "[tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"{}\"\nkey = \"{}\"",
            certs.server_cert.display(),
            certs.server_key.display()
        );
        let p = Proc::keyway(
            &o.keyway,
            &dir.0,
            "keyway-tls",
            redis.addr,
            o.proxy_cpu,
            &extra,
        )?;
        targets.push(Target {
            name: "keyway-tls".into(),
            addr: ([127, 0, 0, 1], tls_port).into(),
            proc: Some(p),
            tls_ca: Some(certs.ca),
            login: None,
        });
    }
    if o.acl {
        let extra = "[[user]]\nname = \"default\"\nrules = \"on >bench-default-pass ~* &* +@all\"\n\
                     [[user]]\nname = \"app\"\nrules = \"on >bench-app-pass ~key:* &* +@all -@dangerous\"";
        let p = Proc::keyway(
            &o.keyway,
            &dir.0,
            "keyway-acl",
            redis.addr,
            o.proxy_cpu,
            extra,
        )?;
        targets.push(Target {
            name: "keyway-acl".into(),
            addr: p.addr,
            proc: Some(p),
            tls_ca: None,
            login: Some(("app", "bench-app-pass")),
        });
    }
    // Fill the key space so GETs find values.
    let fill = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &redis.addr.port().to_string(),
            "-c",
            "50",
            "-r",
            "100000",
        ])
        .args(["-n", "200000", "-t", "set", "-P", "32", "-q"])
        .output()?;
    anyhow::ensure!(fill.status.success(), "filling Redis failed");

    let loads = loads(o)?;
    let skips = |load: &Load, t: &Target| match (&load.kind, &t.tls_ca, t.login) {
        (Kind::Tool(_), Some(_), _) => Some("keyway-load speaks no TLS"),
        (Kind::Tool(_), _, Some(_)) => Some("keyway-load does not authenticate"),
        _ => load.not_on_twemproxy.filter(|_| t.name == "twemproxy"),
    };
    let mut samples: BTreeMap<String, BTreeMap<String, Vec<Sample>>> = BTreeMap::new();
    for round in 0..o.rounds {
        for load in &loads {
            for t in &targets {
                if skips(load, t).is_some() {
                    continue;
                }
                let s = run_one(load, t, redis.pid(), o.requests)
                    .with_context(|| format!("round {round}, {} on {}", load.name, t.name))?;
                eprintln!(
                    "round {}/{}  {:<14} {:<16} {:>10.0} req/s  proxy {:>6}  redis {:>5.2} µs/req",
                    round + 1,
                    o.rounds,
                    load.name,
                    t.name,
                    s.rps,
                    s.proxy_cpu_us
                        .map_or("-".to_string(), |c| format!("{c:.2}")),
                    s.redis_cpu_us
                );
                samples
                    .entry(load.name.clone())
                    .or_default()
                    .entry(t.name.clone())
                    .or_default()
                    .push(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut summary: BTreeMap<String, BTreeMap<String, Summary>> = BTreeMap::new();
    for (load, by_target) in &samples {
        let direct = &by_target["redis"];
        for (t, ss) in by_target {
            let ratios = ss.iter().zip(direct).map(|(s, d)| s.rps / d.rps).collect();
            summary.entry(load.clone()).or_default().insert(
                t.clone(),
                Summary {
                    rps: median(ss.iter().map(|s| s.rps).collect()),
                    ratio_to_direct: median(ratios),
                    proxy_cpu_us: ss[0]
                        .proxy_cpu_us
                        .map(|_| median(ss.iter().filter_map(|s| s.proxy_cpu_us).collect())),
                    redis_cpu_us: median(ss.iter().map(|s| s.redis_cpu_us).collect()),
                    p50_us: median(ss.iter().map(|s| s.p50_us).collect()),
                    p99_us: median(ss.iter().map(|s| s.p99_us).collect()),
                    errors: ss.iter().map(|s| s.errors).sum(),
                },
            );
        }
    }
    let (date, commit) = date_and_commit();
    Ok(Report {
        date,
        commit,
        machine: machine(),
        command,
        rounds: o.rounds,
        requests: o.requests,
        not_run: loads
            .iter()
            .flat_map(|l| targets.iter().map(move |t| (l, t)))
            .filter_map(|(l, t)| {
                skips(l, t).map(|why| (l.name.clone(), t.name.clone(), why.to_string()))
            })
            .collect(),
        targets: targets.iter().map(|t| t.name.clone()).collect(),
        loads: loads
            .iter()
            .map(|l| (l.name.clone(), l.what.clone()))
            .collect(),
        samples,
        summary,
    })
}

/// Now (UTC, RFC 3339) and `git describe` of the tree.
pub fn date_and_commit() -> (String, String) {
    let out = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    (
        out("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        out("git", &["describe", "--always", "--dirty"]),
    )
}

/// The report as Markdown tables, one per load.
pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "Measured {} at commit `{}` on {} ({} CPUs, {}, kernel {}; {}; {}).\n\n\
         Command: `{}`\n\n\
         {} interleaved rounds, {} requests per run; medians over rounds. `× redis` is the median \
         of per-round throughput ratios to direct Redis. CPU is user + system run time of \
         every thread (`/proc/PID/task/*/schedstat`) per request.\n",
        r.date,
        r.commit,
        r.machine.get("cpu").map_or("?", String::as_str),
        r.machine.get("cpus").map_or("?", String::as_str),
        r.machine.get("memory").map_or("?", String::as_str),
        r.machine.get("kernel").map_or("?", String::as_str),
        r.machine.get("redis").map_or("?", String::as_str),
        r.machine.get("twemproxy").map_or("?", String::as_str),
        r.command,
        r.rounds,
        r.requests,
    );
    for (load, what) in &r.loads {
        s.push_str(&format!(
            "\n### {load}\n\n`{what}`\n\n| target | req/s | × redis | proxy CPU µs/req | Redis CPU µs/req | p50 µs | p99 µs | errors |\n|---|---|---|---|---|---|---|---|\n"
        ));
        for t in &r.targets {
            if let Some(x) = r.summary.get(load).and_then(|m| m.get(t)) {
                s.push_str(&format!(
                    "| {t} | {:.0} | {:.2} | {} | {:.2} | {:.0} | {:.0} | {} |\n",
                    x.rps,
                    x.ratio_to_direct,
                    x.proxy_cpu_us
                        .map_or("-".to_string(), |c| format!("{c:.2}")),
                    x.redis_cpu_us,
                    x.p50_us,
                    x.p99_us,
                    x.errors
                ));
            } else if let Some((_, _, why)) = r.not_run.iter().find(|(l, x, _)| l == load && x == t)
            {
                s.push_str(&format!("| {t} | not run: {why} | | | | | | |\n"));
            }
        }
    }
    s
}

/// Writes `report` as `<out>/<day>-<commit>-<suffix>.json`, and replaces the
/// section between `<!-- marker:start -->` and `<!-- marker:end -->` of
/// `results_md` with `markdown` (appending it under `heading` and `intro`
/// the first time), unless `results_md` is "-".
pub fn save_section<R: serde::Serialize>(
    report: &R,
    (date, commit): (&str, &str),
    (marker, suffix): (&str, &str),
    out: &std::path::Path,
    results_md: &str,
    (heading, intro): (&str, &str),
    markdown: &str,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let (start, end) = (
        format!("<!-- {marker}:start -->"),
        format!("<!-- {marker}:end -->"),
    );
    std::fs::create_dir_all(out)?;
    let day = &date[..10.min(date.len())];
    let json = out.join(format!("{day}-{commit}-{suffix}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(report)?)?;
    eprintln!("wrote {}", json.display());
    if results_md != "-" {
        let path = std::path::PathBuf::from(results_md);
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let section = format!("{start}\n{markdown}{end}");
        let new = match (old.find(&start), old.find(&end)) {
            (Some(s), Some(e)) if s < e => {
                format!("{}{section}{}", &old[..s], &old[e + end.len()..])
            }
            _ => format!("{old}\n## {heading}\n\n{intro}\n\n{section}\n"),
        };
        std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("updated {}", path.display());
    }
    Ok(())
}
