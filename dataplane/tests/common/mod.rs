//! What the data plane's integration tests share: the workspace test kit
//! (real redis-server processes, process guards) plus a standalone keyway.

#![allow(dead_code, unused_imports)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

pub mod fake_ctld;

use keyway_testkit::Process;
pub use keyway_testkit::{raw_roundtrip, read_some, skip, wait_for, Redis, SideBySide, TempDir};

/// `GET path` on an HTTP endpoint (keyway's admin port): the whole response,
/// status line and headers included (`Connection: close`; a 10 s read
/// timeout so a stuck endpoint fails the test instead of hanging it).
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `transport = "…"` from `KEYWAY_TEST_TRANSPORT`, or nothing (the default).
pub fn transport_line() -> String {
    match std::env::var("KEYWAY_TEST_TRANSPORT") {
        Ok(t) if !t.is_empty() => format!("transport = \"{t}\"\n"),
        _ => String::new(),
    }
}

/// A standalone keyway process.
pub struct Keyway {
    pub addr: SocketAddr,
    pub dir: TempDir,
    proc: Process,
}

impl Keyway {
    /// Starts keyway with `body` appended to `listen = "127.0.0.1:0"` (and a
    /// `transport` line when `KEYWAY_TEST_TRANSPORT` names one).
    pub fn start(body: &str) -> Keyway {
        Keyway::start_args(body, &[])
    }

    /// As [`start`](Self::start), with more command-line arguments (e.g.
    /// `--zone`, or `--control` for a managed keyway).
    pub fn start_args(body: &str, args: &[&str]) -> Keyway {
        let dir = TempDir::new("keyway");
        let config = dir.path().join("keyway.toml");
        std::fs::write(
            &config,
            format!("listen = \"127.0.0.1:0\"\n{}{body}", transport_line()),
        )
        .unwrap();
        let mut proc = Process::spawn(
            Command::new(env!("CARGO_BIN_EXE_keyway"))
                .arg("--config")
                .arg(&config)
                .args(args)
                .env("KEYWAY_LOG", "info"),
        );
        let addr = proc
            .wait_line("keyway listening on ", Duration::from_secs(20))
            .parse()
            .unwrap();
        Keyway { addr, dir, proc }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("keyway.toml")
    }

    /// Rewrites the config (keeping the listen line) and sends SIGHUP.
    pub fn reload(&self, body: &str) {
        std::fs::write(
            self.config_path(),
            format!("listen = \"{}\"\n{}{body}", self.addr, transport_line()),
        )
        .unwrap();
        self.proc.signal(libc::SIGHUP);
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The admin address (the config must give `admin`).
    pub fn admin(&mut self) -> String {
        self.proc
            .wait_line("keyway admin on ", Duration::from_secs(10))
    }

    /// The TLS listen address (the config must have a `[tls]` section).
    pub fn tls_addr(&mut self) -> SocketAddr {
        self.proc
            .wait_line("keyway TLS listening on ", Duration::from_secs(10))
            .parse()
            .unwrap()
    }

    pub fn conn(&self) -> redis::Connection {
        let c = redis::Client::open(format!("redis://{}", self.addr)).unwrap();
        c.get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }

    pub fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    pub fn logs(&mut self) -> Vec<String> {
        self.proc.logs()
    }

    pub fn wait_log(&mut self, needle: &str) {
        self.proc.wait_log(needle, Duration::from_secs(10));
    }

    pub fn alive(&mut self) -> bool {
        self.proc.alive()
    }

    /// Stops with SIGTERM and returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.proc.stop()
    }
}

/// `[[group]]` sections for `redis` servers named g1, g2, …
pub fn groups(redis: &[&Redis]) -> String {
    let mut s = String::new();
    for (i, r) in redis.iter().enumerate() {
        s.push_str(&format!(
            "[[group]]\nname = \"g{}\"\nmaster = \"{}\"\n",
            i + 1,
            r.addr()
        ));
    }
    s
}

/// The owners of `keys` among `groups` groups that share all 16384 slots
/// (no `slots` lines), computed apart from keyway: the slot from a real
/// Redis's `CLUSTER KEYSLOT` (`oracle` is a [`Redis::cluster_node`]), the
/// group from the documented rule "evenly, in listed order" (the first
/// `16384 % groups` groups get one slot more).
pub fn owners_by_redis<K: AsRef<[u8]>>(oracle: &Redis, keys: &[K], groups: usize) -> Vec<usize> {
    const SLOTS: usize = 16384;
    let (per, extra) = (SLOTS / groups, SLOTS % groups);
    let owner = |slot: usize| {
        let big = extra * (per + 1);
        if slot < big {
            slot / (per + 1)
        } else {
            extra + (slot - big) / per
        }
    };
    oracle
        .keyslots(keys)
        .into_iter()
        .map(|s| owner(usize::from(s)))
        .collect()
}

/// The index (into `groups`) of the group owning `key` for the config `body`,
/// as keyway's own config computes it: for tests that need a key on some
/// group. Tests of routing itself use [`owners_by_redis`].
pub fn owner(body: &str, key: &[u8]) -> usize {
    let cfg =
        keyway::config::Config::parse(&format!("listen = \"127.0.0.1:0\"\n{body}"), 1).unwrap();
    let t = &cfg.live.table;
    usize::from(
        t.route(t.slot_of(key))
            .owner()
            .expect("every slot is assigned"),
    )
}

/// `INFO keyway`'s `table_version` on a new connection.
pub fn table_version(kw: &Keyway) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("keyway")
        .query(&mut kw.conn())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("table_version:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// A TCP relay in front of a real redis-server that can slip bytes into what
/// Redis sends back (a fault injector, not a Redis stand-in: every request
/// still reaches the real server and every real reply comes back). Its
/// threads end with the test process.
pub struct Relay {
    pub addr: SocketAddr,
    /// The socket towards keyway of the latest connection, for injections.
    down: std::sync::Arc<std::sync::Mutex<Option<TcpStream>>>,
}

impl Relay {
    /// Relays every connection to `target`.
    pub fn start(target: &str) -> Relay {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let target = target.to_string();
        let down = std::sync::Arc::new(std::sync::Mutex::new(None::<TcpStream>));
        let current = down.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(from_keyway) = conn else { continue };
                let Ok(to_redis) = TcpStream::connect(&target) else {
                    continue;
                };
                *current.lock().unwrap() = from_keyway.try_clone().ok();
                let (mut kr, mut rw) = (
                    from_keyway.try_clone().unwrap(),
                    to_redis.try_clone().unwrap(),
                );
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n @ 1..) = kr.read(&mut buf) {
                        if rw.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = rw.shutdown(std::net::Shutdown::Both);
                });
                let (mut rr, kw) = (to_redis, from_keyway);
                let shared = current.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n @ 1..) = rr.read(&mut buf) {
                        // Written under the lock, so an injection never lands
                        // inside a reply.
                        let guard = shared.lock().unwrap();
                        let mut w = &kw;
                        if w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        drop(guard);
                    }
                    let _ = kw.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Relay { addr, down }
    }

    /// Sends `bytes` to keyway as if Redis had sent them.
    pub fn inject(&self, bytes: &[u8]) {
        use std::io::Write;
        let guard = self.down.lock().unwrap();
        let mut s = guard.as_ref().expect("keyway is connected");
        s.write_all(bytes).unwrap();
    }
}

/// Calls of `command` a redis-server has served (`INFO commandstats`).
pub fn calls(redis: &Redis, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.conn())
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.split(',').next())
        .map_or(0, |v| v.parse().unwrap())
}

/// `INFO keyway` of a new connection, as `name -> value`.
pub fn keyway_info(kw: &Keyway) -> std::collections::HashMap<String, String> {
    let info: String = redis::cmd("INFO")
        .arg("keyway")
        .query(&mut kw.conn())
        .unwrap();
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// A counter of `INFO keyway`.
pub fn counter(kw: &Keyway, name: &str) -> u64 {
    keyway_info(kw)
        .get(name)
        .unwrap_or_else(|| panic!("INFO keyway has no {name}"))
        .parse()
        .unwrap()
}

/// Resident memory of `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A key owned by group index `g` of config `body`.
pub fn key_on(body: &str, g: usize, tag: &str) -> String {
    (0..)
        .map(|i| format!("{tag}:{i}"))
        .find(|k| owner(body, k.as_bytes()) == g)
        .unwrap()
}
