//! What the data plane's integration tests share: the workspace test kit
//! (real redis-server processes, process guards) plus a standalone keyway.

#![allow(dead_code, unused_imports)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use keyway_testkit::Process;
pub use keyway_testkit::{raw_roundtrip, read_some, wait_for, Redis, TempDir};

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

/// The index (into `groups`) of the group owning `key` for the config `body`.
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
