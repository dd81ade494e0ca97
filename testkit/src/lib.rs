//! The harness keyway's integration tests share: real `redis-server`
//! processes and the workspace's own binaries, started on ephemeral loopback
//! ports with readiness checks (never fixed ports, never sleeps standing in
//! for readiness), and killed when their guard drops — or, should the test
//! process die, by the kernel through `PR_SET_PDEATHSIG`.
//!
//! Beyond processes: [`SideBySide`] sends the same commands to a real
//! redis-server and through keyway and compares the replies byte for byte;
//! [`Redis::cluster_node`] answers `CLUSTER KEYSLOT` as an oracle for slots;
//! [`allowed_cpus`] names the CPUs a test may pin to; [`tls::Certs`] makes
//! test certificates with `openssl`; [`skip!`] says so
//! visibly when a test cannot run here.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod compare;
pub mod cpus;
pub mod resp;
pub mod tls;

pub use compare::{assert_same, SideBySide};
pub use cpus::allowed_cpus;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// Ends the calling test early, saying so as `SKIP: <test>: <reason>` on
/// stderr, so a test that checked nothing never looks like one that passed.
/// Written to the stream itself, not through `eprintln!`, which the test
/// harness captures: the line shows in every `cargo test` run.
#[macro_export]
macro_rules! skip {
    ($($reason:tt)+) => {{
        $crate::say_skip(&format!($($reason)+));
        return;
    }};
}

/// What [`skip!`] prints, past the test harness's capture.
pub fn say_skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

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
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir.
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

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes the child die with the thread that started it.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
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

/// `redis-server` on 127.0.0.1:`port` with persistence off and its files in
/// `dir` (more arguments may follow).
pub fn redis_command(port: u16, dir: &Path) -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir);
    cmd
}

/// A binary of this workspace, built from the current tree: the first call
/// for each binary runs `cargo build` for its package (a no-op when it is
/// fresh), so a stale binary from an older build is never run silently.
/// Integration tests of the package owning a binary use
/// `env!("CARGO_BIN_EXE_<name>")` instead.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let package = match name {
        "keyway" => "keyway",
        "keyway-ctld" | "keywayctl" => "keyway-ctl",
        "keyway-bench"
        | "keyway-load"
        | "keyway-ha-bench"
        | "keyway-migrate-bench"
        | "keyway-takeover-bench" => "keyway-bench",
        other => panic!("{other} is not a binary of this workspace"),
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug").join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-q", "-p", package, "--bin", name])
            .current_dir(&root)
            .output()
            .unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
        assert!(
            out.status.success(),
            "cargo build -p {package} --bin {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        built.push(name.to_string());
    }
    assert!(
        bin.exists(),
        "cargo built {name} but {} is missing",
        bin.display()
    );
    bin
}

/// The directory holding `names`, each built from the current tree as by
/// [`workspace_bin`] (for harnesses that take a directory of binaries).
pub fn workspace_bin_dir(names: &[&str]) -> PathBuf {
    let dirs: Vec<PathBuf> = names
        .iter()
        .map(|n| {
            workspace_bin(n)
                .parent()
                .expect("a binary is in a directory")
                .to_path_buf()
        })
        .collect();
    let first = dirs.first().expect("at least one binary").clone();
    assert!(dirs.iter().all(|d| *d == first), "one target directory");
    first
}

/// A redis-server on a loopback port.
#[derive(Debug)]
pub struct Redis {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
    _dir: TempDir,
}

impl Redis {
    /// Starts one on a free port.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Starts one on a free port with more arguments (e.g. `--maxclients
    /// 3`), to serve as a reference for keyway configured alike.
    pub fn start_with(args: &[&str]) -> Redis {
        for _ in 0..5 {
            if let Some(r) = Redis::try_start(free_port(), args) {
                return r;
            }
        }
        panic!("could not start redis-server {args:?}");
    }

    /// Starts one with cluster support on (and in no cluster): it answers
    /// `CLUSTER KEYSLOT`, the reference for which slot a key hashes to.
    pub fn cluster_node() -> Redis {
        Redis::start_with(&["--cluster-enabled", "yes"])
    }

    /// The slot Redis Cluster gives each of `keys` (`CLUSTER KEYSLOT`, on a
    /// [`cluster_node`](Self::cluster_node)).
    pub fn keyslots<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        let req: Vec<u8> = keys
            .iter()
            .flat_map(|k| resp::request(&[b"CLUSTER".as_slice(), b"KEYSLOT", k.as_ref()]))
            .collect();
        let replies = resp::exchange(&mut s, &req, keys.len());
        let text = String::from_utf8(replies).expect("integer replies");
        let slots: Vec<u16> = text
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("CLUSTER KEYSLOT answered {l:?}"))
            })
            .collect();
        assert_eq!(slots.len(), keys.len(), "one slot per key");
        slots
    }

    /// Starts one on `port` (e.g. to bring a killed server back).
    pub fn start_on(port: u16) -> Redis {
        wait_for("redis to start", Duration::from_secs(10), || {
            Redis::try_start(port, &[])
        })
    }

    /// Starts a replica of `master`, first telling `master` to start a
    /// replica's full sync at once (Redis waits 5 s by default, for more
    /// replicas to share one transfer).
    pub fn replica_of(master: &Redis) -> Redis {
        let () = redis::cmd("CONFIG")
            .arg(&["SET", "repl-diskless-sync-delay", "0"][..])
            .query(&mut master.conn())
            .expect("CONFIG SET repl-diskless-sync-delay");
        Redis::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()])
    }

    /// One field of `INFO replication` ("" if absent).
    pub fn replication_field(&self, name: &str) -> String {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut self.conn())
            .unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .unwrap_or("")
            .trim()
            .to_string()
    }

    /// Waits until `replica` has everything written to this master so far,
    /// through any connection: its link is up, no sync is in progress, and
    /// its offset has reached the master's offset as read now. (`WAIT` on a
    /// new connection would not do: it only waits for that connection's own
    /// writes, and counts a replica whose first sync has just ended.)
    /// Returns the offset.
    pub fn wait_replica_synced(&self, replica: &Redis) -> u64 {
        let target: u64 = self
            .replication_field("master_repl_offset")
            .parse()
            .expect("a master's offset");
        wait_for("the replica to sync", Duration::from_secs(60), || {
            let offset: u64 = replica
                .replication_field("slave_repl_offset")
                .parse()
                .ok()?;
            (replica.replication_field("master_link_status") == "up"
                && replica.replication_field("master_sync_in_progress") == "0"
                && offset >= target)
                .then_some(offset)
        })
    }

    fn try_start(port: u16, extra: &[&str]) -> Option<Redis> {
        let dir = TempDir::new("redis");
        let child = die_with_parent(
            redis_command(port, dir.path())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .spawn()
        .expect("redis-server must be installed (scripts/deps.sh)");
        let mut r = Redis {
            port,
            child: Some(child),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = r.child.as_mut().map(Child::try_wait) {
                return None; // exited: port taken
            }
            // The free port was only free when picked: ready means *this*
            // child answers on it, not whichever process took the port.
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let info = resp::exchange(&mut s, &resp::request(&["INFO", "server"]), 1);
                let pid = format!("process_id:{}\r\n", r.pid());
                if info.windows(pid.len()).any(|w| w == pid.as_bytes()) {
                    return Some(r);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        r.kill();
        None
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client connection.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Kills it now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it (`SIGSTOP`): it keeps its connections and answers nothing,
    /// so requests sent to it stay in flight until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets it go on (`SIGCONT`).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
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

/// A child process whose stdout and stderr lines are collected; killed on
/// drop.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    out_lines: Vec<String>,
    err_lines: Vec<String>,
}

fn lines(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

impl Process {
    /// Starts `cmd` with piped output.
    pub fn spawn(cmd: &mut Command) -> Process {
        let mut child = die_with_parent(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Process {
            child: Some(child),
            stdout,
            stderr,
            out_lines: Vec::new(),
            err_lines: Vec::new(),
        }
    }

    fn drain(&mut self) {
        self.out_lines.extend(self.stdout.try_iter());
        self.err_lines.extend(self.stderr.try_iter());
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if let Some(l) = self.out_lines.iter().find_map(|l| l.strip_prefix(prefix)) {
                return l.to_string();
            }
            if Instant::now() > deadline || !self.alive() {
                self.drain();
                panic!(
                    "no line starting {prefix:?} on stdout; stdout:\n{}\nstderr:\n{}",
                    self.out_lines.join("\n"),
                    self.err_lines.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every stderr line so far.
    pub fn logs(&mut self) -> Vec<String> {
        self.drain();
        self.err_lines.clone()
    }

    /// Waits for a stderr line containing `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().iter().any(|l| l.contains(needle)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no log line with {needle:?}:\n{}", self.logs().join("\n"));
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Waits for it to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                self.drain();
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("process did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it with SIGTERM and returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(20))
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A single-member etcd (Debian `etcd-server`) on loopback ports, its data
/// in a temporary directory.
#[derive(Debug)]
pub struct Etcd {
    /// Its client URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The process.
    pub proc: Process,
    _dir: TempDir,
}

impl Etcd {
    /// Starts one and waits until it answers `/health`. Its ports were free
    /// when picked; should another process take one first, etcd exits and
    /// this starts it again on new ports.
    pub fn start() -> Etcd {
        for _ in 0..5 {
            if let Some(e) = Etcd::try_start() {
                return e;
            }
        }
        panic!("etcd did not start on five pairs of free ports");
    }

    fn try_start() -> Option<Etcd> {
        let dir = TempDir::new("etcd");
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let proc = Process::spawn(
            Command::new("etcd")
                .args(["--name", "keyway-test"])
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args([
                    "--listen-client-urls",
                    &url,
                    "--advertise-client-urls",
                    &url,
                ])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("keyway-test={peer_url}")])
                .args(["--log-level", "warn"]),
        );
        let mut e = Etcd {
            url,
            proc,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if !e.proc.alive() {
                return None; // a port was taken
            }
            // An etcd that cannot bind exits within milliseconds; alive
            // after a healthy answer means the answer was most likely ours.
            if e.healthy() && e.proc.alive() {
                return Some(e);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "etcd did not answer /health within 20 s:\n{}",
            e.proc.logs().join("\n")
        );
    }

    /// Its client port.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port")
    }

    /// `/health` says true.
    pub fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port())) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let req = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut resp = String::new();
        s.write_all(req.as_bytes()).is_ok()
            && s.read_to_string(&mut resp).is_ok()
            && resp.contains("\"health\":\"true\"")
    }

    /// Stops it (`SIGSTOP`): it keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.proc.signal(libc::SIGSTOP);
    }

    /// Lets it go on (`SIGCONT`).
    pub fn resume(&self) {
        self.proc.signal(libc::SIGCONT);
    }
}
