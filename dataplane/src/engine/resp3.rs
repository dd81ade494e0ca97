//! RESP3: clients that chose it with `HELLO 3`, and the backend connections
//! that serve them.
//!
//! Redis writes each reply in the protocol of the connection it comes
//! from, and only Redis knows which of its arrays are maps, sets or
//! doubles. So a RESP3 client's requests go to backend connections that
//! speak RESP3 themselves and its replies pass through unchanged, byte for
//! byte, as for RESP2 clients:
//!
//! - every [`Pool`] has, besides its RESP2 `conns`, `conns3`: as many
//!   connections, created on the first request of a RESP3 client to that
//!   backend ([`Backends::conn3`]), whose first request, each time they
//!   connect, is `HELLO 3` ([`hello_first`], its reply consumed as
//!   [`Internal::Hello`]); a RESP2 client never uses them, so a data plane
//!   without RESP3 clients opens none;
//! - a dedicated connection (a `WATCH`, a blocking command) is switched to
//!   its client's protocol when leased ([`switch_protocol`]: `HELLO 3` or
//!   `HELLO 2` ahead of the client's request), and when its client changes
//!   protocol while it holds it ([`Ctx::hello`]);
//! - Pub/Sub subscriber connections stay RESP2: a message is the same array
//!   in both protocols but for its first byte, so a RESP3 client gets it as
//!   a push by changing that byte ([`message`]); keyway writes the
//!   confirmations itself with `encode::push_header`;
//! - a push (`>`) on a request connection is no reply to any request
//!   (Redis sends none there unless tracking is on, which keyway never
//!   turns on): `Sink::replies` drops it and counts it
//!   (`Stats::backend_pushes_dropped`) instead of letting it complete
//!   someone's request.
//!
//! `HELLO` that changes the protocol while the client has requests in
//! flight waits until they are answered ([`Ctx::keep_until_answered`]): its
//! later requests go to other connections and must not overtake them; so
//! does a RESP3 client's `RESET` ([`Ctx::reset_waits`]). A command keyway
//! answers itself behind a kept-back request waits its turn too
//! (`Ctx::dispatch`) and is then run by [`in_place`], so that it is answered
//! in the protocol of that moment.

use keyway_protocol::command::REDIS_VERSION;
use keyway_protocol::resp::{encode, Args};
use slab::Slab;

use super::backend::{BackendConn, Internal, Link, Owner, Pool, PoolKey};
use super::backends::Backends;
use super::client::ClientState;
use super::replies::Refusal;
use super::route::{answer_in_place, Place, Req};
use super::versions::UNCOUNTED;
use super::Ctx;
use crate::routing::GroupIndex;

const HELLO_3: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";
const HELLO_2: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n";

/// Writes `HELLO 3` as the first request of RESP3 connection `conn`, which
/// is starting (its write buffer is empty).
pub(super) fn hello_first(conn: &mut BackendConn, now_ms: u64) {
    conn.out.buf_mut().extend_from_slice(HELLO_3);
    // Not counted against a table version: it routes nothing.
    conn.sent(Owner::Internal(Internal::Hello), UNCOUNTED, now_ms);
}

/// Switches dedicated connection `conn` to RESP3 (`resp3`) or RESP2: the
/// `HELLO` goes ahead of whatever the client sends next on it.
pub(super) fn switch_protocol(conn: &mut BackendConn, resp3: bool, now_ms: u64) {
    conn.out
        .buf_mut()
        .extend_from_slice(if resp3 { HELLO_3 } else { HELLO_2 });
    conn.sent(Owner::Internal(Internal::Hello), UNCOUNTED, now_ms);
    conn.resp3 = resp3;
}

/// Keeps pool `p`'s RESP3 connections as many as its RESP2 ones
/// (`wanted`), once it has any.
pub(super) fn resize_conns3(
    conns: &mut Slab<BackendConn>,
    pool: &mut Pool,
    p: usize,
    wanted: usize,
) {
    while pool.conns3.len() < wanted {
        let mut conn = BackendConn::new(p);
        conn.resp3 = true;
        pool.conns3.push(conns.insert(conn));
    }
    while pool.conns3.len() > wanted {
        if let Some(b) = pool.conns3.pop() {
            pool.retiring.push(b);
        }
    }
}

impl Backends {
    /// [`Backends::conn`] for a RESP3 client: the same choice among the
    /// RESP3 connections (created on first need). Off the RESP2 path.
    #[cold]
    #[inline(never)]
    pub(super) fn conn3(&mut self, g: GroupIndex, read: bool, slot: usize, now_ms: u64) -> usize {
        if read && self.replica_reads {
            let reads = self.replica_pools(g);
            let n = reads.len();
            for i in 0..n {
                let p = self.replica_pools(g)[(slot + i) % n];
                if self.pools[p].health.failures > 0 {
                    continue;
                }
                let b = self.conn3_in(p, slot, now_ms);
                if matches!(self.conns[b].link, Link::Up) {
                    return b;
                }
            }
        }
        let p = self.master_pool(g);
        self.conn3_in(p, slot, now_ms)
    }

    /// The RESP3 connection client slot `slot` uses in pool `p`, creating
    /// the pool's RESP3 connections if it has none and starting this one
    /// if idle.
    pub(super) fn conn3_in(&mut self, p: usize, slot: usize, now_ms: u64) -> usize {
        if self.pools[p].conns3.is_empty() {
            let wanted = self.pools[p].conns.len().max(1);
            resize_conns3(&mut self.conns, &mut self.pools[p], p, wanted);
            if let PoolKey::Unresolved(_) = self.pools[p].key {
                // Never connects, as its RESP2 connections (`Backends::apply`).
                let down = self.pools[p]
                    .conns
                    .first()
                    .map(|&b| self.conns[b].link.clone());
                for &b in &self.pools[p].conns3 {
                    if let Some(link) = &down {
                        self.conns[b].link = link.clone();
                    }
                }
            }
        }
        let pool = &self.pools[p];
        let b = pool.conns3[slot % pool.conns3.len()];
        if matches!(self.conns[b].link, Link::Idle) {
            self.open(b, now_ms);
        }
        b
    }
}

/// Runs a local command kept back (a `RESET` that waited) so that its
/// reply completes its slot `place` (`run` replies as to a request
/// answered at once: with no reply owed before it, into the output).
pub(super) fn in_place(st: &mut ClientState, place: Place, run: impl FnOnce(&mut ClientState)) {
    let queue = std::mem::take(&mut st.queue);
    let start = st.out.buf_mut().len();
    run(st);
    let reply = st.out.buf_mut().split_off(start);
    st.queue = queue;
    answer_in_place(st, &reply, place);
}

/// A message from a (RESP2) subscriber connection, `*3 $7 message …`, as
/// client output: unchanged for a RESP2 client; a push, `>3 $7 message …`,
/// for a RESP3 one (the elements are bulk strings in both protocols).
#[inline]
pub(crate) fn message(o: &mut Vec<u8>, frame: &[u8], resp3: bool) {
    match frame.split_first() {
        Some((b'*', rest)) if resp3 => {
            o.push(b'>');
            o.extend_from_slice(rest);
        }
        _ => o.extend_from_slice(frame),
    }
}

/// The protocol `HELLO`'s arguments ask for: `Ok(None)` for none (the
/// current one), or the error Redis answers.
fn hello_version(args: &Args<'_>) -> Result<Option<bool>, Refusal<'static>> {
    let Some(v) = args.try_get(1) else {
        return Ok(None);
    };
    match std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        None => Err(Refusal::ProtocolNotAnInteger),
        Some(2) => Ok(Some(false)),
        Some(3) => Ok(Some(true)),
        Some(_) => Err(Refusal::NoProto),
    }
}

/// `HELLO`'s `AUTH user pass`, if its arguments are valid (else
/// [`answer_hello`] says what is wrong): the last one given, as Redis.
pub(super) fn hello_credentials<'a>(args: &Args<'a>) -> Option<Option<(&'a [u8], &'a [u8])>> {
    hello_version(args).ok()?;
    let mut i = 2;
    let mut auth = None;
    while i < args.len() {
        let opt = args.get(i);
        if opt.eq_ignore_ascii_case(b"auth") && i + 2 < args.len() {
            auth = Some((args.get(i + 1), args.get(i + 2)));
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"setname") && i + 1 < args.len() {
            i += 2;
        } else {
            return None;
        }
    }
    Some(auth)
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`, answered in `place`:
/// switches the client's protocol and answers Redis's map (`%7` in RESP3,
/// `*14` in RESP2).
pub(super) fn answer_hello(st: &mut ClientState, args: &Args<'_>, place: Place) {
    let mut out = Vec::new();
    hello_reply(st, args, &mut out);
    answer_in_place(st, &out, place);
}

fn hello_reply(st: &mut ClientState, args: &Args<'_>, out: &mut Vec<u8>) {
    let version = match hello_version(args) {
        Ok(v) => v,
        Err(why) => return why.encode(out),
    };
    let mut i = 2;
    let mut name = None;
    while i < args.len() {
        let opt = args.get(i);
        if opt.eq_ignore_ascii_case(b"auth") && i + 2 < args.len() {
            // Checked before (`Ctx::hello` → `Ctx::authenticate`).
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"setname") && i + 1 < args.len() {
            name = Some(args.get(i + 1));
            i += 2;
        } else {
            return Refusal::HelloOption { option: opt }.encode(out);
        }
    }
    if let Some(n) = name {
        if !super::local::valid_client_name(n) {
            return Refusal::BadClientName.encode(out);
        }
        st.name = (!n.is_empty()).then(|| n.into());
    }
    if let Some(v) = version {
        st.resp3 = v;
    }
    let r3 = st.resp3;
    encode::map_header(out, 7, r3);
    for (k, v) in [("server", "redis"), ("version", REDIS_VERSION)] {
        encode::bulk(out, k.as_bytes());
        encode::bulk(out, v.as_bytes());
    }
    encode::bulk(out, b"proto");
    encode::integer(out, if r3 { 3 } else { 2 });
    encode::bulk(out, b"id");
    encode::integer(out, st.id as i64);
    for (k, v) in [("mode", "standalone"), ("role", "master")] {
        encode::bulk(out, k.as_bytes());
        encode::bulk(out, v.as_bytes());
    }
    encode::bulk(out, b"modules");
    encode::array_header(out, 0);
}

impl Ctx {
    /// `HELLO`: one that changes the protocol while requests of the client
    /// are in flight waits for their replies (its next requests go to
    /// connections of the other protocol); the connection of a `WATCH` is
    /// switched with the client.
    pub(super) fn hello(&mut self, st: &mut ClientState, req: Req<'_>) {
        let wanted = hello_version(req.args).ok().flatten();
        let changes = wanted.is_some_and(|v| v != st.resp3);
        // Behind a request kept back (an earlier HELLO's, say), it waits
        // its turn, or it would switch the protocol under that one.
        let behind = req.place.at.is_none() && st.queue.has_kept();
        if behind || (changes && !self.nothing_ahead(st, req.place)) {
            return self.keep_until_answered(st, req);
        }
        self.stats.requests_local += 1;
        if let Some(credentials) = hello_credentials(req.args) {
            if let Some((user, password)) = credentials {
                if let Err(why) = self.authenticate(st, user, password, req.args.get(0)) {
                    return answer_in_place(st, &why.to_reply(), req.place);
                }
            }
            if !st.authenticated && self.cfg.users.auth_required() {
                return answer_in_place(st, &Refusal::NoAuthHello.to_reply(), req.place);
            }
        }
        answer_hello(st, req.args, req.place);
        if changes && wanted == Some(st.resp3) {
            self.follow_protocol(st);
        }
    }

    /// Whether `RESET` must wait (kept back, true): a RESP3 client's with
    /// requests in flight (its next requests go to RESP2 connections), or
    /// one behind a request kept back, as [`Ctx::hello`].
    pub(super) fn reset_waits(&mut self, st: &mut ClientState, req: Req<'_>) -> bool {
        let behind = req.place.at.is_none() && st.queue.has_kept();
        if behind || (st.resp3 && !self.nothing_ahead(st, req.place)) {
            self.keep_until_answered(st, req);
            return true;
        }
        false
    }

    /// `RESET`: back to RESP2, and out of every subscription (a RESP3
    /// client's `RESET` does not go through RESP2's subscribed mode).
    pub(super) fn reset_protocol(&mut self, st: &mut ClientState) {
        if st.subs.is_some() {
            self.leave_subscriptions(st);
        }
        if st.resp3 {
            st.resp3 = false;
            self.follow_protocol(st);
        }
    }

    /// The client's protocol changed: its `WATCH` connection follows.
    fn follow_protocol(&mut self, st: &ClientState) {
        let Some(p) = st.pin else { return };
        let now = self.now_ms;
        if let Some(conn) = self.backends.conns.get_mut(p.b) {
            if conn.gen == p.gen && conn.resp3 != st.resp3 {
                switch_protocol(conn, st.resp3, now);
                if matches!(conn.link, Link::Up) {
                    self.wake.backend(conn, p.b);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::rig::{key_in, Rig};
    use super::*;
    use crate::routing::SlotRoute;

    const HELLO_3_REPLY: &str =
        "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n\
        $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:9\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
        $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";

    #[test]
    fn a_resp3_clients_request_goes_to_a_connection_opened_with_hello_3() {
        let mut r = Rig::new(SlotRoute::Stable(0));
        let k = key_in(1);
        r.send("HELLO 3");
        assert!(r.output().starts_with("%7\r\n"), "a RESP3 map");
        assert_eq!(r.connect(), 0, "no backend connection before a request");
        r.send(&format!("HGETALL {k}"));
        assert_eq!(
            r.written(0),
            format!(
                "{}*2\r\n$7\r\nHGETALL\r\n${}\r\n{k}\r\n",
                String::from_utf8_lossy(HELLO_3),
                k.len()
            ),
            "HELLO 3 first, then the request"
        );
        // The backend's HELLO reply is keyway's; a push answers nothing;
        // the map is the client's, as Redis sent it.
        r.reply(0, HELLO_3_REPLY);
        assert_eq!(r.output(), "", "HELLO's reply is consumed");
        r.reply(0, ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nx\r\n");
        assert_eq!(r.output(), "", "a push completes no request");
        assert_eq!(r.worker.stats().backend_pushes_dropped, 1);
        assert!(r.backend_live(0), "and does not fail the connection");
        r.reply(0, "%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
        assert_eq!(r.output(), "%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
        // Back to RESP2: the pool's RESP2 connection, no HELLO.
        r.send("HELLO 2");
        assert!(r.output().starts_with("*14\r\n"), "a flat array");
        r.send(&format!("GET {k}"));
        assert_eq!(r.connect(), 1, "the RESP2 connection opens");
        assert_eq!(
            r.written(0),
            format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len())
        );
    }

    #[test]
    fn a_hello_with_requests_in_flight_waits_and_so_does_what_follows() {
        let mut r = Rig::new(SlotRoute::Stable(0));
        let k = key_in(1);
        r.send(&format!("SET {k} v;HELLO 3;CLIENT GETNAME;GET {k}"));
        assert!(
            r.written(0).starts_with("*3\r\n$3\r\nSET"),
            "only the SET goes out before its reply"
        );
        assert_eq!(r.output(), "", "HELLO and what follows wait for it");
        r.reply(0, "+OK\r\n");
        let out = r.output();
        assert!(out.starts_with("+OK\r\n%7\r\n"), "{out}");
        assert!(
            out.ends_with("*0\r\n_\r\n"),
            "CLIENT GETNAME answered in RESP3: {out}"
        );
        // The GET, after them, on a RESP3 connection (HELLO 3 first).
        let written = r.written(0);
        assert!(
            written.starts_with(&String::from_utf8_lossy(HELLO_3).into_owned())
                && written.ends_with(&format!("$3\r\nGET\r\n${}\r\n{k}\r\n", k.len())),
            "{written}"
        );
    }

    #[test]
    fn a_message_becomes_a_push_for_resp3_clients_only() {
        let frame = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
        let mut two = Vec::new();
        message(&mut two, frame, false);
        assert_eq!(two, frame, "RESP2: as read");
        let mut three = Vec::new();
        message(&mut three, frame, true);
        assert_eq!(
            three, b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            "RESP3: a push"
        );
    }

    #[test]
    fn hello_versions() {
        let parse = |v: &[u8]| {
            let buf = [b"HELLO".as_slice(), v].concat();
            let spans = [
                keyway_protocol::resp::Span::new(0, 5),
                keyway_protocol::resp::Span::new(5, v.len()),
            ];
            hello_version(&Args::new(&buf, &spans)).map_err(|e| e.to_string())
        };
        assert_eq!(parse(b"3"), Ok(Some(true)));
        assert_eq!(parse(b"2"), Ok(Some(false)));
        assert!(parse(b"4").unwrap_err().starts_with("NOPROTO"));
        assert!(parse(b"x").is_err());
    }
}
