//! A group added to a cluster (`keywayctl cluster grow`) receives the
//! cluster's Redis function libraries before it owns any slot, end to end
//! with real processes: libraries loaded through a data plane, copied by
//! ctld into the new group's master; a grow that cannot copy them fails
//! with a clear error and changes nothing.

mod common;

use std::time::Duration;

use common::checks::{create_cluster as create, version};
use common::{Ctld, DataPlane, Redis, TempDir};

const LIB: &str = "#!lua name=kwlib\nredis.register_function('kwset', function(keys, args) redis.call('SET', keys[1], args[1]); return redis.call('GET', keys[1]) end)";

fn function_list(r: &Redis) -> redis::Value {
    redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("WITHCODE")
        .query(&mut r.conn())
        .unwrap()
}

fn groups(ctld: &Ctld, cluster: &str) -> Vec<String> {
    let c = ctld.ctl_json(&["cluster", "show", cluster]);
    c["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_grown_group_gets_the_clusters_functions_before_it_owns_slots() {
    let dir = TempDir::new("functions");
    let r: Vec<Redis> = (0..4).map(|_| Redis::start()).collect();
    let ctld = Ctld::start(dir.path(), "30s");
    create(&ctld, "f", &[("g1", r[0].addr())], "30s", &[]);

    // No library yet: a grow never touches the new master (here one that
    // does not answer).
    let (ok, _, err) = ctld.ctl(&["cluster", "grow", "f", "--group", "gx=127.0.0.1:1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctld.ctl(&["cluster", "shrink", "f", "--group", "gx"]);
    assert!(ok, "{err}");

    // A library loaded through a data plane.
    let dp = DataPlane::start(ctld.control, "f", "dp1", &dir.path().join("dp1"));
    dp.wait_health(200, Duration::from_secs(10));
    let lib: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIB)
        .query(&mut dp.conn())
        .unwrap();
    assert_eq!(lib, "kwlib");

    // Grow: the new master has it before the group is in the cluster.
    let (ok, _, err) = ctld.ctl(&[
        "cluster",
        "grow",
        "f",
        "--group",
        &format!("g2={}", r[1].addr()),
    ]);
    assert!(ok, "{err}");
    assert_eq!(function_list(&r[1]), function_list(&r[0]));
    let v: String = redis::cmd("FCALL")
        .arg("kwset")
        .arg(1)
        .arg("k")
        .arg("on-g2")
        .query(&mut r[1].conn())
        .unwrap();
    assert_eq!(v, "on-g2");

    // A new master that already has a library of that name: the grow fails,
    // naming it and Redis's answer, and the cluster is unchanged.
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIB)
        .query(&mut r[2].conn())
        .unwrap();
    let before = version(&ctld, "f");
    let (ok, _, err) = ctld.ctl(&[
        "cluster",
        "grow",
        "f",
        "--group",
        &format!("g3={}", r[2].addr()),
    ]);
    assert!(!ok, "the grow must fail");
    assert!(
        err.contains(&format!(
            "cannot copy the cluster's functions from {} to the new group's master {}",
            r[0].addr(),
            r[2].addr()
        )) && err.contains(": ERR Library kwlib already exists"),
        "{err}"
    );
    assert_eq!(version(&ctld, "f"), before, "nothing changed");
    assert_eq!(groups(&ctld, "f"), ["g1", "g2"]);

    // A new master that does not answer: the grow fails too.
    let (ok, _, err) = ctld.ctl(&["cluster", "grow", "f", "--group", "g4=127.0.0.1:1"]);
    assert!(!ok, "the grow must fail");
    assert!(
        err.contains("to the new group's master 127.0.0.1:1"),
        "{err}"
    );
    assert_eq!(groups(&ctld, "f"), ["g1", "g2"]);
    drop(r);
}
