//! Client limits: max clients, idle and partial-request timeouts, and the
//! output cap that disconnects a client which does not read its replies.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{groups, raw_roundtrip, read_some, rss_kib, wait_for, Keyway, Redis};
use redis::Commands;

fn start(limits: &str, redis: &Redis) -> Keyway {
    Keyway::start(&format!(
        "cores = 1\n[limits]\n{limits}\n{}",
        groups(&[redis])
    ))
}

#[test]
fn max_clients_refuses_with_a_clear_error() {
    let r = Redis::start();
    let kw = start("max_clients = 3", &r);
    // A Redis with the same limit refuses the fourth client the same way.
    let reference = Redis::start_with(&["--maxclients", "3"]);
    let mut fourth = Vec::new();
    for addr in [reference.addr().parse().unwrap(), kw.addr] {
        // The first client waits until it is the only one (connections of
        // the start-up checks are closed asynchronously).
        let mut first = std::net::TcpStream::connect(addr).unwrap();
        wait_for("no other client", Duration::from_secs(10), || {
            let info = raw_roundtrip(&mut first, b"INFO clients\r\n");
            info.windows(20)
                .any(|w| w == b"connected_clients:1\r")
                .then_some(())
        });
        let mut held: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        for s in &mut held {
            assert_eq!(raw_roundtrip(s, b"PING\r\n"), b"+PONG\r\n");
        }
        held.push(first);
        let mut extra = std::net::TcpStream::connect(addr).unwrap();
        fourth.push(read_some(&mut extra, Duration::from_secs(2)));
        if addr == kw.addr {
            drop(held.pop());
            wait_for("a slot to free up", Duration::from_secs(5), || {
                let mut s = kw.tcp();
                (raw_roundtrip(&mut s, b"PING\r\n") == b"+PONG\r\n").then_some(())
            });
        }
    }
    assert!(!fourth[1].is_empty(), "the fourth client is told why");
    keyway_testkit::compare::assert_replies_equal("a fourth client", &fourth[0], &fourth[1]);
}

#[test]
fn idle_clients_are_closed() {
    let r = Redis::start();
    let kw = start("idle_timeout = \"500ms\"", &r);
    let mut idle = kw.tcp();
    idle.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    std::io::Read::read_exact(&mut idle, &mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    let started = Instant::now();
    assert_eq!(
        read_some(&mut idle, Duration::from_secs(3)),
        b"",
        "closed without a reply"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let mut busy = kw.conn();
    for _ in 0..10 {
        let _: String = redis::cmd("PING").query(&mut busy).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn incomplete_requests_time_out() {
    let r = Redis::start();
    let kw = start("partial_request_timeout = \"500ms\"", &r);
    let mut s = kw.tcp();
    s.write_all(b"*2\r\n$3\r\nGET\r\n$5\r\nab").unwrap();
    let got = read_some(&mut s, Duration::from_secs(3));
    assert_eq!(
        got,
        b"-ERR request incomplete after 500ms; closing the connection\r\n"
    );
}

#[test]
fn a_client_that_does_not_read_is_disconnected_and_memory_stays_bounded() {
    let r = Redis::start();
    let kw = start(
        "max_bulk_bytes = \"1mb\"\noutput_hard_limit = \"4mb\"\noutput_soft_limit = \"1mb\"",
        &r,
    );
    let mut con = kw.conn();
    let value = vec![b'x'; 256 << 10];
    let _: () = con.set("big", &value[..]).unwrap();
    let rss_before = rss_kib(kw.pid());

    // Ask for 128 MiB of replies and read none of them.
    let mut s = kw.tcp();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(512);
    let _ = s.write_all(&req);
    wait_for(
        "the reader-less client to be dropped",
        Duration::from_secs(20),
        || {
            let list: String = redis::cmd("INFO").arg("clients").query(&mut con).ok()?;
            list.contains("connected_clients:1\r").then_some(())
        },
    );
    let rss_after = rss_kib(kw.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "keyway grew from {rss_before} KiB to {rss_after} KiB for one slow reader"
    );
    // What the client then reads ends well short of 128 MiB, with EOF.
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    loop {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(total < 64 << 20, "read {total} bytes");
    let v: Vec<u8> = con.get("big").unwrap();
    assert_eq!(v.len(), value.len());
}
