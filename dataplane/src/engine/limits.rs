//! What keeps one core's memory bounded, apart from the per-client limits
//! checked where they apply: the process-wide buffer budget
//! (`limits.max_memory`), the replies that limits turn into errors, and the
//! log of connections closed by a limit (rate-limited, so that a flood of
//! closes cannot flood the log).
//!
//! The budget is an estimate kept without work per request: every tick a
//! core adds up what its clients and backend connections hold, and between
//! ticks it adds the bytes it reads (every byte buffered was read first) and
//! takes off the bytes it has written (each leaves a buffer), republishing
//! whenever the estimate has moved by [`PUBLISH_EVERY`] since it last did.
//! Each core publishes its estimate in its [`super::CoreReport`];
//! a core is over budget when the sum over cores exceeds `max_memory`, and
//! then refuses routed requests with `-OOM` and closes its largest clients.

use std::sync::atomic::Ordering;

use super::client::ClientState;
use super::replies::Refusal;
use super::{Shared, Wake};

/// How far a core's estimate may move before it is published again.
pub(crate) const PUBLISH_EVERY: u64 = 1 << 20;

/// Clients holding less than this are never closed to free memory (closing
/// them would free too little to matter).
pub(crate) const EVICT_MIN: usize = 1 << 20;

/// One core's share of the buffer budget.
#[derive(Debug, Default)]
pub(crate) struct MemoryBudget {
    /// What the last scan found.
    scanned: u64,
    /// Bytes read since the last scan.
    read: u64,
    /// Bytes written (so gone from a buffer) since the last scan.
    written: u64,
    /// The estimate when last published.
    published: u64,
    /// The process is over `max_memory`: routed requests get `-OOM`.
    pub over: bool,
}

impl MemoryBudget {
    /// The current estimate.
    #[inline]
    fn estimate(&self) -> u64 {
        (self.scanned + self.read).saturating_sub(self.written)
    }

    /// Records `n` bytes read from a socket.
    #[inline]
    pub fn read(&mut self, n: usize, shared: &Shared, core: usize, max: u64) {
        self.read += n as u64;
        if self.estimate() >= self.published + PUBLISH_EVERY {
            self.publish(shared, core, max);
        }
    }

    /// Records `n` bytes written to a socket (gone from their buffer).
    #[inline]
    pub fn written(&mut self, n: usize, shared: &Shared, core: usize, max: u64) {
        self.written += n as u64;
        if self.estimate() + PUBLISH_EVERY <= self.published {
            self.publish(shared, core, max);
        }
    }

    /// Records a scan's total (what was read and written is in it now) and
    /// publishes.
    pub fn scanned(&mut self, total: u64, shared: &Shared, core: usize, max: u64) {
        self.scanned = total;
        self.read = 0;
        self.written = 0;
        self.publish(shared, core, max);
    }

    fn publish(&mut self, shared: &Shared, core: usize, max: u64) {
        self.published = self.estimate();
        if let Some(r) = shared.reports.get(core) {
            r.memory.store(self.published, Ordering::Relaxed);
        }
        self.budget_changed(shared, max);
    }

    /// Decides again whether the process is over `max` (a new config).
    pub fn budget_changed(&mut self, shared: &Shared, max: u64) {
        self.over = max > 0 && shared.memory_used() > max;
    }
}

/// A rate limit for log lines about closed connections: at most `BURST` a
/// window; the next line after a quiet spell says how many were left out.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    window_ms: u64,
    in_window: u32,
    suppressed: u64,
}

impl LogLimit {
    const WINDOW_MS: u64 = 10_000;
    const BURST: u32 = 20;

    /// Whether a line may be logged now; `Some(n)`: yes, and `n` lines were
    /// left out since the last one.
    pub fn allow(&mut self, now_ms: u64) -> Option<u64> {
        if now_ms >= self.window_ms + Self::WINDOW_MS {
            self.window_ms = now_ms;
            self.in_window = 0;
        }
        if self.in_window >= Self::BURST {
            self.suppressed += 1;
            return None;
        }
        self.in_window += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Closes a client for exceeding a limit (see
/// [`ClientState::close_for_limit`]), logs it with the client and the reason
/// (rate-limited), and wakes its driver.
pub(crate) fn close_client(
    st: &mut ClientState,
    reply: &Refusal<'_>,
    reason: &str,
    now_ms: u64,
    log: &mut LogLimit,
    wake: &mut Wake,
) {
    st.close_for_limit(reply, now_ms);
    log_close(st, reason, now_ms, log);
    wake.client(st);
}

/// Logs that a client is being closed by a limit, and why (rate-limited).
pub(crate) fn log_close(st: &ClientState, reason: &str, now_ms: u64, log: &mut LogLimit) {
    if let Some(left_out) = log.allow(now_ms) {
        tracing::warn!(
            client = st.id,
            peer = %st.peer,
            earlier_lines_left_out = left_out,
            "closing a client connection: {reason}"
        );
    }
}

/// Closes a client whose unread replies exceed `limits.output_hard_limit`.
pub(crate) fn close_for_output(
    st: &mut ClientState,
    hard: usize,
    now_ms: u64,
    log: &mut LogLimit,
    wake: &mut Wake,
) {
    let why = Refusal::HardLimit { limit: hard };
    close_client(
        st,
        &why,
        "its unread replies exceed limits.output_hard_limit",
        now_ms,
        log,
        wake,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_limit_lets_a_burst_through_then_counts() {
        let mut l = LogLimit::default();
        for _ in 0..LogLimit::BURST {
            assert_eq!(l.allow(5), Some(0));
        }
        assert_eq!(l.allow(6), None);
        assert_eq!(l.allow(7), None);
        assert_eq!(l.allow(5 + LogLimit::WINDOW_MS), Some(2));
    }

    #[test]
    fn the_budget_publishes_every_megabyte_and_sums_cores() {
        let shared = Shared::new(2);
        shared.reports[1].memory.store(3 << 20, Ordering::Relaxed);
        let mut b = MemoryBudget::default();
        b.read(1000, &shared, 0, 4 << 20);
        assert_eq!(shared.reports[0].memory.load(Ordering::Relaxed), 0);
        assert!(!b.over);
        b.read(PUBLISH_EVERY as usize, &shared, 0, 4 << 20);
        assert_eq!(shared.memory_used(), (3 << 20) + PUBLISH_EVERY + 1000);
        assert!(b.over, "4 MiB + 1000 bytes is over 4 MiB");
        b.written(PUBLISH_EVERY as usize, &shared, 0, 4 << 20);
        assert!(!b.over, "what is written leaves the estimate");
        assert_eq!(shared.reports[0].memory.load(Ordering::Relaxed), 1000);
        b.scanned(10, &shared, 0, 4 << 20);
        assert!(!b.over);
        assert_eq!(shared.reports[0].memory.load(Ordering::Relaxed), 10);
        b.scanned(10, &shared, 0, 0);
        assert!(!b.over, "0 is no budget");
    }
}
