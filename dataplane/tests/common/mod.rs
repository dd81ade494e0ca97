//! Test harness: real `redis-server` processes and real `keyway` processes on
//! ephemeral loopback ports, each killed when its guard drops (and, should the
//! test process die, by the kernel through PR_SET_PDEATHSIG).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "keyway-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// A port nothing listens on right now (the kernel's pick).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server on a loopback port.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        for _ in 0..5 {
            if let Some(r) = Redis::try_start(free_port()) {
                return r;
            }
        }
        panic!("could not start redis-server");
    }

    /// Starts on a given port (e.g. to bring a killed server back).
    pub fn start_on(port: u16) -> Redis {
        wait_for("redis to start", Duration::from_secs(10), || {
            Redis::try_start(port)
        })
    }

    fn try_start(port: u16) -> Option<Redis> {
        let dir = TempDir::new("redis");
        let child = die_with_parent(
            Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .spawn()
        .expect("redis-server must be installed (see README)");
        let mut r = Redis {
            port,
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = r.child.as_mut().map(Child::try_wait) {
                return None; // exited: port taken
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                if raw_roundtrip(&mut s, b"PING\r\n").starts_with(b"+PONG") {
                    return Some(r);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        r.kill();
        None
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends raw bytes and reads whatever arrives until a short quiet period.
pub fn raw_roundtrip(s: &mut TcpStream, req: &[u8]) -> Vec<u8> {
    s.write_all(req).unwrap();
    read_some(s, Duration::from_millis(500))
}

/// Reads until the peer is quiet for `quiet` (after the first byte) or closes.
pub fn read_some(s: &mut TcpStream, quiet: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                s.set_read_timeout(Some(quiet)).unwrap();
            }
            Err(_) => return out,
        }
    }
}

/// `transport = "…"` from `KEYWAY_TEST_TRANSPORT`, or nothing (the default).
pub fn transport_line() -> String {
    match std::env::var("KEYWAY_TEST_TRANSPORT") {
        Ok(t) if !t.is_empty() => format!("transport = \"{t}\"\n"),
        _ => String::new(),
    }
}

/// A keyway process.
pub struct Keyway {
    pub addr: SocketAddr,
    child: Option<Child>,
    pub dir: TempDir,
    stderr: Option<mpsc::Receiver<String>>,
    logs: Vec<String>,
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
        Keyway::start_with(dir, &config)
    }

    fn start_with(dir: TempDir, config: &Path) -> Keyway {
        let mut child = die_with_parent(
            Command::new(env!("CARGO_BIN_EXE_keyway"))
                .arg("--config")
                .arg(config)
                .env("KEYWAY_LOG", "info")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .spawn()
        .expect("start keyway");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = etx.send(line);
            }
        });
        let mut kw = Keyway {
            addr: "0.0.0.0:0".parse().unwrap(),
            child: Some(child),
            dir,
            stderr: Some(erx),
            logs: Vec::new(),
        };
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => panic!("keyway did not start:\n{}", kw.logs().join("\n")),
        };
        let addr = line
            .strip_prefix("keyway listening on ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        kw.addr = addr.parse().unwrap();
        kw
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("keyway.toml")
    }

    /// Rewrites the config (keeping the listen line) and sends SIGHUP.
    pub fn reload(&self, body: &str) {
        std::fs::write(
            self.config_path(),
            format!("listen = \"{}\"\n{body}", self.addr),
        )
        .unwrap();
        self.signal(libc::SIGHUP);
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
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

    /// Every stderr line so far.
    pub fn logs(&mut self) -> Vec<String> {
        if let Some(rx) = &self.stderr {
            while let Ok(l) = rx.try_recv() {
                self.logs.push(l);
            }
        }
        self.logs.clone()
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_log(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.logs().iter().any(|l| l.contains(needle)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no log line with {needle:?}:\n{}", self.logs().join("\n"));
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops with SIGTERM and returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("keyway did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Keyway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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
    match t.route(t.slot_of(key)) {
        keyway::routing::SlotRoute::Stable(g) => usize::from(g),
        keyway::routing::SlotRoute::Unassigned => panic!("unassigned"),
    }
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
