//! Structured events: every change of a cluster's desired state (its new
//! version, who asked — an API peer and route, or ctld itself — and the
//! change as JSON), and every step of a failover or a migration, so that an
//! operator can reconstruct what happened.
//!
//! Each event is
//! - logged as one line through `tracing` at info level, target
//!   [`TARGET`] (`keyway_ctld::events`), its JSON in the field `event`
//!   (`KEYWAY_LOG=keyway_ctld::events=info` keeps only them);
//! - kept in a bounded ring per cluster ([`Journal`], the most recent
//!   `keyway-ctld --events-max`, 1024 by default), served at `GET
//!   /v1/clusters/{name}/events[?since=SEQ]` and shown by `keywayctl
//!   events`. The rings are process-wide (they outlive an election term)
//!   but not persisted: a restarted ctld starts with none, and a deleted
//!   cluster's ring is dropped with it (its log lines stay).
//!
//! Who made a change: the API's middleware runs each request inside
//! [`as_actor`], and `crate::api::blocking` carries that actor to the
//! blocking thread that makes the change ([`capture`], [`run_as`]); a
//! change made anywhere else (the failover supervisor, the migration
//! orchestrator) is by `ctld`.

mod what;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex, MutexGuard};

use serde_json::Value;

pub use what::change as change_json;

use crate::wire::Event;

/// The tracing target of event lines.
pub const TARGET: &str = "keyway_ctld::events";

/// The default number of events kept per cluster.
pub const DEFAULT_MAX: usize = 1024;

/// The most events `--events-max` may keep per cluster.
pub const MAX_MAX: usize = 1 << 20;

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `api` or `ctld`.
    pub who: &'static str,
    /// The API peer's address.
    pub peer: Option<String>,
    /// The API request's method and route pattern.
    pub route: Option<String>,
}

impl Actor {
    /// ctld itself (failover, migration, health).
    pub fn ctld() -> Actor {
        Actor {
            who: "ctld",
            peer: None,
            route: None,
        }
    }

    /// An API request from `peer` on `route`.
    pub fn api(peer: Option<String>, route: String) -> Actor {
        Actor {
            who: "api",
            peer,
            route: Some(route),
        }
    }
}

tokio::task_local! {
    static TASK_ACTOR: Actor;
}

thread_local! {
    static THREAD_ACTOR: RefCell<Option<Actor>> = const { RefCell::new(None) };
}

/// Runs `fut` (an API request) with `actor` as the author of what it does.
pub async fn as_actor<F: Future>(actor: Actor, fut: F) -> F::Output {
    TASK_ACTOR.scope(actor, fut).await
}

/// The actor of the current API request, if on its task.
pub fn capture() -> Option<Actor> {
    TASK_ACTOR.try_with(Clone::clone).ok()
}

/// Runs `f` (on a blocking thread) as `actor`.
pub fn run_as<T>(actor: Option<Actor>, f: impl FnOnce() -> T) -> T {
    let before = THREAD_ACTOR.with(|a| a.replace(actor));
    let r = f();
    THREAD_ACTOR.with(|a| *a.borrow_mut() = before);
    r
}

/// Who is acting now: the API request being served, or ctld.
pub fn current() -> Actor {
    THREAD_ACTOR
        .with(|a| a.borrow().clone())
        .or_else(capture)
        .unwrap_or_else(Actor::ctld)
}

/// The recent events of every cluster.
#[derive(Debug)]
pub struct Journal {
    rings: Mutex<Rings>,
    max: AtomicUsize,
    seq: AtomicU64,
}

/// Most deleted clusters remembered (see [`Rings::deleted`]).
const MAX_DELETED: usize = 4096;

/// The rings, and the clusters deleted since.
#[derive(Debug, Default)]
struct Rings {
    by_cluster: HashMap<String, VecDeque<Event>>,
    /// Deleted clusters, oldest first: a step of a migration or failover
    /// that ends after its cluster was deleted is logged but not kept, so
    /// no ring is made again for a cluster that is gone. A cluster created
    /// again under the name is taken off. At most [`MAX_DELETED`].
    deleted: VecDeque<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Journal {
    /// An empty journal keeping `max` events per cluster.
    pub fn new(max: usize) -> Journal {
        Journal {
            rings: Mutex::new(Rings::default()),
            max: AtomicUsize::new(max.clamp(1, MAX_MAX)),
            seq: AtomicU64::new(0),
        }
    }

    /// Keeps `max` events per cluster from now on.
    pub fn set_max(&self, max: usize) {
        self.max.store(max.clamp(1, MAX_MAX), Relaxed);
    }

    /// Logs and keeps an event of `cluster` by `actor`.
    pub fn record(&self, cluster: &str, actor: Actor, kind: &str, what: Value) -> Event {
        let max = self.max.load(Relaxed);
        let mut rings = lock(&self.rings);
        // Numbered under the lock, so a ring is in order.
        let seq = self.seq.fetch_add(1, Relaxed) + 1;
        let event = Event {
            seq,
            at_ms: crate::daemon::unix_ms(),
            cluster: cluster.to_string(),
            who: actor.who.to_string(),
            peer: actor.peer,
            route: actor.route,
            kind: kind.to_string(),
            what,
        };
        let line = serde_json::to_string(&event).unwrap_or_default();
        tracing::info!(target: TARGET, event = %line);
        if kind == "created" {
            rings.deleted.retain(|c| c != cluster);
        } else if rings.deleted.iter().any(|c| c == cluster) {
            return event;
        }
        let ring = rings.by_cluster.entry(cluster.to_string()).or_default();
        while ring.len() >= max {
            ring.pop_front();
        }
        ring.push_back(event.clone());
        event
    }

    /// The kept events of `cluster` numbered above `since`, oldest first.
    pub fn since(&self, cluster: &str, since: u64) -> Vec<Event> {
        lock(&self.rings)
            .by_cluster
            .get(cluster)
            .map_or_else(Vec::new, |r| {
                let start = r.partition_point(|e| e.seq <= since);
                r.range(start..).cloned().collect()
            })
    }

    /// Drops the ring of a deleted cluster; its later events are logged
    /// only.
    pub fn forget(&self, cluster: &str) {
        let mut rings = lock(&self.rings);
        rings.by_cluster.remove(cluster);
        if !rings.deleted.iter().any(|c| c == cluster) {
            if rings.deleted.len() >= MAX_DELETED {
                rings.deleted.pop_front();
            }
            rings.deleted.push_back(cluster.to_string());
        }
    }
}

/// The process's journal.
pub fn journal() -> &'static Journal {
    static JOURNAL: LazyLock<Journal> = LazyLock::new(|| Journal::new(DEFAULT_MAX));
    &JOURNAL
}

/// Logs and keeps an event of `cluster` by whoever is acting now.
pub fn emit(cluster: &str, kind: &str, what: Value) {
    journal().record(cluster, current(), kind, what);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_ring_keeps_the_most_recent_and_serves_since() {
        let j = Journal::new(3);
        for i in 0..5 {
            j.record("c", Actor::ctld(), "test", json!({ "i": i }));
        }
        j.record("other", Actor::ctld(), "test", json!({}));
        let all = j.since("c", 0);
        let kept: Vec<u64> = all.iter().map(|e| e.seq).collect();
        assert_eq!(kept, [3, 4, 5], "the oldest are dropped past max");
        assert_eq!(j.since("c", 4).len(), 1, "since is exclusive");
        assert!(j.since("nope", 0).is_empty());
        j.forget("c");
        assert!(j.since("c", 0).is_empty(), "a deleted cluster's ring goes");
        // A step ending after the deletion makes no ring again.
        j.record("c", Actor::ctld(), "migration", json!({}));
        assert!(j.since("c", 0).is_empty(), "a deleted cluster keeps none");
        assert_eq!(lock(&j.rings).by_cluster.len(), 1, "only `other`'s ring");
        // Created again under its name: kept again.
        j.record("c", Actor::ctld(), "created", json!({}));
        j.record("c", Actor::ctld(), "change", json!({}));
        assert_eq!(j.since("c", 0).len(), 2);
    }

    #[test]
    fn the_actor_follows_the_request_to_its_blocking_thread() {
        assert_eq!(current(), Actor::ctld(), "outside a request: ctld");
        let api = Actor::api(Some("127.0.0.1:9".into()), "POST /v1/clusters".into());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let seen = rt.block_on(as_actor(api.clone(), async {
            let actor = capture();
            std::thread::spawn(move || run_as(actor, current))
                .join()
                .expect("thread")
        }));
        assert_eq!(seen, api);
        assert_eq!(current(), Actor::ctld(), "and is gone after it");
    }
}
