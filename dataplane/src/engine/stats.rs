//! Per-core counters: plain integers owned by one core's worker, never shared
//! or locked on the request path. Names are defined here, once, for every
//! exporter. Each core publishes a copy into its [`PublishedStats`] on every
//! tick (relaxed stores, off the request path); `INFO keyway` adds the other
//! cores' published copies to its own core's live counters.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// One core's counters since start.
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        /// How many counters [`Stats`] has.
        pub const COUNTERS: usize = [$(stringify!($name)),*].len();

        impl Stats {
            /// Every counter with its exported name, in declaration order.
            pub fn fields(&self) -> [(&'static str, u64); COUNTERS] {
                [$((stringify!($name), self.$name)),*]
            }

            /// Adds `other` into `self` (merging cores).
            pub fn add(&mut self, other: &Stats) {
                $(self.$name += other.$name;)*
            }

            /// The counters as published by a core.
            fn load(p: &PublishedStats) -> Stats {
                let mut i = 0;
                $(
                    let $name = p.0[i].load(Ordering::Relaxed);
                    i += 1;
                )*
                let _ = i;
                Stats { $($name),* }
            }
        }
    };
}

counters! {
    /// Client connections accepted.
    clients_accepted,
    /// Client connections refused at `max_clients`.
    clients_rejected,
    /// Client connections closed, for any reason.
    clients_closed,
    /// Clients closed for exceeding the output limits.
    clients_output_limit,
    /// Clients closed by the idle or partial-request timeouts.
    clients_timed_out,
    /// Clients closed by `CLIENT KILL`.
    clients_killed,
    /// Clients closed to bring keyway's buffers back under `max_memory`.
    clients_evicted_memory,
    /// Connections closed because they sent an HTTP request (`POST`, `Host:`),
    /// a cross-protocol attack.
    clients_cross_protocol,
    /// Times a client stopped being read because a backend connection it
    /// writes to had `write_buffer_limit` bytes waiting.
    clients_backpressured,
    /// Requests parsed (empty requests excluded).
    requests,
    /// Requests forwarded whole to one group.
    requests_forwarded,
    /// Requests split across groups or fanned out.
    requests_split,
    /// `SCAN` steps that started the scan again because the migrations
    /// changed since the cursor was given (see `engine::keyspace`).
    scans_restarted,
    /// Requests answered by keyway itself, errors included.
    requests_local,
    /// Requests refused with `-OOM` because keyway's buffers exceeded
    /// `max_memory`.
    requests_oom,
    /// Malformed requests (the connection is closed).
    errors_protocol,
    /// Requests refused: unknown, unsupported, wrong arity, cross-slot.
    errors_refused,
    /// Replies that are errors because a backend failed.
    errors_backend,
    /// `SCRIPT LOAD`s keyway sent before the first `EVALSHA` of a script it
    /// knows on a backend connection.
    scripts_preloaded,
    /// `EVALSHA`s answered `-NOSCRIPT`, loaded and sent again.
    scripts_retried,
    /// Commands sent to undo a partial `FUNCTION LOAD` (or `CONFIG SET`,
    /// see `engine::config_cmd`).
    scripts_undone,
    /// Replies replaced by an error because they exceeded a size limit.
    replies_too_large,
    /// Backend connections established.
    backend_connects,
    /// Backend connections that failed or were lost.
    backend_failures,
    /// Backend connections failed for not replying in time.
    backend_timeouts,
    /// Backend connections failed for sending a reply no request asked for.
    backend_unsolicited,
    /// RESP3 pushes read on a request connection, which answer no request
    /// (see `engine::resp3`): dropped.
    backend_pushes_dropped,
    /// Replies dropped because their client had gone.
    replies_orphaned,
    /// Requests held because their slots were about to migrate.
    requests_held,
    /// MIGRATE calls sent to move a request's keys.
    key_moves,
    /// Requests sent to a migrating slot's target group because their
    /// keys were already moved there.
    migration_redirects,
    /// Bytes read from clients.
    client_bytes_in,
    /// Bytes written to clients.
    client_bytes_out,
    /// Requests answered `-TRYAGAIN` because their keys could not be moved.
    moves_failed,
    /// Requests kept back behind an earlier kept-back request of their client.
    requests_kept_behind,
    /// Keys deleted on a migration's source because the target already had
    /// the same copy (`BUSYKEY` after a timed-out MIGRATE).
    keys_deleted_on_source,
    /// Dedicated backend connections leased to a client (a `WATCH`, a
    /// blocking command).
    dedicated_leases,
    /// Blocking commands sent.
    requests_blocking,
    /// Clients that left while a blocking command of theirs was in flight
    /// (keyway unblocked it at Redis).
    blocked_clients_left,
    /// Elements a blocking command popped after its client left, pushed
    /// back (see `engine::blocking`).
    elements_restored,
    /// Transactions sent (`EXEC`).
    transactions,
    /// Blocked commands sent again because a new table moved their keys.
    blocked_rerouted,
    /// Pub/Sub messages read from the core's subscriber connections.
    pubsub_messages,
    /// Pub/Sub messages copied to subscribed clients (a message read once
    /// for 1,000 subscribers counts 1,000 here).
    pubsub_deliveries,
    /// `MONITOR` lines copied to monitoring clients.
    monitor_lines,
    /// `MONITOR` lines left out as keyway's own traffic (see
    /// `engine::monitor`).
    monitor_lines_left_out,
    /// Failed `AUTH`s and `HELLO … AUTH`s (see `engine::auth`).
    acl_denied_auth,
    /// Requests refused by a user's command rules.
    acl_denied_cmd,
    /// Requests refused by a user's key patterns.
    acl_denied_key,
    /// Requests refused by a user's channel patterns.
    acl_denied_channel,
}

/// A core's counters as it last published them, for the other cores to read.
#[derive(Debug)]
pub struct PublishedStats([AtomicU64; COUNTERS]);

impl Default for PublishedStats {
    fn default() -> Self {
        PublishedStats(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl PublishedStats {
    /// Stores `s` (a tick's copy of a core's counters).
    pub fn publish(&self, s: &Stats) {
        for (slot, (_, v)) in self.0.iter().zip(s.fields()) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// The counters last published.
    pub fn load(&self) -> Stats {
        Stats::load(self)
    }
}

/// The most distinct error codes `errorstats` tracks, as Redis's
/// `ERROR_STATS_NUMBER`: errors with a new code past it are counted in
/// `total_error_replies` only.
pub const ERROR_CODES: usize = 128;

/// One core's per-command and per-error counters (`INFO commandstats`,
/// `INFO errorstats`): plain integers indexed by command id, owned by the
/// core; a copy is published on every tick into [`super::CoreReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandStats {
    /// Requests served, by command id (`calls=`).
    pub calls: Box<[u64]>,
    /// Requests refused before they ran (wrong arity, unsupported, fenced,
    /// out of memory), by command id (`rejected_calls=`).
    pub rejected: Box<[u64]>,
    /// Requests served whose reply was an error, by command id
    /// (`failed_calls=`).
    pub failed: Box<[u64]>,
    /// Nanoseconds keyway held the requests served, by command id (`usec=`;
    /// 0 with `metrics.latency` off, see [`super::meters`]).
    pub time_ns: Box<[u64]>,
    /// Error replies by error code (the first word of the error), at most
    /// [`ERROR_CODES`] codes.
    pub errors: Vec<(Box<str>, u64)>,
    /// Every error reply sent, including those whose code is not tracked.
    pub error_replies: u64,
}

impl Default for CommandStats {
    fn default() -> Self {
        let ids = keyway_protocol::command::COMMAND_IDS;
        CommandStats {
            calls: vec![0; ids].into_boxed_slice(),
            rejected: vec![0; ids].into_boxed_slice(),
            failed: vec![0; ids].into_boxed_slice(),
            time_ns: vec![0; ids].into_boxed_slice(),
            errors: Vec::new(),
            error_replies: 0,
        }
    }
}

impl CommandStats {
    /// Counts a request of command `id` that is served (if `new`: a
    /// request dispatched again after being kept back is counted once).
    #[inline(always)]
    pub fn call(&mut self, id: u16, new: bool) {
        if let Some(c) = self.calls.get_mut(usize::from(id)) {
            *c += u64::from(new);
        }
    }

    /// A request counted by [`call`](Self::call) turned out unsupported:
    /// it is counted as rejected instead.
    #[cold]
    pub fn unsupported(&mut self, id: u16, new: bool) {
        if let Some(c) = self.calls.get_mut(usize::from(id)) {
            *c -= u64::from(new).min(*c);
        }
        self.reject(id);
    }

    /// Counts a request of command `id` refused before it ran.
    #[cold]
    pub fn reject(&mut self, id: u16) {
        if let Some(c) = self.rejected.get_mut(usize::from(id)) {
            *c += 1;
        }
    }

    /// Counts an error reply (`-CODE message\r\n`, or its text without the
    /// `-`) sent to a client.
    #[cold]
    pub fn error_reply(&mut self, reply: &[u8]) {
        self.error_replies += 1;
        let text = reply.strip_prefix(b"-").unwrap_or(reply);
        let end = text
            .iter()
            .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
            .unwrap_or(text.len());
        let code = &text[..end.min(64)];
        if let Some(e) = self.errors.iter_mut().find(|(c, _)| c.as_bytes() == code) {
            e.1 += 1;
        } else if self.errors.len() < ERROR_CODES && !code.is_empty() {
            self.errors.push((String::from_utf8_lossy(code).into(), 1));
        }
    }

    /// Adds `other` into `self` (merging cores).
    pub fn add(&mut self, other: &CommandStats) {
        for (a, b) in self.calls.iter_mut().zip(other.calls.iter()) {
            *a += b;
        }
        for (a, b) in self.rejected.iter_mut().zip(other.rejected.iter()) {
            *a += b;
        }
        for (a, b) in self.failed.iter_mut().zip(other.failed.iter()) {
            *a += b;
        }
        for (a, b) in self.time_ns.iter_mut().zip(other.time_ns.iter()) {
            *a += b;
        }
        for (code, n) in &other.errors {
            if let Some(e) = self.errors.iter_mut().find(|(c, _)| c == code) {
                e.1 += n;
            } else if self.errors.len() < ERROR_CODES {
                self.errors.push((code.clone(), *n));
            }
        }
        self.error_replies += other.error_replies;
    }

    /// `self` minus `base` (a `CONFIG RESETSTAT` baseline), never below 0.
    pub fn since(&self, base: &CommandStats) -> CommandStats {
        let mut s = self.clone();
        for (a, b) in s.calls.iter_mut().zip(base.calls.iter()) {
            *a = a.saturating_sub(*b);
        }
        for (a, b) in s.rejected.iter_mut().zip(base.rejected.iter()) {
            *a = a.saturating_sub(*b);
        }
        for (a, b) in s.failed.iter_mut().zip(base.failed.iter()) {
            *a = a.saturating_sub(*b);
        }
        for (a, b) in s.time_ns.iter_mut().zip(base.time_ns.iter()) {
            *a = a.saturating_sub(*b);
        }
        for (code, n) in s.errors.iter_mut() {
            if let Some((_, b)) = base.errors.iter().find(|(c, _)| c == code) {
                *n = n.saturating_sub(*b);
            }
        }
        s.errors.retain(|(_, n)| *n > 0);
        s.error_replies = s.error_replies.saturating_sub(base.error_replies);
        s
    }

    /// Copies `self` into `dst` (a tick's publication) without allocating
    /// unless a new error code appeared.
    pub fn publish_into(&self, dst: &mut CommandStats) {
        dst.calls.copy_from_slice(&self.calls);
        dst.rejected.copy_from_slice(&self.rejected);
        dst.failed.copy_from_slice(&self.failed);
        dst.time_ns.copy_from_slice(&self.time_ns);
        if dst.errors.len() == self.errors.len() {
            for (d, s) in dst.errors.iter_mut().zip(&self.errors) {
                d.1 = s.1;
            }
        } else {
            dst.errors.clone_from(&self.errors);
        }
        dst.error_replies = self.error_replies;
    }
}

impl Stats {
    /// `self` minus `base` (a `CONFIG RESETSTAT` baseline), never below 0.
    pub fn since(&self, base: &Stats) -> Stats {
        let mut out = Stats::default();
        let mut p = PublishedStats::default();
        for ((slot, (_, a)), (_, b)) in p.0.iter_mut().zip(self.fields()).zip(base.fields()) {
            *slot.get_mut() = a.saturating_sub(b);
        }
        out.add(&p.load());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let s = Stats::default();
        let names: Vec<&str> = s.fields().iter().map(|(n, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
    }

    /// Counters with every field set, each to a different value.
    fn every_field_set() -> Stats {
        let p = PublishedStats::default();
        for (i, slot) in p.0.iter().enumerate() {
            slot.store(i as u64 + 1, Ordering::Relaxed);
        }
        p.load()
    }

    #[test]
    fn add_merges_every_field() {
        let b = every_field_set();
        let mut a = b.clone();
        a.add(&b);
        for ((name, sum), (_, one)) in a.fields().into_iter().zip(b.fields()) {
            assert!(one > 0, "{name} was set");
            assert_eq!(sum, 2 * one, "{name} is added up");
        }
    }

    #[test]
    fn published_copies_read_back_field_by_field() {
        let s = every_field_set();
        for (i, (name, v)) in s.fields().into_iter().enumerate() {
            assert_eq!(v, i as u64 + 1, "{name} reads its own slot");
        }
        let p = PublishedStats::default();
        p.publish(&s);
        assert_eq!(p.load(), s);
        let mut other = s.clone();
        other.requests += 1;
        p.publish(&other);
        assert_eq!(p.load(), other, "a new copy replaces the last");
    }

    #[test]
    fn command_stats_count_calls_rejections_and_error_codes() {
        let mut s = CommandStats::default();
        s.call(3, true);
        s.call(3, true);
        s.call(3, false);
        s.call(4, true);
        s.unsupported(4, true);
        s.call(u16::MAX, true);
        s.error_reply(b"-WRONGTYPE Operation against a key\r\n");
        s.error_reply(b"-ERR unknown\r\n");
        s.error_reply(b"-ERR other\r\n");
        assert_eq!((s.calls[3], s.calls[4], s.rejected[4]), (2, 0, 1));
        assert_eq!(
            s.errors,
            vec![("WRONGTYPE".into(), 1), ("ERR".into(), 2)],
            "errors are counted by their first word"
        );
        let mut all = s.clone();
        all.add(&s);
        assert_eq!(
            (all.calls[3], all.errors[1].1, all.error_replies),
            (4, 4, 6)
        );
        let since = all.since(&s);
        assert_eq!(since, s, "a baseline is subtracted");
        let mut published = CommandStats::default();
        all.publish_into(&mut published);
        assert_eq!(published, all);
        for i in 0..300 {
            s.error_reply(format!("-E{i} x\r\n").as_bytes());
        }
        assert_eq!(s.errors.len(), ERROR_CODES, "error codes are bounded");
        assert_eq!(s.error_replies, 303);
    }

    #[test]
    fn stats_since_a_baseline() {
        let b = every_field_set();
        let mut a = b.clone();
        a.add(&b);
        assert_eq!(a.since(&b), b);
        assert_eq!(b.since(&a), Stats::default(), "never below 0");
    }
}
