//! Reply delivery: a [`Sink`] borrows the clients and the bookkeeping
//! around them while a backend connection's replies are framed
//! ([`Sink::replies`]) and each goes to the request at the head of the
//! connection's in-flight queue ([`Sink::deliver`]): to the client's
//! output, into its reply slot, into a merge, or to a kept-back request's
//! moves.

use slab::Slab;

use super::backend::{BackendConn, Inflight, Owner, Purpose};
use super::client::Client;
use super::deferred::Scheduler;
use super::limits::{self, close_for_output};
use super::replies::Refusal;
use super::scripts::ScriptCache;
use super::versions::VersionCounts;
use super::{live_client, moves, Stats, Wake};

/// Why a backend connection can no longer be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum BackendFault {
    /// It answered more than was asked: every later reply would go to the
    /// wrong request.
    #[error("the backend sent a reply no request asked for")]
    Unsolicited,
    /// It sent something that is not RESP.
    #[error("protocol error from backend: {0}")]
    Protocol(keyway_protocol::resp::ReplyError),
}

/// Whether a reply is owed on `conn`: its oldest request in flight has been
/// handed to the transport.
#[inline]
fn owed(conn: &BackendConn) -> bool {
    conn.inflight
        .front()
        .is_some_and(|f| f.end <= conn.out.handed())
}

/// Where backend replies go: the clients and the bookkeeping around them.
pub(super) struct Sink<'a> {
    pub clients: &'a mut Slab<Client>,
    pub wake: &'a mut Wake,
    pub versions: &'a mut VersionCounts,
    pub stats: &'a mut Stats,
    pub resume: &'a mut Vec<u32>,
    pub sched: &'a mut Scheduler,
    pub log: &'a mut limits::LogLimit,
    pub now_ms: u64,
    /// `limits.output_hard_limit` (0: none).
    pub hard_limit: usize,
    /// The largest reply forwarded, and the setting that says so.
    pub reply_limit: (u64, &'static str),
    pub max_pipeline: usize,
    /// `EVALSHA`s that may be retried, undos of failed fan-outs.
    pub scripts: &'a mut ScriptCache,
}

impl Sink<'_> {
    /// Frames every complete reply at the start of `buf` and delivers it to
    /// the request at the head of `conn`'s in-flight queue. Returns the bytes
    /// consumed, or why the connection can no longer be trusted.
    ///
    /// A reply is owed only for a request the transport has been handed
    /// (see [`Inflight::end`]): one more is a reply no request asked for,
    /// which would shift every later reply to the wrong request. A reply
    /// larger than the reply limit is read and dropped as it arrives, and
    /// its request gets an error naming the limit.
    pub(super) fn replies(
        &mut self,
        conn: &mut BackendConn,
        buf: &[u8],
    ) -> Result<usize, BackendFault> {
        let mut at = 0;
        loop {
            match conn.framer.next(&buf[at..]) {
                Ok(Some(len)) => {
                    if !owed(conn) {
                        return Err(BackendFault::Unsolicited);
                    }
                    let Some(entry) = conn.inflight.pop_front() else {
                        return Err(BackendFault::Unsolicited);
                    };
                    let size = conn.skipped + len as u64;
                    let (limit, key) = self.reply_limit;
                    if size > limit {
                        conn.skipped = 0;
                        self.stats.replies_too_large += 1;
                        let why = Refusal::ReplyTooLarge {
                            bytes: size,
                            key,
                            limit,
                        };
                        self.deliver(entry, &why.to_reply());
                    } else {
                        self.deliver(entry, &buf[at..at + len]);
                    }
                    at += len;
                }
                Ok(None) => {
                    let rest = buf.len() - at;
                    let size = conn.skipped + rest.max(conn.framer.bytes_needed()) as u64;
                    if size > self.reply_limit.0 {
                        if !owed(conn) {
                            return Err(BackendFault::Unsolicited);
                        }
                        let drop = conn.framer.discardable(rest);
                        conn.framer.rebase(drop);
                        conn.skipped += drop as u64;
                        at += drop;
                    }
                    return Ok(at);
                }
                Err(e) => return Err(BackendFault::Protocol(e)),
            }
        }
    }

    /// Sends again the `EVALSHA`s of this read that got `-NOSCRIPT`
    /// (`ScriptCache::noscript`), on `conn`, each after a `SCRIPT LOAD`
    /// (see [`super::scripts`]); true if any was.
    #[cold]
    #[inline(never)]
    pub(super) fn retry_noscript(&mut self, conn: &mut BackendConn) -> bool {
        let mut any = false;
        for (e, reply) in std::mem::take(&mut self.scripts.noscript) {
            if self.scripts.retry(conn, &e, self.versions, self.now_ms) {
                self.stats.scripts_retried += 1;
                any = true;
            } else {
                // Cannot happen (the frame was kept): the reply as it was.
                self.versions.add(e.version);
                self.deliver(e, &reply);
            }
        }
        any
    }

    #[inline]
    pub(super) fn deliver(&mut self, e: Inflight, reply: &[u8]) {
        self.versions.done(e.version);
        let (idx, gen, seq, purpose) = match e.owner {
            Owner::Client {
                idx,
                gen,
                seq,
                purpose,
            } => (idx, gen, seq, purpose),
            Owner::MoveBatch { id } => return self.sched.batch_replied(self.clients, id, reply),
            // The probe's reply only tells that the backend is up.
            Owner::Probe | Owner::Discard => return,
        };
        let Some(c) = live_client(self.clients, idx, gen) else {
            self.stats.replies_orphaned += 1;
            return;
        };
        let st = &mut c.st;
        if !st.wants_replies() {
            return;
        }
        match purpose {
            Purpose::Whole => st.queue.complete(seq, reply, st.out.buf_mut()),
            Purpose::Script => {
                if self.scripts.noscript_or_forget(e, reply) {
                    return;
                }
                st.queue.complete(seq, reply, st.out.buf_mut())
            }
            Purpose::Part(part) => {
                let hard = self.hard_limit;
                let stats = &mut *self.stats;
                let undo = st
                    .queue
                    .complete_part(seq, part, reply, st.out.buf_mut(), hard, |n| {
                        stats.replies_too_large += 1;
                        Refusal::ReplyTooLarge {
                            bytes: n as u64,
                            key: "limits.output_hard_limit",
                            limit: hard as u64,
                        }
                        .to_reply()
                    });
                if !undo.is_empty() {
                    // A fan-out's part is its group.
                    self.scripts.add_undo(undo);
                }
            }
            Purpose::Move | Purpose::MoveKey(_) => {
                let single = match purpose {
                    Purpose::MoveKey(i) => Some(i),
                    _ => None,
                };
                if st
                    .queue
                    .deferred_mut(seq)
                    .is_some_and(|d| moves::move_replied(d, single, reply))
                {
                    self.sched.ready(idx, gen);
                }
                return;
            }
        }
        if self.hard_limit > 0 && st.pending_output() > self.hard_limit {
            close_for_output(st, self.hard_limit, self.now_ms, self.log, self.wake);
            self.stats.clients_output_limit += 1;
            return;
        }
        if st.paused && st.queue.len() <= self.max_pipeline / 2 {
            st.paused = false;
            self.resume.push(idx);
        }
        self.wake.client(st);
    }
}
