//! Backend connections dedicated to one client at a time.
//!
//! A pool's shared connections carry the requests of every client of the
//! core, pipelined. Two things cannot share them: a `WATCH` (Redis keeps the
//! watched keys per connection, and another client's `EXEC` or `UNWATCH`
//! on it would end the watch) and a blocking command (`BLPOP`, `XREAD …
//! BLOCK`, `WAIT`…: every request behind it on the connection would wait
//! for it). For those a client leases a connection of its own from its
//! group's master pool ([`Backends::lease`]) and gives it back when the
//! watch or the block ends ([`Backends::release`]). A core has at most
//! `backend.dedicated_connections` of them over all its backends; beyond,
//! the command gets [`Refusal::DedicatedLimit`].
//!
//! A dedicated connection's first request is `CLIENT ID` ([`Internal::ConnId`]):
//! if its client leaves while blocked, keyway sends `CLIENT UNBLOCK <id>`
//! from a shared connection of the same server ([`Backends::orphan`], repeated
//! by [`Backends::tick_dedicated`] until the block has ended), so the
//! connection comes back at once instead of at the command's timeout. A
//! pop that completed meanwhile is pushed back (see [`super::blocking`]).
//! A connection given back with requests in flight returns to the free
//! list when they are answered ([`Backends::settle`]); one given back while
//! watching is sent `UNWATCH` first. A free connection unused for
//! [`IDLE_CLOSE_MS`] is closed; one that fails is dropped, not retried.

use super::backend::{BackendConn, Internal, Link, Owner, PoolKey};
use super::backends::Backends;
use super::replies::Refusal;
use super::versions::VersionCounts;
use super::Wake;
use crate::config::LiveConfig;
use crate::routing::GroupIndex;

/// `UNWATCH`, sent when a watch may still be on at Redis.
pub(crate) const UNWATCH: &[u8] = b"*1\r\n$7\r\nUNWATCH\r\n";

/// A free dedicated connection unused this long is closed.
pub(crate) const IDLE_CLOSE_MS: u64 = 30_000;

/// How often `CLIENT UNBLOCK` is sent again for a blocked command whose
/// client left (it may not have reached Redis when the first was sent).
const UNBLOCK_RETRY_MS: u64 = 100;

/// What a dedicated connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Leased to client (index, generation).
    Leased(u32, u32),
    /// Given back: returns to the free list when its replies are in.
    Returning,
    /// In its pool's free list since this time (worker milliseconds).
    Free(u64),
}

/// The dedicated state of a [`BackendConn`].
#[derive(Debug)]
pub(crate) struct Dedicated {
    pub state: Use,
    /// Redis's id of the connection (`CLIENT ID`), once known.
    pub backend_id: Option<i64>,
    /// A blocking command whose client left, or that a new table moved, is
    /// in flight: when `CLIENT UNBLOCK` was last sent for it.
    pub unblocking: Option<u64>,
    /// The reply that ends the block being unblocked (its owner).
    pub unblock_for: Option<Owner>,
    /// The reason a user's `CLIENT UNBLOCK` gave (`TIMEOUT` or `ERROR`),
    /// sent again with each retry; `None` for keyway's own unblocks.
    pub unblock_reason: Option<&'static [u8]>,
    /// `CLIENT UNBLOCK`s for it still in flight (on shared connections):
    /// it is not free again before they are answered, lest one end the
    /// next client's block.
    pub unblocks_in_flight: u16,
    /// `CLIENT ID` failed (renamed or denied): it cannot be unblocked, so
    /// a block it must end closes it instead.
    pub id_failed: bool,
}

impl Backends {
    /// A dedicated connection to group `g`'s master for client
    /// (`idx`, `gen`): a free one, or a new one (connecting; requests wait in
    /// its write buffer), or the reason there is none. It speaks the
    /// client's protocol (`resp3`): `HELLO` switches it if it did not.
    #[allow(clippy::too_many_arguments)]
    pub fn lease(
        &mut self,
        g: GroupIndex,
        client: (u32, u32),
        cfg: &LiveConfig,
        now_ms: u64,
        versions: &mut VersionCounts,
        resp3: bool,
    ) -> Result<usize, Refusal<'static>> {
        let p = self.group_pool(g);
        while let Some(b) = self.pools[p].free.pop() {
            let conn = &mut self.conns[b];
            if matches!(conn.link, Link::Up | Link::Connecting { .. }) {
                if let Some(d) = conn.dedicated.as_mut() {
                    d.state = Use::Leased(client.0, client.1);
                }
                if conn.resp3 != resp3 {
                    super::resp3::switch_protocol(conn, resp3, now_ms);
                }
                return Ok(b);
            }
            self.retire(p, b);
        }
        let limit = cfg.backend.dedicated_connections;
        if self.dedicated >= limit {
            return Err(Refusal::DedicatedLimit { limit });
        }
        // A backend known down (or a master that did not resolve): its
        // shared connections hold the error.
        let shared = self.pools[p].conns.first().copied();
        if let Some(why) = shared.and_then(|b| self.down_error(b)) {
            return Err(why);
        }
        let PoolKey::Addr(_) = self.pools[p].key else {
            return Err(Refusal::BackendDown {
                group: self.pools[p].group.clone(),
                reason: "its address did not resolve".into(),
            });
        };
        let mut conn = BackendConn::new(p);
        conn.dedicated = Some(Box::new(Dedicated {
            state: Use::Leased(client.0, client.1),
            backend_id: None,
            unblocking: None,
            unblock_for: None,
            unblock_reason: None,
            unblocks_in_flight: 0,
            id_failed: false,
        }));
        let version = cfg.table.version;
        conn.out
            .buf_mut()
            .extend_from_slice(b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n");
        conn.sent(Owner::Internal(Internal::ConnId), version, now_ms);
        versions.add(version);
        if resp3 {
            super::resp3::switch_protocol(&mut conn, true, now_ms);
        }
        let b = self.conns.insert(conn);
        self.dedicated += 1;
        self.open(b, now_ms);
        Ok(b)
    }

    /// Client lets dedicated connection `b` go; `unwatch`: it may still
    /// watch keys, so `UNWATCH` goes first. It returns to the free list
    /// once its replies are in ([`settle`](Self::settle)).
    pub fn release(
        &mut self,
        b: usize,
        unwatch: bool,
        cfg: &LiveConfig,
        now_ms: u64,
        versions: &mut VersionCounts,
        wake: &mut Wake,
    ) {
        let Some(conn) = self.conns.get_mut(b) else {
            return;
        };
        let Some(d) = conn.dedicated.as_mut() else {
            return;
        };
        d.state = Use::Returning;
        if unwatch {
            self.send_internal(b, UNWATCH, Internal::Ignore, cfg, now_ms, versions, wake);
        }
        self.settle(b, now_ms);
    }

    /// Appends keyway's own request `bytes` to connection `b`, its reply
    /// for `what`.
    #[allow(clippy::too_many_arguments)]
    pub fn send_internal(
        &mut self,
        b: usize,
        bytes: &[u8],
        what: Internal,
        cfg: &LiveConfig,
        now_ms: u64,
        versions: &mut VersionCounts,
        wake: &mut Wake,
    ) {
        let Some(conn) = self.conns.get_mut(b) else {
            return;
        };
        if !matches!(conn.link, Link::Up | Link::Connecting { .. }) {
            return;
        }
        let version = cfg.table.version;
        conn.out.buf_mut().extend_from_slice(bytes);
        conn.sent(Owner::Internal(what), version, now_ms);
        versions.add(version);
        if matches!(conn.link, Link::Up) {
            wake.backend(conn, b);
        }
    }

    /// A dedicated connection given back with replies outstanding goes to
    /// its pool's free list once they are in (a dead one is closed).
    pub fn settle(&mut self, b: usize, now_ms: u64) {
        let Some(conn) = self.conns.get_mut(b) else {
            return;
        };
        let Some(d) = conn.dedicated.as_mut() else {
            return;
        };
        if d.state != Use::Returning || !conn.inflight.is_empty() || d.unblocks_in_flight > 0 {
            return;
        }
        let p = conn.pool;
        if matches!(conn.link, Link::Up) && self.pools[p].in_use && !d.id_failed {
            d.state = Use::Free(now_ms);
            d.unblocking = None;
            d.unblock_reason = None;
            self.pools[p].free.push(b);
        } else {
            self.retire(p, b);
        }
    }

    /// Closes connection `b` of pool `p` once its replies are in (once).
    fn retire(&mut self, p: usize, b: usize) {
        if !self.pools[p].retiring.contains(&b) {
            self.pools[p].retiring.push(b);
        }
    }

    /// Client left with blocking command `seq` in flight on dedicated
    /// connection `b`: its reply, when it comes, is an orphan's (elements
    /// it carries are pushed back), the client's other replies on it are
    /// dropped, and `CLIENT UNBLOCK` ends the block now.
    pub fn orphan(
        &mut self,
        b: usize,
        client: (u32, u32),
        seq: u64,
        restore: super::blocking::Restore,
    ) {
        let Some(conn) = self.conns.get_mut(b) else {
            return;
        };
        let orphan = Owner::Internal(Internal::Orphan(restore));
        for e in conn.inflight.iter_mut() {
            if let Owner::Client {
                idx, gen, seq: s, ..
            } = e.owner
            {
                if (idx, gen) == client {
                    e.owner = if s == seq {
                        orphan
                    } else {
                        Owner::Internal(Internal::Ignore)
                    };
                }
            }
        }
        if let Some(d) = conn.dedicated.as_mut() {
            d.unblocking = Some(0);
            d.unblock_for = Some(orphan);
            d.unblock_reason = None;
        }
    }

    /// Sends `CLIENT UNBLOCK` now for connection `b`'s orphaned blocking
    /// command, if Redis's id for it is known (else the next tick does).
    pub fn tick_unblock(
        &mut self,
        b: usize,
        cfg: &LiveConfig,
        now_ms: u64,
        versions: &mut VersionCounts,
        wake: &mut Wake,
    ) {
        let Some(conn) = self.conns.get_mut(b) else {
            return;
        };
        let p = conn.pool;
        let Some(d) = conn.dedicated.as_mut() else {
            return;
        };
        if let (Some(_), Some(id)) = (d.unblocking, d.backend_id) {
            d.unblocking = Some(now_ms);
            let reason = d.unblock_reason;
            self.unblock(p, b, id, reason, cfg, now_ms, versions, wake);
        }
    }

    /// Sends `CLIENT UNBLOCK` for orphaned blocking commands not yet
    /// answered, and closes free dedicated connections idle for
    /// [`IDLE_CLOSE_MS`].
    pub fn tick_dedicated(
        &mut self,
        cfg: &LiveConfig,
        now_ms: u64,
        versions: &mut VersionCounts,
        wake: &mut Wake,
    ) -> Vec<usize> {
        let mut fail = Vec::new();
        if self.dedicated == 0 {
            return fail;
        }
        let mut unblock: Vec<(usize, usize, i64, Option<&'static [u8]>)> = Vec::new();
        for (b, conn) in self.conns.iter_mut() {
            let Some(d) = conn.dedicated.as_mut() else {
                continue;
            };
            let Some(sent) = d.unblocking else { continue };
            if d.id_failed {
                // Cannot be unblocked: closed instead (see `id_failed`).
                d.unblocking = None;
                fail.push(b);
                continue;
            }
            if let Some(id) = d.backend_id {
                if now_ms.saturating_sub(sent) >= UNBLOCK_RETRY_MS {
                    d.unblocking = Some(now_ms);
                    unblock.push((conn.pool, b, id, d.unblock_reason));
                }
            }
        }
        for (p, b, id, reason) in unblock {
            self.unblock(p, b, id, reason, cfg, now_ms, versions, wake);
        }
        for pool in self.pools.iter_mut() {
            let conns = &self.conns;
            let (idle, keep): (Vec<usize>, Vec<usize>) = pool.free.iter().partition(|&&b| {
                matches!(
                    conns[b].dedicated.as_ref().map(|d| d.state),
                    Some(Use::Free(since)) if now_ms.saturating_sub(since) >= IDLE_CLOSE_MS
                )
            });
            if !idle.is_empty() {
                pool.free = keep;
                pool.retiring.extend(idle);
            }
        }
        fail
    }

    /// A user's `CLIENT UNBLOCK` of client `client`'s blocking command
    /// `seq` on dedicated connection `b` (see `engine::clients`): `CLIENT
    /// UNBLOCK <its Redis id> TIMEOUT|ERROR` to its server, so that the
    /// command gets Redis's own reply, sent again every
    /// `UNBLOCK_RETRY_MS` until that reply comes (the command may not have
    /// reached Redis yet). False if the command is not in flight there.
    #[allow(clippy::too_many_arguments)]
    pub fn unblock_for_user(
        &mut self,
        b: usize,
        client: (u32, u32),
        seq: u64,
        error: bool,
        cfg: &LiveConfig,
        now_ms: u64,
        versions: &mut VersionCounts,
        wake: &mut Wake,
    ) -> bool {
        let Some(conn) = self.conns.get_mut(b) else {
            return false;
        };
        let owner = conn.inflight.iter().map(|e| e.owner).find(|o| {
            matches!(*o, Owner::Client { idx, gen, seq: s, .. } if (idx, gen) == client && s == seq)
        });
        let (Some(owner), Some(d)) = (owner, conn.dedicated.as_mut()) else {
            return false;
        };
        d.unblocking = Some(0);
        d.unblock_for = Some(owner);
        d.unblock_reason = Some(if error { b"ERROR" } else { b"TIMEOUT" });
        self.tick_unblock(b, cfg, now_ms, versions, wake);
        true
    }

    /// Sends `CLIENT UNBLOCK id [reason]` for dedicated connection `b` on a
    /// shared connection of pool `p`.
    #[allow(clippy::too_many_arguments)]
    fn unblock(
        &mut self,
        p: usize,
        b_for: usize,
        id: i64,
        reason: Option<&[u8]>,
        cfg: &LiveConfig,
        now_ms: u64,
        versions: &mut VersionCounts,
        wake: &mut Wake,
    ) {
        if self.pools[p].conns.is_empty() {
            return;
        }
        let b = self.conn_in(p, 0, now_ms);
        if self.down_error(b).is_some() {
            return;
        }
        let id = id.to_string();
        let conn = &mut self.conns[b];
        let out = conn.out.buf_mut();
        keyway_protocol::resp::encode::array_header(out, 3 + reason.is_some() as usize);
        keyway_protocol::resp::encode::bulk(out, b"CLIENT");
        keyway_protocol::resp::encode::bulk(out, b"UNBLOCK");
        keyway_protocol::resp::encode::bulk(out, id.as_bytes());
        if let Some(r) = reason {
            keyway_protocol::resp::encode::bulk(out, r);
        }
        let version = cfg.table.version;
        let gen_for = self.conns.get(b_for).map_or(0, |c| c.gen);
        let owner = Owner::Internal(Internal::Unblocked {
            b: b_for as u32,
            gen: gen_for,
        });
        let conn = &mut self.conns[b];
        conn.sent(owner, version, now_ms);
        versions.add(version);
        if matches!(conn.link, Link::Up) {
            wake.backend(conn, b);
        }
        if let Some(d) = self.conns[b_for].dedicated.as_mut() {
            d.unblocks_in_flight += 1;
        }
    }

    /// A `CLIENT UNBLOCK` for dedicated connection `b` (generation `gen`)
    /// was answered (or failed with its connection).
    pub fn unblock_answered(&mut self, b: usize, gen: u32, now_ms: u64) {
        let Some(conn) = self.conns.get_mut(b).filter(|c| c.gen == gen) else {
            return;
        };
        if let Some(d) = conn.dedicated.as_mut() {
            d.unblocks_in_flight = d.unblocks_in_flight.saturating_sub(1);
        }
        self.settle(b, now_ms);
    }

    /// Whether an orphaned blocking command or a push-back of what one
    /// popped is in flight (a shutdown waits for them).
    pub fn restoring(&self) -> bool {
        self.dedicated > 0
            && self.conns.iter().any(|(_, c)| {
                c.dedicated.is_some()
                    && c.inflight.iter().any(|e| {
                        matches!(
                            e.owner,
                            Owner::Internal(Internal::Orphan(_) | Internal::Restored)
                        )
                    })
            })
    }

    /// Dedicated connections still leased or returning on a backend no
    /// group of the current table uses (a failover moved a group's
    /// master): to be failed, so their clients learn it.
    pub fn stale_dedicated(&self) -> Vec<usize> {
        if self.dedicated == 0 {
            return Vec::new();
        }
        self.conns
            .iter()
            .filter(|(_, c)| {
                c.dedicated
                    .as_ref()
                    .is_some_and(|d| matches!(d.state, Use::Leased(..) | Use::Returning))
                    && !self.pools[c.pool].in_use
                    && matches!(c.link, Link::Up | Link::Connecting { .. })
            })
            .map(|(b, _)| b)
            .collect()
    }

    /// A dedicated connection failed: it is closed rather than retried
    /// (its client, if any, is told by the error its requests get).
    pub fn drop_dedicated(&mut self, b: usize) {
        let Some(conn) = self.conns.get_mut(b) else {
            return;
        };
        let Some(d) = conn.dedicated.as_mut() else {
            return;
        };
        let p = conn.pool;
        if let Use::Free(_) = d.state {
            self.pools[p].free.retain(|&x| x != b);
        }
        d.state = Use::Returning;
        self.retire(p, b);
    }
}
