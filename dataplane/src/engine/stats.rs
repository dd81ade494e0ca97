//! Per-core counters: plain integers owned by one core's worker, never shared or
//! locked. Names are defined here, once, for every exporter.

/// One core's counters since start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Client connections accepted.
    pub clients_accepted: u64,
    /// Client connections refused at `max_clients`.
    pub clients_rejected: u64,
    /// Client connections closed, for any reason.
    pub clients_closed: u64,
    /// Clients closed for exceeding the output limits.
    pub clients_output_limit: u64,
    /// Clients closed by the idle or partial-request timeouts.
    pub clients_timed_out: u64,
    /// Requests parsed (empty requests excluded).
    pub requests: u64,
    /// Requests forwarded whole to one group.
    pub requests_forwarded: u64,
    /// Requests split across groups or fanned out.
    pub requests_split: u64,
    /// Requests answered by keyway itself, errors included.
    pub requests_local: u64,
    /// Malformed requests (the connection is closed).
    pub errors_protocol: u64,
    /// Requests refused: unknown, unsupported, wrong arity, cross-slot.
    pub errors_refused: u64,
    /// Replies that are errors because a backend failed.
    pub errors_backend: u64,
    /// Backend connections established.
    pub backend_connects: u64,
    /// Backend connections that failed or were lost.
    pub backend_failures: u64,
    /// Backend connections failed for not replying in time.
    pub backend_timeouts: u64,
    /// Replies dropped because their client had gone.
    pub replies_orphaned: u64,
    /// Requests held because their slots were about to migrate.
    pub requests_held: u64,
    /// MIGRATE calls sent to move a request's keys.
    pub key_moves: u64,
    /// Requests answered `-TRYAGAIN` because their keys could not be moved.
    pub moves_failed: u64,
    /// Requests kept back behind an earlier kept-back request of their client.
    pub requests_kept_behind: u64,
    /// Keys deleted on a migration's source because the target already had
    /// the same copy (`BUSYKEY` after a timed-out MIGRATE).
    pub keys_deleted_on_source: u64,
}

impl Stats {
    /// Every counter with its exported name.
    pub fn fields(&self) -> [(&'static str, u64); 21] {
        [
            ("clients_accepted", self.clients_accepted),
            ("clients_rejected", self.clients_rejected),
            ("clients_closed", self.clients_closed),
            ("clients_output_limit", self.clients_output_limit),
            ("clients_timed_out", self.clients_timed_out),
            ("requests", self.requests),
            ("requests_forwarded", self.requests_forwarded),
            ("requests_split", self.requests_split),
            ("requests_local", self.requests_local),
            ("errors_protocol", self.errors_protocol),
            ("errors_refused", self.errors_refused),
            ("errors_backend", self.errors_backend),
            ("backend_connects", self.backend_connects),
            ("backend_failures", self.backend_failures),
            ("backend_timeouts", self.backend_timeouts),
            ("replies_orphaned", self.replies_orphaned),
            ("requests_held", self.requests_held),
            ("key_moves", self.key_moves),
            ("moves_failed", self.moves_failed),
            ("requests_kept_behind", self.requests_kept_behind),
            ("keys_deleted_on_source", self.keys_deleted_on_source),
        ]
    }

    /// Adds `other` into `self` (merging cores).
    pub fn add(&mut self, other: &Stats) {
        let mut merged = self.fields();
        for (m, (_, v)) in merged.iter_mut().zip(other.fields()) {
            m.1 += v;
        }
        let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t, u] =
            merged.map(|(_, v)| v);
        *self = Stats {
            clients_accepted: a,
            clients_rejected: b,
            clients_closed: c,
            clients_output_limit: d,
            clients_timed_out: e,
            requests: f,
            requests_forwarded: g,
            requests_split: h,
            requests_local: i,
            errors_protocol: j,
            errors_refused: k,
            errors_backend: l,
            backend_connects: m,
            backend_failures: n,
            backend_timeouts: o,
            replies_orphaned: p,
            requests_held: q,
            key_moves: r,
            moves_failed: s,
            requests_kept_behind: t,
            keys_deleted_on_source: u,
        };
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

    #[test]
    fn add_merges_every_field() {
        let mut a = Stats {
            requests: 2,
            replies_orphaned: 1,
            ..Stats::default()
        };
        let b = Stats {
            requests: 3,
            clients_accepted: 4,
            replies_orphaned: 1,
            ..Stats::default()
        };
        a.add(&b);
        assert_eq!(a.requests, 5);
        assert_eq!(a.clients_accepted, 4);
        assert_eq!(a.replies_orphaned, 2);
    }
}
