//! The admin HTTP endpoint, on its own thread (never a data-plane core):
//! `GET /healthz` (200 when serving; 503 with the reason when fenced or
//! without a table, so an anycast announcer withdraws the appliance) and
//! `GET /table` (the routing table as JSON). One request per connection,
//! bounded in size and time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde_json::json;

use crate::config::LiveConfig;
use crate::control::state::unix_ms;
use crate::engine::Shared;

const MAX_REQUEST: usize = 8 << 10;

/// Binds `addr` and serves on a new thread; returns the bound address.
pub fn start(
    addr: SocketAddr,
    source: Arc<ArcSwap<LiveConfig>>,
    shared: Arc<Shared>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("keyway-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if let Err(e) = serve(conn, &source, &shared) {
                    tracing::debug!("admin request: {e}");
                }
            }
        })?;
    Ok(bound)
}

fn serve(
    mut conn: TcpStream,
    source: &ArcSwap<LiveConfig>,
    shared: &Shared,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
        if req.len() > MAX_REQUEST {
            return respond(&mut conn, 431, "text/plain", "request header too large\n");
        }
    }
    let line =
        String::from_utf8_lossy(req.split(|&b| b == b'\n').next().unwrap_or_default()).into_owned();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut conn, 405, "text/plain", "only GET\n");
    }
    let live = source.load();
    match path {
        "/healthz" => match &live.fence {
            None if !live.table.groups().is_empty() => {
                respond(&mut conn, 200, "text/plain", "ok\n")
            }
            None => respond(&mut conn, 503, "text/plain", "no groups\n"),
            Some(why) => respond(&mut conn, 503, "text/plain", &format!("fenced: {why}\n")),
        },
        "/table" => {
            let t = &live.table;
            let lease = shared.lease_until_unix_ms.load(Ordering::Relaxed);
            let body = json!({
                "version": t.version,
                "slots": t.slot_count(),
                "fenced": live.fence.is_some(),
                "fence_reason": live.fence.as_deref(),
                "lease_remaining_ms": (lease > 0).then(|| lease.saturating_sub(unix_ms(SystemTime::now()))),
                "groups": t.groups().iter().map(|g| json!({"name": &*g.name, "master": g.master_text})).collect::<Vec<_>>(),
                "ranges": t.ranges().iter().map(|(g, first, last)| json!({
                    "first": first, "last": last, "group": g.map(|g| &*t.group(g).name),
                })).collect::<Vec<_>>(),
            });
            respond(
                &mut conn,
                200,
                "application/json",
                &(body.to_string() + "\n"),
            )
        }
        _ => respond(
            &mut conn,
            404,
            "text/plain",
            "not found: try /healthz or /table\n",
        ),
    }
}

fn respond(conn: &mut TcpStream, status: u16, kind: &str, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())
}
