//! The pieces the migration benchmark drives: keywayctl, raw RESP commands,
//! the preload, and the client load.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

use super::Options;
use crate::load::{self, parse_mix, LoadResult, LoadSpec, Stop};

/// keywayctl against one keyway-ctld.
pub(crate) struct Ctl {
    pub bin: PathBuf,
    pub api: SocketAddr,
}

impl Ctl {
    /// Runs keywayctl with `--json`; its parsed output.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = Command::new(&self.bin)
            .arg("--api")
            .arg(self.api.to_string())
            .arg("--json")
            .args(args)
            .output()
            .context("running keywayctl")?;
        anyhow::ensure!(
            out.status.success(),
            "keywayctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Starts one migration of cluster "bench" and waits for it; returns the
    /// seconds it took and its final view.
    pub fn migrate(
        &self,
        slots: &str,
        to: &str,
        o: &Options,
        rate: u64,
    ) -> anyhow::Result<(f64, Value)> {
        let started = Instant::now();
        let id = self.start(slots, to, o, rate, false)?;
        let m = self.wait_for(&id, "done")?;
        Ok((started.elapsed().as_secs_f64(), m))
    }

    /// Starts one migration of cluster "bench" (its sweep paused if
    /// `paused`); returns its id.
    pub fn start(
        &self,
        slots: &str,
        to: &str,
        o: &Options,
        rate: u64,
        paused: bool,
    ) -> anyhow::Result<String> {
        let (batch, rate, conc) = (
            o.batch.to_string(),
            rate.to_string(),
            o.concurrency.to_string(),
        );
        let mut args = vec![
            "migrate",
            "bench",
            "--slots",
            slots,
            "--to",
            to,
            "--batch",
            &batch,
            "--rate",
            &rate,
            "--concurrency",
            &conc,
        ];
        if paused {
            args.push("--paused");
        }
        let list = self.json(&args)?;
        let ids: Vec<u64> = list
            .as_array()
            .context("migrate answers a list")?
            .iter()
            .filter_map(|m| m["id"].as_u64())
            .collect();
        anyhow::ensure!(ids.len() == 1, "one migration expected: {list}");
        Ok(ids[0].to_string())
    }

    /// Waits until migration `id` is in `phase`; its view then.
    pub fn wait_for(&self, id: &str, phase: &str) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let m = self.json(&["migrations", "bench", id])?;
            if let Some(f) = m["progress"]["failed"].as_str() {
                anyhow::bail!("migration failed: {f}");
            }
            if m["state"]["phase"] == phase {
                return Ok(m);
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(3600),
                "the migration did not reach {phase} within an hour"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes `n` SETs of `key:{i:012}` = `value_size` bytes straight into Redis
/// (the key names keyway-load uses).
pub(super) fn preload(addr: SocketAddr, n: u64, value_size: usize) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    let value = vec![b'v'; value_size];
    let mut buf = Vec::new();
    let mut i = 0;
    while i < n {
        let batch = (n - i).min(10_000);
        buf.clear();
        for j in i..i + batch {
            let key = format!("key:{j:012}");
            buf.extend_from_slice(
                format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
                    key.len(),
                    value.len()
                )
                .as_bytes(),
            );
            buf.extend_from_slice(&value);
            buf.extend_from_slice(b"\r\n");
        }
        s.write_all(&buf)?;
        let mut replies = vec![0u8; 5 * batch as usize];
        s.read_exact(&mut replies)?;
        anyhow::ensure!(
            replies.chunks(5).all(|r| r == b"+OK\r\n"),
            "preload: unexpected reply"
        );
        i += batch;
    }
    Ok(())
}

/// Writes a hash of `fields` fields of 20 bytes straight into Redis.
pub(super) fn big_hash(addr: SocketAddr, key: &str, fields: u64) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    let mut f = 0;
    while f < fields {
        let n = (fields - f).min(10_000);
        let mut req = format!(
            "*{}\r\n$4\r\nHSET\r\n${}\r\n{key}\r\n",
            2 + 2 * n,
            key.len()
        );
        for i in f..f + n {
            let field = format!("field:{i}");
            req.push_str(&format!(
                "${}\r\n{field}\r\n$20\r\n{}\r\n",
                field.len(),
                "v".repeat(20)
            ));
        }
        s.write_all(req.as_bytes())?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            s.read_exact(&mut byte)?;
            reply.push(byte[0]);
        }
        anyhow::ensure!(
            reply.starts_with(b":"),
            "HSET: {:?}",
            String::from_utf8_lossy(&reply)
        );
        f += n;
    }
    Ok(())
}

/// Sends one command and returns the first line of the reply.
pub(crate) fn command(addr: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes())?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_string())
}

/// Waits until keyway routes commands (it is fenced until its first table).
pub(crate) fn wait_serving(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = command(addr, &["GET", "probe"]) {
            if !r.starts_with("-TRYAGAIN") {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "keyway did not start serving");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The client load: open loop, GET 80% / SET 20% over the preloaded keys.
pub(super) fn spec(
    addr: SocketAddr,
    o: &Options,
    until: Option<Arc<AtomicBool>>,
    secs: f64,
) -> LoadSpec {
    LoadSpec {
        addr,
        connections: o.connections,
        pipeline: 1,
        keys: match o.client_keys {
            0 => o.keys,
            n => n.min(o.keys),
        },
        value_size: o.value_size,
        mix: parse_mix("get=80,set=20").expect("a valid mix"),
        multi_keys: 1,
        stop: Stop::Duration(Duration::from_secs_f64(secs)),
        rate: Some(o.client_rate),
        threads: 1,
        until,
        window: Some(Duration::from_millis(100)),
    }
}

/// Runs the client load for as long as `f` runs; returns both results.
pub(super) fn under_load<T>(
    addr: SocketAddr,
    o: &Options,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, LoadResult)> {
    let until = Arc::new(AtomicBool::new(false));
    let s = spec(addr, o, Some(until.clone()), 7200.0);
    let load = std::thread::spawn(move || load::run(&s));
    let r = f();
    until.store(true, Ordering::Relaxed);
    let l = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    Ok((r?, l))
}
