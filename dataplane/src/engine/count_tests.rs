//! Instruction count of the request path (run under callgrind; ignored).

use super::rig::{key_in, Rig};
use crate::routing::SlotRoute;

#[test]
#[ignore]
fn count_get_p16() {
    let mut r = Rig::new(SlotRoute::Stable(2));
    let k = key_in(3);
    let one = format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len());
    let batch = one.repeat(16);
    let reply = "$1\r\nv\r\n".repeat(16);
    for _ in 0..20000 {
        r.send_raw(batch.as_bytes());
        r.written(2);
        r.reply(2, &reply);
        assert_eq!(r.output().len(), reply.len());
    }
}

/// `count_get_p16` for a client authenticated as an ACL user with a key
/// pattern and a category removed: the request path's ACL checks (the
/// command's bit, a glob match per key).
#[test]
#[ignore]
fn count_get_p16_acl() {
    use std::sync::Arc;

    use super::rig::Settings;
    use crate::acl::{UserConfig, Users};

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
    let k = key_in(3);
    let one = format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len());
    let batch = one.repeat(16);
    let reply = "$1\r\nv\r\n".repeat(16);
    for _ in 0..20000 {
        r.send_raw(batch.as_bytes());
        r.written(2);
        r.reply(2, &reply);
        assert_eq!(r.output().len(), reply.len());
    }
}
