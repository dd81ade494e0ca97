//! Failures: a dead or hung backend errors only its own slots and service
//! resumes when it returns; garbage input gets `-ERR` and a closed connection
//! while everyone else is served.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{groups, key_on, raw_roundtrip, read_some, wait_for, Keyway, Redis, SideBySide};
use redis::Commands;

#[test]
fn a_killed_backend_errors_only_its_slots_and_service_resumes() {
    let mut r: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let body = format!(
        "cores = 1\n[backend]\nconnect_timeout = \"500ms\"\nmax_backoff = \"200ms\"\n{}",
        groups(&r.iter().collect::<Vec<_>>())
    );
    let kw = Keyway::start(&body);
    let mut con = kw.conn();
    let keys: Vec<String> = (0..3).map(|g| key_on(&body, g, "k")).collect();
    for k in &keys {
        let _: () = con.set(k, "v").unwrap();
    }
    let port = r[1].port;
    r[1].kill();

    // Prompt means the refused connection answers, not a timeout: the
    // outcome says which, however slow the machine.
    let err = wait_for(
        "an error for the dead group",
        Duration::from_secs(30),
        || con.get::<_, String>(&keys[1]).err(),
    );
    let msg = err.to_string();
    assert!(msg.contains("backend g2 unavailable"), "{msg}");
    assert!(
        !msg.contains("no reply within"),
        "a dead backend is known at once, not after a timeout: {msg}"
    );
    // Other groups are unaffected, on the same connection.
    for g in [0, 2] {
        let v: String = con.get(&keys[g]).unwrap();
        assert_eq!(v, "v");
    }
    // A split command touching the dead group fails as a whole.
    let err = con.mget::<_, Vec<Option<String>>>(&keys).unwrap_err();
    assert!(err.to_string().contains("backend g2 unavailable"), "{err}");

    let _back = Redis::start_on(port);
    wait_for("service to resume", Duration::from_secs(10), || {
        con.set::<_, _, ()>(&keys[1], "again").ok()
    });
    let v: String = con.get(&keys[1]).unwrap();
    assert_eq!(v, "again");
    let all: Vec<Option<String>> = con.mget(&keys).unwrap();
    assert_eq!(
        all,
        vec![Some("v".into()), Some("again".into()), Some("v".into())]
    );
}

#[test]
fn a_hung_backend_times_out_and_recovers() {
    let r: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let body = format!(
        "cores = 1\n[backend]\ntimeout = \"1s\"\nmax_backoff = \"200ms\"\n{}",
        groups(&r.iter().collect::<Vec<_>>())
    );
    let kw = Keyway::start(&body);
    let mut con = kw.conn();
    let stuck = key_on(&body, 0, "s");
    let fine = key_on(&body, 1, "f");
    let _: () = con.set(&stuck, "1").unwrap();
    let pid = redis_pid(&r[0]);
    // SAFETY: signalling the redis-server this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let started = Instant::now();
    let err = con.get::<_, String>(&stuck).unwrap_err();
    let waited = started.elapsed();
    assert!(
        err.to_string()
            .contains("backend g1 unavailable: no reply within 1s"),
        "{err}"
    );
    // The timeout may not fire early; how late depends on the machine, and
    // the message above already says the timeout is what answered.
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}, before the 1s timeout"
    );
    let mut other = kw.conn();
    let _: () = other.set(&fine, "ok").unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_for("the group to come back", Duration::from_secs(10), || {
        con.get::<_, String>(&stuck).ok()
    });
}

fn redis_pid(r: &Redis) -> i32 {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut r.conn())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn garbage_gets_an_error_and_everyone_else_is_served() {
    let r: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let body = format!(
        "cores = 2\n[limits]\nmax_request_bytes = \"1mb\"\nmax_bulk_bytes = \"512kb\"\nmax_arguments = 1000\n{}",
        groups(&r.iter().collect::<Vec<_>>())
    );
    let mut kw = Keyway::start(&body);

    // A healthy client runs throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let healthy = {
        let (stop, ok, addr) = (stop.clone(), ok.clone(), kw.addr);
        std::thread::spawn(move || {
            let mut con = redis::Client::open(format!("redis://{addr}"))
                .unwrap()
                .get_connection()
                .unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let _: () = con
                    .set(format!("h:{}", i % 100), i)
                    .expect("healthy client must not fail");
                let v: i64 = con
                    .get(format!("h:{}", i % 100))
                    .expect("healthy client must not fail");
                assert_eq!(v, i);
                ok.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };

    // Malformed requests a single Redis refuses the same way: its reply
    // (and its closing the connection) is the expected one.
    let reference = Redis::start();
    let like_redis: &[&[u8]] = &[
        b"*1\r\n$x\r\n",
        b"*2\r\n:1\r\n",
        b"*abc\r\n",
        b"SET a \"unterminated\r\n",
    ];
    for input in like_redis {
        // A valid request first: its reply comes before the error.
        let mut req = b"PING\r\n".to_vec();
        req.extend_from_slice(input);
        let mut both = SideBySide::connect(reference.addr(), kw.addr);
        both.raw_same(&req, 2);
        both.same_close();
    }
    // Where keyway is stricter than Redis, its own replies: Redis skips the
    // two bytes after a bulk without checking for CRLF, and its bulk and
    // argument limits (512 MB, none) are far above keyway's configured ones.
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n$3\r\nabcdef",
            "-ERR Protocol error: bulk argument not terminated by CRLF\r\n",
        ),
        (
            b"*1\r\n$600000\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1001\r\n",
            "-ERR Protocol error: too many arguments (1001, the limit is 1000)\r\n",
        ),
    ];
    for (input, want) in cases {
        let mut s = kw.tcp();
        let mut req = b"PING\r\n".to_vec();
        req.extend_from_slice(input);
        s.write_all(&req).unwrap();
        let got = read_some(&mut s, Duration::from_secs(2));
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("+PONG\r\n{want}"),
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
    // Oversized request: more than max_request_bytes in total.
    let mut s = kw.tcp();
    let mut big = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$524288\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 524288));
    big.extend_from_slice(b"\r\n");
    let got = raw_roundtrip(&mut s, &big);
    assert_eq!(got, b"+OK\r\n", "512 KiB fits");
    let mut two = b"*4\r\n$3\r\nDEL\r\n$1\r\nk\r\n$524288\r\n".to_vec();
    two.extend(std::iter::repeat_n(b'x', 524288));
    two.extend_from_slice(b"\r\n$524288\r\n");
    let got = raw_roundtrip(&mut s, &two);
    assert!(
        String::from_utf8_lossy(&got)
            .starts_with("-ERR Protocol error: request larger than the limit"),
        "{got:?}"
    );

    // Random bytes on many connections.
    let mut seed = 0x9e3779b97f4a7c15u64;
    for _ in 0..200 {
        let mut s = kw.tcp();
        let mut junk = Vec::new();
        for _ in 0..(seed % 300) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let alphabet = b"*$\r\n:-+0123456789abcGETSET \"'";
            junk.push(alphabet[(seed % alphabet.len() as u64) as usize]);
        }
        let _ = s.write_all(&junk);
        drop(s);
    }
    let target = ok.load(Ordering::Relaxed) + 200;
    wait_for(
        "the healthy client to keep going",
        Duration::from_secs(20),
        || (ok.load(Ordering::Relaxed) >= target).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    healthy.join().expect("healthy client never failed");
    assert!(kw.alive());
    assert!(!kw.logs().iter().any(|l| l.contains("panicked")));
}
