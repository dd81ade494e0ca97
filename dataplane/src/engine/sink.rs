//! Reply delivery: a [`Sink`] borrows the clients and the bookkeeping
//! around them while a backend connection's replies are framed
//! ([`Sink::replies`]) and each goes to the request at the head of the
//! connection's in-flight queue ([`Sink::deliver`]): to the client's
//! output, into its reply slot, into a merge, or to a kept-back request's
//! moves.

use slab::Slab;

use keyway_protocol::resp::integer_reply;

use super::backend::{BackendConn, Inflight, Internal, Owner, Purpose};
use super::client::{Client, ClientState};
use super::deferred::Scheduler;
use super::limits::{self, close_for_output};
use super::pending::Deferred;
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
    /// It refused keyway's `AUTH` (the error is in
    /// [`BackendConn::auth_refused`]).
    #[error("the backend refused keyway's credentials")]
    AuthRefused,
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
    /// Error replies by code (`INFO errorstats`).
    pub cmds: &'a mut super::CommandStats,
    /// Timing and per-group counters (see [`super::meters`]).
    pub meters: &'a mut super::meters::Meters,
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
    /// Dedicated connections (and generations) whose blocking command was
    /// answered: given back by the caller.
    pub released: &'a mut Vec<(usize, u32)>,
    /// Dedicated connections (and generations) a `CLIENT UNBLOCK` for
    /// which was answered.
    pub unblocked: &'a mut Vec<(usize, u32)>,
    /// Elements orphaned blocking commands popped, to push back (see
    /// [`super::blocking`]) on the connection being read.
    pub restores: &'a mut Vec<Vec<u8>>,
}

impl Sink<'_> {
    /// A reply on a dedicated connection, or to keyway's own request:
    /// the reply that ends a block being unblocked clears that; keyway's
    /// own are handled here (true), the rest delivered as usual (false).
    #[cold]
    fn special(&mut self, conn: &mut BackendConn, entry: Inflight, reply: &[u8]) -> bool {
        if let Some(d) = conn.dedicated.as_mut() {
            if d.unblock_for == Some(entry.owner) {
                d.unblocking = None;
                d.unblock_for = None;
                d.unblock_reason = None;
            }
        }
        if let Owner::Internal(what) = entry.owner {
            self.versions.done(entry.version);
            self.internal(conn, what, reply);
            return true;
        }
        false
    }

    /// A reply to keyway's own request.
    #[cold]
    fn internal(&mut self, conn: &mut BackendConn, what: Internal, reply: &[u8]) {
        match what {
            Internal::ConnId => {
                if let Some(d) = conn.dedicated.as_mut() {
                    d.backend_id = integer_reply(reply);
                    // Refused while a script runs (`-BUSY`: a connection
                    // opened for SCRIPT KILL): not worth a warning.
                    if d.backend_id.is_none() {
                        d.id_failed = true;
                    }
                    if d.backend_id.is_none() && !reply.starts_with(b"-BUSY") {
                        tracing::warn!(
                            reply = %String::from_utf8_lossy(&reply[..reply.len().min(200)]).trim_end(),
                            "CLIENT ID failed on a dedicated backend connection: a blocked client that \
                             leaves closes it instead of unblocking it"
                        );
                    }
                }
            }
            Internal::Unblocked { b, gen } => self.unblocked.push((b as usize, gen)),
            Internal::Orphan(restore) => {
                if let Some(cmd) = super::blocking::restore_command(restore, reply) {
                    self.stats.elements_restored += 1;
                    self.restores.push(cmd);
                }
            }
            Internal::Restored => {
                if reply.first() == Some(&b'-') {
                    tracing::warn!(
                        reply = %String::from_utf8_lossy(&reply[..reply.len().min(200)]).trim_end(),
                        "could not push back elements a blocking command popped after its client left"
                    );
                }
            }
            Internal::Hello => {
                if reply.first() == Some(&b'-') {
                    tracing::warn!(
                        reply = %String::from_utf8_lossy(&reply[..reply.len().min(200)]).trim_end(),
                        "a backend refused HELLO: RESP3 clients get its RESP2 replies"
                    );
                }
            }
            Internal::Auth { admin } => {
                if reply.first() == Some(&b'-') {
                    let text = String::from_utf8_lossy(&reply[1..reply.len().min(200)]);
                    conn.auth_refused = Some((admin, text.trim_end().into()));
                }
            }
            Internal::Ignore => {}
        }
    }

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
        self.meters.backend_begin(conn.pool);
        loop {
            match conn.framer.next(&buf[at..]) {
                Ok(Some(len)) => {
                    if buf[at] == b'>' && conn.skipped == 0 {
                        // A push is no reply to any request (see
                        // `engine::resp3`): dropped, counted.
                        self.stats.backend_pushes_dropped += 1;
                        at += len;
                        continue;
                    }
                    if !owed(conn) {
                        return Err(BackendFault::Unsolicited);
                    }
                    let Some(entry) = conn.inflight.pop_front() else {
                        return Err(BackendFault::Unsolicited);
                    };
                    if let Owner::Client { .. } = entry.owner {
                        self.meters
                            .backend_run(entry.end, |end| conn.handoff_of(end));
                    }
                    if conn.dedicated.is_some() || matches!(entry.owner, Owner::Internal(_)) {
                        let reply = &buf[at..at + len];
                        if self.special(conn, entry, reply) {
                            if conn.auth_refused.is_some() {
                                return Err(BackendFault::AuthRefused);
                            }
                            at += len;
                            continue;
                        }
                    }
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
            // (Replies are handled by `internal`; this is an error for a
            // connection that failed.)
            Owner::Internal(Internal::Unblocked { b, gen }) => {
                return self.unblocked.push((b as usize, gen))
            }
            Owner::Internal(_) => return,
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
            Purpose::Whole => {
                if let Some(b'-') = reply.first() {
                    self.cmds.error_reply(reply);
                }
                if st.blocked.is_none() {
                    st.queue.complete(seq, reply, st.out.buf_mut());
                } else if !send_again(st, seq, reply, self.now_ms, self.released, self.sched) {
                    st.queue.complete(seq, reply, st.out.buf_mut());
                    block_answered(st, seq, self.released, self.resume, self.sched);
                }
            }
            Purpose::Skip => return,
            Purpose::Script => {
                if self.scripts.noscript_or_forget(e, reply) {
                    return;
                }
                if let Some(b'-') = reply.first() {
                    self.cmds.error_reply(reply);
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
                if st.blocked.is_some() {
                    block_answered(st, seq, self.released, self.resume, self.sched);
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
        if st.queue.has_kept() && st.queue.barrier_ready() {
            // A request waiting for every earlier one to be answered.
            self.sched.ready(idx, gen);
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

/// A reply (or a part's) to the client's request `seq`, which may be its
/// blocking command: when its last reply is in, the block is over, its
/// connections are given back (`released`) and the client goes on.
#[cold]
fn block_answered(
    st: &mut ClientState,
    seq: u64,
    released: &mut Vec<(usize, u32)>,
    resume: &mut Vec<u32>,
    sched: &mut Scheduler,
) {
    let Some(b) = st.blocked.as_mut().filter(|b| b.seq == seq) else {
        return;
    };
    b.parts = b.parts.saturating_sub(1);
    if b.parts > 0 {
        return;
    }
    let Some(b) = st.blocked.take() else { return };
    if b.leased {
        released.push((b.b, b.gen));
    }
    released.append(&mut st.wait_conns);
    resume.push(st.me.idx);
    if st.queue.has_kept() {
        sched.ready(st.me.idx, st.me.gen);
    }
}

/// The reply to a blocked command keyway unblocked because a new table moved
/// its keys (see [`super::blocking::Again`]): a timeout reply sends it
/// again, kept back in its reply slot to be routed by the new table; true
/// if so. A reply with elements, or one past the command's own timeout, is
/// the client's.
#[cold]
fn send_again(
    st: &mut ClientState,
    seq: u64,
    reply: &[u8],
    now_ms: u64,
    released: &mut Vec<(usize, u32)>,
    sched: &mut Scheduler,
) -> bool {
    let Some(b) = st.blocked.as_ref().filter(|b| b.seq == seq) else {
        return false;
    };
    let Some(again) = b.again.as_ref().filter(|a| a.unblocking && a.resend) else {
        return false;
    };
    if !super::blocking::is_timeout_reply(reply) {
        return false;
    }
    let Some(frame) = again.frame_for(now_ms) else {
        return false;
    };
    let Some(b) = st.blocked.take() else {
        return false;
    };
    if b.leased {
        released.push((b.b, b.gen));
    }
    st.queue.set_deferred(
        seq,
        Deferred {
            frame,
            since_ms: now_ms,
            ..Deferred::default()
        },
    );
    sched.ready(st.me.idx, st.me.gen);
    true
}
