//! `CLIENT` commands driven on workers without sockets (see [`super::rig`]):
//! two cores answering through the mailbox, a list of 10,000 clients, and
//! muted replies.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::rig::{key_in, Rig, Settings};
use super::{ClientStatus, Shared, Worker};
use crate::config::units::Millis;
use crate::routing::SlotRoute;

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn take(w: &mut Worker, c: super::ClientId) -> String {
    let out = String::from_utf8_lossy(w.client_output(c)).into_owned();
    w.client_wrote(c, out.len());
    out
}

fn req(args: &[&str]) -> Vec<u8> {
    let mut b = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        b.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    b
}

/// Two cores of one process, sharing `Shared` and the config.
fn two_cores() -> (Worker, Worker) {
    let rig = Rig::new(SlotRoute::Stable(0));
    let source = Arc::new(ArcSwap::new(rig.worker.ctx.cfg.clone()));
    let shared = Arc::new(Shared::new(2));
    (
        Worker::new(0, source.clone(), shared.clone()),
        Worker::new(1, source, shared),
    )
}

#[test]
fn client_list_and_kill_reach_the_other_core_through_its_mailbox() {
    let (mut w0, mut w1) = two_cores();
    let a = w0.accept(peer(1), peer(6379)).unwrap();
    let b = w1.accept(peer(2), peer(6379)).unwrap();
    w0.client_input(a, &req(&["CLIENT", "LIST"]));
    assert_eq!(take(&mut w0, a), "", "the reply waits for core 1's answer");
    // Core 1 reads its mail when woken (or at its tick), then core 0.
    w1.config_changed();
    w0.config_changed();
    let out = take(&mut w0, a);
    let lines: Vec<&str> = out.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2, "both cores' clients: {out:?}");
    assert!(lines[0].starts_with("id=1 addr=127.0.0.1:1 "), "{out:?}");
    assert!(lines[0].ends_with(" cmd=client|list user=default redir=-1 resp=2 core=0"));
    assert!(lines[1].starts_with("id=2 addr=127.0.0.1:2 "), "{out:?}");
    assert!(lines[1].ends_with(" cmd=NULL user=default redir=-1 resp=2 core=1"));
    // KILL by ID, answered by the core that has the client.
    w0.client_input(a, &req(&["CLIENT", "KILL", "ID", "2"]));
    w1.config_changed();
    assert_eq!(w1.client_status(b), ClientStatus::Abort, "killed on core 1");
    assert_eq!(take(&mut w0, a), "", "core 1's answer is not read yet");
    w0.config_changed();
    assert_eq!(take(&mut w0, a), ":1\r\n");
}

#[test]
fn a_pause_applies_on_every_core_and_its_end_resumes_held_clients_in_order() {
    let (mut w0, mut w1) = two_cores();
    let a = w0.accept(peer(1), peer(6379)).unwrap();
    let b = w1.accept(peer(2), peer(6379)).unwrap();
    w0.client_input(a, &req(&["CLIENT", "PAUSE", "50000", "WRITE"]));
    w1.config_changed();
    w0.config_changed();
    assert_eq!(take(&mut w0, a), "+OK\r\n");
    let mut two = req(&["SET", "k", "v"]);
    two.extend(req(&["PING"]));
    w1.client_input(b, &two);
    assert_eq!(
        w1.client_status(b),
        ClientStatus::WriteOnly,
        "held: not read"
    );
    assert_eq!(take(&mut w1, b), "", "the PING waits behind the SET");
    w0.client_input(a, &req(&["CLIENT", "UNPAUSE"]));
    w1.config_changed();
    assert_eq!(w1.client_status(b), ClientStatus::Active, "read again");
    w0.config_changed();
    assert_eq!(take(&mut w0, a), "+OK\r\n");
}

#[test]
fn client_list_of_ten_thousand_clients_is_whole() {
    let mut settings = Settings::default();
    settings.limits.max_clients = 20_000;
    let mut rig = Rig::with(SlotRoute::Stable(0), settings);
    for i in 0..10_000u16 {
        rig.worker.accept(peer(i), peer(6379)).unwrap();
    }
    rig.send("CLIENT LIST");
    let out = rig.output();
    let (header, body) = out.split_once("\r\n").unwrap();
    assert_eq!(header, format!("${}", body.len() - 2));
    assert_eq!(
        body.lines().filter(|l| l.starts_with("id=")).count(),
        10_001
    );
}

#[test]
fn client_reply_skip_drops_the_next_reply_even_from_a_backend() {
    let mut rig = Rig::new(SlotRoute::Stable(0));
    let k = key_in(1);
    rig.send(&format!("CLIENT REPLY SKIP;GET {k};PING"));
    rig.connect();
    assert!(rig.written(0).contains("GET"), "the GET is still sent");
    rig.reply(0, "$1\r\nv\r\n");
    assert_eq!(rig.output(), "+PONG\r\n");
    rig.send(&format!("CLIENT REPLY OFF;GET {k};CLIENT REPLY ON;PING"));
    rig.connect();
    rig.reply(0, "$1\r\nv\r\n");
    assert_eq!(rig.output(), "+OK\r\n+PONG\r\n");
}

fn request(args: &[&str]) -> String {
    String::from_utf8(req(args)).unwrap()
}

#[test]
fn client_unblock_is_sent_again_until_the_blocked_command_answers() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    let k = key_in(1);
    r.send(&format!("BLPOP {k} 0"));
    r.written_dedicated(0);
    r.reply_dedicated(0, ":5\r\n");
    let admin = r.another_client();
    r.send_as(admin, "CLIENT UNBLOCK 1 ERROR");
    assert_eq!(r.output_of(admin), ":1\r\n", "keyway's client 1 is blocked");
    let unblock = request(&["CLIENT", "UNBLOCK", "5", "ERROR"]);
    assert_eq!(r.written(0), unblock);
    // The BLPOP had not reached Redis yet: nothing unblocked, sent again.
    r.reply(0, ":0\r\n");
    r.tick(200);
    assert_eq!(r.written(0), unblock, "retried while the block lasts");
    r.reply(0, ":1\r\n");
    r.reply_dedicated(0, "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n");
    assert_eq!(
        r.output(),
        "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n",
        "Redis's reply"
    );
    r.tick(400);
    assert_eq!(r.written(0), "", "no retry once the block ended");
    // Not blocked (any more): 0.
    r.send_as(admin, "CLIENT UNBLOCK 1");
    assert_eq!(r.output_of(admin), ":0\r\n");
}

#[test]
fn a_write_pause_holds_what_redis_7_holds() {
    let cases = [
        ("SET k v", true),
        ("PUBLISH c m", true),
        ("EVAL return 0", true),
        ("EVALSHA 1234 0", true),
        ("PFCOUNT h", true),
        ("GET k", false),
        ("EVAL_RO return 0", false),
        ("PING", false),
        ("CLIENT UNPAUSE", false),
        ("NOSUCH", false),
        ("MULTI;SET k v|EXEC", true),
        ("MULTI;GET k|EXEC", false),
    ];
    for (cmd, held) in cases {
        let mut r = Rig::new(SlotRoute::Stable(0));
        let other = r.another_client();
        // Before `|`: sent before the pause.
        let (before, cmd) = cmd.split_once('|').unwrap_or(("", cmd));
        if !before.is_empty() {
            r.send_as(other, before);
        }
        r.send("CLIENT PAUSE 50000 WRITE");
        assert_eq!(r.output(), "+OK\r\n");
        r.send_as(other, cmd);
        let status = r.worker.client_status(other);
        assert_eq!(status == ClientStatus::WriteOnly, held, "{cmd}: {status:?}");
    }
}

#[test]
fn cross_core_client_commands_in_flight_are_bounded() {
    let mut settings = Settings::default();
    settings.limits.client_commands_in_flight = 1;
    let mut r = Rig::with(SlotRoute::Stable(0), settings);
    // One read: the second is dispatched while the first awaits answers.
    r.send("CLIENT KILL ID 99;CLIENT KILL ID 99;CLIENT KILL ID 99");
    assert_eq!(
        r.output(),
        ":0\r\n-ERR keyway: 1 CLIENT LIST/KILL/PAUSE/UNPAUSE/UNBLOCK requests are already in \
         flight on this core (limits.client_commands_in_flight); try again\r\n\
         -ERR keyway: 1 CLIENT LIST/KILL/PAUSE/UNPAUSE/UNBLOCK requests are already in \
         flight on this core (limits.client_commands_in_flight); try again\r\n"
    );
    r.send("CLIENT KILL ID 99");
    assert_eq!(r.output(), ":0\r\n", "room again once answered");
}

#[test]
fn a_client_list_counts_against_the_output_limit() {
    let mut settings = Settings::default();
    settings.limits.output_hard_limit = 4096;
    let mut r = Rig::with(SlotRoute::Stable(0), settings);
    for i in 0..100u16 {
        r.worker.accept(peer(i), peer(6379)).unwrap();
    }
    r.send("CLIENT LIST");
    let out = r.output();
    assert!(
        out.starts_with("-ERR closing the connection: its unread replies exceed"),
        "{out:?}"
    );
    assert_eq!(r.status(), ClientStatus::Close);
}

#[test]
fn a_pause_longer_than_the_limit_is_refused_and_pauses_nothing() {
    let mut settings = Settings::default();
    settings.limits.client_pause_max = Millis(5_000);
    let mut r = Rig::with(SlotRoute::Stable(0), settings);
    let other = r.another_client();
    for cmd in [
        "CLIENT PAUSE 5001",
        "CLIENT PAUSE 9223372036854775807 WRITE",
    ] {
        r.send(cmd);
        assert_eq!(
            r.output(),
            "-ERR keyway: a CLIENT PAUSE longer than 5000 ms is refused \
             (limits.client_pause_max)\r\n",
            "{cmd}"
        );
        r.send_as(other, "SET k v");
        assert_ne!(
            r.worker.client_status(other),
            ClientStatus::WriteOnly,
            "{cmd}"
        );
    }
    r.send("CLIENT PAUSE 5000");
    assert_eq!(r.output(), "+OK\r\n", "the limit itself is allowed");
}
