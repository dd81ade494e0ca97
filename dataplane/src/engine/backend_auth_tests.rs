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
            logins: Arc::new(auth),
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
    // RESET before the client login: were that login refused, what follows
    // would run as Redis's default user, never as the admin.
    let reset = request(&["RESET"]);
    for g in 0..3 {
        assert_eq!(
            r.written(g),
            format!("{client}{admin}{keys}{reset}{client}"),
            "group {g}: KEYS between the two logins, in one write"
        );
        r.reply(g, "+OK\r\n+OK\r\n*0\r\n+RESET\r\n+OK\r\n");
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

#[test]
fn resp3_dedicated_and_subscriber_connections_log_in_first_too() {
    let mut r = rig(false);
    let auth = request(&["AUTH", "kw", "pw"]);
    let k = key_in(1);
    // A blocking command's dedicated connection: AUTH, then CLIENT ID.
    r.send(&format!("BLPOP {k} 0"));
    let dedicated = r.written_dedicated(0);
    assert!(
        dedicated.starts_with(&format!("{auth}{}", request(&["CLIENT", "ID"]))),
        "{dedicated:?}"
    );
    // A subscriber connection: AUTH, then the subscription; keyway takes
    // the AUTH reply, the client gets the confirmation.
    let other = r.another_client();
    r.send_as(other, &format!("SUBSCRIBE {k}"));
    assert_eq!(
        r.sub_written(0),
        format!("{auth}{}", request(&["SUBSCRIBE", &k]))
    );
    let confirm = format!("*3\r\n$9\r\nsubscribe\r\n${}\r\n{k}\r\n:1\r\n", k.len());
    r.sub_push(0, &format!("+OK\r\n{confirm}"));
    assert_eq!(r.output_of(other), confirm);
    // A RESP3 client's connection: AUTH, then HELLO 3.
    let third = r.another_client();
    r.send_as(third, "HELLO 3");
    r.output_of(third);
    r.send_as(third, &format!("GET {k}"));
    assert_eq!(
        r.written(0),
        format!(
            "{auth}{}{}",
            request(&["HELLO", "3"]),
            request(&["GET", &k])
        )
    );
}

#[test]
fn a_subscriber_connection_whose_login_is_refused_fails() {
    let mut r = rig(false);
    let k = key_in(1);
    r.send(&format!("SUBSCRIBE {k}"));
    r.sub_written(0);
    assert!(r.sub_live(0));
    r.sub_push(
        0,
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    assert!(!r.sub_live(0), "the subscriber connection is dropped");
}
