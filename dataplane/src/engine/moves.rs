//! Requests on migrating slots (DESIGN §4).
//!
//! A slot being moved from group A to group B is `Moving` in the table: before
//! a command on one of its keys is sent to B, the worker asks A to move the
//! keys (`MIGRATE B_host B_port "" 0 timeout KEYS k…`, all keys of a command
//! in one call per source), and only when A has answered sends the command —
//! kept meanwhile in its client's reply slot as a [`Deferred`] — to B. So no
//! write ever reaches A for a migrating slot. `+NOKEY` means the keys are not
//! on A (already moved, or never there). A key a core saw leave A (a batch
//! answered `+OK` or `+NOKEY`) stays off A while the table stands, so later
//! commands on it go straight to B (`move_batch::MovedKeys`).
//!
//! A failed move (timeout, target unreachable, an error from the target) is
//! retried with a doubled timeout, one MIGRATE per key, so that each key's
//! answer is known. A key the target already has (`BUSYKEY`) is a copy left
//! by an earlier MIGRATE that timed out after the target had restored it:
//! nothing writes to A for a moving slot and nothing reaches B for a key
//! until its move succeeded, so both copies are the same, and the worker
//! deletes A's (`DEL`) before it sends the command on. `REPLACE` is never
//! used: a late RESTORE from a timed-out MIGRATE could then overwrite a newer
//! value on B. After `move_attempts` the command gets `-TRYAGAIN`; its keys
//! stay where they are, so nothing is lost.
//!
//! A slot about to move is `Blocked`: commands on it are held (sent nowhere)
//! until the next table, so that no data plane writes to A while another has
//! started moving keys from it. A hold lasts until every data plane has acked
//! the blocked version (a fraction of a second) and at most `hold_timeout`,
//! after which the command gets `-TRYAGAIN`. A group on hold (a failover or
//! switchover under way: `GroupRoute::hold`) is held the same way: the
//! table routes its slots, and moves from or to it, as `Blocked`, and a
//! fan-out while any group is on hold is held whole.
//!
//! Order: while any request of a client is kept back, its later routed
//! requests are kept back behind it and dispatched strictly in order
//! ([`Scheduler::keep_behind`](super::deferred::Scheduler::keep_behind)), so that no request overtakes an earlier one of
//! the same client on the same key (an `MSET` waiting for one key's move
//! and a `GET` of another of its keys, say).

use keyway_protocol::resp::encode;

use super::backend::Purpose;
use super::backends::Backends;
use super::client::ClientState;
use super::deferred::{keep_back, kept, Scheduler};
use super::pending::{Deferred, Seq};
use super::replies::Refusal;
use super::route::{Move, Req};
use super::versions::VersionCounts;
use super::{Ctx, Stats, Wake};
use crate::config::LiveConfig;
use crate::routing::GroupIndex;

/// Most keys of one request moved one MIGRATE each; more are moved in one
/// call (an error on those is retried as a whole). (The count part numbers
/// left for them when a move's purpose was a range of integers; kept.)
pub(crate) const MAX_SINGLE: usize = 4078;

/// What moving a request's keys touches besides its client: the config
/// the move is decided under, the backend connections its MIGRATEs and
/// `DEL`s go on, the scheduler the request waits in, and counters.
/// Borrowed from the engine's `Ctx` for one request ([`Migrator::of`]).
#[derive(Debug)]
pub(super) struct Migrator<'a> {
    pub cfg: &'a LiveConfig,
    pub now_ms: u64,
    pub backends: &'a mut Backends,
    pub sched: &'a mut Scheduler,
    pub versions: &'a mut VersionCounts,
    pub wake: &'a mut Wake,
    pub stats: &'a mut Stats,
    /// Set when a move fills its connection's write buffer past
    /// `backend.write_buffer_limit`, as `Ctx::enqueue` does for requests.
    pub backpressure: &'a mut Option<usize>,
    /// The request's keys' moves, (source, target, key's argument), as
    /// routing found them.
    pub moves: &'a mut Vec<Move>,
}

impl<'a> Migrator<'a> {
    /// The parts of `ctx` a key move touches.
    pub(super) fn of(ctx: &'a mut Ctx) -> Migrator<'a> {
        Migrator {
            cfg: &ctx.cfg,
            now_ms: ctx.now_ms,
            backends: &mut ctx.backends,
            sched: &mut ctx.sched,
            versions: &mut ctx.versions,
            wake: &mut ctx.wake,
            stats: &mut ctx.stats,
            backpressure: &mut ctx.backpressure,
            moves: &mut ctx.scratch.moves,
        }
    }

    /// Moves the request's keys, then dispatches it again (see the module
    /// documentation): on the first attempt in one MIGRATE per source, on
    /// retries one MIGRATE per key.
    pub(super) fn move_first(&mut self, st: &mut ClientState, req: Req<'_>) {
        let Req { args, place, .. } = req;
        let mut moves = std::mem::take(self.moves);
        moves.sort_by_key(|&(from, to, _)| (from, to));
        let mut d = kept(req, self.now_ms);
        d.moved_at = Some(self.cfg.table.version);
        // (source, target, first, end, single): a MIGRATE of moves[first..end],
        // or of one key whose part names its index in `d.single`.
        let mut calls: Vec<(GroupIndex, GroupIndex, usize, usize, Option<u16>)> = Vec::new();
        for (i, &(from, to, k)) in moves.iter().enumerate() {
            if place.attempt > 0 && d.single.len() < MAX_SINGLE {
                calls.push((from, to, i, i + 1, Some(d.single.len() as u16)));
                d.single.push((from, k));
                continue;
            }
            match calls.last_mut() {
                Some(c) if c.0 == from && c.1 == to && c.4.is_none() => c.3 = i + 1,
                _ => calls.push((from, to, i, i + 1, None)),
            }
        }
        let seq = keep_back(st, place, d);
        let waiter = (st.me.idx, st.me.gen, seq);
        let timeout = move_timeout(self.cfg, place.attempt);
        for (from, to, start, end, single) in calls {
            let b = self.backends.conn_for(from, st.conn_slot, self.now_ms);
            if let Some(why) = self.backends.down_error(b) {
                if let Some(d) = st.queue.deferred_mut(seq) {
                    d.failure.get_or_insert_with(|| why.to_string());
                }
                continue;
            }
            let group = self.cfg.table.group(to);
            let target = match &group.master {
                Ok(a) => *a,
                Err(reason) => {
                    let why = Refusal::BackendDown {
                        group: group.name.clone(),
                        reason: reason.clone(),
                    };
                    if let Some(d) = st.queue.deferred_mut(seq) {
                        d.failure.get_or_insert_with(|| why.to_string());
                    }
                    continue;
                }
            };
            let keys = &moves[start..end];
            let waits = if place.attempt == 0 {
                // Coalesced with other requests' moves (see `move_batch`).
                let keys = keys.iter().map(|&(_, _, k)| args.get(k as usize).to_vec());
                self.sched.join((b, target), keys, waiter)
            } else {
                1
            };
            if let Some(d) = st.queue.deferred_mut(seq) {
                d.moves_left += waits;
            }
            if place.attempt == 0 {
                continue;
            }
            self.stats.key_moves += 1;
            let purpose = single.map_or(Purpose::Move, Purpose::MoveKey);
            // MIGRATE is a maintenance command (see `engine::backend_acl`).
            let admin = self.backends.elevate(b, self.now_ms);
            let (n, opts) = self.backends.migrate_options(target);
            let auth = (n, opts.to_vec());
            self.send(st, b, seq, purpose, |out| {
                write_migrate(
                    out,
                    target,
                    timeout,
                    (auth.0, auth.1.as_slice()),
                    keys.iter().map(|&(_, _, k)| args.get(k as usize)),
                );
            });
            if admin {
                self.backends.restore(b, self.now_ms);
            }
        }
        *self.moves = moves;
        self.sched.ready_if(st, seq);
    }

    /// Deletes on their sources `keys` (source, key) of `d`, found on both
    /// sides, then lets the request go on (its slot waits for the `DEL`
    /// replies).
    pub(super) fn delete_busy(
        &mut self,
        st: &mut ClientState,
        seq: Seq,
        mut d: Deferred,
        mut keys: Vec<(GroupIndex, Vec<u8>)>,
    ) {
        d.busy.clear();
        keys.sort_unstable();
        keys.dedup();
        let mut calls: Vec<(GroupIndex, usize, usize)> = Vec::new();
        for (i, &(from, _)) in keys.iter().enumerate() {
            match calls.last_mut() {
                Some(c) if c.0 == from => c.2 = i + 1,
                _ => calls.push((from, i, i + 1)),
            }
        }
        d.moves_left = calls.len() as u16;
        self.stats.keys_deleted_on_source += keys.len() as u64;
        st.queue.set_deferred(seq, d);
        for (from, start, end) in calls {
            let b = self.backends.conn_for(from, st.conn_slot, self.now_ms);
            if let Some(why) = self.backends.down_error(b) {
                if let Some(d) = st.queue.deferred_mut(seq) {
                    d.failure.get_or_insert_with(|| why.to_string());
                    d.moves_left -= 1;
                }
                continue;
            }
            let keys = &keys[start..end];
            self.send(st, b, seq, Purpose::Move, |out| {
                encode::array_header(out, 1 + keys.len());
                encode::bulk(out, b"DEL");
                for (_, k) in keys {
                    encode::bulk(out, k);
                }
            });
        }
        self.sched.ready_if(st, seq);
    }

    /// Appends a move (`purpose`) for request `seq` to backend `b`, as
    /// `Ctx::enqueue` does a request once its backend is known to be up:
    /// callers check the source first.
    fn send(
        &mut self,
        st: &ClientState,
        b: usize,
        seq: Seq,
        purpose: Purpose,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let owner = st.owner(seq, purpose);
        let (cfg, now_ms) = (self.cfg, self.now_ms);
        let (versions, wake) = (&mut *self.versions, &mut *self.wake);
        (self.backends).append(
            b,
            owner,
            cfg,
            now_ms,
            versions,
            wake,
            self.backpressure,
            write,
        );
    }
}

/// The MIGRATE timeout of move attempt `attempt`: doubled on each retry,
/// capped at 80% of the backend timeout (a slower MIGRATE would fail the
/// whole connection).
pub(crate) fn move_timeout(cfg: &LiveConfig, attempt: u8) -> u64 {
    let mut timeout = cfg
        .migration
        .move_timeout
        .0
        .saturating_mul(1 << attempt.min(10));
    if let Some(t) = cfg.backend.timeout.enabled() {
        timeout = timeout.min((t.as_millis() as u64 * 4 / 5).max(1));
    }
    timeout
}

/// Encodes `MIGRATE host port "" 0 timeout [AUTH2 user pass] KEYS k…`;
/// `auth` is the target's login options, already encoded, and their count
/// (`Backends::migrate_options`; 0: none).
pub(crate) fn write_migrate<'k>(
    out: &mut Vec<u8>,
    target: std::net::SocketAddr,
    timeout_ms: u64,
    auth: (usize, &[u8]),
    keys: impl ExactSizeIterator<Item = &'k [u8]>,
) {
    encode::array_header(out, 7 + auth.0 + keys.len());
    encode::bulk(out, b"MIGRATE");
    encode::bulk(out, target.ip().to_string().as_bytes());
    encode::bulk(out, target.port().to_string().as_bytes());
    encode::bulk(out, b"");
    encode::bulk(out, b"0");
    encode::bulk(out, timeout_ms.to_string().as_bytes());
    out.extend_from_slice(auth.1);
    encode::bulk(out, b"KEYS");
    for k in keys {
        encode::bulk(out, k);
    }
}

/// Records a move's reply (MIGRATE or DEL) for a deferred request; true when
/// it was the last one expected. `single` is the index in
/// [`Deferred::single`] of the key a per-key MIGRATE moved (`None`: a
/// MIGRATE of several keys, or a `DEL`).
pub(crate) fn move_replied(d: &mut Deferred, single: Option<u16>, reply: &[u8]) -> bool {
    let ok = reply == b"+OK\r\n" || reply == b"+NOKEY\r\n" || reply.first() == Some(&b':');
    if !ok {
        let text = String::from_utf8_lossy(&reply[1.min(reply.len())..])
            .trim_end()
            .to_string();
        match single {
            Some(i) if text.contains("BUSYKEY") => d.busy.push(i),
            _ => {
                d.failure.get_or_insert(text);
            }
        }
    }
    d.moves_left = d.moves_left.saturating_sub(1);
    d.moves_left == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Deferred {
        Deferred {
            moves_left: 2,
            moved_at: Some(1),
            ..Deferred::default()
        }
    }

    const BUSY: &[u8] =
        b"-ERR Target instance replied with error: BUSYKEY Target key name already exists.\r\n";

    #[test]
    fn ok_nokey_and_del_replies_are_success_anything_else_a_failure() {
        let mut x = d();
        assert!(!move_replied(&mut x, None, b"+OK\r\n"));
        assert!(move_replied(&mut x, None, b"+NOKEY\r\n"));
        assert!(x.failure.is_none() && x.ready());
        let mut x = d();
        move_replied(&mut x, None, b":1\r\n");
        assert!(x.failure.is_none());
        let mut x = d();
        move_replied(&mut x, None, BUSY);
        move_replied(
            &mut x,
            None,
            b"-IOERR error or timeout reading to target instance\r\n",
        );
        assert!(
            x.failure.unwrap().contains("BUSYKEY"),
            "the first failure is kept; a batch's BUSYKEY is a failure"
        );
    }

    #[test]
    fn a_single_keys_busykey_marks_it_for_deletion_on_the_source() {
        let mut x = d();
        x.single = vec![(0, 1), (0, 3)];
        assert!(!move_replied(&mut x, Some(1), BUSY));
        assert!(move_replied(&mut x, Some(0), b"+OK\r\n"));
        assert!(x.failure.is_none());
        assert_eq!(x.busy, vec![1]);
    }
}
