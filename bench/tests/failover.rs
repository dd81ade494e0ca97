//! The failover benchmark runs end to end once: keyway-ctld, a keyway data
//! plane and a Redis master with its replica (this workspace's debug
//! builds); one kill -9 of the master and one switchover. Timings are not
//! checked here beyond generous deadlines; they belong in benchmark runs.

use keyway_bench::ha::{markdown, run, Options};

#[test]
fn one_kill_and_one_switchover_are_measured() {
    // Built from the current tree, never a stale binary.
    let bin_dir = keyway_testkit::workspace_bin_dir(&["keyway", "keyway-ctld", "keywayctl"]);
    let o = Options {
        kills: 1,
        down_after_ms: vec![1000],
        check_interval_ms: 200,
        switchovers: 1,
        bin_dir,
    };
    let r = run(&o, "test".into()).expect("benchmark run");
    assert_eq!(r.kills.len(), 1);
    let k = &r.kills[0];
    assert_eq!(k.to_first_write.each_ms.len(), 1);
    // Failed one second after its first failed check at the earliest.
    assert!(
        (1000..30_000).contains(&k.to_first_write.max_ms),
        "writes resumed after {} ms",
        k.to_first_write.max_ms
    );
    assert_eq!(r.switchover_pause.each_ms.len(), 1);
    assert!(r.switchover_took.max_ms < 30_000, "{:?}", r.switchover_took);
    assert!(markdown(&r).contains("| 1000 ms | 1 |"), "{}", markdown(&r));
}
