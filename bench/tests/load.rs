//! The load generator's open loop against a real redis-server: requests go
//! out on the schedule's timer and are reported per window. Only counts are
//! checked (timings belong in benchmark runs).

use std::time::Duration;

use keyway_bench::load::{parse_mix, run, LoadSpec, Stop};
use keyway_bench::procs::{Proc, TempDir};

#[test]
fn an_open_loop_reports_every_request_in_its_window() {
    let dir = TempDir::new("load");
    let redis = Proc::redis(&dir.0, None).expect("redis-server");
    let spec = LoadSpec {
        addr: redis.addr,
        connections: 4,
        pipeline: 1,
        keys: 100,
        value_size: 10,
        mix: parse_mix("get=1,set=1").unwrap(),
        multi_keys: 1,
        stop: Stop::Duration(Duration::from_millis(600)),
        rate: Some(2000.0),
        threads: 1,
        until: None,
        window: Some(Duration::from_millis(100)),
    };
    let r = run(&spec).expect("load run");
    assert_eq!(r.errors, 0, "{:?}", r.first_error);
    // 2000 a second for 0.6 s, on a schedule: about 1200, whatever the
    // machine's pace (a late request is sent late, not skipped).
    assert!(
        (1000..=1300).contains(&r.requests),
        "{} requests",
        r.requests
    );
    let n: u64 = r.windows.iter().map(|w| w.requests).sum();
    assert_eq!(n, r.requests, "every answered request is in a window");
    assert!(
        (6..=7).contains(&r.windows.len()),
        "{} windows",
        r.windows.len()
    );
    for (i, w) in r.windows.iter().enumerate() {
        assert_eq!(w.start_ms, 100 * i as u64);
        if w.requests > 0 {
            assert!(w.latency_us.p99 <= w.latency_us.max);
        }
    }
}
