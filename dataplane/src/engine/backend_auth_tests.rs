//! Backend authentication in the worker, driven without I/O: the `AUTH`
//! each connection sends first, a refused login failing the connection with
//! a clear error, and maintenance commands switched to the admin login and
//! back in one write (see `engine::backend_acl`).

use std::sync::Arc;

use super::rig::{key_in, Rig, Settings};
use crate::config::secrets::Secret;
use crate::config::{BackendAuth, GroupLogins, Login};
use crate::routing::SlotRoute;

fn request(args: &[&str]) -> String {
    let mut s = format!("*{}\r\n", args.len());
    for a in args {
        s.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s
}

fn login(user: &str, pass: &str) -> Option<Arc<Login>> {
    Some(Arc::new(Login::new(
        Some(user),
        Secret::new(pass.as_bytes(), "test").unwrap(),
    )))
}

fn rig(admin: bool) -> Rig {
    rig_at(admin, SlotRoute::Stable(0))
}

fn rig_at(admin: bool, slot1: SlotRoute) -> Rig {
    let auth = BackendAuth {
        default: GroupLogins {
            client: login("kw", "pw"),
            admin: if admin { login("kwadmin", "apw") } else { None },
        },
        groups: Default::default(),
    };
    Rig::with(
        slot1,
        Settings {
            auth: Arc::new(auth),
            ..Settings::default()
        },
    )
}

#[test]
fn every_connection_logs_in_first_in_the_same_write() {
    let mut r = rig(false);
    let k = key_in(1);
    r.send(&format!("GET {k}"));
    assert_eq!(
        r.written(0),
        format!(
            "{}{}",
            request(&["AUTH", "kw", "pw"]),
            request(&["GET", &k])
        ),
        "AUTH ahead of the first request, no round trip"
    );
    r.reply(0, "+OK\r\n");
    assert_eq!(r.output(), "", "the AUTH reply is keyway's own");
    r.reply(0, "$1\r\nv\r\n");
    assert_eq!(r.output(), "$1\r\nv\r\n");
    r.send(&format!("GET {k}"));
    assert_eq!(r.written(0), request(&["GET", &k]), "once per connection");
}

#[test]
fn a_refused_login_fails_the_connection_with_an_error_naming_group_and_user() {
    let mut r = rig(false);
    let k = key_in(1);
    r.send(&format!("GET {k}"));
    r.written(0);
    r.reply(
        0,
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n-NOAUTH Authentication required.\r\n",
    );
    let out = r.output();
    assert_eq!(
        out,
        "-ERR backend a unavailable: authentication as backend user \"kw\" failed: \
         WRONGPASS invalid username-password pair or user is disabled.\r\n",
        "the client gets an error at once, not the backend's NOAUTH"
    );
    assert!(!out.contains("pw"), "no password in errors");
    assert!(!r.backend_live(0), "the connection is dropped, to back off");
}

#[test]
fn maintenance_commands_run_as_the_admin_login_and_switch_back() {
    let mut r = rig(true);
    r.send("KEYS *");
    let client = request(&["AUTH", "kw", "pw"]);
    let admin = request(&["AUTH", "kwadmin", "apw"]);
    let keys = request(&["KEYS", "*"]);
    for g in 0..3 {
        assert_eq!(
            r.written(g),
            format!("{client}{admin}{keys}{client}"),
            "group {g}: KEYS between the two logins, in one write"
        );
        r.reply(g, "+OK\r\n+OK\r\n*0\r\n+OK\r\n");
    }
    assert_eq!(r.output(), "*0\r\n");
    r.send("DBSIZE");
    assert_eq!(
        r.written(0),
        request(&["DBSIZE"]),
        "a command the client user may run stays as it"
    );
}

#[test]
fn a_key_move_runs_as_the_admin_login_and_authenticates_at_its_target() {
    let mut r = rig_at(true, SlotRoute::Moving { from: 0, to: 1 });
    let k = key_in(1);
    r.send(&format!("SET {k} v"));
    let written = r.written(0);
    let client = request(&["AUTH", "kw", "pw"]);
    let admin = request(&["AUTH", "kwadmin", "apw"]);
    assert!(
        written.starts_with(&format!("{client}{admin}*11\r\n$7\r\nMIGRATE\r\n")),
        "{written:?}"
    );
    assert!(
        written.contains("$5\r\nAUTH2\r\n$7\r\nkwadmin\r\n$3\r\napw\r\n$4\r\nKEYS\r\n"),
        "the target accepts the move: {written:?}"
    );
    assert!(written.ends_with(&client), "{written:?}");
    r.reply(0, "+OK\r\n+OK\r\n+NOKEY\r\n+OK\r\n");
    assert!(r
        .written(1)
        .contains(&format!("SET\r\n${}\r\n{k}", k.len())));
}
