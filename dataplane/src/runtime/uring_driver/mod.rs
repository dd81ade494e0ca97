//! The native io_uring transport: one loop per core on a pinned thread, one
//! ring per core (`SINGLE_ISSUER | DEFER_TASKRUN`, so completions are processed
//! only when the loop asks, with no interrupts to it).
//!
//! Each turn of the loop submits everything queued and waits for completions
//! (or the next tick) in one `io_uring_enter`; handles every completion — a
//! multishot accept, multishot receives that land in a provided-buffer ring,
//! send and connect results — by feeding the worker; then turns the worker's
//! wakeups into new submissions: one send per connection with output, receives
//! re-armed or cancelled as the worker wants to read or not, connections
//! opened and closed. A send's buffer is handed over by the worker
//! ([`Worker::client_take_output`]) and comes back when the send completes, so
//! the kernel never reads memory that moves.
//!
//! A TLS client (accepted on a TLS listener) carries a
//! [`TlsSession`](crate::tls::TlsSession): its received bytes are decrypted
//! into the driver's `plain` scratch buffer before the worker sees them, and
//! the output it takes from the worker is encrypted into another send buffer
//! (records of the handshake are sent the same way, with nothing taken).

mod bufring;
mod ops;

use std::io;
use std::net::SocketAddr;
use std::os::unix::io::RawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use io_uring::squeue::Flags;
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, IoUring};
use slab::Slab;

use self::bufring::BufRing;
use self::ops::{Ops, Sent, Sq};
use super::wake::{EventFd, Installed};
use super::{describe, CoreListener, CoreSetup, TlsSource, TICK};
use crate::engine::{Action, BackendId, ClientId, ClientStatus, Drain, Worker};
use crate::tls::{TlsConnect, TlsFailure, TlsLog, TlsSession};

/// Submission and completion queue depth.
const RING_ENTRIES: u32 = 1024;
/// Completion queue depth.
const CQ_ENTRIES: u32 = 8192;
/// Receive buffers per core, and their size.
const BUFFERS: u16 = 512;
const BUFFER_SIZE: usize = 16 << 10;
/// The buffer group of the receive buffers.
const BGID: u16 = 0;
/// Largest send buffer kept for reuse.
const SPARE_KEEP: usize = 1 << 20;
/// Most rounds of [`Driver::flush`] per loop turn (work left over waits for
/// the next turn, at most a tick away).
const FLUSH_ROUNDS: usize = 8;
/// How long a closing connection's last send may wait for its peer to read.
const LINGER: Duration = Duration::from_secs(5);
/// Size of the buffer TLS records are decrypted into (a record holds at
/// most 16 KiB).
const PLAIN_SIZE: usize = 32 << 10;

// What a completion is about: the kind in the high 32 bits of user_data, the
// slot (client index or backend socket slot) in the low 32.
const ACCEPT: u64 = 1;
const CLIENT_RECV: u64 = 2;
const CLIENT_SEND: u64 = 3;
const BACKEND_CONNECT: u64 = 4;
const BACKEND_RECV: u64 = 5;
const BACKEND_SEND: u64 = 6;
/// Cancellations and link timeouts: nothing to do on completion.
const IGNORE: u64 = 7;
/// A read of the core's wake eventfd: a new config was published.
const WAKE: u64 = 8;

fn tag(kind: u64, slot: usize) -> u64 {
    kind << 32 | slot as u64
}

struct ClientSock {
    fd: RawFd,
    id: ClientId,
    ops: Ops,
    /// Present for a client of a TLS listener.
    tls: Option<Box<TlsSession>>,
}

struct BackendSock {
    fd: RawFd,
    id: BackendId,
    ops: Ops,
    /// Present for a backend of a group with `tls`.
    tls: Option<Box<TlsSession>>,
    /// The peer address and connect timeout, alive until the connect is
    /// submitted and completes.
    addr: Box<libc::sockaddr_storage>,
    addr_len: libc::socklen_t,
    timeout: Box<Timespec>,
    connect_timeout: Duration,
}

struct Driver {
    worker: Worker,
    listeners: Vec<CoreListener>,
    accepting: bool,
    /// The server TLS configuration for clients of a TLS listener.
    tls: Option<TlsSource>,
    /// TLS records are decrypted here before the worker sees them.
    plain: Box<[u8]>,
    tls_log: TlsLog,
    /// TLS clients whose handshake may not have ended, and since when;
    /// looked at every tick (`tls.handshake_timeout`).
    handshakes: Vec<(ClientId, Instant)>,
    handshake_timeout: Duration,
    /// Indexed by the worker's client index.
    clients: Vec<Option<ClientSock>>,
    backends: Slab<BackendSock>,
    /// The worker's backend index → the socket that serves it now.
    live: Vec<Option<usize>>,
    /// Send buffers not in use.
    spare: Vec<Vec<u8>>,
    /// Connections to look at after completions: (clients, backend sockets).
    touched: (Vec<u32>, Vec<usize>),
    /// Clients closing with a send still in flight, looked at every tick.
    lingering: Vec<u32>,
    wake: (Vec<u32>, Vec<u32>),
    actions: Vec<Action>,
    index: usize,
}

/// Runs a core on this thread, pinned to `cpu`.
pub(crate) fn run(cpu: usize, setup: CoreSetup) -> anyhow::Result<()> {
    pin_to(cpu)?;
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(CQ_ENTRIES)
        .build(RING_ENTRIES)
        .context("creating the io_uring instance (needs Linux 6.1 or later)")?;
    let mut bufs = BufRing::new(&ring.submitter(), BUFFERS, BUFFER_SIZE, BGID)
        .context("registering receive buffers")?;
    let mut d = Driver {
        worker: Worker::new(setup.index, setup.source.clone(), setup.shared.clone()),
        listeners: setup
            .listeners
            .iter()
            .map(|l| CoreListener {
                fd: l.fd,
                tls: l.tls,
            })
            .collect(),
        accepting: false,
        tls: setup.tls.clone(),
        plain: vec![0; PLAIN_SIZE].into_boxed_slice(),
        tls_log: TlsLog::default(),
        handshakes: Vec::new(),
        handshake_timeout: setup.handshake_timeout,
        clients: Vec::new(),
        backends: Slab::new(),
        live: Vec::new(),
        spare: Vec::new(),
        touched: (Vec::new(), Vec::new()),
        lingering: Vec::new(),
        wake: (Vec::new(), Vec::new()),
        actions: Vec::new(),
        index: setup.index,
    };
    // Without an eventfd the core sees a new table on its next request or
    // tick.
    let wake = EventFd::new().ok();
    let installed = wake
        .as_ref()
        .map(|fd| Installed::eventfd(&setup.shared, setup.index, fd));
    let wake_fd = wake.as_ref().map_or(-1, |fd| fd.fd());
    let mut wake_buf = Box::new([0u8; 8]);
    let result = d.serve(&mut ring, &mut bufs, &setup, (wake_fd, &mut wake_buf));
    drop(installed);
    d.close_all();
    drop(ring);
    drop(bufs);
    // The ring that read the eventfd is gone: it may close now.
    drop(wake);
    for l in &setup.listeners {
        // SAFETY: the listener fds were handed to this core alone.
        unsafe { libc::close(l.fd) };
    }
    result
}

fn pin_to(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t with one bit set, applied to this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("cannot pin to CPU {cpu}"));
        }
    }
    Ok(())
}

impl Driver {
    fn serve(
        &mut self,
        ring: &mut IoUring,
        bufs: &mut BufRing,
        setup: &CoreSetup,
        (wake_fd, wake_buf): (RawFd, &mut [u8; 8]),
    ) -> anyhow::Result<()> {
        let (submitter, sq, mut cq) = ring.split();
        let mut sq = Sq { submitter, sq };
        let mut next_tick = Instant::now();
        self.arm_accepts(&mut sq)?;
        // SAFETY: `wake_buf` outlives the ring (dropped after it in `run`).
        let wake_read = (wake_fd >= 0).then(|| {
            opcode::Read::new(Fd(wake_fd), wake_buf.as_mut_ptr(), 8)
                .build()
                .user_data(tag(WAKE, 0))
        });
        if let Some(e) = &wake_read {
            sq.push(e)?;
        }
        loop {
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK;
                let stop = setup.stop.load(Ordering::Relaxed);
                match self.worker.drain_step(now, stop) {
                    Drain::Serving => {}
                    Drain::Draining => self.stop_accepting(&mut sq)?,
                    Drain::Done => return Ok(()),
                }
                self.touched.0.append(&mut self.lingering);
                if !self.handshakes.is_empty() {
                    self.expire_handshakes(now);
                }
            }
            self.flush(&mut sq)?;
            sq.sq.sync();
            let wait = next_tick.saturating_duration_since(Instant::now());
            let ts = Timespec::new()
                .sec(wait.as_secs())
                .nsec(wait.subsec_nanos());
            match sq
                .submitter
                .submit_with_args(1, &SubmitArgs::new().timespec(&ts))
            {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(e) => return Err(e).context("io_uring_enter"),
            }
            cq.sync();
            for cqe in &mut cq {
                if cqe.user_data() >> 32 == WAKE {
                    self.worker.config_changed();
                    match &wake_read {
                        Some(e) if cqe.result() >= 0 || cqe.result() == -libc::EAGAIN => {
                            sq.push(e)?
                        }
                        _ => {}
                    }
                    continue;
                }
                self.complete(cqe, bufs, &mut sq)?;
            }
            bufs.publish();
        }
    }

    /// Arms a multishot accept on every listener.
    fn arm_accepts(&mut self, sq: &mut Sq<'_>) -> io::Result<()> {
        for i in 0..self.listeners.len() {
            self.arm_accept(i, sq)?;
        }
        Ok(())
    }

    /// Arms a multishot accept on listener `i`.
    fn arm_accept(&mut self, i: usize, sq: &mut Sq<'_>) -> io::Result<()> {
        let e = opcode::AcceptMulti::new(Fd(self.listeners[i].fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(tag(ACCEPT, i));
        sq.push(&e)?;
        self.accepting = true;
        Ok(())
    }

    fn stop_accepting(&mut self, sq: &mut Sq<'_>) -> io::Result<()> {
        if self.accepting {
            for i in 0..self.listeners.len() {
                sq.push(
                    &opcode::AsyncCancel::new(tag(ACCEPT, i))
                        .build()
                        .user_data(tag(IGNORE, 0)),
                )?;
            }
            self.accepting = false;
        }
        Ok(())
    }

    fn complete(
        &mut self,
        cqe: cqueue::Entry,
        bufs: &mut BufRing,
        sq: &mut Sq<'_>,
    ) -> io::Result<()> {
        let (kind, slot) = (
            cqe.user_data() >> 32,
            (cqe.user_data() & 0xffff_ffff) as usize,
        );
        let res = cqe.result();
        let more = cqueue::more(cqe.flags());
        let data = cqueue::buffer_select(cqe.flags()).map(|bid| (bid, res.max(0) as usize));
        match kind {
            ACCEPT => {
                let tls = self.listeners.get(slot).is_some_and(|l| l.tls);
                if res >= 0 {
                    self.accepted(res, tls);
                } else if res != -libc::ECANCELED {
                    tracing::warn!(
                        core = self.index,
                        "accept failed: {}",
                        io::Error::from_raw_os_error(-res)
                    );
                }
                if !more && res != -libc::ECANCELED && !self.worker_stopping() {
                    self.arm_accept(slot, sq)?;
                }
            }
            CLIENT_RECV => {
                if let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) {
                    if let Some((bid, n)) = data {
                        if n > 0 {
                            let input = bufs.get(bid, n);
                            match &mut c.tls {
                                None => self.worker.client_input(c.id, input),
                                // A failed session reads nothing more.
                                Some(_) if c.ops.aborted => {}
                                Some(tls) => {
                                    let (worker, id) = (&mut self.worker, c.id);
                                    match tls.read(input, &mut self.plain, |p| {
                                        worker.client_input(id, p)
                                    }) {
                                        Ok(false) => {}
                                        Ok(true) => self.worker.client_eof(c.id),
                                        Err(e) => {
                                            tls_failed(&mut self.tls_log, self.index, c.fd, &e);
                                            tls.send_last_words(c.fd, false);
                                            c.ops.abort(c.fd);
                                        }
                                    }
                                }
                            }
                        }
                    }
                    if res == 0 {
                        self.worker.client_eof(c.id);
                    } else if res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED {
                        c.ops.abort(c.fd);
                    }
                    if !more {
                        c.ops.recv = false;
                        c.ops.cancelling = false;
                    }
                    self.touched.0.push(slot as u32);
                }
                if let Some((bid, _)) = data {
                    bufs.recycle(bid);
                }
            }
            CLIENT_SEND => {
                if let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) {
                    let user_data = tag(CLIENT_SEND, slot);
                    match c.ops.sent(c.fd, res, user_data, sq, &mut self.spare)? {
                        Sent::Partly => return Ok(()),
                        Sent::Failed | Sent::Done => {}
                    }
                    self.worker.client_sent(c.id);
                    self.touched.0.push(slot as u32);
                }
            }
            BACKEND_CONNECT => {
                if let Some(b) = self.backends.get_mut(slot) {
                    b.ops.connecting = false;
                    if res == 0 && self.worker.backend_connected(b.id) {
                        let e = opcode::RecvMulti::new(Fd(b.fd), BGID)
                            .build()
                            .user_data(tag(BACKEND_RECV, slot));
                        sq.push(&e)?;
                        b.ops.recv = true;
                    } else if res < 0 {
                        let reason = if res == -libc::ECANCELED {
                            format!(
                                "connect timed out after {}ms",
                                b.connect_timeout.as_millis()
                            )
                        } else {
                            describe(&io::Error::from_raw_os_error(-res))
                        };
                        self.worker.backend_failed(b.id, &reason);
                        b.ops.close();
                    } else {
                        b.ops.close();
                    }
                    self.touched.1.push(slot);
                }
            }
            BACKEND_RECV => {
                if let Some(b) = self.backends.get_mut(slot) {
                    if let Some((bid, n)) = data {
                        if n > 0 {
                            let input = bufs.get(bid, n);
                            match &mut b.tls {
                                None => self.worker.backend_input(b.id, input),
                                Some(_) if b.ops.aborted => {}
                                Some(tls) => {
                                    let (worker, id) = (&mut self.worker, b.id);
                                    match tls.read(input, &mut self.plain, |p| {
                                        worker.backend_input(id, p)
                                    }) {
                                        Ok(false) => {}
                                        Ok(true) => {
                                            self.worker.backend_failed(
                                                b.id,
                                                "connection closed by the backend",
                                            );
                                            b.ops.abort(b.fd);
                                        }
                                        Err(e) => {
                                            self.worker.backend_failed(b.id, &format!("TLS: {e}"));
                                            tls.send_last_words(b.fd, false);
                                            b.ops.abort(b.fd);
                                        }
                                    }
                                }
                            }
                        }
                    }
                    if res == 0 {
                        self.worker
                            .backend_failed(b.id, "connection closed by the backend");
                        b.ops.abort(b.fd);
                    } else if res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED {
                        self.worker
                            .backend_failed(b.id, &describe(&io::Error::from_raw_os_error(-res)));
                        b.ops.abort(b.fd);
                    }
                    if !more {
                        b.ops.recv = false;
                        b.ops.cancelling = false;
                    }
                    self.touched.1.push(slot);
                }
                if let Some((bid, _)) = data {
                    bufs.recycle(bid);
                }
            }
            BACKEND_SEND => {
                if let Some(b) = self.backends.get_mut(slot) {
                    let user_data = tag(BACKEND_SEND, slot);
                    match b.ops.sent(b.fd, res, user_data, sq, &mut self.spare)? {
                        Sent::Partly => return Ok(()),
                        Sent::Failed => {
                            let reason = describe(&io::Error::from_raw_os_error(-res));
                            self.worker.backend_failed(b.id, &reason);
                        }
                        Sent::Done => {}
                    }
                    self.worker.backend_sent(b.id);
                    self.touched.1.push(slot);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Closes TLS clients whose handshake has not ended within
    /// `handshake_timeout`, and forgets those whose has (or that are gone).
    fn expire_handshakes(&mut self, now: Instant) {
        let timeout = self.handshake_timeout;
        let (clients, log, core) = (&mut self.clients, &mut self.tls_log, self.index);
        let touched = &mut self.touched.0;
        self.handshakes.retain(|&(id, since)| {
            let Some(c) = clients
                .get_mut(id.idx as usize)
                .and_then(Option::as_mut)
                .filter(|c| c.id == id)
            else {
                return false;
            };
            if !c.tls.as_ref().is_some_and(|t| t.handshaking()) {
                return false;
            }
            if now.duration_since(since) < timeout {
                return true;
            }
            let e = TlsFailure::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the handshake did not end within {}ms (tls.handshake_timeout)",
                    timeout.as_millis()
                ),
            ));
            log.failed(core, sock_addr(c.fd, libc::getpeername), &e);
            c.ops.abort(c.fd);
            touched.push(id.idx);
            false
        });
    }

    fn worker_stopping(&self) -> bool {
        !self.accepting
    }

    fn accepted(&mut self, fd: RawFd, tls: bool) {
        let (Some(peer), Some(local)) = (
            sock_addr(fd, libc::getpeername),
            sock_addr(fd, libc::getsockname),
        ) else {
            // SAFETY: closing the fd we were just given.
            unsafe { libc::close(fd) };
            return;
        };
        set_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        if let Some(t) = self.worker.keepalive() {
            set_opt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
            set_opt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_KEEPIDLE,
                t.as_secs().max(1) as i32,
            );
        }
        let session = match (tls, &self.tls) {
            (false, _) => None,
            (true, Some(source)) => match TlsSession::server(source.load_full()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tls_failed(&mut self.tls_log, self.index, fd, &e);
                    // SAFETY: closing the fd we were just given.
                    unsafe { libc::close(fd) };
                    return;
                }
            },
            (true, None) => {
                // SAFETY: as above (a TLS listener always has a config).
                unsafe { libc::close(fd) };
                return;
            }
        };
        match self.worker.accept(peer, local) {
            Ok(id) => {
                let idx = id.idx as usize;
                if self.clients.len() <= idx {
                    self.clients.resize_with(idx + 1, || None);
                }
                if session.is_some() {
                    self.handshakes.push((id, Instant::now()));
                }
                self.clients[idx] = Some(ClientSock {
                    fd,
                    id,
                    ops: Ops::default(),
                    tls: session,
                });
                self.touched.0.push(id.idx);
            }
            Err(_) if tls => {
                // A TLS client could not read the plain line: just close.
                // SAFETY: closing the fd we were just given.
                unsafe { libc::close(fd) };
            }
            Err(reason) => {
                let line = format!("-{reason}\r\n");
                // SAFETY: a best-effort non-blocking send on our own socket,
                // then closing it.
                unsafe {
                    libc::send(
                        fd,
                        line.as_ptr().cast(),
                        line.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    );
                    libc::close(fd);
                }
            }
        }
    }

    /// Turns the worker's wakeups and actions, and the connections completions
    /// touched, into submissions.
    fn flush(&mut self, sq: &mut Sq<'_>) -> io::Result<()> {
        let (mut wc, mut wb) = std::mem::take(&mut self.wake);
        let mut actions = std::mem::take(&mut self.actions);
        let mut touched = std::mem::take(&mut self.touched);
        // Steps may produce more work: a failed backend answers its clients,
        // and a backend whose write buffer drains resumes the clients paused
        // behind it, whose requests start connections and fill buffers. Go
        // round until nothing is left, so none of it waits for the next
        // completion or tick.
        for _ in 0..FLUSH_ROUNDS {
            self.worker.take_wakeups(&mut wc, &mut wb);
            self.worker.take_actions(&mut actions);
            if wc.is_empty()
                && wb.is_empty()
                && actions.is_empty()
                && touched.0.is_empty()
                && touched.1.is_empty()
            {
                break;
            }
            for a in actions.drain(..) {
                match a {
                    Action::Connect {
                        id,
                        addr,
                        timeout,
                        tls,
                    } => self.connect(id, addr, timeout, tls.as_ref(), sq)?,
                }
            }
            for idx in wc.drain(..).chain(touched.0.drain(..)) {
                self.client_step(idx as usize, sq)?;
            }
            for idx in wb.drain(..) {
                if let Some(Some(slot)) = self.live.get(idx as usize) {
                    touched.1.push(*slot);
                }
            }
            // `connect` may have queued an old socket of a reused slot.
            touched.1.append(&mut self.touched.1);
            for slot in touched.1.drain(..) {
                self.backend_step(slot, sq)?;
            }
        }
        self.wake = (wc, wb);
        self.actions = actions;
        self.touched = touched;
        Ok(())
    }

    /// Brings a client's operations in line with what the worker wants.
    fn client_step(&mut self, idx: usize, sq: &mut Sq<'_>) -> io::Result<()> {
        let Some(c) = self.clients.get_mut(idx).and_then(Option::as_mut) else {
            return Ok(());
        };
        if c.ops.lingering && !self.lingering.contains(&(idx as u32)) {
            c.ops.lingering = false;
        }
        let status = self.worker.client_status(c.id);
        match status {
            ClientStatus::Abort | ClientStatus::Gone => c.ops.abort(c.fd),
            ClientStatus::Close => c.ops.close(),
            _ => {}
        }
        if let Some(since) = c.ops.closing {
            if since.elapsed() > LINGER {
                c.ops.abort(c.fd);
            }
            c.ops.cancel_recv(tag(CLIENT_RECV, idx), sq)?;
            if c.ops.idle() {
                if let (Some(tls), false) = (&mut c.tls, c.ops.aborted) {
                    tls.send_last_words(c.fd, true);
                }
                // SAFETY: no operation refers to the fd any more.
                unsafe { libc::close(c.fd) };
                self.worker.client_gone(c.id);
                self.clients[idx] = None;
            } else if !c.ops.lingering {
                c.ops.lingering = true;
                self.lingering.push(idx as u32);
            }
            return Ok(());
        }
        match status {
            ClientStatus::Active if !c.ops.recv => {
                let e = opcode::RecvMulti::new(Fd(c.fd), BGID)
                    .build()
                    .user_data(tag(CLIENT_RECV, idx));
                sq.push(&e)?;
                c.ops.recv = true;
            }
            ClientStatus::WriteOnly => c.ops.cancel_recv(tag(CLIENT_RECV, idx), sq)?,
            _ => {}
        }
        if c.ops.sending.is_none() {
            let spare = self.spare.pop().unwrap_or_default();
            let mut buf = self.worker.client_take_output(c.id, spare);
            if let Some(tls) = &mut c.tls {
                match seal(tls, buf, &mut self.spare) {
                    Ok((sealed, took)) => {
                        buf = sealed;
                        if took && buf.is_empty() {
                            self.worker.client_sent(c.id);
                        }
                    }
                    Err(e) => {
                        tls_failed(&mut self.tls_log, self.index, c.fd, &e);
                        c.ops.abort(c.fd);
                        self.worker.client_sent(c.id);
                        return Ok(());
                    }
                }
            }
            let user_data = tag(CLIENT_SEND, idx);
            c.ops.send(c.fd, buf, user_data, sq, &mut self.spare)?;
        }
        Ok(())
    }

    /// Brings a backend socket's operations in line with what the worker wants.
    fn backend_step(&mut self, slot: usize, sq: &mut Sq<'_>) -> io::Result<()> {
        let Some(b) = self.backends.get_mut(slot) else {
            return Ok(());
        };
        if !b.ops.connecting && !self.worker.backend_live(b.id) {
            b.ops.abort(b.fd);
        }
        if b.ops.closing.is_some() {
            if self.live.get(b.id.idx as usize).copied().flatten() == Some(slot) {
                self.live[b.id.idx as usize] = None;
            }
            b.ops.cancel_recv(tag(BACKEND_RECV, slot), sq)?;
            if b.ops.idle() {
                // SAFETY: no operation refers to the fd any more.
                unsafe { libc::close(b.fd) };
                self.backends.remove(slot);
            }
            return Ok(());
        }
        if !b.ops.connecting && b.ops.sending.is_none() {
            let spare = self.spare.pop().unwrap_or_default();
            let mut buf = self.worker.backend_take_output(b.id, spare);
            if let Some(tls) = &mut b.tls {
                match seal(tls, buf, &mut self.spare) {
                    Ok((sealed, took)) => {
                        buf = sealed;
                        if took && buf.is_empty() {
                            self.worker.backend_sent(b.id);
                        }
                    }
                    Err(e) => {
                        self.worker.backend_failed(b.id, &format!("TLS: {e}"));
                        b.ops.abort(b.fd);
                        return Ok(());
                    }
                }
            }
            let user_data = tag(BACKEND_SEND, slot);
            b.ops.send(b.fd, buf, user_data, sq, &mut self.spare)?;
        }
        Ok(())
    }

    fn connect(
        &mut self,
        id: BackendId,
        addr: SocketAddr,
        timeout: Duration,
        tls: Option<&TlsConnect>,
        sq: &mut Sq<'_>,
    ) -> io::Result<()> {
        let session = match tls.map(TlsSession::client).transpose() {
            Ok(s) => s,
            Err(e) => {
                self.worker.backend_failed(id, &format!("TLS: {e}"));
                return Ok(());
            }
        };
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            self.worker.backend_failed(id, &describe(&e));
            return Ok(());
        }
        set_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        let (storage, len) = sockaddr(addr);
        let slot = self.backends.insert(BackendSock {
            fd,
            id,
            ops: Ops {
                connecting: true,
                ..Ops::default()
            },
            tls: session,
            addr: Box::new(storage),
            addr_len: len,
            timeout: Box::new(
                Timespec::new()
                    .sec(timeout.as_secs())
                    .nsec(timeout.subsec_nanos()),
            ),
            connect_timeout: timeout,
        });
        let idx = id.idx as usize;
        if self.live.len() <= idx {
            self.live.resize(idx + 1, None);
        }
        if let Some(old) = self.live[idx].replace(slot) {
            self.touched.1.push(old);
        }
        let b = &self.backends[slot];
        let connect = opcode::Connect::new(
            Fd(fd),
            (&*b.addr as *const libc::sockaddr_storage).cast(),
            b.addr_len,
        )
        .build()
        .flags(Flags::IO_LINK)
        .user_data(tag(BACKEND_CONNECT, slot));
        let limit = opcode::LinkTimeout::new(&*b.timeout)
            .build()
            .user_data(tag(IGNORE, 0));
        sq.push(&connect)?;
        sq.push(&limit)?;
        Ok(())
    }

    /// Closes every socket (the ring is about to go away).
    fn close_all(&mut self) {
        for c in self.clients.iter_mut().filter_map(Option::take) {
            self.worker.client_gone(c.id);
            // SAFETY: closing our own fds at teardown.
            unsafe { libc::close(c.fd) };
        }
        for b in self.backends.drain() {
            // SAFETY: as above.
            unsafe { libc::close(b.fd) };
        }
    }
}

/// Seals `plain` (output taken from the worker, perhaps none) and every
/// record the session has to send into a buffer from `spare`, where `plain`
/// goes back. Returns the records, and whether anything was taken: if so
/// and there are no records (plaintext held until the handshake ends), the
/// take is over and the worker is to be told.
fn seal(
    tls: &mut TlsSession,
    plain: Vec<u8>,
    spare: &mut Vec<Vec<u8>>,
) -> Result<(Vec<u8>, bool), TlsFailure> {
    let mut sealed = spare.pop().unwrap_or_default();
    sealed.clear();
    let result = tls.write(&plain, &mut sealed);
    let took = !plain.is_empty();
    ops::keep_spare_buf(spare, plain);
    result.map(|()| (sealed, took))
}

/// Logs a failed TLS session (rate-limited), naming the peer.
fn tls_failed(log: &mut TlsLog, core: usize, fd: RawFd, e: &TlsFailure) {
    log.failed(core, sock_addr(fd, libc::getpeername), e);
}

fn set_opt(fd: RawFd, level: i32, name: i32, value: i32) {
    // SAFETY: setsockopt with a pointer to a live i32 and its size.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

type AddrFn = unsafe extern "C" fn(RawFd, *mut libc::sockaddr, *mut libc::socklen_t) -> i32;

fn sock_addr(fd: RawFd, f: AddrFn) -> Option<SocketAddr> {
    // SAFETY: `storage` is large enough for any address; `len` says so.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if f(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) != 0
        {
            return None;
        }
        socket2::SockAddr::new(storage, len).as_socket()
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let s = socket2::SockAddr::from(addr);
    // SAFETY: copying `len` bytes of a sockaddr into zeroed storage of at
    // least that size.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        std::ptr::copy_nonoverlapping(
            s.as_ptr().cast::<u8>(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            s.len() as usize,
        );
        (storage, s.len())
    }
}
