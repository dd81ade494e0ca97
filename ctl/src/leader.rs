//! Which keyway-ctld is active, and what runs only there.
//!
//! With the file store there is one ctld and it is always active. With the
//! etcd store ([`crate::etcd`]) several ctlds share one etcd and an election
//! makes one of them active; the others stand by. A period of being active
//! is a [`Term`]: it starts when this ctld wins the election (a fresh
//! [`Ctld`] over the state loaded from etcd then, so `Ctld::started` is the
//! election, not the process start) and ends when it loses it. Sessions and
//! the API follow the current [`Role`] through a `watch` channel.
//!
//! **The lease safety rule.** A ctld grants data-plane leases (heartbeats)
//! only while its own election lease is confirmed: `now < sent + TTL` for
//! the last keepalive etcd answered, `sent` being when that keepalive left
//! ([`LeaseClock`], checked by [`Term::may_grant`] before every heartbeat).
//! etcd renews the election lease when the keepalive arrives, so it cannot
//! expire before that; a successor can only win after it expired (or was
//! revoked, which a ctld does only after it stopped granting), i.e. after
//! the last lease this ctld granted started. The successor assumes a data
//! plane it has not heard from may hold a lease until its own start plus
//! the lease (`Ctld::unsettled`), which is after that lease's end. So no
//! step that needs every data plane to see a version is taken while one of
//! them may still route by an older one.
//!
//! **Active-only tasks.** [`ActiveTasks::start`] is the one place where what
//! runs only on the active ctld is started for a term, and
//! [`ActiveTasks::stop`] where it is stopped when the term ends: today the
//! migration orchestrator (with its sweeps), the health checks and
//! failovers (`crate::health::supervisor`), and the persister of acked
//! versions. A new active-only task adds itself there, as a thread that runs
//! until the term's `stop` flag is set.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::daemon::{Ctld, Shared};

/// Where a ctld serves: what the election value holds, and what a standby
/// tells its callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    /// Its HTTP API (`host:port`).
    pub api: String,
    /// Its control port, which data planes dial (`host:port`).
    pub control: String,
}

/// What this ctld is now.
#[derive(Debug, Clone)]
pub enum Role {
    /// Active: sessions and the API go to this term's daemon.
    Active(Active),
    /// Standing by; the active ctld, if known.
    Standby(Option<Addresses>),
}

/// The active daemon and the API's routes over it.
#[derive(Debug, Clone)]
pub struct Active {
    /// The daemon of this term.
    pub ctld: Shared,
    /// The API's routes over it.
    pub api: axum::Router,
}

impl Role {
    /// What a standby tells a data plane's Hello (the data plane then tries
    /// its next address). Starts with "standby", as the schema says.
    pub fn standby_refusal(leader: Option<&Addresses>) -> String {
        match leader {
            Some(a) => format!("standby: the active keyway-ctld is {}", a.control),
            None => "standby: no keyway-ctld is active right now".into(),
        }
    }
}

/// Until when this ctld's election lease is confirmed, on the monotonic
/// clock: the last answered keepalive's sending time plus the TTL.
#[derive(Debug)]
pub struct LeaseClock {
    base: Instant,
    /// Milliseconds after `base`; 0: never confirmed; `u64::MAX`: no
    /// election (always confirmed).
    until_ms: AtomicU64,
}

impl LeaseClock {
    /// A clock that is always confirmed (the file store: no election).
    pub fn forever() -> LeaseClock {
        LeaseClock {
            base: Instant::now(),
            until_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// A clock not confirmed yet.
    pub fn unconfirmed() -> LeaseClock {
        LeaseClock {
            base: Instant::now(),
            until_ms: AtomicU64::new(0),
        }
    }

    /// The lease is confirmed until `until` (never moves back).
    pub fn confirm(&self, until: Instant) {
        let ms = until
            .checked_duration_since(self.base)
            .map_or(0, |d| d.as_millis() as u64);
        self.until_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The lease is confirmed now.
    pub fn confirmed(&self) -> bool {
        let until = self.until_ms.load(Ordering::Relaxed);
        until == u64::MAX || (self.base.elapsed().as_millis() as u64) < until
    }

    /// How long the lease stays confirmed without another keepalive
    /// (`None`: no election).
    pub fn left(&self) -> Option<Duration> {
        let until = self.until_ms.load(Ordering::Relaxed);
        (until != u64::MAX).then(|| {
            Duration::from_millis(until.saturating_sub(self.base.elapsed().as_millis() as u64))
        })
    }
}

/// One period of being active.
#[derive(Debug)]
pub struct Term {
    clock: Arc<LeaseClock>,
    /// Why the term ended, once it has.
    ended: Mutex<Option<String>>,
    retired: watch::Sender<bool>,
}

impl Term {
    /// A term that lasts while `clock` is confirmed and nothing ends it.
    pub fn new(clock: Arc<LeaseClock>) -> Arc<Term> {
        Arc::new(Term {
            clock,
            ended: Mutex::new(None),
            retired: watch::channel(false).0,
        })
    }

    /// The term of a ctld without election (the file store).
    pub fn unelected() -> Arc<Term> {
        Term::new(Arc::new(LeaseClock::forever()))
    }

    /// Data-plane leases may be granted now: the term has not ended and the
    /// election lease is confirmed.
    pub fn may_grant(&self) -> bool {
        !*self.retired.borrow() && self.clock.confirmed()
    }

    /// Ends the term (the first reason is kept): no lease is granted from
    /// now on, and sessions close.
    pub fn end(&self, why: &str) {
        {
            let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
            if ended.is_none() {
                tracing::warn!("no longer the active keyway-ctld: {why}");
                *ended = Some(why.to_string());
            }
        }
        self.retired.send_replace(true);
    }

    /// Why the term ended, if it has.
    pub fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Follows the end of the term (`true` once ended).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.retired.subscribe()
    }

    /// The election lease's clock.
    pub fn clock(&self) -> &LeaseClock {
        &self.clock
    }
}

/// What runs only on the active ctld, for one term. See the module doc: a
/// new active-only task is started in [`ActiveTasks::start`].
#[derive(Debug)]
pub struct ActiveTasks {
    ctld: Shared,
    stop: Arc<AtomicBool>,
    threads: Vec<(&'static str, JoinHandle<()>)>,
    persister: tokio::task::JoinHandle<()>,
}

impl ActiveTasks {
    /// Starts the active-only tasks of `ctld`'s term: the migration
    /// orchestrator and the failover supervisor (threads) and the persister
    /// of acked versions (a task
    /// on `sessions`, the control sessions' runtime, whose saves run on its
    /// blocking pool).
    pub fn start(ctld: &Shared, sessions: &tokio::runtime::Handle) -> std::io::Result<ActiveTasks> {
        let stop = Arc::new(AtomicBool::new(false));
        let orchestrator = crate::migrate::start(ctld.clone(), stop.clone())?;
        let supervisor = crate::health::supervisor::start(ctld.clone(), stop.clone())?;
        let persister = sessions.spawn(ctld.clone().persist_acks_forever());
        Ok(ActiveTasks {
            ctld: ctld.clone(),
            stop,
            threads: vec![
                ("migration orchestrator", orchestrator),
                ("failover supervisor", supervisor),
            ],
            persister,
        })
    }

    /// Tells them to stop, without waiting: sweeps stop at their next
    /// batch. Done before the election lease is revoked, so that a successor
    /// never sweeps alongside them for longer than a batch.
    pub fn signal_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.persister.abort();
    }

    /// Stops them and waits for them (sweeps record their progress), then
    /// saves acked versions not saved yet (if the term has not ended).
    /// Blocking.
    pub fn stop(self) {
        self.signal_stop();
        for (name, t) in self.threads {
            if t.join().is_err() {
                tracing::error!("the {name} panicked");
            }
        }
        if self.ctld.term().ended().is_none() {
            if let Err(e) = self.ctld.persist_acks() {
                tracing::warn!("could not save acked versions: {e}");
            }
        }
    }
}

/// Makes `ctld` the active daemon: starts its active-only tasks, then sends
/// sessions and the API to it. Blocking (starts threads).
pub fn activate(
    ctld: Shared,
    api: axum::Router,
    roles: &watch::Sender<Role>,
    sessions: &tokio::runtime::Handle,
) -> std::io::Result<ActiveTasks> {
    let tasks = ActiveTasks::start(&ctld, sessions)?;
    roles.send_replace(Role::Active(Active { ctld, api }));
    Ok(tasks)
}

/// Ends `ctld`'s term: standby at once for new sessions and API requests,
/// sessions of the term close, then its active-only tasks stop. Blocking.
pub fn deactivate(ctld: &Ctld, why: &str, tasks: ActiveTasks, roles: &watch::Sender<Role>) {
    ctld.term().end(why);
    roles.send_replace(Role::Standby(None));
    tasks.stop();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_clock_is_confirmed_until_the_latest_confirmation() {
        let c = LeaseClock::unconfirmed();
        assert!(!c.confirmed(), "never confirmed");
        let now = Instant::now();
        c.confirm(now + Duration::from_secs(5));
        assert!(c.confirmed());
        c.confirm(now + Duration::from_secs(1));
        assert!(
            c.left().unwrap() > Duration::from_secs(4),
            "a confirmation never moves the end back"
        );
        c.confirm(now);
        let past = LeaseClock::unconfirmed();
        past.confirm(Instant::now());
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            !past.confirmed(),
            "a lease whose end passed is not confirmed"
        );
        assert_eq!(past.left(), Some(Duration::ZERO));
        assert!(LeaseClock::forever().confirmed());
        assert_eq!(LeaseClock::forever().left(), None);
    }

    #[test]
    fn a_term_grants_until_it_ends_or_its_lease_is_unconfirmed() {
        let clock = Arc::new(LeaseClock::unconfirmed());
        let t = Term::new(clock.clone());
        assert!(
            !t.may_grant(),
            "no lease before the election lease is confirmed"
        );
        clock.confirm(Instant::now() + Duration::from_secs(5));
        assert!(t.may_grant());
        let mut w = t.watch();
        t.end("lost");
        t.end("later reason");
        assert!(!t.may_grant(), "an ended term grants nothing");
        assert_eq!(
            t.ended().as_deref(),
            Some("lost"),
            "the first reason is kept"
        );
        assert!(*w.borrow_and_update());
        assert!(Term::unelected().may_grant());
    }

    #[test]
    fn a_standby_refusal_starts_with_standby_and_names_the_leader() {
        let a = Addresses {
            api: "10.0.0.1:7700".into(),
            control: "10.0.0.1:7800".into(),
        };
        assert_eq!(
            Role::standby_refusal(Some(&a)),
            "standby: the active keyway-ctld is 10.0.0.1:7800"
        );
        assert!(Role::standby_refusal(None).starts_with("standby"));
    }
}
