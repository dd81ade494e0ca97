//! `INFO`, `CONFIG SET` and `SLOWLOG` in the worker, driven without I/O:
//! what each group's connection gets and what the client reads, as raw
//! RESP. Groups a, b, c (slot 0 on c).

use super::rig::{addr, key_in, Rig};
use crate::routing::SlotRoute;

fn request(args: &[&str]) -> String {
    let mut s = format!("*{}\r\n", args.len());
    for a in args {
        s.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s
}

fn bulk(v: &str) -> String {
    format!("${}\r\n{v}\r\n", v.len())
}

#[test]
fn config_set_refused_by_one_group_is_set_back_on_the_others() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.send("CONFIG SET maxmemory 100");
    let get = request(&["CONFIG", "GET", "maxmemory"]);
    let set = request(&["CONFIG", "SET", "maxmemory", "100"]);
    for g in 0..3 {
        assert_eq!(
            r.written(g),
            format!("{get}{set}"),
            "group {g}: the values before, then the SET, on one connection"
        );
    }
    let before = "*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n";
    r.reply(0, before);
    r.reply(0, "+OK\r\n");
    r.reply(1, before);
    r.reply(1, "-ERR nope\r\n");
    assert_eq!(r.output(), "", "nothing until every group has answered");
    r.reply(2, before);
    r.reply(2, "+OK\r\n");
    assert_eq!(
        r.output(),
        "-ERR keyway: CONFIG SET failed on group(s) b (ERR nope); it succeeded on a, c, \
         set back to the previous values there\r\n"
    );
    let undo = request(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(r.written(0), undo, "a is set back");
    assert_eq!(r.written(1), "", "b kept its value");
    assert_eq!(r.written(2), undo, "c is set back");
}

#[test]
fn info_merges_the_groups_keyspace_with_keyways_counters() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    let k = key_in(1);
    r.send(&format!("GET {k}"));
    assert_eq!(r.written(0), request(&["GET", &k]));
    r.reply(0, "$-1\r\n");
    assert_eq!(r.output(), "$-1\r\n");
    r.send("INFO keyspace commandstats");
    for g in 0..3 {
        assert_eq!(
            r.written(g),
            request(&["INFO", "keyspace"]),
            "only the sections the groups know are asked of group {g}"
        );
    }
    for (g, keys) in [(0, 1), (1, 2), (2, 3)] {
        r.reply(
            g,
            &bulk(&format!(
                "# Keyspace\r\ndb0:keys={keys},expires=0,avg_ttl=0\r\n"
            )),
        );
    }
    let out = r.output();
    let (head, tail) = out.split_once("usec=").unwrap();
    assert!(
        head.ends_with("\r\n# Commandstats\r\ncmdstat_get:calls=1,"),
        "{out}"
    );
    let usec = tail.split(',').next().unwrap();
    assert!(usec.parse::<u64>().is_ok(), "the GET is timed: {out}");
    let from_info = tail.split_once("\r\ncmdstat_info").unwrap().1;
    assert_eq!(
        from_info,
        ":calls=1,usec=0,usec_per_call=0.00,rejected_calls=0,failed_calls=0\r\n\
         \r\n# Keyspace\r\ndb0:keys=6,expires=0,avg_ttl=0\r\n\r\n",
        "INFO itself has not finished"
    );
}

#[test]
fn info_of_keyways_own_sections_asks_no_group() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.send("INFO cluster");
    for g in 0..3 {
        assert_eq!(r.written(g), "", "group {g}");
    }
    assert_eq!(r.output(), bulk("# Cluster\r\ncluster_enabled:0\r\n"));
    r.send("INFO nosuch");
    assert_eq!(r.output(), "$0\r\n\r\n", "as Redis: an empty string");
}

#[test]
fn slowlog_len_adds_up_and_get_checks_its_arguments() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.send("SLOWLOG LEN");
    for g in 0..3 {
        assert_eq!(r.written(g), request(&["SLOWLOG", "LEN"]));
    }
    for (g, n) in [(0, 1), (1, 2), (2, 4)] {
        r.reply(g, &format!(":{n}\r\n"));
    }
    assert_eq!(r.output(), ":7\r\n");
    r.send("SLOWLOG GET 0 1");
    assert_eq!(
        r.output(),
        "-ERR unknown subcommand or wrong number of arguments for 'GET'. Try SLOWLOG HELP.\r\n"
    );
}

#[test]
fn info_leaves_a_failed_group_out_and_names_it() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.refusing.insert(addr(1));
    r.send("INFO memory");
    assert_eq!(r.written(0), request(&["INFO", "memory"]));
    assert_eq!(r.written(1), "", "b refuses connections");
    assert_eq!(r.written(2), request(&["INFO", "memory"]));
    for g in [0, 2] {
        r.reply(
            g,
            &bulk("# Memory\r\nused_memory:1024\r\nused_memory_human:1.00K\r\n"),
        );
    }
    let out = r.output();
    assert!(
        out.contains("used_memory:2048\r\nused_memory_human:2.00K\r\n"),
        "{out}"
    );
    assert!(out.contains("\r\nkeyway_groups_missing:b\r\n"), "{out}");
}

#[test]
fn a_resp3_client_gets_a_verbatim_info_and_a_config_map() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.worker.clients[r.client.idx as usize].st.resp3 = true;
    r.send("INFO cluster");
    let text = "# Cluster\r\ncluster_enabled:0\r\n";
    assert_eq!(
        r.output(),
        format!("={}\r\ntxt:{text}\r\n", text.len() + 4),
        "INFO is a verbatim string in RESP3"
    );
    r.send("CONFIG GET maxmemory");
    assert_eq!(r.written(0), "", "slot 0 is on c");
    // A RESP3 client's requests go on a RESP3 connection: HELLO 3 first.
    assert_eq!(
        r.written(2),
        request(&["HELLO", "3"]) + &request(&["CONFIG", "GET", "maxmemory"])
    );
    r.reply(2, "%1\r\n$5\r\nproto\r\n:3\r\n");
    r.reply(2, "%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n");
    assert_eq!(
        r.output(),
        "%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n",
        "a map, from a group's RESP3 reply"
    );
}

#[test]
fn a_request_kept_back_long_is_keyways_own_slow_entry() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    let k = key_in(1);
    r.tick(100);
    r.publish_held(3, SlotRoute::Stable(0), &[0]);
    r.send(&format!("GET {k}"));
    assert_eq!(r.written(0), "", "held");
    r.tick(400);
    r.publish(4, SlotRoute::Stable(0));
    r.tick(600);
    assert_eq!(r.written(0), request(&["GET", &k]), "released");
    r.reply(0, "$-1\r\n");
    assert_eq!(r.output(), "$-1\r\n");
    r.send("SLOWLOG GET");
    for g in 0..3 {
        assert_eq!(r.written(g), request(&["SLOWLOG", "GET"]));
        r.reply(g, "*0\r\n");
    }
    let out = r.output();
    let head = "*1\r\n*6\r\n:3\r\n:";
    assert!(
        out.starts_with(head),
        "one entry, id 0 × 4 sources + 3: {out}"
    );
    let rest = &out[head.len()..];
    let after_time = &rest[rest.find("\r\n").unwrap() + 2..];
    assert_eq!(
        after_time,
        format!(
            ":500000\r\n*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n$15\r\n127.0.0.1:50000\r\n$6\r\nkeyway\r\n",
            k.len()
        ),
        "held from 100 ms to 600 ms at the core's clock"
    );
    r.send("SLOWLOG LEN");
    for g in 0..3 {
        r.written(g);
        r.reply(g, ":0\r\n");
    }
    assert_eq!(r.output(), ":1\r\n");
    r.send("SLOWLOG RESET");
    for g in 0..3 {
        r.written(g);
        r.reply(g, "+OK\r\n");
    }
    assert_eq!(r.output(), "+OK\r\n");
    r.send("SLOWLOG LEN");
    for g in 0..3 {
        r.written(g);
        r.reply(g, ":0\r\n");
    }
    assert_eq!(r.output(), ":0\r\n", "reset keyway's own log too");
}

#[test]
fn config_set_waits_while_a_group_is_on_hold() {
    let mut r = Rig::new(SlotRoute::Stable(0));
    r.publish_held(3, SlotRoute::Stable(0), &[1]);
    r.send("CONFIG SET maxmemory 100");
    for g in 0..3 {
        assert_eq!(r.written(g), "", "held whole: nothing to group {g}");
    }
    r.swap(4, SlotRoute::Stable(0));
    let set = request(&["CONFIG", "SET", "maxmemory", "100"]);
    for g in 0..3 {
        assert!(r.written(g).ends_with(&set), "released to group {g}");
        r.reply(g, "*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n");
        r.reply(g, "+OK\r\n");
    }
    assert_eq!(r.output(), "+OK\r\n");
}
