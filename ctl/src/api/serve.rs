//! The API's HTTP/1 server, with the limits `axum::serve` does not have:
//!
//! - a connection cap ([`Limits::max_connections`]): a connection over it is
//!   closed as soon as it is accepted;
//! - a header timeout ([`Limits::header_timeout`], hyper's
//!   `header_read_timeout`). hyper arms it whenever the connection waits
//!   for a request head — the first one, and every next one on a kept-alive
//!   connection (`proto::h1::conn`: `poll_read_head` starts the timer, and
//!   `State::idle` asks for the next read as soon as a response is done) —
//!   so it is also the idle timeout;
//! - a per-request deadline ([`Limits::request_deadline`]) covering the
//!   body and the handler: a request not answered by then gets 408 and the
//!   connection is closed (a slow body cannot hold it);
//! - a body cap ([`Limits::max_body`]): a request announcing a larger body
//!   gets 413 before any of it is read (each route's own, smaller limit is
//!   applied as the body is read: `DefaultBodyLimit`);
//! - a write-stall timeout ([`Limits::write_stall`]): a client that stops
//!   reading its responses is disconnected.
//!
//! With TLS ([`serve_tls`], `keyway-ctld --tls-cert/--tls-key`) each
//! connection's handshake must end within the header timeout; the limits
//! then apply to the decrypted stream.
//!
//! On shutdown it stops accepting, lets open connections finish their
//! request (for at most [`SHUTDOWN_GRACE`]), and returns.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Sleep;
use tower_service::Service;

use super::ApiError;

/// How long open connections may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The server's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a request head may take to arrive, and how long a
    /// kept-alive connection may sit idle.
    pub header_timeout: Duration,
    /// How long a request may take, from its head to its response: body
    /// and handler.
    pub request_deadline: Duration,
    /// How long a write may make no progress.
    pub write_stall: Duration,
    /// The largest request head.
    pub max_head: usize,
    /// The largest body any route takes: a request announcing more is
    /// refused before its body is read (routes refuse smaller bodies over
    /// their own limit as they read them).
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            request_deadline: Duration::from_secs(30),
            write_stall: Duration::from_secs(30),
            max_head: 64 << 10,
            max_body: super::MAX_CLUSTER_BODY as u64,
        }
    }
}

/// A connection's byte stream: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A socket whose writes fail after making no progress for `limit`.
struct StallGuard {
    inner: Box<dyn Io>,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl StallGuard {
    fn progress<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(cx, r)
    }
}

/// Closes the connection after an error answer: what the client sends
/// next is not read.
fn closing(e: ApiError) -> axum::response::Response {
    let mut resp = e.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn too_large(max: u64) -> axum::response::Response {
    closing(ApiError(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request bodies are at most {max} bytes"),
    ))
}

/// The body length a request announces, if it does.
fn announced(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn too_slow(deadline: Duration) -> axum::response::Response {
    closing(ApiError(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request was not complete and answered within {}s",
            deadline.as_secs()
        ),
    ))
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    serve_tls(listener, router, limits, None, shutdown).await
}

/// As [`serve`], speaking TLS when `tls` is given.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<crate::tls::ServerTls>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut last_refusal_log: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (sock, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("api accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                last_refusal_log = Some(tokio::time::Instant::now());
                tracing::warn!(%peer, "api connection closed: {} connections already (logged once per 10 s)",
                    limits.max_connections);
            }
            drop(sock);
            continue;
        };
        let (router, stop, tls) = (router.clone(), stop_rx.clone(), tls.clone());
        tokio::spawn(async move {
            let _ = sock.set_nodelay(true);
            let io: Box<dyn Io> = match tls {
                None => Box::new(sock),
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(sock)).await {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "api TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            connection(io, router, limits, stop).await;
            drop(slot);
        });
    }
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all)).await;
}

async fn connection(
    sock: Box<dyn Io>,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(StallGuard {
        inner: sock,
        limit: limits.write_stall,
        stalled: None,
    });
    let (deadline, max_body) = (limits.request_deadline, limits.max_body);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut router = router.clone();
        async move {
            if announced(&req).is_some_and(|n| n > max_body) {
                return Ok(too_large(max_body));
            }
            match tokio::time::timeout(deadline, router.call(req)).await {
                Ok(Ok(resp)) => Ok::<_, Infallible>(resp),
                Ok(Err(never)) => match never {},
                Err(_) => Ok(too_slow(deadline)),
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_head);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let stopping = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("api connection ended: {e}");
            }
            false
        }
        _ = stop.wait_for(|s| *s) => true,
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}
