//! A client connection's state inside a worker: its parser, unparsed bytes,
//! replies in order, output buffer and lifecycle.

use std::net::SocketAddr;

use keyway_protocol::resp::RequestParser;

use super::backend::{Owner, Purpose};
use super::outbuf::OutBuf;
use super::pending::{ReplyQueue, Seq};
use super::replies::Refusal;

/// Identifies a client within its worker: slab index plus generation, so a
/// reply for a client that has gone never reaches a newer one in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId {
    pub(crate) idx: u32,
    pub(crate) gen: u32,
}

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading requests.
    Open,
    /// No more requests (EOF, `QUIT`, a protocol error, shutdown): finish the
    /// replies owed, write them, then close.
    Draining,
    /// Closed by a limit: the replies owed were dropped and a last error
    /// saying why is written, then the connection closes (aborted if the peer
    /// does not read it within [`CLOSING_LINGER_MS`]).
    Closing {
        /// When the limit closed it (worker milliseconds).
        since_ms: u64,
    },
    /// Close now, without flushing (idle timeout, a cross-protocol request,
    /// or a closing client that does not read).
    Kill,
}

/// Bytes read from a client while a blocking command of its own is in flight
/// before keyway stops reading it (it is read so that its leaving is seen).
pub(crate) const BLOCKED_INPUT_MAX: usize = 64 << 10;

/// How long a client closed by a limit may take to read the error saying why.
pub(crate) const CLOSING_LINGER_MS: u64 = 5_000;

/// What the driver should do with a client's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStatus {
    /// Read requests and write replies.
    Active,
    /// Write replies but do not read (pipeline full, or draining).
    WriteOnly,
    /// Everything owed has been handed out for writing: close the socket once
    /// those writes are done, then call `client_gone`.
    Close,
    /// Close the socket now, abandoning unwritten output (output limit, idle
    /// timeout), then call `client_gone`.
    Abort,
    /// No such client (already gone).
    Gone,
}

/// Everything about one client but its parser.
#[derive(Debug)]
pub(crate) struct ClientState {
    pub me: ClientId,
    /// `CLIENT ID`.
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Bytes of a request not yet complete (or not yet parsed while paused).
    pub inbuf: Vec<u8>,
    pub out: OutBuf,
    /// Bytes the transport holds for the client outside keyway's buffers,
    /// as it reports them ([`Worker::client_transport_bytes`]: the glommio
    /// transport's TLS records sealed and not yet written): counted in
    /// `limits.max_memory` as the client's.
    ///
    /// [`Worker::client_transport_bytes`]: super::Worker::client_transport_bytes
    pub transport_bytes: usize,
    pub queue: ReplyQueue,
    pub name: Option<Box<[u8]>>,
    pub phase: Phase,
    /// Which of each pool's connections this client uses, so its requests to a
    /// group stay in order.
    pub conn_slot: usize,
    pub created_ms: u64,
    pub last_active_ms: u64,
    /// Since when a request has been incomplete.
    pub partial_since_ms: Option<u64>,
    /// Since when the output has been above the soft limit.
    pub soft_since_ms: Option<u64>,
    /// Reading stopped: `max_pipeline` requests await replies.
    pub paused: bool,
    /// Reading stopped until this backend connection's write buffer drains
    /// (the client is listed in its `waiters`).
    pub blocked_on: Option<usize>,
    /// Queued for a driver wakeup.
    pub dirty: bool,
    /// The limits version the parser was last configured with.
    pub limits_version: u64,
    /// `MULTI` is open: the commands queued so far (see [`super::stateful`]).
    pub tx: Option<Box<super::stateful::Tx>>,
    /// The dedicated connection its `WATCH` holds (see [`super::stateful`]).
    pub pin: Option<Pin>,
    /// A blocking command awaits its reply: nothing more of the client runs
    /// until it comes (see [`super::blocking`]).
    pub blocked: Option<Blocked>,
    /// The groups written to since the last `WAIT` (bits: see
    /// [`super::route::group_bit`]).
    pub wrote: u64,
    /// A `WAIT` over several groups: the dedicated connections of its
    /// parts after the first ([`Blocked::b`]).
    pub wait_conns: Vec<(usize, u32)>,
    /// Its Pub/Sub subscriptions; `Some` only while it has any (RESP2
    /// subscribed mode), see [`super::pubsub`].
    pub subs: Option<Box<super::pubsub::ClientSubs>>,
    /// The client chose RESP3 (`HELLO 3`): keyway's own replies use RESP3
    /// types (`encode::map_header`, `null_of`, `verbatim`, … take it).
    pub resp3: bool,
    /// The client is in `MONITOR` mode: its backend `MONITOR` connections
    /// (see [`super::monitor`]).
    pub monitor: Option<Box<super::monitor::Monitoring>>,
    /// The name of the last command it ran (`cmd=` of `CLIENT LIST`).
    pub last_cmd: &'static str,
    /// `CLIENT REPLY` state (bits of [`super::clients::reply`]); 0, the
    /// usual, costs one test per request.
    pub reply: u8,
    /// `CLIENT NO-EVICT on`: never closed for `limits.max_memory`.
    pub no_evict: bool,
    /// Its next request is held by a `CLIENT PAUSE` (it is not read until
    /// the pause ends; see [`super::clients`]).
    pub postponed: bool,
    /// Its user (`default` until it authenticates as another); swapped for
    /// the new definition when users are reloaded (see `engine::auth`).
    pub user: std::sync::Arc<crate::acl::User>,
    /// It authenticated (or needed not: the default user had no password
    /// when it connected), as Redis's `client->authenticated`.
    pub authenticated: bool,
    /// Nothing to check per request: authenticated (or no password
    /// needed) and a user that may run everything. The request path tests
    /// only this (see `engine::auth`).
    pub acl_free: bool,
}

/// A dedicated backend connection a client's `WATCH` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pin {
    /// The group of the watched keys.
    pub group: crate::routing::GroupIndex,
    /// The connection, and its generation when leased (a connection that
    /// failed has another, and the watch is lost).
    pub b: usize,
    pub gen: u32,
    /// The watch is over (`EXEC`, `DISCARD`, `UNWATCH`): the client's
    /// requests to the group still go on this connection, behind those in
    /// flight on it, until they are all answered; then it is given back.
    pub ending: bool,
}

/// A blocking command in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocked {
    /// Its reply slot.
    pub seq: Seq,
    /// The dedicated connection it runs on, and its generation then.
    pub b: usize,
    pub gen: u32,
    /// The connection was leased for it (not the client's `WATCH`
    /// connection): it is given back with the reply.
    pub leased: bool,
    /// What to push back if the client leaves before the reply.
    pub restore: super::blocking::Restore,
    /// Replies still awaited: 1, or the parts of a `WAIT` over several
    /// groups (their connections in `ClientState::wait_conns`).
    pub parts: u16,
    /// What sending it again takes, should a new table move its keys
    /// (keyed blocking commands; `None` for `WAIT`).
    pub again: Option<Box<super::blocking::Again>>,
}

/// A client: parser and state, kept apart so arguments parsed in place (which
/// borrow the parser) can be dispatched while the state is updated.
#[derive(Debug)]
pub(crate) struct Client {
    pub parser: RequestParser,
    pub st: ClientState,
}

impl ClientState {
    /// Who awaits the backend reply to this client's request `seq`, and
    /// what it is for.
    #[inline(always)]
    pub fn owner(&self, seq: Seq, purpose: Purpose) -> Owner {
        Owner::Client {
            idx: self.me.idx,
            gen: self.me.gen,
            seq,
            purpose,
        }
    }

    /// Bytes of replies not yet written, including those held back for order.
    #[inline]
    pub fn pending_output(&self) -> usize {
        self.out.held() + self.queue.held_bytes()
    }

    /// The driver's next step for this client.
    pub fn status(&self) -> ClientStatus {
        let flushed = self.out.is_empty();
        match self.phase {
            Phase::Kill => ClientStatus::Abort,
            Phase::Draining if flushed && self.queue.is_empty() => ClientStatus::Close,
            Phase::Closing { .. } if flushed => ClientStatus::Close,
            Phase::Open if self.readable() => ClientStatus::Active,
            _ => ClientStatus::WriteOnly,
        }
    }

    /// Whether requests may be read: neither its pipeline nor a backend it
    /// writes to is full.
    #[inline]
    pub fn readable(&self) -> bool {
        !self.paused
            && !self.postponed
            && self.blocked_on.is_none()
            && (self.blocked.is_none() || self.inbuf.len() < BLOCKED_INPUT_MAX)
    }

    /// Queues a locally produced reply in order.
    #[inline]
    pub fn reply(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.queue.push_local(self.out.buf_mut(), write);
    }

    /// Queues an error reply.
    pub fn refuse(&mut self, why: &Refusal<'_>) {
        self.reply(|o| why.encode(o));
    }

    /// Answers a fatal error after every reply already owed, then closes;
    /// nothing after it is read.
    pub fn fatal(&mut self, why: &Refusal<'_>) {
        self.refuse(why);
        self.phase = Phase::Draining;
    }

    /// Whether replies for this client are still wanted.
    #[inline]
    pub fn wants_replies(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Draining)
    }

    /// Closes the client for exceeding a limit: drops the replies it is owed
    /// (freeing their memory at once) and writes `msg` as its last reply. The
    /// unwritten output is dropped too when it holds whole replies only (a
    /// transport that takes the output whole leaves nothing half-written);
    /// otherwise the error follows it, so the stream stays well-formed.
    pub fn close_for_limit(&mut self, why: &Refusal<'_>, now_ms: u64) {
        self.queue.abandon();
        self.out.discard_if_whole();
        why.encode(self.out.buf_mut());
        self.inbuf = Vec::new();
        self.partial_since_ms = None;
        self.paused = false;
        self.blocked_on = None;
        self.phase = Phase::Closing { since_ms: now_ms };
    }

    /// Bytes this client holds in keyway's buffers: unparsed input, unwritten
    /// output (and the transport's, see `transport_bytes`), replies held for
    /// order or merging, requests kept back.
    pub fn buffered_bytes(&self) -> usize {
        self.inbuf.capacity()
            + self.transport_bytes
            + self.out.held()
            + self.queue.held_bytes()
            + self.queue.kept_bytes()
            + self.tx.as_ref().map_or(0, |t| t.bytes())
    }
}
