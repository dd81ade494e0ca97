//! The daemon's rules without sockets: an in-memory store stands in for the
//! file, and can hold a save to show what waits for it and what does not.

use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::model::cluster::tests::{create, g};
use crate::model::{GroupChanges, Resolved};

/// Saves in memory; while `gate` is set, each save waits for a message.
#[derive(Default)]
struct MemStore {
    saved: Arc<Mutex<Vec<State>>>,
    gate: Option<Arc<Mutex<mpsc::Receiver<()>>>>,
}

impl Store for MemStore {
    fn save(&mut self, state: &State) -> Result<(), StoreError> {
        if let Some(g) = &self.gate {
            let _ = lock(g).recv();
        }
        lock(&self.saved).push(state.clone());
        Ok(())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}

fn state() -> State {
    let mut s = State::default();
    s.clusters.insert(
        "c".into(),
        create("c", 16, vec![g("a", 1), g("b", 2)], 30_000).unwrap(),
    );
    s
}

fn ctld(store: MemStore) -> Arc<Ctld> {
    Arc::new(Ctld::new(state(), Box::new(store), Duration::from_secs(30)))
}

fn hello(id: &str) -> Hello {
    Hello {
        id: id.into(),
        cluster: "c".into(),
        version: 0,
        address: "127.0.0.1:6380".into(),
        token: String::new(),
        admin: String::new(),
        admin_tls: false,
    }
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn ack(version: u64) -> Ack {
    Ack {
        version,
        drained: true,
        seq: 1,
        fenced: false,
        backends: vec![],
    }
}

const LEASE: Duration = Duration::from_secs(30);

/// A change to group "a" (its zone) that any test may make.
fn zone_edit() -> Change {
    Change::EditGroup {
        group: "a".into(),
        edit: GroupChanges {
            zone: Some("z".into()),
            ..GroupChanges::default()
        },
        resolved: Resolved::none(),
    }
}

#[test]
fn a_new_record_must_be_saved_before_its_first_lease() {
    let saved = Arc::new(Mutex::new(Vec::new()));
    let d = ctld(MemStore {
        saved: saved.clone(),
        gate: None,
    });
    let reg = d.hello(&hello("dp1"), peer(1));
    assert!(reg.must_persist);
    d.persist_dataplane("dp1").unwrap();
    assert_eq!(
        lock(&saved).last().unwrap().dataplanes["dp1"].acked_version,
        0
    );
    // The same data plane again, from the same address: nothing to save.
    d.disconnected("dp1", reg.session);
    let again = d.hello(&hello("dp1"), peer(2));
    assert!(!again.must_persist);
    // Another address: saved again.
    d.disconnected("dp1", again.session);
    let mut moved = hello("dp1");
    moved.address = "127.0.0.1:7000".into();
    assert!(d.hello(&moved, peer(3)).must_persist);
}

#[test]
fn acks_never_wait_for_the_store_and_are_saved_later() {
    let saved = Arc::new(Mutex::new(Vec::new()));
    let (open, gate) = mpsc::channel();
    let d = ctld(MemStore {
        saved: saved.clone(),
        gate: None,
    });
    let reg = d.hello(&hello("dp1"), peer(1));
    d.persist_dataplane("dp1").unwrap();
    // From now on every save waits for the gate: a change holds the writer
    // lock inside its "fsync".
    {
        let mut w = lock(&d.writer);
        let mem = MemStore {
            saved: saved.clone(),
            gate: Some(Arc::new(Mutex::new(gate))),
        };
        *w = Box::new(mem);
    }
    let d2 = d.clone();
    let change = std::thread::spawn(move || d2.change("c", &zone_edit()));
    // Wait until the change holds the writer lock.
    while d.writer.try_lock().is_ok() {
        std::thread::yield_now();
    }
    let d3 = d.clone();
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let counted = d3.ack("dp1", reg.session, &ack(1), LEASE);
        let view = d3.dataplanes(Some("c"));
        done_tx.send((counted, view)).ok();
    });
    let (counted, view) = done
        .recv_timeout(Duration::from_secs(30))
        .expect("an ack must not wait for a change's save");
    assert!(counted);
    assert_eq!(view[0].acked_version, 1, "visible at once");
    assert!(view[0].lease_remaining_ms.is_some());
    assert!(
        d.unsettled("c", 1).is_empty(),
        "counted for migrations at once"
    );
    // Let the change finish; then the persister's save (also gated).
    open.send(()).unwrap();
    change.join().unwrap().unwrap();
    let d4 = d.clone();
    let persist = std::thread::spawn(move || d4.persist_acks());
    open.send(()).unwrap();
    persist.join().unwrap().unwrap();
    let last = lock(&saved).last().unwrap().clone();
    assert_eq!(last.dataplanes["dp1"].acked_version, 1);
    assert_eq!(last.clusters["c"].groups[0].zone, "z", "nothing lost");
    // Nothing new: no save.
    let n = lock(&saved).len();
    d.persist_acks().unwrap();
    assert_eq!(lock(&saved).len(), n);
}

#[test]
fn a_replaced_session_is_closed_and_no_longer_counts() {
    let d = ctld(MemStore::default());
    let mut first = d.hello(&hello("dp1"), peer(1));
    d.persist_dataplane("dp1").unwrap();
    assert!(d.ack("dp1", first.session, &ack(1), LEASE));
    let second = d.hello(&hello("dp1"), peer(2));
    assert!(
        first.replaced.try_recv().is_ok(),
        "the old session is told to close"
    );
    assert!(
        !d.ack("dp1", first.session, &ack(1), LEASE),
        "the old session's acks no longer count"
    );
    assert!(d.ack("dp1", second.session, &ack(1), LEASE));
    let v = &d.dataplanes(None)[0];
    assert!(v.connected && v.lease_remaining_ms.is_some());
    // The old session ending does not disconnect the new one.
    d.disconnected("dp1", first.session);
    assert!(d.dataplanes(None)[0].connected);
}

#[test]
fn forgetting_waits_for_disconnection_and_the_lease() {
    let d = ctld(MemStore::default());
    let reg = d.hello(&hello("dp1"), peer(1));
    d.persist_dataplane("dp1").unwrap();
    let e = d.forget("dp1").unwrap_err().to_string();
    assert!(e.contains("is connected"), "{e}");
    assert!(d.ack("dp1", reg.session, &ack(1), Duration::from_millis(1)));
    d.disconnected("dp1", reg.session);
    std::thread::sleep(Duration::from_millis(5));
    d.forget("dp1").unwrap();
    assert!(d.dataplanes(None).is_empty());
    assert!(!d.state().dataplanes.contains_key("dp1"));
    assert!(matches!(
        d.forget("dp1"),
        Err(ChangeError::Model(ModelError {
            kind: crate::model::ErrorKind::NotFound,
            ..
        }))
    ));
    // One ctld has never heard from since it started may hold a lease its
    // predecessor granted.
    let mut s = state();
    s.dataplanes.insert(
        "old".into(),
        crate::model::DataPlaneRecord {
            id: "old".into(),
            cluster: "c".into(),
            address: String::new(),
            acked_version: 1,
        },
    );
    let d = Ctld::new(s, Box::new(MemStore::default()), LEASE);
    let e = d.forget("old").unwrap_err().to_string();
    assert!(e.contains("may still hold a lease"), "{e}");
    assert_eq!(d.unsettled("c", 2), vec!["old".to_string()]);
}

#[test]
fn changes_are_validated_whole() {
    let d = ctld(MemStore::default());
    // The lease is checked by the API before the change, not by the change
    // itself: the daemon's validation of the whole catches it.
    let settings = Change::Settings {
        check_interval_ms: None,
        down_after_ms: None,
        auto_failover: None,
        max_lag_bytes: None,
        lease_ms: Some(1),
    };
    let e = d.change("c", &settings).unwrap_err().to_string();
    assert!(e.contains("lease"), "{e}");
    assert_eq!(d.cluster("c").unwrap().version, 1, "nothing changed");
    let mut bad = d.cluster("c").unwrap();
    bad.name = "d".into();
    bad.lease_millis = 1;
    assert!(d.create(bad).is_err());
}

#[test]
fn a_data_planes_admin_endpoint_is_listed_as_its_latest_hello_named_it() {
    let d = ctld(MemStore::default());
    let mut h = hello("dp1");
    h.admin = "127.0.0.1:6381".into();
    h.admin_tls = true;
    let reg = d.hello(&h, peer(1));
    let v = &d.dataplanes(Some("c"))[0];
    assert_eq!((v.admin.as_str(), v.admin_tls), ("127.0.0.1:6381", true));
    // A later session without one (or with one that is not host:port) is
    // served, and listed without.
    d.disconnected("dp1", reg.session);
    h.admin = "not an address".into();
    d.hello(&h, peer(2));
    let v = &d.dataplanes(Some("c"))[0];
    assert_eq!(v.admin, "", "a bad admin endpoint is not listed");
}

#[test]
fn changes_are_events_and_store_writes_are_timed() {
    let d = ctld(MemStore::default());
    let settings = Change::Settings {
        check_interval_ms: Some(2000),
        down_after_ms: None,
        auto_failover: None,
        max_lag_bytes: None,
        lease_ms: None,
    };
    let (c, _) = d.change("c", &settings).unwrap();
    let events = crate::events::journal().since("c", 0);
    let e = events
        .iter()
        .rev()
        .find(|e| e.what["change"]["check_interval_ms"] == 2000 && e.what["version"] == c.version)
        .expect("the change's event (the journal is the process's: other tests' are there too)");
    assert_eq!(e.kind, "change");
    assert_eq!(e.who, "ctld", "not in an API request");
    assert_eq!(e.what["change"]["kind"], "settings");
    assert_eq!(e.what["change"]["check_interval_ms"], 2000);
    let text = crate::metrics::render(Some(&d));
    assert!(
        text.contains("keyway_ctld_store_write_duration_seconds_count{store=\"file\"}"),
        "{text}"
    );
    assert!(text.contains(&format!(
        "keyway_ctld_cluster_version{{cluster=\"c\"}} {}",
        c.version
    )));
}

#[test]
fn a_newer_ack_or_a_change_wakes_the_orchestrator_and_a_repeat_ack_does_not() {
    let d = ctld(MemStore::default());
    let reg = d.hello(&hello("dp1"), peer(1));
    d.persist_dataplane("dp1").unwrap();
    assert!(
        !d.orchestrator_wait(Duration::from_millis(1)),
        "nothing happened: the wait times out"
    );
    assert!(d.ack("dp1", reg.session, &ack(1), LEASE));
    // The wake-up came before the wait: it is not lost.
    assert!(d.orchestrator_wait(Duration::from_secs(60)));
    assert!(
        !d.orchestrator_wait(Duration::from_millis(1)),
        "one wake-up wakes one wait"
    );
    assert!(d.ack("dp1", reg.session, &ack(1), LEASE));
    assert!(
        !d.orchestrator_wait(Duration::from_millis(1)),
        "the same version again is a heartbeat, not news"
    );
    let d2 = d.clone();
    let waiter = std::thread::spawn(move || d2.orchestrator_wait(Duration::from_secs(60)));
    d.change("c", &zone_edit()).unwrap();
    assert!(
        waiter.join().unwrap(),
        "a change wakes a waiting orchestrator"
    );
}
