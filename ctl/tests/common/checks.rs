//! What the hardening tests share: a health watch on a data plane, raw
//! control-session messages, and quick looks at ctld's view.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use keyway_capnp::control::{Ack, FromDataPlane, Hello, ToDataPlane};
use serde_json::{json, Value};

use super::{http_get, wait_for, Ctld, DataPlane};

/// Creates a cluster with keywayctl (`extra`: more arguments).
pub fn create_cluster(
    ctld: &Ctld,
    name: &str,
    groups: &[(&str, String)],
    lease: &str,
    extra: &[&str],
) {
    let mut args = vec![
        "cluster".to_string(),
        "create".into(),
        name.into(),
        "--lease".into(),
        lease.into(),
    ];
    for (g, addr) in groups {
        args.push("--group".into());
        args.push(format!("{g}={addr}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = ctld.ctl(&args);
    assert!(ok, "create failed: {err}");
}

/// Watches a data plane's `/healthz` until stopped; every answer that is not
/// 200 is kept.
pub struct HealthWatch {
    stop: Arc<AtomicBool>,
    bad: Arc<Mutex<Vec<(u16, String)>>>,
    thread: JoinHandle<()>,
}

impl HealthWatch {
    pub fn start(dp: &DataPlane) -> HealthWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let bad: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
        let (s, b, admin) = (stop.clone(), Arc::clone(&bad), dp.admin);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let (status, body) = http_get(admin, "/healthz");
                if status != 200 {
                    b.lock().unwrap().push((status, body));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        HealthWatch { stop, bad, thread }
    }

    /// Stops, and returns what was not healthy.
    pub fn finish(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let bad = self.bad.lock().unwrap().clone();
        bad
    }
}

pub fn view(ctld: &Ctld, id: &str) -> Option<Value> {
    let all = ctld.ctl_json(&["dataplanes"]);
    all.as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
}

pub fn version(ctld: &Ctld, cluster: &str) -> u64 {
    ctld.ctl_json(&["cluster", "show", cluster])["version"]
        .as_u64()
        .unwrap()
}

/// A create request body of `n` groups with distinct loopback-free masters.
pub fn big_cluster(name: &str, n: usize) -> String {
    let groups: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("g{i}"), "master": format!("10.{}.{}.1:6379", i / 256, i % 256)}))
        .collect();
    json!({"name": name, "groups": groups}).to_string()
}

pub fn hello(id: &str, cluster: &str, version: u64, address: &str, token: &str) -> FromDataPlane {
    FromDataPlane::Hello(Hello {
        id: id.into(),
        cluster: cluster.into(),
        version,
        address: address.into(),
        token: token.into(),
        admin: String::new(),
        admin_tls: false,
    })
}

pub fn ack(version: u64, seq: u64) -> FromDataPlane {
    FromDataPlane::Ack(Ack {
        version,
        drained: true,
        seq,
        fenced: false,
        backends: vec![],
    })
}

pub fn refusal(msgs: &[ToDataPlane]) -> Option<&str> {
    msgs.iter().find_map(|m| match m {
        ToDataPlane::Refused(why) => Some(why.as_str()),
        _ => None,
    })
}

/// Runs keyway-ctld expecting it to refuse to start: (exit code, stderr).
/// Panics if it is still running after half a minute (it started).
pub fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let mut child = keyway_testkit::die_with_parent(
        Command::new(env!("CARGO_BIN_EXE_keyway-ctld"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .spawn()
    .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = wait_for(
        "keyway-ctld to refuse to start (it started)",
        Duration::from_secs(30),
        || child.try_wait().unwrap(),
    );
    (status.code(), reader.join().unwrap())
}
