//! The admin HTTP endpoint, off the data-plane cores: `GET /healthz` (200
//! when serving; 503 with the reason when fenced or without a table, so an
//! anycast announcer withdraws the appliance), `GET /table` (the routing
//! table as JSON) and `GET /metrics` (Prometheus text, see
//! [`crate::metrics`]). One request per connection, bounded in size and in time
//! as a whole (a client trickling bytes gets no more time than a silent
//! one). Each connection is served on its own short-lived thread, at most
//! [`MAX_CONNECTIONS`] at once and [`MAX_PER_PEER`] from one address, so
//! idle or slow clients never delay a health check from elsewhere; past a
//! cap a connection is answered 429 (not 503, which says "unhealthy") and
//! closed at once. With `[tls] admin = true` it speaks HTTPS only, with the
//! client port's certificate (reloaded with it); the TLS handshake counts
//! against the connection's deadline, and a connection past a cap is closed
//! without a reply (a plain-text 429 would mean nothing to a TLS client).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use serde_json::json;

use crate::config::LiveConfig;
use crate::control::state::unix_ms;
use crate::engine::Shared;
use crate::routing::ReadFrom;
use crate::runtime::TlsSource;

const MAX_REQUEST: usize = 8 << 10;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Connections served at once from one address.
pub const MAX_PER_PEER: usize = 16;

/// Connections being served: in all, and by peer address.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

impl Open {
    /// Counts a new connection from `peer`, or says which cap it is over.
    fn enter(&mut self, peer: IpAddr) -> Result<(), &'static str> {
        if self.total >= MAX_CONNECTIONS {
            return Err("too many admin connections\n");
        }
        let mine = self.by_peer.entry(peer).or_default();
        if *mine >= MAX_PER_PEER {
            return Err("too many admin connections from this address\n");
        }
        *mine += 1;
        self.total += 1;
        Ok(())
    }

    fn leave(&mut self, peer: IpAddr) {
        self.total -= 1;
        if let Some(n) = self.by_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.by_peer.remove(&peer);
            }
        }
    }
}

/// The longest a request may take to arrive, and its answer to be written.
const DEADLINE: Duration = Duration::from_secs(2);

fn lock(o: &Mutex<Open>) -> MutexGuard<'_, Open> {
    o.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection the endpoint answers on: plain TCP or TLS over it.
trait Conn: Read + Write {
    /// The socket below, for its timeouts.
    fn tcp(&self) -> &TcpStream;
    /// After the response: TLS says it is done (`close_notify`).
    fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Conn for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
    fn finish(&mut self) -> std::io::Result<()> {
        self.conn.send_close_notify();
        self.flush()
    }
}

/// Binds `addr` and serves on a new thread (over TLS with `tls`'s
/// certificate, when given); returns the bound address.
pub(crate) fn start(
    addr: SocketAddr,
    source: Arc<ArcSwap<LiveConfig>>,
    shared: Arc<Shared>,
    tls: Option<TlsSource>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let open = Arc::new(Mutex::new(Open::default()));
    std::thread::Builder::new()
        .name("keyway-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let (mut conn, peer) = match conn.and_then(|c| Ok((c.peer_addr()?.ip(), c))) {
                    Ok((peer, c)) => (c, peer),
                    Err(_) => {
                        // Out of descriptors, say: do not spin.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if let Err(why) = lock(&open).enter(peer) {
                    if tls.is_some() {
                        continue;
                    }
                    let _ = conn.set_nonblocking(true);
                    let _ = respond(&mut conn, 429, "text/plain", why);
                    // Close after what the client has sent so far is read
                    // (without waiting for more): unread input would turn
                    // the close into a reset, which may discard the reply
                    // before the client reads it.
                    let _ = conn.shutdown(std::net::Shutdown::Write);
                    let _ = std::io::Read::read(&mut conn, &mut [0u8; 4096]);
                    continue;
                }
                let (source, shared, done) = (source.clone(), shared.clone(), open.clone());
                let certificate = tls.as_ref().map(|t| t.load_full());
                let spawned = std::thread::Builder::new()
                    .name("keyway-admin-conn".into())
                    .spawn(move || {
                        let served = match certificate {
                            None => serve(conn, &source, &shared),
                            Some(c) => match rustls::ServerConnection::new(c) {
                                Ok(tls) => {
                                    serve(rustls::StreamOwned::new(tls, conn), &source, &shared)
                                }
                                Err(e) => Err(std::io::Error::other(e)),
                            },
                        };
                        if let Err(e) = served {
                            tracing::debug!("admin request: {e}");
                        }
                        lock(&done).leave(peer);
                    });
                if let Err(e) = spawned {
                    tracing::warn!("admin: cannot start a thread: {e}");
                    lock(&open).leave(peer);
                }
            }
        })?;
    Ok(bound)
}

/// Reads until the end of the request's headers, within `deadline`.
fn read_request(conn: &mut impl Conn, deadline: Instant) -> std::io::Result<Option<Vec<u8>>> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        conn.tcp().set_read_timeout(Some(left))?;
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
        if req.len() > MAX_REQUEST {
            return Ok(None);
        }
    }
    Ok(Some(req))
}

fn serve(
    mut conn: impl Conn,
    source: &ArcSwap<LiveConfig>,
    shared: &Shared,
) -> std::io::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    conn.tcp().set_write_timeout(Some(DEADLINE))?;
    let Some(req) = read_request(&mut conn, deadline)? else {
        return respond(&mut conn, 431, "text/plain", "request header too large\n");
    };
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
                "groups": t.groups().iter().map(|g| json!({
                    "name": &*g.name,
                    "master": g.master_text,
                    "unresolved": g.master.as_ref().err().map(|e| &**e),
                    "read_from": match g.read_from {
                        ReadFrom::Master => "master",
                        ReadFrom::Replica => "replica",
                        ReadFrom::LocalZone => "local-zone",
                    },
                    "hold": g.hold,
                    "replicas": g.replicas.iter().map(|r| json!({
                        "address": r.text,
                        "zone": &*r.zone,
                        "unresolved": r.addr.as_ref().err().map(|e| &**e),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
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
        "/metrics" => {
            let body = crate::metrics::render(&live, shared);
            respond(&mut conn, 200, crate::metrics::CONTENT_TYPE, &body)
        }
        _ => respond(
            &mut conn,
            404,
            "text/plain",
            "not found: try /healthz, /table or /metrics\n",
        ),
    }
}

fn respond(conn: &mut impl Conn, status: u16, kind: &str, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Service Unavailable",
    };
    // One write, so the response leaves in one segment: a refusal is
    // followed at once by a close, and a reset of the connection (the
    // client's request unread) must not cut the body off.
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes())?;
    conn.flush()?;
    conn.finish()
}
