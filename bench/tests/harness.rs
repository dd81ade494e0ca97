//! The harness runs end to end: real redis-server, nutcracker and keyway (the
//! debug build of this workspace), every load, a report with every target.
//! Timings are not checked here; they belong in benchmark runs.

use keyway_bench::harness::{markdown, run, Options, TX_LOAD};

#[test]
fn one_quick_round_reports_every_target() {
    // Built from the current tree, never a stale binary.
    let keyway = keyway_testkit::workspace_bin("keyway");
    // A CPU this test may use, not CPU 0: a restricted affinity mask (taskset,
    // a cgroup) may leave it out.
    let proxy_cpu = keyway_testkit::allowed_cpus()[0];
    let o = Options {
        rounds: 1,
        requests: 3000,
        keyway: keyway.clone(),
        transports: vec!["glommio".into(), "uring".into()],
        baseline: Some(keyway),
        twemproxy: true,
        proxy_cpu,
        redis_cpu: None,
        reference_only: false,
        transactions_only: false,
        open_rate: 2000.0,
        tls: false,
        acl: false,
        variants: Vec::new(),
    };
    let report = run(&o, "test".into()).expect("harness run");
    assert_eq!(
        report.targets,
        [
            "redis",
            "twemproxy",
            "keyway-glommio",
            "keyway-uring",
            "keyway-before"
        ]
    );
    assert_eq!(report.loads.len(), 10);
    // twemproxy has no transactions: it does not run that load.
    assert_eq!(report.not_run.len(), 1);
    assert_eq!(
        (&report.not_run[0].0[..], &report.not_run[0].1[..]),
        (TX_LOAD, "twemproxy")
    );
    assert!(report.summary.contains_key(TX_LOAD));
    for (load, by_target) in &report.summary {
        let targets = if load == TX_LOAD { 4 } else { 5 };
        assert_eq!(by_target.len(), targets, "{load}");
        for (t, s) in by_target {
            assert!(s.rps > 0.0, "{load} on {t}");
            assert_eq!(s.errors, 0, "{load} on {t}");
            assert_eq!(s.proxy_cpu_us.is_some(), t != "redis", "{load} on {t}");
        }
    }
    let md = markdown(&report);
    assert!(
        md.contains("| keyway-uring |")
            && md.contains("### GET P1")
            && md.contains("### PING P16")
            && md.contains(&format!("### {TX_LOAD}"))
            && md.contains("| twemproxy | not run: twemproxy does not support MULTI/EXEC"),
        "{md}"
    );
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"ratio_to_direct\""));
}

#[test]
fn the_tls_acl_and_variant_targets_run_the_reference_loads() {
    let keyway = keyway_testkit::workspace_bin("keyway");
    let o = Options {
        rounds: 1,
        requests: 2000,
        keyway,
        transports: Vec::new(),
        baseline: None,
        twemproxy: false,
        proxy_cpu: keyway_testkit::allowed_cpus()[0],
        redis_cpu: None,
        reference_only: true,
        transactions_only: false,
        open_rate: 2000.0,
        tls: true,
        acl: true,
        variants: vec![(
            "keyway-variant".into(),
            "[limits]\nmax_clients = 5000".into(),
        )],
    };
    let report = run(&o, "test".into()).expect("harness run");
    assert_eq!(
        report.targets,
        ["redis", "keyway-variant", "keyway-tls", "keyway-acl"]
    );
    for (load, by_target) in &report.summary {
        for t in ["keyway-variant", "keyway-tls", "keyway-acl"] {
            let s = &by_target[t];
            assert!(s.rps > 0.0 && s.errors == 0, "{load} on {t}");
            assert!(s.proxy_cpu_us.is_some(), "{load}: {t}'s CPU is measured");
        }
    }
}
