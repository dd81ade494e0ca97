//! The processes a benchmark run starts (redis-server, nutcracker, keyway),
//! each pinned where asked, killed on drop or when the benchmark dies
//! (`PR_SET_PDEATHSIG`, from the test kit), and the CPU time they use. Ports
//! and scratch directories come from the test kit too.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
pub use keyway_testkit::{free_port, TempDir};

/// Why [`Proc::spawn`] failed: the process exited at start (on a port picked
/// free, most likely because another process took it first), or otherwise.
#[derive(Debug)]
struct ExitedAtStart;

impl std::fmt::Display for ExitedAtStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("exited at start")
    }
}

impl std::error::Error for ExitedAtStart {}

/// CPU time (user + system, all threads) of a process so far, in seconds:
/// the scheduler's exact run time of each live thread
/// (`/proc/PID/task/*/schedstat`, nanoseconds), else the tick-sampled
/// `utime + stime` of `/proc/PID/stat` (whole ticks, and sampled: a tick
/// charges whichever mode it lands in, too coarse to tell a few percent
/// apart in a run of seconds).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    if let Some(ns) = schedstat_ns(pid) {
        return Ok(ns as f64 / 1e9);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').context("bad /proc stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f[11].parse()?;
    let stime: f64 = f[12].parse()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / hz)
}

/// The run time of every live thread of `pid`, in nanoseconds (the first
/// field of each `schedstat`); None without schedstats. The processes
/// measured keep their threads for their whole run.
fn schedstat_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// A child process killed on drop.
#[derive(Debug)]
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    /// Where clients connect.
    pub addr: SocketAddr,
    child: Child,
}

impl Proc {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `cmd` (pinned to `cpu` with taskset, if given) and waits until
    /// it accepts connections on `addr`.
    pub fn spawn(
        name: &str,
        addr: SocketAddr,
        cmd: &Command,
        cpu: Option<usize>,
    ) -> anyhow::Result<Proc> {
        let mut run = match cpu {
            Some(c) => {
                let mut t = Command::new("taskset");
                t.arg("-c").arg(c.to_string()).arg(cmd.get_program());
                t
            }
            None => Command::new(cmd.get_program()),
        };
        run.args(cmd.get_args())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                run.env(k, v);
            }
        }
        let child = keyway_testkit::die_with_parent(&mut run)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let mut p = Proc {
            name: name.to_string(),
            addr,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = p.child.try_wait()? {
                return Err(anyhow::Error::new(ExitedAtStart).context(format!("{name} ({st})")));
            }
            if TcpStream::connect(addr).is_ok() {
                return Ok(p);
            }
            anyhow::ensure!(Instant::now() < deadline, "{name} did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts what `make` builds for a port picked free, listening there;
    /// should it exit at start (another process took the port between the
    /// pick and its bind), again on a new port.
    pub fn spawn_on_free_port(
        name: &str,
        cpu: Option<usize>,
        mut make: impl FnMut(u16) -> anyhow::Result<Command>,
    ) -> anyhow::Result<Proc> {
        let mut tries = 0;
        loop {
            let port = free_port();
            let cmd = make(port)?;
            match Proc::spawn(name, ([127, 0, 0, 1], port).into(), &cmd, cpu) {
                Err(e) if e.is::<ExitedAtStart>() && tries < 4 => tries += 1,
                r => return r,
            }
        }
    }

    /// A redis-server with persistence off.
    pub fn redis(dir: &Path, cpu: Option<usize>) -> anyhow::Result<Proc> {
        Proc::spawn_on_free_port("redis", cpu, |port| Ok(redis_command(dir, port, None)))
    }

    /// A redis-server with persistence off, a replica of `master`.
    pub fn redis_replica(dir: &Path, master: SocketAddr) -> anyhow::Result<Proc> {
        Proc::spawn_on_free_port("redis", None, |port| {
            Ok(redis_command(dir, port, Some(master)))
        })
    }

    /// A redis-server with persistence off on `port` (to bring one back
    /// where it was).
    pub fn redis_on(dir: &Path, port: u16) -> anyhow::Result<Proc> {
        let cmd = redis_command(dir, port, None);
        Proc::spawn("redis", ([127, 0, 0, 1], port).into(), &cmd, None)
    }

    /// twemproxy in front of `backend`.
    pub fn nutcracker(dir: &Path, backend: SocketAddr, cpu: Option<usize>) -> anyhow::Result<Proc> {
        Proc::spawn_on_free_port("twemproxy", cpu, |port| {
            let stats = free_port();
            let conf = dir.join("nutcracker.yml");
            std::fs::write(
                &conf,
                format!(
                    "bench:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  \
                     timeout: 5000\n  servers:\n   - {backend}:1\n"
                ),
            )?;
            let mut cmd = Command::new("nutcracker");
            cmd.arg("-c")
                .arg(&conf)
                .args(["-s", &stats.to_string(), "-o"])
                .arg(dir.join("nutcracker.log"));
            Ok(cmd)
        })
    }

    /// keyway on `cpu` in front of `backend`, with extra config lines.
    pub fn keyway(
        bin: &Path,
        dir: &Path,
        name: &str,
        backend: SocketAddr,
        cpu: usize,
        extra: &str,
    ) -> anyhow::Result<Proc> {
        Proc::spawn_on_free_port(name, None, |port| {
            let conf = dir.join(format!("{name}.toml"));
            std::fs::write(
                &conf,
                format!(
                    "listen = \"127.0.0.1:{port}\"\ncores = [{cpu}]\n{extra}\n[[group]]\nname = \"g1\"\nmaster = \"{backend}\"\n"
                ),
            )?;
            let mut cmd = Command::new(bin);
            cmd.arg("--config").arg(&conf).env("KEYWAY_LOG", "warn");
            Ok(cmd)
        })
    }
}

/// A keyway-ctld with its file store in `dir`, on ports picked free (again
/// on new ones should it exit at start); returns it (its `addr` is the API's)
/// and its control address.
pub fn ctld_on_free_ports(bin: &Path, dir: &Path) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut control = 0;
    let ctld = Proc::spawn_on_free_port("keyway-ctld", None, |api| {
        control = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg("--store")
            .arg(format!("file:{}", dir.join("ctld.state").display()))
            .args(["--api", &format!("127.0.0.1:{api}")])
            .args(["--control", &format!("127.0.0.1:{control}")])
            .env("KEYWAY_LOG", "warn");
        Ok(cmd)
    })?;
    Ok((ctld, ([127, 0, 0, 1], control).into()))
}

/// A keyway data plane `bench-dp` of cluster `bench`, managed by the ctlds
/// at `controls` (`A` or `A,B,C`), its state in `dir`, on a port picked
/// free.
pub fn managed_keyway(bin: &Path, dir: &Path, controls: &str) -> anyhow::Result<Proc> {
    Proc::spawn_on_free_port("keyway", None, |port| {
        let mut cmd = Command::new(bin);
        cmd.args(["--control", controls, "--cluster", "bench"])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--id", "bench-dp"])
            .arg("--state-dir")
            .arg(dir.join("dp"))
            .env("KEYWAY_LOG", "warn");
        Ok(cmd)
    })
}

/// A redis-server on `port` with persistence off, its files in `dir`.
fn redis_command(dir: &Path, port: u16, replica_of: Option<SocketAddr>) -> Command {
    let mut cmd = keyway_testkit::redis_command(port, dir);
    if let Some(m) = replica_of {
        cmd.args(["--replicaof", &m.ip().to_string(), &m.port().to_string()]);
    }
    cmd
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
