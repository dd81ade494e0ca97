//! Backend connections inside a worker. Each Redis server a core talks to has a
//! [`Pool`] of `backend.connections` pipelined connections shared by all of the
//! core's clients; a [`BackendConn`] is one of them: its write buffer (requests
//! of many clients, flushed in one write), its read buffer and reply framer,
//! and the FIFO of requests awaiting replies.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use keyway_protocol::resp::ReplyFramer;

use super::outbuf::OutBuf;
use super::pending::Seq;
use crate::tls::TlsConnect;

/// Identifies one connection attempt: slab index plus generation. Every attempt
/// gets a generation never used before in its worker, so a driver task holding
/// an old id learns its connection is no longer wanted, even if the slot has
/// since been reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendId {
    pub(crate) idx: u32,
    pub(crate) gen: u32,
}

/// Who awaits a backend reply, and what the reply is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Request `seq` of a client (slab index and generation); `purpose`
    /// says which of its replies this is.
    Client {
        idx: u32,
        gen: u32,
        seq: Seq,
        purpose: Purpose,
    },
    /// The MIGRATE of move batch `id` (see [`super::move_batch`]): its reply
    /// stands for each of the batch's requests' moves.
    MoveBatch { id: u64 },
    /// The PING that tells whether a failing backend is up again: its reply
    /// only tells that the backend answers.
    Probe,
    /// A command whose reply nobody awaits: the `SCRIPT LOAD` before a
    /// retried `EVALSHA`, the undo of a partial `FUNCTION LOAD` (see
    /// [`super::scripts`]).
    Discard,
    /// keyway's own bookkeeping on a dedicated connection (see
    /// [`super::dedicated`]).
    Internal(Internal),
}

/// What a reply to keyway's own request on a dedicated connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Internal {
    /// `CLIENT ID` sent first on a new dedicated connection: the id
    /// `CLIENT UNBLOCK` names it by.
    ConnId,
    /// A blocking command whose client left: its reply, if it carries
    /// elements, is pushed back where it came from (see
    /// [`super::blocking::Restore`]).
    Orphan(super::blocking::Restore),
    /// A push-back of elements an orphaned blocking command popped: an
    /// error is logged.
    Restored,
    /// A reply nobody waits for (`UNWATCH` on release, a leaving client's
    /// other replies on its dedicated connection).
    Ignore,
    /// `CLIENT UNBLOCK` for dedicated connection `b` (generation `gen`):
    /// it stays out of the free list until this is answered.
    Unblocked { b: u32, gen: u32 },
    /// `HELLO 3` (or `HELLO 2`) switching the connection's protocol for
    /// RESP3 clients (see [`super::resp3`]): an error is logged.
    Hello,
    /// `AUTH` as the pool's client login (first on every connection, and
    /// after a maintenance command) or, `admin`, as its admin login (just
    /// before one; see [`super::backend_acl`]): an error fails the
    /// connection.
    Auth { admin: bool },
}

/// What a client's backend reply is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The reply to a request forwarded whole.
    Whole,
    /// Part `i` of a split or fanned-out request (see [`super::split`]).
    Part(u16),
    /// A move for a kept-back request: a MIGRATE of several keys, or the
    /// `DEL` of copies found on both sides (see [`super::moves`]).
    Move,
    /// The MIGRATE of key `i` of the kept-back request's
    /// [`Deferred::single`](super::pending::Deferred::single).
    MoveKey(u16),
    /// An `EVALSHA` of a script keyway knows, forwarded whole: a `-NOSCRIPT`
    /// reply loads the script and sends it again (see [`super::scripts`]).
    Script,
    /// A reply the client does not see: `MULTI` and the `+QUEUED` of each
    /// command of a transaction sent at `EXEC` (the client saw keyway's own
    /// `+QUEUED`; `EXEC`'s reply, which follows, is its answer).
    Skip,
}

/// Hand-offs a connection remembers (see [`BackendConn::stamp_handed`]).
pub const MAX_HANDOFFS: usize = 1024;

/// A request awaiting its reply on a backend connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inflight {
    pub owner: Owner,
    /// The table version the request was routed under.
    pub version: u64,
    pub sent_ms: u64,
    /// Where the request's bytes end in the connection's output stream
    /// ([`OutBuf::end_offset`] once written): its reply cannot come before
    /// the transport has been handed that many bytes.
    pub end: u64,
}

/// Connection state.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    /// No socket; the next request starts a connection.
    Idle,
    /// A driver task is connecting; requests queue in the write buffer.
    Connecting { since_ms: u64 },
    /// Connected.
    Up,
    /// Failed; requests get an error until `until_ms`, then the link is idle.
    Down { until_ms: u64, reason: Arc<str> },
}

/// One pipelined connection to a backend.
#[derive(Debug)]
pub(crate) struct BackendConn {
    pub gen: u32,
    pub pool: usize,
    pub link: Link,
    /// Next wait after a failure; doubles up to `backend.max_backoff`.
    pub backoff_ms: u64,
    pub out: OutBuf,
    pub inbuf: Vec<u8>,
    pub framer: ReplyFramer,
    pub inflight: VecDeque<Inflight>,
    /// (stream offset handed, clock then) of the recent writes, oldest
    /// first (see [`BackendConn::stamp_handed`]).
    pub handoffs: VecDeque<(u64, u64)>,
    pub dirty: bool,
    /// Bytes of an oversized reply read and dropped so far (0: none is being
    /// dropped); its request gets an error once it has all been read.
    pub skipped: u64,
    /// Clients (index, generation) not read from until this connection's
    /// write buffer drains below half of `backend.write_buffer_limit`.
    pub waiters: Vec<(u32, u32)>,
    /// Set on a connection dedicated to one client at a time (a `WATCH`,
    /// a blocking command; see [`super::dedicated`]); `None` on the shared,
    /// pipelined connections of a pool.
    pub dedicated: Option<Box<super::dedicated::Dedicated>>,
    /// A Pub/Sub subscriber connection ([`super::pubsub`]): its input is a
    /// stream of push arrays fanned out to subscribed clients, never
    /// matched against `inflight`.
    pub subscriber: bool,
    /// A `MONITOR` connection ([`super::monitor`]): its input is a stream of
    /// monitor lines for one client, never matched against `inflight` once
    /// `MONITOR` is confirmed.
    pub monitor: Option<super::monitor::MonitorConn>,
    /// The connection speaks RESP3 (`HELLO 3` is its first request; see
    /// [`super::resp3`]): it serves RESP3 clients only, whose replies then
    /// pass through unchanged.
    pub resp3: bool,
    /// The backend refused an `AUTH` of keyway's (`admin`: the admin
    /// login's), with this error: the connection fails with it.
    pub auth_refused: Option<(bool, Box<str>)>,
}

/// First wait after a backend failure.
pub(crate) const MIN_BACKOFF_MS: u64 = 50;

impl BackendConn {
    pub fn new(pool: usize) -> BackendConn {
        BackendConn {
            gen: 0,
            pool,
            link: Link::Idle,
            backoff_ms: MIN_BACKOFF_MS,
            out: OutBuf::new(64 << 10),
            inbuf: Vec::new(),
            framer: ReplyFramer::new(),
            inflight: VecDeque::new(),
            handoffs: VecDeque::new(),
            dirty: false,
            skipped: 0,
            waiters: Vec::new(),
            dedicated: None,
            subscriber: false,
            monitor: None,
            resp3: false,
            auth_refused: None,
        }
    }

    /// Puts keyway's own request `bytes` (its reply for `what`) ahead of
    /// everything queued on this connection, which is starting: none of
    /// its requests has been handed to a transport yet.
    pub fn prepend_internal(&mut self, bytes: &[u8], what: Internal, now_ms: u64) {
        let n = bytes.len() as u64;
        self.out.prepend(bytes);
        for e in self.inflight.iter_mut() {
            e.end += n;
        }
        self.inflight.push_front(Inflight {
            owner: Owner::Internal(what),
            version: super::versions::UNCOUNTED,
            sent_ms: now_ms,
            end: self.out.handed() + n,
        });
    }

    /// Appends keyway's own request `bytes` (its reply for `what`), not
    /// counted against a table version.
    pub fn append_internal(&mut self, bytes: &[u8], what: Internal, now_ms: u64) {
        self.out.buf_mut().extend_from_slice(bytes);
        self.sent(Owner::Internal(what), super::versions::UNCOUNTED, now_ms);
    }

    /// The request whose bytes were just written to the write buffer
    /// awaits its reply, for `owner`, under table `version`.
    #[inline]
    pub fn sent(&mut self, owner: Owner, version: u64, now_ms: u64) {
        self.inflight.push_back(Inflight {
            owner,
            version,
            sent_ms: now_ms,
            end: self.out.end_offset(),
        });
    }

    /// Notes that the bytes up to the stream offset handed so far left at
    /// `now_ns` (one clock read per write, see `engine::meters`). At most
    /// [`MAX_HANDOFFS`] are kept (a connection whose replies do not come
    /// through [`handoff_of`](Self::handoff_of), a subscriber's, forgets the
    /// oldest).
    #[inline]
    pub fn stamp_handed(&mut self, now_ns: u64) {
        if self.handoffs.len() >= MAX_HANDOFFS {
            self.handoffs.pop_front();
        }
        self.handoffs.push_back((self.out.handed(), now_ns));
    }

    /// The hand-off that took the request whose bytes end at `end`: the
    /// stream offset it covered up to and when (`(end, 0)`: unknown),
    /// forgetting the hand-offs before it (replies come in request order).
    #[inline]
    pub fn handoff_of(&mut self, end: u64) -> (u64, u64) {
        while let Some(&(handed, ns)) = self.handoffs.front() {
            if handed >= end {
                return (handed, ns);
            }
            self.handoffs.pop_front();
        }
        (end, 0)
    }

    /// Whether a driver task should hold a socket for this connection.
    pub fn has_socket(&self) -> bool {
        matches!(self.link, Link::Connecting { .. } | Link::Up)
    }

    /// Forgets the socket's buffers (after a failure or close). The caller
    /// gives the connection a new generation so its old driver task stops.
    pub fn reset_io(&mut self) {
        self.out.clear();
        // The transport drops what it took once its write fails.
        let _ = self.out.transport_done();
        self.inbuf = Vec::new();
        self.framer.reset();
        self.handoffs.clear();
        self.skipped = 0;
        self.auth_refused = None;
    }

    /// The connection failed: forgets its buffers, takes generation `gen`
    /// (so its transport task stops) and stays down for its backoff, which
    /// doubles for next time, up to `max_backoff_ms`.
    pub fn go_down(&mut self, gen: u32, now_ms: u64, reason: Arc<str>, max_backoff_ms: u64) {
        self.reset_io();
        self.gen = gen;
        self.link = Link::Down {
            until_ms: now_ms + self.backoff_ms,
            reason,
        };
        self.backoff_ms = (self.backoff_ms * 2).min(max_backoff_ms);
    }

    /// Bytes this connection holds in keyway's buffers.
    pub fn buffered_bytes(&self) -> usize {
        self.out.held() + self.inbuf.capacity()
    }
}

/// What a [`Pool`] connects to: an address, or a master that did not
/// resolve (its connections stay down with the resolver's error).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum PoolKey {
    Addr(SocketAddr),
    Unresolved(String),
}

/// The `AUTH` commands of a pool's connections, from its group's logins
/// (they hold passwords: `Debug` shows the users only).
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct PoolAuth {
    /// `AUTH` as the client login, first on every connection (empty: none).
    pub client: Box<[u8]>,
    /// `AUTH` as the admin login, around maintenance commands (empty: they
    /// run as the client login).
    pub admin: Box<[u8]>,
    /// `MIGRATE`'s `AUTH2 user pass` options (and their count) that let a
    /// key move *to* this backend in: the maintenance login's.
    pub migrate: (usize, Box<[u8]>),
    /// The users, for messages: (client, admin).
    pub users: (Arc<str>, Arc<str>),
}

impl std::fmt::Debug for PoolAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolAuth")
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

impl PoolAuth {
    /// The commands for `logins`.
    pub fn of(logins: &crate::config::GroupLogins) -> PoolAuth {
        let Some(client) = &logins.client else {
            return PoolAuth::default();
        };
        let admin = logins.admin.as_ref().filter(|a| *a != client);
        let (n, opts) = logins
            .maintenance()
            .map_or((0, Vec::new()), |l| l.migrate_options());
        PoolAuth {
            client: client.auth_command().into(),
            admin: admin.map_or_else(Vec::new, |a| a.auth_command()).into(),
            migrate: (n, opts.into()),
            users: (
                Arc::from(client.shown_user()),
                Arc::from(admin.map_or(client.shown_user(), |a| a.shown_user())),
            ),
        }
    }
}

/// The connections of one core to one backend address.
#[derive(Debug)]
pub(crate) struct Pool {
    pub key: PoolKey,
    /// The group this address serves, for error messages.
    pub group: Arc<str>,
    /// The address as the table names it (`host:port`), for reports.
    pub text: Arc<str>,
    /// How this core fares with the backend.
    pub health: super::health::Health,
    /// The current table uses it.
    pub in_use: bool,
    /// TLS to this address (its group's `tls`), or why it cannot be set
    /// up: then it is never connected to.
    pub tls: Option<Result<TlsConnect, Arc<str>>>,
    /// Backend slab indices; a client uses `conns[client.conn_slot % len]`.
    pub conns: Vec<usize>,
    /// The same for RESP3 clients: connections opened with `HELLO 3`,
    /// created on first need (empty until a RESP3 client sends a request
    /// to this backend; see [`super::resp3`]).
    pub conns3: Vec<usize>,
    /// Connections no longer wanted (the address left the table, or the
    /// connection count shrank): closed once their replies are in.
    pub retiring: Vec<usize>,
    /// Dedicated connections (see [`super::dedicated`]) connected and
    /// leased to no client, ready for the next.
    pub free: Vec<usize>,
    /// The `AUTH` commands its connections send.
    pub auth: Arc<PoolAuth>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inflight_entry_stays_as_small_as_the_integer_part_it_replaced() {
        // It sits in every backend connection's FIFO, one per request in
        // flight: the typed owner costs nothing over `client, gen, seq, part`.
        assert_eq!(std::mem::size_of::<Inflight>(), 48);
    }
}
