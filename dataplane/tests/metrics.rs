//! `GET /metrics` (Prometheus text), `INFO commandstats` times and `INFO
//! latencystats` through keyway in front of real Redis groups: counters
//! that move by exactly the requests sent, histogram counts equal to the
//! requests of each family, a scrape `promtool` accepts, metrics that
//! survive `CONFIG RESETSTAT`, a reload adding a group, and
//! `[metrics] latency = false`.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{groups, http_get, key_on, raw_roundtrip, wait_for, Keyway, Redis};

/// The body of a `/metrics` scrape (asserting a 200 with the Prometheus
/// content type).
fn scrape(admin: &str) -> String {
    let resp = http_get(admin, "/metrics");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// Samples by `name{labels}`.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn get(s: &HashMap<String, f64>, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(0.0)
}

fn promtool_accepts(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian prometheus) is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A multibulk request.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

fn requests(cmd: &str, result: &str) -> String {
    format!("keyway_requests_total{{command=\"{cmd}\",result=\"{result}\"}}")
}

fn family_count(f: &str) -> String {
    format!("keyway_request_duration_seconds_count{{family=\"{f}\"}}")
}

fn backend(g: &str) -> String {
    format!("keyway_backend_requests_total{{group=\"{g}\"}}")
}

/// `INFO <section>` fields through a connection.
fn info(c: &mut redis::Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(c).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A latencystats value with each number replaced by `9.999`, after
/// checking it has three decimals, to compare shapes.
fn shape(v: &str) -> String {
    v.split(',')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            let (int, frac) = v.split_once('.').unwrap();
            assert!(int.parse::<u64>().is_ok() && frac.len() == 3, "{p}");
            assert!(frac.parse::<u64>().is_ok(), "{p}");
            format!("{k}=9.999")
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn metrics_count_every_request_and_survive_resetstat_and_reload() {
    let (r1, r2, r3) = (Redis::start(), Redis::start(), Redis::start());
    let reference = Redis::start();
    let head = "cores = 2\nadmin = \"127.0.0.1:0\"\n";
    let body = format!("{head}{}", groups(&[&r1, &r2]));
    let mut kw = Keyway::start(&body);
    let admin = kw.admin();
    let before = samples(&scrape(&admin));
    assert_eq!(get(&before, &requests("set", "ok")), 0.0);

    // Keys on each group; a string key for LPUSH's WRONGTYPE.
    let on1: Vec<String> = (0..4).map(|i| key_on(&body, 0, &format!("a{i}"))).collect();
    let on2: Vec<String> = (0..6).map(|i| key_on(&body, 1, &format!("b{i}"))).collect();
    let mut pipeline = Vec::new();
    for k in on1.iter().chain(&on2) {
        pipeline.extend(resp(&["SET", k, "v"])); // 10 SETs: 4 on g1, 6 on g2
    }
    for k in on1.iter().take(3) {
        pipeline.extend(resp(&["GET", k])); // 3 GETs on g1
    }
    let hash = key_on(&body, 1, "h");
    pipeline.extend(resp(&["HSET", &hash, "f", "v"])); // on g2
    for _ in 0..2 {
        pipeline.extend(resp(&["LPUSH", &on1[0], "x"])); // WRONGTYPE
        pipeline.extend(resp(&["GET", "a", "b"])); // refused: arity
    }
    for _ in 0..4 {
        pipeline.extend(resp(&["PING"]));
    }
    let mut s = TcpStream::connect(kw.addr).unwrap();
    let replies = String::from_utf8(raw_roundtrip(&mut s, &pipeline)).unwrap();
    assert_eq!(replies.matches("WRONGTYPE").count(), 2, "{replies}");
    assert_eq!(replies.matches("+PONG").count(), 4, "{replies}");
    assert_eq!(replies.matches("wrong number of arguments").count(), 2);

    // Counters are published on each core's tick: wait for the SETs.
    let after = wait_for("the requests in /metrics", Duration::from_secs(10), || {
        let s = samples(&scrape(&admin));
        (get(&s, &requests("ping", "ok")) >= 4.0
            && get(&s, &requests("set", "ok")) >= 10.0
            && get(&s, &family_count("list")) >= 2.0)
            .then_some(s)
    });
    let text = scrape(&admin);
    promtool_accepts(&text);
    // One client: its 22 requests were read by one of the two cores.
    let per_core = [0, 1].map(|c| {
        get(
            &after,
            &format!("keyway_core_requests_total{{core=\"{c}\"}}"),
        )
    });
    assert!(
        per_core.iter().sum::<f64>() >= 22.0 && per_core.iter().any(|&n| n >= 22.0),
        "{per_core:?}: {text}"
    );
    for (cmd, result, n) in [
        ("set", "ok", 10.0),
        ("set", "error", 0.0),
        ("get", "ok", 3.0),
        ("get", "refused", 2.0),
        ("hset", "ok", 1.0),
        ("lpush", "error", 2.0),
        ("lpush", "ok", 0.0),
        ("ping", "ok", 4.0),
    ] {
        assert_eq!(
            get(&after, &requests(cmd, result)),
            n,
            "{cmd} {result}: {text}"
        );
    }
    for (family, n) in [
        ("string", 13.0),
        ("hash", 1.0),
        ("list", 2.0),
        ("connection", 4.0),
    ] {
        assert_eq!(get(&after, &family_count(family)), n, "{family}: {text}");
        let inf =
            format!("keyway_request_duration_seconds_bucket{{family=\"{family}\",le=\"+Inf\"}}");
        assert_eq!(get(&after, &inf), n, "{family} +Inf bucket");
    }
    let g1 = get(&after, &backend("g1"));
    let g2 = get(&after, &backend("g2"));
    // 4 SETs, 3 GETs, 2 LPUSHes on g1; 6 SETs and the HSET on g2.
    assert_eq!((g1, g2), (9.0, 7.0), "sub-requests by group: {text}");
    assert_eq!(
        get(
            &after,
            "keyway_backend_request_duration_seconds_count{group=\"g1\"}"
        ),
        g1
    );
    assert_eq!(get(&after, "keyway_errors_total{kind=\"WRONGTYPE\"}"), 2.0);
    assert_eq!(get(&after, "keyway_errors_total{kind=\"ERR\"}"), 2.0);
    assert!(
        get(
            &after,
            "keyway_backend_connections{group=\"g1\",state=\"up\"}"
        ) >= 1.0
    );
    assert_eq!(get(&after, "keyway_client_connections"), 1.0);
    assert!(get(&after, "keyway_received_bytes_total") >= pipeline.len() as f64);
    assert_eq!(get(&after, "keyway_fenced"), 0.0);
    assert_eq!(get(&after, "keyway_table_version"), 1.0);
    assert!(
        !text.contains("keyway_lease_remaining_seconds"),
        "standalone"
    );

    // INFO commandstats has times and failures; latencystats keyway's own,
    // shaped as Redis's.
    let mut c = kw.conn();
    let cmdstats = info(&mut c, "commandstats");
    let set = &cmdstats["cmdstat_set"];
    assert!(set.starts_with("calls=10,usec="), "{set}");
    let usec: u64 = set["calls=10,usec=".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(usec > 0, "{set}");
    assert!(cmdstats["cmdstat_lpush"].ends_with("rejected_calls=0,failed_calls=2"));
    assert!(cmdstats["cmdstat_get"].ends_with("rejected_calls=2,failed_calls=0"));
    let mut rc = reference.conn();
    for cmd in [
        &["SET", "k", "v"][..],
        &["GET", "k"],
        &["HSET", "h", "f", "v"],
    ] {
        let mut c = redis::cmd(cmd[0]);
        for a in &cmd[1..] {
            c.arg(*a);
        }
        let _: redis::Value = c.query(&mut rc).unwrap();
    }
    let theirs = info(&mut rc, "latencystats");
    // A command's histogram is allocated on the tick after it first ran.
    let mine = wait_for("latencystats", Duration::from_secs(10), || {
        let m = info(&mut c, "latencystats");
        m.contains_key("latency_percentiles_usec_hset").then_some(m)
    });
    for cmd in ["set", "get", "hset"] {
        let key = format!("latency_percentiles_usec_{cmd}");
        assert_eq!(
            shape(&mine[&key]),
            shape(&theirs[&key]),
            "{key}: {} vs Redis's {}",
            mine[&key],
            theirs[&key]
        );
    }
    assert_eq!(
        shape(&mine["latency_percentiles_usec_set"]),
        "p50=9.999,p99=9.999,p99.9=9.999"
    );

    // CONFIG RESETSTAT resets INFO, never the counters.
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let cmdstats = info(&mut c, "commandstats");
    assert!(!cmdstats.contains_key("cmdstat_set"), "{cmdstats:?}");
    // A request after the reset, once in /metrics, shows a tick has
    // published since.
    let _: String = redis::cmd("ECHO").arg("after-reset").query(&mut c).unwrap();
    let reset = wait_for(
        "a publication after RESETSTAT",
        Duration::from_secs(10),
        || {
            let s = samples(&scrape(&admin));
            (get(&s, &requests("echo", "ok")) >= 1.0).then_some(s)
        },
    );
    for key in [requests("set", "ok"), family_count("string"), backend("g1")] {
        assert!(get(&reset, &key) >= get(&after, &key), "{key} went down");
    }

    // A reload adding a group: nothing goes down, the new group counts.
    let body3 = format!("{head}{}", groups(&[&r1, &r2, &r3]));
    kw.reload(&body3);
    let k3 = key_on(&body3, 2, "c");
    let mut c = wait_for("the third group", Duration::from_secs(10), || {
        let mut c = kw.conn();
        let _: () = redis::cmd("SET").arg(&k3).arg("v").query(&mut c).ok()?;
        (r3.conn().exists::<_, bool>(&k3).ok()?).then_some(c)
    });
    let _: () = redis::cmd("SET").arg(&k3).arg("w").query(&mut c).unwrap();
    let reloaded = wait_for("g3 in /metrics", Duration::from_secs(10), || {
        let s = samples(&scrape(&admin));
        (get(&s, &backend("g3")) >= 2.0).then_some(s)
    });
    for key in [
        requests("set", "ok"),
        family_count("string"),
        backend("g1"),
        backend("g2"),
    ] {
        assert!(get(&reloaded, &key) >= get(&after, &key), "{key} went down");
    }
    assert_eq!(get(&reloaded, "keyway_table_version"), 2.0);
    promtool_accepts(&scrape(&admin));
}

use redis::Commands as _;

#[test]
fn latency_off_leaves_the_histograms_out_until_turned_on() {
    let r1 = Redis::start();
    let head = "admin = \"127.0.0.1:0\"\n";
    let body = format!("{head}[metrics]\nlatency = false\n{}", groups(&[&r1]));
    let mut kw = Keyway::start(&body);
    let admin = kw.admin();
    let mut c = kw.conn();
    for i in 0..5 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg("v")
            .query(&mut c)
            .unwrap();
    }
    let s = wait_for("the SETs in /metrics", Duration::from_secs(10), || {
        let s = samples(&scrape(&admin));
        (get(&s, &requests("set", "ok")) >= 5.0).then_some(s)
    });
    assert_eq!(get(&s, &requests("set", "ok")), 5.0);
    let text = scrape(&admin);
    assert!(!text.contains("_duration_seconds"), "{text}");
    promtool_accepts(&text);
    let stats = info(&mut c, "commandstats");
    assert!(
        stats["cmdstat_set"].starts_with("calls=5,usec=0,usec_per_call=0.00,"),
        "{stats:?}"
    );
    let lat: String = redis::cmd("INFO")
        .arg("latencystats")
        .query(&mut c)
        .unwrap();
    assert_eq!(lat.trim_end(), "# Latencystats");

    // Live on reload.
    kw.reload(&format!("{head}{}", groups(&[&r1])));
    wait_for("latency on", Duration::from_secs(10), || {
        let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).ok()?;
        let s = samples(&scrape(&admin));
        (get(&s, &family_count("string")) > 0.0).then_some(())
    });
}

/// A request answered by keyway's backend timeout is timed to its
/// answer: the core's clock is read when the timeout fires, not left at
/// the read that brought the request (which timed it 0 on an idle core).
#[test]
fn a_request_answered_by_the_backend_timeout_is_timed_to_its_answer() {
    let r1 = Redis::start();
    let head = "cores = 1\nadmin = \"127.0.0.1:0\"\n[backend]\ntimeout = \"1s\"\nmax_backoff = \"200ms\"\n";
    let body = format!("{head}{}", groups(&[&r1]));
    let mut kw = Keyway::start(&body);
    let admin = kw.admin();
    let mut c = kw.conn();
    let _: () = c.set("k", "v").unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut r1.conn())
        .unwrap();
    let pid: i32 = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let before = wait_for("the SET in /metrics", Duration::from_secs(10), || {
        let s = samples(&scrape(&admin));
        (get(&s, &family_count("string")) >= 1.0).then_some(s)
    });
    // SAFETY: signalling the redis-server this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut s = TcpStream::connect(kw.addr).unwrap();
    let reply = String::from_utf8(raw_roundtrip(&mut s, &resp(&["GET", "k"]))).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(reply.contains("no reply within 1s"), "{reply}");
    let after = wait_for("the GET in /metrics", Duration::from_secs(10), || {
        let s = samples(&scrape(&admin));
        (get(&s, &family_count("string")) > get(&before, &family_count("string"))).then_some(s)
    });
    let under_half_second = "keyway_request_duration_seconds_bucket{family=\"string\",le=\"0.5\"}";
    assert_eq!(
        get(&after, under_half_second),
        get(&before, under_half_second),
        "the timed-out GET took at least the 1s timeout"
    );
    assert_eq!(get(&after, &requests("get", "error")), 1.0);
}
