//! A client's replies in request order.
//!
//! Each request takes the next sequence number and a slot in the queue. Replies
//! arrive from different backends in any order; a reply for the head of the
//! queue goes straight to the client's output buffer (the common case, no
//! copy beyond that one), a reply for a later request waits in its slot until
//! everything before it has gone out.
//!
//! Beside the slots, the queue keeps its requests' [`Stamp`]s (command,
//! when it was read) in request order, run-length encoded: the requests of
//! one read to one command share a stamp, so a pipeline of them is one
//! entry. A reply leaving for the output buffer only counts itself
//! ([`ReplyQueue::released`]) and, if it is an error, notes its position;
//! the worker drains the released replies' stamps, a run at a time, into
//! its meters when the client's output is handed to the transport (see
//! `engine::meters`).

use std::collections::VecDeque;

use super::gather::UndoCmd;
use super::meters::{Stamp, NO_CMD};
use super::split::Merge;
use crate::routing::GroupIndex;

/// One request's place in the reply order.
#[derive(Debug)]
enum Slot {
    /// Sent to a backend, no reply yet.
    Waiting,
    /// Reply complete, waiting for earlier replies.
    Ready(Vec<u8>),
    /// A split request with parts still outstanding.
    Merging(Box<Merge>),
    /// Not sent yet: its keys are being moved, or its slots are held.
    Deferred(Box<Deferred>),
}

/// A request kept back because of a migration: held while its slots are
/// blocked, waiting for its keys to be moved (MIGRATE) before it is sent, or
/// waiting behind an earlier request of its client that is kept back (a
/// client's requests are sent in the order it sent them, so that a later
/// request never overtakes an earlier one on the same key).
#[derive(Debug, Default)]
pub struct Deferred {
    /// The request as a multibulk frame, dispatched again when it may go.
    pub frame: Vec<u8>,
    /// Replies to its moves (MIGRATE, DEL) still expected.
    pub moves_left: u16,
    /// Held until the table changes (its slots are blocked).
    pub held: bool,
    /// Why the last moves failed (they are tried again, up to a limit).
    pub failure: Option<String>,
    /// Move attempts so far.
    pub attempt: u8,
    /// The table version the keys were moved under; the request is sent
    /// straight to the target only if the table is still that one.
    pub moved_at: Option<u64>,
    /// When the request was first kept back (worker milliseconds).
    pub since_ms: u64,
    /// Keys moved one MIGRATE each (on a retry): (source group, argument
    /// index). A per-key MIGRATE's part number names its index here.
    pub single: Vec<(GroupIndex, u32)>,
    /// Indices into `single` of keys the target already had (`BUSYKEY`):
    /// copies left by a MIGRATE that timed out after the target restored
    /// the key, deleted on the source before the request goes on.
    pub busy: Vec<u16>,
    /// A transaction's `EXEC` (see [`super::route::Place::exec`]).
    pub exec: bool,
    /// It may go only when every earlier request of its client has been
    /// answered: it moves the client to another backend connection (see
    /// [`super::stateful`]), where it must not overtake them.
    pub barrier: bool,
}

impl Deferred {
    /// Whether it can be dispatched again (given that nothing ahead of it
    /// in its client's queue is kept back).
    pub fn ready(&self) -> bool {
        self.moves_left == 0 && !self.held
    }
}

/// Sequence number of a request within its client.
pub type Seq = u64;

/// The queue; see the module documentation.
#[derive(Debug, Default)]
pub struct ReplyQueue {
    /// Each request's slot.
    slots: VecDeque<Slot>,
    head: Seq,
    /// Bytes held in `Ready` slots and in merges (they count against the
    /// output limits).
    held: usize,
    /// `Deferred` slots.
    kept: usize,
    /// Bytes of the requests in `Deferred` slots.
    kept_bytes: usize,
    /// Requests whose reply is dropped instead of written (`CLIENT REPLY
    /// OFF|SKIP`, see `engine::clients`), in increasing order; empty for
    /// almost every client, so a release tests one length.
    muted: Vec<Seq>,
    /// The stamp the next slot takes (set when a request is counted as
    /// served; taken by the first slot or reply it makes, which leaves its
    /// command [`NO_CMD`]: a request's other replies are not timed).
    pub stamp: Stamp,
    /// The stamps of the replies released since the last drain and of the
    /// requests in `slots`, in request order, run-length encoded: the
    /// older runs, then `tail`, the newest (which may count none).
    stamps: VecDeque<Run>,
    tail: Run,
    /// Replies released (written, or dropped when muted) since the last
    /// drain: the first ones `stamps` counts.
    released: usize,
    /// The positions among those (0: the first released) of the errors,
    /// increasing.
    failed: Vec<usize>,
}

/// Requests in a row with one stamp.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    stamp: Stamp,
    n: u32,
}

/// Whether a reply is an error.
#[inline]
fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-' | b'!'))
}

/// The request bytes a slot holds.
fn frame_bytes(slot: &Slot) -> usize {
    match slot {
        Slot::Deferred(d) => d.frame.len(),
        _ => 0,
    }
}

impl ReplyQueue {
    /// Requests awaiting their turn.
    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether every reply has been written to the output buffer.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes of replies held back behind earlier ones or waiting to be
    /// merged.
    #[inline]
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// A slot for a request forwarded whole.
    #[inline(always)]
    pub fn push_waiting(&mut self) -> Seq {
        self.stamp_next();
        self.slots.push_back(Slot::Waiting);
        self.head + self.slots.len() as u64 - 1
    }

    /// A slot for a split request.
    pub fn push_merge(&mut self, m: Merge) -> Seq {
        self.stamp_next();
        self.slots.push_back(Slot::Merging(Box::new(m)));
        self.head + self.slots.len() as u64 - 1
    }

    /// Whether any request is kept back.
    #[inline]
    pub fn has_kept(&self) -> bool {
        self.kept > 0
    }

    /// Bytes of the requests kept back.
    #[inline]
    pub fn kept_bytes(&self) -> usize {
        self.kept_bytes
    }

    /// A slot for a request kept back.
    pub fn push_deferred(&mut self, d: Deferred) -> Seq {
        self.kept += 1;
        self.kept_bytes += d.frame.len();
        self.stamp_next();
        self.slots.push_back(Slot::Deferred(Box::new(d)));
        self.head + self.slots.len() as u64 - 1
    }

    /// Replaces slot `i`, keeping the count of kept-back slots.
    fn set(&mut self, i: usize, slot: Slot) -> Slot {
        let old = std::mem::replace(&mut self.slots[i], slot);
        if matches!(old, Slot::Deferred(_)) {
            self.kept -= 1;
        }
        if matches!(self.slots[i], Slot::Deferred(_)) {
            self.kept += 1;
        }
        self.kept_bytes = self.kept_bytes - frame_bytes(&old) + frame_bytes(&self.slots[i]);
        old
    }

    /// Request `seq` (kept back until now) is sent whole.
    pub fn set_waiting(&mut self, seq: Seq) {
        if let Some(i) = self.index(seq) {
            self.set(i, Slot::Waiting);
        }
    }

    /// Request `seq` (kept back until now) is split.
    pub fn set_merge(&mut self, seq: Seq, m: Merge) {
        if let Some(i) = self.index(seq) {
            self.set(i, Slot::Merging(Box::new(m)));
        }
    }

    /// Request `seq` is kept back (again).
    pub fn set_deferred(&mut self, seq: Seq, d: Deferred) {
        if let Some(i) = self.index(seq) {
            self.set(i, Slot::Deferred(Box::new(d)));
        }
    }

    /// The kept-back request `seq`, taken out of its slot (which waits).
    pub fn take_deferred(&mut self, seq: Seq) -> Option<Box<Deferred>> {
        let i = self.index(seq)?;
        match self.set(i, Slot::Waiting) {
            Slot::Deferred(d) => Some(d),
            other => {
                self.set(i, other);
                None
            }
        }
    }

    /// The sequence number of the oldest request still owed a reply.
    #[inline]
    pub fn head(&self) -> Seq {
        self.head
    }

    /// Whether the first kept-back request is a barrier now at the head:
    /// every earlier request has been answered.
    pub fn barrier_ready(&self) -> bool {
        matches!(self.slots.front(), Some(Slot::Deferred(d)) if d.barrier && d.ready())
    }

    /// The first kept-back request, in request order: the only one that
    /// may be dispatched again.
    pub fn first_kept(&self) -> Option<(Seq, &Deferred)> {
        if self.kept == 0 {
            return None;
        }
        self.slots.iter().enumerate().find_map(|(i, s)| match s {
            Slot::Deferred(d) => Some((self.head + i as u64, &**d)),
            _ => None,
        })
    }

    /// The kept-back request `seq`, to update.
    pub fn deferred_mut(&mut self, seq: Seq) -> Option<&mut Deferred> {
        let i = self.index(seq)?;
        match &mut self.slots[i] {
            Slot::Deferred(d) => Some(d),
            _ => None,
        }
    }

    /// A reply produced locally: straight out if nothing is ahead of it.
    #[inline]
    pub fn push_local(&mut self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        self.stamp_next();
        if self.slots.is_empty() {
            let at = out.len();
            write(out);
            self.note(out.get(at..).is_some_and(is_error));
        } else {
            let mut v = Vec::new();
            write(&mut v);
            self.held += v.len();
            self.slots.push_back(Slot::Ready(v));
        }
    }

    /// The reply to request `seq`, forwarded whole.
    #[inline]
    pub fn complete(&mut self, seq: Seq, reply: &[u8], out: &mut Vec<u8>) {
        let Some(i) = self.index(seq) else { return };
        if i == 0 {
            if self.muted.is_empty() || !self.take_muted(seq) {
                out.extend_from_slice(reply);
            }
            if let Some(Slot::Deferred(d)) = self.slots.pop_front() {
                self.kept -= 1;
                self.kept_bytes -= d.frame.len();
            }
            self.note(is_error(reply));
            self.head += 1;
            self.release(out);
        } else {
            self.held += reply.len();
            self.set(i, Slot::Ready(reply.to_vec()));
        }
    }

    /// Part `part`'s reply to split request `seq`. `limit` (0: none) bounds
    /// the bytes a merge may hold: past it, the merged reply becomes
    /// `too_large(bytes)`, an error. Returns the commands that undo a
    /// partial success of a fan-out, once it completes (see
    /// [`super::gather`]).
    pub fn complete_part(
        &mut self,
        seq: Seq,
        part: u16,
        reply: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
        too_large: impl FnOnce(usize) -> Vec<u8>,
    ) -> Vec<UndoCmd> {
        let Some(i) = self.index(seq) else {
            return Vec::new();
        };
        let Slot::Merging(m) = &mut self.slots[i] else {
            return Vec::new();
        };
        let before = m.held_bytes();
        let done = m.add(part, reply);
        if limit > 0 && m.held_bytes() > limit {
            m.too_large(too_large(m.held_bytes()));
        }
        self.held = self.held - before + m.held_bytes();
        if !done {
            return Vec::new();
        }
        let Slot::Merging(m) = std::mem::replace(&mut self.slots[i], Slot::Waiting) else {
            unreachable!()
        };
        self.held -= m.held_bytes();
        if i == 0 {
            let at = out.len();
            let mut dropped = Vec::new();
            let undo = if !self.muted.is_empty() && self.take_muted(seq) {
                m.finish(&mut dropped)
            } else {
                m.finish(out)
            };
            let failed = is_error(&dropped) || out.get(at..).is_some_and(is_error);
            self.slots.pop_front();
            self.note(failed);
            self.head += 1;
            self.release(out);
            undo
        } else {
            let mut v = Vec::new();
            let undo = m.finish(&mut v);
            self.held += v.len();
            self.slots[i] = Slot::Ready(v);
            undo
        }
    }

    /// Drops every reply owed (the client is being closed): later replies
    /// for these requests find no slot and are ignored.
    pub fn abandon(&mut self) {
        // Their stamps go too; the released replies' stay to be drained.
        let mut unanswered = self.slots.len();
        while unanswered > 0 {
            let n = (self.tail.n as usize).min(unanswered);
            self.tail.n -= n as u32;
            unanswered -= n;
            if self.tail.n == 0 {
                match self.stamps.pop_back() {
                    Some(run) => self.tail = run,
                    None => break,
                }
            }
        }
        self.head += self.slots.len() as u64;
        self.slots.clear();
        self.slots.shrink_to(16);
        self.held = 0;
        self.kept = 0;
        self.kept_bytes = 0;
        self.muted.clear();
    }

    /// The reply of the next request (the next slot taken) is to be
    /// dropped; returns its sequence number (see [`unmute`](Self::unmute)
    /// if it took no slot after all).
    pub fn mute_next(&mut self) -> Seq {
        let seq = self.head + self.slots.len() as u64;
        self.muted.push(seq);
        seq
    }

    /// Request `seq`'s reply is wanted after all (or it took no slot).
    pub fn unmute(&mut self, seq: Seq) {
        self.muted.retain(|&m| m != seq);
    }

    /// The sequence number the next slot will take.
    #[inline]
    pub fn next_seq(&self) -> Seq {
        self.head + self.slots.len() as u64
    }

    /// Whether `seq` (the head, being released) was muted; forgets it.
    fn take_muted(&mut self, seq: Seq) -> bool {
        if self.muted.first() == Some(&seq) {
            self.muted.remove(0);
            true
        } else {
            false
        }
    }

    /// The next request (a slot, or a reply written at once) takes
    /// [`stamp`](Self::stamp).
    #[inline(always)]
    fn stamp_next(&mut self) {
        let stamp = self.stamp;
        self.stamp.cmd = NO_CMD;
        // A run never holds more than a pipeline's requests and the
        // replies released since the last drain (see `engine::meters`):
        // its count cannot reach u32::MAX.
        if stamp.start_ns == self.tail.stamp.start_ns && stamp.cmd == self.tail.stamp.cmd {
            self.tail.n += 1;
        } else {
            self.new_run(stamp);
        }
    }

    /// The next request's stamp differs from the newest run's (the first
    /// request of a read, or of another command).
    #[inline(never)]
    fn new_run(&mut self, stamp: Stamp) {
        if self.tail.n > 0 {
            self.stamps.push_back(self.tail);
        }
        self.tail = Run { stamp, n: 1 };
    }

    /// The reply at the head left for the output buffer (or was dropped).
    #[inline]
    fn note(&mut self, failed: bool) {
        if failed {
            self.failed.push(self.released);
        }
        self.released += 1;
    }

    /// Replies released since the last [`drain`](Self::drain).
    #[inline]
    pub fn released(&self) -> usize {
        self.released
    }

    /// Hands the released replies' stamps to `f`, a run at a time: the
    /// stamp, the replies with it and how many of those were errors
    /// (replies of requests not served, [`NO_CMD`], are left out); then
    /// forgets them.
    pub fn drain(&mut self, mut f: impl FnMut(Stamp, u64, u64)) {
        let mut left = std::mem::take(&mut self.released);
        let mut failed = self.failed.iter().copied().peekable();
        let mut end = 0;
        while left > 0 {
            let older = !self.stamps.is_empty();
            let run = match self.stamps.front_mut() {
                Some(run) => run,
                None => &mut self.tail,
            };
            if run.n == 0 {
                break;
            }
            let n = (run.n as usize).min(left);
            end += n;
            let mut errors = 0;
            while failed.next_if(|&p| p < end).is_some() {
                errors += 1;
            }
            if run.stamp.cmd != NO_CMD {
                f(run.stamp, n as u64, errors);
            }
            run.n -= n as u32;
            if run.n == 0 && older {
                self.stamps.pop_front();
            }
            left -= n;
        }
        self.failed.clear();
    }

    fn index(&self, seq: Seq) -> Option<usize> {
        let i = seq.checked_sub(self.head)? as usize;
        (i < self.slots.len()).then_some(i)
    }

    /// Moves every complete reply at the head to `out`.
    #[inline]
    fn release(&mut self, out: &mut Vec<u8>) {
        while let Some(Slot::Ready(_)) = self.slots.front() {
            let Some(Slot::Ready(v)) = self.slots.pop_front() else {
                unreachable!()
            };
            self.held -= v.len();
            let seq = self.head;
            self.head += 1;
            self.note(is_error(&v));
            if self.muted.is_empty() || !self.take_muted(seq) {
                out.extend_from_slice(&v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::split::SplitKind;

    #[test]
    fn replies_leave_in_request_order() {
        let mut q = ReplyQueue::default();
        let mut out = Vec::new();
        let a = q.push_waiting();
        let b = q.push_waiting();
        q.push_local(&mut out, |o| o.extend_from_slice(b"+PONG\r\n"));
        let c = q.push_waiting();
        q.complete(c, b":3\r\n", &mut out);
        q.complete(b, b":2\r\n", &mut out);
        assert!(out.is_empty());
        assert_eq!(q.held_bytes(), 4 + 4 + 7);
        q.complete(a, b":1\r\n", &mut out);
        assert_eq!(out, b":1\r\n:2\r\n+PONG\r\n:3\r\n");
        assert!(q.is_empty());
        assert_eq!(q.held_bytes(), 0);
        q.push_local(&mut out, |o| o.extend_from_slice(b"+OK\r\n"));
        assert!(out.ends_with(b"+OK\r\n"));
    }

    #[test]
    fn merges_wait_for_all_parts() {
        let mut q = ReplyQueue::default();
        let mut out = Vec::new();
        let m = q.push_merge(Merge::new(SplitKind::Sum, 2, &[0, 1]));
        let after = q.push_waiting();
        q.complete(after, b"+OK\r\n", &mut out);
        q.complete_part(m, 1, b":1\r\n", &mut out, 0, |_| Vec::new());
        assert!(out.is_empty());
        q.complete_part(m, 0, b":2\r\n", &mut out, 0, |_| Vec::new());
        assert_eq!(out, b":3\r\n+OK\r\n");
    }

    #[test]
    fn deferred_requests_keep_their_place() {
        let mut q = ReplyQueue::default();
        let mut out = Vec::new();
        assert!(!q.has_kept() && q.first_kept().is_none());
        let d = q.push_deferred(Deferred {
            frame: b"*1\r\n$4\r\nPING\r\n".to_vec(),
            moves_left: 1,
            ..Deferred::default()
        });
        let after = q.push_waiting();
        let behind = q.push_deferred(Deferred::default());
        assert!(q.has_kept());
        let (first, fd) = q.first_kept().unwrap();
        assert_eq!(first, d);
        assert!(!fd.ready(), "its move is still out");
        q.complete(after, b":2\r\n", &mut out);
        q.deferred_mut(d).unwrap().moves_left = 0;
        assert!(q.first_kept().unwrap().1.ready());
        assert_eq!(q.kept_bytes(), 14, "kept-back requests are counted");
        let taken = q.take_deferred(d).unwrap();
        assert_eq!(taken.frame.len(), 14);
        assert_eq!(q.kept_bytes(), 0);
        assert!(q.take_deferred(d).is_none(), "the slot waits now");
        assert_eq!(q.first_kept().unwrap().0, behind, "the next in order");
        q.set_waiting(d);
        q.complete(d, b":1\r\n", &mut out);
        assert_eq!(out, b":1\r\n:2\r\n");
        q.complete(behind, b"-ERR x\r\n", &mut out);
        assert!(!q.has_kept() && q.is_empty());
    }

    #[test]
    fn unknown_sequence_numbers_are_ignored() {
        let mut q = ReplyQueue::default();
        let mut out = Vec::new();
        q.complete(5, b"+OK\r\n", &mut out);
        q.complete_part(0, 0, b"+OK\r\n", &mut out, 0, |_| Vec::new());
        assert!(out.is_empty());
    }
}
