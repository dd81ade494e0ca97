//! How this data plane fares with each backend, for keyway-ctld's failure
//! detection (`Ack.backends` in `capnp/schema/control.capnp`).
//!
//! Each core keeps a [`Health`] per connection pool (one backend address),
//! plain fields it alone touches: a failure (connect error, connection lost,
//! no reply in time) is counted where the connection fails, a success
//! (bytes from the backend) where replies are read, stamped with the core's
//! cached clock (no `Instant::now()` per request). The core copies its
//! pools' records into its [`PublishedHealth`] on every tick and at once
//! when a backend goes from up to failing or back (then also bumping
//! `Shared::health_changes`, so the control thread sends an Ack soon); it
//! only ever `try_lock`s, so it never waits for the control thread, and a
//! copy it could not make is made at the next tick. The control thread
//! merges the cores' copies into reports with [`merge`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Instant;

use keyway_capnp::control::{BackendReport, MAX_BACKEND_REPORTS};

/// One core's record of one backend.
#[derive(Debug, Default, Clone)]
pub(crate) struct Health {
    /// Consecutive failures since the last success.
    pub failures: u32,
    /// The last failure's reason.
    pub last_error: Option<Arc<str>>,
    /// The core's clock (`Ctx::now_ms`) at the last success and failure.
    pub last_success_ms: Option<u64>,
    pub last_failure_ms: Option<u64>,
}

impl Health {
    /// A failed attempt; true when the backend went from up to failing.
    pub fn failed(&mut self, now_ms: u64, reason: &str) -> bool {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(Arc::from(reason));
        self.last_failure_ms = Some(now_ms);
        self.failures == 1
    }

    /// The backend answered; true when it went from failing to up.
    #[inline]
    pub fn answered(&mut self, now_ms: u64) -> bool {
        self.last_success_ms = Some(now_ms);
        if self.failures == 0 {
            return false;
        }
        self.failures = 0;
        true
    }

    /// Whether anything happened yet.
    pub fn is_known(&self) -> bool {
        self.last_success_ms.is_some() || self.last_failure_ms.is_some()
    }
}

/// One backend as a core last published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    /// `host:port` as the table names it.
    pub address: Arc<str>,
    /// Consecutive failures since the last success.
    pub failures: u32,
    /// The last failure's reason.
    pub last_error: Option<Arc<str>>,
    /// When the last success and failure were.
    pub last_success: Option<Instant>,
    /// See `last_success`.
    pub last_failure: Option<Instant>,
}

/// A core's latest copy of its backends' health, read by the control thread.
#[derive(Debug, Default)]
pub struct PublishedHealth(Mutex<Vec<BackendHealth>>);

impl PublishedHealth {
    /// Replaces the copy with `fill`'s entries, unless the reader holds it
    /// now; false then (try again later).
    pub(crate) fn try_publish(&self, fill: impl FnOnce(&mut Vec<BackendHealth>)) -> bool {
        let mut out = match self.0.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        out.clear();
        fill(&mut out);
        true
    }

    /// A copy of what the core published last.
    pub fn load(&self) -> Vec<BackendHealth> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The reports for an Ack, as of `now`: one per address over every core's
/// copy, failing backends first (most failures first), at most
/// [`MAX_BACKEND_REPORTS`].
///
/// Cores are merged by recency: a core counts the backend failing when it
/// has failed since its last success there (its own count is exact); over
/// cores, the backend is failing if a failing core's last failure is no
/// older than the newest success any core that is not failing had (a tie
/// counts as failing: the clocks are a tick coarse), with the most
/// consecutive failures of those cores. The newest success and failure of
/// any core are reported, the newest failure's reason with them.
pub fn merge<'a>(
    cores: impl IntoIterator<Item = &'a [BackendHealth]>,
    now: Instant,
) -> Vec<BackendReport> {
    #[derive(Default)]
    struct Merged<'h> {
        last_success: Option<Instant>,
        last_failure: Option<Instant>,
        last_error: Option<&'h str>,
        /// Newest success of a core not failing.
        up_at: Option<Instant>,
        /// (last failure, failures) of each failing core.
        failing: Vec<(Option<Instant>, u32)>,
    }
    let mut by_addr: HashMap<&str, Merged<'_>> = HashMap::new();
    for core in cores {
        for h in core {
            let m = by_addr.entry(&h.address).or_default();
            m.last_success = m.last_success.max(h.last_success);
            if h.last_failure > m.last_failure {
                m.last_failure = h.last_failure;
                m.last_error = h.last_error.as_deref();
            }
            if h.failures > 0 {
                m.failing.push((h.last_failure, h.failures));
            } else {
                m.up_at = m.up_at.max(h.last_success);
            }
        }
    }
    let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_millis() as u64);
    let mut out: Vec<BackendReport> = by_addr
        .into_iter()
        .map(|(address, m)| BackendReport {
            address: address.to_string(),
            failures: m
                .failing
                .iter()
                .filter(|(at, _)| *at >= m.up_at)
                .map(|&(_, n)| n)
                .max()
                .unwrap_or(0),
            last_error: m.last_error.unwrap_or("").to_string(),
            since_success_ms: since(m.last_success),
            since_failure_ms: since(m.last_failure),
        })
        .collect();
    out.sort_by(|a, b| {
        b.failures
            .cmp(&a.failures)
            .then_with(|| a.address.cmp(&b.address))
    });
    out.truncate(MAX_BACKEND_REPORTS);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn h(addr: &str, failures: u32, ok_ago: Option<u64>, failed_ago: Option<u64>) -> BackendHealth {
        let base = Instant::now();
        let at = |ms: u64| base + Duration::from_secs(10) - Duration::from_millis(ms);
        BackendHealth {
            address: Arc::from(addr),
            failures,
            last_error: failed_ago.map(|ms| Arc::from(format!("error {ms} ms ago"))),
            last_success: ok_ago.map(at),
            last_failure: failed_ago.map(at),
        }
    }

    #[test]
    fn a_record_counts_consecutive_failures_and_says_when_it_turns() {
        let mut r = Health::default();
        assert!(!r.is_known());
        assert!(!r.answered(5), "up to up is no turn");
        assert!(r.failed(10, "refused"), "up to failing");
        assert!(!r.failed(20, "refused again"));
        assert_eq!(r.failures, 2);
        assert_eq!(r.last_error.as_deref(), Some("refused again"));
        assert!(r.answered(30), "failing to up");
        assert_eq!(
            (r.failures, r.last_success_ms, r.last_failure_ms),
            (0, Some(30), Some(20))
        );
    }

    #[test]
    fn cores_merge_by_recency_and_failing_backends_come_first() {
        let now = Instant::now() + Duration::from_secs(10);
        let core0 = vec![
            h("10.0.0.1:6379", 0, Some(100), None),
            h("10.0.0.2:6379", 2, Some(5000), Some(300)),
            h("10.0.0.3:6379", 1, Some(900), Some(800)),
        ];
        let core1 = vec![
            // Core 1 saw the first backend fail after core 0's success.
            h("10.0.0.1:6379", 3, Some(2000), Some(50)),
            // ... and the third answer after core 0's failure: it is up.
            h("10.0.0.3:6379", 0, Some(20), None),
        ];
        let r = merge([core0.as_slice(), core1.as_slice()], now);
        let view: Vec<(&str, u32)> = r.iter().map(|r| (&*r.address, r.failures)).collect();
        assert_eq!(
            view,
            [
                ("10.0.0.1:6379", 3),
                ("10.0.0.2:6379", 2),
                ("10.0.0.3:6379", 0)
            ],
            "failing first, most failures first; a newer success elsewhere clears a failure"
        );
        assert_eq!(
            r[0].last_error, "error 50 ms ago",
            "the newest failure's reason"
        );
        let near = |v: Option<u64>, want: u64| v.is_some_and(|v| v.abs_diff(want) < 5);
        assert!(
            near(r[0].since_success_ms, 100),
            "{:?}",
            r[0].since_success_ms
        );
        assert!(
            near(r[0].since_failure_ms, 50),
            "{:?}",
            r[0].since_failure_ms
        );
        assert!(near(r[2].since_failure_ms, 800));
        assert_eq!(merge([core1.as_slice()], now)[1].since_failure_ms, None);
    }

    #[test]
    fn a_failure_in_the_same_tick_as_a_success_is_failing() {
        let now = Instant::now();
        let same = BackendHealth {
            address: Arc::from("10.0.0.1:6379"),
            failures: 1,
            last_error: Some(Arc::from("connection reset")),
            last_success: Some(now),
            last_failure: Some(now),
        };
        let up = BackendHealth {
            failures: 0,
            ..same.clone()
        };
        assert_eq!(merge([std::slice::from_ref(&same)], now)[0].failures, 1);
        assert_eq!(
            merge(
                [std::slice::from_ref(&same), std::slice::from_ref(&up)],
                now
            )[0]
            .failures,
            1,
            "a tie between cores counts as failing"
        );
    }

    #[test]
    fn reports_are_capped() {
        let many: Vec<BackendHealth> = (0..MAX_BACKEND_REPORTS + 10)
            .map(|i| {
                h(
                    &format!("10.0.{}.{}:6379", i / 256, i % 256),
                    (i % 3) as u32,
                    None,
                    Some(1),
                )
            })
            .collect();
        let r = merge([many.as_slice()], Instant::now() + Duration::from_secs(10));
        assert_eq!(r.len(), MAX_BACKEND_REPORTS);
        assert!(
            r.iter().take(10).all(|r| r.failures == 2),
            "the failing ones kept"
        );
    }

    #[test]
    fn a_core_never_waits_for_the_reader() {
        let p = PublishedHealth::default();
        assert!(p.try_publish(|v| v.push(h("a:1", 1, None, Some(1)))));
        let held = p.0.lock().unwrap();
        assert!(!p.try_publish(|v| v.clear()), "busy: try at the next tick");
        drop(held);
        assert_eq!(p.load().len(), 1);
    }
}
