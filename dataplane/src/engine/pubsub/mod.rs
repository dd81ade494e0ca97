//! Pub/Sub: `SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`, their `UN…` forms,
//! `PUBLISH`/`SPUBLISH` and the RESP2 subscribed-mode rules.
//!
//! Ten thousand subscribers on one core must not need ten thousand backend
//! connections, so a core has at most ONE subscriber connection per backend
//! pool (a group's master): a `BackendConn` in the same slab as the
//! request connections (the transports drive it like any other), marked
//! `BackendConn::subscriber` so that its input is not matched against
//! `inflight` but read as a stream of push arrays
//! (`Worker::subscriber_input`).
//!
//! - A channel and a shard channel belong to the group owning their slot
//!   (`channel_group`; during a migration, the source); a pattern is
//!   subscribed on every group's master. `PUBLISH`/`SPUBLISH` go to the
//!   channel's group like a one-key command (`Ctx::publish`).
//! - Per core, `PubSub` maps each channel, pattern and shard channel to
//!   its subscribed clients; the core subscribes it on the backend when
//!   its first client subscribes and unsubscribes it when the last leaves.
//! - Per client, `ClientSubs` (behind an `Option<Box<…>>` in
//!   `ClientState`: a client that never subscribes pays one pointer, and
//!   `subs.is_some()` is the subscribed-mode test).
//! - The client's confirmations are written by keyway, in Redis's format,
//!   with the client's own counts, into its reply slot; the backend's
//!   confirmations are read and dropped. When the command names a
//!   subscription the core did not have confirmed yet (its first client),
//!   the client's confirmations wait (`Pending`) until the backend has
//!   confirmed it (on every pool, for a pattern), so that, as with Redis, a
//!   message published after the client read its confirmation reaches it.
//!   A subscriber connection that fails (or a wait longer than
//!   `backend.timeout`) lets them go. Each `message`/`pmessage`/`smessage` read from the
//!   backend is appended, as the backend's raw bytes (already the exact
//!   RESP2 bytes Redis sends a subscriber), to every subscribed client's
//!   output through `ClientState::reply`, so it stays behind replies the
//!   client is owed; the output limits apply as to any reply.
//! - A subscriber connection that fails goes down with the usual backoff;
//!   when it is idle again `Ctx::pubsub_tick` reconnects it and writes
//!   every subscription the core has on that pool (`PubSub::resync`).
//!   Clients stay subscribed; messages published meanwhile are lost.
//! - A new table (`Ctx::apply` → `PubSub::follow`) moves channels whose
//!   slot changed owner (unsubscribe on the old pool, subscribe on the new
//!   one), subscribes the patterns on new groups, and closes the subscriber
//!   connections of pools no group uses any more.
//!
//! See README, "Pub/Sub", for what differs from one Redis server (the
//! counts Redis gives for keyway's shared subscriptions).

use std::collections::HashMap;

use keyway_protocol::resp::{encode, Args};

use super::backend::{BackendConn, Link};
use super::backends::Backends;
use super::client::ClientState;
use super::pending::Seq;
use super::replies::Refusal;
use super::route::Req;
use super::{Ctx, Wake};
use crate::routing::{GroupIndex, RoutingTable, SlotRoute};

mod input;

/// What a subscription names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A channel (`SUBSCRIBE`).
    Channel = 0,
    /// A glob pattern of channels (`PSUBSCRIBE`).
    Pattern = 1,
    /// A shard channel (`SSUBSCRIBE`).
    Shard = 2,
}

const KINDS: [Kind; 3] = [Kind::Channel, Kind::Pattern, Kind::Shard];

impl Kind {
    /// The command that subscribes, as sent to a backend.
    fn subscribe_cmd(self) -> &'static [u8] {
        [&b"SUBSCRIBE"[..], b"PSUBSCRIBE", b"SSUBSCRIBE"][self as usize]
    }

    /// The command that unsubscribes, as sent to a backend.
    fn unsubscribe_cmd(self) -> &'static [u8] {
        [&b"UNSUBSCRIBE"[..], b"PUNSUBSCRIBE", b"SUNSUBSCRIBE"][self as usize]
    }

    /// The first element of a subscribe confirmation.
    fn subscribed(self) -> &'static [u8] {
        [&b"subscribe"[..], b"psubscribe", b"ssubscribe"][self as usize]
    }

    /// The first element of an unsubscribe confirmation.
    fn unsubscribed(self) -> &'static [u8] {
        [&b"unsubscribe"[..], b"punsubscribe", b"sunsubscribe"][self as usize]
    }
}

/// A Pub/Sub command keyway serves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubCmd {
    /// `SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`.
    Subscribe(Kind),
    /// `UNSUBSCRIBE`, `PUNSUBSCRIBE`, `SUNSUBSCRIBE`.
    Unsubscribe(Kind),
    /// `PUBLISH` and `SPUBLISH`: routed by the channel.
    Publish,
    /// `PUBSUB HELP`.
    Help,
}

/// One client's subscriptions, by [`Kind`], each with its order of
/// subscription (an `UNSUBSCRIBE` of everything answers in that order).
#[derive(Debug, Default)]
pub(crate) struct ClientSubs {
    names: [HashMap<Box<[u8]>, u64>; 3],
    next: u64,
}

impl ClientSubs {
    /// How many names of `kind` it subscribes (`CLIENT LIST`'s `sub=`,
    /// `psub=`, `ssub=`).
    pub(crate) fn of_kind(&self, kind: Kind) -> usize {
        self.names[kind as usize].len()
    }

    fn has(&self, kind: Kind, name: &[u8]) -> bool {
        self.names[kind as usize].contains_key(name)
    }

    /// Whether `allowed(name, is_pattern)` holds for every subscription.
    pub(crate) fn all_allowed(&self, allowed: impl Fn(&[u8], bool) -> bool) -> bool {
        KINDS.into_iter().all(|k| {
            self.names[k as usize]
                .keys()
                .all(|n| allowed(n, k == Kind::Pattern))
        })
    }

    fn add(&mut self, kind: Kind, name: &[u8]) {
        self.next += 1;
        self.names[kind as usize].insert(name.into(), self.next);
    }

    fn remove(&mut self, kind: Kind, name: &[u8]) -> bool {
        self.names[kind as usize].remove(name).is_some()
    }

    /// Takes every name of `kind`, in the order they were subscribed.
    fn take(&mut self, kind: Kind) -> Vec<Box<[u8]>> {
        let mut all: Vec<(Box<[u8]>, u64)> = std::mem::take(&mut self.names[kind as usize])
            .into_iter()
            .collect();
        all.sort_unstable_by_key(|&(_, seq)| seq);
        all.into_iter().map(|(n, _)| n).collect()
    }

    /// The count Redis puts in a confirmation: channels and patterns
    /// together, shard channels on their own.
    fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.names[2].len(),
            _ => self.names[0].len() + self.names[1].len(),
        }
    }

    fn total(&self) -> usize {
        self.names.iter().map(HashMap::len).sum()
    }
}

/// A channel, pattern or shard channel some of the core's clients
/// subscribe.
#[derive(Debug, Default)]
struct Entry {
    /// The clients (index, generation), in no particular order.
    clients: Vec<(u32, u32)>,
    /// Backend confirmations of its subscription still expected (one per
    /// pool it was sent to); while any is, new subscribers' confirmations
    /// wait (`waiters`).
    unconfirmed: u32,
    /// The [`Pending`] confirmations that wait for this one.
    waiters: Vec<u64>,
    /// The pool it is subscribed on (channels and shard channels; `None`
    /// for a pattern, which is on every pool of `PubSub::pattern_pools`, or
    /// for a channel whose slot has no group).
    pool: Option<usize>,
}

/// One core's Pub/Sub state; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct PubSub {
    /// Per [`Kind`], every name the core's clients subscribe.
    names: [HashMap<Box<[u8]>, Entry>; 3],
    /// The subscriber connection of each pool (pool index → slab index).
    conns: HashMap<usize, usize>,
    /// The pools patterns are subscribed on: every group's master.
    pattern_pools: Vec<usize>,
    /// Clients' confirmations waiting for the backend's, by id.
    pending: HashMap<u64, Pending>,
    next_pending: u64,
    /// Pending confirmations one of whose waits ended where no client
    /// could be written to (one entry per wait ended).
    ready: Vec<u64>,
}

/// A client's (un)subscribe confirmations, written by keyway, waiting in
/// its reply slot until the backend has confirmed every new subscription
/// they name: then a message published after the client read its
/// confirmation reaches it, as with Redis.
#[derive(Debug)]
struct Pending {
    client: (u32, u32),
    seq: Seq,
    reply: Vec<u8>,
    /// Backend confirmations still awaited.
    waiting: usize,
    since_ms: u64,
}

/// The group a channel belongs to: its slot's owner (the source while it
/// migrates); `None` if the slot has no group.
pub(crate) fn channel_group(table: &RoutingTable, channel: &[u8]) -> Option<GroupIndex> {
    match table.route(table.slot_of(channel)) {
        SlotRoute::Stable(g) | SlotRoute::Moving { from: g, .. } => Some(g),
        SlotRoute::Blocked { from: g, .. } => Some(g),
        SlotRoute::Unassigned => None,
    }
}

/// `*3 $<kind word> $<name> :<count>`, or a nil name; a push (`>3`,
/// nil `_`) for a RESP3 client, as Redis's `addReplyPubsub*`.
fn confirmation(o: &mut Vec<u8>, word: &[u8], name: Option<&[u8]>, count: usize, resp3: bool) {
    encode::push_header(o, 3, resp3);
    encode::bulk(o, word);
    match name {
        Some(n) => encode::bulk(o, n),
        None => encode::null_of(o, resp3),
    }
    encode::integer(o, count as i64);
}

/// Writes `cmd name` as a request.
fn request(o: &mut Vec<u8>, cmd: &[u8], name: &[u8]) {
    encode::array_header(o, 2);
    encode::bulk(o, cmd);
    encode::bulk(o, name);
}

impl PubSub {
    /// Whether the core subscribes anything (nothing to follow or resync
    /// otherwise).
    fn is_empty(&self) -> bool {
        self.names.iter().all(HashMap::is_empty) && self.conns.is_empty()
    }

    /// Subscriber connections in use: (pool, slab index).
    #[cfg(test)]
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// How many of the core's clients subscribe `name`.
    #[cfg(test)]
    pub fn subscribers(&self, kind: Kind, name: &[u8]) -> usize {
        self.names[kind as usize]
            .get(name)
            .map_or(0, |e| e.clients.len())
    }

    /// Whether pool `p` should have anything subscribed.
    fn wanted_on(&self, p: usize) -> bool {
        (self.pattern_pools.contains(&p) && !self.names[1].is_empty())
            || self.names[0].values().any(|e| e.pool == Some(p))
            || self.names[2].values().any(|e| e.pool == Some(p))
    }

    /// Writes every subscription the core has on pool `p` to its
    /// subscriber connation `b` (just opened).
    fn write_all(&self, p: usize, conn: &mut BackendConn) {
        let out = conn.out.buf_mut();
        for kind in KINDS {
            for (name, e) in &self.names[kind as usize] {
                let here = match kind {
                    Kind::Pattern => self.pattern_pools.contains(&p),
                    _ => e.pool == Some(p),
                };
                if here {
                    request(out, kind.subscribe_cmd(), name);
                }
            }
        }
    }

    /// Pool `p`'s subscriber connection, created (not connected) if new.
    fn conn_of(&mut self, backends: &mut Backends, p: usize) -> usize {
        *self.conns.entry(p).or_insert_with(|| {
            let mut conn = BackendConn::new(p);
            conn.subscriber = true;
            backends.conns.insert(conn)
        })
    }

    /// Connects pool `p`'s subscriber connection if it is idle and wanted,
    /// writing every subscription the core has there.
    fn resync(&mut self, backends: &mut Backends, p: usize, now_ms: u64) {
        let Some(&b) = self.conns.get(&p) else {
            return;
        };
        if matches!(backends.conns[b].link, Link::Idle)
            && self.wanted_on(p)
            && backends.open(b, now_ms)
        {
            self.write_all(p, &mut backends.conns[b]);
        }
    }

    /// Sends `cmd name` on pool `p`'s subscriber connection: appended if it
    /// is connecting or up; if it is idle, it is opened with everything
    /// the core has there (which the maps already say); if it is down, the
    /// reconnection will.
    ///
    /// True if the command will reach the backend (and be confirmed).
    fn send(&mut self, links: &mut Links<'_>, p: usize, cmd: &[u8], name: &[u8]) -> bool {
        let b = self.conn_of(links.backends, p);
        let conn = &mut links.backends.conns[b];
        match conn.link {
            Link::Idle => {}
            Link::Down { .. } => return false,
            Link::Connecting { .. } => {
                request(conn.out.buf_mut(), cmd, name);
                return true;
            }
            Link::Up => {
                request(conn.out.buf_mut(), cmd, name);
                links.wake.backend(conn, b);
                return true;
            }
        }
        self.resync(links.backends, p, links.now_ms);
        links.backends.conns[b].has_socket()
    }

    /// Client `me` subscribes `name`: the core subscribes it on the backend
    /// if it is the first.
    fn join(&mut self, links: &mut Links<'_>, kind: Kind, name: &[u8], me: (u32, u32)) {
        if let Some(e) = self.names[kind as usize].get_mut(name) {
            e.clients.push(me);
            return;
        }
        let pool = match kind {
            Kind::Pattern => None,
            _ => channel_group(links.table, name).map(|g| links.backends.master_pool(g)),
        };
        self.names[kind as usize].insert(
            name.into(),
            Entry {
                clients: vec![me],
                pool,
                ..Entry::default()
            },
        );
        let sent = self.subscribe_on(links, kind, name, pool);
        if let Some(e) = self.names[kind as usize].get_mut(name) {
            e.unconfirmed = sent;
        }
    }

    /// Client `me` leaves `name`: the core unsubscribes it on the backend
    /// if it was the last.
    fn leave(&mut self, links: &mut Links<'_>, kind: Kind, name: &[u8], me: (u32, u32)) {
        let map = &mut self.names[kind as usize];
        let Some(e) = map.get_mut(name) else {
            return;
        };
        if let Some(i) = e.clients.iter().position(|&c| c == me) {
            e.clients.swap_remove(i);
        }
        if e.clients.is_empty() {
            let pool = e.pool;
            if let Some(e) = map.remove(name) {
                // Nothing to wait for any more.
                self.ready.extend(e.waiters);
            }
            let pools = match kind {
                Kind::Pattern => self.pattern_pools.clone(),
                _ => pool.into_iter().collect(),
            };
            for p in pools {
                self.send(links, p, kind.unsubscribe_cmd(), name);
            }
        }
    }

    /// Subscribes `name` on the backend: a pattern on every pattern pool,
    /// a channel on `pool`. Returns how many backends will confirm it.
    fn subscribe_on(
        &mut self,
        links: &mut Links<'_>,
        kind: Kind,
        name: &[u8],
        pool: Option<usize>,
    ) -> u32 {
        let pools = match kind {
            Kind::Pattern => self.pattern_pools.clone(),
            _ => pool.into_iter().collect(),
        };
        let mut sent = 0;
        for p in pools {
            sent += u32::from(self.send(links, p, kind.subscribe_cmd(), name));
        }
        sent
    }

    /// A client's confirmations `reply`, in its reply slot `seq`, wait for
    /// the backend's confirmations of `names` (those still unconfirmed).
    fn wait(
        &mut self,
        kind: Kind,
        names: &[&[u8]],
        client: (u32, u32),
        seq: Seq,
        reply: Vec<u8>,
        now_ms: u64,
    ) {
        self.next_pending += 1;
        let id = self.next_pending;
        let mut waiting = 0;
        for name in names {
            if let Some(e) = self.names[kind as usize].get_mut(*name) {
                if e.unconfirmed > 0 {
                    e.waiters.push(id);
                    waiting += 1;
                }
            }
        }
        self.pending.insert(
            id,
            Pending {
                client,
                seq,
                reply,
                waiting: waiting.max(1),
                since_ms: now_ms,
            },
        );
        if waiting == 0 {
            self.ready.push(id);
        }
    }

    /// Whether any of `names` awaits its backend confirmation.
    fn unconfirmed(&self, kind: Kind, names: &[&[u8]]) -> bool {
        names.iter().any(|n| {
            self.names[kind as usize]
                .get(*n)
                .is_some_and(|e| e.unconfirmed > 0)
        })
    }

    /// A backend confirmed the subscription of `name`: the confirmations
    /// waiting only for it are ready.
    fn confirmed(&mut self, kind: Kind, name: &[u8]) {
        let Some(e) = self.names[kind as usize].get_mut(name) else {
            return;
        };
        if e.unconfirmed == 0 {
            return;
        }
        e.unconfirmed -= 1;
        if e.unconfirmed == 0 {
            self.ready.append(&mut e.waiters);
        }
    }

    /// Pool `p`'s subscriber connection failed or closed: no confirmation
    /// will come from it; whatever waited for one goes on.
    /// (`patterns`: patterns waited for it too.)
    fn stop_waiting_on(&mut self, p: usize, patterns: bool) {
        for kind in KINDS {
            for e in self.names[kind as usize].values_mut() {
                let here = match kind {
                    Kind::Pattern => patterns,
                    _ => e.pool == Some(p),
                };
                if here && e.unconfirmed > 0 {
                    e.unconfirmed = 0;
                    self.ready.append(&mut e.waiters);
                }
            }
        }
    }

    /// A client that goes leaves everything it subscribed.
    pub fn leave_all(&mut self, links: &mut Links<'_>, subs: &ClientSubs, me: (u32, u32)) {
        for kind in KINDS {
            for name in subs.names[kind as usize].keys() {
                self.leave(links, kind, name, me);
            }
        }
    }

    /// A new table: channels whose slot changed owner move, patterns follow
    /// added and removed groups, subscriber connections of pools no group
    /// uses are closed.
    pub fn follow(&mut self, links: &mut Links<'_>) {
        let mut pools: Vec<usize> = (0..links.table.groups().len())
            .map(|g| links.backends.master_pool(g as GroupIndex))
            .collect();
        pools.sort_unstable();
        pools.dedup();
        if self.is_empty() {
            self.pattern_pools = pools;
            return;
        }
        let old_pools = std::mem::replace(&mut self.pattern_pools, pools.clone());
        // Patterns: on pools new to the table.
        let patterns: Vec<Box<[u8]>> = self.names[1].keys().cloned().collect();
        for &p in pools.iter().filter(|p| !old_pools.contains(p)) {
            for name in &patterns {
                self.send(links, p, Kind::Pattern.subscribe_cmd(), name);
            }
        }
        // Channels and shard channels whose owner changed.
        for kind in [Kind::Channel, Kind::Shard] {
            let mut moved = Vec::new();
            for (name, e) in self.names[kind as usize].iter_mut() {
                let now = channel_group(links.table, name).map(|g| links.backends.master_pool(g));
                if now != e.pool {
                    moved.push((name.clone(), e.pool, now));
                    e.pool = now;
                }
            }
            for (name, old, new) in moved {
                if let Some(p) = old.filter(|p| pools.contains(p)) {
                    self.send(links, p, kind.unsubscribe_cmd(), &name);
                }
                let sent = new.is_some_and(|p| self.send(links, p, kind.subscribe_cmd(), &name));
                if let Some(e) = self.names[kind as usize].get_mut(&name) {
                    // What waited for the old owner's confirmation waits
                    // for the new one's.
                    e.unconfirmed = u32::from(sent);
                    if !sent {
                        self.ready.append(&mut e.waiters);
                    }
                }
            }
        }
        // The subscriber connections of pools no group uses any more (a
        // master replaced) are closed, with what they had.
        let gone: Vec<usize> = self
            .conns
            .keys()
            .copied()
            .filter(|p| !pools.contains(p))
            .collect();
        for p in gone {
            self.stop_waiting_on(p, true);
            if let Some(b) = self.conns.remove(&p) {
                close(links, b);
            }
        }
    }
}

/// Closes and frees subscriber connection `b`: its id is no longer live,
/// so the transport closes its socket (a later slot at that index has
/// another generation).
fn close(links: &mut Links<'_>, b: usize) {
    let had_socket = links.backends.conns[b].has_socket();
    links.backends.conns.remove(b);
    if had_socket {
        links.wake.backends.push(b as u32);
    }
}

/// What subscribing and unsubscribing touch besides the maps.
pub(crate) struct Links<'a> {
    pub backends: &'a mut Backends,
    pub wake: &'a mut Wake,
    pub table: &'a RoutingTable,
    pub now_ms: u64,
}

impl Ctx {
    /// The parts of the context [`PubSub`] writes to, and the state itself.
    fn pubsub_parts(&mut self) -> (&mut PubSub, Links<'_>) {
        (
            &mut self.pubsub,
            Links {
                backends: &mut self.backends,
                wake: &mut self.wake,
                table: &self.cfg.table,
                now_ms: self.now_ms,
            },
        )
    }

    /// Serves a Pub/Sub command (arity checked).
    pub(super) fn pubsub(&mut self, st: &mut ClientState, cmd: PubSubCmd, req: Req<'_>) {
        self.stats.requests_local += u64::from(!matches!(cmd, PubSubCmd::Publish));
        match cmd {
            PubSubCmd::Subscribe(kind) => self.subscribe(st, kind, req.args),
            PubSubCmd::Unsubscribe(kind) => self.unsubscribe(st, kind, req.args),
            PubSubCmd::Publish => self.publish(st, req),
            PubSubCmd::Help => st.reply(|o| {
                encode::array_header(o, HELP.len());
                for l in HELP {
                    encode::simple(o, l.as_bytes());
                }
            }),
        }
    }

    fn subscribe(&mut self, st: &mut ClientState, kind: Kind, args: &Args<'_>) {
        let max = self.cfg.limits.max_subscriptions;
        let had = st.subs.as_ref().map_or(0, |s| s.total());
        let mut new = std::collections::HashSet::new();
        for a in args.iter().skip(1) {
            if !st.subs.as_ref().is_some_and(|s| s.has(kind, a)) {
                new.insert(a);
            }
        }
        if had + new.len() > max {
            self.stats.errors_refused += 1;
            return st.refuse(&Refusal::TooManySubscriptions { max });
        }
        let me = (st.me.idx, st.me.gen);
        let now = self.now_ms;
        let (pubsub, mut links) = self.pubsub_parts();
        let mut reply = Vec::new();
        for name in args.iter().skip(1) {
            let subs = st.subs.get_or_insert_with(Default::default);
            if !subs.has(kind, name) {
                subs.add(kind, name);
                pubsub.join(&mut links, kind, name, me);
            }
            let count = subs.count(kind);
            confirmation(&mut reply, kind.subscribed(), Some(name), count, st.resp3);
        }
        // The confirmations go once the backend has confirmed every new
        // subscription they name (at once if the core had them already).
        let new: Vec<&[u8]> = new.into_iter().collect();
        if pubsub.unconfirmed(kind, &new) {
            let seq = st.queue.push_waiting();
            pubsub.wait(kind, &new, me, seq, reply, now);
        } else {
            st.reply(|o| o.extend_from_slice(&reply));
        }
    }

    fn unsubscribe(&mut self, st: &mut ClientState, kind: Kind, args: &Args<'_>) {
        let me = (st.me.idx, st.me.gen);
        let (pubsub, mut links) = self.pubsub_parts();
        if args.len() == 1 {
            let names = st.subs.as_mut().map(|s| s.take(kind)).unwrap_or_default();
            if names.is_empty() {
                let count = st.subs.as_ref().map_or(0, |s| s.count(kind));
                let r3 = st.resp3;
                st.reply(|o| confirmation(o, kind.unsubscribed(), None, count, r3));
            }
            let mut left = names.len();
            for name in &names {
                pubsub.leave(&mut links, kind, name, me);
                left -= 1;
                let count = st.subs.as_ref().map_or(0, |s| s.count(kind)) + left;
                let r3 = st.resp3;
                st.reply(|o| confirmation(o, kind.unsubscribed(), Some(name), count, r3));
            }
        } else {
            for name in args.iter().skip(1) {
                if st.subs.as_mut().is_some_and(|s| s.remove(kind, name)) {
                    pubsub.leave(&mut links, kind, name, me);
                }
                let count = st.subs.as_ref().map_or(0, |s| s.count(kind));
                let r3 = st.resp3;
                st.reply(|o| confirmation(o, kind.unsubscribed(), Some(name), count, r3));
            }
        }
        if st.subs.as_ref().is_some_and(|s| s.total() == 0) {
            st.subs = None;
        }
    }

    /// `PUBLISH`/`SPUBLISH`: to the channel's group, as a one-key command
    /// would go (held while its slot is blocked). The channel is routed
    /// explicitly: `PUBLISH`'s key specs do not name it.
    fn publish(&mut self, st: &mut ClientState, req: Req<'_>) {
        let place = req.place;
        if let Some(reason) = self.cfg.fence.clone() {
            return self.refuse(st, &Refusal::Fenced { reason: &reason }, place);
        }
        if self.memory.over && place.at.is_none() {
            self.stats.requests_oom += 1;
            let max = self.cfg.limits.max_memory;
            return self.refuse(st, &Refusal::Oom { max }, place);
        }
        if place.at.is_none() && st.queue.has_kept() {
            return self
                .sched
                .keep_behind(st, req, self.now_ms, &mut self.stats);
        }
        let table = &self.cfg.table;
        let slot = table.slot_of(req.args.get(1));
        match table.route(slot) {
            SlotRoute::Stable(g) | SlotRoute::Moving { from: g, .. } => {
                self.forward(st, g, false, req)
            }
            SlotRoute::Blocked { .. } => self.sched.hold(st, req, self.now_ms, &mut self.stats),
            SlotRoute::Unassigned => self.refuse(st, &Refusal::ClusterDown { slot }, place),
        }
    }

    /// A new request from a subscribed client (RESP2 subscribed mode):
    /// true if it was answered here (`PING`, or a refused command); false
    /// if it goes on (the (un)subscribe commands, `QUIT`, `RESET` — which
    /// leaves every subscription first).
    #[inline(never)]
    pub(super) fn subscribed_mode(
        &mut self,
        st: &mut ClientState,
        spec: &keyway_protocol::command::CommandSpec,
        args: &Args<'_>,
    ) -> bool {
        match spec.name {
            "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe" | "ssubscribe"
            | "sunsubscribe" | "quit" => false,
            "reset" => {
                self.leave_subscriptions(st);
                false
            }
            "ping" if args.len() <= 2 => {
                self.stats.requests_local += 1;
                let msg = args.try_get(1).unwrap_or(b"");
                st.reply(|o| {
                    encode::array_header(o, 2);
                    encode::bulk(o, b"pong");
                    encode::bulk(o, msg);
                });
                true
            }
            // `PING a b`: Redis's arity error.
            "ping" => false,
            name => {
                self.stats.requests_local += 1;
                self.stats.errors_refused += 1;
                st.refuse(&Refusal::SubscribedMode { command: name });
                true
            }
        }
    }

    /// The client leaves every subscription, without replies (`RESET`, a
    /// client that goes).
    pub(super) fn leave_subscriptions(&mut self, st: &mut ClientState) {
        let Some(subs) = st.subs.take() else {
            return;
        };
        let me = (st.me.idx, st.me.gen);
        let (pubsub, mut links) = self.pubsub_parts();
        pubsub.leave_all(&mut links, &subs, me);
    }

    /// After a new table (see [`PubSub::follow`]).
    pub(super) fn pubsub_follow(&mut self) {
        let (pubsub, mut links) = self.pubsub_parts();
        pubsub.follow(&mut links);
    }

    /// Every tick: reconnects subscriber connections that are idle again
    /// after a failure, with everything the core subscribes there.
    fn pubsub_reconnect(&mut self) {
        let pools: Vec<usize> = self.pubsub.conns.keys().copied().collect();
        let (pubsub, links) = self.pubsub_parts();
        for p in pools {
            pubsub.resync(links.backends, p, links.now_ms);
        }
    }
}

/// `PUBSUB HELP`, as Redis 7.0 words it.
const HELP: [&str; 14] = [
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "SHARDCHANNELS [<pattern>]",
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    "SHARDNUMSUB [<shardchannel> ...]",
    "    Return the number of subscribers for the specified shard level channel(s)",
    "HELP",
    "    Prints this help.",
];
