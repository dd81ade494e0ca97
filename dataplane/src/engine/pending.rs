//! A client's replies in request order.
//!
//! Each request takes the next sequence number and a slot in the queue. Replies
//! arrive from different backends in any order; a reply for the head of the
//! queue goes straight to the client's output buffer (the common case, no
//! copy beyond that one), a reply for a later request waits in its slot until
//! everything before it has gone out.

use std::collections::VecDeque;

use super::split::Merge;

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
/// blocked, or waiting for its keys to be moved (MIGRATE) before it is sent.
#[derive(Debug)]
pub struct Deferred {
    /// The request as a multibulk frame, dispatched again when it may go.
    pub frame: Vec<u8>,
    /// MIGRATE replies still expected.
    pub moves_left: u16,
    /// Why the last moves failed (they are tried again, up to a limit).
    pub failure: Option<String>,
    /// Move attempts so far.
    pub attempt: u8,
    /// The table version the keys were moved under; the request is sent
    /// straight to the target only if the table is still that one.
    pub moved_at: Option<u64>,
    /// When the request was first kept back (worker milliseconds).
    pub since_ms: u64,
}

/// Sequence number of a request within its client.
pub type Seq = u64;

/// The queue; see the module documentation.
#[derive(Debug, Default)]
pub struct ReplyQueue {
    slots: VecDeque<Slot>,
    head: Seq,
    /// Bytes held in `Ready` slots (they count against the output limit).
    held: usize,
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

    /// Bytes of complete replies held back behind earlier ones.
    #[inline]
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// A slot for a request forwarded whole.
    #[inline]
    pub fn push_waiting(&mut self) -> Seq {
        self.slots.push_back(Slot::Waiting);
        self.head + self.slots.len() as u64 - 1
    }

    /// A slot for a split request.
    pub fn push_merge(&mut self, m: Merge) -> Seq {
        self.slots.push_back(Slot::Merging(Box::new(m)));
        self.head + self.slots.len() as u64 - 1
    }

    /// A slot for a request kept back.
    pub fn push_deferred(&mut self, d: Deferred) -> Seq {
        self.slots.push_back(Slot::Deferred(Box::new(d)));
        self.head + self.slots.len() as u64 - 1
    }

    /// Request `seq` (kept back until now) is sent whole.
    pub fn set_waiting(&mut self, seq: Seq) {
        if let Some(i) = self.index(seq) {
            self.slots[i] = Slot::Waiting;
        }
    }

    /// Request `seq` (kept back until now) is split.
    pub fn set_merge(&mut self, seq: Seq, m: Merge) {
        if let Some(i) = self.index(seq) {
            self.slots[i] = Slot::Merging(Box::new(m));
        }
    }

    /// Request `seq` is kept back (again).
    pub fn set_deferred(&mut self, seq: Seq, d: Deferred) {
        if let Some(i) = self.index(seq) {
            self.slots[i] = Slot::Deferred(Box::new(d));
        }
    }

    /// The kept-back request `seq`, taken out of its slot (which waits).
    pub fn take_deferred(&mut self, seq: Seq) -> Option<Box<Deferred>> {
        let i = self.index(seq)?;
        match std::mem::replace(&mut self.slots[i], Slot::Waiting) {
            Slot::Deferred(d) => Some(d),
            other => {
                self.slots[i] = other;
                None
            }
        }
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
        if self.slots.is_empty() {
            write(out);
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
            out.extend_from_slice(reply);
            self.slots.pop_front();
            self.head += 1;
            self.release(out);
        } else {
            self.held += reply.len();
            self.slots[i] = Slot::Ready(reply.to_vec());
        }
    }

    /// Part `part`'s reply to split request `seq`.
    pub fn complete_part(&mut self, seq: Seq, part: u16, reply: &[u8], out: &mut Vec<u8>) {
        let Some(i) = self.index(seq) else { return };
        let Slot::Merging(m) = &mut self.slots[i] else {
            return;
        };
        if !m.add(part, reply) {
            return;
        }
        let Slot::Merging(m) = std::mem::replace(&mut self.slots[i], Slot::Waiting) else {
            unreachable!()
        };
        if i == 0 {
            m.finish(out);
            self.slots.pop_front();
            self.head += 1;
            self.release(out);
        } else {
            let mut v = Vec::new();
            m.finish(&mut v);
            self.held += v.len();
            self.slots[i] = Slot::Ready(v);
        }
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
            self.head += 1;
            out.extend_from_slice(&v);
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
        q.complete_part(m, 1, b":1\r\n", &mut out);
        assert!(out.is_empty());
        q.complete_part(m, 0, b":2\r\n", &mut out);
        assert_eq!(out, b":3\r\n+OK\r\n");
    }

    #[test]
    fn deferred_requests_keep_their_place() {
        let mut q = ReplyQueue::default();
        let mut out = Vec::new();
        let d = q.push_deferred(Deferred {
            frame: b"*1\r\n$4\r\nPING\r\n".to_vec(),
            moves_left: 1,
            failure: None,
            attempt: 0,
            moved_at: None,
            since_ms: 0,
        });
        let after = q.push_waiting();
        q.complete(after, b":2\r\n", &mut out);
        q.deferred_mut(d).unwrap().moves_left = 0;
        let taken = q.take_deferred(d).unwrap();
        assert_eq!(taken.frame.len(), 14);
        assert!(q.take_deferred(d).is_none(), "the slot waits now");
        q.set_waiting(d);
        q.complete(d, b":1\r\n", &mut out);
        assert_eq!(out, b":1\r\n:2\r\n");
    }

    #[test]
    fn unknown_sequence_numbers_are_ignored() {
        let mut q = ReplyQueue::default();
        let mut out = Vec::new();
        q.complete(5, b"+OK\r\n", &mut out);
        q.complete_part(0, 0, b"+OK\r\n", &mut out);
        assert!(out.is_empty());
    }
}
