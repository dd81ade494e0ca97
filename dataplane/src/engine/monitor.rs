//! `MONITOR`: the merged stream of every group's commands.
//!
//! A client's `MONITOR` leases one dedicated connection per group's master
//! (`Backends::lease`, counted in `backend.dedicated_connections`), sends
//! `MONITOR` on each, and answers the client `+OK` once every group has
//! confirmed (so a command sent after the client read `+OK` is seen, as with
//! Redis). Each connection is then marked `BackendConn::monitor`: its input
//! is not matched against `inflight` but read as lines
//! (`Worker::monitor_input`), each appended as it is (Redis's own
//! `+<time> [<db> <addr>] "cmd" …` simple string, the same in RESP2 and
//! RESP3) to the client's output through `ClientState::reply`, so the
//! client's output limits apply: a monitoring client that does not read is
//! closed by `limits.output_hard_limit` (at once) or the soft limit (over
//! time), as Redis closes a slow monitor.
//!
//! keyway's own traffic is left out by what the line says
//! ([`Monitoring::internal`]): keyway never forwards a client's `PING` (it
//! answers it) but inside a transaction, nor `CLIENT ID`, nor `MIGRATE`,
//! nor `INFO replication`; so these lines are keyway's or keyway-ctld's
//! (health probes, dedicated connections' `CLIENT ID`, moves). `UNWATCH`
//! lines are left out too (keyway sends one whenever it gives back a
//! watching connection; a client's own `UNWATCH` while watching is lost
//! with them). `CLIENT UNBLOCK`, `CLIENT PAUSE` and other admin commands
//! Redis never shows. keyway-ctld's migration connections (the sweep's
//! `SCAN`, `DEL`…, indistinguishable by their text) are named
//! [`CTLD_NAME`]: every line from such a connection is left out — those
//! open when `MONITOR` starts are found by a `CLIENT LIST` sent just before
//! it ([`Monitoring::client_list`]), later ones by their `CLIENT SETNAME`
//! line. Lines that remain visible, on purpose: the push-back of what an
//! orphaned blocking command popped, and the `DEL` of a key's stale copy
//! after a move — they change data (see README, "MONITOR, LATENCY,
//! MEMORY").
//!
//! Lines show the address of keyway's backend connection, not the end
//! client's: a shared connection carries many clients' commands and the
//! line does not say whose.
//!
//! A new table adds a connection for each master the client does not
//! monitor yet (`Ctx::monitor_follow`).
//!
//! In `MONITOR` mode (`Ctx::monitor_mode`) the client may send what Redis
//! lets a monitor send: keyspace commands get Redis's "Replica can't
//! interact with the keyspace", `MONITOR` again is ignored (no reply, as
//! Redis), `RESET` ends the mode, anything else is served as usual. When
//! the client leaves, resets or a group's connection fails, the `MONITOR`
//! connections are closed, never given back (a monitor cannot be reused);
//! a failure tells the client why and closes it.

use keyway_protocol::command::{flag, CommandSpec};
use keyway_protocol::resp::{Args, ReplyFramer};

use super::backend::{Internal, Link};
use super::client::ClientState;
use super::limits::close_for_output;
use super::pending::Seq;
use super::replies::Refusal;
use super::route::{answer_error, Req};
use super::{live_client, BackendId, Ctx, Worker};
use crate::routing::GroupIndex;

/// `MONITOR`, as sent to each group.
const MONITOR: &[u8] = b"*1\r\n$7\r\nMONITOR\r\n";

/// `CLIENT LIST TYPE normal`, sent before `MONITOR`: which connections
/// keyway-ctld already has open there (named [`CTLD_NAME`]).
const CLIENT_LIST: &[u8] = b"*4\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n$4\r\nTYPE\r\n$6\r\nnormal\r\n";

/// The name keyway-ctld gives its connections to the backends
/// (`CLIENT SETNAME`): their lines are left out.
pub(crate) const CTLD_NAME: &str = "keyway-ctld";

/// keyway-ctld connections remembered per monitoring client.
const MAX_CTLD_ADDRS: usize = 4096;

/// Backend addresses remembered as inside `MULTI … EXEC` per monitoring
/// client (keyway sends a transaction whole, so this stays small).
const MAX_MULTI_ADDRS: usize = 1024;

/// Whose a `MONITOR` connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MonitorConn {
    /// Client (index, generation)'s.
    For(u32, u32),
    /// Nobody's any more: closing, what it reads is dropped.
    Ended,
}

/// A client's `MONITOR` mode.
#[derive(Debug)]
pub(crate) struct Monitoring {
    /// Its `MONITOR` connections (slab index, generation).
    conns: Vec<(usize, u32)>,
    /// The `+OK` slot, until every group confirmed.
    ok: Option<Seq>,
    unconfirmed: usize,
    /// (pool, backend address) of connections whose `MULTI` was seen and
    /// whose `EXEC`/`DISCARD` was not: a `PING` there is a client's.
    multi: Vec<(usize, Box<[u8]>)>,
    /// (pool, backend address) of keyway-ctld's connections: from `CLIENT
    /// LIST` before `MONITOR`, and from the `CLIENT SETNAME keyway-ctld`
    /// lines of new ones.
    ctld: Vec<(usize, Box<[u8]>)>,
}

/// The parts of a monitor line keyway filters on: the source address and
/// the first two arguments (`+<time> [<db> <addr>] "cmd" "sub" …`).
/// What [`parse_line`] finds in a monitor line.
struct LineParts<'a> {
    addr: &'a [u8],
    cmd: &'a [u8],
    sub: Option<&'a [u8]>,
}

fn parse_line(line: &[u8]) -> Option<LineParts<'_>> {
    let open = line.iter().position(|&b| b == b'[')?;
    // `] "` ends the bracket: an IPv6 address has brackets of its own.
    let close = open + line[open..].windows(3).position(|w| w == b"] \"")?;
    let inside = &line[open + 1..close];
    let addr = &inside[inside.iter().position(|&b| b == b' ')? + 1..];
    let rest = line.get(close + 1..)?.strip_prefix(b" \"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let cmd = &rest[..end];
    let sub = rest[end + 1..].strip_prefix(b" \"").and_then(|r| {
        let e = r.iter().position(|&b| b == b'"')?;
        Some(&r[..e])
    });
    Some(LineParts { addr, cmd, sub })
}

impl Monitoring {
    /// Whether `line`, read from pool `p`'s `MONITOR` connection, is keyway's
    /// own traffic (see the module documentation); follows `MULTI`/`EXEC`.
    fn internal(&mut self, p: usize, line: &[u8]) -> bool {
        let Some(LineParts { addr, cmd, sub }) = parse_line(line) else {
            return false;
        };
        if addr == b"lua" {
            return false;
        }
        let is = |a: &[u8], b: &str| a.eq_ignore_ascii_case(b.as_bytes());
        let ctld = self.ctld.iter().position(|(q, a)| *q == p && **a == *addr);
        if is(cmd, "client") && sub.is_some_and(|s| is(s, "setname")) {
            let named_ctld = line.ends_with(format!(" \"{CTLD_NAME}\"\r\n").as_bytes());
            match (named_ctld, ctld) {
                (true, None) => self.add_ctld(p, addr),
                // The address now belongs to another connection.
                (false, Some(i)) => {
                    self.ctld.swap_remove(i);
                }
                _ => {}
            }
            return named_ctld;
        }
        if ctld.is_some() {
            return true;
        }
        let at = self.multi.iter().position(|(q, a)| *q == p && **a == *addr);
        if is(cmd, "multi") {
            if at.is_none() && self.multi.len() < MAX_MULTI_ADDRS {
                self.multi.push((p, addr.into()));
            }
            return false;
        }
        if is(cmd, "exec") || is(cmd, "discard") {
            if let Some(i) = at {
                self.multi.swap_remove(i);
            }
            return false;
        }
        let sub_is = |s: &str| sub.is_some_and(|x| is(x, s));
        (is(cmd, "ping") && at.is_none())
            || (is(cmd, "client") && sub_is("id"))
            || is(cmd, "unwatch")
            || is(cmd, "migrate")
            || (is(cmd, "info") && sub_is("replication"))
    }
}

impl Monitoring {
    fn add_ctld(&mut self, p: usize, addr: &[u8]) {
        if self.ctld.len() < MAX_CTLD_ADDRS {
            self.ctld.push((p, addr.into()));
        }
    }

    /// A `CLIENT LIST` reply from pool `p`: remembers keyway-ctld's
    /// connections.
    fn client_list(&mut self, p: usize, list: &[u8]) {
        let name = format!(" name={CTLD_NAME} ");
        for l in list.split(|&b| b == b'\n') {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            let mut padded = l.to_vec();
            padded.push(b' ');
            if !padded.windows(name.len()).any(|w| w == name.as_bytes()) {
                continue;
            }
            let addr = l
                .split(|&b| b == b' ')
                .find_map(|f| f.strip_prefix(b"addr="));
            if let Some(addr) = addr {
                if !self.ctld.iter().any(|(q, a)| *q == p && **a == *addr) {
                    self.add_ctld(p, addr);
                }
            }
        }
    }
}

/// The contents of a bulk (or verbatim) string reply.
fn bulk_body(reply: &[u8]) -> Option<&[u8]> {
    let rest = reply
        .strip_prefix(b"$")
        .or_else(|| reply.strip_prefix(b"="))?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let body = rest.get(nl + 1..rest.len().checked_sub(2)?)?;
    Some(match reply[0] {
        b'=' => body.get(4..)?,
        _ => body,
    })
}

impl Ctx {
    /// `MONITOR`: a `MONITOR` connection per group's master; `+OK` once all
    /// confirmed.
    pub(super) fn monitor(&mut self, st: &mut ClientState, req: Req<'_>) {
        self.stats.requests_local += 1;
        let me = (st.me.idx, st.me.gen);
        let mut pools = Vec::new();
        let mut conns = Vec::new();
        for g in 0..self.cfg.table.groups().len() {
            let g = g as GroupIndex;
            let p = self.backends.group_pool(g);
            if pools.contains(&p) {
                continue;
            }
            pools.push(p);
            match (self.backends).lease(g, me, &self.cfg, self.now_ms, &mut self.versions, false) {
                Ok(b) => {
                    conns.push((b, self.backends.conns[b].gen));
                    self.backends.conns[b].monitor = Some(MonitorConn::For(me.0, me.1));
                    self.send_monitor(b);
                }
                Err(why) => {
                    for (b, _) in conns {
                        self.close_monitor_conn(b);
                    }
                    self.stats.errors_refused += 1;
                    return answer_error(st, &why, req.place);
                }
            }
        }
        let ok = st.queue.push_waiting();
        let unconfirmed = conns.len();
        st.monitor = Some(Box::new(Monitoring {
            conns,
            ok: Some(ok),
            unconfirmed,
            multi: Vec::new(),
            ctld: Vec::new(),
        }));
        if unconfirmed == 0 {
            st.queue.complete(ok, b"+OK\r\n", st.out.buf_mut());
            if let Some(m) = st.monitor.as_mut() {
                m.ok = None;
            }
        }
    }

    /// Sends `CLIENT LIST TYPE normal` (keyway-ctld's connections already
    /// open) and `MONITOR` on connection `b`.
    fn send_monitor(&mut self, b: usize) {
        // As the admin login, for good: a MONITOR connection is never
        // given back (see `engine::backend_acl`).
        self.backends.elevate(b, self.now_ms);
        for bytes in [CLIENT_LIST, MONITOR] {
            let (cfg, now, versions, wake) =
                (&*self.cfg, self.now_ms, &mut self.versions, &mut self.wake);
            (self.backends).send_internal(b, bytes, Internal::Ignore, cfg, now, versions, wake);
        }
    }

    /// A new table: a monitoring client's stream takes in the groups whose
    /// master it does not monitor yet (a group added, a master replaced);
    /// if one cannot be leased, its monitor ends with the reason.
    fn monitor_follow(&mut self, st: &mut ClientState) {
        let me = (st.me.idx, st.me.gen);
        let Some(m) = st.monitor.as_mut() else {
            return;
        };
        let backends = &self.backends;
        let live = |&(b, gen): &(usize, u32)| {
            backends
                .conns
                .get(b)
                .filter(|c| c.gen == gen && matches!(c.monitor, Some(MonitorConn::For(..))))
        };
        m.conns.retain(|e| live(e).is_some());
        let mut have: Vec<usize> = m.conns.iter().filter_map(live).map(|c| c.pool).collect();
        let mut lost = None;
        for g in 0..self.cfg.table.groups().len() {
            let g = g as GroupIndex;
            let p = self.backends.group_pool(g);
            if have.contains(&p) {
                continue;
            }
            have.push(p);
            match (self.backends).lease(g, me, &self.cfg, self.now_ms, &mut self.versions, false) {
                Ok(b) => {
                    m.conns.push((b, self.backends.conns[b].gen));
                    if m.ok.is_some() {
                        m.unconfirmed += 1;
                    }
                    self.backends.conns[b].monitor = Some(MonitorConn::For(me.0, me.1));
                    self.send_monitor(b);
                }
                Err(why) => {
                    lost = Some((self.backends.pools[p].group.clone(), why.to_string()));
                    break;
                }
            }
        }
        if let Some((group, reason)) = lost {
            let ok = st.monitor.as_mut().and_then(|m| m.ok.take());
            self.monitor_end(st);
            let why = Refusal::MonitorLost {
                group,
                reason: &reason,
            };
            match ok {
                Some(seq) => st.queue.complete(seq, &why.to_reply(), st.out.buf_mut()),
                None => st.close_for_limit(&why, self.now_ms),
            }
            self.after_output(st);
        }
    }

    /// A keyspace command queued by a client in `MONITOR` mode: refused
    /// as Redis refuses it, which makes `EXEC` abort (true).
    #[inline(never)]
    pub(super) fn monitor_in_multi(&mut self, st: &mut ClientState, args: &Args<'_>) -> bool {
        match keyway_protocol::command::lookup(args.get(0), args.try_get(1)) {
            keyway_protocol::command::Lookup::Found(spec)
                if spec.has(flag::WRITE | flag::READONLY | flag::MAY_REPLICATE) =>
            {
                self.tx_error(st, &Refusal::MonitorKeyspace)
            }
            _ => false,
        }
    }

    /// A request from a client in `MONITOR` mode: true if answered here (a
    /// keyspace command refused, `MONITOR` ignored), false if it goes on
    /// (`RESET` ends the mode first).
    #[inline(never)]
    pub(super) fn monitor_mode(
        &mut self,
        st: &mut ClientState,
        spec: &CommandSpec,
        _args: &Args<'_>,
    ) -> bool {
        match spec.name {
            // As Redis: a monitor's MONITOR is ignored, without a reply.
            "monitor" => {
                self.stats.requests_local += 1;
                true
            }
            // RESET ends the mode; after QUIT nothing more may be written
            // but its +OK (a stream would keep the connection open).
            "reset" | "quit" => {
                self.monitor_end(st);
                false
            }
            _ if spec.has(flag::WRITE | flag::READONLY | flag::MAY_REPLICATE) => {
                self.stats.requests_local += 1;
                self.stats.errors_refused += 1;
                st.refuse(&Refusal::MonitorKeyspace);
                true
            }
            _ => false,
        }
    }

    /// The client leaves `MONITOR` mode (`RESET`, it left): its
    /// connections are closed; an `+OK` still owed is answered.
    pub(super) fn monitor_end(&mut self, st: &mut ClientState) {
        let Some(m) = st.monitor.take() else {
            return;
        };
        for (b, gen) in m.conns {
            if self.backends.conns.get(b).is_some_and(|c| c.gen == gen) {
                self.close_monitor_conn(b);
            }
        }
        if let Some(seq) = m.ok {
            st.queue.complete(seq, b"+OK\r\n", st.out.buf_mut());
        }
    }

    /// Closes `MONITOR` connection `b` once its replies are in (never given
    /// back: Redis keeps it a monitor).
    fn close_monitor_conn(&mut self, b: usize) {
        if let Some(conn) = self.backends.conns.get_mut(b) {
            conn.monitor = Some(MonitorConn::Ended);
        }
        self.backends.drop_dedicated(b);
    }
}

impl Worker {
    /// Bytes read from a `MONITOR` connection: the replies to keyway's
    /// `CLIENT ID` and `MONITOR`, then monitor lines for its client.
    pub(in crate::engine) fn monitor_input(&mut self, id: BackendId, data: &[u8]) {
        let idx = id.idx as usize;
        let Some(conn) = self.ctx.backends.attempt(id) else {
            return;
        };
        if !matches!(conn.link, Link::Up) {
            return;
        }
        conn.inbuf.extend_from_slice(data);
        let mut buf = std::mem::take(&mut conn.inbuf);
        let (owner, p) = (conn.monitor, conn.pool);
        let (limit, key) = self.ctx.cfg.reply_limit();
        let mut at = 0;
        let mut fault = None;
        let mut refused = None;
        while at < buf.len() {
            let rest = &buf[at..];
            let conn = &mut self.ctx.backends.conns[idx];
            // A reply to keyway's own request is framed whole (any shape);
            // a monitor line is one line.
            let end = match conn.inflight.is_empty() {
                false => match ReplyFramer::new().next(rest) {
                    Ok(found) => found,
                    Err(_) => {
                        fault = Some("protocol error from backend on a MONITOR connection".into());
                        break;
                    }
                },
                true => rest.iter().position(|&b| b == b'\n').map(|nl| nl + 1),
            };
            let Some(end) = end else {
                if rest.len() as u64 > limit {
                    fault = Some(format!("a MONITOR line longer than {key} ({limit} bytes)"));
                }
                break;
            };
            let line = &rest[..end];
            at += end;
            if let Some(e) = conn.inflight.pop_front() {
                // The reply to keyway's CLIENT ID (a new connection), CLIENT
                // LIST, then MONITOR.
                self.ctx.versions.done(e.version);
                if let (Some(list), Some(MonitorConn::For(ci, cg))) = (bulk_body(line), owner) {
                    if let Some(m) =
                        live_client(&mut self.clients, ci, cg).and_then(|c| c.st.monitor.as_mut())
                    {
                        m.client_list(p, list);
                    }
                    continue;
                }
                if conn.inflight.is_empty() {
                    if line != b"+OK\r\n" {
                        let text = String::from_utf8_lossy(line.strip_prefix(b"-").unwrap_or(line));
                        refused = Some(format!("MONITOR answered {}", text.trim_end()));
                        break;
                    }
                    if let Some(MonitorConn::For(ci, cg)) = owner {
                        self.monitor_confirmed(ci, cg);
                    }
                }
                continue;
            }
            if let Some(MonitorConn::For(ci, cg)) = owner {
                self.monitor_line(ci, cg, p, line);
            }
        }
        buf.drain(..at);
        if buf.is_empty() && buf.capacity() > 1 << 20 {
            buf = Vec::new();
        }
        let now = self.ctx.now_ms;
        let Some(conn) = self.ctx.backends.conns.get_mut(idx) else {
            return;
        };
        conn.inbuf = buf;
        match (fault, refused) {
            (Some(why), _) => self.fail_backend(idx, &why),
            // The server answers: only this monitor ends.
            (None, Some(why)) => {
                self.ctx.backends.drop_dedicated(idx);
                self.monitor_lost(idx, &why);
            }
            (None, None) => {
                if self.ctx.backends.pools[p].health.answered(now) {
                    self.ctx.health_turned(p);
                }
            }
        }
    }

    /// A group confirmed `MONITOR` for client (`ci`, `cg`): `+OK` once all
    /// have.
    fn monitor_confirmed(&mut self, ci: u32, cg: u32) {
        let Some(c) = live_client(&mut self.clients, ci, cg) else {
            return;
        };
        let st = &mut c.st;
        let Some(m) = st.monitor.as_mut() else {
            return;
        };
        m.unconfirmed = m.unconfirmed.saturating_sub(1);
        if m.unconfirmed == 0 {
            if let Some(seq) = m.ok.take() {
                st.queue.complete(seq, b"+OK\r\n", st.out.buf_mut());
                self.ctx.after_output(st);
            }
        }
    }

    /// One monitor line from pool `p` for client (`ci`, `cg`).
    fn monitor_line(&mut self, ci: u32, cg: u32, p: usize, line: &[u8]) {
        let Some(c) = live_client(&mut self.clients, ci, cg) else {
            return;
        };
        let st = &mut c.st;
        if !st.wants_replies() {
            return;
        }
        let Some(m) = st.monitor.as_mut() else {
            return;
        };
        let ctx = &mut self.ctx;
        if m.internal(p, line) {
            ctx.stats.monitor_lines_left_out += 1;
            return;
        }
        ctx.stats.monitor_lines += 1;
        st.reply(|o| o.extend_from_slice(line));
        let hard = ctx.cfg.limits.output_hard_limit as usize;
        if hard > 0 && st.pending_output() > hard {
            close_for_output(st, hard, ctx.now_ms, &mut ctx.log, &mut ctx.wake);
            ctx.stats.clients_output_limit += 1;
            ctx.monitor_end(st);
        }
        ctx.after_output(st);
    }

    /// `MONITOR` connection `idx` failed (why is in its link): its client's stream
    /// would miss a group, so its `MONITOR` mode ends: an `+OK` still owed
    /// becomes the error; a client already monitoring gets the error and is
    /// closed.
    pub(in crate::engine) fn monitor_failed(&mut self, idx: usize) {
        let Some(conn) = self.ctx.backends.conns.get_mut(idx) else {
            return;
        };
        let reason: std::sync::Arc<str> = match &conn.link {
            Link::Down { reason, .. } => reason.clone(),
            _ => "the connection closed".into(),
        };
        self.monitor_lost(idx, &reason);
    }

    /// `MONITOR` connection `idx` is lost for `reason` (see
    /// [`monitor_failed`](Self::monitor_failed)).
    fn monitor_lost(&mut self, idx: usize, reason: &str) {
        let Some(conn) = self.ctx.backends.conns.get_mut(idx) else {
            return;
        };
        let owner = conn.monitor.replace(MonitorConn::Ended);
        let group = self.ctx.backends.pools[conn.pool].group.clone();
        let Some(MonitorConn::For(ci, cg)) = owner else {
            return;
        };
        let Some(c) = live_client(&mut self.clients, ci, cg) else {
            return;
        };
        let st = &mut c.st;
        let ok = st.monitor.as_mut().and_then(|m| m.ok.take());
        self.ctx.monitor_end(st);
        let why = Refusal::MonitorLost { group, reason };
        match ok {
            Some(seq) => st.queue.complete(seq, &why.to_reply(), st.out.buf_mut()),
            None if st.wants_replies() => st.close_for_limit(&why, self.ctx.now_ms),
            None => {}
        }
        self.ctx.after_output(st);
    }

    /// A new table: every monitoring client follows its groups (see
    /// `Ctx::monitor_follow`).
    pub(in crate::engine) fn monitors_follow(&mut self) {
        if self.ctx.backends.dedicated == 0 {
            return;
        }
        for (_, c) in self.clients.iter_mut() {
            if c.st.monitor.is_some() && c.st.wants_replies() {
                self.ctx.monitor_follow(&mut c.st);
            }
        }
    }

    /// A client that goes (or stops reading) leaves `MONITOR` mode.
    pub(in crate::engine) fn client_leaves_monitor(&mut self, idx: usize) {
        if let Some(c) = self.clients.get_mut(idx) {
            if c.st.monitor.is_some() {
                self.ctx.monitor_end(&mut c.st);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(m: &mut Monitoring, line: &str) -> bool {
        m.internal(0, line.as_bytes())
    }

    #[test]
    fn keyways_own_lines_are_recognised_and_clients_kept() {
        let mut m = Monitoring {
            conns: Vec::new(),
            ok: None,
            unconfirmed: 0,
            multi: Vec::new(),
            ctld: Vec::new(),
        };
        let a = "+1796235553.817021 [0 127.0.0.1:36722] ";
        assert!(
            internal(&mut m, &format!("{a}\"PING\"\r\n")),
            "a health probe"
        );
        assert!(internal(&mut m, &format!("{a}\"CLIENT\" \"ID\"\r\n")));
        assert!(internal(&mut m, &format!("{a}\"UNWATCH\"\r\n")));
        assert!(internal(
            &mut m,
            &format!("{a}\"INFO\" \"replication\"\r\n")
        ));
        assert!(internal(
            &mut m,
            &format!("{a}\"MIGRATE\" \"h\" \"1\" \"\" \"0\" \"5000\" \"KEYS\" \"k\"\r\n")
        ));
        assert!(!internal(&mut m, &format!("{a}\"SET\" \"a\" \"1\"\r\n")));
        assert!(!internal(
            &mut m,
            &format!("{a}\"CLIENT\" \"SETNAME\" \"x\"\r\n")
        ));
        assert!(!internal(&mut m, &format!("{a}\"INFO\" \"memory\"\r\n")));
        assert!(
            !internal(&mut m, "+1796235553.817021 [0 lua] \"PING\"\r\n"),
            "a script's"
        );
        // A client's PING inside a transaction reaches Redis.
        assert!(!internal(&mut m, &format!("{a}\"MULTI\"\r\n")));
        assert!(!internal(&mut m, &format!("{a}\"PING\"\r\n")));
        assert!(!internal(&mut m, &format!("{a}\"EXEC\"\r\n")));
        assert!(internal(&mut m, &format!("{a}\"PING\"\r\n")));
        assert!(!internal(&mut m, "garbage\r\n"));
    }

    #[test]
    fn lines_are_parsed_from_redis_format() {
        let l = b"+1.000001 [3 [::1]:5] \"get\" \"k\\\"x\"\r\n";
        let LineParts { addr, cmd, sub } = parse_line(l).expect("parsed");
        assert_eq!(addr, b"[::1]:5");
        assert_eq!(cmd, b"get");
        assert_eq!(sub, Some(&b"k\\"[..]));
    }
}
