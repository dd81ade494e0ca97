//! The daemon's shared state: the desired state and its store, one snapshot
//! channel per cluster that data-plane sessions follow, and what ctld knows
//! of each data plane's session and lease ([`dataplanes`]).
//!
//! Every change goes the same way ([`Ctld::change`]): apply it to a copy,
//! validate the whole cluster ([`Cluster::validate`]), bump the version,
//! persist the whole state, and only then make it visible and publish the
//! new snapshot. A change that fails to persist is not applied.
//!
//! Four locks, each with one job, so that slow work never blocks the lease
//! path:
//! - `writer` owns the store and serializes changes; it is held across a
//!   change's validation and fsync (or etcd transaction: the store runs it on
//!   its own runtime and waits, `crate::etcd`), so it is only ever taken off
//!   the async runtimes (the API's `spawn_blocking`, the orchestrator's
//!   thread, the persister's blocking task);
//! - `current` holds the latest saved state behind an `Arc`, swapped after
//!   each save; readers clone the `Arc` and let go;
//! - `channels` holds the snapshot channels;
//! - `planes` holds the data planes' sessions, leases and acked versions.
//!
//! Control sessions take only the last three, each briefly. Locks are taken
//! in the order `writer` → `current` / `planes` / `channels`, never the
//! other way.

pub mod dataplanes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keyway_capnp::control::{Ack, Hello};
use keyway_capnp::snapshot::Snapshot;
use tokio::sync::{watch, Notify};

use crate::health::{Board, Tally};
use crate::leader::Term;
use crate::model::{Applied, Change, Cluster, Migration, ModelError, State};
use crate::store::{Store, StoreError};
use crate::wire::{DataPlaneView, GroupHealth};
pub use dataplanes::Registration;
use dataplanes::{Acked, Registry};

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

/// How old a data plane's backend report may be to count: data planes
/// report at least every second (`keyway::control::REPORT_EVERY`).
pub const REPORT_FRESH: Duration = Duration::from_secs(3);

/// The daemon.
pub struct Ctld {
    writer: Mutex<Box<dyn Store>>,
    current: Mutex<Arc<State>>,
    channels: Mutex<HashMap<String, watch::Sender<Option<Arc<Snapshot>>>>>,
    planes: Mutex<Registry>,
    /// Wakes the persister of acked versions.
    acks: Notify,
    /// Wakes the migration orchestrator before its tick: set when a data
    /// plane acks a newer version or a cluster changes, so that a
    /// migration's next phase (which commands on its slots may be held
    /// for) does not wait for the tick.
    wake: (Mutex<bool>, Condvar),
    /// Every server's health as ctld's checks see it (`crate::health`).
    health: Mutex<Board>,
    /// The source and target masters of every running migration sweep, by
    /// (cluster, migration id): a failover waits until none touches its
    /// group's old master.
    sweeps: Mutex<HashMap<(String, u64), (String, String)>>,
    /// The lease for clusters created without one.
    pub default_lease: Duration,
    /// When this ctld started serving — with an election, when it won it:
    /// data planes it has not heard from may hold a lease granted by its
    /// predecessor until `started + lease`.
    pub started: Instant,
    /// Its term as the active ctld: leases are granted only while it holds
    /// (`crate::leader`).
    term: Arc<Term>,
}

impl std::fmt::Debug for Ctld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctld")
            .field("default_lease", &self.default_lease)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ctld {
    /// A daemon over a loaded (and validated) state and its store, with no
    /// election (always active).
    pub fn new(state: State, store: Box<dyn Store>, default_lease: Duration) -> Ctld {
        Ctld::for_term(state, store, default_lease, Term::unelected())
    }

    /// A daemon for one term as the active ctld, over the state loaded when
    /// it began (`started` is now: the term's start).
    pub fn for_term(
        state: State,
        store: Box<dyn Store>,
        default_lease: Duration,
        term: Arc<Term>,
    ) -> Ctld {
        let channels = state
            .clusters
            .iter()
            .map(|(name, c)| (name.clone(), watch::channel(Some(Arc::new(c.snapshot()))).0))
            .collect();
        Ctld {
            planes: Mutex::new(Registry::from_state(&state)),
            writer: Mutex::new(store),
            current: Mutex::new(Arc::new(state)),
            channels: Mutex::new(channels),
            acks: Notify::new(),
            wake: (Mutex::new(false), Condvar::new()),
            health: Mutex::new(Board::default()),
            sweeps: Mutex::new(HashMap::new()),
            default_lease,
            started: Instant::now(),
            term,
        }
    }

    /// Its term as the active ctld.
    pub fn term(&self) -> &Arc<Term> {
        &self.term
    }

    /// The state as last saved (data planes' acked versions may be newer in
    /// [`Ctld::dataplanes`]).
    pub fn state(&self) -> Arc<State> {
        lock(&self.current).clone()
    }

    /// A copy of one cluster.
    pub fn cluster(&self, name: &str) -> Result<Cluster, ModelError> {
        self.state().cluster(name).cloned()
    }

    /// Saves `next` and makes it current. The caller holds `writer`.
    fn save(&self, store: &mut dyn Store, next: State) -> Result<Arc<State>, StoreError> {
        let kind = store.kind();
        crate::metrics::time_store_write(kind, || store.save(&next))?;
        let next = Arc::new(next);
        *lock(&self.current) = next.clone();
        Ok(next)
    }

    fn publish(&self, name: &str, snapshot: Option<Snapshot>) {
        let mut channels = lock(&self.channels);
        match snapshot {
            Some(s) => {
                let s = Some(Arc::new(s));
                match channels.get(name) {
                    Some(tx) => {
                        tx.send_replace(s);
                    }
                    None => {
                        channels.insert(name.to_string(), watch::channel(s).0);
                    }
                }
            }
            None => {
                if let Some(tx) = channels.remove(name) {
                    tx.send_replace(None);
                }
            }
        }
    }

    /// Creates a cluster. Blocking: validates and fsyncs.
    pub fn create(&self, cluster: Cluster) -> Result<Cluster, ChangeError> {
        let mut store = lock(&self.writer);
        let current = self.state();
        if current.clusters.contains_key(&cluster.name) {
            return Err(
                ModelError::conflict(format!("cluster {:?} already exists", cluster.name)).into(),
            );
        }
        cluster.validate()?;
        let mut next = (*current).clone();
        next.clusters.insert(cluster.name.clone(), cluster.clone());
        self.save(store.as_mut(), next)?;
        self.publish(&cluster.name, Some(cluster.snapshot()));
        tracing::info!(cluster = %cluster.name, version = cluster.version, "cluster created");
        crate::events::emit(
            &cluster.name,
            "created",
            serde_json::json!({ "version": cluster.version, "groups": cluster.groups.len() }),
        );
        Ok(cluster)
    }

    /// Deletes a cluster; its data planes are told and fence when their lease
    /// ends. Blocking.
    pub fn delete(&self, name: &str) -> Result<(), ChangeError> {
        let mut store = lock(&self.writer);
        let current = self.state();
        current.cluster(name)?;
        let mut next = (*current).clone();
        next.clusters.remove(name);
        self.save(store.as_mut(), next)?;
        self.publish(name, None);
        tracing::info!(cluster = %name, "cluster deleted");
        crate::events::emit(name, "deleted", serde_json::json!({}));
        crate::events::journal().forget(name);
        crate::metrics::global().forget_cluster(name);
        Ok(())
    }

    /// Applies `change` to a copy of cluster `name` ([`Cluster::dispatch`]);
    /// if it succeeds and the result is valid, bumps the version, persists,
    /// publishes, and returns the new cluster and what the change created.
    /// Blocking.
    pub fn change(&self, name: &str, change: &Change) -> Result<(Cluster, Applied), ChangeError> {
        let mut store = lock(&self.writer);
        let current = self.state();
        let mut cluster = current.cluster(name)?.clone();
        let applied = cluster.dispatch(change)?;
        cluster.version = cluster.version.saturating_add(1);
        cluster.validate()?;
        let mut next = (*current).clone();
        next.clusters.insert(name.to_string(), cluster.clone());
        self.save(store.as_mut(), next)?;
        self.publish(name, Some(cluster.snapshot()));
        drop(store);
        self.wake_orchestrator();
        tracing::info!(cluster = %name, version = cluster.version, %change, "cluster changed");
        crate::events::emit(
            name,
            "change",
            serde_json::json!({
                "version": cluster.version,
                "change": crate::events::change_json(change),
            }),
        );
        Ok((cluster, applied))
    }

    /// Applies `f` to a copy of cluster `name` and persists it, without a new
    /// version and without publishing: for what data planes never see (a
    /// migration's progress). `f` must leave the snapshot as it was.
    /// Blocking.
    pub fn record(
        &self,
        name: &str,
        f: impl FnOnce(&mut Cluster) -> Result<(), ModelError>,
    ) -> Result<(), ChangeError> {
        let mut store = lock(&self.writer);
        let current = self.state();
        let before = current.cluster(name)?;
        let published = before.snapshot();
        let mut cluster = before.clone();
        f(&mut cluster)?;
        if cluster.snapshot() != published {
            return Err(ModelError::invalid(
                "internal error: a progress record would change the published snapshot",
            )
            .into());
        }
        let mut next = (*current).clone();
        next.clusters.insert(name.to_string(), cluster);
        self.save(store.as_mut(), next)?;
        Ok(())
    }

    /// One migration of a cluster.
    pub fn migration(&self, cluster: &str, id: u64) -> Result<Migration, ModelError> {
        self.state().cluster(cluster)?.migration(id).cloned()
    }

    fn lease_of(&self, cluster: &str) -> Duration {
        self.state()
            .clusters
            .get(cluster)
            .map_or(self.default_lease, |c| {
                Duration::from_millis(c.lease_millis)
            })
    }

    /// The data planes of `cluster` that may still route by a version older
    /// than `version`: registered, not yet acked it, and holding a lease as
    /// far as ctld knows (one granted by this ctld, or possibly by its
    /// predecessor until `started` plus the lease). Empty when a step that
    /// needs every data plane to see `version` may be taken.
    pub fn unsettled(&self, cluster: &str, version: u64) -> Vec<String> {
        let lease = self.lease_of(cluster);
        let now = Instant::now();
        let planes = lock(&self.planes);
        let mut out: Vec<String> = planes
            .planes
            .values()
            .filter(|p| p.record.cluster == cluster && p.record.acked_version < version)
            .filter(|p| now < Registry::lease_end(p, self.started, lease))
            .map(|p| p.record.id.clone())
            .collect();
        out.sort();
        out
    }

    /// A sweep of migration `id` of `cluster` between these masters runs
    /// (`Some`) or has ended (`None`).
    pub fn sweep(&self, cluster: &str, id: u64, masters: Option<(String, String)>) {
        let mut sweeps = lock(&self.sweeps);
        let key = (cluster.to_string(), id);
        match masters {
            Some(m) => {
                sweeps.insert(key, m);
            }
            None => {
                sweeps.remove(&key);
            }
        }
    }

    /// A running sweep of `cluster` moves keys from or to server `addr`.
    pub fn sweeping_server(&self, cluster: &str, addr: &str) -> bool {
        lock(&self.sweeps)
            .iter()
            .any(|((c, _), (from, to))| c == cluster && (from == addr || to == addr))
    }

    /// The servers' health board (`crate::health`); held briefly.
    pub fn board(&self) -> MutexGuard<'_, Board> {
        lock(&self.health)
    }

    /// What the data planes of `cluster` say of server `addr`: those
    /// connected whose last report is at most [`REPORT_FRESH`] old (they
    /// report every second, and at once when a backend fails or recovers).
    pub fn tally(&self, cluster: &str, addr: &str, down_after: Duration) -> Tally {
        lock(&self.planes).tally(cluster, addr, REPORT_FRESH, down_after)
    }

    /// Every group's health in cluster `c`.
    pub fn health(&self, c: &Cluster) -> Vec<GroupHealth> {
        let down_after = Duration::from_millis(c.ha.down_after_ms);
        let tallies: HashMap<String, Tally> = c
            .groups
            .iter()
            .flat_map(|g| g.addresses())
            .map(|a| (a.to_string(), self.tally(&c.name, a, down_after)))
            .collect();
        let board = lock(&self.health);
        crate::health::view(
            c,
            &board,
            |a| tallies.get(a).copied().unwrap_or_default(),
            Instant::now(),
        )
    }

    /// Follows a cluster's snapshots, if it exists.
    pub fn subscribe(&self, cluster: &str) -> Option<SnapshotRx> {
        let channels = lock(&self.channels);
        let rx = channels.get(cluster)?.subscribe();
        let live = rx.borrow().is_some();
        live.then_some(rx)
    }

    /// Registers a data plane's session (its Hello checked by the caller),
    /// closing a live session of the same id it replaces.
    pub fn hello(&self, h: &Hello, peer: SocketAddr) -> Registration {
        let (reg, replaced) = lock(&self.planes).hello(h, peer);
        if let Some(old) = replaced {
            tracing::warn!(dataplane = %h.id, %peer, replaced = %old,
                "a new session of this data plane replaces the one from {old}; closing that one");
        }
        tracing::info!(dataplane = %h.id, cluster = %h.cluster, address = %h.address,
            version = h.version, %peer, "data plane connected");
        reg
    }

    /// Saves data plane `id`'s record as ctld knows it now, if the store's
    /// differs. Blocking (fsync); done before the data plane first gets a
    /// lease, so that a restarted ctld knows to wait for it.
    pub fn persist_dataplane(&self, id: &str) -> Result<(), StoreError> {
        let mut store = lock(&self.writer);
        let Some(record) = lock(&self.planes).planes.get(id).map(|p| p.record.clone()) else {
            return Ok(());
        };
        let current = self.state();
        if current.dataplanes.get(id) != Some(&record) {
            let mut next = (*current).clone();
            next.dataplanes.insert(id.to_string(), record.clone());
            self.save(store.as_mut(), next)?;
        }
        if let Some(p) = lock(&self.planes).planes.get_mut(id) {
            p.saved = Some(record);
        }
        Ok(())
    }

    /// Records an ack of session `session` and extends ctld's view of the
    /// lease by `lease` from now. Never waits for the store: a new acked
    /// version is saved later by the persister. False if the session does
    /// not count (replaced or ended): it must get no heartbeat.
    pub fn ack(&self, dataplane: &str, session: u64, a: &Ack, lease: Duration) -> bool {
        let acked = lock(&self.planes).ack(dataplane, session, a, lease);
        if acked == Acked::Newer {
            self.acks.notify_one();
            self.wake_orchestrator();
            tracing::info!(
                dataplane,
                version = a.version,
                drained = a.drained,
                "data plane acked"
            );
        }
        acked != Acked::Stale
    }

    /// Wakes the migration orchestrator (`crate::migrate`) now.
    pub fn wake_orchestrator(&self) {
        *lock(&self.wake.0) = true;
        self.wake.1.notify_all();
    }

    /// Waits until [`Ctld::wake_orchestrator`] is called or `timeout`
    /// passes; true if woken (a wake-up since the last wait counts).
    pub fn orchestrator_wait(&self, timeout: Duration) -> bool {
        let (flag, cv) = &self.wake;
        let guard = lock(flag);
        let (mut woken, _) = cv
            .wait_timeout_while(guard, timeout, |w| !*w)
            .unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *woken, false)
    }

    /// Saves the acked versions that changed since the last save. Blocking.
    pub fn persist_acks(&self) -> Result<(), StoreError> {
        let mut store = lock(&self.writer);
        let updates: Vec<(String, String, u64)> = lock(&self.planes)
            .planes
            .values()
            .filter_map(|p| {
                let s = p.saved.as_ref()?;
                (s.cluster == p.record.cluster && s.acked_version != p.record.acked_version)
                    .then(|| (s.id.clone(), s.cluster.clone(), p.record.acked_version))
            })
            .collect();
        if updates.is_empty() {
            return Ok(());
        }
        let current = self.state();
        let mut next = (*current).clone();
        for (id, cluster, version) in &updates {
            if let Some(r) = next
                .dataplanes
                .get_mut(id)
                .filter(|r| r.cluster == *cluster)
            {
                r.acked_version = *version;
            }
        }
        self.save(store.as_mut(), next)?;
        let mut planes = lock(&self.planes);
        for (id, cluster, version) in updates {
            if let Some(s) = planes
                .planes
                .get_mut(&id)
                .and_then(|p| p.saved.as_mut())
                .filter(|s| s.cluster == cluster)
            {
                s.acked_version = version;
            }
        }
        Ok(())
    }

    /// Saves acked versions whenever acks raise them, off the sessions'
    /// path: runs forever on the runtime it is spawned on (the saves on its
    /// blocking pool). A failed save is retried a second later.
    pub async fn persist_acks_forever(self: Arc<Self>) {
        loop {
            self.acks.notified().await;
            let ctld = self.clone();
            let r = tokio::task::spawn_blocking(move || ctld.persist_acks()).await;
            let failed = match r {
                Ok(Ok(())) => false,
                Ok(Err(e)) => {
                    tracing::warn!("could not save acked versions (retrying): {e}");
                    true
                }
                Err(e) => {
                    tracing::warn!("could not save acked versions (retrying): {e}");
                    true
                }
            };
            if failed {
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.acks.notify_one();
            }
        }
    }

    /// The session ended.
    pub fn disconnected(&self, dataplane: &str, session: u64) {
        if lock(&self.planes).disconnected(dataplane, session) {
            tracing::info!(dataplane, "data plane disconnected");
        }
    }

    /// Data planes, of one cluster or all, by id.
    pub fn dataplanes(&self, cluster: Option<&str>) -> Vec<DataPlaneView> {
        let now = Instant::now();
        let mut out: Vec<DataPlaneView> = lock(&self.planes)
            .planes
            .values()
            .filter(|p| cluster.is_none_or(|c| p.record.cluster == c))
            .map(|p| Registry::view(p, now))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Forgets a data plane that is gone for good: refused while it is
    /// connected, or while a lease it may hold could still run as far as
    /// ctld knows (forgetting one that may still route would let a
    /// migration go ahead without it). Blocking.
    pub fn forget(&self, id: &str) -> Result<(), ChangeError> {
        let mut store = lock(&self.writer);
        let lease = {
            let planes = lock(&self.planes);
            let cluster = planes
                .planes
                .get(id)
                .map(|p| p.record.cluster.clone())
                .ok_or_else(|| ModelError::not_found(format!("no data plane {id:?}")))?;
            drop(planes);
            self.lease_of(&cluster)
        };
        let session = {
            let planes = lock(&self.planes);
            let p = planes
                .planes
                .get(id)
                .ok_or_else(|| ModelError::not_found(format!("no data plane {id:?}")))?;
            if p.session.as_ref().is_some_and(|s| s.connected) {
                return Err(ModelError::conflict(format!(
                    "data plane {id:?} is connected: stop it before forgetting it"
                ))
                .into());
            }
            let left =
                Registry::lease_end(p, self.started, lease).checked_duration_since(Instant::now());
            if let Some(left) = left.filter(|d| !d.is_zero()) {
                return Err(ModelError::conflict(format!(
                    "data plane {id:?} may still hold a lease for {}s as far as ctld knows; \
                     forget it once that has ended",
                    left.as_secs() + 1
                ))
                .into());
            }
            p.session.as_ref().map(|s| s.id)
        };
        let current = self.state();
        if current.dataplanes.contains_key(id) {
            let mut next = (*current).clone();
            next.dataplanes.remove(id);
            self.save(store.as_mut(), next)?;
        }
        let mut planes = lock(&self.planes);
        // A data plane that said hello meanwhile stays (its own save, waiting
        // for the writer lock, records it again).
        if planes
            .planes
            .get(id)
            .map(|p| p.session.as_ref().map(|s| s.id))
            == Some(session)
        {
            planes.planes.remove(id);
        }
        drop(planes);
        tracing::info!(dataplane = id, "data plane forgotten");
        Ok(())
    }
}

/// Shared handle.
pub type Shared = Arc<Ctld>;

/// Milliseconds since the Unix epoch now (for timestamps people read): the
/// one definition both planes share.
pub use keyway_capnp::clock::now_unix_ms as unix_ms;

#[cfg(test)]
mod tests;
