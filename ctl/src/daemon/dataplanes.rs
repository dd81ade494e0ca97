//! What ctld knows of each data plane right now: its record (id, cluster,
//! address, acked version), what the store holds of that record, and its
//! session and lease. This lives behind its own small lock
//! ([`super::Ctld`]'s `planes`), apart from the desired state, so that a
//! control session's ack → heartbeat path never waits for an API change's
//! validation or its fsync: an ack only updates this registry, and the
//! persister saves acked versions later (`Ctld::persist_acks`).
//!
//! A persisted acked version may lag the one here — safe: a restarted ctld
//! then waits for the acks again, or for the lease to end — but is never
//! ahead of it. A record itself is saved before its data plane is first
//! granted a lease (`Ctld::persist_dataplane`), so a restarted ctld knows to
//! wait for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keyway_capnp::control::{Ack, BackendReport, Hello};
use tokio::sync::oneshot;

use crate::health::Tally;
use crate::model::{DataPlaneRecord, State};
use crate::wire::DataPlaneView;

/// One session of a data plane (not persisted).
#[derive(Debug)]
pub(super) struct Session {
    pub(super) id: u64,
    pub(super) peer: SocketAddr,
    /// Its admin endpoint, as its Hello said (empty: none).
    pub(super) admin: String,
    pub(super) admin_tls: bool,
    pub(super) connected: bool,
    pub(super) drained: bool,
    pub(super) fenced: bool,
    /// ctld's view of the lease's end: the last heartbeat's sending plus the
    /// lease (the data plane's own view ends earlier).
    pub(super) lease_until: Option<Instant>,
    /// Tells the session's task to end (a newer session replaced it).
    close: Option<oneshot::Sender<()>>,
    /// Its last ack's backend reports, and when that ack came.
    pub(super) reports: Vec<BackendReport>,
    pub(super) reported_at: Option<Instant>,
}

/// The admin endpoint a Hello names, if it is `host:port` (a data plane
/// whose Hello names a bad one is served all the same, listed without).
fn admin_endpoint(admin: &str) -> String {
    match crate::model::names::parse_address(admin) {
        Ok(_) => admin.to_string(),
        Err(e) => {
            if !admin.is_empty() {
                tracing::warn!("a data plane's Hello names a bad admin endpoint: {e}");
            }
            String::new()
        }
    }
}

/// A data plane.
#[derive(Debug)]
pub(super) struct Plane {
    /// As ctld knows it now.
    pub(super) record: DataPlaneRecord,
    /// As the store holds it, if it does.
    pub(super) saved: Option<DataPlaneRecord>,
    /// Its latest session with this ctld.
    pub(super) session: Option<Session>,
}

/// A new session, as [`super::Ctld::hello`] registered it.
#[derive(Debug)]
pub struct Registration {
    /// The session number, which later calls carry so that a replaced
    /// session cannot act for its successor.
    pub session: u64,
    /// Resolves when a newer session of the same data plane replaces this
    /// one: the session must end.
    pub replaced: oneshot::Receiver<()>,
    /// The record is not in the store as it is now: it must be saved
    /// (`Ctld::persist_dataplane`) before the data plane gets a lease.
    pub must_persist: bool,
}

/// Every data plane ctld knows.
#[derive(Debug, Default)]
pub(super) struct Registry {
    pub(super) planes: HashMap<String, Plane>,
    next_session: u64,
}

/// An ack's effect.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Acked {
    /// Counted; the acked version changed.
    Newer,
    /// Counted; the same version as before.
    Same,
    /// Not counted: the session was replaced or has ended.
    Stale,
}

impl Registry {
    /// The data planes in a loaded state.
    pub(super) fn from_state(state: &State) -> Registry {
        Registry {
            planes: state
                .dataplanes
                .values()
                .map(|r| {
                    (
                        r.id.clone(),
                        Plane {
                            record: r.clone(),
                            saved: Some(r.clone()),
                            session: None,
                        },
                    )
                })
                .collect(),
            next_session: 0,
        }
    }

    /// Registers a session; closes the one it replaces. Returns the
    /// registration and, if a live session was replaced, its peer.
    pub(super) fn hello(
        &mut self,
        h: &Hello,
        peer: SocketAddr,
    ) -> (Registration, Option<SocketAddr>) {
        self.next_session += 1;
        let id = self.next_session;
        let plane = self.planes.entry(h.id.clone()).or_insert_with(|| Plane {
            record: DataPlaneRecord {
                id: h.id.clone(),
                cluster: h.cluster.clone(),
                address: h.address.clone(),
                acked_version: 0,
            },
            saved: None,
            session: None,
        });
        let mut replaced_peer = None;
        // A lease granted in an earlier session still runs.
        let mut lease_until = None;
        if let Some(old) = plane.session.take() {
            lease_until = old.lease_until;
            if old.connected {
                replaced_peer = Some(old.peer);
                if let Some(close) = old.close {
                    let _ = close.send(());
                }
            }
        }
        // The version a data plane has applied is not acked until its
        // requests under older ones are done: only its acks raise this.
        if plane.record.cluster != h.cluster {
            plane.record.cluster = h.cluster.clone();
            plane.record.acked_version = 0;
        }
        plane.record.address = h.address.clone();
        let (close, replaced) = oneshot::channel();
        plane.session = Some(Session {
            id,
            peer,
            admin: admin_endpoint(&h.admin),
            admin_tls: h.admin_tls,
            connected: true,
            drained: false,
            fenced: true,
            lease_until,
            close: Some(close),
            reports: Vec::new(),
            reported_at: None,
        });
        let must_persist = plane
            .saved
            .as_ref()
            .is_none_or(|s| s.cluster != plane.record.cluster || s.address != plane.record.address);
        (
            Registration {
                session: id,
                replaced,
                must_persist,
            },
            replaced_peer,
        )
    }

    /// Records an ack of session `session` and extends its lease.
    pub(super) fn ack(&mut self, dataplane: &str, session: u64, a: &Ack, lease: Duration) -> Acked {
        let Some(p) = self.planes.get_mut(dataplane) else {
            return Acked::Stale;
        };
        match p.session.as_mut() {
            Some(s) if s.id == session && s.connected => {
                s.drained = a.drained;
                s.fenced = a.fenced;
                let now = Instant::now();
                s.lease_until = Some(now + lease);
                s.reports.clone_from(&a.backends);
                s.reported_at = Some(now);
            }
            _ => return Acked::Stale,
        }
        if p.record.acked_version == a.version {
            return Acked::Same;
        }
        p.record.acked_version = a.version;
        Acked::Newer
    }

    /// The session ended.
    pub(super) fn disconnected(&mut self, dataplane: &str, session: u64) -> bool {
        match self
            .planes
            .get_mut(dataplane)
            .and_then(|p| p.session.as_mut())
        {
            Some(s) if s.id == session => {
                s.connected = false;
                s.close = None;
                true
            }
            _ => false,
        }
    }

    /// When the lease of `p` may end at the latest, as far as this ctld
    /// knows: the one it granted, or, if it has granted none, one its
    /// predecessor may have granted (until `started + lease`).
    pub(super) fn lease_end(p: &Plane, started: Instant, lease: Duration) -> Instant {
        p.session
            .as_ref()
            .and_then(|s| s.lease_until)
            .unwrap_or(started + lease)
    }

    /// What the connected data planes of `cluster` that reported within
    /// `fresh` say of server `addr`.
    pub(super) fn tally(
        &self,
        cluster: &str,
        addr: &str,
        fresh: Duration,
        down_after: Duration,
    ) -> Tally {
        let now = Instant::now();
        let mut t = Tally::default();
        for p in self.planes.values().filter(|p| p.record.cluster == cluster) {
            let Some(s) = p.session.as_ref().filter(|s| s.connected) else {
                continue;
            };
            if s.reported_at
                .is_none_or(|at| now.saturating_duration_since(at) > fresh)
            {
                continue;
            }
            if let Some(r) = s.reports.iter().find(|r| r.address == addr) {
                t.count(
                    r.failures,
                    r.since_success_ms.map(Duration::from_millis),
                    r.since_failure_ms.map(Duration::from_millis),
                    down_after,
                );
            }
        }
        t
    }

    /// The view of data plane `p`.
    pub(super) fn view(p: &Plane, now: Instant) -> DataPlaneView {
        let s = p.session.as_ref();
        let remaining = s
            .and_then(|s| s.lease_until)
            .and_then(|u| u.checked_duration_since(now));
        DataPlaneView {
            id: p.record.id.clone(),
            cluster: p.record.cluster.clone(),
            address: p.record.address.clone(),
            connected: s.is_some_and(|s| s.connected),
            acked_version: p.record.acked_version,
            drained: s.is_some_and(|s| s.drained),
            lease_remaining_ms: remaining.map(|d| d.as_millis() as u64),
            fenced: s.is_none_or(|s| s.fenced) || remaining.is_none(),
            admin: s.map(|s| s.admin.clone()).unwrap_or_default(),
            admin_tls: s.is_some_and(|s| s.admin_tls),
        }
    }
}
