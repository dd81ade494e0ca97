//! The socket side of connections: one glommio task per client and per backend
//! connection, each a hand-written future that reads into the core's scratch
//! buffer, hands the bytes to the worker, and writes what the worker has for
//! it. glommio reads and writes with plain `recv`/`send` after an io_uring
//! readiness poll; one task per socket does both directions, so no lock or
//! split stream is needed.
//!
//! A TLS client's task decrypts what it reads through its
//! [`TlsSession`] into the core's `plain` buffer before the worker sees it,
//! and encrypts the worker's output into its own `sealed` buffer, at most
//! [`SEAL_CHUNK`] at a time, taking more only once that is written. The
//! plaintext leaves the worker's output buffer as it is sealed, so the
//! `sealed` buffer's capacity is reported to the worker
//! (`Worker::client_transport_bytes`) whenever it changes: it counts in
//! `limits.max_memory` as the client's, as the uring transport's records
//! do (there the plaintext stays counted until its records are written).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::os::unix::io::AsRawFd;

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use super::Core;
use crate::engine::{BackendId, ClientId, ClientStatus, Worker};
use crate::runtime::describe;
use crate::tls::{TlsConnect, TlsFailure, TlsSession};

/// Most plaintext a TLS client's task encrypts at once.
const SEAL_CHUNK: usize = 256 << 10;
/// A TLS client's `sealed` buffer larger than this is freed once written.
const SEALED_KEEP: usize = 64 << 10;

/// Reads per poll before yielding, so one busy connection cannot starve the
/// others on its core.
const READS_PER_POLL: usize = 4;

/// Writes what `out` gives until it is empty or the socket is full (the task
/// is then woken when it drains), recording progress with `wrote`.
fn poll_flush(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    core: &Core,
    out: impl for<'w> Fn(&'w Worker) -> &'w [u8],
    wrote: impl Fn(&mut Worker, usize),
) -> io::Result<()> {
    loop {
        let worker = core.worker.borrow();
        let pending = out(&worker);
        if pending.is_empty() {
            return Ok(());
        }
        match Pin::new(&mut *stream).poll_write(cx, pending) {
            Poll::Ready(Ok(n)) => {
                drop(worker);
                wrote(&mut core.worker.borrow_mut(), n);
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(()),
        }
    }
}

/// TLS records sealed and not yet written: `buf[off..]`.
#[derive(Default)]
struct Sealed {
    buf: Vec<u8>,
    off: usize,
}

impl Sealed {
    fn pending(&self) -> bool {
        self.off < self.buf.len()
    }
}

/// Writes a TLS connection's output: records already sealed first, then
/// what `out` gives, sealed a chunk at a time (progress recorded with
/// `wrote`), until the socket is full or nothing is left.
fn poll_flush_tls(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    core: &Core,
    tls: &mut TlsSession,
    sealed: &mut Sealed,
    out: impl for<'w> Fn(&'w Worker) -> &'w [u8],
    wrote: impl Fn(&mut Worker, usize),
) -> Result<(), TlsFailure> {
    loop {
        if sealed.pending() {
            match Pin::new(&mut *stream).poll_write(cx, &sealed.buf[sealed.off..]) {
                Poll::Ready(Ok(n)) => sealed.off += n,
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Pending => return Ok(()),
            }
            continue;
        }
        sealed.off = 0;
        if sealed.buf.capacity() > SEALED_KEEP {
            sealed.buf = Vec::new();
        }
        sealed.buf.clear();
        let worker = core.worker.borrow();
        let pending = out(&worker);
        let n = pending.len().min(SEAL_CHUNK);
        if n == 0 && !tls.wants_write() {
            return Ok(());
        }
        tls.write(&pending[..n], &mut sealed.buf)?;
        drop(worker);
        if n > 0 {
            wrote(&mut core.worker.borrow_mut(), n);
        }
    }
}

/// A client connection's task.
pub(crate) struct ClientIo {
    core: Rc<Core>,
    stream: TcpStream,
    id: ClientId,
    /// Present for a client of a TLS listener, with its records not yet
    /// written.
    tls: Option<Box<TlsSession>>,
    sealed: Sealed,
    /// The `sealed` buffer's capacity as last reported to the worker.
    charged: usize,
    /// When it was accepted (a TLS handshake must end within
    /// `Core::handshake_timeout` of it).
    since: std::time::Instant,
}

impl ClientIo {
    pub fn new(
        core: Rc<Core>,
        stream: TcpStream,
        id: ClientId,
        tls: Option<Box<TlsSession>>,
    ) -> ClientIo {
        ClientIo {
            core,
            stream,
            id,
            tls,
            sealed: Sealed::default(),
            charged: 0,
            since: std::time::Instant::now(),
        }
    }

    fn finish(&mut self) -> Poll<()> {
        if let Some(tls) = &mut self.tls {
            let graceful = self.core.worker.borrow().client_status(self.id) == ClientStatus::Close;
            if graceful {
                tls.send_last_words(self.stream.as_raw_fd(), true);
            }
        }
        self.core.client_gone(self.id);
        Poll::Ready(())
    }

    /// A TLS session failed: log it, send its alert, close.
    fn tls_failed(&mut self, e: &TlsFailure) -> Poll<()> {
        let peer = self.stream.peer_addr().ok();
        self.core
            .tls_log
            .borrow_mut()
            .failed(self.core.index, peer, e);
        if let Some(tls) = &mut self.tls {
            tls.send_last_words(self.stream.as_raw_fd(), false);
            self.tls = None;
        }
        self.finish()
    }

    /// Whether a TLS client still has records to write.
    fn sealed_pending(&self) -> bool {
        self.sealed.pending()
    }
}

impl ClientIo {
    /// Whether the task ends now: the worker is done with the client (and a
    /// TLS client's last records are written, unless it is aborted).
    fn ends(&self, status: ClientStatus) -> bool {
        match status {
            ClientStatus::Abort | ClientStatus::Gone => true,
            ClientStatus::Close => !self.sealed_pending(),
            ClientStatus::Active | ClientStatus::WriteOnly => false,
        }
    }
}

impl Future for ClientIo {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let core = Rc::clone(&this.core);
        core.set_client_waker(this.id, cx.waker());
        if this.tls.as_ref().is_some_and(|t| t.handshaking())
            && this.since.elapsed() >= core.handshake_timeout
        {
            let e = TlsFailure::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the handshake did not end within {}ms (tls.handshake_timeout)",
                    core.handshake_timeout.as_millis()
                ),
            ));
            return this.tls_failed(&e);
        }
        let mut reads = 0;
        while core.worker.borrow().client_status(this.id) == ClientStatus::Active {
            if reads == READS_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            let mut buf = core.scratch.borrow_mut();
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf[..]) {
                Poll::Ready(Ok(0)) => core.worker.borrow_mut().client_eof(this.id),
                Poll::Ready(Ok(n)) => {
                    match &mut this.tls {
                        None => core.worker.borrow_mut().client_input(this.id, &buf[..n]),
                        Some(tls) => {
                            let mut plain = core.plain.borrow_mut();
                            let id = this.id;
                            let read = tls.read(&buf[..n], &mut plain, |p| {
                                core.worker.borrow_mut().client_input(id, p)
                            });
                            drop((plain, buf));
                            match read {
                                Ok(false) => {}
                                Ok(true) => core.worker.borrow_mut().client_eof(id),
                                Err(e) => return this.tls_failed(&e),
                            }
                        }
                    }
                    reads += 1;
                }
                Poll::Ready(Err(_)) => return this.finish(),
                Poll::Pending => break,
            }
        }
        let status = core.worker.borrow().client_status(this.id);
        if this.ends(status) {
            return this.finish();
        }
        if let Some(tls) = &mut this.tls {
            let id = this.id;
            let written = poll_flush_tls(
                &mut this.stream,
                cx,
                &core,
                tls,
                &mut this.sealed,
                |w| w.client_output(id),
                |w, n| w.client_wrote(id, n),
            );
            if let Err(e) = written {
                return this.tls_failed(&e);
            }
            let held = this.sealed.buf.capacity();
            if held != this.charged {
                this.charged = held;
                core.worker.borrow_mut().client_transport_bytes(id, held);
            }
        } else {
            let id = this.id;
            let written = poll_flush(
                &mut this.stream,
                cx,
                &core,
                |w| w.client_output(id),
                |w, n| w.client_wrote(id, n),
            );
            if written.is_err() {
                return this.finish();
            }
        }
        core.flush(Some(this.id.idx));
        let status = core.worker.borrow().client_status(this.id);
        if this.ends(status) {
            return this.finish();
        }
        Poll::Pending
    }
}

/// A backend connection's task: connects, then moves bytes until the worker
/// no longer wants this connection or the socket fails.
pub(crate) async fn backend_task(
    core: Rc<Core>,
    id: BackendId,
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<TlsConnect>,
) {
    let tls = match tls.as_ref().map(TlsSession::client).transpose() {
        Ok(s) => s,
        Err(e) => {
            core.worker
                .borrow_mut()
                .backend_failed(id, &format!("TLS: {e}"));
            core.flush(None);
            return;
        }
    };
    let stream = match TcpStream::connect_timeout(addr, timeout).await {
        Ok(s) => s,
        Err(e) => {
            let e = io::Error::from(e);
            let reason = if e.kind() == io::ErrorKind::TimedOut {
                format!("connect timed out after {}ms", timeout.as_millis())
            } else {
                describe(&e)
            };
            core.worker.borrow_mut().backend_failed(id, &reason);
            core.flush(None);
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    if !core.worker.borrow_mut().backend_connected(id) {
        return;
    }
    core.flush(None);
    BackendIo {
        core: core.clone(),
        stream,
        id,
        tls,
        sealed: Sealed::default(),
    }
    .await;
    core.forget_backend_waker(id);
}

struct BackendIo {
    core: Rc<Core>,
    stream: TcpStream,
    id: BackendId,
    /// Present for a backend of a group with `tls`, with its records not
    /// yet written.
    tls: Option<Box<TlsSession>>,
    sealed: Sealed,
}

impl BackendIo {
    fn fail(&mut self, reason: &str) -> Poll<()> {
        self.core
            .worker
            .borrow_mut()
            .backend_failed(self.id, reason);
        self.core.flush(None);
        Poll::Ready(())
    }
}

impl Future for BackendIo {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let core = Rc::clone(&this.core);
        core.set_backend_waker(this.id, cx.waker());
        if !core.worker.borrow().backend_live(this.id) {
            return Poll::Ready(());
        }
        let id = this.id;
        if let Some(tls) = &mut this.tls {
            let written = poll_flush_tls(
                &mut this.stream,
                cx,
                &core,
                tls,
                &mut this.sealed,
                |w| w.backend_output(id),
                |w, n| w.backend_wrote(id, n),
            );
            if let Err(e) = written {
                return this.fail(&format!("TLS: {e}"));
            }
        } else {
            let written = poll_flush(
                &mut this.stream,
                cx,
                &core,
                |w| w.backend_output(id),
                |w, n| w.backend_wrote(id, n),
            );
            if let Err(e) = written {
                return this.fail(&describe(&e));
            }
        }
        for reads in 0.. {
            if reads == READS_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            let mut buf = core.scratch.borrow_mut();
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf[..]) {
                Poll::Ready(Ok(0)) => return this.fail("connection closed by the backend"),
                Poll::Ready(Ok(n)) => match &mut this.tls {
                    None => core.worker.borrow_mut().backend_input(this.id, &buf[..n]),
                    Some(tls) => {
                        let mut plain = core.plain.borrow_mut();
                        let id = this.id;
                        let read = tls.read(&buf[..n], &mut plain, |p| {
                            core.worker.borrow_mut().backend_input(id, p)
                        });
                        drop((plain, buf));
                        match read {
                            Ok(false) => {}
                            Ok(true) => return this.fail("connection closed by the backend"),
                            Err(e) => {
                                if let Some(tls) = &mut this.tls {
                                    tls.send_last_words(this.stream.as_raw_fd(), false);
                                }
                                return this.fail(&format!("TLS: {e}"));
                            }
                        }
                    }
                },
                Poll::Ready(Err(e)) => return this.fail(&describe(&e)),
                Poll::Pending => break,
            }
            if !core.worker.borrow().backend_live(this.id) {
                break;
            }
        }
        // What the reads made the session say (the rest of its handshake,
        // and requests it held until then) goes out now.
        if this.tls.as_ref().is_some_and(|t| t.wants_write()) {
            cx.waker().wake_by_ref();
        }
        core.flush(None);
        if core.worker.borrow().backend_live(this.id) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}
