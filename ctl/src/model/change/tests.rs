//! `Cluster::dispatch`, change by change, on a cluster of 16 slots: groups
//! `a` (slots 0-7) and `b` (8-15), and `c` (no slots).

use super::*;
use crate::model::cluster::tests::{create, g, none};
use crate::model::ErrorKind;

fn cluster() -> Cluster {
    let mut c = create("c", 16, vec![g("a", 1), g("b", 2)], 30_000).unwrap();
    c.dispatch(&Change::Grow {
        group: g("c", 3),
        resolved: none(),
    })
    .unwrap();
    c
}

fn migrate(slots: &str, to: &str, paused: bool) -> Change {
    Change::Migrate {
        slots: slots.into(),
        to: to.into(),
        settings: MoveSettings::default(),
        paused,
        now_ms: 1000,
    }
}

#[test]
fn grow_and_shrink_add_and_remove_a_group() {
    let mut c = cluster();
    assert_eq!(c.groups.len(), 3);
    assert_eq!(c.group_index("c").unwrap(), 2);
    c.dispatch(&Change::Shrink { group: "c".into() }).unwrap();
    assert_eq!(c.groups.len(), 2);
    let err = c
        .dispatch(&Change::Shrink { group: "a".into() })
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Forbidden,
        "a group with slots stays: {err}"
    );
}

#[test]
fn migrate_returns_the_new_ids_and_actions_apply_to_them() {
    let mut c = cluster();
    let applied = c.dispatch(&migrate("6-9", "c", false)).unwrap();
    assert_eq!(applied.ids, vec![1, 2], "one migration per source group");
    c.dispatch(&Change::Pause { id: 1 }).unwrap();
    assert!(c.migration(1).unwrap().paused);
    c.dispatch(&Change::Resume { id: 1 }).unwrap();
    assert!(!c.migration(1).unwrap().paused);
    c.dispatch(&Change::Cancel { id: 2, now_ms: 5 }).unwrap();
    assert_eq!(c.migration(2).unwrap().state, MigrationState::Cancelled);
    let err = c.dispatch(&Change::Pause { id: 9 }).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    let err = c.dispatch(&migrate("99", "c", false)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid, "slot text is parsed: {err}");
}

#[test]
fn advance_moves_migrations_into_the_version_the_change_creates() {
    let mut c = cluster();
    c.dispatch(&migrate("0-1", "c", true)).unwrap();
    let v = c.version;
    c.dispatch(&Change::Advance {
        ids: vec![1],
        moving: false,
        now_ms: 7,
    })
    .unwrap();
    assert_eq!(
        c.migration(1).unwrap().state,
        MigrationState::Blocking { version: v + 1 }
    );
    c.dispatch(&Change::Advance {
        ids: vec![1],
        moving: true,
        now_ms: 8,
    })
    .unwrap();
    let m = c.migration(1).unwrap();
    assert_eq!(m.state, MigrationState::Moving { version: v + 1 });
    assert_eq!(m.progress.started_ms, Some(8));
    let stale = Change::FinishMigration {
        id: 1,
        version: v + 5,
        now_ms: 9,
    };
    let err = c.dispatch(&stale).unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Conflict,
        "another version's sweep: {err}"
    );
    c.dispatch(&Change::FinishMigration {
        id: 1,
        version: v + 1,
        now_ms: 9,
    })
    .unwrap();
    assert_eq!(c.migration(1).unwrap().state, MigrationState::Done);
    assert_eq!(c.owners()[0], Some(2), "slot 0 is c's");
}

#[test]
fn assign_and_balance() {
    let mut c = create("c", 16, vec![g("a", 1)], 30_000).unwrap();
    c.dispatch(&Change::Grow {
        group: g("b", 2),
        resolved: none(),
    })
    .unwrap();
    let rebalance = Change::Balance {
        drain: None,
        settings: MoveSettings::default(),
        paused: false,
        now_ms: 0,
    };
    let ids = c.dispatch(&rebalance).unwrap().ids;
    assert!(!ids.is_empty(), "b gets slots from a");
    let err = c
        .dispatch(&Change::Assign {
            slots: "0".into(),
            group: "b".into(),
        })
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict, "slot 0 is owned: {err}");
}

#[test]
fn apply_refuses_a_stale_snapshot_unless_forced() {
    let mut c = cluster();
    let mut desired = c.clone();
    desired.version = c.version.saturating_sub(1);
    desired.lease_millis = 10_000;
    let stale = Change::Apply {
        desired: Box::new(desired.clone()),
        resolved: none(),
        force: false,
    };
    let err = c.dispatch(&stale).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(
        err.message
            .contains("changed since this snapshot was exported"),
        "{err}"
    );
    c.dispatch(&Change::Apply {
        desired: Box::new(desired),
        resolved: none(),
        force: true,
    })
    .unwrap();
    assert_eq!(c.lease_millis, 10_000);
}

#[test]
fn settings_change_only_what_is_given_and_are_checked() {
    let mut c = cluster();
    let before = c.ha;
    c.dispatch(&Change::Settings {
        check_interval_ms: None,
        down_after_ms: Some(before.down_after_ms + 1000),
        auto_failover: Some(!before.auto_failover),
        max_lag_bytes: None,
        lease_ms: Some(12_000),
    })
    .unwrap();
    assert_eq!(c.ha.check_interval_ms, before.check_interval_ms);
    assert_eq!(c.ha.down_after_ms, before.down_after_ms + 1000);
    assert_eq!(c.ha.auto_failover, !before.auto_failover);
    assert_eq!(c.lease_millis, 12_000);
    let err = c
        .dispatch(&Change::Settings {
            check_interval_ms: Some(0),
            down_after_ms: None,
            auto_failover: None,
            max_lag_bytes: None,
            lease_ms: None,
        })
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid, "{err}");
}

#[test]
fn edit_group_applies_every_edit() {
    let mut c = cluster();
    let edit = GroupChanges {
        zone: Some("z1".into()),
        add_replicas: vec![Replica {
            address: "127.0.0.1:9".into(),
            zone: String::new(),
        }],
        replica_zones: [("127.0.0.1:9".to_string(), "z2".to_string())].into(),
        read_from: Some(ReadFrom::Replica),
        ..GroupChanges::default()
    };
    c.dispatch(&Change::EditGroup {
        group: "a".into(),
        edit,
        resolved: none(),
    })
    .unwrap();
    let a = &c.groups[0];
    assert_eq!(a.zone, "z1");
    assert_eq!(a.replicas.len(), 1);
    assert_eq!(a.replicas[0].zone, "z2", "zones apply after additions");
    assert_eq!(a.read_from, ReadFrom::Replica);
}

#[test]
fn edit_group_turns_tls_on_and_off() {
    let mut c = cluster();
    let edit = |tls: Option<bool>, name: Option<&str>| Change::EditGroup {
        group: "a".into(),
        edit: GroupChanges {
            tls,
            tls_server_name: name.map(str::to_string),
            ..GroupChanges::default()
        },
        resolved: none(),
    };
    let err = c
        .clone()
        .dispatch(&edit(None, Some("redis.internal")))
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Invalid,
        "a server name needs tls: {err}"
    );
    c.dispatch(&edit(Some(true), Some("redis.internal")))
        .unwrap();
    let a = &c.groups[0];
    assert!(a.tls);
    assert_eq!(a.tls_server_name.as_deref(), Some("redis.internal"));
    let snap = c.snapshot();
    assert!(
        snap.groups[0].tls && !snap.groups[1].tls,
        "carried into the snapshot"
    );
    assert_eq!(snap.groups[0].tls_server_name, "redis.internal");
    snap.validate().unwrap();
    let err = c
        .clone()
        .dispatch(&edit(None, Some("bad name")))
        .unwrap_err();
    assert!(err.to_string().contains("tls_server_name"), "{err}");
    c.dispatch(&edit(None, Some(""))).unwrap();
    assert_eq!(c.groups[0].tls_server_name, None, "\"\" forgets the name");
    c.dispatch(&edit(Some(true), Some("redis.internal")))
        .unwrap();
    c.dispatch(&edit(Some(false), None)).unwrap();
    assert!(!c.groups[0].tls);
    assert_eq!(c.groups[0].tls_server_name, None, "off forgets the name");
}

#[test]
fn a_failover_begins_and_finishes() {
    let mut c = cluster();
    c.dispatch(&Change::EditGroup {
        group: "a".into(),
        edit: GroupChanges {
            add_replicas: vec![Replica {
                address: "127.0.0.1:9".into(),
                zone: String::new(),
            }],
            ..GroupChanges::default()
        },
        resolved: none(),
    })
    .unwrap();
    let begin = Change::BeginFailover {
        group: "a".into(),
        kind: FailoverKind::Switchover,
        from: "127.0.0.1:1".into(),
        to: "127.0.0.1:9".into(),
        offsets: (10, 10),
        now_ms: 1,
    };
    let ids = c.dispatch(&begin).unwrap().ids;
    assert_eq!(ids.len(), 1);
    let err = c.dispatch(&begin).unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Conflict,
        "one failover at a time: {err}"
    );
    c.dispatch(&Change::FinishFailover {
        group: "a".into(),
        id: ids[0],
        now_ms: 2,
    })
    .unwrap();
    assert_eq!(c.groups[0].master, "127.0.0.1:9");
}

#[test]
fn changes_log_as_one_line() {
    assert_eq!(
        migrate("0-1", "c", false).to_string(),
        "migrate slots 0-1 to \"c\""
    );
    assert_eq!(Change::Pause { id: 3 }.to_string(), "pause migration 3");
    let advance = Change::Advance {
        ids: vec![1, 2],
        moving: true,
        now_ms: 0,
    };
    assert_eq!(advance.to_string(), "advance migrations [1, 2] to moving");
    assert_eq!(
        Change::Demoted {
            group: "a".into(),
            address: "h:1".into()
        }
        .to_string(),
        "list h:1 as a replica of group \"a\""
    );
}

#[test]
fn set_users_replaces_them_in_the_snapshot_and_apply_keeps_them() {
    let mut c = cluster();
    let given = vec![crate::model::ClientUser {
        name: "app".into(),
        rules: "on >secret ~app:* +@all".into(),
    }];
    let err = c
        .dispatch(&Change::SetUsers {
            users: given.clone(),
        })
        .unwrap_err();
    assert!(err.message.contains("clear text"), "{err}");
    let users = crate::model::users::prepare(&given).unwrap();
    c.dispatch(&Change::SetUsers { users }).unwrap();
    c.validate().unwrap();
    let s = c.snapshot();
    assert_eq!(s.users.len(), 1);
    assert!(s.users[0].rules.starts_with("on #") && !s.users[0].rules.contains("secret"));
    let json = serde_json::to_string(&c).unwrap();
    assert!(!json.contains("secret"));
    assert_eq!(serde_json::from_str::<Cluster>(&json).unwrap(), c);
    // An exported snapshot applied again (here one without users) keeps them.
    let mut desired = c.clone();
    desired.users.clear();
    c.dispatch(&Change::Apply {
        desired: Box::new(desired),
        resolved: none(),
        force: false,
    })
    .unwrap();
    assert_eq!(c.users.len(), 1);
    c.dispatch(&Change::SetUsers { users: vec![] }).unwrap();
    assert!(c.snapshot().users.is_empty());
    assert!(!serde_json::to_string(&c).unwrap().contains("users"));
}
