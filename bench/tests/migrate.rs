//! The migration benchmark runs end to end on a small key space: real
//! redis-servers, keyway-ctld, keywayctl and keyway (this workspace's debug
//! builds). Timings are not checked here; they belong in benchmark runs.

use keyway_bench::migrate::{markdown, run, Options};

#[test]
fn a_small_move_and_a_big_key_are_measured() {
    // Built from the current tree, never a stale binary.
    let bin_dir = keyway_testkit::workspace_bin_dir(&["keyway", "keyway-ctld", "keywayctl"]);
    let o = Options {
        keys: 3000,
        value_size: 10,
        client_rate: 500.0,
        client_keys: 0,
        connections: 4,
        baseline_seconds: 0.5,
        rounds: 1,
        batch: 50,
        sweep_rates: vec![0, 5000],
        concurrency: 2,
        big_fields: 2000,
        paused_seconds: 0.5,
        bin_dir,
    };
    let r = run(&o, "test".into()).expect("benchmark run");
    assert_eq!(r.moves.len(), 2);
    let p = r.paused.as_ref().expect("the paused phase ran");
    assert!(
        p.paused.requests > 0 && p.paused.errors + p.before.errors == 0,
        "{p:?}"
    );
    assert!(
        p.moved_on_demand > 0,
        "commands moved their keys while the sweep was paused"
    );
    // The paused move took every key to g2.
    assert_eq!(r.moves[0].direction, "g2 -> g1");
    assert_eq!(r.moves[1].direction, "g1 -> g2", "rounds alternate");
    for m in &r.moves {
        assert_eq!(m.keys, 3000);
        assert_eq!(m.during.errors + m.before.errors, 0, "{m:?}");
        assert!(m.during.requests > 0 && m.keys_per_second > 0.0);
    }
    assert_eq!(r.summary.len(), 2);
    let big = r.big_key.as_ref().expect("the big key phase ran");
    assert!(big.bytes > 0 && big.during.errors == 0, "{big:?}");
    let md = markdown(&r);
    assert!(
        md.contains("| 5000 keys/s |")
            && md.contains("A big key")
            && md.contains("With the sweep paused")
            && md.contains("typical 100 ms p99"),
        "{md}"
    );
}
