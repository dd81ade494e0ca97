//! Persistence never starves sessions (issue 10, item 7): a ctld whose
//! store takes 5 s per save — run in this process, with its control
//! sessions and its API on their own runtimes as keyway-ctld runs them —
//! keeps renewing a real data plane's 3 s lease while API writes queue
//! behind the slow store.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::checks::HealthWatch;
use common::{keywayctl, wait_for, DataPlane, Redis, TempDir};
use keyway_ctl::auth::Auth;
use keyway_ctl::daemon::Ctld;
use keyway_ctl::leader::{self, Addresses, Role};
use keyway_ctl::model::{Cluster, Group, Resolved, State};
use keyway_ctl::store::{Store, StoreError};
use tokio::sync::watch;

/// Every save takes `delay`.
struct SlowStore {
    delay: Duration,
    saves: Arc<AtomicU64>,
}

impl Store for SlowStore {
    fn save(&mut self, _: &State) -> Result<(), StoreError> {
        std::thread::sleep(self.delay);
        self.saves.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn describe(&self) -> String {
        "slow".into()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_store_taking_5s_per_save_delays_no_lease_renewal() {
    let dir = TempDir::new("slow-store");
    let redis = Redis::start();
    let mut state = State::default();
    let g = Group {
        name: "g1".into(),
        master: redis.addr(),
        ..Group::default()
    };
    state.clusters.insert(
        "c".into(),
        Cluster::create("c", 1024, vec![g], 3000, &Resolved::none()).unwrap(),
    );
    let saves = Arc::new(AtomicU64::new(0));
    let store = SlowStore {
        delay: Duration::from_secs(5),
        saves: saves.clone(),
    };
    let ctld = Arc::new(Ctld::new(state, Box::new(store), Duration::from_secs(30)));
    let roles = Arc::new(watch::channel(Role::Standby(None)).0);

    // Control sessions on their own thread and runtime, the API on another,
    // as keyway-ctld runs them.
    let control = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (control_addr, api_addr) = (control.local_addr().unwrap(), api.local_addr().unwrap());
    control.set_nonblocking(true).unwrap();
    api.set_nonblocking(true).unwrap();
    let control_rt = runtime();
    let sessions = control_rt.handle().clone();
    let r = roles.subscribe();
    std::thread::spawn(move || {
        control_rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(control).unwrap();
            keyway_ctl::control::serve(l, r, Arc::new(Auth::LoopbackOnly), None).await;
        })
    });
    let me = Addresses {
        api: api_addr.to_string(),
        control: control_addr.to_string(),
    };
    let app = keyway_ctl::api::leader::router(roles.subscribe(), Auth::LoopbackOnly, me);
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let l = tokio::net::TcpListener::from_std(api).unwrap();
            keyway_ctl::api::serve(
                l,
                app,
                keyway_ctl::api::Limits::default(),
                std::future::pending(),
            )
            .await;
        })
    });
    let routes =
        keyway_ctl::api::router(keyway_ctl::api::Api::new(ctld.clone(), Auth::LoopbackOnly));
    let _tasks = leader::activate(ctld.clone(), routes, &roles, &sessions).unwrap();

    // The data plane's record is saved (5 s) before its first lease.
    let mut dp = DataPlane::start(control_addr, "c", "dp1", &dir.path().join("dp1"));
    dp.wait_health(200, Duration::from_secs(30));
    let watch = HealthWatch::start(&dp);
    let logged = dp.proc.logs().len();

    // Three API writes at once: each holds the store for 5 s, the others
    // (and the persister of acked versions) wait behind it.
    let started = Instant::now();
    let before = saves.load(Ordering::Relaxed);
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let api = api_addr.to_string();
            std::thread::spawn(move || {
                keywayctl(&api, &["group", "c", "g1", "--zone", &format!("z{i}")])
            })
        })
        .collect();
    // Meanwhile the lease never runs out, as ctld sees it either.
    let mut lowest = u64::MAX;
    while writers.iter().any(|w| !w.is_finished()) {
        let view = ctld.dataplanes(Some("c"));
        let left = view[0].lease_remaining_ms.unwrap_or(0);
        lowest = lowest.min(left);
        assert!(view[0].connected, "the session ended: {view:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    for w in writers {
        let (ok, _, err) = w.join().unwrap();
        assert!(ok, "an API write failed: {err}");
    }
    eprintln!(
        "3 writes took {took:?} ({} saves); the lease never had less than {lowest} ms left",
        saves.load(Ordering::Relaxed) - before
    );
    assert!(
        took >= Duration::from_secs(14),
        "the writes queued behind the slow store ({took:?})"
    );
    assert!(lowest > 0, "the lease ran out as ctld saw it");
    wait_for(
        "the data plane to ack the last version",
        Duration::from_secs(20),
        || {
            let v = ctld.cluster("c").unwrap().version;
            (ctld.dataplanes(Some("c"))[0].acked_version >= v).then_some(())
        },
    );
    let bad = watch.finish();
    assert!(bad.is_empty(), "the data plane was not healthy: {bad:?}");
    let fenced: Vec<String> = dp.proc.logs()[logged..]
        .iter()
        .filter(|l| l.contains("fenced"))
        .cloned()
        .collect();
    assert!(fenced.is_empty(), "the data plane fenced: {fenced:?}");
}
