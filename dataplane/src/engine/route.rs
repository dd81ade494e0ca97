//! Where a request goes: the place of its reply ([`Place`], filled by
//! [`answer_error`] or taken by [`merge_in_place`]), and what its keys' slots
//! say ([`groups_of_keys`], [`Target`]). Pure functions of the
//! routing table, used by both the request path ([`super::dispatch`]) and
//! the migration path ([`super::moves`]).

use keyway_protocol::resp::Args;

use super::client::ClientState;
use super::move_batch::MovedKeys;
use super::pending::Seq;
use super::replies::Refusal;
use super::split::Merge;
use crate::routing::{GroupIndex, RoutingTable, SlotRoute};

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
    /// It is a transaction's `EXEC` as keyway encodes it (see
    /// [`super::stateful`]), never a client's own request.
    pub exec: bool,
}

impl Place {
    /// A request just parsed.
    pub const NEW: Place = Place {
        at: None,
        moved: false,
        attempt: 0,
        since_ms: None,
        exec: false,
    };
}

/// A request being dispatched: its arguments, its bytes when they can be
/// forwarded as they are (multibulk; `None` for an inline request), and
/// where its reply goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Req<'r> {
    pub args: &'r Args<'r>,
    pub raw: Option<&'r [u8]>,
    pub place: Place,
}

/// The bit of group `g` in a client's set of groups written to (see
/// `ClientState::wrote`; groups beyond 64 share bits, so a `WAIT` may
/// include a group the client did not write to, never miss one).
#[inline(always)]
pub(crate) fn group_bit(g: GroupIndex) -> u64 {
    1 << (g % 64)
}

/// Where a request's keys lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Send it to this group; its keys' slots are stable, so a read may go
    /// to one of the group's replicas.
    Group(GroupIndex),
    /// Send it to this group's master: a key's slot is migrating (a key
    /// just moved there may not have reached the group's replicas).
    Master(GroupIndex),
    /// A key's slot is blocked: hold it.
    Hold,
    /// Keys must be moved first (listed in the worker's scratch `moves`).
    MoveFirst,
}

/// A key to move: (source, target, argument index).
pub(crate) type Move = (GroupIndex, GroupIndex, u32);

/// What routing a request's keys found, besides each key's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeysRoute {
    /// Every key's slot is stable: send to the groups.
    Stable,
    /// A key's slot is moving and its keys are moved already: send to the
    /// groups' masters.
    Moved,
    /// Hold or move keys first.
    Wait(Target),
}

/// The group each key will be served by (`groups[i]` for `keys[i]`: the
/// owner, or the target of a moving slot), and whether the request must be
/// held or have keys moved first (those go to `moves`: the keys of moving
/// slots, unless the request's keys were just moved or `known` has them as
/// moved under this table).
pub(crate) fn groups_of_keys(
    table: &RoutingTable,
    known: &MovedKeys,
    args: &Args<'_>,
    keys: &[u32],
    groups: &mut Vec<GroupIndex>,
    moves: &mut Vec<Move>,
    place: Place,
) -> Result<KeysRoute, Refusal<'static>> {
    groups.clear();
    moves.clear();
    let mut hold = false;
    let mut moving = false;
    for &k in keys {
        let slot = table.slot_of(args.get(k as usize));
        let g = match table.route(slot) {
            SlotRoute::Stable(g) => g,
            SlotRoute::Unassigned => return Err(Refusal::ClusterDown { slot }),
            SlotRoute::Blocked { to, .. } => {
                hold = true;
                to
            }
            SlotRoute::Moving { from, to } => {
                if !place.moved && !known.contains(table.version, args.get(k as usize)) {
                    moves.push((from, to, k));
                }
                moving = true;
                to
            }
        };
        groups.push(g);
    }
    Ok(if hold {
        KeysRoute::Wait(Target::Hold)
    } else if !moves.is_empty() {
        KeysRoute::Wait(Target::MoveFirst)
    } else if moving {
        KeysRoute::Moved
    } else {
        KeysRoute::Stable
    })
}

/// The target of a request all of whose keys must be in one group, given
/// what [`groups_of_keys`] found.
pub(crate) fn one_group(
    groups: &[GroupIndex],
    route: KeysRoute,
) -> Result<Target, Refusal<'static>> {
    let first = *groups.first().ok_or(Refusal::NoKeyToRoute)?;
    if groups.iter().any(|&g| g != first) {
        return Err(Refusal::CrossSlot);
    }
    Ok(match route {
        KeysRoute::Stable => Target::Group(first),
        KeysRoute::Moved => Target::Master(first),
        KeysRoute::Wait(t) => t,
    })
}

/// Takes the request's reply slot (the next, or its own if it was kept
/// back) for a merge of its parts' replies.
pub(super) fn merge_in_place(st: &mut ClientState, place: Place, merge: Merge) -> Seq {
    match place.at {
        None => st.queue.push_merge(merge),
        Some(seq) => {
            st.queue.set_merge(seq, merge);
            seq
        }
    }
}

/// Answers an error in the request's place: at once for a new request (in
/// turn after the replies owed), in its slot for one kept back.
pub(super) fn answer_error(st: &mut ClientState, why: &Refusal<'_>, place: Place) {
    match place.at {
        None => st.refuse(why),
        Some(seq) => st.queue.complete(seq, &why.to_reply(), st.out.buf_mut()),
    }
}

/// Answers `reply` in the request's place (see [`answer_error`]).
pub(super) fn answer_in_place(st: &mut ClientState, reply: &[u8], place: Place) {
    match place.at {
        None => st.reply(|o| o.extend_from_slice(reply)),
        Some(seq) => st.queue.complete(seq, reply, st.out.buf_mut()),
    }
}
