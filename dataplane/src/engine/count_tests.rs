//! Instruction count of the request path (run under callgrind; ignored):
//! 20,000 batches of 16 pipelined `GET k` (or `SET k v`) to one group, as
//! the default user or as an ACL user with a key pattern.

use std::sync::Arc;

use super::rig::{key_in, Rig, Settings};
use crate::acl::{UserConfig, Users};
use crate::routing::SlotRoute;

/// Sends 20,000 batches of 16 `request`s for one key, each answered by the
/// group with 16 `reply`s.
fn run_p16(mut r: Rig, command: &str, args: &str, reply: &str) {
    let k = key_in(3);
    let mut one = format!(
        "*{}\r\n${}\r\n{command}\r\n${}\r\n{k}\r\n",
        2 + usize::from(!args.is_empty()),
        command.len(),
        k.len()
    );
    if !args.is_empty() {
        one.push_str(&format!("${}\r\n{args}\r\n", args.len()));
    }
    let batch = one.repeat(16);
    let reply = reply.repeat(16);
    for _ in 0..20000 {
        r.send_raw(batch.as_bytes());
        r.written(2);
        r.reply(2, &reply);
        assert_eq!(r.output().len(), reply.len());
    }
}

/// A client authenticated as `app`, a user with a key pattern and a
/// category removed: the request path's ACL checks (the command's bit, a
/// glob match per key).
fn acl_rig() -> Rig {
    let users = Users::from_config(&[
        UserConfig {
            name: "default".into(),
            rules: "on >d ~* &* +@all".into(),
        },
        UserConfig {
            name: "app".into(),
            rules: "on >p ~k* &* +@all -@dangerous".into(),
        },
    ])
    .unwrap();
    let settings = Settings {
        users: Arc::new(users),
        ..Settings::default()
    };
    let mut r = Rig::with(SlotRoute::Stable(2), settings);
    r.send("AUTH app p");
    assert_eq!(r.output(), "+OK\r\n");
    r
}

#[test]
#[ignore]
fn count_get_p16() {
    run_p16(Rig::new(SlotRoute::Stable(2)), "GET", "", "$1\r\nv\r\n");
}

/// `count_get_p16` with `[metrics] latency = false`: no clock reads, no
/// histograms (the reply slots' stamps remain, for `failed_calls`).
#[test]
#[ignore]
fn count_get_p16_latency_off() {
    let settings = Settings {
        metrics: crate::config::MetricsSettings { latency: false },
        ..Settings::default()
    };
    run_p16(
        Rig::with(SlotRoute::Stable(2), settings),
        "GET",
        "",
        "$1\r\nv\r\n",
    );
}

#[test]
#[ignore]
fn count_get_p16_acl() {
    run_p16(acl_rig(), "GET", "", "$1\r\nv\r\n");
}

#[test]
#[ignore]
fn count_set_p16() {
    run_p16(Rig::new(SlotRoute::Stable(2)), "SET", "v", "+OK\r\n");
}

#[test]
#[ignore]
fn count_set_p16_acl() {
    run_p16(acl_rig(), "SET", "v", "+OK\r\n");
}
