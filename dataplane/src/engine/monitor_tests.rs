//! `MONITOR` in the worker, driven without I/O (see `rig.rs`): the test
//! plays the transport and the three Redis servers (groups a, b, c) and
//! checks the raw RESP bytes each side gets.

use super::rig::{Rig, Settings};
use super::ClientStatus;
use crate::config::Limits;
use crate::routing::SlotRoute;

const CONN_ID_THEN_MONITOR: &str = "*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n\
    *4\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n$4\r\nTYPE\r\n$6\r\nnormal\r\n\
    *1\r\n$7\r\nMONITOR\r\n";

/// A `CLIENT LIST` reply naming one keyway-ctld connection, from 127.0.0.1:4009.
fn client_list() -> String {
    let body = "id=3 addr=127.0.0.1:4008 laddr=127.0.0.1:6379 fd=8 name= age=1\n\
                id=4 addr=127.0.0.1:4009 laddr=127.0.0.1:6379 fd=9 name=keyway-ctld age=1\n";
    format!("${}\r\n{body}\r\n", body.len())
}

fn line(addr: &str, cmd: &str) -> String {
    format!("+1796235553.817021 [0 {addr}] {cmd}\r\n")
}

/// A client in MONITOR mode, every group confirmed.
fn monitoring(settings: Settings) -> Rig {
    let mut r = Rig::with(SlotRoute::Stable(0), settings);
    r.send("MONITOR");
    for i in 0..3 {
        assert_eq!(
            r.written_dedicated(i),
            CONN_ID_THEN_MONITOR,
            "connection {i}: keyway's CLIENT ID, then MONITOR"
        );
    }
    assert_eq!(r.dedicated.len(), 3, "one MONITOR connection per group");
    r.reply_dedicated(0, &format!(":7\r\n{}+OK\r\n", client_list()));
    r.reply_dedicated(1, ":8\r\n$0\r\n\r\n+OK\r\n");
    assert_eq!(r.output(), "", "+OK waits for every group's");
    r.reply_dedicated(2, ":9\r\n$0\r\n\r\n+OK\r\n");
    assert_eq!(r.output(), "+OK\r\n");
    r
}

#[test]
fn lines_of_every_group_reach_the_client_without_keyways_own() {
    let mut r = monitoring(Settings::default());
    let set = line("127.0.0.1:4000", "\"SET\" \"k\" \"v\"");
    let get = line("127.0.0.1:4001", "\"GET\" \"k\"");
    r.reply_dedicated(0, &set);
    r.reply_dedicated(1, &line("127.0.0.1:4002", "\"PING\""));
    r.reply_dedicated(1, &line("127.0.0.1:4002", "\"CLIENT\" \"ID\""));
    // A line may arrive in pieces.
    let (head, tail) = get.split_at(10);
    r.reply_dedicated(2, head);
    assert_eq!(
        r.output(),
        set,
        "a's line; b's probe and CLIENT ID left out"
    );
    r.reply_dedicated(2, tail);
    assert_eq!(r.output(), get);
}

#[test]
fn a_monitor_may_send_what_redis_lets_it_and_reset_ends_the_mode() {
    let mut r = monitoring(Settings::default());
    r.send("GET k;MONITOR;PING");
    assert_eq!(
        r.output(),
        "-ERR Replica can't interact with the keyspace\r\n+PONG\r\n",
        "GET refused as Redis refuses it, MONITOR again ignored, PING answered"
    );
    r.send("RESET");
    assert_eq!(r.output(), "+RESET\r\n");
    r.tick(100);
    for i in 0..3 {
        assert!(
            !r.worker.backend_live(r.dedicated[i].1),
            "MONITOR connection {i} closed, not given back"
        );
    }
    r.reply_dedicated(0, &line("127.0.0.1:4000", "\"SET\" \"k\" \"v\""));
    assert_eq!(r.output(), "", "nothing after RESET");
}

#[test]
fn a_lost_group_ends_the_stream_with_the_reason() {
    let mut r = monitoring(Settings::default());
    let id = r.dedicated[1].1;
    r.worker
        .backend_failed(id, "the backend closed the connection");
    let out = r.output();
    assert!(
        out.starts_with("-ERR keyway: MONITOR of group 'b' failed (the backend closed"),
        "{out}"
    );
    assert_eq!(r.status(), ClientStatus::Close);
    r.tick(100);
    assert!(
        !r.worker.backend_live(r.dedicated[0].1),
        "the others closed too"
    );
}

#[test]
fn a_refused_monitor_is_answered_with_the_error() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.send("MONITOR");
    for i in 0..3 {
        r.written_dedicated(i);
    }
    r.reply_dedicated(0, ":7\r\n$0\r\n\r\n+OK\r\n");
    r.reply_dedicated(
        1,
        ":8\r\n-NOPERM this user has no permissions to run the 'client|list' command\r\n\
         -NOPERM this user has no permissions to run the 'monitor' command\r\n",
    );
    let out = r.output();
    assert!(
        out.starts_with("-ERR keyway: MONITOR of group 'b' failed (MONITOR answered NOPERM"),
        "{out}"
    );
    assert_eq!(r.status(), ClientStatus::Active, "the client goes on");
    r.send("GET k");
    assert!(
        r.output().is_empty(),
        "not in MONITOR mode: GET is forwarded"
    );
}

#[test]
fn a_monitor_that_does_not_read_is_closed_at_the_output_limit() {
    let settings = Settings {
        limits: Limits {
            output_hard_limit: 4096,
            ..Limits::default()
        },
        ..Settings::default()
    };
    let mut r = monitoring(settings);
    let set = line(
        "127.0.0.1:4000",
        &format!("\"SET\" \"k\" \"{}\"", "v".repeat(500)),
    );
    for _ in 0..20 {
        r.reply_dedicated(0, &set);
    }
    assert!(
        matches!(
            r.status(),
            ClientStatus::Abort | ClientStatus::Close | ClientStatus::WriteOnly
        ),
        "closed at limits.output_hard_limit: {:?}",
        r.status()
    );
    r.tick(100);
    assert!(
        !r.worker.backend_live(r.dedicated[0].1),
        "its MONITOR connections closed"
    );
}

#[test]
fn quit_ends_the_stream_and_closes() {
    let mut r = monitoring(Settings::default());
    r.send("QUIT");
    r.reply_dedicated(0, &line("127.0.0.1:4000", "\"SET\" \"k\" \"v\""));
    assert_eq!(r.output(), "+OK\r\n", "QUIT's +OK, then no line");
    assert_eq!(r.status(), ClientStatus::Close);
}

#[test]
fn keyway_ctlds_connections_are_left_out() {
    let mut r = monitoring(Settings::default());
    let set = line("127.0.0.1:4008", "\"SET\" \"k\" \"v\"");
    // Open before MONITOR: named in CLIENT LIST.
    r.reply_dedicated(
        0,
        &line("127.0.0.1:4009", "\"SCAN\" \"0\" \"COUNT\" \"100\""),
    );
    // Opened after: its CLIENT SETNAME line names it.
    r.reply_dedicated(
        0,
        &line("127.0.0.1:4010", "\"CLIENT\" \"SETNAME\" \"keyway-ctld\""),
    );
    r.reply_dedicated(0, &line("127.0.0.1:4010", "\"DEL\" \"k\""));
    r.reply_dedicated(0, &set);
    // The same address on group b is another connection.
    let other = line("127.0.0.1:4010", "\"DEL\" \"k\"");
    r.reply_dedicated(1, &other);
    assert_eq!(r.output(), format!("{set}{other}"));
}

#[test]
fn a_monitors_keyspace_command_inside_multi_aborts_exec() {
    let mut r = monitoring(Settings::default());
    r.send("MULTI;SET k v;EXEC");
    assert_eq!(
        r.output(),
        "+OK\r\n-ERR Replica can't interact with the keyspace\r\n\
         -EXECABORT Transaction discarded because of previous errors.\r\n"
    );
}
