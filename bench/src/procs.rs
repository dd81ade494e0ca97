//! The processes a benchmark run starts (redis-server, nutcracker, keyway),
//! each pinned where asked and killed on drop, and the CPU time they use.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// A port free right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// CPU time (user + system, all threads) of a process so far, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
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
        let child = run
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
                anyhow::bail!("{name} exited at start ({st})");
            }
            if TcpStream::connect(addr).is_ok() {
                return Ok(p);
            }
            anyhow::ensure!(Instant::now() < deadline, "{name} did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A redis-server with persistence off.
    pub fn redis(dir: &Path, cpu: Option<usize>) -> anyhow::Result<Proc> {
        Proc::redis_with(dir, free_port()?, None, cpu)
    }

    /// A redis-server with persistence off on `port`, a replica of
    /// `replica_of` if given.
    pub fn redis_on(dir: &Path, port: u16, replica_of: Option<SocketAddr>) -> anyhow::Result<Proc> {
        Proc::redis_with(dir, port, replica_of, None)
    }

    fn redis_with(
        dir: &Path,
        port: u16,
        replica_of: Option<SocketAddr>,
        cpu: Option<usize>,
    ) -> anyhow::Result<Proc> {
        let mut cmd = Command::new("redis-server");
        cmd.args([
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
        .arg(dir);
        if let Some(m) = replica_of {
            cmd.args(["--replicaof", &m.ip().to_string(), &m.port().to_string()]);
        }
        Proc::spawn("redis", ([127, 0, 0, 1], port).into(), &cmd, cpu)
    }

    /// twemproxy in front of `backend`.
    pub fn nutcracker(dir: &Path, backend: SocketAddr, cpu: Option<usize>) -> anyhow::Result<Proc> {
        let port = free_port()?;
        let stats = free_port()?;
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
        Proc::spawn("twemproxy", ([127, 0, 0, 1], port).into(), &cmd, cpu)
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
        let port = free_port()?;
        let conf = dir.join(format!("{name}.toml"));
        std::fs::write(
            &conf,
            format!(
                "listen = \"127.0.0.1:{port}\"\ncores = [{cpu}]\n{extra}\n[[group]]\nname = \"g1\"\nmaster = \"{backend}\"\n"
            ),
        )?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&conf).env("KEYWAY_LOG", "warn");
        Proc::spawn(name, ([127, 0, 0, 1], port).into(), &cmd, None)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new directory under the system temp dir.
    pub fn new() -> anyhow::Result<Scratch> {
        let p = std::env::temp_dir().join(format!("keyway-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
