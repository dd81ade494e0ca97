//! What a hostile client, a misbehaving backend or a careless operator can
//! do to a data plane, on real processes: HTTP requests on the RESP port,
//! slow and idle admin clients, replies over the limits, limits that would
//! contradict each other, a backend that answers what nobody asked, and the
//! counters that make all of it visible. (The memory-growth cases are in
//! `memory.rs`.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{
    counter, groups, key_on, raw_roundtrip, read_some, wait_for, Keyway, Redis, Relay, TempDir,
};
use redis::Commands;

#[test]
fn an_http_request_on_the_resp_port_runs_nothing_and_is_logged() {
    let r = Redis::start();
    let mut kw = Keyway::start(&format!("cores = 1\n{}", groups(&[&r])));
    let payloads: [&[u8]; 3] = [
        // What `curl -X POST http://keyway/ --data-binary $'\r\nSET pwned x\r\n'`
        // sends.
        b"POST / HTTP/1.1\r\nHost: keyway\r\nUser-Agent: curl/8\r\nContent-Length: 15\r\n\r\n\r\nSET pwned x\r\n",
        b"GET / HTTP/1.1\r\nHost: keyway\r\n\r\nSET pwned y\r\n",
        b"PING\r\nhost: x\r\nSET pwned z\r\n",
    ];
    for payload in payloads {
        let mut to_redis = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
        let redis_says = raw_roundtrip(&mut to_redis, payload);
        let mut to_keyway = kw.tcp();
        let keyway_says = raw_roundtrip(&mut to_keyway, payload);
        assert_eq!(
            String::from_utf8_lossy(&keyway_says),
            String::from_utf8_lossy(&redis_says),
            "{}",
            String::from_utf8_lossy(payload)
        );
        assert_eq!(keyway_says, b"", "closed without a reply, as Redis does");
    }
    let exists: bool = r.conn().exists("pwned").unwrap();
    assert!(!exists, "nothing after the HTTP lines ran");
    kw.wait_log("possible security attack");
    assert_eq!(counter(&kw, "clients_cross_protocol"), 3);
    let pong: String = redis::cmd("PING").query(&mut kw.conn()).unwrap();
    assert_eq!(pong, "PONG");
}

/// `GET path` on the admin endpoint with a read timeout: (status, body).
fn admin_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        resp.split_once("\r\n\r\n").map_or("", |x| x.1).into(),
    )
}

#[test]
fn health_checks_are_answered_beside_idle_trickling_and_too_many_admin_clients() {
    let r = Redis::start();
    let mut kw = Keyway::start(&format!(
        "cores = 1\nadmin = \"127.0.0.1:0\"\n{}",
        groups(&[&r])
    ));
    let admin: std::net::SocketAddr = kw.admin().parse().unwrap();
    // Five connections that say nothing, and one that trickles a byte at a
    // time: served one after the other with per-read timeouts, they held
    // /healthz back for ten seconds, the trickler for ever.
    let idle: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(admin).unwrap()).collect();
    let mut trickler = TcpStream::connect(admin).unwrap();
    let trickle = std::thread::spawn(move || {
        for b in b"GET /healthz HTTP/1.1\r\n" {
            if trickler.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    for _ in 0..3 {
        assert_eq!(admin_get(admin, "/healthz"), (200, "ok\n".into()));
    }
    // Past a cap a connection is refused at once (429: a 503 would say
    // "unhealthy"); a flood from one address leaves a health checker
    // elsewhere served, and once it ends its address is served again.
    let more: Vec<TcpStream> = (0..70)
        .map(|_| TcpStream::connect(admin).unwrap())
        .collect();
    let (status, body) = admin_get(admin, "/healthz");
    assert_eq!(
        (status, body.as_str()),
        (429, "too many admin connections from this address\n")
    );
    let elsewhere = {
        use socket2::{Domain, SockAddr, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SockAddr::from(
            "127.0.0.2:0".parse::<std::net::SocketAddr>().unwrap(),
        ))
        .unwrap();
        s.connect(&SockAddr::from(admin)).unwrap();
        let mut s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp
    };
    assert!(elsewhere.starts_with("HTTP/1.1 200 OK"), "{elsewhere}");
    drop(more);
    drop(idle);
    wait_for(
        "the admin endpoint to have room",
        Duration::from_secs(10),
        || (admin_get(admin, "/healthz").0 == 200).then_some(()),
    );
    trickle.join().unwrap();
}

#[test]
fn a_reply_over_the_output_limit_is_an_error_and_the_connection_goes_on() {
    let r = Redis::start();
    let kw = Keyway::start(&format!(
        "cores = 1\n[limits]\nmax_bulk_bytes = \"1mb\"\noutput_hard_limit = \"4mb\"\noutput_soft_limit = \"1mb\"\n{}",
        groups(&[&r])
    ));
    // Values written straight to Redis (keyway refuses arguments over 1mb).
    let mut direct = r.conn();
    let big = vec![b'x'; 5 << 20];
    let fits = vec![b'y'; 3 << 20];
    let _: () = direct.set("big", &big[..]).unwrap();
    let _: () = direct.set("fits", &fits[..]).unwrap();
    let mut s = kw.tcp();
    s.write_all(b"GET big\r\nPING\r\n").unwrap();
    let got = read_some(&mut s, Duration::from_millis(500));
    let err = format!(
        "-ERR the reply ({} bytes) is larger than keyway's limits.output_hard_limit (4194304 bytes); it was not sent\r\n",
        big.len() + 12
    );
    assert_eq!(String::from_utf8_lossy(&got), format!("{err}+PONG\r\n"));
    let mut con = kw.conn();
    let v: Vec<u8> = con.get("fits").unwrap();
    assert_eq!(v, fits, "a reply under the limit is whole");
    assert_eq!(counter(&kw, "replies_too_large"), 1);
    assert_eq!(counter(&kw, "clients_output_limit"), 0);
}

#[test]
fn a_backend_reply_over_max_reply_bytes_is_dropped_and_answered_with_an_error() {
    let r = Redis::start();
    let kw = Keyway::start(&format!(
        "cores = 1\n[limits]\nmax_bulk_bytes = \"100kb\"\noutput_hard_limit = \"0\"\n[backend]\nmax_reply_bytes = \"2mb\"\n{}",
        groups(&[&r])
    ));
    let mut direct = r.conn();
    let _: () = direct
        .rpush("list", vec![vec![b'z'; 100 << 10]; 30])
        .unwrap();
    let mut con = kw.conn();
    let err = redis::cmd("LRANGE")
        .arg("list")
        .arg(0)
        .arg(-1)
        .query::<Vec<Vec<u8>>>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("larger than keyway's backend.max_reply_bytes (2097152 bytes)"),
        "{err}"
    );
    let n: usize = con.llen("list").unwrap();
    assert_eq!(n, 30, "the same connection goes on");
}

/// Runs `keyway --check` on `body` (with a group); returns (success, output).
fn check(body: &str) -> (bool, String) {
    let r = Redis::start();
    let dir = TempDir::new("check");
    let path = dir.path().join("keyway.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:0\"\n{body}\n{}", groups(&[&r])),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn limits_that_would_contradict_each_other_are_refused_at_load() {
    for (body, why) in [
        (
            // A 300mb value could be written and never read back.
            "[limits]\noutput_hard_limit = \"256mb\"",
            "must be readable",
        ),
        (
            "[limits]\nmax_request_bytes = \"5gb\"\nmax_bulk_bytes = \"1mb\"",
            "32-bit offsets",
        ),
        (
            "[limits]\nmax_memory = \"100mb\"",
            "twice limits.max_request_bytes",
        ),
        (
            // Nor could a 400mb value be read back through 300mb replies.
            "[backend]\nmax_reply_bytes = \"300mb\"",
            "must be readable",
        ),
    ] {
        let (ok, text) = check(body);
        assert!(!ok && text.contains(why), "{body}: {text}");
    }
    for body in [
        "[limits]\noutput_hard_limit = \"0\"\noutput_soft_limit = \"0\"",
        "[limits]\nmax_memory = \"0\"",
        "[limits]\nmax_bulk_bytes = \"100mb\"\noutput_hard_limit = \"101mb\"",
    ] {
        let (ok, text) = check(body);
        assert!(ok, "{body}: {text}");
    }
}

#[test]
fn output_hard_limit_zero_means_no_limit() {
    let r = Redis::start();
    let kw = Keyway::start(&format!(
        "cores = 1\n[limits]\noutput_hard_limit = \"0\"\noutput_soft_limit = \"0\"\n{}",
        groups(&[&r])
    ));
    let mut con = kw.conn();
    let v = vec![b'q'; 2 << 20];
    let _: () = con.set("v", &v[..]).unwrap();
    for _ in 0..3 {
        let got: Vec<u8> = con.get("v").unwrap();
        assert_eq!(got.len(), v.len());
    }
    assert_eq!(counter(&kw, "clients_output_limit"), 0);
}

#[test]
fn replies_held_for_a_merge_count_against_the_output_limit() {
    let (a, b) = (Redis::start(), Redis::start());
    let body = format!(
        "cores = 1\n[limits]\nmax_bulk_bytes = \"1mb\"\noutput_hard_limit = \"4mb\"\noutput_soft_limit = \"1mb\"\n[backend]\ntimeout = \"0\"\n{}",
        groups(&[&a, &b])
    );
    let kw = Keyway::start(&body);
    let (on_a, on_b) = (key_on(&body, 0, "a"), key_on(&body, 1, "b"));
    let mut con = kw.conn();
    let _: () = con.set(&on_a, vec![b'v'; 900 << 10]).unwrap();
    // g2 stops answering: every MGET waits for its part there, holding
    // g1's 900 KiB part meanwhile.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(b.pid(), libc::SIGSTOP) };
    let mut s = kw.tcp();
    let one = format!(
        "*3\r\n$4\r\nMGET\r\n${}\r\n{on_a}\r\n${}\r\n{on_b}\r\n",
        on_a.len(),
        on_b.len()
    );
    s.write_all(one.repeat(10).as_bytes()).unwrap();
    let got = read_some(&mut s, Duration::from_millis(500));
    // SAFETY: as above.
    unsafe { libc::kill(b.pid(), libc::SIGCONT) };
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR closing the connection: its unread replies exceed limits.output_hard_limit (4194304 bytes)\r\n"
    );
    assert_eq!(counter(&kw, "clients_output_limit"), 1);
    let v: Vec<u8> = con.get(&on_a).unwrap();
    assert_eq!(v.len(), 900 << 10);
}

#[test]
fn a_backend_answering_what_nobody_asked_is_dropped_and_replies_stay_in_step() {
    let r = Redis::start();
    let relay = Relay::start(&r.addr());
    let mut kw = Keyway::start(&format!(
        "cores = 1\n[[group]]\nname = \"g1\"\nmaster = \"{}\"\n",
        relay.addr
    ));
    let mut con = kw.conn();
    let _: () = con.set("a", "1").unwrap();
    let _: () = con.set("b", "2").unwrap();
    relay.inject(b"+EXTRA\r\n");
    kw.wait_log("the backend sent a reply no request asked for");
    // The connection is replaced (after the usual reconnection backoff),
    // and every reply after it is the right one.
    wait_for("g1 to serve again", Duration::from_secs(5), || {
        con.get::<_, String>("a").ok().filter(|v| v == "1")
    });
    for _ in 0..20 {
        let (a, b): (String, String) = redis::pipe().get("a").get("b").query(&mut con).unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("1", "2"));
    }
    assert_eq!(counter(&kw, "backend_unsolicited"), 1);
}

/// A raw client: sends `req` and reads until `replies` CRLF-ended lines
/// have come back (enough for simple replies).
fn ask(s: &mut TcpStream, req: &[u8], lines: usize) -> String {
    s.write_all(req).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while got.windows(2).filter(|w| w == b"\r\n").count() < lines {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[test]
fn info_keyway_shows_every_counter_summed_over_cores() {
    let r = Redis::start();
    let kw = Keyway::start(&format!("cores = 2\n{}", groups(&[&r])));
    let mut info = kw.tcp();
    let mut infos = 0;
    let read_info = |s: &mut TcpStream| {
        s.write_all(b"INFO keyway\r\n").unwrap();
        let text = String::from_utf8(read_some(s, Duration::from_millis(200))).unwrap();
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let before = read_info(&mut info);
    infos += 1;
    for (name, _) in keyway::engine::Stats::default().fields() {
        assert!(before.contains_key(name), "INFO keyway lacks {name}");
    }
    // Clients on both cores (SO_REUSEPORT spreads them; CLIENT INFO says
    // where each landed), each sending 9 SETs and one unknown command.
    let mut clients = Vec::new();
    let mut cores = std::collections::HashSet::new();
    while cores.len() < 2 || clients.len() < 4 {
        assert!(clients.len() < 64, "every client landed on one core");
        let mut s = kw.tcp();
        let line = ask(&mut s, b"CLIENT INFO\r\n", 2);
        let core = line.split("core=").nth(1).unwrap().trim().to_string();
        cores.insert(core);
        clients.push(s);
    }
    for s in &mut clients {
        let mut req = String::new();
        for i in 0..9 {
            req.push_str(&format!("SET k{i} {i}\r\n"));
        }
        req.push_str("NOSUCHCOMMAND\r\n");
        let got = ask(s, req.as_bytes(), 10);
        assert_eq!(
            got,
            format!(
                "{}-ERR unknown command 'NOSUCHCOMMAND', with args beginning with: \r\n",
                "+OK\r\n".repeat(9)
            )
        );
    }
    let n = clients.len() as u64;
    let base = |k: &str| before[k].parse::<u64>().unwrap();
    // The other core publishes its counters at its tick.
    wait_for("every core's counters", Duration::from_secs(5), || {
        let now = read_info(&mut info);
        infos += 1;
        let get = |k: &str| now[k].parse::<u64>().unwrap();
        // Every INFO counts when it is parsed, its own included.
        (get("requests") == base("requests") + n * 11 + infos - 1
            && get("errors_refused") == base("errors_refused") + n
            && get("requests_forwarded") == base("requests_forwarded") + n * 9
            && get("clients_accepted") == base("clients_accepted") + n)
            .then_some(())
    });
}
