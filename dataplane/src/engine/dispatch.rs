//! From parsed request to backend write buffer or local reply: command lookup,
//! arity, policy, key routing, splitting, and the enqueue itself.

use keyway_protocol::command::{self, extract_keys, flag, CommandSpec, Lookup};
use keyway_protocol::resp::{encode, Args, Frame};

use super::backend::{Inflight, Link, WHOLE};
use super::client::{Client, ClientState, Phase};
use super::local::{self, LocalCtx};
use super::policy::{policy, stream_read_blocks, Keys, Policy};

use super::moves::{KeysRoute, Place, Target};
use super::split::{plan, write_part, Merge, SplitKind};
use super::{Action, BackendId, Ctx};
use crate::routing::{GroupIndex, SlotRoute};

pub(crate) const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same group";

/// Whether a request's command is `POST` or `Host:`: the first lines of an
/// HTTP request, which Redis treats as an attack.
fn is_http(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:")
}

/// `CLIENT KILL` for `client|kill`.
fn display_name(spec: &CommandSpec) -> String {
    spec.name.replace('|', " ").to_ascii_uppercase()
}

fn lossy(b: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned()
}

/// Redis's own message, so clients and people see what Redis would say.
fn unknown_command(args: &Args<'_>) -> String {
    let mut listed = String::new();
    for a in args.iter().skip(1) {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push('\'');
        listed.push_str(&lossy(a, room));
        listed.push_str("' ");
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {listed}",
        lossy(args.get(0), 128)
    )
}

impl Ctx {
    /// Parses and dispatches the complete requests at the start of `buf`,
    /// returning how many bytes were consumed. Stops early when the client's
    /// pipeline is full (it is then paused) or it stops reading.
    pub(crate) fn run_frames(&mut self, c: &mut Client, buf: &[u8]) -> usize {
        if c.st.limits_version != self.cfg_seq {
            c.parser.set_limits(self.cfg.limits.request_limits());
            c.st.limits_version = self.cfg_seq;
        }
        let max_pipeline = self.cfg.limits.max_pipeline;
        let mut at = 0;
        while at < buf.len() {
            if c.st.phase != Phase::Open {
                return buf.len();
            }
            if c.st.blocked_on.is_some() {
                // Bytes that arrived before the transport stopped reading.
                break;
            }
            if c.st.queue.len() >= max_pipeline {
                c.st.paused = true;
                break;
            }
            match c.parser.parse(&buf[at..]) {
                Ok(Some(frame)) => {
                    let len = frame.len();
                    let raw = match frame {
                        Frame::Multibulk { .. } => Some(&buf[at..at + len]),
                        Frame::Inline { .. } => None,
                        Frame::Empty { .. } => {
                            at += len;
                            continue;
                        }
                    };
                    let args = c.parser.args(&buf[at..]);
                    self.backpressure = None;
                    self.dispatch(&mut c.st, &args, raw, Place::NEW);
                    at += len;
                    if let Some(b) = self.backpressure.take() {
                        // Stop reading this client until that connection
                        // drains (`Worker::release_backpressure`).
                        c.st.blocked_on = Some(b);
                        self.stats.clients_backpressured += 1;
                        self.backends[b].waiters.push((c.st.me.idx, c.st.me.gen));
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.stats.errors_protocol += 1;
                    c.st.fatal(&format!("ERR {e}"));
                    return buf.len();
                }
            }
        }
        at
    }

    /// Serves one request. `raw` is the request's bytes when they can be
    /// forwarded as they are (multibulk), `None` for inline requests; `place`
    /// says whether it is new or one kept back for a migration.
    pub(crate) fn dispatch(
        &mut self,
        st: &mut ClientState,
        args: &Args<'_>,
        raw: Option<&[u8]>,
        place: Place,
    ) {
        if place.at.is_none() {
            self.stats.requests += 1;
        }
        let spec = match command::lookup(args.get(0), args.try_get(1)) {
            Lookup::Found(s) => s,
            // Not Redis commands, so checked off the hot path.
            Lookup::UnknownCommand if is_http(args.get(0)) => return self.cross_protocol(st),
            Lookup::UnknownCommand => return self.refuse(st, &unknown_command(args), place),
            Lookup::UnknownSubcommand(c) => {
                let msg = format!(
                    "ERR unknown subcommand '{}'. Try {} HELP.",
                    lossy(args.get(1), 128),
                    c.name.to_ascii_uppercase()
                );
                return self.refuse(st, &msg, place);
            }
        };
        if !spec.arity_ok(args.len()) {
            let msg = format!("ERR wrong number of arguments for '{}' command", spec.name);
            return self.refuse(st, &msg, place);
        }
        let policy = policy(spec);
        let routed = matches!(
            policy,
            Policy::Route { .. } | Policy::Split(_) | Policy::FanOut(_)
        );
        if let Some(reason) = &self.cfg.fence {
            if routed {
                let msg = format!("TRYAGAIN keyway is fenced: {reason}");
                return self.refuse(st, &msg, place);
            }
        }
        if self.memory.over && routed && place.at.is_none() {
            self.stats.requests_oom += 1;
            let msg = super::limits::oom(self.cfg.limits.max_memory);
            return self.refuse(st, &msg, place);
        }
        if place.at.is_none()
            && st.queue.has_kept()
            && matches!(
                policy,
                Policy::Route { .. } | Policy::Split(_) | Policy::FanOut(_)
            )
        {
            return self.keep_behind(st, args, raw);
        }
        // A read may go to a replica (if its group reads from them); one
        // test when no group does.
        let read = self.replica_reads && spec.has(flag::READONLY);
        match policy {
            Policy::Route {
                keys: Keys::First, ..
            } => {
                // The common case first: one key on a stable slot.
                let table = &self.cfg.table;
                let slot = table.slot_of(args.get(1));
                let target = match table.route(slot) {
                    SlotRoute::Stable(g) => return self.forward(st, g, read, args, raw, place),
                    SlotRoute::Unassigned => Err(clusterdown(slot)),
                    SlotRoute::Moving { .. } | SlotRoute::Blocked { .. } => {
                        self.target_of_keys(args, &[1], place)
                    }
                };
                self.send_to_target(st, target, read, args, raw, place)
            }
            Policy::Route {
                keyless,
                block_option,
                ..
            } => self.route(st, spec, args, raw, keyless, block_option, read, place),
            Policy::Split(kind) => self.split(st, kind, read, args, raw, place),
            Policy::FanOut(kind) => self.fan_out(st, kind, read, args, raw, place),
            Policy::Local(cmd) => {
                self.stats.requests_local += 1;
                let ctx = LocalCtx {
                    shared: &self.shared,
                    cfg: &self.cfg,
                    core: self.core,
                    now_ms: self.now_ms,
                    stats: &self.stats,
                };
                local::run(cmd, st, args, &ctx);
            }
            Policy::Unsupported(why) => {
                let msg = format!(
                    "ERR keyway does not support '{}': {why}",
                    display_name(spec)
                );
                self.refuse(st, &msg, place);
            }
        }
    }

    /// An HTTP request reached the RESP port (a browser or `curl` made to
    /// talk to keyway by a hostile page: cross-protocol scripting). As Redis
    /// does, the connection is closed at once without a reply, and logged,
    /// so nothing after the request line runs.
    fn cross_protocol(&mut self, st: &mut ClientState) {
        self.stats.clients_cross_protocol += 1;
        if let Some(left_out) = self.log.allow(self.now_ms) {
            tracing::warn!(
                client = st.id,
                peer = %st.peer,
                earlier_lines_left_out = left_out,
                "possible security attack: a client sent an HTTP request (POST or Host:) to the RESP port; connection closed"
            );
        }
        st.inbuf = Vec::new();
        st.phase = Phase::Kill;
    }

    /// Answers an error in the request's place.
    pub(crate) fn refuse(&mut self, st: &mut ClientState, msg: &str, place: Place) {
        self.stats.requests_local += 1;
        self.stats.errors_refused += 1;
        match place.at {
            None => st.error(msg),
            Some(seq) => {
                let mut reply = Vec::with_capacity(msg.len() + 3);
                encode::error(&mut reply, msg);
                st.queue.complete(seq, &reply, st.out.buf_mut());
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        st: &mut ClientState,
        spec: &CommandSpec,
        args: &Args<'_>,
        raw: Option<&[u8]>,
        keyless: &str,
        block_option: bool,
        read: bool,
        place: Place,
    ) {
        if block_option && stream_read_blocks(args) {
            let msg = format!(
                "ERR keyway does not support '{} BLOCK': blocking commands are not supported yet",
                display_name(spec)
            );
            return self.refuse(st, &msg, place);
        }
        let mut keys = std::mem::take(&mut self.scratch.keys);
        keys.clear();
        let target = match extract_keys(spec, args, &mut keys) {
            Err(e) => Err(format!("ERR {e}")),
            Ok(()) if keys.is_empty() => Err(format!(
                "ERR keyway does not support '{}' without keys: {keyless}",
                display_name(spec)
            )),
            Ok(()) => self.target_of_keys(args, &keys, place),
        };
        self.scratch.keys = keys;
        self.send_to_target(st, target, read, args, raw, place);
    }

    /// Sends, holds, moves first, or refuses, as the keys' target says; a
    /// `read` on stable slots may go to a replica.
    fn send_to_target(
        &mut self,
        st: &mut ClientState,
        target: Result<Target, String>,
        read: bool,
        args: &Args<'_>,
        raw: Option<&[u8]>,
        place: Place,
    ) {
        match target {
            Ok(Target::Group(g)) => self.forward(st, g, read, args, raw, place),
            Ok(Target::Master(g)) => self.forward(st, g, false, args, raw, place),
            Ok(Target::Hold) => self.hold(st, args, raw, place),
            Ok(Target::MoveFirst) => self.move_first(st, args, raw, place),
            Err(msg) => self.refuse(st, &msg, place),
        }
    }

    /// Sends the whole request to group `g`: to its master, or, for a
    /// `read`, to a replica it reads from if one is up.
    fn forward(
        &mut self,
        st: &mut ClientState,
        g: GroupIndex,
        read: bool,
        args: &Args<'_>,
        raw: Option<&[u8]>,
        place: Place,
    ) {
        let b = if read {
            self.read_conn(g, st.conn_slot)
        } else {
            self.conn_for(g, st.conn_slot)
        };
        if let Some(msg) = self.down_error(b) {
            self.stats.errors_backend += 1;
            self.stats.requests_local += 1;
            return match place.at {
                None => st.error(&msg),
                Some(seq) => {
                    let mut reply = Vec::new();
                    encode::error(&mut reply, &msg);
                    st.queue.complete(seq, &reply, st.out.buf_mut());
                }
            };
        }
        let seq = match place.at {
            None => st.queue.push_waiting(),
            Some(seq) => {
                st.queue.set_waiting(seq);
                seq
            }
        };
        self.stats.requests_forwarded += 1;
        self.enqueue(st, b, seq, WHOLE, |out| match raw {
            Some(bytes) => out.extend_from_slice(bytes),
            None => encode::request(out, args),
        });
    }

    /// Splits a multi-key request by group; a request whose keys share one
    /// group is forwarded whole.
    fn split(
        &mut self,
        st: &mut ClientState,
        kind: SplitKind,
        read: bool,
        args: &Args<'_>,
        raw: Option<&[u8]>,
        place: Place,
    ) {
        if kind == SplitKind::Mset && args.len() % 2 == 0 {
            return self.refuse(
                st,
                "ERR wrong number of arguments for 'mset' command",
                place,
            );
        }
        let mut sc = std::mem::take(&mut self.scratch);
        sc.keys.clear();
        sc.groups.clear();
        sc.keys
            .extend((1..args.len()).step_by(kind.stride()).map(|i| i as u32));
        let read = match self.groups_of_keys(args, &sc.keys, &mut sc.groups, &mut sc.moves, place) {
            Err(msg) => {
                self.scratch = sc;
                return self.refuse(st, &msg, place);
            }
            Ok(KeysRoute::Wait(t)) => {
                self.scratch = sc;
                return self.send_to_target(st, Ok(t), false, args, raw, place);
            }
            Ok(KeysRoute::Stable) => read,
            Ok(KeysRoute::Moved) => false,
        };
        let first = sc.groups[0];
        if sc.groups.iter().all(|&g| g == first) {
            self.scratch = sc;
            return self.forward(st, first, read, args, raw, place);
        }
        plan(&sc.groups, &mut sc.part_groups, &mut sc.key_parts);
        let merge = Merge::new(kind, sc.part_groups.len(), &sc.key_parts);
        let seq = match place.at {
            None => st.queue.push_merge(merge),
            Some(seq) => {
                st.queue.set_merge(seq, merge);
                seq
            }
        };
        self.stats.requests_split += 1;
        for (part, &g) in sc.part_groups.iter().enumerate() {
            let part = part as u16;
            let b = if read {
                self.read_conn(g, st.conn_slot)
            } else {
                self.conn_for(g, st.conn_slot)
            };
            self.enqueue(st, b, seq, part, |out| {
                write_part(out, kind, args, &sc.keys, &sc.key_parts, part)
            });
        }
        self.scratch = sc;
    }

    /// Sends the request to every group and merges the replies (`DBSIZE`);
    /// holds it whole while any group is on hold.
    fn fan_out(
        &mut self,
        st: &mut ClientState,
        kind: SplitKind,
        read: bool,
        args: &Args<'_>,
        raw: Option<&[u8]>,
        place: Place,
    ) {
        if self.cfg.table.has_holds() {
            return self.hold(st, args, raw, place);
        }
        let groups = self.cfg.table.groups().len();
        let merge = Merge::new(kind, groups, &[]);
        let seq = match place.at {
            None => st.queue.push_merge(merge),
            Some(seq) => {
                st.queue.set_merge(seq, merge);
                seq
            }
        };
        self.stats.requests_split += 1;
        for g in 0..groups {
            let b = if read {
                self.read_conn(g as GroupIndex, st.conn_slot)
            } else {
                self.conn_for(g as GroupIndex, st.conn_slot)
            };
            self.enqueue(st, b, seq, g as u16, |out| match raw {
                Some(bytes) => out.extend_from_slice(bytes),
                None => encode::request(out, args),
            });
        }
    }

    /// The error for requests to backend `b` while it is down.
    pub(crate) fn down_error(&self, b: usize) -> Option<String> {
        match &self.backends[b].link {
            Link::Down { reason, .. } => Some(format!(
                "ERR backend {} unavailable: {reason}",
                self.pools[self.backends[b].pool].group
            )),
            _ => None,
        }
    }

    /// Appends a request (or part `part` of one) for `seq` to backend `b`, or
    /// answers that part with the backend's error if it is down.
    pub(crate) fn enqueue(
        &mut self,
        st: &mut ClientState,
        b: usize,
        seq: u64,
        part: u16,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        if let Some(msg) = self.down_error(b) {
            self.stats.errors_backend += 1;
            let mut reply = Vec::with_capacity(msg.len() + 3);
            encode::error(&mut reply, &msg);
            return st
                .queue
                .complete_part(seq, part, &reply, st.out.buf_mut(), 0, |_| Vec::new());
        }
        let version = self.cfg.table.version;
        let conn = &mut self.backends[b];
        write(conn.out.buf_mut());
        conn.inflight.push_back(Inflight {
            client: st.me.idx,
            client_gen: st.me.gen,
            seq,
            part,
            version,
            sent_ms: self.now_ms,
            end: conn.out.end_offset(),
        });
        if conn.out.len() as u64 > self.cfg.backend.write_buffer_limit {
            self.backpressure = Some(b);
        }
        self.versions.add(version);
        if !conn.dirty && matches!(conn.link, Link::Up) {
            conn.dirty = true;
            self.wake.backends.push(b as u32);
        }
    }

    /// The backend connection client slot `slot` uses for group `g`'s
    /// master, starting a connection if it has none.
    #[inline]
    pub(crate) fn conn_for(&mut self, g: GroupIndex, slot: usize) -> usize {
        self.conn_in(self.group_pools[usize::from(g)], slot)
    }

    /// The connection for a read on group `g`: the next of the group's
    /// replica pools (round robin) that is up — not failing, and its
    /// connection for `slot` connected — else the master's. A replica
    /// connection not open yet is opened, but the read does not wait for
    /// it: it goes elsewhere.
    pub(crate) fn read_conn(&mut self, g: GroupIndex, slot: usize) -> usize {
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
            match self.backends[b].link {
                Link::Up => {
                    self.reads[usize::from(g)].next = (start + i + 1) % n;
                    return b;
                }
                Link::Idle => {
                    self.conn_in(p, slot);
                }
                Link::Connecting { .. } | Link::Down { .. } => {}
            }
        }
        self.conn_for(g, slot)
    }

    /// The connection client slot `slot` uses in pool `p`, starting a
    /// connection if it has none.
    #[inline]
    pub(crate) fn conn_in(&mut self, p: usize, slot: usize) -> usize {
        let pool = &self.pools[p];
        let b = pool.conns[slot % pool.conns.len()];
        let conn = &mut self.backends[b];
        if let (Link::Idle, super::PoolKey::Addr(addr)) = (&conn.link, &pool.key) {
            let addr = *addr;
            self.next_gen = self.next_gen.wrapping_add(1);
            conn.gen = self.next_gen;
            conn.link = Link::Connecting {
                since_ms: self.now_ms,
            };
            self.actions.push(Action::Connect {
                id: BackendId {
                    idx: b as u32,
                    gen: conn.gen,
                },
                addr,
                timeout: self.cfg.backend.connect_timeout.duration(),
            });
        }
        b
    }
}

pub(crate) fn clusterdown(slot: u32) -> String {
    format!("CLUSTERDOWN Hash slot {slot} is not served by any group")
}

#[cfg(test)]
mod tests {
    use keyway_protocol::resp::Span;

    use super::*;

    #[test]
    fn unknown_command_matches_redis() {
        let buf = b"FOObarbaz";
        let spans = [Span::new(0, 3), Span::new(3, 3), Span::new(6, 3)];
        assert_eq!(
            unknown_command(&Args::new(buf, &spans)),
            "ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' "
        );
        let long = vec![b'x'; 300];
        let spans = [Span::new(0, 3), Span::new(0, 300), Span::new(0, 300)];
        let mut buf = b"FOO".to_vec();
        buf.extend_from_slice(&long);
        let msg = unknown_command(&Args::new(&long, &spans));
        assert!(msg.len() < 300, "{}", msg.len());
    }
}
