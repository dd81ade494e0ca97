//! On-demand key moves, coalesced: the first attempt to move a request's
//! keys joins a batch for its (source connection, target), and one MIGRATE
//! carries the keys of every request that joined the batch.
//!
//! Redis runs MIGRATE synchronously — the source waits for the target's
//! RESTORE replies — so MIGRATE calls on one connection go one after another
//! and each costs at least a source-to-target round trip. One call per
//! request caps a core's moves at one round trip each (about 1400 a second
//! on a loaded 2-core machine, where commands come faster than that). So a
//! queue keeps at most one MIGRATE in flight per (connection, target); keys
//! of requests that come meanwhile wait in the next batch, which goes as
//! soon as the one in flight is answered. Under light load a batch holds one
//! request and goes at once; under heavy load batches grow and the cost of a
//! round trip is shared.
//!
//! A batch's reply stands for each of its requests' moves: `+OK`/`+NOKEY`,
//! the keys are on the target; an error, each request retries its own keys
//! one MIGRATE per key (`Migrator::move_first`). Batches not yet sent when
//! the routing table changes are dropped, and their requests are routed
//! again by the new table: nothing moves under a table that is no longer
//! the current one, so an ack of a newer version never precedes a move of
//! an older one.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use slab::Slab;

use super::DeferredRef;

/// Most keys in one MIGRATE of a batch.
pub(crate) const MAX_BATCH_KEYS: usize = 1000;

/// Requests waiting for one MIGRATE, and its keys.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub keys: Vec<Vec<u8>>,
    pub waiters: Vec<DeferredRef>,
}

#[derive(Debug, Default)]
struct Queue {
    /// The batch in flight.
    sending: Option<usize>,
    /// Batches to send, in order; the last takes new keys until full.
    waiting: VecDeque<Batch>,
}

/// Where a batch goes: a backend connection (the source) and the target.
pub(crate) type Route = (usize, SocketAddr);

/// One core's move batches.
#[derive(Debug, Default)]
pub(crate) struct MoveBatches {
    queues: HashMap<Route, Queue>,
    /// Batches in flight: their route and waiters.
    in_flight: Slab<(Route, Vec<DeferredRef>)>,
    /// Batches waiting to be sent, over every queue (so that
    /// [`MoveBatches::has_waiting`] is one test).
    waiting: usize,
}

impl MoveBatches {
    /// Adds a request's keys to the batch for `route`; returns how many
    /// batches it joined (replies it waits for).
    pub fn join(
        &mut self,
        route: Route,
        keys: impl Iterator<Item = Vec<u8>>,
        waiter: DeferredRef,
    ) -> u16 {
        let q = self.queues.entry(route).or_default();
        let mut keys = keys.peekable();
        let mut joined = false;
        let mut batches = 0;
        while keys.peek().is_some() {
            let full = q
                .waiting
                .back()
                .is_none_or(|b| b.keys.len() >= MAX_BATCH_KEYS);
            if full {
                q.waiting.push_back(Batch::default());
                self.waiting += 1;
                joined = false;
            }
            let b = q.waiting.back_mut().expect("just ensured");
            while b.keys.len() < MAX_BATCH_KEYS {
                match keys.next() {
                    Some(k) => b.keys.push(k),
                    None => break,
                }
            }
            if !joined {
                b.waiters.push(waiter);
                joined = true;
                batches += 1;
            }
        }
        batches
    }

    /// The batches that may be sent now (nothing in flight on their route),
    /// each with its route. Call [`MoveBatches::sent`] for each one sent.
    pub fn ready(&mut self) -> Vec<(Route, Batch)> {
        let mut out = Vec::new();
        for (route, q) in &mut self.queues {
            if q.sending.is_none() {
                if let Some(b) = q.waiting.pop_front() {
                    self.waiting -= 1;
                    out.push((*route, b));
                }
            }
        }
        self.queues
            .retain(|_, q| q.sending.is_some() || !q.waiting.is_empty());
        out
    }

    /// Batch `waiters` went out on `route`; returns its id (the Inflight's
    /// `seq`).
    pub fn sent(&mut self, route: Route, waiters: Vec<DeferredRef>) -> u64 {
        let id = self.in_flight.insert((route, waiters));
        self.queues.entry(route).or_default().sending = Some(id);
        id as u64
    }

    /// Batch `id` was answered (or failed): its waiters.
    pub fn answered(&mut self, id: u64) -> Vec<DeferredRef> {
        let Some((route, waiters)) = self.in_flight.try_remove(id as usize) else {
            return Vec::new();
        };
        if let Some(q) = self.queues.get_mut(&route) {
            if q.sending == Some(id as usize) {
                q.sending = None;
            }
        }
        waiters
    }

    /// Drops every batch not yet sent (the table changed); their waiters.
    pub fn drop_unsent(&mut self) -> Vec<DeferredRef> {
        let mut out = Vec::new();
        for q in self.queues.values_mut() {
            for b in q.waiting.drain(..) {
                out.extend(b.waiters);
            }
        }
        self.queues.retain(|_, q| q.sending.is_some());
        self.waiting = 0;
        out
    }

    /// Whether any batch waits to be sent.
    #[inline]
    pub fn has_waiting(&self) -> bool {
        self.waiting > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        (3, "127.0.0.1:7001".parse().unwrap())
    }

    fn keys(n: usize, tag: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
        (0..n).map(move |i| format!("{tag}{i}").into_bytes())
    }

    #[test]
    fn one_migrate_in_flight_per_route_the_rest_coalesce() {
        let mut m = MoveBatches::default();
        assert_eq!(m.join(route(), keys(1, "a"), (1, 1, 0)), 1);
        let ready = m.ready();
        assert_eq!(ready.len(), 1);
        let (r, b) = ready.into_iter().next().unwrap();
        let id = m.sent(r, b.waiters);
        m.join(route(), keys(2, "b"), (2, 1, 0));
        m.join(route(), keys(1, "c"), (3, 1, 5));
        assert!(m.ready().is_empty(), "one in flight");
        assert!(m.has_waiting());
        assert_eq!(m.answered(id), vec![(1, 1, 0)]);
        let ready = m.ready();
        assert_eq!(ready[0].1.keys.len(), 3, "both requests in one MIGRATE");
        assert_eq!(ready[0].1.waiters, vec![(2, 1, 0), (3, 1, 5)]);
        assert!(!m.has_waiting(), "the one waiting batch was taken");
    }

    #[test]
    fn big_requests_span_batches_and_unsent_ones_drop() {
        let mut m = MoveBatches::default();
        assert_eq!(m.join(route(), keys(MAX_BATCH_KEYS + 5, "k"), (1, 1, 0)), 2);
        let (r, b) = m.ready().pop().unwrap();
        assert_eq!(b.keys.len(), MAX_BATCH_KEYS);
        m.sent(r, b.waiters);
        assert_eq!(m.drop_unsent(), vec![(1, 1, 0)], "the rest never goes");
        assert!(!m.has_waiting());
        assert_eq!(m.answered(99), vec![], "unknown ids are ignored");
    }
}
