//! The socket side of connections: one glommio task per client and per backend
//! connection, each a hand-written future that reads into the core's scratch
//! buffer, hands the bytes to the worker, and writes what the worker has for
//! it. glommio reads and writes with plain `recv`/`send` after an io_uring
//! readiness poll; one task per socket does both directions, so no lock or
//! split stream is needed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use super::Core;
use crate::engine::{BackendId, ClientId, ClientStatus, Worker};
use crate::runtime::describe;

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

/// A client connection's task.
pub(crate) struct ClientIo {
    pub core: Rc<Core>,
    pub stream: TcpStream,
    pub id: ClientId,
}

impl ClientIo {
    fn finish(&mut self) -> Poll<()> {
        self.core.client_gone(self.id);
        Poll::Ready(())
    }
}

impl Future for ClientIo {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let core = Rc::clone(&this.core);
        core.set_client_waker(this.id, cx.waker());
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
                    core.worker.borrow_mut().client_input(this.id, &buf[..n]);
                    reads += 1;
                }
                Poll::Ready(Err(_)) => return this.finish(),
                Poll::Pending => break,
            }
        }
        let status = core.worker.borrow().client_status(this.id);
        if matches!(
            status,
            ClientStatus::Close | ClientStatus::Abort | ClientStatus::Gone
        ) {
            return this.finish();
        }
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
        core.flush(Some(this.id.idx));
        let status = core.worker.borrow().client_status(this.id);
        if matches!(
            status,
            ClientStatus::Close | ClientStatus::Abort | ClientStatus::Gone
        ) {
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
) {
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
    }
    .await;
    core.forget_backend_waker(id);
}

struct BackendIo {
    core: Rc<Core>,
    stream: TcpStream,
    id: BackendId,
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
        for reads in 0.. {
            if reads == READS_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            let mut buf = core.scratch.borrow_mut();
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf[..]) {
                Poll::Ready(Ok(0)) => return this.fail("connection closed by the backend"),
                Poll::Ready(Ok(n)) => core.worker.borrow_mut().backend_input(this.id, &buf[..n]),
                Poll::Ready(Err(e)) => return this.fail(&describe(&e)),
                Poll::Pending => break,
            }
            if !core.worker.borrow().backend_live(this.id) {
                break;
            }
        }
        core.flush(None);
        if core.worker.borrow().backend_live(this.id) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}
