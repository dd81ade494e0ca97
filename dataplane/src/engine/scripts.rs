//! Scripts and functions: `SCRIPT LOAD|EXISTS|FLUSH` and `FUNCTION
//! LOAD|DELETE|FLUSH|RESTORE` on every group (merged by
//! [`super::gather`]), `FUNCTION LIST|DUMP|STATS` and keyless
//! `EVAL`/`EVALSHA`/`FCALL` (and their `_RO` forms) on the *documented
//! group*, and `NOSCRIPT` transparency for `EVALSHA`.
//!
//! **The documented group** is the group that owns slot 0 of the current
//! table ([`documented_group`]): a command that names no key goes there
//! (held while slot 0 is blocked; to the target while it moves, as a
//! keyless transaction does; `-CLUSTERDOWN` if slot 0 has no group, as a
//! key of an unassigned slot would get).
//!
//! **NOSCRIPT transparency.** Every script body keyway sees (`SCRIPT LOAD`,
//! `EVAL`, `EVAL_RO`, on any core) is remembered by its SHA-1 in the
//! process-wide [`ScriptRegistry`] (in [`super::Shared`]), bounded by
//! `limits.script_registry_bytes` (oldest forgotten first). Each core reads
//! it through its [`ScriptCache`], which copies the bodies added since its
//! last look only when an atomic insertion count moved (each body once per
//! core; everything again after a `SCRIPT FLUSH`): no lock per request.
//! An `EVALSHA`/`EVALSHA_RO` of a known sha:
//! - goes after a `SCRIPT LOAD <body>` ([`Owner::Discard`]) if this core
//!   has not loaded the script on that backend connection since it
//!   connected ([`ScriptCache::loaded_on`]): a group added by a grow, a
//!   server restarted or promoted, are all new connections, so they never
//!   answer `NOSCRIPT` and nothing is reordered;
//! - is sent with [`Purpose::Script`], its frame kept (with the body) until
//!   its reply; if that reply is still `-NOSCRIPT` (the server flushed its
//!   scripts behind keyway's back), [`ScriptCache::retry`] appends
//!   `SCRIPT LOAD <body>` and the `EVALSHA` again to the same connection
//!   for the same reply slot, as [`Purpose::Whole`]: a second `NOSCRIPT` is
//!   delivered as is. The retried call runs after whatever the connection
//!   carried meanwhile (README, "Scripts and functions").
//!
//! An `EVALSHA` of an unknown sha costs nothing extra. `SCRIPT FLUSH`
//! through keyway empties the registry, so `EVALSHA` then fails as on one
//! Redis server.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use keyway_protocol::command::CommandSpec;
use keyway_protocol::resp::encode;

use super::backend::{BackendConn, Inflight, Owner, Purpose};
use super::client::ClientState;
use super::gather::{Gather, Undo};
use super::policy::ScriptCmd;
use super::replies::Refusal;
use super::route::{answer_error, merge_in_place, Req, Target};
use super::split::{Merge, SplitKind};
use super::versions::VersionCounts;
use super::{live_client, Ctx, Worker};
use crate::routing::{GroupIndex, RoutingTable, SlotRoute};

/// A script's SHA-1, 40 lowercase hex digits.
pub(crate) type Sha = [u8; 40];

/// The SHA-1 of `body` as Redis names scripts.
pub(crate) fn sha_of(body: &[u8]) -> Sha {
    let hex = sha1_smol::Sha1::from(body).digest().to_string();
    let mut sha = [0u8; 40];
    sha.copy_from_slice(&hex.as_bytes()[..40]);
    sha
}

/// `arg` as a sha (lowercased, as Redis reads `EVALSHA`'s), if it has 40
/// characters.
fn sha_arg(arg: &[u8]) -> Option<Sha> {
    let mut sha = [0u8; 40];
    if arg.len() != 40 {
        return None;
    }
    for (d, s) in sha.iter_mut().zip(arg) {
        *d = s.to_ascii_lowercase();
    }
    Some(sha)
}

/// Where a command that names no key goes: the group owning slot 0 (see
/// the module docs).
pub(crate) fn documented_group(table: &RoutingTable) -> Result<Target, Refusal<'static>> {
    match table.route(0) {
        SlotRoute::Stable(g) => Ok(Target::Group(g)),
        SlotRoute::Moving { to, .. } => Ok(Target::Master(to)),
        SlotRoute::Blocked { .. } => Ok(Target::Hold),
        SlotRoute::Unassigned => Err(Refusal::ClusterDown { slot: 0 }),
    }
}

#[derive(Debug, Default)]
struct Bodies {
    map: HashMap<Sha, Arc<[u8]>>,
    /// Insertion order, with each body's insertion number (ascending).
    order: VecDeque<(u64, Sha)>,
    bytes: usize,
    /// The next insertion number.
    next: u64,
}

/// The script bodies keyway has seen, by sha, shared by every core
/// (see the module docs). Locked only when a new body is seen, on
/// `SCRIPT FLUSH`, and when a core copies what was added since it last
/// looked (incrementally: a core copies each body once).
#[derive(Debug, Default)]
pub struct ScriptRegistry {
    /// The next insertion number, published after each insertion.
    inserted: AtomicU64,
    /// Bumped by every `SCRIPT FLUSH`: cores forget their copies.
    flushes: AtomicU64,
    bodies: Mutex<Bodies>,
}

impl ScriptRegistry {
    fn lock(&self) -> MutexGuard<'_, Bodies> {
        self.bodies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers `body` under `sha`, forgetting the oldest bodies while the
    /// total would pass `max` bytes; a body larger than `max` is not kept.
    pub(crate) fn insert(&self, sha: Sha, body: &[u8], max: u64) {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        if body.len() > max {
            return;
        }
        let mut b = self.lock();
        if b.map.contains_key(&sha) {
            return;
        }
        while b.bytes + body.len() > max {
            let Some((_, old)) = b.order.pop_front() else {
                break;
            };
            if let Some(gone) = b.map.remove(&old) {
                b.bytes -= gone.len();
            }
        }
        b.bytes += body.len();
        let n = b.next;
        b.next += 1;
        b.order.push_back((n, sha));
        b.map.insert(sha, Arc::from(body));
        self.inserted.store(b.next, Ordering::Release);
    }

    /// Forgets every body (`SCRIPT FLUSH`).
    pub(crate) fn clear(&self) {
        let mut b = self.lock();
        b.map.clear();
        b.order.clear();
        b.bytes = 0;
        self.flushes.fetch_add(1, Ordering::Release);
    }

    /// Bytes of the bodies remembered.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// An `EVALSHA` in flight that may be retried: the body to load and the
/// frame to send again.
#[derive(Debug)]
struct Retry {
    body: Arc<[u8]>,
    frame: Vec<u8>,
}

/// One core's view of the [`ScriptRegistry`], the `EVALSHA`s it may
/// retry, and the undo commands of failed fan-outs to send.
#[derive(Debug, Default)]
pub(crate) struct ScriptCache {
    /// The registry's insertions copied so far, and flushes seen.
    inserted: u64,
    flushes: u64,
    /// The bodies copied (bodies the registry has since forgotten stay
    /// until these pass the registry's limit: then all are copied again).
    known: HashMap<Sha, Arc<[u8]>>,
    known_bytes: usize,
    /// By (client index, client generation, reply slot).
    retries: HashMap<(u32, u32, u64), Retry>,
    /// Commands to send with their reply discarded (see
    /// [`Gather`](super::gather::Gather)): (group, command).
    pub undo: Vec<(GroupIndex, Vec<u8>)>,
    /// `EVALSHA`s of the connection being read that got `-NOSCRIPT`, with
    /// that reply: sent again once the read is done
    /// (`Sink::retry_noscript`).
    pub noscript: Vec<(Inflight, Vec<u8>)>,
    /// By backend connection: its generation, and the scripts this core
    /// loaded on it (`SCRIPT LOAD` before the first `EVALSHA` of each).
    loaded: HashMap<usize, (u32, HashSet<Sha>)>,
}

/// Scripts remembered as loaded on one backend connection; past it the
/// set starts again (costing one more `SCRIPT LOAD` each).
const LOADED_PER_CONN: usize = 4096;

impl ScriptCache {
    /// Copies what the registry added since the last look (everything
    /// after a `SCRIPT FLUSH`, or once this copy outgrew `max` bytes).
    fn refresh(&mut self, reg: &ScriptRegistry, max: u64) {
        let flushes = reg.flushes.load(Ordering::Acquire);
        if flushes != self.flushes || self.known_bytes as u64 > max {
            self.known.clear();
            self.known_bytes = 0;
            self.inserted = 0;
            self.flushes = flushes;
        }
        if reg.inserted.load(Ordering::Acquire) == self.inserted {
            return;
        }
        let b = reg.lock();
        let from = b.order.partition_point(|&(n, _)| n < self.inserted);
        for &(_, sha) in b.order.range(from..) {
            if let Some(body) = b.map.get(&sha) {
                if self.known.insert(sha, body.clone()).is_none() {
                    self.known_bytes += body.len();
                }
            }
        }
        self.inserted = b.next;
        self.flushes = reg.flushes.load(Ordering::Acquire);
    }

    /// The body of script `sha`, if keyway has seen it (`max`: the
    /// registry's limit).
    fn body(&mut self, reg: &ScriptRegistry, sha: &Sha, max: u64) -> Option<Arc<[u8]>> {
        self.refresh(reg, max);
        self.known.get(sha).cloned()
    }

    /// Remembers `body` (unless this core knows it already).
    fn register(&mut self, reg: &ScriptRegistry, body: &[u8], max: u64) {
        if max == 0 {
            return;
        }
        let sha = sha_of(body);
        if !self.known.contains_key(&sha) {
            reg.insert(sha, body, max);
        }
    }

    /// Whether script `sha` was loaded on connection `b` (generation
    /// `gen`: a connection that reconnected starts with none); marks it.
    fn loaded_on(&mut self, b: usize, gen: u32, sha: Sha) -> bool {
        let (g, set) = self
            .loaded
            .entry(b)
            .or_insert_with(|| (gen, HashSet::new()));
        if *g != gen || set.len() >= LOADED_PER_CONN {
            *g = gen;
            set.clear();
        }
        !set.insert(sha)
    }

    /// The reply to `EVALSHA` entry `e`, sent as [`Purpose::Script`]: a
    /// `-NOSCRIPT` is kept for a retry (true: not delivered); anything
    /// else is delivered, and the kept frame dropped.
    #[cold]
    #[inline(never)]
    pub(super) fn noscript_or_forget(&mut self, e: Inflight, reply: &[u8]) -> bool {
        let Owner::Client { idx, gen, seq, .. } = e.owner else {
            return false;
        };
        if reply.starts_with(b"-NOSCRIPT") && self.retries.contains_key(&(idx, gen, seq)) {
            self.noscript.push((e, reply.to_vec()));
            return true;
        }
        self.forget(idx, gen, seq);
        false
    }

    /// Undo commands of a fan-out to send (see [`Gather`]).
    #[cold]
    #[inline(never)]
    pub(super) fn add_undo(&mut self, undo: Vec<super::gather::UndoCmd>) {
        self.undo.extend(undo);
    }

    /// The reply to a retriable `EVALSHA` arrived: its frame is dropped
    /// (those of clients that left go at the next tick,
    /// `Worker::prune_scripts`).
    pub(super) fn forget(&mut self, idx: u32, gen: u32, seq: u64) {
        self.retries.remove(&(idx, gen, seq));
    }

    /// `EVALSHA`s kept for a retry.
    #[cfg(test)]
    pub(crate) fn retriable(&self) -> usize {
        self.retries.len()
    }

    /// Entry `e` (an `EVALSHA` sent with [`Purpose::Script`], delivered:
    /// its version is done) got `-NOSCRIPT`: appends `SCRIPT LOAD <body>`
    /// and the `EVALSHA` again to `conn`, the latter owned by the same
    /// reply slot as a [`Purpose::Whole`]. False if there is nothing to
    /// retry with.
    pub(super) fn retry(
        &mut self,
        conn: &mut BackendConn,
        e: &Inflight,
        versions: &mut VersionCounts,
        now_ms: u64,
    ) -> bool {
        let Owner::Client { idx, gen, seq, .. } = e.owner else {
            return false;
        };
        let Some(r) = self.retries.remove(&(idx, gen, seq)) else {
            return false;
        };
        let out = conn.out.buf_mut();
        encode::array_header(out, 3);
        encode::bulk(out, b"SCRIPT");
        encode::bulk(out, b"LOAD");
        encode::bulk(out, &r.body);
        conn.sent(Owner::Discard, e.version, now_ms);
        versions.add(e.version);
        conn.out.buf_mut().extend_from_slice(&r.frame);
        versions.add(e.version);
        let owner = Owner::Client {
            idx,
            gen,
            seq,
            purpose: Purpose::Whole,
        };
        conn.sent(owner, e.version, now_ms);
        true
    }
}

/// The command's name as a report says it (`FUNCTION LOAD`).
fn display_name(spec: &CommandSpec) -> String {
    spec.name.replace('|', " ").to_ascii_uppercase()
}

impl Ctx {
    /// Serves `SCRIPT …`/`FUNCTION …` (see the module docs).
    pub(crate) fn script_command(
        &mut self,
        st: &mut ClientState,
        cmd: ScriptCmd,
        spec: &CommandSpec,
        req: Req<'_>,
    ) {
        let args = req.args;
        match cmd {
            ScriptCmd::DocumentedGroup => {
                let target = documented_group(&self.cfg.table);
                self.send_to_target(st, target, false, req)
            }
            ScriptCmd::Load => {
                let max = self.cfg.limits.script_registry_bytes;
                (self.scripts).register(&self.shared.scripts, args.get(2), max);
                self.every_group(st, spec, SplitKind::Same, Undo::Nothing, req)
            }
            ScriptCmd::Exists => self.every_group(st, spec, SplitKind::AllOf, Undo::Nothing, req),
            ScriptCmd::Flush => {
                self.shared.scripts.clear();
                self.every_group(st, spec, SplitKind::Same, Undo::Nothing, req)
            }
            ScriptCmd::FunctionLoad => {
                let replace = args
                    .iter()
                    .skip(2)
                    .take(args.len().saturating_sub(3))
                    .any(|a| a.eq_ignore_ascii_case(b"replace"));
                let undo = if replace {
                    Undo::Nothing
                } else {
                    Undo::FunctionDelete
                };
                self.every_group(st, spec, SplitKind::Same, undo, req)
            }
            ScriptCmd::EveryGroup => {
                self.every_group(st, spec, SplitKind::Same, Undo::Nothing, req)
            }
        }
    }

    /// Sends the request to every group's master and merges the replies
    /// ([`Gather`]); holds it whole while any group is on hold.
    pub(super) fn every_group(
        &mut self,
        st: &mut ClientState,
        spec: &CommandSpec,
        kind: SplitKind,
        undo: Undo,
        req: Req<'_>,
    ) {
        let Req { args, raw, place } = req;
        if self.cfg.table.has_holds() {
            return self.sched.hold(st, req, self.now_ms, &mut self.stats);
        }
        let names: Box<[Arc<str>]> = self
            .cfg
            .table
            .groups()
            .iter()
            .map(|g| g.name.clone())
            .collect();
        let groups = names.len();
        if groups == 0 {
            let why = Refusal::ClusterDown { slot: 0 };
            return self.refuse(st, &why, place);
        }
        let gather = Gather::new(&display_name(spec), names, undo);
        let seq = merge_in_place(st, place, Merge::gather(kind, gather, groups));
        self.stats.requests_split += 1;
        for g in 0..groups {
            // A client's pinned connection (a WATCH) if it has one there.
            let b = self.client_conn(st, g as GroupIndex, false);
            self.enqueue(st, b, seq, Purpose::Part(g as u16), |out| match raw {
                Some(bytes) => out.extend_from_slice(bytes),
                None => encode::request(out, args),
            });
        }
    }

    /// A script or function call (`EVAL`, `EVALSHA`, `FCALL` and the `_RO`
    /// forms) whose target is known (`keys` were empty: the documented
    /// group). `EVAL` remembers its body; an `EVALSHA` of a known sha is
    /// sent so that a `-NOSCRIPT` is retried.
    pub(crate) fn send_script(
        &mut self,
        st: &mut ClientState,
        spec: &CommandSpec,
        target: Result<Target, Refusal<'_>>,
        read: bool,
        req: Req<'_>,
    ) {
        let args = req.args;
        match spec.name {
            "eval" | "eval_ro" => {
                let max = self.cfg.limits.script_registry_bytes;
                (self.scripts).register(&self.shared.scripts, args.get(1), max);
            }
            "evalsha" | "evalsha_ro" if self.cfg.limits.script_registry_bytes > 0 => {
                let g = match target {
                    Ok(Target::Group(g)) => Some((g, read)),
                    Ok(Target::Master(g)) => Some((g, false)),
                    _ => None,
                };
                let sha = sha_arg(args.get(1));
                let max = self.cfg.limits.script_registry_bytes;
                let body = sha.and_then(|sha| self.scripts.body(&self.shared.scripts, &sha, max));
                if let (Some((g, read)), Some(sha), Some(body)) = (g, sha, body) {
                    return self.forward_script(st, g, read, sha, body, req);
                }
            }
            _ => {}
        }
        self.send_to_target(st, target, read, req)
    }

    /// Sends an `EVALSHA` of a known script to group `g`, keeping its frame
    /// for a retry. The first on a backend connection (since it connected)
    /// goes after a `SCRIPT LOAD` of the body, so that a group added by a
    /// grow, or a server restarted or promoted, never answers `NOSCRIPT`:
    /// the retry (which runs the call after whatever the connection carried
    /// meanwhile) is left for a server that flushed its scripts behind
    /// keyway's back.
    fn forward_script(
        &mut self,
        st: &mut ClientState,
        g: GroupIndex,
        read: bool,
        sha: Sha,
        body: Arc<[u8]>,
        req: Req<'_>,
    ) {
        let Req { args, raw, place } = req;
        let b = self.client_conn(st, g, read);
        if let Some(why) = self.backends.down_error(b) {
            self.stats.errors_backend += 1;
            self.stats.requests_local += 1;
            return answer_error(st, &why, place);
        }
        let seq = match place.at {
            None => st.queue.push_waiting(),
            Some(seq) => {
                st.queue.set_waiting(seq);
                seq
            }
        };
        let mut frame = Vec::new();
        match raw {
            Some(bytes) => frame.extend_from_slice(bytes),
            None => encode::request(&mut frame, args),
        }
        self.stats.requests_forwarded += 1;
        if !self.scripts.loaded_on(b, self.backends.conns[b].gen, sha) {
            self.stats.scripts_preloaded += 1;
            self.discard(b, |out| {
                encode::array_header(out, 3);
                encode::bulk(out, b"SCRIPT");
                encode::bulk(out, b"LOAD");
                encode::bulk(out, &body);
            });
        }
        self.enqueue(st, b, seq, Purpose::Script, |out| {
            out.extend_from_slice(&frame)
        });
        let key = (st.me.idx, st.me.gen, seq);
        self.scripts.retries.insert(key, Retry { body, frame });
    }

    /// Sends the undo commands of failed fan-outs (replies discarded).
    pub(crate) fn run_undo(&mut self) {
        for (g, cmd) in std::mem::take(&mut self.scripts.undo) {
            if usize::from(g) >= self.cfg.table.groups().len() {
                continue;
            }
            let b = self.backends.conn_for(g, 0, self.now_ms);
            if self.backends.down_error(b).is_some() {
                tracing::warn!(
                    core = self.core,
                    group = %self.cfg.table.group(g).name,
                    "could not undo a partial fan-out (FUNCTION LOAD, CONFIG SET): the group is down"
                );
                continue;
            }
            self.stats.scripts_undone += 1;
            // An undo of CONFIG SET is a maintenance command (see
            // `engine::backend_acl`); of FUNCTION LOAD, harmless as one.
            let admin = self.backends.elevate(b, self.now_ms);
            self.discard(b, |out| out.extend_from_slice(&cmd));
            if admin {
                self.backends.restore(b, self.now_ms);
            }
        }
    }

    /// Appends a command whose reply nobody awaits to connection `b`.
    fn discard(&mut self, b: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let (cfg, now_ms) = (&*self.cfg, self.now_ms);
        let (versions, wake) = (&mut self.versions, &mut self.wake);
        let mut ignore = None;
        (self.backends).append(
            b,
            Owner::Discard,
            cfg,
            now_ms,
            versions,
            wake,
            &mut ignore,
            write,
        );
    }
}

impl Worker {
    /// Drops the `EVALSHA` frames kept for clients that left (their replies
    /// go to no one, so nothing else drops them); every tick.
    pub(super) fn prune_scripts(&mut self) {
        let retries = &mut self.ctx.scripts.retries;
        if !retries.is_empty() {
            let clients = &mut self.clients;
            retries.retain(|&(idx, gen, _), _| {
                live_client(clients, idx, gen).is_some_and(|c| c.st.wants_replies())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shas_are_redis_shas() {
        // redis-cli SCRIPT LOAD "return 1"
        assert_eq!(
            &sha_of(b"return 1"),
            b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
        assert_eq!(
            sha_arg(b"E0E1F9FABFC9D4800C877A703B823AC0578FF8DB"),
            Some(*b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
        );
        assert_eq!(sha_arg(b"e0e1"), None);
    }

    #[test]
    fn the_registry_is_bounded_by_bytes_oldest_first() {
        let reg = ScriptRegistry::default();
        let mut cache = ScriptCache::default();
        cache.register(&reg, b"return 1", 20);
        cache.register(&reg, b"return 22", 20);
        assert_eq!(reg.bytes(), 17);
        cache.register(&reg, b"return 333", 20);
        assert_eq!(reg.bytes(), 19, "the oldest went");
        let mut other = ScriptCache::default();
        assert!(other.body(&reg, &sha_of(b"return 1"), 20).is_none());
        assert!(other.body(&reg, &sha_of(b"return 22"), 20).is_some());
        assert!(cache.body(&reg, &sha_of(b"return 333"), 20).is_some());
        assert_eq!(cache.inserted, 3, "copied up to the last insertion");
        cache.register(&reg, &[b'x'; 21], 20);
        assert_eq!(reg.bytes(), 19, "a body over the limit is not kept");
        cache.register(&reg, b"return 4", 0);
        assert!(
            cache.body(&reg, &sha_of(b"return 4"), 20).is_none(),
            "0: none"
        );
        reg.clear();
        assert!(cache.body(&reg, &sha_of(b"return 333"), 20).is_none());
        assert!(
            other.body(&reg, &sha_of(b"return 22"), 20).is_none(),
            "every core forgets"
        );
        assert_eq!(reg.bytes(), 0);
        cache.register(&reg, b"return 5", 20);
        assert!(
            other.body(&reg, &sha_of(b"return 5"), 20).is_some(),
            "after a flush"
        );
    }
}
