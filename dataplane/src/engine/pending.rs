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
    fn unknown_sequence_numbers_are_ignored() {
        let mut q = ReplyQueue::default();
        let mut out = Vec::new();
        q.complete(5, b"+OK\r\n", &mut out);
        q.complete_part(0, 0, b"+OK\r\n", &mut out);
        assert!(out.is_empty());
    }
}
