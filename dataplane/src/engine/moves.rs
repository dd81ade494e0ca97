//! Requests on migrating slots (DESIGN §4).
//!
//! A slot being moved from group A to group B is `Moving` in the table: before
//! a command on one of its keys is sent to B, the worker asks A to move the
//! keys (`MIGRATE B_host B_port "" 0 timeout [REPLACE] KEYS k…`, all keys of a
//! command in one call), and only when A has answered sends the command —
//! kept meanwhile in its client's reply slot as a [`Deferred`] — to B. So no
//! write ever reaches A for a migrating slot. `+NOKEY` means the keys are not
//! on A (already moved, or never there). A failed move (timeout, target
//! unreachable, `BUSYKEY` after a timed-out MIGRATE whose RESTORE did happen)
//! is retried with `REPLACE` and a doubled timeout: with no writes reaching A,
//! a key on both sides has identical copies, and `REPLACE` keeps one, on B.
//! After `move_attempts` the command gets `-TRYAGAIN`; nothing is lost.
//!
//! A slot about to move is `Blocked`: commands on it are held (sent nowhere)
//! until the next table, so that no data plane writes to A while another has
//! started moving keys from it. A hold lasts until every data plane has acked
//! the blocked version (a fraction of a second) and at most `hold_timeout`,
//! after which the command gets `-TRYAGAIN`.

use keyway_protocol::resp::{encode, Args};

use super::client::ClientState;
use super::dispatch::{clusterdown, CROSSSLOT};
use super::pending::{Deferred, Seq};
use super::Ctx;
use crate::routing::{GroupIndex, SlotRoute};

/// Part number of a MIGRATE in flight for a deferred request.
pub(crate) const MOVE: u16 = u16::MAX - 1;

/// Where a request's reply goes, and what has happened to it so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place {
    /// `None` for a new request (it takes the next reply slot); the slot of a
    /// request that was kept back.
    pub at: Option<Seq>,
    /// Its keys were moved under the current table: send it straight to the
    /// target.
    pub moved: bool,
    /// Move attempts so far.
    pub attempt: u8,
    /// When it was first kept back.
    pub since_ms: Option<u64>,
}

impl Place {
    /// A request just parsed.
    pub const NEW: Place = Place {
        at: None,
        moved: false,
        attempt: 0,
        since_ms: None,
    };
}

/// Where a request's keys lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Send it to this group.
    Group(GroupIndex),
    /// A key's slot is blocked: hold it.
    Hold,
    /// Keys must be moved first (listed in the worker's scratch `moves`).
    MoveFirst,
}

/// A key to move: (source, target, argument index).
pub(crate) type Move = (GroupIndex, GroupIndex, u32);

impl Ctx {
    /// The group each key will be served by (`groups[i]` for `keys[i]`: the
    /// owner, or the target of a moving slot), and whether the request must be
    /// held or have keys moved first (those go to `moves`).
    pub(crate) fn groups_of_keys(
        &self,
        args: &Args<'_>,
        keys: &[u32],
        groups: &mut Vec<GroupIndex>,
        moves: &mut Vec<Move>,
        place: Place,
    ) -> Result<Option<Target>, String> {
        groups.clear();
        moves.clear();
        let table = &self.cfg.table;
        let mut hold = false;
        for &k in keys {
            let slot = table.slot_of(args.get(k as usize));
            let g = match table.route(slot) {
                SlotRoute::Stable(g) => g,
                SlotRoute::Unassigned => return Err(clusterdown(slot)),
                SlotRoute::Blocked { to, .. } => {
                    hold = true;
                    to
                }
                SlotRoute::Moving { from, to } => {
                    if !place.moved {
                        moves.push((from, to, k));
                    }
                    to
                }
            };
            groups.push(g);
        }
        Ok(if hold {
            Some(Target::Hold)
        } else if moves.is_empty() {
            None
        } else {
            Some(Target::MoveFirst)
        })
    }

    /// The target of a request all of whose keys must be in one group.
    pub(crate) fn target_of_keys(
        &mut self,
        args: &Args<'_>,
        keys: &[u32],
        place: Place,
    ) -> Result<Target, String> {
        let mut groups = std::mem::take(&mut self.scratch.groups);
        let mut moves = std::mem::take(&mut self.scratch.moves);
        let target = self
            .groups_of_keys(args, keys, &mut groups, &mut moves, place)
            .and_then(|t| {
                let first = *groups.first().ok_or("ERR no key to route by")?;
                if groups.iter().any(|&g| g != first) {
                    return Err(CROSSSLOT.to_string());
                }
                Ok(t.unwrap_or(Target::Group(first)))
            });
        self.scratch.groups = groups;
        self.scratch.moves = moves;
        target
    }

    fn deferred(&self, args: &Args<'_>, raw: Option<&[u8]>, place: Place) -> Deferred {
        let frame = match raw {
            Some(bytes) => bytes.to_vec(),
            None => {
                let mut v = Vec::new();
                encode::request(&mut v, args);
                v
            }
        };
        Deferred {
            frame,
            moves_left: 0,
            failure: None,
            attempt: place.attempt,
            moved_at: None,
            since_ms: place.since_ms.unwrap_or(self.now_ms),
        }
    }

    fn keep_back(st: &mut ClientState, place: Place, d: Deferred) -> Seq {
        match place.at {
            None => st.queue.push_deferred(d),
            Some(seq) => {
                st.queue.set_deferred(seq, d);
                seq
            }
        }
    }

    /// Holds a request on a blocked slot until the table changes.
    pub(crate) fn hold(
        &mut self,
        st: &mut ClientState,
        args: &Args<'_>,
        raw: Option<&[u8]>,
        place: Place,
    ) {
        let d = self.deferred(args, raw, place);
        let seq = Self::keep_back(st, place, d);
        self.held.push((st.me.idx, st.me.gen, seq));
        if place.at.is_none() {
            self.stats.requests_held += 1;
        }
    }

    /// Moves the request's keys, then dispatches it again (see the module
    /// documentation).
    pub(crate) fn move_first(
        &mut self,
        st: &mut ClientState,
        args: &Args<'_>,
        raw: Option<&[u8]>,
        place: Place,
    ) {
        let mut moves = std::mem::take(&mut self.scratch.moves);
        moves.sort_unstable_by_key(|&(from, to, _)| (from, to));
        let mut d = self.deferred(args, raw, place);
        d.moved_at = Some(self.cfg.table.version);
        let mut runs: Vec<(GroupIndex, GroupIndex, usize, usize)> = Vec::new();
        for (i, &(from, to, _)) in moves.iter().enumerate() {
            match runs.last_mut() {
                Some(r) if r.0 == from && r.1 == to => r.3 = i + 1,
                _ => runs.push((from, to, i, i + 1)),
            }
        }
        d.moves_left = runs.len() as u16;
        let seq = Self::keep_back(st, place, d);
        let timeout = self
            .cfg
            .migration
            .move_timeout
            .0
            .saturating_mul(1 << place.attempt.min(10));
        let replace = place.attempt > 0;
        for (from, to, start, end) in runs {
            let b = self.conn_for(from, st.conn_slot);
            if let Some(msg) = self.down_error(b) {
                if let Some(d) = st.queue.deferred_mut(seq) {
                    d.failure.get_or_insert(msg);
                    d.moves_left -= 1;
                    if d.moves_left == 0 {
                        self.redispatch.push((st.me.idx, st.me.gen, seq));
                    }
                }
                continue;
            }
            let target = self.cfg.table.group(to).master;
            let keys = &moves[start..end];
            self.stats.key_moves += 1;
            self.enqueue(st, b, seq, MOVE, |out| {
                encode::array_header(out, 7 + usize::from(replace) + keys.len());
                encode::bulk(out, b"MIGRATE");
                encode::bulk(out, target.ip().to_string().as_bytes());
                encode::bulk(out, target.port().to_string().as_bytes());
                encode::bulk(out, b"");
                encode::bulk(out, b"0");
                encode::bulk(out, timeout.to_string().as_bytes());
                if replace {
                    encode::bulk(out, b"REPLACE");
                }
                encode::bulk(out, b"KEYS");
                for &(_, _, k) in keys {
                    encode::bulk(out, args.get(k as usize));
                }
            });
        }
        self.scratch.moves = moves;
    }
}

/// Records a MIGRATE reply for a deferred request; true when it was the last.
pub(crate) fn move_replied(d: &mut Deferred, reply: &[u8]) -> bool {
    if reply != b"+OK\r\n" && reply != b"+NOKEY\r\n" {
        let text = String::from_utf8_lossy(&reply[1.min(reply.len())..])
            .trim_end()
            .to_string();
        d.failure.get_or_insert(text);
    }
    d.moves_left = d.moves_left.saturating_sub(1);
    d.moves_left == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Deferred {
        Deferred {
            frame: Vec::new(),
            moves_left: 2,
            failure: None,
            attempt: 0,
            moved_at: Some(1),
            since_ms: 0,
        }
    }

    #[test]
    fn ok_and_nokey_are_success_anything_else_a_failure() {
        let mut x = d();
        assert!(!move_replied(&mut x, b"+OK\r\n"));
        assert!(move_replied(&mut x, b"+NOKEY\r\n"));
        assert!(x.failure.is_none());
        let mut x = d();
        move_replied(
            &mut x,
            b"-ERR Target instance replied with error: BUSYKEY Target key name already exists.\r\n",
        );
        move_replied(
            &mut x,
            b"-IOERR error or timeout reading to target instance\r\n",
        );
        assert!(
            x.failure.unwrap().contains("BUSYKEY"),
            "the first failure is kept"
        );
    }
}
