//! A managed cluster's client users, end to end: `keywayctl users set` on
//! keyway-ctld, carried in its snapshots to a real managed keyway over a real
//! redis-server. A client gets `-NOAUTH` and authenticates as Redis answers;
//! a change applies live (a changed password for new `AUTH`s, a removed
//! user's client disconnected); no clear text password is ever in ctld's
//! state file, its logs, the data plane's logs or saved snapshot, or a
//! listing; rules the data plane would refuse are refused by ctld.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::{closed_by_peer, Ctld, DataPlane, Redis, TempDir};
use keyway_testkit::resp;

const PASSWORDS: [&str; 4] = ["defpw-91c", "apppw1-5d2", "apppw2-7e4", "gonepw-0a8"];

fn connect(addr: impl std::net::ToSocketAddrs) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn ask(s: &mut TcpStream, args: &[&str]) -> String {
    String::from_utf8_lossy(&resp::exchange(s, &resp::request(args), 1)).into_owned()
}

/// Sets the cluster's users from a file of `users` text; returns the new
/// version.
fn set_users(ctld: &Ctld, dir: &Path, users: &str) -> u64 {
    let file = dir.join("users.toml");
    std::fs::write(&file, users).unwrap();
    let got = ctld.ctl_json(&["users", "set", "c", "--file", &file.display().to_string()]);
    got["version"].as_u64().unwrap()
}

fn users(default: &str, app: &str, gone: bool) -> String {
    let mut s = format!(
        "[[user]]\nname = \"default\"\nrules = \"on >{default} ~* &* +@all\"\n\
         [[user]]\nname = \"app\"\nrules = \"on >{app} ~app:* +@all -@dangerous\"\n"
    );
    if gone {
        s += &format!(
            "[[user]]\nname = \"gone\"\nrules = \"on >{} ~* +@all\"\n",
            PASSWORDS[3]
        );
    }
    s
}

#[test]
fn users_set_through_keywayctl_apply_live_on_the_data_planes() {
    let dir = TempDir::new("ctl-client-users");
    let m1 = Redis::start();
    let mut ctld = Ctld::start(dir.path(), "10s");
    common::checks::create_cluster(&ctld, "c", &[("g1", m1.addr())], "10s", &[]);
    let mut dp = DataPlane::start(ctld.control, "c", "dp0", &dir.path().join("dp0"));
    dp.wait_health(200, Duration::from_secs(10));
    let addr: SocketAddr = dp.addr;
    // No users from ctld: the config file's (none: Redis's default user).
    assert_eq!(ask(&mut connect(addr), &["PING"]), "+PONG\r\n");

    // Redis's own answers, side by side.
    let reference = Redis::start();
    let mut r = connect(reference.addr());
    assert_eq!(
        ask(&mut r, &["CONFIG", "SET", "requirepass", PASSWORDS[0]]),
        "+OK\r\n"
    );
    let mut r = connect(reference.addr());
    let noauth = ask(&mut r, &["GET", "k"]);
    let wrongpass = ask(&mut r, &["AUTH", "app", "nope"]);
    assert!(noauth.starts_with("-NOAUTH"), "{noauth}");

    let v = set_users(&ctld, dir.path(), &users(PASSWORDS[0], PASSWORDS[1], true));
    ctld.wait_acked("dp0", v);
    let mut app = connect(addr);
    assert_eq!(ask(&mut app, &["GET", "app:k"]), noauth);
    assert_eq!(ask(&mut app, &["AUTH", "app", "nope"]), wrongpass);
    assert_eq!(ask(&mut app, &["AUTH", "app", PASSWORDS[1]]), "+OK\r\n");
    assert_eq!(ask(&mut app, &["SET", "app:k", "1"]), "+OK\r\n");
    assert!(ask(&mut app, &["SET", "other", "1"]).starts_with("-NOPERM"));
    let mut gone = connect(addr);
    assert_eq!(ask(&mut gone, &["AUTH", "gone", PASSWORDS[3]]), "+OK\r\n");
    assert_eq!(ask(&mut gone, &["PING"]), "+PONG\r\n");
    let mut default = connect(addr);
    assert_eq!(ask(&mut default, &["AUTH", PASSWORDS[0]]), "+OK\r\n");

    // app's password changes and `gone` goes: live.
    let v = set_users(&ctld, dir.path(), &users(PASSWORDS[0], PASSWORDS[2], false));
    ctld.wait_acked("dp0", v);
    assert!(
        closed_by_peer(&mut gone, Duration::from_secs(10)),
        "the removed user's client is disconnected"
    );
    assert_eq!(
        ask(&mut app, &["GET", "app:k"]),
        "$1\r\n1\r\n",
        "a changed password keeps its clients"
    );
    let mut s = connect(addr);
    assert_eq!(ask(&mut s, &["AUTH", "app", PASSWORDS[1]]), wrongpass);
    assert_eq!(ask(&mut s, &["AUTH", "app", PASSWORDS[2]]), "+OK\r\n");
    assert_eq!(ask(&mut s, &["AUTH", "gone", PASSWORDS[3]]), wrongpass);

    // Listed with hashes only.
    let (ok, list, err) = ctld.ctl(&["users", "list", "c"]);
    assert!(ok, "{err}");
    assert!(list.contains("app") && list.contains("on #"), "{list}");

    // Rules the data plane would refuse are refused, naming the rule, not
    // quoting a password.
    let file = dir.path().join("bad.toml");
    for (rules, want) in [
        ("on >x +nosuch", "rule '+nosuch'"),
        ("on <hunter2-9f1", "rule '<***'"),
    ] {
        std::fs::write(
            &file,
            format!("[[user]]\nname = \"bad\"\nrules = \"{rules}\"\n"),
        )
        .unwrap();
        let (ok, _, err) = ctld.ctl(&["users", "set", "c", "--file", &file.display().to_string()]);
        assert!(
            !ok && err.contains(want) && !err.contains("hunter2"),
            "{err}"
        );
    }

    // No users from ctld: back to the config file's.
    let v = set_users(&ctld, dir.path(), "");
    ctld.wait_acked("dp0", v);
    assert_eq!(ask(&mut connect(addr), &["PING"]), "+PONG\r\n");

    // No clear text anywhere.
    let mut seen = vec![
        (
            "ctld's state file",
            String::from_utf8_lossy(&std::fs::read(&ctld.store).unwrap()).into_owned(),
        ),
        ("ctld's logs", ctld.proc.logs().join("\n")),
        ("the data plane's logs", dp.proc.logs().join("\n")),
        ("keywayctl users list", list),
    ];
    for f in std::fs::read_dir(dir.path().join("dp0")).unwrap() {
        let p = f.unwrap().path();
        seen.push((
            "the data plane's state",
            String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned(),
        ));
    }
    for (what, text) in seen {
        for p in PASSWORDS.iter().chain(["hunter2"].iter()) {
            assert!(!text.contains(p), "{p} in {what}");
        }
    }
}
