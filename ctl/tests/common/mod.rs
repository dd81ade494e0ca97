//! What the control plane's system tests share: keyway-ctld, keywayctl and
//! managed keyway data planes as real processes, over real redis-servers.

#![allow(dead_code, unused_imports)]

pub mod checks;
pub mod load;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use keyway_testkit::{free_port, skip, wait_for, workspace_bin, Etcd, Process, Redis, TempDir};
use serde_json::Value;

/// A keyway-ctld on a file store in `dir`.
pub struct Ctld {
    pub api: SocketAddr,
    pub control: SocketAddr,
    pub store: PathBuf,
    pub proc: Process,
    /// The CA keywayctl verifies the API with (`--ca`), for a ctld started
    /// with `--tls-cert`.
    pub ca: Option<PathBuf>,
}

impl Ctld {
    /// Starts on free ports.
    pub fn start(dir: &Path, lease: &str) -> Ctld {
        Ctld::start_on(dir, lease, "127.0.0.1:0", "127.0.0.1:0")
    }

    /// Starts on given addresses (to come back where data planes dial).
    pub fn start_on(dir: &Path, lease: &str, api: &str, control: &str) -> Ctld {
        Ctld::start_with(dir, lease, api, control, &[])
    }

    /// Starts with more arguments (e.g. `--token-file`).
    pub fn start_with(dir: &Path, lease: &str, api: &str, control: &str, extra: &[&str]) -> Ctld {
        let store = dir.join("ctld.state");
        let mut proc = Process::spawn(
            Command::new(env!("CARGO_BIN_EXE_keyway-ctld"))
                .arg("--store")
                .arg(format!("file:{}", store.display()))
                .args(["--api", api, "--control", control, "--lease", lease])
                .args(extra),
        );
        let line = proc.wait_line("keyway-ctld api ", Duration::from_secs(20));
        let (api, control) = line
            .split_once(" control ")
            .expect("api and control addresses");
        Ctld {
            api: api.parse().unwrap(),
            control: control.parse().unwrap(),
            store,
            proc,
            ca: None,
        }
    }

    /// Starts one on etcd at `etcd_url` under `prefix`, on free ports; it
    /// stands by or becomes active (`extra`: more arguments).
    pub fn start_on_etcd(etcd_url: &str, prefix: &str, extra: &[&str]) -> Ctld {
        let mut proc = Process::spawn(
            Command::new(env!("CARGO_BIN_EXE_keyway-ctld"))
                .arg("--store")
                .arg(format!("etcd:{etcd_url}"))
                .args(["--etcd-prefix", prefix])
                .args(["--api", "127.0.0.1:0", "--control", "127.0.0.1:0"])
                .args(extra),
        );
        let line = proc.wait_line("keyway-ctld api ", Duration::from_secs(20));
        let (api, control) = line
            .split_once(" control ")
            .expect("api and control addresses");
        Ctld {
            api: api.parse().unwrap(),
            control: control.parse().unwrap(),
            store: PathBuf::new(),
            proc,
            ca: None,
        }
    }

    /// Whether this ctld says it is the active one (`GET /v1/leader`).
    pub fn is_active(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(self.api) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = "GET /v1/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut resp = String::new();
        let _ = s.write_all(req.as_bytes());
        let _ = s.read_to_string(&mut resp);
        status_and_body(&resp).1.contains("\"active\":true")
    }

    /// Runs keywayctl against this ctld; returns (success, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        match &self.ca {
            None => keywayctl(&self.api.to_string(), args),
            Some(ca) => {
                let mut all = vec!["--ca", ca.to_str().expect("a UTF-8 path")];
                all.extend_from_slice(args);
                keywayctl(&self.api.to_string(), &all)
            }
        }
    }

    /// Runs keywayctl with `--json` and parses its output; panics on failure.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (ok, out, err) = self.ctl(&all);
        assert!(ok, "keywayctl {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("keywayctl {args:?}: {e}: {out}"))
    }

    /// The acked version of data plane `id` (0 if unknown).
    pub fn acked(&self, id: &str) -> u64 {
        let dps = self.ctl_json(&["dataplanes"]);
        dps.as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .map_or(0, |d| d["acked_version"].as_u64().unwrap())
    }

    /// Waits until data plane `id` has acked `version` (or newer).
    pub fn wait_acked(&self, id: &str, version: u64) {
        wait_for(
            &format!("{id} to ack version {version}"),
            Duration::from_secs(15),
            || (self.acked(id) >= version).then_some(()),
        );
    }
}

/// Runs keywayctl; returns (success, stdout, stderr).
pub fn keywayctl(api: &str, args: &[&str]) -> (bool, String, String) {
    keywayctl_env(api, args, &[])
}

/// Runs keywayctl with environment variables; returns (success, stdout,
/// stderr).
pub fn keywayctl_env(api: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keywayctl"))
        .arg("--api")
        .arg(api)
        .args(args)
        .env_remove("KEYWAY_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A keyway data plane managed by a ctld.
pub struct DataPlane {
    pub id: String,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub proc: Process,
}

impl DataPlane {
    /// Starts one for `cluster`, keeping its state in `state_dir`.
    pub fn start(control: SocketAddr, cluster: &str, id: &str, state_dir: &Path) -> DataPlane {
        DataPlane::start_with(control, cluster, id, state_dir, &[])
    }

    /// Starts one with more arguments (e.g. `--control-token-file`).
    pub fn start_with(
        control: SocketAddr,
        cluster: &str,
        id: &str,
        state_dir: &Path,
        extra: &[&str],
    ) -> DataPlane {
        DataPlane::start_controls(&control.to_string(), cluster, id, state_dir, extra)
    }

    /// Starts one given control addresses `A,B,C` (ctlds on etcd).
    pub fn start_with_controls(
        controls: &str,
        cluster: &str,
        id: &str,
        state_dir: &Path,
    ) -> DataPlane {
        DataPlane::start_controls(controls, cluster, id, state_dir, &[])
    }

    fn start_controls(
        controls: &str,
        cluster: &str,
        id: &str,
        state_dir: &Path,
        extra: &[&str],
    ) -> DataPlane {
        let mut proc = Process::spawn(
            Command::new(workspace_bin("keyway"))
                .args(["--control", controls, "--cluster", cluster, "--id", id])
                .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
                .arg("--state-dir")
                .arg(state_dir)
                .args(extra)
                .env("KEYWAY_LOG", "info"),
        );
        let addr = proc
            .wait_line("keyway listening on ", Duration::from_secs(20))
            .parse()
            .unwrap();
        let admin = proc
            .wait_line("keyway admin on ", Duration::from_secs(20))
            .parse()
            .unwrap();
        DataPlane {
            id: id.to_string(),
            addr,
            admin,
            proc,
        }
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}", self.addr))
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }

    /// (status, body) of `GET path` on the admin endpoint.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// Waits until /healthz answers `status`.
    pub fn wait_health(&self, status: u16, timeout: Duration) {
        wait_for(
            &format!("/healthz {status} on {}", self.id),
            timeout,
            || (self.admin_get("/healthz").0 == status).then_some(()),
        );
    }

    /// The version in /table.
    pub fn table_version(&self) -> u64 {
        let (_, body) = self.admin_get("/table");
        serde_json::from_str::<Value>(&body).unwrap()["version"]
            .as_u64()
            .unwrap()
    }
}

/// A control-session client speaking the framing itself, as a data plane
/// (or an impostor) would.
pub struct RawSession {
    pub sock: TcpStream,
    buf: Vec<u8>,
}

impl RawSession {
    pub fn connect(control: SocketAddr) -> RawSession {
        let sock = TcpStream::connect(control).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawSession {
            sock,
            buf: Vec::new(),
        }
    }

    /// Sends `m`; a session ctld already closed shows in `recv`.
    pub fn send(&mut self, m: &keyway_capnp::control::FromDataPlane) {
        let _ = keyway_capnp::frame::write_frame(&mut self.sock, &m.encode());
    }

    /// The next message, or `None` once ctld closed the session.
    pub fn recv(&mut self) -> Option<keyway_capnp::control::ToDataPlane> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() >= 4 + len {
                    let m =
                        keyway_capnp::control::ToDataPlane::decode(&self.buf[4..4 + len]).unwrap();
                    self.buf.drain(..4 + len);
                    return Some(m);
                }
            }
            let mut chunk = [0u8; 65536];
            match self.sock.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Messages until ctld closes the session.
    pub fn until_closed(&mut self) -> Vec<keyway_capnp::control::ToDataPlane> {
        std::iter::from_fn(|| self.recv()).collect()
    }
}

/// Whether the peer closes `s` (reads end) rather than leaving it open
/// past `within`.
pub fn closed_by_peer(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// A token file readable by its owner only.
pub fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A bare HTTP GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

/// `method path` with a JSON body and extra header lines: (status, body).
/// Waits up to a minute for the answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    // A refused request may be answered before its body is all sent.
    let _ = s.write_all(req.as_bytes());
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    status_and_body(&String::from_utf8_lossy(&resp))
}

/// An HTTP response's status code (0 if none) and body.
fn status_and_body(resp: &str) -> (u16, String) {
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Sends a raw HTTP request: (status, body).
pub fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    status_and_body(&resp)
}

/// The index of the group owning `key`, from `keywayctl cluster show --json`.
pub fn owner_of(cluster: &Value, key: &str) -> String {
    let slots = cluster["slot_count"].as_u64().unwrap() as u32;
    let slot = keyway_protocol::slot::key_slot(key.as_bytes(), slots);
    cluster["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["first"].as_u64().unwrap() as u32 <= slot
                && slot <= r["last"].as_u64().unwrap() as u32
        })
        .map_or_else(String::new, |r| r["group"].as_str().unwrap().to_string())
}
