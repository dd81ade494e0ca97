//! The leader-takeover benchmark runs end to end once: a real etcd, three
//! keyway-ctlds, a redis-server and a keyway data plane (this workspace's
//! debug builds). Timings are not checked here beyond a generous deadline;
//! they belong in benchmark runs.

use keyway_bench::takeover::{markdown, run, Options};

#[test]
fn one_takeover_is_measured_with_no_client_error() {
    // Built from the current tree, never a stale binary.
    let bin_dir = keyway_testkit::workspace_bin_dir(&["keyway", "keyway-ctld"]);
    let o = Options {
        runs: 1,
        ttls: vec![2],
        bin_dir,
    };
    let r = run(&o, "test".into()).expect("benchmark run");
    assert_eq!(r.series.len(), 1);
    let s = &r.series[0];
    assert_eq!(s.runs.len(), 1);
    let t = &s.runs[0];
    assert!(
        t.active_s > 0.0 && t.active_s <= t.session_s && t.session_s <= t.write_s,
        "{t:?}"
    );
    assert!(
        t.write_s < 30.0,
        "a takeover within the benchmark's deadlines: {t:?}"
    );
    assert_eq!(s.client_errors, 0, "{s:?}");
    assert!(s.client_ok > 0);
    assert!(markdown(&r).contains("| 2s | 1 |"), "{}", markdown(&r));
}
