//! Memory stays bounded whatever clients and backends do: a stalled backend,
//! a huge reply, merges waiting on a stopped group, and clients that never
//! read. Each test moves hundreds of megabytes, so they run once in CI (their
//! names start with `slow_`; the second transport's pass skips them), one at
//! a time.

mod common;

use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use common::{counter, groups, key_on, rss_kib, wait_for, Keyway, Redis};
use redis::Commands;

/// One test at a time: each measures the process it started, and the
/// machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn stop(r: &Redis) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(r.pid(), libc::SIGSTOP) };
}

fn resume(r: &Redis) {
    // SAFETY: as above.
    unsafe { libc::kill(r.pid(), libc::SIGCONT) };
}

/// `SET key value` as a RESP request.
fn set_request(key: &str, value: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
        key.len(),
        value.len()
    )
    .into_bytes();
    v.extend_from_slice(value);
    v.extend_from_slice(b"\r\n");
    v
}

/// Reads until `n` `+OK` lines arrived (or the peer closes).
fn read_oks(s: &mut std::net::TcpStream, n: usize) -> usize {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    while got.windows(5).filter(|w| w == b"+OK\r\n").count() < n {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    got.windows(5).filter(|w| w == b"+OK\r\n").count()
}

#[test]
fn slow_a_stalled_backend_pauses_its_writers_instead_of_buffering() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let r = Redis::start();
    let kw = Keyway::start(&format!(
        "cores = 1\n[backend]\ntimeout = \"0\"\nwrite_buffer_limit = \"8mb\"\n{}",
        groups(&[&r])
    ));
    let before = rss_kib(kw.pid());
    stop(&r);
    // 200 SETs of 1 MiB towards a group that reads nothing.
    let mut s = kw.tcp();
    let mut writer = s.try_clone().unwrap();
    let value = vec![b'v'; 1 << 20];
    let sender = std::thread::spawn(move || {
        for i in 0..200 {
            if writer
                .write_all(&set_request(&format!("k{i}"), &value))
                .is_err()
            {
                return;
            }
        }
    });
    wait_for(
        "keyway to stop reading the writer",
        Duration::from_secs(30),
        || (counter(&kw, "clients_backpressured") >= 1).then_some(()),
    );
    // It stays stopped: sample the memory a while (before the fix it grew by
    // a gigabyte within seconds).
    for _ in 0..10 {
        let grown = rss_kib(kw.pid()).saturating_sub(before);
        assert!(grown < 100 << 10, "keyway grew by {grown} KiB");
        std::thread::sleep(Duration::from_millis(200));
    }
    resume(&r);
    assert_eq!(read_oks(&mut s, 200), 200, "nothing is lost");
    sender.join().unwrap();
    let v: Vec<u8> = r.conn().get("k199").unwrap();
    assert_eq!(v.len(), 1 << 20);
}

#[test]
fn slow_a_huge_backend_reply_is_not_buffered() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let r = Redis::start();
    let kw = Keyway::start(&format!(
        "cores = 1\n[limits]\nmax_bulk_bytes = \"8mb\"\n[backend]\nmax_reply_bytes = \"16mb\"\n{}",
        groups(&[&r])
    ));
    let _: () = r.conn().set("huge", vec![b'h'; 300 << 20]).unwrap();
    let before = rss_kib(kw.pid());
    let mut con = kw.conn();
    let err = con.get::<_, Vec<u8>>("huge").unwrap_err();
    assert!(
        err.to_string()
            .contains("larger than keyway's backend.max_reply_bytes (16777216 bytes)"),
        "{err}"
    );
    let grown = rss_kib(kw.pid()).saturating_sub(before);
    assert!(
        grown < 32 << 10,
        "keyway grew by {grown} KiB for a 300 MiB reply"
    );
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn slow_merges_waiting_on_a_stopped_group_stay_within_the_output_limit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (a, b) = (Redis::start(), Redis::start());
    let body = format!(
        "cores = 1\n[limits]\nmax_bulk_bytes = \"8mb\"\noutput_hard_limit = \"64mb\"\n[backend]\ntimeout = \"0\"\n{}",
        groups(&[&a, &b])
    );
    let kw = Keyway::start(&body);
    let (on_a, on_b) = (key_on(&body, 0, "a"), key_on(&body, 1, "b"));
    let _: () = a.conn().set(&on_a, vec![b'm'; 1 << 20]).unwrap();
    let before = rss_kib(kw.pid());
    stop(&b);
    // 600 MGETs, each holding a 1 MiB part from g1 while g2 says nothing:
    // before, 600 MiB held and never counted.
    let mut s = kw.tcp();
    let one = format!(
        "*3\r\n$4\r\nMGET\r\n${}\r\n{on_a}\r\n${}\r\n{on_b}\r\n",
        on_a.len(),
        on_b.len()
    );
    s.write_all(one.repeat(600).as_bytes()).unwrap();
    wait_for("the client to be closed", Duration::from_secs(30), || {
        (counter(&kw, "clients_output_limit") == 1).then_some(())
    });
    let grown = rss_kib(kw.pid()).saturating_sub(before);
    resume(&b);
    assert!(grown < 200 << 10, "keyway grew by {grown} KiB");
}

#[test]
fn slow_over_max_memory_routed_requests_get_oom_and_the_largest_readers_go() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let r = Redis::start();
    let config = |max_memory: &str| {
        format!(
            "cores = 1\n[limits]\nmax_request_bytes = \"4mb\"\nmax_bulk_bytes = \"2mb\"\n\
             output_hard_limit = \"0\"\noutput_soft_limit = \"0\"\nmax_memory = \"{max_memory}\"\n\
             [backend]\ntimeout = \"0\"\nwrite_buffer_limit = \"256mb\"\nmax_reply_bytes = \"4mb\"\n{}",
            groups(&[&r])
        )
    };
    let mut kw = Keyway::start(&config("0"));
    let mut con = kw.conn();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _: () = con.set("v", vec![b'v'; 2 << 20]).unwrap();

    // 60 MiB of requests stuck towards a stopped group, then a budget of
    // 16 MiB: none of that memory belongs to a client that could be closed
    // to free it, so routed requests get -OOM until the group drains.
    stop(&r);
    let mut writer = kw.tcp();
    let value = vec![b'w'; 1 << 20];
    for i in 0..60 {
        writer
            .write_all(&set_request(&format!("w{i}"), &value))
            .unwrap();
    }
    wait_for(
        "keyway to read every request",
        Duration::from_secs(20),
        || (counter(&kw, "requests_forwarded") >= 61).then_some(()),
    );
    kw.reload(&config("16mb"));
    kw.wait_log("configuration reloaded");
    let err = wait_for("-OOM", Duration::from_secs(10), || {
        con.get::<_, Vec<u8>>("v").err()
    });
    assert_eq!(err.code(), Some("OOM"), "{err}");
    assert!(
        err.to_string().contains(
            "command not allowed when keyway's client and backend buffers exceed limits.max_memory (16777216 bytes)"
        ),
        "{err}"
    );
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG", "keyway's own commands still run");
    resume(&r);
    assert_eq!(read_oks(&mut writer, 60), 60, "nothing is lost");
    wait_for("the budget to free up", Duration::from_secs(10), || {
        con.get::<_, Vec<u8>>("v").ok()
    });

    // Clients asking for 40 MiB each and reading none: the largest are
    // closed until the buffers fit again; a client that reads is served.
    let before = rss_kib(kw.pid());
    let mut readerless = Vec::new();
    for _ in 0..4 {
        let mut s = kw.tcp();
        s.write_all(&b"GET v\r\n".repeat(20)).unwrap();
        readerless.push(s);
    }
    wait_for(
        "the largest clients to be closed",
        Duration::from_secs(20),
        || (counter(&kw, "clients_evicted_memory") >= 1).then_some(()),
    );
    let grown = rss_kib(kw.pid()).saturating_sub(before);
    assert!(grown < 200 << 10, "keyway grew by {grown} KiB");
    let v = wait_for(
        "a reading client to be served",
        Duration::from_secs(10),
        || con.get::<_, Vec<u8>>("v").ok(),
    );
    assert_eq!(v.len(), 2 << 20);
    kw.wait_log(
        "closing a client connection: it held the most while keyway's buffers exceeded limits.max_memory",
    );
}
