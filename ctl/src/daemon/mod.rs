//! The daemon's shared state: the desired state and its store, one snapshot
//! channel per cluster that data-plane sessions follow, and what ctld knows
//! of each data plane's session and lease.
//!
//! Every change goes the same way ([`Ctld::change`]): apply it to a copy,
//! validate, bump the cluster's version, persist the whole state, and only
//! then make it visible and publish the new snapshot. A change that fails to
//! persist is not applied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keyway_capnp::control::{Ack, Hello};
use keyway_capnp::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::model::{Cluster, DataPlaneRecord, Migration, ModelError, State};
use crate::store::{Store, StoreError};

/// A change that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The model refused it.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The store failed; nothing changed.
    #[error("the change was not saved: {0}")]
    Store(#[from] StoreError),
}

/// The latest snapshot of a cluster, or `None` once it is deleted.
pub type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;

/// What ctld knows of a data plane's session right now (not persisted).
#[derive(Debug, Clone)]
struct Session {
    id: u64,
    connected: bool,
    drained: bool,
    fenced: bool,
    /// ctld's view of the lease's end: the last heartbeat's sending plus the
    /// lease (the data plane's own view ends earlier).
    lease_until: Option<Instant>,
}

/// A data plane as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataPlaneView {
    /// Its id.
    pub id: String,
    /// The cluster it serves.
    pub cluster: String,
    /// Where its clients connect.
    pub address: String,
    /// A control session is open.
    pub connected: bool,
    /// The newest version it acked.
    pub acked_version: u64,
    /// Nothing routed under an older version is in flight there.
    pub drained: bool,
    /// Milliseconds left on its lease as ctld sees it (none: expired or never
    /// granted by this ctld).
    pub lease_remaining_ms: Option<u64>,
    /// It refuses requests: it says so, or its lease has expired.
    pub fenced: bool,
}

struct Inner {
    state: State,
    store: Box<dyn Store>,
    channels: HashMap<String, watch::Sender<Option<Arc<Snapshot>>>>,
    sessions: HashMap<String, Session>,
    next_session: u64,
}

/// The daemon.
pub struct Ctld {
    inner: Mutex<Inner>,
    /// The lease for clusters created without one.
    pub default_lease: Duration,
    /// When this ctld started: data planes it has not heard from may hold a
    /// lease granted by its predecessor until `started + lease`.
    pub started: Instant,
}

impl std::fmt::Debug for Ctld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctld")
            .field("default_lease", &self.default_lease)
            .finish_non_exhaustive()
    }
}

impl Ctld {
    /// A daemon over a loaded state and its store.
    pub fn new(state: State, store: Box<dyn Store>, default_lease: Duration) -> Ctld {
        let channels = state
            .clusters
            .iter()
            .map(|(name, c)| (name.clone(), watch::channel(Some(Arc::new(c.snapshot()))).0))
            .collect();
        Ctld {
            inner: Mutex::new(Inner {
                state,
                store,
                channels,
                sessions: HashMap::new(),
                next_session: 0,
            }),
            default_lease,
            started: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the whole state.
    pub fn state(&self) -> State {
        self.lock().state.clone()
    }

    /// A copy of one cluster.
    pub fn cluster(&self, name: &str) -> Result<Cluster, ModelError> {
        self.lock().state.cluster(name).cloned()
    }

    /// Creates a cluster.
    pub fn create(&self, cluster: Cluster) -> Result<Cluster, ChangeError> {
        let mut inner = self.lock();
        if inner.state.clusters.contains_key(&cluster.name) {
            return Err(
                ModelError::conflict(format!("cluster {:?} already exists", cluster.name)).into(),
            );
        }
        let mut next = inner.state.clone();
        next.clusters.insert(cluster.name.clone(), cluster.clone());
        inner.store.save(&next)?;
        inner.state = next;
        let snap = Arc::new(cluster.snapshot());
        match inner.channels.get(&cluster.name) {
            Some(tx) => {
                tx.send_replace(Some(snap));
            }
            None => {
                inner
                    .channels
                    .insert(cluster.name.clone(), watch::channel(Some(snap)).0);
            }
        }
        tracing::info!(cluster = %cluster.name, version = cluster.version, "cluster created");
        Ok(cluster)
    }

    /// Deletes a cluster; its data planes are told and fence when their lease
    /// ends.
    pub fn delete(&self, name: &str) -> Result<(), ChangeError> {
        let mut inner = self.lock();
        inner.state.cluster(name)?;
        let mut next = inner.state.clone();
        next.clusters.remove(name);
        inner.store.save(&next)?;
        inner.state = next;
        if let Some(tx) = inner.channels.remove(name) {
            tx.send_replace(None);
        }
        tracing::info!(cluster = %name, "cluster deleted");
        Ok(())
    }

    /// Applies `f` to a copy of cluster `name`; if it succeeds, bumps the
    /// version, persists, publishes, and returns the new cluster.
    pub fn change(
        &self,
        name: &str,
        f: impl FnOnce(&mut Cluster) -> Result<(), ModelError>,
    ) -> Result<Cluster, ChangeError> {
        let mut inner = self.lock();
        let mut cluster = inner.state.cluster(name)?.clone();
        f(&mut cluster)?;
        cluster.version += 1;
        cluster.snapshot().validate().map_err(ModelError::invalid)?;
        let mut next = inner.state.clone();
        next.clusters.insert(name.to_string(), cluster.clone());
        inner.store.save(&next)?;
        inner.state = next;
        if let Some(tx) = inner.channels.get(name) {
            tx.send_replace(Some(Arc::new(cluster.snapshot())));
        }
        tracing::info!(cluster = %name, version = cluster.version, "cluster changed");
        Ok(cluster)
    }

    /// Applies `f` to a copy of cluster `name` and persists it, without a new
    /// version and without publishing: for what data planes never see (a
    /// migration's progress). `f` must leave the snapshot as it was.
    pub fn record(
        &self,
        name: &str,
        f: impl FnOnce(&mut Cluster) -> Result<(), ModelError>,
    ) -> Result<(), ChangeError> {
        let mut inner = self.lock();
        let before = inner.state.cluster(name)?;
        let published = before.snapshot();
        let mut cluster = before.clone();
        f(&mut cluster)?;
        if cluster.snapshot() != published {
            return Err(ModelError::invalid(
                "internal error: a progress record would change the published snapshot",
            )
            .into());
        }
        let mut next = inner.state.clone();
        next.clusters.insert(name.to_string(), cluster);
        inner.store.save(&next)?;
        inner.state = next;
        Ok(())
    }

    /// One migration of a cluster.
    pub fn migration(&self, cluster: &str, id: u64) -> Result<Migration, ModelError> {
        self.lock().state.cluster(cluster)?.migration(id).cloned()
    }

    /// The data planes of `cluster` that may still route by a version older
    /// than `version`: registered, not yet acked it, and holding a lease as
    /// far as ctld knows (one granted by this ctld, or possibly by its
    /// predecessor until `started` plus the lease). Empty when a step that
    /// needs every data plane to see `version` may be taken.
    pub fn unsettled(&self, cluster: &str, version: u64) -> Vec<String> {
        let inner = self.lock();
        let now = Instant::now();
        let lease = inner
            .state
            .clusters
            .get(cluster)
            .map_or(self.default_lease, |c| {
                Duration::from_millis(c.lease_millis)
            });
        inner
            .state
            .dataplanes
            .values()
            .filter(|r| r.cluster == cluster && r.acked_version < version)
            .filter(|r| {
                let until = inner
                    .sessions
                    .get(&r.id)
                    .and_then(|s| s.lease_until)
                    .unwrap_or(self.started + lease);
                now < until
            })
            .map(|r| r.id.clone())
            .collect()
    }

    /// Follows a cluster's snapshots, if it exists.
    pub fn subscribe(&self, cluster: &str) -> Option<SnapshotRx> {
        let inner = self.lock();
        inner.state.clusters.get(cluster)?;
        inner.channels.get(cluster).map(watch::Sender::subscribe)
    }

    /// Records a data plane's hello; returns the session number, which later
    /// calls carry so a replaced session cannot overwrite its successor.
    pub fn hello(&self, h: &Hello) -> u64 {
        let mut inner = self.lock();
        inner.next_session += 1;
        let id = inner.next_session;
        // A lease granted in an earlier session still runs.
        let lease_until = inner.sessions.get(&h.id).and_then(|s| s.lease_until);
        inner.sessions.insert(
            h.id.clone(),
            Session {
                id,
                connected: true,
                drained: false,
                fenced: true,
                lease_until,
            },
        );
        // The version a data plane has applied is not acked until its
        // requests under older ones are done: only its acks raise this.
        let acked_version = inner
            .state
            .dataplanes
            .get(&h.id)
            .filter(|r| r.cluster == h.cluster)
            .map_or(0, |r| r.acked_version);
        let record = DataPlaneRecord {
            id: h.id.clone(),
            cluster: h.cluster.clone(),
            address: h.address.clone(),
            acked_version,
        };
        if inner.state.dataplanes.get(&h.id) != Some(&record) {
            let mut next = inner.state.clone();
            next.dataplanes.insert(h.id.clone(), record);
            match inner.store.save(&next) {
                Ok(()) => inner.state = next,
                Err(e) => tracing::warn!(dataplane = %h.id, "could not record the data plane: {e}"),
            }
        }
        tracing::info!(dataplane = %h.id, cluster = %h.cluster, address = %h.address, version = h.version, "data plane connected");
        id
    }

    /// Records an ack and grants a lease from now; returns the lease length.
    pub fn ack(&self, dataplane: &str, session: u64, a: &Ack, lease: Duration) {
        let mut inner = self.lock();
        match inner.sessions.get_mut(dataplane) {
            Some(s) if s.id == session => {
                s.drained = a.drained;
                s.fenced = a.fenced;
                s.lease_until = Some(Instant::now() + lease);
            }
            _ => return,
        }
        let changed = inner
            .state
            .dataplanes
            .get(dataplane)
            .is_some_and(|r| r.acked_version != a.version);
        if changed {
            let mut next = inner.state.clone();
            if let Some(r) = next.dataplanes.get_mut(dataplane) {
                r.acked_version = a.version;
            }
            match inner.store.save(&next) {
                Ok(()) => inner.state = next,
                Err(e) => tracing::warn!(dataplane, "could not record the ack: {e}"),
            }
            tracing::info!(
                dataplane,
                version = a.version,
                drained = a.drained,
                "data plane acked"
            );
        }
    }

    /// The session ended.
    pub fn disconnected(&self, dataplane: &str, session: u64) {
        let mut inner = self.lock();
        if let Some(s) = inner.sessions.get_mut(dataplane) {
            if s.id == session {
                s.connected = false;
                tracing::info!(dataplane, "data plane disconnected");
            }
        }
    }

    /// Data planes, of one cluster or all.
    pub fn dataplanes(&self, cluster: Option<&str>) -> Vec<DataPlaneView> {
        let inner = self.lock();
        let now = Instant::now();
        inner
            .state
            .dataplanes
            .values()
            .filter(|r| cluster.is_none_or(|c| r.cluster == c))
            .map(|r| {
                let s = inner.sessions.get(&r.id);
                let remaining = s
                    .and_then(|s| s.lease_until)
                    .and_then(|u| u.checked_duration_since(now));
                DataPlaneView {
                    id: r.id.clone(),
                    cluster: r.cluster.clone(),
                    address: r.address.clone(),
                    connected: s.is_some_and(|s| s.connected),
                    acked_version: r.acked_version,
                    drained: s.is_some_and(|s| s.drained),
                    lease_remaining_ms: remaining.map(|d| d.as_millis() as u64),
                    fenced: s.is_none_or(|s| s.fenced) || remaining.is_none(),
                }
            })
            .collect()
    }
}

/// Shared handle.
pub type Shared = Arc<Ctld>;

/// Milliseconds since the Unix epoch (for timestamps people read).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
