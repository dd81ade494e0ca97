//! The election (etcd lease + campaign, etcd's election API): the loop that
//! makes this ctld a standby, the active one, and a standby again, inside
//! one process.
//!
//! One round ([`Candidate::round`]): grant an election lease (TTL
//! `--election-ttl`, default 5 s) and keep it alive every sixth of the TTL
//! ([`keep_alive`], which moves the term's [`LeaseClock`]); campaign with
//! this ctld's addresses as the value, meanwhile telling callers who the
//! active ctld is; on winning, load the state from etcd, build a fresh
//! daemon for the term and activate it (`crate::leader::activate`). The
//! term ends when the election lease is not confirmed any more (no
//! keepalive answered within the TTL), a save is refused or its outcome is
//! unknown (`super::store`), or etcd names another leader. Then: standby at
//! once, sessions closed, the lease revoked (so another ctld takes over
//! without waiting for the TTL), active tasks stopped, and the next round
//! campaigns again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio::sync::watch;

use super::store::{EtcdStore, Guard};
use super::Etcd;
use crate::auth::Auth;
use crate::daemon::Ctld;
use crate::leader::{self, ActiveTasks, Addresses, LeaseClock, Role, Term};

/// The default election lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// How often the active ctld asks etcd who leads.
const LEADER_CHECK: Duration = Duration::from_secs(1);

/// How long asking etcd who leads may take (the loops that ask do nothing
/// else meanwhile).
const ASK_LEADER: Duration = Duration::from_secs(1);

/// A ctld taking part in the election.
#[derive(Debug)]
pub struct Candidate {
    /// The etcd connection.
    pub etcd: Etcd,
    /// This ctld's addresses (the election value).
    pub me: Addresses,
    /// The election lease's TTL.
    pub ttl: Duration,
    /// Where sessions and the API learn the role.
    pub roles: Arc<watch::Sender<Role>>,
    /// The control sessions' runtime (the persister of acked versions runs
    /// there).
    pub sessions: tokio::runtime::Handle,
    /// The API's and sessions' authentication.
    pub auth: Auth,
    /// The lease of clusters created without one.
    pub default_lease: Duration,
}

/// Why a ctld that won the election cannot serve as the active one.
#[derive(Debug, thiserror::Error)]
enum Activation {
    /// The state in etcd cannot be loaded.
    #[error(transparent)]
    Load(#[from] crate::store::StoreError),
    /// The active-only tasks cannot start.
    #[error("cannot start the active tasks: {0}")]
    Tasks(#[from] std::io::Error),
}

/// How a round ended.
enum Ended {
    /// Shutting down.
    Stopped,
    /// Lost or never won; campaign again.
    Again(String),
}

fn ttl_secs(ttl: Duration) -> i64 {
    ttl.as_secs().max(1) as i64
}

/// Keeps lease `lease` alive every sixth of `ttl`; each answered keepalive
/// confirms the lease until its sending time plus the TTL etcd granted.
/// Returns why it stopped: no answer before the lease stopped being
/// confirmed, the lease expired, or an error.
async fn keep_alive(mut c: Client, lease: i64, ttl: Duration, clock: Arc<LeaseClock>) -> String {
    let left = || clock.left().unwrap_or(ttl);
    let (mut keeper, mut stream) =
        match tokio::time::timeout(left(), c.lease_keep_alive(lease)).await {
            Ok(Ok(k)) => k,
            Ok(Err(e)) => return format!("cannot keep the election lease alive: {e}"),
            Err(_) => return "etcd did not answer a keepalive within the election TTL".into(),
        };
    loop {
        let sent = Instant::now();
        if let Err(e) = keeper.keep_alive().await {
            return format!("cannot keep the election lease alive: {e}");
        }
        match tokio::time::timeout(left(), stream.message()).await {
            Err(_) => return "etcd did not answer a keepalive within the election TTL".into(),
            Ok(Err(e)) => return format!("the election keepalive failed: {e}"),
            Ok(Ok(None)) => return "etcd closed the election keepalive".into(),
            Ok(Ok(Some(r))) if r.ttl() <= 0 => return "the election lease expired".into(),
            Ok(Ok(Some(r))) => {
                let granted = Duration::from_secs(r.ttl() as u64).min(ttl);
                clock.confirm(sent + granted);
            }
        }
        tokio::time::sleep_until((sent + ttl / 6).into()).await;
    }
}

/// Why the keepalive task stopped, once it has.
async fn keepalive_ended(rx: &mut watch::Receiver<Option<String>>) -> String {
    match rx.wait_for(Option::is_some).await {
        Ok(why) => why.clone().unwrap_or_default(),
        Err(_) => "the keepalive task ended".into(),
    }
}

impl Candidate {
    /// Campaigns, serves while elected, and campaigns again, until `stop`
    /// turns true; then hands leadership over (tasks stopped, lease
    /// revoked). Runs on the etcd runtime.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            match self.round(&mut stop).await {
                Ended::Stopped => break,
                Ended::Again(why) => {
                    tracing::info!("campaigning again: {why}");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
        self.roles.send_replace(Role::Standby(None));
    }

    fn election(&self) -> String {
        self.etcd.key("election")
    }

    /// Tells standby callers who leads, if etcd says.
    async fn note_leader(&self, c: &mut Client) {
        let Ok(Ok(r)) = tokio::time::timeout(ASK_LEADER, c.leader(self.election())).await else {
            return;
        };
        let leader = r
            .kv()
            .and_then(|kv| serde_json::from_slice::<Addresses>(kv.value()).ok());
        self.roles.send_if_modified(|role| match role {
            Role::Standby(known) if *known != leader => {
                *known = leader.clone();
                true
            }
            _ => false,
        });
    }

    async fn revoke(&self, c: &mut Client, lease: i64) {
        let _ = tokio::time::timeout(Duration::from_secs(1), c.lease_revoke(lease)).await;
    }

    async fn round(&self, stop: &mut watch::Receiver<bool>) -> Ended {
        let mut c = self.etcd.client();
        let asked = Instant::now();
        let lease =
            match tokio::time::timeout(self.etcd.timeout, c.lease_grant(ttl_secs(self.ttl), None))
                .await
            {
                Ok(Ok(r)) => r.id(),
                Ok(Err(e)) => return Ended::Again(format!("cannot get an election lease: {e}")),
                Err(_) => {
                    return Ended::Again("etcd did not grant an election lease in time".into())
                }
            };
        let clock = Arc::new(LeaseClock::unconfirmed());
        clock.confirm(asked + self.ttl);
        let (ka_tx, mut ka_end) = watch::channel(None::<String>);
        let keepalive = {
            let (c, clock, ttl) = (c.clone(), clock.clone(), self.ttl);
            tokio::spawn(async move {
                let why = keep_alive(c, lease, ttl, clock).await;
                ka_tx.send_replace(Some(why));
            })
        };
        let value = serde_json::to_vec(&self.me).expect("addresses serialize");
        let won = {
            let mut cc = c.clone();
            let campaign = cc.campaign(self.election(), value, lease);
            tokio::pin!(campaign);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    r = &mut campaign => break r,
                    _ = tick.tick() => self.note_leader(&mut c).await,
                    why = keepalive_ended(&mut ka_end) => {
                        keepalive.abort();
                        return Ended::Again(why);
                    }
                    _ = stop.changed() => {
                        keepalive.abort();
                        self.revoke(&mut c, lease).await;
                        return Ended::Stopped;
                    }
                }
            }
        };
        let key = match won.map(|mut r| r.take_leader()) {
            Ok(Some(k)) => k,
            Ok(None) => {
                keepalive.abort();
                self.revoke(&mut c, lease).await;
                return Ended::Again("etcd answered the campaign without a leader key".into());
            }
            Err(e) => {
                keepalive.abort();
                self.revoke(&mut c, lease).await;
                return Ended::Again(format!("the campaign failed: {e}"));
            }
        };
        // etcd may answer a campaign queued during an outage just before it
        // expires the lease it was made with: a win with a lease no longer
        // confirmed is not served.
        if ka_end.borrow().is_some() || !clock.confirmed() {
            keepalive.abort();
            self.revoke(&mut c, lease).await;
            return Ended::Again("won with an election lease that is no longer confirmed".into());
        }
        let guard = Guard {
            key: key.key().to_vec(),
            create_revision: key.rev(),
        };
        let term = Term::new(clock.clone());
        tracing::info!(lease, "won the election; loading the state from etcd");
        let activated = {
            let (etcd, term, auth, lease_default) = (
                self.etcd.clone(),
                term.clone(),
                self.auth.clone(),
                self.default_lease,
            );
            let (roles, sessions) = (self.roles.clone(), self.sessions.clone());
            tokio::task::spawn_blocking(move || -> Result<(Arc<Ctld>, ActiveTasks), Activation> {
                let (store, state) = EtcdStore::load(&etcd, guard, term.clone())?;
                let clusters = state.clusters.len();
                let ctld = Arc::new(Ctld::for_term(state, Box::new(store), lease_default, term));
                let api = crate::api::router(crate::api::Api::new(ctld.clone(), auth));
                let tasks = leader::activate(ctld.clone(), api, &roles, &sessions)?;
                tracing::info!(clusters, "active: serving sessions and the API");
                Ok((ctld, tasks))
            })
            .await
        };
        let (ctld, tasks) = match activated {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                let e = e.to_string();
                tracing::error!("cannot serve as the active keyway-ctld: {e}");
                term.end(&e);
                keepalive.abort();
                self.revoke(&mut c, lease).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                return Ended::Again(e);
            }
            Err(e) => {
                term.end("activation panicked");
                keepalive.abort();
                self.revoke(&mut c, lease).await;
                return Ended::Again(format!("activation failed: {e}"));
            }
        };
        // Serve until the term ends.
        let mut last_check = Instant::now();
        let why = loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    if let Some(why) = term.ended() {
                        break why;
                    }
                    if !term.may_grant() {
                        break "the election lease was not confirmed within its TTL".to_string();
                    }
                    if last_check.elapsed() >= LEADER_CHECK {
                        last_check = Instant::now();
                        if let Ok(Ok(r)) = tokio::time::timeout(ASK_LEADER, c.leader(self.election())).await {
                            if r.kv().is_some_and(|kv| kv.key() != key.key()) {
                                break "etcd names another keyway-ctld as the leader".to_string();
                            }
                        }
                    }
                }
                why = keepalive_ended(&mut ka_end) => break why,
                _ = stop.changed() => {
                    // Hand over: active tasks stop (sweeps record their
                    // progress, acked versions are saved) while this ctld
                    // still leads, then the lease goes.
                    let _ = tokio::task::spawn_blocking(move || tasks.stop()).await;
                    ctld.term().end("shutting down");
                    self.roles.send_replace(Role::Standby(None));
                    keepalive.abort();
                    self.revoke(&mut c, lease).await;
                    return Ended::Stopped;
                }
            }
        };
        let roles = self.roles.clone();
        ctld.term().end(&why);
        roles.send_replace(Role::Standby(None));
        tasks.signal_stop();
        keepalive.abort();
        self.revoke(&mut c, lease).await;
        let c2 = ctld.clone();
        let _ =
            tokio::task::spawn_blocking(move || leader::deactivate(&c2, &why, tasks, &roles)).await;
        Ended::Again(ctld.term().ended().unwrap_or_default())
    }
}
