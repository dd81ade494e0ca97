//! A checking INCR load: each client INCRs counters of its own and checks
//! every reply against what it counted, and all of them INCR a few shared
//! counters through every data plane at once. At the end every counter must
//! hold exactly what was acknowledged: a lost or doubled write shows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use redis::Commands;

use super::wait_for;

/// Shared counters.
const SHARED: usize = 8;

/// The load's clients.
pub struct IncrLoad {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    shared: Arc<Mutex<HashMap<String, i64>>>,
    threads: Vec<JoinHandle<HashMap<String, i64>>>,
}

impl IncrLoad {
    /// `clients` clients spread over `dataplanes`, each over `keys` counters
    /// of its own.
    pub fn start(dataplanes: &[SocketAddr], clients: usize, keys: usize) -> IncrLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Mutex::new(HashMap::new()));
        let threads = (0..clients)
            .map(|t| {
                let addr = dataplanes[t % dataplanes.len()];
                let (stop, ops, errors, shared) =
                    (stop.clone(), ops.clone(), errors.clone(), shared.clone());
                std::thread::spawn(move || {
                    let mut con = redis::Client::open(format!("redis://{addr}"))
                        .unwrap()
                        .get_connection()
                        .unwrap();
                    con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let mut mine: HashMap<String, i64> = HashMap::new();
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let key = if n % 4 == 0 {
                            format!("shared:{}", n % SHARED)
                        } else {
                            format!("ctr:{t}:{}", (n * 7919) % keys)
                        };
                        match con.incr::<_, _, i64>(&key, 1) {
                            Ok(got) if key.starts_with("shared:") => {
                                *shared.lock().unwrap().entry(key).or_insert(0) += 1;
                                let _ = got;
                            }
                            Ok(got) => {
                                let want = mine.entry(key.clone()).or_insert(0);
                                *want += 1;
                                assert_eq!(got, *want, "{key}: lost or doubled");
                            }
                            Err(e) => errors.lock().unwrap().push(format!("INCR {key}: {e}")),
                        }
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    mine
                })
            })
            .collect();
        IncrLoad {
            stop,
            ops,
            errors,
            shared,
            threads,
        }
    }

    /// Requests so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Waits for `more` requests.
    pub fn wait_ops(&self, more: u64) {
        let start = self.ops();
        wait_for("the load to make progress", Duration::from_secs(30), || {
            (self.ops() >= start + more).then_some(())
        });
    }

    /// Stops, checks every counter through `check` (a data plane), and
    /// returns (requests, client errors). Panics on a lost or doubled write.
    pub fn finish(self, check: SocketAddr) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let all: Vec<HashMap<String, i64>> = self
            .threads
            .into_iter()
            .map(|t| t.join().expect("a checking client found a wrong reply"))
            .collect();
        let errors = self.errors.lock().unwrap().clone();
        let mut con = redis::Client::open(format!("redis://{check}"))
            .unwrap()
            .get_connection()
            .unwrap();
        // A failed INCR may or may not have been applied: exact counts only
        // when there were none.
        let exact = errors.is_empty();
        for (k, want) in all
            .iter()
            .flatten()
            .chain(self.shared.lock().unwrap().iter())
        {
            let got: i64 = con.get(k).unwrap();
            assert!(
                got == *want || !exact,
                "{k} is {got}, want {want}: lost or doubled"
            );
        }
        (self.ops.load(Ordering::Relaxed), errors)
    }
}
