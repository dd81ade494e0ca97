//! One socket's operations in flight ([`Ops`]), its sends ([`Sending`],
//! [`Ops::send`], [`Ops::sent`]), and the submission queue they go through
//! ([`Sq`]).

use std::io;
use std::os::unix::io::RawFd;
use std::time::Instant;

use io_uring::opcode;
use io_uring::squeue::Entry;
use io_uring::types::Fd;
use io_uring::{SubmissionQueue, Submitter};

use super::{tag, IGNORE, SPARE_KEEP};

/// A send in flight: the buffer the kernel reads, and how far it has got.
pub(super) struct Sending {
    pub(super) buf: Vec<u8>,
    pub(super) off: usize,
}

/// What became of a send (see [`Ops::sent`]).
pub(super) enum Sent {
    /// Part of it was written, the rest submitted again (or no send was in
    /// flight): nothing to tell the worker.
    Partly,
    /// All of it was written.
    Done,
    /// It failed: the socket is aborted.
    Failed,
}

/// One socket's operations in flight and its fate.
#[derive(Default)]
pub(super) struct Ops {
    pub(super) recv: bool,
    pub(super) cancelling: bool,
    pub(super) sending: Option<Sending>,
    pub(super) connecting: bool,
    /// Closing: once nothing is in flight, the fd is closed. Set with the time,
    /// so a last send a peer never reads is abandoned after [`LINGER`].
    pub(super) closing: Option<Instant>,
    /// The socket was shut down: whatever is in flight fails at once.
    pub(super) aborted: bool,
    /// Closing with operations in flight: listed in `Driver::lingering`.
    pub(super) lingering: bool,
}

impl Ops {
    pub(super) fn idle(&self) -> bool {
        !self.recv && self.sending.is_none() && !self.connecting
    }

    /// Starts closing (once).
    pub(super) fn close(&mut self) {
        self.closing.get_or_insert_with(Instant::now);
    }

    /// Shuts the socket down so every operation in flight on it completes now.
    /// Sends `buf` (output the worker handed over) on `fd`; an empty `buf`
    /// goes back to `spare`.
    pub(super) fn send(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        user_data: u64,
        sq: &mut Sq<'_>,
        spare: &mut Vec<Vec<u8>>,
    ) -> io::Result<()> {
        if buf.is_empty() {
            spare.push(buf);
            return Ok(());
        }
        let s = Sending { buf, off: 0 };
        sq.push(&send_entry(fd, &s, user_data))?;
        self.sending = Some(s);
        Ok(())
    }

    /// A send on `fd` completed with `res`: the rest of a partial send is
    /// submitted again (as `user_data`); a send that ended (done, or failed:
    /// the socket is aborted) leaves its buffer in `spare`.
    pub(super) fn sent(
        &mut self,
        fd: RawFd,
        res: i32,
        user_data: u64,
        sq: &mut Sq<'_>,
        spare: &mut Vec<Vec<u8>>,
    ) -> io::Result<Sent> {
        let Some(s) = self.sending.as_mut() else {
            return Ok(Sent::Partly);
        };
        let result = if res < 0 {
            self.abort(fd);
            Sent::Failed
        } else {
            s.off += res as usize;
            if s.off < s.buf.len() {
                sq.push(&send_entry(fd, s, user_data))?;
                return Ok(Sent::Partly);
            }
            Sent::Done
        };
        keep_spare(spare, self.sending.take());
        Ok(result)
    }

    /// Cancels the multishot receive `recv` (its user data), if one is in
    /// flight and not being cancelled already.
    pub(super) fn cancel_recv(&mut self, recv: u64, sq: &mut Sq<'_>) -> io::Result<()> {
        if self.recv && !self.cancelling {
            let cancel = opcode::AsyncCancel::new(recv)
                .build()
                .user_data(tag(IGNORE, 0));
            sq.push(&cancel)?;
            self.cancelling = true;
        }
        Ok(())
    }

    pub(super) fn abort(&mut self, fd: RawFd) {
        self.close();
        if !self.aborted {
            self.aborted = true;
            // SAFETY: shutdown(2) on our own socket.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }
}

/// Queues submissions, flushing to the kernel when the queue is full.
pub(super) struct Sq<'a> {
    pub(super) submitter: Submitter<'a>,
    pub(super) sq: SubmissionQueue<'a>,
}

impl Sq<'_> {
    pub(super) fn push(&mut self, e: &Entry) -> io::Result<()> {
        loop {
            // SAFETY: every buffer, address and timespec an entry points to
            // is owned by the driver and kept until the entry's completion
            // (see `Sending`, `BackendSock`, `BufRing`).
            if unsafe { self.sq.push(e) }.is_ok() {
                return Ok(());
            }
            self.sq.sync();
            self.submitter.submit()?;
            self.sq.sync();
        }
    }
}

/// Keeps a finished send's buffer for the next send, unless a burst grew it
/// past [`SPARE_KEEP`]: idle connections then hold no peak-sized buffers.
pub(super) fn keep_spare(spare: &mut Vec<Vec<u8>>, s: Option<Sending>) {
    if let Some(s) = s {
        keep_spare_buf(spare, s.buf);
    }
}

/// Keeps `buf` for a later send, unless it grew past [`SPARE_KEEP`].
pub(super) fn keep_spare_buf(spare: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if buf.capacity() <= SPARE_KEEP {
        spare.push(buf);
    }
}

pub(super) fn send_entry(fd: RawFd, s: &Sending, user_data: u64) -> Entry {
    let rest = &s.buf[s.off..];
    opcode::Send::new(Fd(fd), rest.as_ptr(), rest.len() as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(user_data)
}
