//! On-demand key moves, coalesced: the first attempt to move a request's
//! keys joins a batch for its (source connection, target), and one MIGRATE
//! carries the keys of every request that joined the batch.
//!
//! A batch answered `+OK` or `+NOKEY` leaves its keys off the source for
//! good under that table: nothing writes to the source of a moving slot, so
//! a key, once gone from it, never comes back while the table stands. The
//! core remembers such keys ([`MovedKeys`]) and sends later commands on
//! them straight to the target, without asking the source again: a key used
//! again and again during a move (a hot key) pays the MIGRATE once. The
//! memory is bounded and forgotten whenever the config changes or a backend
//! connection of the core breaks (a source restarted from an older copy of
//! its data may hold moved keys again).
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

use std::collections::{HashMap, HashSet, VecDeque};
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

/// Most keys a core remembers as moved ([`MovedKeys`]).
pub(crate) const MOVED_KEYS_MAX: usize = 65_536;

/// Most bytes of key names a core remembers as moved; keys longer than a
/// sixteenth of it are not remembered.
pub(crate) const MOVED_KEY_BYTES_MAX: usize = 4 << 20;

/// Keys this core saw leave their source (a batch's MIGRATE answered `+OK`
/// or `+NOKEY`) under one table version: a command on them under that
/// version needs no move. Full names, never hashes: a false "moved" would
/// send a write to the target while the key is still on the source.
#[derive(Debug, Default)]
pub(crate) struct MovedKeys {
    version: u64,
    keys: HashSet<Vec<u8>>,
    bytes: usize,
}

impl MovedKeys {
    /// `key` left its source under table `version`.
    #[inline]
    pub fn contains(&self, version: u64, key: &[u8]) -> bool {
        self.version == version && !self.keys.is_empty() && self.keys.contains(key)
    }

    /// `keys` left their source under table `version` (older versions'
    /// answers are ignored; a newer version starts afresh). Full, it starts
    /// over: the keys still in use come back after one more move each.
    pub fn insert(&mut self, version: u64, keys: Vec<Vec<u8>>) {
        if version < self.version {
            return;
        }
        if version > self.version {
            self.forget();
            self.version = version;
        }
        for k in keys {
            if k.len() > MOVED_KEY_BYTES_MAX / 16 || self.keys.contains(&k) {
                continue;
            }
            if self.keys.len() >= MOVED_KEYS_MAX || self.bytes + k.len() > MOVED_KEY_BYTES_MAX {
                self.keys.clear();
                self.bytes = 0;
            }
            self.bytes += k.len();
            self.keys.insert(k);
        }
    }

    /// Forgets every key (the config changed), and the memory.
    pub fn forget(&mut self) {
        if self.keys.capacity() > 0 {
            self.keys = HashSet::new();
            self.bytes = 0;
        }
    }

    /// Keys remembered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// A batch in flight: its route, waiters, keys and the table version it
/// was sent under.
type InFlight = (Route, Vec<DeferredRef>, Vec<Vec<u8>>, u64);

/// One core's move batches.
#[derive(Debug, Default)]
pub(crate) struct MoveBatches {
    queues: HashMap<Route, Queue>,
    /// Batches in flight.
    in_flight: Slab<InFlight>,
    /// Keys known to be off their source under the current table.
    pub known: MovedKeys,
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

    /// Batch `waiters` (moving `keys`) went out on `route` under table
    /// `version`; returns its id (the Inflight's `seq`).
    pub fn sent(
        &mut self,
        route: Route,
        waiters: Vec<DeferredRef>,
        keys: Vec<Vec<u8>>,
        version: u64,
    ) -> u64 {
        let id = self.in_flight.insert((route, waiters, keys, version));
        self.queues.entry(route).or_default().sending = Some(id);
        id as u64
    }

    /// Batch `id` was answered with `reply` (or failed): its waiters. A
    /// `+OK` or `+NOKEY` puts its keys in [`MoveBatches::known`].
    pub fn answered(&mut self, id: u64, reply: &[u8]) -> Vec<DeferredRef> {
        let Some((route, waiters, keys, version)) = self.in_flight.try_remove(id as usize) else {
            return Vec::new();
        };
        if let Some(q) = self.queues.get_mut(&route) {
            if q.sending == Some(id as usize) {
                q.sending = None;
            }
        }
        if reply == b"+OK\r\n" || reply == b"+NOKEY\r\n" {
            self.known.insert(version, keys);
        }
        waiters
    }

    /// Drops every batch not yet sent (the config changed), and forgets the
    /// keys known moved; the dropped batches' waiters.
    pub fn drop_unsent(&mut self) -> Vec<DeferredRef> {
        self.known.forget();
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
        let id = m.sent(r, b.waiters, b.keys, 7);
        m.join(route(), keys(2, "b"), (2, 1, 0));
        m.join(route(), keys(1, "c"), (3, 1, 5));
        assert!(m.ready().is_empty(), "one in flight");
        assert!(m.has_waiting());
        assert_eq!(m.answered(id, b"+NOKEY\r\n"), vec![(1, 1, 0)]);
        assert!(m.known.contains(7, b"a0"), "off the source under table 7");
        assert!(!m.known.contains(8, b"a0"), "known under table 7 only");
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
        let id = m.sent(r, b.waiters, b.keys, 3);
        assert_eq!(m.drop_unsent(), vec![(1, 1, 0)], "the rest never goes");
        assert!(!m.has_waiting());
        assert_eq!(
            m.answered(99, b"+OK\r\n"),
            vec![],
            "unknown ids are ignored"
        );
        assert_eq!(
            m.answered(id, b"-IOERR error or timeout\r\n"),
            vec![(1, 1, 0)]
        );
        assert_eq!(m.known.len(), 0, "a failed MIGRATE proves nothing");
    }

    #[test]
    fn known_moved_keys_follow_the_table_and_stay_bounded() {
        let mut k = MovedKeys::default();
        k.insert(5, vec![b"a".to_vec(), b"b".to_vec(), b"a".to_vec()]);
        assert_eq!(k.len(), 2);
        assert!(k.contains(5, b"a") && k.contains(5, b"b") && !k.contains(5, b"c"));
        k.insert(4, vec![b"c".to_vec()]);
        assert!(
            !k.contains(5, b"c"),
            "an answer under an older table is ignored"
        );
        k.insert(6, vec![b"c".to_vec()]);
        assert!(
            !k.contains(6, b"a") && k.contains(6, b"c"),
            "a newer table starts afresh"
        );
        k.forget();
        assert_eq!(k.len(), 0);
        // Bounded in count: full, it starts over.
        k.insert(
            6,
            (0..MOVED_KEYS_MAX + 10)
                .map(|i| i.to_string().into_bytes())
                .collect(),
        );
        assert_eq!(k.len(), 10, "started over after {MOVED_KEYS_MAX} keys");
        assert!(k.contains(6, (MOVED_KEYS_MAX + 9).to_string().as_bytes()));
        // In bytes: a very long key is not remembered, and the total stays
        // within the bound.
        k.forget();
        k.insert(6, vec![vec![b'x'; MOVED_KEY_BYTES_MAX / 16 + 1]]);
        assert_eq!(k.len(), 0);
        let big = MOVED_KEY_BYTES_MAX / 16;
        k.insert(6, (0..17u8).map(|i| vec![i; big]).collect());
        assert_eq!(k.len(), 1, "the 17th key did not fit: started over");
        assert!(k.bytes <= MOVED_KEY_BYTES_MAX);
    }
}
