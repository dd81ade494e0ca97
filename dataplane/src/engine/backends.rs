//! One core's backend connections as a whole: the slab of [`BackendConn`]s,
//! the [`Pool`] of each backend address, which pool serves each group of the
//! current table (its master, and the replicas its reads may go to), and
//! the connection attempts the transport is asked to make.
//!
//! A client always uses connection `conn_slot % connections` of a pool
//! ([`Backends::conn_for`]), so its requests to a group stay in order. A
//! connection that fails goes down for a backoff ([`BackendConn::go_down`]),
//! during which requests for it get [`Backends::down_error`]; then it is idle
//! and the next request starts a new attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::backend::{BackendConn, Internal, Link, Owner, Pool, PoolAuth, PoolKey};
use super::health::{BackendHealth, PublishedHealth};
use super::replies::Refusal;
use super::versions::VersionCounts;
use super::{Action, BackendId, Wake};
use crate::config::LiveConfig;
use crate::routing::{GroupIndex, GroupRoute, ReadFrom};
use crate::tls::TlsConnect;

/// How the reason of a connection failed by the backend's refusal of
/// keyway's `AUTH` begins.
pub(crate) const AUTH_FAILED: &str = "authentication as backend user";

/// Where a group's reads may go: replica pools, taken round robin.
#[derive(Debug, Default)]
struct ReplicaReads {
    pools: Box<[usize]>,
    next: usize,
}

/// One core's backend connections; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Backends {
    /// Every connection, by slab index (a [`BackendId`]'s `idx`).
    pub conns: Slab<BackendConn>,
    /// Every backend address the core has used, by index.
    pub pools: Vec<Pool>,
    pool_by_key: HashMap<PoolKey, usize>,
    /// The pool of each group's master in the current table.
    group_pools: Vec<usize>,
    /// Per group of the current table, the replica pools its read-only
    /// commands may go to (empty: the master).
    reads: Vec<ReplicaReads>,
    /// Whether any group reads from replicas: the one test the request
    /// path makes for replica reads when none does.
    pub replica_reads: bool,
    /// A backend went from up to failing or back since the cores' copy
    /// (see [`super::health`]) was last published with `health_changes`
    /// bumped.
    pub health_turned: bool,
    /// Source of connection generations: every attempt gets a new one.
    next_gen: u32,
    /// `backend.connect_timeout` of the current config.
    connect_timeout: Duration,
    /// Connections the transport is asked to open.
    pub actions: Vec<Action>,
    /// Dedicated connections in the slab (see [`super::dedicated`]).
    pub dedicated: usize,
}

impl Backends {
    /// A generation never used before by this core's connections.
    pub fn new_gen(&mut self) -> u32 {
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_gen
    }

    /// Adopts a new config: maps its groups' masters (and the replicas
    /// their reads may go to) to connection pools, creating pools for new
    /// addresses and retiring connections no group uses any more.
    pub fn apply(&mut self, cfg: &LiveConfig) {
        self.connect_timeout = cfg.backend.connect_timeout.duration();
        let mut used = vec![false; self.pools.len()];
        self.group_pools.clear();
        self.reads.clear();
        for g in cfg.table.groups() {
            let key = match &g.master {
                Ok(a) => PoolKey::Addr(*a),
                Err(_) => PoolKey::Unresolved(g.master_text.clone()),
            };
            let p = self.pool(key, g, &g.master_text, cfg, &mut used);
            if let Err(why) = &g.master {
                let pool = &self.pools[p];
                for &b in pool.conns.iter().chain(&pool.conns3) {
                    // Never connects: its requests get the resolver's error
                    // until a table with the master resolved replaces it.
                    self.conns[b].link = Link::Down {
                        until_ms: u64::MAX,
                        reason: why.clone(),
                    };
                }
            }
            self.group_pools.push(p);
            let mut reads = Vec::new();
            for r in g.replicas.iter() {
                let local = match (g.read_from, &cfg.zone) {
                    (ReadFrom::Master, _) => continue,
                    (ReadFrom::Replica, _) => true,
                    (ReadFrom::LocalZone, Some(zone)) => r.zone == *zone,
                    (ReadFrom::LocalZone, None) => false,
                };
                if let (true, Ok(a)) = (local, &r.addr) {
                    reads.push(self.pool(PoolKey::Addr(*a), g, &r.text, cfg, &mut used));
                }
            }
            self.reads.push(ReplicaReads {
                pools: reads.into(),
                next: 0,
            });
        }
        self.replica_reads = self.reads.iter().any(|r| !r.pools.is_empty());
        for (p, pool) in self.pools.iter_mut().enumerate() {
            pool.in_use = used[p];
            if !used[p] {
                pool.retiring.append(&mut pool.conns);
                pool.retiring.append(&mut pool.conns3);
                pool.retiring.append(&mut pool.free);
            }
        }
    }

    /// The pool for `key` (created if new) with `backend.connections`
    /// connections, serving group `g` as `text`.
    fn pool(
        &mut self,
        key: PoolKey,
        g: &GroupRoute,
        text: &str,
        cfg: &LiveConfig,
        used: &mut Vec<bool>,
    ) -> usize {
        let wanted = cfg.backend.connections;
        let p = match self.pool_by_key.get(&key) {
            Some(&p) => p,
            None => {
                self.pools.push(Pool {
                    key: key.clone(),
                    group: g.name.clone(),
                    text: Arc::from(text),
                    tls: None,
                    conns: Vec::new(),
                    conns3: Vec::new(),
                    retiring: Vec::new(),
                    free: Vec::new(),
                    health: Default::default(),
                    in_use: true,
                    auth: Default::default(),
                });
                used.push(false);
                self.pool_by_key.insert(key, self.pools.len() - 1);
                self.pools.len() - 1
            }
        };
        used[p] = true;
        let pool = &mut self.pools[p];
        pool.group = g.name.clone();
        if *pool.text != *text {
            pool.text = Arc::from(text);
        }
        let auth = PoolAuth::of(cfg.logins.of(&g.name));
        if *pool.auth != auth {
            // New credentials: the connections authenticated with the old
            // ones go once their replies are in; new ones log in anew.
            pool.auth = Arc::new(auth);
            pool.retiring.append(&mut pool.conns);
            pool.retiring.append(&mut pool.conns3);
            pool.retiring.append(&mut pool.free);
        }
        let tls = g.tls.as_ref().map(|t| match t {
            Ok(t) => t.connect(text).map_err(|e| Arc::from(format!("TLS: {e}"))),
            Err(why) => Err(Arc::from(format!("TLS: {why}"))),
        });
        if !same_transport(&pool.tls, &tls) {
            // TLS turned on or off, failed or fixed, or another server
            // name: never one more request over the old kind of link. (A
            // new configuration of the same kind — certificates read again
            // — is for new connections only.)
            pool.retiring.append(&mut pool.conns);
            pool.retiring.append(&mut pool.conns3);
            pool.retiring.append(&mut pool.free);
        }
        pool.tls = tls;
        while pool.conns.len() < wanted {
            pool.conns.push(self.conns.insert(BackendConn::new(p)));
        }
        while pool.conns.len() > wanted {
            let b = pool.conns.pop().expect("non-empty");
            pool.retiring.push(b);
        }
        if !pool.conns3.is_empty() {
            // RESP3 connections exist once a RESP3 client needed them:
            // then as many as the RESP2 ones.
            super::resp3::resize_conns3(&mut self.conns, pool, p, wanted);
        }
        p
    }

    /// The error for requests to connection `b` while it is down.
    pub fn down_error(&self, b: usize) -> Option<Refusal<'static>> {
        match &self.conns[b].link {
            Link::Down { reason, .. } => Some(Refusal::BackendDown {
                group: self.pools[self.conns[b].pool].group.clone(),
                reason: reason.clone(),
            }),
            _ => None,
        }
    }

    /// Connection `id`, if that attempt is still its current one.
    #[inline]
    pub fn attempt(&mut self, id: BackendId) -> Option<&mut BackendConn> {
        self.conns
            .get_mut(id.idx as usize)
            .filter(|b| b.gen == id.gen)
    }

    /// Bytes the connections hold in keyway's buffers.
    pub fn buffered_bytes(&self) -> usize {
        self.conns.iter().map(|(_, b)| b.buffered_bytes()).sum()
    }

    /// Appends a request to connection `b` for `owner`, routed under the
    /// table of `cfg`: its bytes (`write`), its entry in the in-flight FIFO
    /// and in `versions`, and a wakeup if the connection is up. If the write
    /// buffer is now past `backend.write_buffer_limit`, `backpressure` names
    /// the connection (the sending client pauses).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        b: usize,
        owner: Owner,
        cfg: &LiveConfig,
        now_ms: u64,
        versions: &mut VersionCounts,
        wake: &mut Wake,
        backpressure: &mut Option<usize>,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let version = cfg.table.version;
        let conn = &mut self.conns[b];
        write(conn.out.buf_mut());
        conn.sent(owner, version, now_ms);
        if conn.out.len() as u64 > cfg.backend.write_buffer_limit {
            *backpressure = Some(b);
        }
        versions.add(version);
        if matches!(conn.link, Link::Up) {
            wake.backend(conn, b);
        }
    }

    /// The connection for a request of client slot `slot` on group `g`: a
    /// `read` may go to a replica ([`read_conn`](Self::read_conn)), anything
    /// else to the master ([`conn_for`](Self::conn_for)); a RESP3 client's
    /// (`resp3`) to a RESP3 connection ([`super::resp3`]).
    #[inline(always)]
    pub fn conn(
        &mut self,
        g: GroupIndex,
        read: bool,
        slot: usize,
        now_ms: u64,
        resp3: bool,
    ) -> usize {
        if resp3 {
            return self.conn3(g, read, slot, now_ms);
        }
        if read {
            self.read_conn(g, slot, now_ms)
        } else {
            self.conn_for(g, slot, now_ms)
        }
    }

    /// The pool of group `g`'s master.
    #[inline]
    pub fn group_pool(&self, g: GroupIndex) -> usize {
        self.group_pools[usize::from(g)]
    }

    /// The connection client slot `slot` uses for group `g`'s master,
    /// starting a connection if it has none.
    #[inline(always)]
    pub fn conn_for(&mut self, g: GroupIndex, slot: usize, now_ms: u64) -> usize {
        self.conn_in(self.group_pools[usize::from(g)], slot, now_ms)
    }

    /// The connection for a read on group `g`: the next of the group's
    /// replica pools (round robin) that is up — not failing, and its
    /// connection for `slot` connected — else the master's. A replica
    /// connection not open yet is opened, but the read does not wait for
    /// it: it goes elsewhere.
    // Not inlined: the request path pays for it only when a group reads
    // from replicas.
    #[inline(never)]
    pub fn read_conn(&mut self, g: GroupIndex, slot: usize, now_ms: u64) -> usize {
        let reads = &self.reads[usize::from(g)];
        let n = reads.pools.len();
        let start = reads.next;
        for i in 0..n {
            let p = self.reads[usize::from(g)].pools[(start + i) % n];
            let pool = &self.pools[p];
            if pool.health.failures > 0 {
                continue;
            }
            let b = pool.conns[slot % pool.conns.len()];
            match self.conns[b].link {
                Link::Up => {
                    self.reads[usize::from(g)].next = (start + i + 1) % n;
                    return b;
                }
                Link::Idle => {
                    self.conn_in(p, slot, now_ms);
                }
                Link::Connecting { .. } | Link::Down { .. } => {}
            }
        }
        self.conn_for(g, slot, now_ms)
    }

    /// The replica pools group `g`'s reads may go to.
    pub(super) fn replica_pools(&self, g: GroupIndex) -> &[usize] {
        &self.reads[usize::from(g)].pools
    }

    /// The pool of group `g`'s master in the current table.
    #[inline]
    pub fn master_pool(&self, g: GroupIndex) -> usize {
        self.group_pools[usize::from(g)]
    }

    /// Starts connection `b` (of any kind: a subscriber connection too) if
    /// it is idle and its pool has an address; true if it did.
    pub fn open(&mut self, b: usize, now_ms: u64) -> bool {
        let p = self.conns[b].pool;
        let PoolKey::Addr(addr) = self.pools[p].key else {
            return false;
        };
        if !matches!(self.conns[b].link, Link::Idle) {
            return false;
        }
        let tls = match &self.pools[p].tls {
            None => None,
            Some(Ok(c)) => Some(c.clone()),
            Some(Err(why)) => {
                // Never connects in plain text instead: its requests get
                // this error until a table with a usable TLS setting.
                self.conns[b].link = Link::Down {
                    until_ms: u64::MAX,
                    reason: why.clone(),
                };
                return false;
            }
        };
        let gen = self.new_gen();
        let conn = &mut self.conns[b];
        conn.gen = gen;
        conn.link = Link::Connecting { since_ms: now_ms };
        if conn.resp3 && conn.dedicated.is_none() {
            // A RESP3 connection's first request (its buffer is empty: an
            // idle connection holds no requests).
            super::resp3::hello_first(conn, now_ms);
        }
        let auth = &self.pools[p].auth;
        if !auth.client.is_empty() {
            // Before anything else, in the same first write: no round trip.
            conn.prepend_internal(&auth.client, Internal::Auth { admin: false }, now_ms);
        }
        self.actions.push(Action::Connect {
            id: BackendId { idx: b as u32, gen },
            addr,
            timeout: self.connect_timeout,
            tls,
        });
        true
    }

    /// Switches connection `b` to its pool's admin login for the next
    /// request (a maintenance command; see [`super::backend_acl`]): `AUTH`
    /// appended; true if it was (false: the pool has no admin login of its
    /// own). The caller appends the request, then [`restore`](Self::restore).
    #[cold]
    pub fn elevate(&mut self, b: usize, now_ms: u64) -> bool {
        let Some(conn) = self.conns.get_mut(b) else {
            return false;
        };
        let auth = &self.pools[conn.pool].auth;
        if auth.admin.is_empty() || !conn.has_socket() {
            return false;
        }
        conn.append_internal(&auth.admin, Internal::Auth { admin: true }, now_ms);
        true
    }

    /// Switches connection `b` back to its pool's client login after a
    /// maintenance command. A shared connection is `RESET` first: should
    /// the client login then be refused (its password changed at the
    /// server), the requests written behind it run as Redis's `default`
    /// user (unauthenticated when it has a password), never as the admin;
    /// a RESP3 connection says `HELLO 3` again after it.
    #[cold]
    pub fn restore(&mut self, b: usize, now_ms: u64) {
        if let Some(conn) = self.conns.get_mut(b) {
            let auth = &self.pools[conn.pool].auth;
            let shared = conn.dedicated.is_none();
            if shared {
                conn.append_internal(b"*1\r\n$5\r\nRESET\r\n", Internal::Ignore, now_ms);
            }
            conn.append_internal(&auth.client, Internal::Auth { admin: false }, now_ms);
            if shared && conn.resp3 {
                super::resp3::switch_protocol(conn, true, now_ms);
            }
        }
    }

    /// `MIGRATE`'s options (`AUTH2 user pass`) and their count, for a key
    /// move to `target`: its pool's maintenance login (0: none).
    pub fn migrate_options(&self, target: std::net::SocketAddr) -> (usize, &[u8]) {
        match self.pool_by_key.get(&PoolKey::Addr(target)) {
            Some(&p) => {
                let (n, bytes) = &self.pools[p].auth.migrate;
                (*n, &bytes[..])
            }
            None => (0, &[]),
        }
    }

    /// Why connection `idx` failed when the backend refused keyway's
    /// `AUTH`.
    pub fn auth_failure(&mut self, idx: usize) -> String {
        let conn = &mut self.conns[idx];
        let (admin, text) = conn.auth_refused.take().unwrap_or_default();
        let users = &self.pools[conn.pool].auth.users;
        let user = if admin { &users.1 } else { &users.0 };
        format!("{AUTH_FAILED} {user:?} failed: {text}")
    }

    /// The connection client slot `slot` uses in pool `p`, starting a
    /// connection if it has none.
    #[inline]
    pub fn conn_in(&mut self, p: usize, slot: usize, now_ms: u64) -> usize {
        let pool = &self.pools[p];
        let b = pool.conns[slot % pool.conns.len()];
        if matches!(self.conns[b].link, Link::Idle) {
            self.open(b, now_ms);
        }
        b
    }

    /// Connections whose reply is overdue (`timeout` ms, 0: none) or whose
    /// connect attempt took too long, with why; and connections whose
    /// backoff is over become idle.
    pub fn expired(&mut self, now: u64, cfg: &LiveConfig) -> Vec<(usize, String, bool)> {
        let timeout = cfg.backend.timeout.0;
        let connect_timeout = cfg.backend.connect_timeout.0;
        let mut failed = Vec::new();
        for (idx, conn) in self.conns.iter_mut() {
            match &conn.link {
                Link::Up => {
                    if let Some(front) = conn.inflight.front() {
                        if timeout > 0 && now.saturating_sub(front.sent_ms) > timeout {
                            let why = format!("no reply within {}", cfg.backend.timeout);
                            failed.push((idx, why, true));
                        }
                    }
                }
                Link::Connecting { since_ms }
                    if now.saturating_sub(*since_ms) > connect_timeout + 1000 =>
                {
                    let why = format!("connect timed out after {}", cfg.backend.connect_timeout);
                    failed.push((idx, why, false));
                }
                Link::Down { until_ms, .. } if now >= *until_ms => conn.link = Link::Idle,
                _ => {}
            }
        }
        failed
    }

    /// Removes the retired connections whose replies are all in; returns
    /// each (index, whether it held a socket the transport must close).
    pub fn close_retired(&mut self, closed: &mut Vec<(usize, bool)>) {
        for pool in self.pools.iter_mut() {
            let mut i = 0;
            while i < pool.retiring.len() {
                let b = pool.retiring[i];
                let conn = &mut self.conns[b];
                if conn.inflight.is_empty() {
                    pool.retiring.swap_remove(i);
                    closed.push((b, conn.has_socket()));
                    conn.out.clear();
                } else {
                    i += 1;
                }
            }
        }
    }
}

impl Backends {
    /// Copies the pools' health into `out`; true if a backend had turned
    /// since the last copy (which it then forgets).
    pub(super) fn publish_health(&mut self, out: &PublishedHealth, epoch: Instant) -> bool {
        let at = |ms: Option<u64>| ms.map(|ms| epoch + Duration::from_millis(ms));
        let pools = &self.pools;
        let published = out.try_publish(|out| {
            for pool in pools.iter().filter(|p| p.in_use && p.health.is_known()) {
                if let PoolKey::Addr(_) = pool.key {
                    out.push(BackendHealth {
                        address: pool.text.clone(),
                        failures: pool.health.failures,
                        last_error: pool.health.last_error.clone(),
                        last_success: at(pool.health.last_success_ms),
                        last_failure: at(pool.health.last_failure_ms),
                    });
                }
            }
        });
        let turned = published && self.health_turned;
        if turned {
            self.health_turned = false;
        }
        turned
    }

    /// Starts a connection to every failing backend whose backoff is over,
    /// which is sent a PING (`Worker::backend_connected`): its answer tells
    /// that the backend is up again even when no request would (no read
    /// goes to a failing replica; an idle data plane sends nothing).
    pub(super) fn probe_failing(&mut self, now_ms: u64) {
        for p in 0..self.pools.len() {
            let pool = &self.pools[p];
            if !pool.in_use || pool.health.failures == 0 {
                continue;
            }
            let idle = pool
                .conns
                .iter()
                .position(|&b| matches!(self.conns[b].link, Link::Idle));
            if let Some(slot) = idle {
                self.conn_in(p, slot, now_ms);
            }
        }
    }
}

/// Whether two TLS settings of a pool make the same kind of link: both
/// plain, both TLS to the same server name, or both failed.
fn same_transport(
    a: &Option<Result<TlsConnect, Arc<str>>>,
    b: &Option<Result<TlsConnect, Arc<str>>>,
) -> bool {
    match (a, b) {
        (None, None) | (Some(Err(_)), Some(Err(_))) => true,
        (Some(Ok(a)), Some(Ok(b))) => a.name == b.name,
        _ => false,
    }
}
