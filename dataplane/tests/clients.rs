//! Stock clients and connection placement: redis-cli 7 in interactive mode on
//! a real terminal, redis-benchmark, CPU steering, and graceful shutdown.

mod common;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{groups, Keyway, Redis};
use redis::Commands;

/// Runs `redis-cli -p PORT` on a pseudo-terminal, types `lines`, and returns
/// everything it printed.
fn interactive_redis_cli(port: u16, lines: &[&str]) -> String {
    let (mut master, slave) = {
        let (mut m, mut s) = (0, 0);
        let ws = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two fds into m and s; ws is read only.
        let rc =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: both fds were just opened for us and are owned nowhere else.
        unsafe {
            (
                std::fs::File::from(OwnedFd::from_raw_fd(m)),
                OwnedFd::from_raw_fd(s),
            )
        }
    };
    let mut child = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("redis-cli");
    // What redis-cli prints, chunk by chunk, until the terminal closes.
    let (tx, chunks) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut m = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = m.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut out = Vec::new();
    let prompt = format!("127.0.0.1:{port}> ");
    // A fresh prompt starts the output or a line; linenoise's redraws of the
    // line being typed start with "\r".
    let fresh_prompts = |out: &[u8]| {
        let text = String::from_utf8_lossy(out);
        usize::from(text.starts_with(&prompt)) + text.matches(&format!("\n{prompt}")).count()
    };
    for (i, l) in lines.iter().enumerate() {
        // Type each line once redis-cli asks for it (its (i + 1)-th fresh
        // prompt), not after a guessed pause.
        let deadline = Instant::now() + Duration::from_secs(30);
        while fresh_prompts(&out) <= i {
            let left = deadline.saturating_duration_since(Instant::now());
            match chunks.recv_timeout(left) {
                Ok(c) => out.extend(c),
                Err(e) => panic!(
                    "no prompt for {l:?} ({e}); so far:\n{}",
                    String::from_utf8_lossy(&out)
                ),
            }
        }
        master.write_all(l.as_bytes()).unwrap();
        master.write_all(b"\r").unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "redis-cli did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(master);
    // The rest of what it printed: the reader ends when the terminal closes.
    while let Ok(c) = chunks.recv_timeout(Duration::from_secs(10)) {
        out.extend(c);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn redis_cli_interactive_mode_works() {
    let r: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let kw = Keyway::start(&format!("cores = 1\n{}", groups(&[&r[0], &r[1]])));
    let out = interactive_redis_cli(
        kw.addr.port(),
        &[
            "set greeting hello",
            "get greeting",
            "mset a 1 b 2 c 3",
            "mget a b c",
            "quit",
        ],
    );
    for want in ["OK", "\"hello\"", "1) \"1\"", "3) \"3\""] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("ERR"), "{out}");
}

#[test]
fn redis_benchmark_runs_clean() {
    let r: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let kw = Keyway::start(&format!("cores = 2\n{}", groups(&[&r[0], &r[1]])));
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &kw.addr.port().to_string(),
            "-c",
            "20",
            "-n",
            "20000",
            "-r",
            "10000",
            "-t",
            "set,get,incr,lpush,lpop,mset",
            "-P",
            "8",
            "-q",
        ])
        .output()
        .expect("redis-benchmark");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for t in [
        "SET: ",
        "GET: ",
        "INCR: ",
        "LPUSH: ",
        "LPOP: ",
        "MSET (10 keys): ",
    ] {
        assert!(text.contains(t), "no {t:?} result in {text}");
    }
    assert!(!text.contains("ERR"), "{text}");
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, applied to this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

#[test]
fn steer_cpu_sends_connections_to_the_receiving_cpus_core() {
    // The CPUs this test may use, not CPUs 0 and 1: a restricted affinity
    // mask (taskset, a cgroup) may leave those out.
    let cpus = keyway_testkit::allowed_cpus();
    let [a, b, ..] = cpus[..] else {
        common::skip!("steering needs two CPUs in the affinity mask; have {cpus:?}");
    };
    let r = Redis::start();
    let kw = Keyway::start(&format!(
        "cores = [{a}, {b}]\nsteer = \"cpu\"\n{}",
        groups(&[&r])
    ));
    let addr = kw.addr;
    // Core i runs on the i-th CPU of `cores`.
    for (cpu, want) in [(a, 0usize), (b, 1), (b, 1), (a, 0), (b, 1)] {
        let core = std::thread::spawn(move || {
            pin_to(cpu);
            let mut con = redis::Client::open(format!("redis://{addr}"))
                .unwrap()
                .get_connection()
                .unwrap();
            let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut con).unwrap();
            info.split_whitespace()
                .find_map(|f| f.strip_prefix("core="))
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(
            core, want,
            "a connection made on CPU {cpu} went to core {core}, not {want} (cores = [{a}, {b}])"
        );
    }
}

#[test]
fn sigterm_finishes_requests_in_flight() {
    let r = Redis::start();
    let mut kw = Keyway::start(&format!("cores = 1\n{}", groups(&[&r])));
    let mut con = kw.conn();
    let _: () = con.set("k", "v").unwrap();
    // A script that spins 300 ms inside Redis is in flight when SIGTERM arrives.
    let slow = b"*5\r\n$4\r\nEVAL\r\n$98\r\nlocal s=redis.call('TIME') repeat local n=redis.call('TIME') until (n[1]-s[1])*1e6+(n[2]-s[2])>3e5\r\n$1\r\n1\r\n$1\r\nk\r\n$0\r\n\r\n";
    let mut s2 = kw.tcp();
    let forwarded = common::counter(&kw, "requests_forwarded");
    s2.write_all(slow).unwrap();
    common::wait_for(
        "keyway to forward the script",
        Duration::from_secs(10),
        || (common::counter(&kw, "requests_forwarded") > forwarded).then_some(()),
    );
    let status = kw.stop();
    assert!(status.success(), "{status:?}");
    let mut reply = Vec::new();
    s2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s2.read_to_end(&mut reply);
    assert_eq!(
        reply, b"$-1\r\n",
        "the slow script's reply arrived before the close"
    );
}
