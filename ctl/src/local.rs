//! `keywayctl local up|down`: a complete system on loopback — Redis groups
//! with replicas, keyway-ctld on the file store, and one keyway data plane —
//! started in the background from the binaries next to keywayctl, with their
//! logs and pids in one directory. `down` stops them. With `--ctlds N` (more
//! than one) it starts a local etcd (Debian's `etcd`, on ports the kernel
//! picks, its data under the directory) and N keyway-ctlds on it, one of
//! them active; the data plane and the printed keywayctl command get all N
//! addresses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Subcommand;

use crate::client::{Client, ClientError};
use crate::model::{Cluster, Group, Replica};
use crate::wire::CreateCluster;

/// `keywayctl local …`.
#[derive(Debug, Subcommand)]
pub enum LocalCmd {
    /// Start Redis groups, keyway-ctld and a keyway data plane in the background.
    Up {
        /// Redis groups (masters).
        #[arg(long, default_value_t = 3)]
        groups: usize,
        /// Replicas per group.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// Where clients connect.
        #[arg(long, default_value_t = 6380)]
        port: u16,
        /// keyway-ctld's API port.
        #[arg(long, default_value_t = 7700)]
        api_port: u16,
        /// keyway-ctld's control port.
        #[arg(long, default_value_t = 7800)]
        control_port: u16,
        /// keyway-ctlds: 1 on the file store; more on a local etcd (the
        /// API and control ports then count up from --api-port and
        /// --control-port).
        #[arg(long, default_value_t = 1)]
        ctlds: u16,
        /// keyway's admin HTTP port (/healthz, /table).
        #[arg(long, default_value_t = 6381)]
        admin_port: u16,
        /// First Redis port; the others follow.
        #[arg(long, default_value_t = 7001)]
        redis_port: u16,
        /// Cores for keyway.
        #[arg(long, default_value_t = 1)]
        cores: usize,
        /// Directory for logs, state and pids.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Stop everything `local up` started.
    Down {
        /// The directory `up` used.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn default_dir() -> PathBuf {
    std::env::temp_dir().join("keyway-local")
}

/// The binary `name` next to keywayctl, else on the PATH.
fn binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Why `keywayctl local` failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// `--ctlds` out of bounds.
    #[error("--ctlds must be from 1 to 9")]
    Ctlds,
    /// `--groups 0`.
    #[error("--groups must be at least 1")]
    Groups,
    /// Processes started from this directory still run.
    #[error("a local system is already running from {} (keywayctl local down first)", .0.display())]
    AlreadyRunning(PathBuf),
    /// `local down` with nothing started from this directory.
    #[error("nothing is running from {}", .0.display())]
    NothingRunning(PathBuf),
    /// A fixed port is taken.
    #[error("port {port} ({what}) is in use")]
    PortInUse {
        /// The port.
        port: u16,
        /// The option that names it.
        what: &'static str,
    },
    /// The port of a further keyway-ctld is taken.
    #[error("port {port} ({what} + {offset}, for keyway-ctld {}) is in use", offset + 1)]
    CtldPortInUse {
        /// The port.
        port: u16,
        /// The option of the first ctld's port.
        what: &'static str,
        /// How far past that port.
        offset: u16,
    },
    /// A port past 65535 would be needed.
    #[error("ports out of range")]
    PortsOutOfRange,
    /// No free port for a Redis server.
    #[error("ran out of ports")]
    OutOfPorts,
    /// A server did not answer in time.
    #[error("{what} did not come up within {secs}s")]
    NotUp {
        /// The server.
        what: String,
        /// How long it was given.
        secs: u64,
    },
    /// A file or directory could not be written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A process could not be started.
    #[error("cannot start {name} ({program:?}): {source}")]
    Start {
        /// What it is.
        name: String,
        /// The program run.
        program: std::ffi::OsString,
        /// Why.
        source: std::io::Error,
    },
    /// etcd or redis-server could not be started: perhaps not installed.
    #[error("{source} (is {program} installed? scripts/deps.sh installs it)")]
    NotInstalled {
        /// `etcd` or `redis-server`.
        program: &'static str,
        /// The failure.
        source: Box<LocalError>,
    },
    /// Other I/O (the pid file, a loopback port for etcd).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The API refused the cluster or could not be reached.
    #[error(transparent)]
    Api(#[from] ClientError),
}

fn file(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
    move |source| LocalError::File {
        path: path.to_path_buf(),
        source,
    }
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
) -> Result<(), LocalError> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return Err(LocalError::NotUp {
                what: what.to_string(),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn http_ok(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut resp = String::new();
    s.write_all(req.as_bytes()).is_ok()
        && s.read_to_string(&mut resp).is_ok()
        && resp.starts_with("HTTP/1.1 200")
}

/// Starts `cmd` detached from keywayctl (own process group), logging to
/// `log`, and records its pid in `dir/pids`.
fn spawn(dir: &Path, name: &str, cmd: &mut Command, log: &Path) -> Result<u32, LocalError> {
    let out = std::fs::File::create(log).map_err(file(log))?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|source| LocalError::Start {
            name: name.to_string(),
            program: cmd.get_program().to_os_string(),
            source,
        })?;
    let mut pids = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("pids"))?;
    writeln!(pids, "{} {name}", child.id())?;
    Ok(child.id())
}

fn alive(pid: u32) -> bool {
    // SAFETY: reaps the process if it is our exited child (a no-op for
    // others), then signal 0 checks that it still exists.
    unsafe {
        libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG);
        libc::kill(pid as i32, 0) == 0
    }
}

fn pids(dir: &Path) -> Vec<(u32, String)> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pid, name) = l.split_once(' ')?;
            Some((pid.parse().ok()?, name.to_string()))
        })
        .collect()
}

/// Runs `local up` or `local down`.
pub fn run(cmd: LocalCmd, json: bool) -> Result<(), LocalError> {
    match cmd {
        LocalCmd::Up {
            groups,
            replicas,
            port,
            api_port,
            control_port,
            ctlds,
            admin_port,
            redis_port,
            cores,
            dir,
        } => {
            let dir = dir.unwrap_or_else(default_dir);
            let ports = [port, api_port, control_port, admin_port];
            preflight(&dir, groups, ports, ctlds)?;
            // From here on, a failure stops whatever this call started.
            up(
                &dir, groups, replicas, ports, ctlds, redis_port, cores, json,
            )
            .inspect_err(|_| stop(&dir))
        }
        LocalCmd::Down { dir } => {
            let dir = dir.unwrap_or_else(default_dir);
            if pids(&dir).is_empty() {
                return Err(LocalError::NothingRunning(dir));
            }
            stop(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            if !json {
                println!("stopped the local system in {}", dir.display());
            }
            Ok(())
        }
    }
}

/// What must hold before anything is started: nothing running from `dir`,
/// and the fixed ports free.
fn preflight(
    dir: &Path,
    groups: usize,
    [port, api_port, control_port, admin_port]: [u16; 4],
    ctlds: u16,
) -> Result<(), LocalError> {
    if !(1..=9).contains(&ctlds) {
        return Err(LocalError::Ctlds);
    }
    if pids(dir).iter().any(|(p, _)| alive(*p)) {
        return Err(LocalError::AlreadyRunning(dir.to_path_buf()));
    }
    if groups == 0 {
        return Err(LocalError::Groups);
    }
    for (p, what) in [
        (port, "--port"),
        (api_port, "--api-port"),
        (control_port, "--control-port"),
        (admin_port, "--admin-port"),
    ] {
        if !port_free(p) {
            return Err(LocalError::PortInUse { port: p, what });
        }
    }
    for i in 1..ctlds {
        for (base, what) in [(api_port, "--api-port"), (control_port, "--control-port")] {
            let p = base.checked_add(i).ok_or(LocalError::PortsOutOfRange)?;
            if !port_free(p) {
                return Err(LocalError::CtldPortInUse {
                    port: p,
                    what,
                    offset: i,
                });
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn up(
    dir: &Path,
    groups: usize,
    replicas: usize,
    [port, api_port, control_port, admin_port]: [u16; 4],
    ctlds: u16,
    redis_port: u16,
    cores: usize,
    json: bool,
) -> Result<(), LocalError> {
    let reserved: Vec<u16> = (0..ctlds)
        .flat_map(|i| [api_port + i, control_port + i])
        .chain([port, admin_port])
        .collect();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(file(dir))?;
    // Redis: masters, then each master's replicas, on consecutive free ports.
    let mut next = redis_port;
    let mut take_port = || -> Result<u16, LocalError> {
        while !port_free(next) || reserved.contains(&next) {
            next = next.checked_add(1).ok_or(LocalError::OutOfPorts)?;
        }
        next += 1;
        Ok(next - 1)
    };
    let mut cluster_groups = Vec::new();
    let mut redis_ports = Vec::new();
    for gi in 0..groups {
        let master = take_port()?;
        let mut g = Group {
            name: format!("g{}", gi + 1),
            master: format!("127.0.0.1:{master}"),
            zone: "zone-a".into(),
            ..Group::default()
        };
        redis_ports.push(master);
        start_redis(dir, master, None)?;
        for _ in 0..replicas {
            let rp = take_port()?;
            redis_ports.push(rp);
            start_redis(dir, rp, Some(master))?;
            g.replicas.push(Replica {
                address: format!("127.0.0.1:{rp}"),
                zone: "zone-b".into(),
            });
        }
        cluster_groups.push(g);
    }
    for &p in &redis_ports {
        wait_until(
            &format!("redis-server on port {p}"),
            Duration::from_secs(10),
            || redis_ping(p),
        )?;
    }
    let apis: Vec<SocketAddr> = (0..ctlds)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], api_port + i)))
        .collect();
    let controls: Vec<String> = (0..ctlds)
        .map(|i| format!("127.0.0.1:{}", control_port + i))
        .collect();
    let store = if ctlds > 1 {
        format!("etcd:{}", start_etcd(dir)?)
    } else {
        format!("file:{}", dir.join("ctld.state").display())
    };
    for (i, (api, control)) in apis.iter().zip(&controls).enumerate() {
        let log = if ctlds > 1 {
            dir.join(format!("ctld-{}.log", i + 1))
        } else {
            dir.join("ctld.log")
        };
        spawn(
            dir,
            "keyway-ctld",
            Command::new(binary("keyway-ctld"))
                .args(["--store", &store])
                .args(["--api", &api.to_string(), "--control", control]),
            &log,
        )?;
    }
    for api in &apis {
        wait_until("keyway-ctld", Duration::from_secs(10), || {
            http_ok(*api, "/healthz")
        })?;
    }
    wait_until("an active keyway-ctld", Duration::from_secs(20), || {
        apis.iter().any(|a| {
            http_ok(*a, "/v1/leader") && http_body(*a, "/v1/leader").contains("\"active\":true")
        })
    })?;
    let api_list: Vec<String> = apis.iter().map(ToString::to_string).collect();
    let api = api_list.join(",");
    let control = controls.join(",");
    // ctld runs on loopback without a token here.
    let client = Client::new(&api, None);
    let _: Cluster = client.post(
        "/v1/clusters",
        &CreateCluster {
            name: "local".into(),
            slots: 16384,
            groups: cluster_groups,
            lease_ms: None,
            ha: None,
        },
    )?;
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    spawn(
        dir,
        "keyway",
        Command::new(binary("keyway"))
            .args(["--control", &control, "--cluster", "local"])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin",
                &admin.to_string(),
            ])
            .args(["--cores", &cores.to_string(), "--id", "local-1"])
            .arg("--state-dir")
            .arg(dir.join("keyway")),
        &dir.join("keyway.log"),
    )?;
    wait_until("keyway", Duration::from_secs(15), || {
        http_ok(admin, "/healthz")
    })?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "dir": dir, "listen": format!("127.0.0.1:{port}"), "api": api,
                "admin": admin.to_string(), "redis_ports": redis_ports,
            })
        );
    } else {
        println!("keyway is serving 127.0.0.1:{port} in front of {groups} Redis groups ({replicas} replica(s) each).");
        if ctlds > 1 {
            println!("  control:   {ctlds} keyway-ctlds on a local etcd, one active (GET /v1/leader on any)");
        }
        println!("  connect:   redis-cli -p {port}");
        println!("  manage:    keywayctl --api {api} cluster show local");
        println!("  health:    curl http://{admin}/healthz   (and /table)");
        println!("  logs:      {}", dir.display());
        println!(
            "  stop:      keywayctl local down{}",
            if dir == default_dir() {
                String::new()
            } else {
                format!(" --dir {}", dir.display())
            }
        );
    }
    Ok(())
}

/// The body of `GET path` (empty on any failure).
fn http_body(addr: SocketAddr, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut resp = String::new();
    let _ = s.write_all(req.as_bytes());
    let _ = s.read_to_string(&mut resp);
    resp
}

/// Starts a single-member etcd on ports the kernel picks, its data under
/// `dir`; returns its client URL once it answers.
fn start_etcd(dir: &Path) -> Result<String, LocalError> {
    let free = || -> Result<u16, LocalError> {
        Ok(TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())?
            .port())
    };
    let (client, peer) = (free()?, free()?);
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    spawn(
        dir,
        "etcd",
        Command::new("etcd")
            .args(["--name", "keyway-local"])
            .arg("--data-dir")
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("keyway-local={peer_url}")]),
        &dir.join("etcd.log"),
    )
    .map_err(|e| LocalError::NotInstalled {
        program: "etcd",
        source: Box::new(e),
    })?;
    let addr: SocketAddr = ([127, 0, 0, 1], client).into();
    wait_until("etcd", Duration::from_secs(20), || {
        http_body(addr, "/health").contains("\"health\":\"true\"")
    })?;
    Ok(url)
}

fn start_redis(dir: &Path, port: u16, master: Option<u16>) -> Result<(), LocalError> {
    let data = dir.join(format!("redis-{port}"));
    std::fs::create_dir_all(&data).map_err(file(&data))?;
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
    .arg(&data);
    if let Some(m) = master {
        cmd.args(["--replicaof", "127.0.0.1", &m.to_string()]);
    }
    spawn(
        dir,
        &format!("redis-{port}"),
        &mut cmd,
        &dir.join(format!("redis-{port}.log")),
    )
    .map_err(|e| LocalError::NotInstalled {
        program: "redis-server",
        source: Box::new(e),
    })?;
    Ok(())
}

/// Stops keyway, then ctld, then Redis: SIGTERM, then SIGKILL after 10 s.
fn stop(dir: &Path) {
    let mut list = pids(dir);
    list.sort_by_key(|(_, name)| match name.as_str() {
        "keyway" => 0,
        "keyway-ctld" => 1,
        "etcd" => 2,
        _ => 3,
    });
    for (pid, _) in &list {
        // SAFETY: signalling processes this tool started.
        unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while list.iter().any(|(p, _)| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (pid, _) in &list {
        if alive(*pid) {
            // SAFETY: as above.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
    }
    let _ = std::fs::remove_file(dir.join("pids"));
}
