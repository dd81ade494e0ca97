//! The worker's side of Pub/Sub: what a subscriber connection reads
//! (`Worker::subscriber_input`: messages fanned out to the core's
//! subscribers, the backend's confirmations), the clients' confirmations
//! released once the backend's are in (`Worker::release_ready`), and the
//! tick (reconnections, confirmations waiting too long). The stream is
//! framed by `push_len`, a small stateless framer.

use keyway_protocol::resp::array_elements;

use super::Kind;
use crate::engine::backend::{Internal, Link, Owner};
use crate::engine::limits::close_for_output;
use crate::engine::{live_client, BackendId, Worker};

/// Why a subscriber connection's input cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PushError {
    Malformed,
    TooLarge,
}

/// The length of the complete RESP2 value at the start of `buf` (`None`:
/// incomplete), a bulk string no longer than `limit`. A subscriber
/// connection reads only flat arrays of bulk strings and integers (and
/// errors), so the value is framed again from its start on each read: that
/// costs a few headers (a bulk string's body is skipped by its length), and
/// it keeps the request path's `ReplyFramer::next` the only caller the
/// compiler inlines it into.
fn push_len(buf: &[u8], limit: u64, depth: u8) -> Result<Option<usize>, PushError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some(nl) = buf.iter().take(64 << 10).position(|&b| b == b'\n') else {
        return match buf.len() < 64 << 10 {
            true => Ok(None),
            false => Err(PushError::Malformed),
        };
    };
    if nl < 2 || buf[nl - 1] != b'\r' {
        return Err(PushError::Malformed);
    }
    let head = nl + 1;
    let int = || -> Result<i64, PushError> {
        std::str::from_utf8(&buf[1..nl - 1])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(PushError::Malformed)
    };
    match kind {
        b'+' | b'-' | b':' => Ok(Some(head)),
        b'$' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some(head));
            }
            if n as u64 > limit {
                return Err(PushError::TooLarge);
            }
            let end = head + n as usize + 2;
            match buf.get(end - 2..end) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some(end)),
                Some(_) => Err(PushError::Malformed),
            }
        }
        b'*' if depth < 4 => {
            let n = int()?;
            let mut at = head;
            for _ in 0..n.max(0) {
                match push_len(&buf[at..], limit, depth + 1)? {
                    Some(len) => at += len,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        _ => Err(PushError::Malformed),
    }
}

/// The contents of a bulk string element (`$3\r\nabc\r\n` → `abc`).
fn bulk_contents(el: &[u8]) -> Option<&[u8]> {
    let rest = el.strip_prefix(b"$")?;
    let nl = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
    rest.get(nl + 2..nl + 2 + len)
}

impl Worker {
    /// Every tick: reconnects subscriber connections (`Ctx::
    /// pubsub_reconnect`), and lets confirmations that waited for a backend
    /// longer than `backend.timeout` go.
    pub(in crate::engine) fn pubsub_tick(&mut self) {
        let ps = &self.ctx.pubsub;
        if ps.conns.is_empty() && ps.pending.is_empty() && ps.ready.is_empty() {
            return;
        }
        self.ctx.pubsub_reconnect();
        let timeout = self.ctx.cfg.backend.timeout.0;
        let now = self.ctx.now_ms;
        let ps = &mut self.ctx.pubsub;
        let mut expired = false;
        if timeout > 0 {
            for (&id, p) in ps.pending.iter_mut() {
                if now.saturating_sub(p.since_ms) > timeout {
                    p.waiting = 1;
                    ps.ready.push(id);
                    expired = true;
                }
            }
        }
        self.release_ready();
        if expired {
            // Forget the expired ones where they were awaited.
            let ps = &mut self.ctx.pubsub;
            for map in ps.names.iter_mut() {
                for e in map.values_mut() {
                    e.waiters.retain(|id| ps.pending.contains_key(id));
                }
            }
        }
    }

    /// Whether confirmations are ready to go (see [`Self::release_ready`]).
    #[inline]
    pub(in crate::engine) fn pubsub_ready(&self) -> bool {
        !self.ctx.pubsub.ready.is_empty()
    }

    /// Writes the confirmations whose waits have all ended into their
    /// clients' reply slots.
    pub(in crate::engine) fn release_ready(&mut self) {
        let max_pipeline = self.ctx.cfg.limits.max_pipeline;
        while let Some(id) = self.ctx.pubsub.ready.pop() {
            let ps = &mut self.ctx.pubsub;
            let Some(p) = ps.pending.get_mut(&id) else {
                continue;
            };
            p.waiting = p.waiting.saturating_sub(1);
            if p.waiting > 0 {
                continue;
            }
            let Some(p) = ps.pending.remove(&id) else {
                continue;
            };
            let Some(c) = live_client(&mut self.clients, p.client.0, p.client.1) else {
                continue;
            };
            let st = &mut c.st;
            if !st.wants_replies() {
                continue;
            }
            st.queue.complete(p.seq, &p.reply, st.out.buf_mut());
            if st.paused && st.queue.len() <= max_pipeline / 2 {
                st.paused = false;
                self.ctx.resume.push(p.client.0);
            }
            self.ctx.after_output(st);
        }
        self.resume_paused();
    }

    /// Subscriber connection `b` failed: no confirmation will come from it.
    pub(in crate::engine) fn subscriber_failed(&mut self, b: usize) {
        let p = self.ctx.backends.conns[b].pool;
        let ps = &mut self.ctx.pubsub;
        let patterns = ps.pattern_pools.contains(&p);
        ps.stop_waiting_on(p, patterns);
        self.release_ready();
    }

    /// Bytes read from a subscriber connection: each complete push array is
    /// a message for the core's subscribers, or a confirmation (dropped).
    pub(in crate::engine) fn subscriber_input(&mut self, id: BackendId, data: &[u8]) {
        let idx = id.idx as usize;
        let Some(conn) = self.ctx.backends.attempt(id) else {
            return;
        };
        if !matches!(conn.link, Link::Up) {
            return;
        }
        conn.inbuf.extend_from_slice(data);
        let mut buf = std::mem::take(&mut conn.inbuf);
        let (limit, key) = self.ctx.cfg.reply_limit();
        let mut at = 0;
        // The reply to keyway's `AUTH`, first on the connection.
        while let Some(&e) = self.ctx.backends.conns[idx].inflight.front() {
            let Owner::Internal(Internal::Auth { admin }) = e.owner else {
                break;
            };
            let Ok(Some(len)) = push_len(&buf[at..], limit, 0) else {
                break;
            };
            let conn = &mut self.ctx.backends.conns[idx];
            conn.inflight.pop_front();
            if buf[at] == b'-' {
                let text = String::from_utf8_lossy(&buf[at + 1..at + len.min(200)]);
                conn.auth_refused = Some((admin, text.trim_end().into()));
                let reason = self.ctx.backends.auth_failure(idx);
                return self.fail_backend(idx, &reason);
            }
            at += len;
        }
        let fault = loop {
            match push_len(&buf[at..], limit, 0) {
                Ok(Some(len)) => {
                    self.fan_out_message(&buf[at..at + len]);
                    at += len;
                }
                Ok(None) => break None,
                Err(PushError::TooLarge) => {
                    break Some(format!("a message larger than {key} ({limit} bytes)"))
                }
                Err(PushError::Malformed) => {
                    break Some("protocol error from backend: not a RESP2 push".to_string())
                }
            }
        };
        if self.pubsub_ready() {
            self.release_ready();
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
        let p = conn.pool;
        match fault {
            Some(why) => self.fail_backend(idx, &why),
            None => {
                if self.ctx.backends.pools[p].health.answered(now) {
                    self.ctx.health_turned(p);
                }
            }
        }
    }

    /// One push array from a subscriber connection: a `message`,
    /// `pmessage` or `smessage` goes, as it is, to every client of the
    /// core subscribed to its channel or pattern; anything else (the
    /// backend's confirmations, an error) is dropped.
    fn fan_out_message(&mut self, frame: &[u8]) {
        let Some(mut els) = array_elements(frame) else {
            if frame.first() == Some(&b'-') {
                tracing::debug!(
                    core = self.ctx.core,
                    "subscriber connection error: {:?}",
                    String::from_utf8_lossy(frame)
                );
            }
            return;
        };
        let (Some(word), Some(name)) = (
            els.next().and_then(bulk_contents),
            els.next().and_then(bulk_contents),
        ) else {
            return;
        };
        let kind = match word {
            b"message" => Kind::Channel,
            b"pmessage" => Kind::Pattern,
            b"smessage" => Kind::Shard,
            b"subscribe" => return self.ctx.pubsub.confirmed(Kind::Channel, name),
            b"psubscribe" => return self.ctx.pubsub.confirmed(Kind::Pattern, name),
            b"ssubscribe" => return self.ctx.pubsub.confirmed(Kind::Shard, name),
            _ => return,
        };
        let ctx = &mut self.ctx;
        let Some(e) = ctx.pubsub.names[kind as usize].get(name) else {
            return;
        };
        ctx.stats.pubsub_messages += 1;
        let hard = ctx.cfg.limits.output_hard_limit as usize;
        for &(idx, gen) in &e.clients {
            let Some(c) = live_client(&mut self.clients, idx, gen) else {
                continue;
            };
            let st = &mut c.st;
            if !st.wants_replies() {
                continue;
            }
            let r3 = st.resp3;
            st.reply(|o| crate::engine::resp3::message(o, frame, r3));
            ctx.stats.pubsub_deliveries += 1;
            if hard > 0 && st.pending_output() > hard {
                close_for_output(st, hard, ctx.now_ms, &mut ctx.log, &mut ctx.wake);
                ctx.stats.clients_output_limit += 1;
            }
            ctx.wake.client(st);
        }
    }

    /// Whether `id` is a subscriber connection.
    #[cfg(test)]
    pub(in crate::engine) fn is_subscriber(&self, id: BackendId) -> bool {
        self.ctx
            .backends
            .conns
            .get(id.idx as usize)
            .is_some_and(|b| b.subscriber)
    }

    /// The core's Pub/Sub state.
    #[cfg(test)]
    pub(crate) fn pubsub(&self) -> &super::PubSub {
        &self.ctx.pubsub
    }

    /// A client that goes leaves its subscriptions.
    pub(in crate::engine) fn client_leaves_pubsub(&mut self, idx: usize) {
        if let Some(c) = self.clients.get_mut(idx) {
            self.ctx.leave_subscriptions(&mut c.st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{push_len, PushError};

    #[test]
    fn pushes_are_framed_whole_or_not_at_all() {
        let m = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n";
        for cut in 0..m.len() {
            assert_eq!(push_len(&m[..cut], 100, 0), Ok(None), "cut at {cut}");
        }
        assert_eq!(push_len(m, 100, 0), Ok(Some(m.len())));
        let mut two = m.to_vec();
        two.extend_from_slice(b":1\r\n");
        assert_eq!(push_len(&two, 100, 0), Ok(Some(m.len())));
        assert_eq!(push_len(b"-ERR x\r\n", 100, 0), Ok(Some(8)));
        assert_eq!(push_len(b"*2\r\n$-1\r\n*0\r\n", 100, 0), Ok(Some(13)));
        assert_eq!(
            push_len(b"$3\r\nabcd\r\n", 100, 0),
            Err(PushError::Malformed)
        );
        assert_eq!(push_len(b"?\r\n", 100, 0), Err(PushError::Malformed));
        assert_eq!(push_len(b"*x\r\n", 100, 0), Err(PushError::Malformed));
        assert_eq!(push_len(b"$101\r\n", 100, 0), Err(PushError::TooLarge));
        assert_eq!(
            push_len(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", 100, 0),
            Err(PushError::Malformed),
            "nesting is bounded"
        );
    }
}
