//! The worker's limits and its defences against bad peers, driven without
//! I/O (see [`super::rig`]): replies nobody asked for, replies too large to
//! forward, merges and slow readers over the output limit, backend write
//! buffers that fill, the buffer budget, and HTTP requests on the RESP port.
//! The same behaviours run against real processes in `tests/hardening.rs`.

use super::rig::{key_in, Rig, Settings};
use super::ClientStatus;
use crate::config::{BackendSettings, Limits};
use crate::routing::SlotRoute;

/// A bulk reply of `n` bytes of `x`.
fn bulk(n: usize) -> Vec<u8> {
    let mut v = format!("${n}\r\n").into_bytes();
    v.resize(v.len() + n, b'x');
    v.extend_from_slice(b"\r\n");
    v
}

/// A rig (slot 1 on group a) with these client limits.
fn with_limits(limits: Limits) -> Rig {
    Rig::with(
        SlotRoute::Stable(0),
        Settings {
            limits,
            ..Settings::default()
        },
    )
}

/// A rig (slot 1 on group a) with these backend settings.
fn with_backend(backend: BackendSettings) -> Rig {
    Rig::with(
        SlotRoute::Stable(0),
        Settings {
            backend,
            ..Settings::default()
        },
    )
}

#[test]
fn a_group_whose_master_does_not_resolve_errors_alone() {
    let mut r = Rig::with(
        SlotRoute::Stable(0),
        Settings {
            unresolved: Some(0),
            ..Settings::default()
        },
    );
    let (a, c) = (key_in(1), key_in(2));
    r.send(&format!("GET {a};GET {c};MGET {a} {c}"));
    assert!(r.written(2).contains("GET"), "the other groups serve");
    assert_eq!(r.written(0), "", "nothing is sent to a");
    r.reply(2, "$1\r\nc\r\n*1\r\n$1\r\nc\r\n");
    let unavailable =
        "-ERR backend a unavailable: cannot resolve \"typo.invalid:6379\": not found\r\n";
    assert_eq!(r.output(), format!("{unavailable}$1\r\nc\r\n{unavailable}"));
    // Moves towards it fail too, with the same reason.
    let mut r = Rig::with(
        SlotRoute::Moving { from: 2, to: 0 },
        Settings {
            unresolved: Some(0),
            ..Settings::default()
        },
    );
    r.send(&format!("GET {a}"));
    assert_eq!(r.written(2), "", "no MIGRATE to an unknown address");
    let out = r.output();
    assert!(
        out.starts_with("-TRYAGAIN keyway could not move this command's keys: ERR backend a unavailable: cannot resolve"),
        "{out}"
    );
}

#[test]
fn a_reply_before_its_request_was_sent_fails_the_connection() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.send("GET x");
    r.written(2);
    r.send("GET y");
    // GET y is queued but not handed to the transport: a second reply now
    // answers nothing, and would have been taken for GET y's.
    r.reply(2, "$1\r\n1\r\n+EXTRA\r\n");
    assert_eq!(
        r.output(),
        "$1\r\n1\r\n-ERR backend c unavailable: the backend sent a reply no request asked for\r\n"
    );
    assert!(!r.backend_live(2));
    assert_eq!(r.worker.stats().backend_unsolicited, 1);
}

#[test]
fn a_reply_with_nothing_in_flight_fails_the_connection() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.send("GET x");
    r.written(2);
    r.reply(2, "$1\r\n1\r\n");
    assert_eq!(r.output(), "$1\r\n1\r\n");
    r.reply(2, ":5\r\n");
    assert!(!r.backend_live(2));
}

#[test]
fn an_oversized_reply_is_dropped_as_it_arrives_and_answered_with_an_error() {
    let backend = BackendSettings {
        max_reply_bytes: 1 << 20,
        ..BackendSettings::default()
    };
    let mut r = with_backend(backend);
    r.send("GET big;GET small");
    r.written(2);
    let mut replies = bulk(3 << 20);
    replies.extend_from_slice(b"$1\r\ns\r\n");
    for chunk in replies.chunks(16 << 10) {
        r.reply_bytes(2, chunk);
        let conn = r.worker.ctx.backends.conns.iter().next().unwrap().1;
        assert!(
            conn.inbuf.len() <= 64 << 10,
            "the reply is not buffered: {} bytes kept",
            conn.inbuf.len()
        );
    }
    assert_eq!(
        r.output(),
        format!(
            "-ERR the reply ({} bytes) is larger than keyway's backend.max_reply_bytes (1048576 bytes); it was not sent\r\n$1\r\ns\r\n",
            replies.len() - 7
        )
    );
    assert!(r.backend_live(2), "the connection goes on");
    assert_eq!(r.worker.stats().replies_too_large, 1);
}

#[test]
fn a_merge_over_the_hard_limit_answers_an_error_in_its_place() {
    let limits = Limits {
        output_hard_limit: 2 << 20,
        ..Limits::default()
    };
    let mut r = with_limits(limits);
    let (a, c) = (key_in(1), key_in(2));
    r.send(&format!("MGET {a} {c};PING"));
    r.written(0);
    r.written(2);
    let mut part = b"*1\r\n".to_vec();
    part.extend(bulk(1_200_000));
    r.reply_bytes(0, &part);
    r.reply_bytes(2, &part);
    let out = r.output();
    assert!(
        out.starts_with("-ERR the reply (")
            && out.contains("limits.output_hard_limit (2097152 bytes)"),
        "{out:?}"
    );
    assert!(out.ends_with("+PONG\r\n"), "{out:?}");
    assert_eq!(r.status(), ClientStatus::Active, "the client stays");
    assert_eq!(r.worker.clients[0].st.queue.held_bytes(), 0);
}

#[test]
fn merge_parts_count_against_the_output_limit() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    let (a, c) = (key_in(1), key_in(2));
    r.send(&format!("MGET {a} {c}"));
    r.written(0);
    r.written(2);
    r.reply(0, "*1\r\n$3\r\nabc\r\n");
    assert_eq!(
        r.worker.clients[0].st.pending_output(),
        13,
        "the part waiting for the other is counted"
    );
}

#[test]
fn a_slow_reader_over_the_hard_limit_gets_an_error_then_is_closed() {
    let limits = Limits {
        output_hard_limit: 2 << 20,
        ..Limits::default()
    };
    let mut r = with_limits(limits);
    r.send("GET x;GET x;GET x;GET x");
    r.written(2);
    for _ in 0..4 {
        r.reply_bytes(2, &bulk(900_000));
    }
    assert_eq!(
        r.output(),
        "-ERR closing the connection: its unread replies exceed limits.output_hard_limit (2097152 bytes)\r\n",
        "the unsent replies are dropped, the reason is sent"
    );
    assert_eq!(r.status(), ClientStatus::Close);
    assert_eq!(r.worker.stats().clients_output_limit, 1);
}

#[test]
fn a_closing_client_that_does_not_read_is_aborted() {
    let limits = Limits {
        output_hard_limit: 2 << 20,
        ..Limits::default()
    };
    let mut r = with_limits(limits);
    r.send("GET x;GET x;GET x");
    r.written(2);
    for _ in 0..3 {
        r.reply_bytes(2, &bulk(900_000));
    }
    assert_eq!(r.status(), ClientStatus::WriteOnly);
    r.tick(1_000);
    assert_eq!(r.status(), ClientStatus::WriteOnly);
    r.tick(10_000);
    assert_eq!(r.status(), ClientStatus::Abort);
}

#[test]
fn a_full_backend_write_buffer_pauses_its_clients_until_it_drains() {
    let backend = BackendSettings {
        write_buffer_limit: 64 << 10,
        ..BackendSettings::default()
    };
    let mut r = with_backend(backend);
    let value = "v".repeat(20 << 10);
    // Keys on group c (slot 2), so every SET goes to one connection.
    let tag = key_in(2);
    let sets: Vec<String> = (0..10)
        .map(|i| format!("SET {{{tag}}}{i} {value}"))
        .collect();
    r.send(&sets.join(";"));
    let first = r.waiting(2);
    assert!(
        first > 64 << 10 && first < 100 << 10,
        "stops once over the limit: {first} bytes waiting"
    );
    assert_eq!(r.status(), ClientStatus::WriteOnly, "not read meanwhile");
    let mut sent = r.written(2).matches("SET").count();
    while sent < 10 {
        let more = r.written(2).matches("SET").count();
        assert!(more > 0, "each drain lets more through ({sent} so far)");
        sent += more;
    }
    assert_eq!(r.status(), ClientStatus::Active);
    assert!(r.worker.stats().clients_backpressured >= 2);
}

#[test]
fn http_requests_close_the_connection_without_running_anything() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.send_raw(b"POST / HTTP/1.1\r\nHost: keyway\r\n\r\nSET pwned x\r\n");
    assert_eq!(r.status(), ClientStatus::Abort);
    assert_eq!(r.output(), "", "no reply, as Redis");
    assert_eq!(r.written(2), "", "nothing reached a backend");
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.send_raw(b"GET / HTTP/1.1\r\nhost: keyway\r\n\r\n");
    assert_eq!(r.status(), ClientStatus::Abort);
    assert_eq!(r.worker.stats().clients_cross_protocol, 1);
}

#[test]
fn over_the_buffer_budget_requests_get_oom_until_it_drains() {
    let limits = Limits {
        max_memory: 1 << 20,
        ..Limits::default()
    };
    let mut r = with_limits(limits);
    let value = "v".repeat(300 << 10);
    let tag = key_in(2);
    for i in 0..4 {
        r.send(&format!("SET {{{tag}}}{i} {value}"));
    }
    // The fourth SET's own bytes took the buffers over the budget.
    r.send("GET k;PING");
    assert_eq!(r.written(2).matches("SET").count(), 3);
    r.reply(2, "+OK\r\n+OK\r\n+OK\r\n");
    let oom = "-OOM command not allowed when keyway's client and backend buffers exceed limits.max_memory (1048576 bytes)\r\n";
    assert_eq!(
        r.output(),
        format!("+OK\r\n+OK\r\n+OK\r\n{oom}{oom}+PONG\r\n"),
        "routed requests are refused, local commands still run"
    );
    r.tick(100);
    r.send("GET k");
    assert!(r.written(2).contains("GET"), "under budget again");
    assert_eq!(r.worker.stats().requests_oom, 2);
}

#[test]
fn over_the_buffer_budget_the_largest_clients_are_closed() {
    let limits = Limits {
        max_memory: 1 << 20,
        output_hard_limit: 0,
        ..Limits::default()
    };
    let mut r = with_limits(limits);
    let small = r.another_client();
    r.send_as(small, "GET s");
    r.send("GET x;GET x");
    r.written(2);
    r.reply(2, "$1\r\ns\r\n");
    for _ in 0..2 {
        r.reply_bytes(2, &bulk(700_000));
    }
    r.tick(100);
    assert_eq!(
        r.output(),
        "-ERR closing the connection: keyway's buffers exceed limits.max_memory (1048576 bytes) and this connection held the most (1400022 bytes)\r\n"
    );
    assert_eq!(r.status(), ClientStatus::Close);
    assert_eq!(r.output_of(small), "$1\r\ns\r\n", "the small client stays");
    assert_eq!(r.worker.stats().clients_evicted_memory, 1);
}

// Found by review: each of these failed before its fix.

#[test]
fn replies_from_another_group_do_not_resume_a_client_blocked_on_a_full_buffer() {
    let backend = BackendSettings {
        write_buffer_limit: 64 << 10,
        ..BackendSettings::default()
    };
    let mut r = with_backend(backend);
    let (a, c) = (key_in(1), key_in(2));
    let value = "v".repeat(20 << 10);
    let reqs: Vec<String> = (0..60)
        .map(|i| format!("GET {a};SET {{{c}}}{i} {value}"))
        .collect();
    r.send(&reqs.join(";"));
    assert_eq!(r.status(), ClientStatus::WriteOnly);
    for _ in 0..40 {
        let n = r.written(0).matches("GET").count();
        for _ in 0..n {
            r.reply(0, "$1\r\nv\r\n");
        }
    }
    let waiting = r.waiting(2);
    assert!(
        waiting <= (64 << 10) + (21 << 10),
        "the write buffer to c grew to {waiting} bytes"
    );
    let waiters: usize = r
        .worker
        .ctx
        .backends
        .conns
        .iter()
        .map(|(_, b)| b.waiters.len())
        .sum();
    assert_eq!(waiters, 1, "listed once");
    assert_eq!(r.status(), ClientStatus::WriteOnly);
}

#[test]
fn output_taken_by_the_transport_is_forgotten_when_its_connection_fails() {
    let limits = Limits {
        max_memory: 2 << 20,
        ..Limits::default()
    };
    let mut r = with_limits(limits);
    let c = key_in(2);
    r.send(&format!("SET {c} {}", "v".repeat(1_500_000)));
    r.waiting(2);
    let (idx, conn) = r
        .worker
        .ctx
        .backends
        .conns
        .iter()
        .max_by_key(|(_, b)| b.out.len())
        .unwrap();
    let id = super::BackendId {
        idx: idx as u32,
        gen: conn.gen,
    };
    let taken = r.worker.backend_take_output(id, Vec::new());
    assert!(taken.len() > 1_500_000);
    // As the uring driver does on a failed send.
    r.worker.backend_failed(id, "connection reset");
    r.worker.backend_sent(id);
    assert!(r.output().starts_with("-ERR backend c unavailable"));
    r.tick(100);
    let held = r.worker.ctx.backends.buffered_bytes();
    assert_eq!(held, 0);
    r.send(&format!("SET {} {}", key_in(1), "w".repeat(1 << 20)));
    assert!(r.written(0).contains("SET"), "not refused with -OOM");
}

#[test]
fn a_client_already_closing_counts_as_freed() {
    let limits = Limits {
        max_memory: 2 << 20,
        output_hard_limit: 0,
        ..Limits::default()
    };
    let mut r = with_limits(limits);
    let a = r.client;
    let b = r.another_client();
    r.send("GET x;GET x");
    r.send_as(b, "GET y");
    r.written(2);
    r.reply_bytes(2, &bulk(700_000));
    r.reply_bytes(2, &bulk(700_000));
    r.reply_bytes(2, &bulk(1_100_000));
    // The transport took a's output, and a slow reader does not finish it.
    let taken = r.worker.client_take_output(a, Vec::new());
    assert!(taken.len() > 1_400_000);
    r.tick(100);
    assert_eq!(r.worker.stats().clients_evicted_memory, 1);
    r.tick(200);
    assert_eq!(
        r.worker.stats().clients_evicted_memory,
        1,
        "closing a was enough: b stays"
    );
    assert_eq!(r.worker.client_status(b), ClientStatus::Active);
}

#[test]
fn a_huge_status_line_is_dropped_as_it_arrives() {
    let backend = BackendSettings {
        max_reply_bytes: 1 << 20,
        ..BackendSettings::default()
    };
    let mut r = with_backend(backend);
    r.send("EVAL x 1 k;GET k");
    r.written(2);
    let mut most = 0;
    r.reply(2, "+");
    for _ in 0..(3 << 20) / (16 << 10) {
        r.reply_bytes(2, &[b'x'; 16 << 10]);
        let kept = r
            .worker
            .ctx
            .backends
            .conns
            .iter()
            .map(|(_, b)| b.inbuf.len())
            .max()
            .unwrap_or(0);
        most = most.max(kept);
    }
    r.reply(2, "\r\n$1\r\nv\r\n");
    // A line says nothing of its length: up to the limit is kept before
    // the reply is known to be over it, never more (a bulk is dropped from
    // its header on).
    assert!(
        most <= (1 << 20) + (16 << 10),
        "kept {most} bytes of an oversized reply"
    );
    let out = r.output();
    assert!(
        out.starts_with(
            "-ERR the reply (3145731 bytes) is larger than keyway's backend.max_reply_bytes"
        ) && out.ends_with("$1\r\nv\r\n"),
        "{out:?}"
    );
}

#[test]
fn what_has_been_written_leaves_the_budget_between_ticks() {
    let limits = Limits {
        max_memory: 4 << 20,
        ..Limits::default()
    };
    let mut r = with_limits(limits);
    let c = key_in(2);
    let value = "v".repeat(900 << 10);
    for i in 0..12 {
        r.send(&format!("SET {{{c}}}{i} {value}"));
        assert!(r.written(2).contains("SET"), "SET {i} was refused");
        r.reply(2, "+OK\r\n");
        assert_eq!(r.output(), "+OK\r\n");
    }
}

#[test]
fn what_the_transport_holds_for_a_client_counts_in_the_budget() {
    // The glommio transport's TLS records, sealed and not yet written:
    // their plaintext has left the client's output buffer.
    let limits = Limits {
        max_memory: 1 << 20,
        output_hard_limit: 0,
        ..Limits::default()
    };
    let mut r = with_limits(limits);
    let small = r.another_client();
    r.send("GET k");
    r.written(2);
    r.worker.client_transport_bytes(r.client, 1_200_000);
    r.send_as(small, "GET s;PING");
    assert_eq!(
        r.output_of(small),
        "-OOM command not allowed when keyway's client and backend buffers exceed limits.max_memory (1048576 bytes)\r\n+PONG\r\n",
        "charged at once, between ticks"
    );
    r.tick(100);
    assert_eq!(
        r.output(),
        "-ERR closing the connection: keyway's buffers exceed limits.max_memory (1048576 bytes) and this connection held the most (1200000 bytes)\r\n",
        "counted in the scan as the client's"
    );
    assert_eq!(r.worker.stats().clients_evicted_memory, 1);
    // The closing client's records are written: released.
    r.worker.client_transport_bytes(r.client, 0);
    r.tick(100);
    r.send_as(small, "GET s");
    assert!(r.written(2).contains("GET"), "released: under budget again");
}
