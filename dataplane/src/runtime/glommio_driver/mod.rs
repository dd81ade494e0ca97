//! The glommio transport. One core: its glommio executor's main future.
//! Accepts clients on the core's own listener, runs the worker's timers,
//! loads a new table as soon as the control thread wakes it, turns worker
//! wakeups into task wakeups and worker actions into backend tasks, and
//! drains on shutdown.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::io::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use glommio::{Latency, Shares};
use socket2::{SockRef, TcpKeepalive};

use self::io::{backend_task, ClientIo};
use super::wake::{Installed, TaskWake};
use super::{CoreSetup, TlsSource, TICK};
use crate::engine::{Action, BackendId, ClientId, Drain, Worker};
use crate::tls::{TlsLog, TlsSession};

mod io;

/// Size of the core's read buffer.
const SCRATCH: usize = 64 << 10;
/// Size of the buffer TLS records are decrypted into (a record holds at
/// most 16 KiB).
const PLAIN: usize = 32 << 10;

/// A core's shared state: the worker and the wakers of its tasks.
pub(crate) struct Core {
    pub index: usize,
    pub worker: RefCell<Worker>,
    /// Every socket read lands here first; only partial frames are copied on.
    pub scratch: RefCell<Vec<u8>>,
    /// TLS records read into `scratch` are decrypted here.
    pub plain: RefCell<Vec<u8>>,
    /// The server TLS configuration for clients of a TLS listener.
    tls: Option<TlsSource>,
    /// Rate limit of the log lines about failed TLS sessions.
    pub tls_log: RefCell<TlsLog>,
    /// How long a TLS client's handshake may take.
    pub handshake_timeout: Duration,
    /// TLS clients accepted within the last `handshake_timeout`, and when:
    /// each is woken once its time is up, to check its handshake ended.
    handshakes: RefCell<Vec<(ClientId, Instant)>>,
    client_wakers: RefCell<Vec<Option<Waker>>>,
    /// Per backend slot, the tasks (by generation) that may hold a socket for
    /// it: an old connection's task can outlive the slot's reuse.
    backend_wakers: RefCell<Vec<Vec<(u32, Waker)>>>,
    wake_buf: RefCell<(Vec<u32>, Vec<u32>)>,
    actions: RefCell<Vec<Action>>,
    stopping: Cell<bool>,
    stop_waker: RefCell<Option<Waker>>,
}

impl Core {
    pub fn set_client_waker(&self, id: ClientId, waker: &Waker) {
        let mut w = self.client_wakers.borrow_mut();
        let idx = id.idx as usize;
        if w.len() <= idx {
            w.resize(idx + 1, None);
        }
        match &w[idx] {
            Some(old) if old.will_wake(waker) => {}
            _ => w[idx] = Some(waker.clone()),
        }
    }

    pub fn set_backend_waker(&self, id: BackendId, waker: &Waker) {
        let mut w = self.backend_wakers.borrow_mut();
        let idx = id.idx as usize;
        if w.len() <= idx {
            w.resize_with(idx + 1, Vec::new);
        }
        match w[idx].iter_mut().find(|(g, _)| *g == id.gen) {
            Some((_, old)) if old.will_wake(waker) => {}
            Some((_, old)) => *old = waker.clone(),
            None => w[idx].push((id.gen, waker.clone())),
        }
    }

    pub fn forget_backend_waker(&self, id: BackendId) {
        if let Some(list) = self.backend_wakers.borrow_mut().get_mut(id.idx as usize) {
            list.retain(|(g, _)| *g != id.gen);
        }
    }

    pub fn client_gone(self: &Rc<Self>, id: ClientId) {
        self.worker.borrow_mut().client_gone(id);
        if let Some(w) = self.client_wakers.borrow_mut().get_mut(id.idx as usize) {
            *w = None;
        }
        self.flush(None);
    }

    /// Wakes the TLS clients whose handshake time is up (each checks its
    /// own handshake, see `ClientIo`).
    fn wake_handshakes(&self, now: Instant) {
        let mut list = self.handshakes.borrow_mut();
        if list.is_empty() {
            return;
        }
        let wakers = self.client_wakers.borrow();
        list.retain(|&(id, since)| {
            if now.duration_since(since) < self.handshake_timeout {
                return true;
            }
            if let Some(Some(w)) = wakers.get(id.idx as usize) {
                w.wake_by_ref();
            }
            false
        });
    }

    /// Wakes the tasks whose connections have work (except `skip`, the client
    /// task calling, which just did its own) and starts requested connections.
    pub fn flush(self: &Rc<Self>, skip: Option<u32>) {
        let (mut clients, mut backends) = self.wake_buf.take();
        let mut actions = self.actions.take();
        {
            let mut w = self.worker.borrow_mut();
            w.take_wakeups(&mut clients, &mut backends);
            w.take_actions(&mut actions);
        }
        {
            let wakers = self.client_wakers.borrow();
            for idx in clients.drain(..) {
                if Some(idx) != skip {
                    if let Some(Some(w)) = wakers.get(idx as usize) {
                        w.wake_by_ref();
                    }
                }
            }
        }
        {
            let wakers = self.backend_wakers.borrow();
            for idx in backends.drain(..) {
                for (_, w) in wakers.get(idx as usize).into_iter().flatten() {
                    w.wake_by_ref();
                }
            }
        }
        for a in actions.drain(..) {
            match a {
                Action::Connect {
                    id,
                    addr,
                    timeout,
                    tls,
                } => {
                    glommio::spawn_local(backend_task(self.clone(), id, addr, timeout, tls))
                        .detach();
                }
            }
        }
        *self.wake_buf.borrow_mut() = (clients, backends);
        *self.actions.borrow_mut() = actions;
    }
}

/// Resolves once the core is stopping.
struct Stopping<'a>(&'a Core);

impl Future for Stopping<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.stopping.get() {
            return Poll::Ready(());
        }
        *self.0.stop_waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Runs a core on this thread: a glommio executor pinned to `cpu`.
pub(crate) fn run(cpu: usize, setup: CoreSetup) -> anyhow::Result<()> {
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
        .name(&format!("keyway-core{}", setup.index))
        .io_memory(64 << 10)
        .make()
        .map_err(|e| anyhow::anyhow!("cannot start a glommio executor on CPU {cpu}: {e}"))?;
    executor.run(serve(setup));
    Ok(())
}

/// The executor's main future: serve until the process stops, then drain.
async fn serve(setup: CoreSetup) {
    let core = Rc::new(Core {
        index: setup.index,
        worker: RefCell::new(Worker::new(
            setup.index,
            setup.source.clone(),
            setup.shared.clone(),
        )),
        scratch: RefCell::new(vec![0; SCRATCH]),
        plain: RefCell::new(vec![0; PLAIN]),
        tls: setup.tls.clone(),
        tls_log: RefCell::new(TlsLog::default()),
        handshake_timeout: setup.handshake_timeout,
        handshakes: RefCell::new(Vec::new()),
        client_wakers: RefCell::new(Vec::new()),
        backend_wakers: RefCell::new(Vec::new()),
        wake_buf: RefCell::new((Vec::new(), Vec::new())),
        actions: RefCell::new(Vec::new()),
        stopping: Cell::new(false),
        stop_waker: RefCell::new(None),
    });
    let listeners: Vec<(TcpListener, bool)> = setup
        .listeners
        .iter()
        // SAFETY: each fd is a listening socket created for this core alone
        // and handed over by the main thread, which no longer uses it.
        .map(|l| (unsafe { TcpListener::from_raw_fd(l.fd) }, l.tls))
        .collect();
    let background =
        glommio::executor().create_task_queue(Shares::Static(100), Latency::NotImportant, "timers");
    let ticker = glommio::spawn_local_into(tick_loop(core.clone(), setup.stop.clone()), background)
        .expect("the timers queue was just created");
    let wake = Arc::new(TaskWake::default());
    let installed = Installed::task(&setup.shared, setup.index, &wake);
    glommio::spawn_local(wake_loop(core.clone(), wake)).detach();
    match &listeners[..] {
        [(a, a_tls)] => accept_loop(&core, a, *a_tls).await,
        [(a, a_tls), (b, b_tls), ..] => {
            futures_lite::future::zip(accept_loop(&core, a, *a_tls), accept_loop(&core, b, *b_tls))
                .await;
        }
        [] => {}
    }
    drop(listeners);
    ticker.await;
    drop(installed);
    tracing::debug!(core = core.index, "core stopped");
}

async fn tick_loop(core: Rc<Core>, stop: Arc<AtomicBool>) {
    loop {
        glommio::timer::sleep(TICK).await;
        let stop = stop.load(Ordering::Relaxed);
        let drain = core.worker.borrow_mut().drain_step(Instant::now(), stop);
        if drain != Drain::Serving && !core.stopping.get() {
            core.stopping.set(true);
            if let Some(w) = core.stop_waker.borrow_mut().take() {
                w.wake();
            }
        }
        core.wake_handshakes(Instant::now());
        core.flush(None);
        if drain == Drain::Done {
            return;
        }
    }
}

/// Loads a new config as soon as one is published (`Shared::wake_cores`),
/// not at the next tick.
async fn wake_loop(core: Rc<Core>, wake: Arc<TaskWake>) {
    loop {
        wake.woken().await;
        core.worker.borrow_mut().config_changed();
        core.flush(None);
    }
}

async fn accept_loop(core: &Rc<Core>, listener: &TcpListener, tls: bool) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            Stopping(core).await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!(core = core.index, "accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let keepalive = core.worker.borrow().keepalive();
        if let Some(t) = keepalive {
            let fd = FdRef(stream.as_raw_fd());
            let _ = SockRef::from(&fd).set_tcp_keepalive(&TcpKeepalive::new().with_time(t));
        }
        let session = match (tls, &core.tls) {
            (false, _) => None,
            (true, Some(source)) => match TlsSession::server(source.load_full()) {
                Ok(s) => Some(s),
                Err(e) => {
                    core.tls_log.borrow_mut().failed(core.index, Some(peer), &e);
                    continue;
                }
            },
            // A TLS listener always has a config.
            (true, None) => continue,
        };
        let admitted = core.worker.borrow_mut().accept(peer, local);
        match admitted {
            Ok(id) => {
                if session.is_some() {
                    core.handshakes.borrow_mut().push((id, Instant::now()));
                }
                glommio::spawn_local(ClientIo::new(core.clone(), stream, id, session)).detach();
            }
            // A TLS client could not read the plain line: it is just closed.
            Err(_) if tls => drop(stream),
            Err(reason) => {
                glommio::spawn_local(refuse(stream, reason.to_string())).detach();
            }
        }
    }
}

/// Tells a client why it is not served, then closes.
async fn refuse(mut stream: TcpStream, reason: String) {
    let line = format!("-{reason}\r\n");
    let _ = futures_lite::future::or(
        async { stream.write_all(line.as_bytes()).await.map(drop) },
        async {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            Ok(())
        },
    )
    .await;
}

/// Borrows a raw fd for socket options.
struct FdRef(RawFd);

impl AsRawFd for FdRef {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}
