//! Messages written by earlier versions must still decode. Each fixture under
//! `tests/fixtures/` was written by the version its name says and is never
//! rewritten; when the schema grows, add fixtures for the new version beside
//! them (`KEYWAY_CAPNP_WRITE_FIXTURES=1 cargo test -p keyway-capnp --test
//! fixtures` writes only the files that do not exist yet).

use std::path::PathBuf;

use keyway_capnp::control::{Ack, BackendReport, FromDataPlane, Heartbeat, Hello, ToDataPlane};
use keyway_capnp::frame::{read_frame, MAX_FRAME};
use keyway_capnp::snapshot::{
    Group, Migration, Phase, ReadFrom, Replica, SlotRange, Snapshot, User,
};

/// The values version 1 wrote.
fn v1_snapshot() -> Snapshot {
    Snapshot {
        cluster: "fixture".into(),
        version: 42,
        slot_count: 1024,
        groups: vec![
            Group {
                name: "g1".into(),
                master: "127.0.0.1:7001".into(),
                replicas: vec![Replica {
                    address: "127.0.0.1:7101".into(),
                    zone: "rack-b".into(),
                }],
                zone: "rack-a".into(),
                // Version 4 fields, as version 1 reads.
                read_from: ReadFrom::Master,
                hold: false,
                // Version 6 fields, as version 1 reads.
                tls: false,
                tls_server_name: String::new(),
            },
            Group {
                name: "g2".into(),
                master: "127.0.0.1:7002".into(),
                replicas: vec![],
                zone: String::new(),
                read_from: ReadFrom::Master,
                hold: false,
                // Version 6 fields, as version 1 reads.
                tls: false,
                tls_server_name: String::new(),
            },
        ],
        slot_ranges: vec![
            SlotRange {
                first: 0,
                last: 511,
                group: 0,
            },
            SlotRange {
                first: 512,
                last: 1000,
                group: 1,
            },
        ],
        // Version 1 had no phase: its messages read as `moving`.
        migrations: vec![Migration {
            first: 500,
            last: 511,
            from: 0,
            to: 1,
            phase: Phase::Moving,
        }],
        lease_millis: 30_000,
        // Version 5 field, as version 1 reads.
        users: vec![],
    }
}

fn v1_messages() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("v1-snapshot.bin", v1_snapshot().encode()),
        (
            "v1-hello.bin",
            FromDataPlane::Hello(Hello {
                id: "dp-1".into(),
                cluster: "fixture".into(),
                version: 41,
                address: "10.0.0.9:6380".into(),
                // Version 1 had no token: its Hellos read as carrying none.
                token: String::new(),
                admin: String::new(),
                admin_tls: false,
            })
            .encode(),
        ),
        (
            "v1-ack.bin",
            FromDataPlane::Ack(Ack {
                version: 42,
                drained: true,
                seq: 7,
                fenced: false,
                backends: vec![],
            })
            .encode(),
        ),
        (
            "v1-heartbeat.bin",
            ToDataPlane::Heartbeat(Heartbeat {
                seq: 7,
                lease_millis: 30_000,
                version: 42,
            })
            .encode(),
        ),
        (
            "v1-snapshot-message.bin",
            ToDataPlane::Snapshot(v1_snapshot()).encode(),
        ),
        (
            "v1-refused.bin",
            ToDataPlane::Refused("no cluster \"nope\"".into()).encode(),
        ),
    ]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn version_1_messages_still_decode() {
    let write = std::env::var_os("KEYWAY_CAPNP_WRITE_FIXTURES").is_some();
    for (name, bytes) in v1_messages() {
        let path = dir().join(name);
        if write && !path.exists() {
            std::fs::write(&path, &bytes).unwrap();
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match name {
            "v1-snapshot.bin" => assert_eq!(Snapshot::decode(&stored).unwrap(), v1_snapshot()),
            "v1-hello.bin" | "v1-ack.bin" => {
                assert_eq!(
                    FromDataPlane::decode(&stored).unwrap(),
                    FromDataPlane::decode(&bytes).unwrap()
                )
            }
            _ => assert_eq!(
                ToDataPlane::decode(&stored).unwrap(),
                ToDataPlane::decode(&bytes).unwrap()
            ),
        }
    }
    // Framed on the wire as version 1 framed it.
    let framed = std::fs::read(dir().join("v1-snapshot-message.bin")).unwrap();
    let mut wire = (framed.len() as u32).to_le_bytes().to_vec();
    wire.extend_from_slice(&framed);
    let got = read_frame(&mut &wire[..], MAX_FRAME).unwrap();
    assert_eq!(
        ToDataPlane::decode(&got).unwrap(),
        ToDataPlane::Snapshot(v1_snapshot())
    );
}

/// Version 2 added the migration phase.
fn v2_snapshot() -> Snapshot {
    let mut s = v1_snapshot();
    s.version = 43;
    s.migrations = vec![
        Migration {
            first: 500,
            last: 511,
            from: 0,
            to: 1,
            phase: Phase::Blocked,
        },
        Migration {
            first: 512,
            last: 600,
            from: 1,
            to: 0,
            phase: Phase::Moving,
        },
    ];
    s
}

#[test]
fn version_2_messages_still_decode() {
    let path = dir().join("v2-snapshot.bin");
    if std::env::var_os("KEYWAY_CAPNP_WRITE_FIXTURES").is_some() && !path.exists() {
        std::fs::write(&path, v2_snapshot().encode()).unwrap();
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(Snapshot::decode(&stored).unwrap(), v2_snapshot());
}

/// Version 3 added the Hello's token.
fn v3_hello() -> FromDataPlane {
    FromDataPlane::Hello(Hello {
        id: "dp-1".into(),
        cluster: "fixture".into(),
        version: 43,
        address: "10.0.0.9:6380".into(),
        token: "fixture-token".into(),
        admin: String::new(),
        admin_tls: false,
    })
}

#[test]
fn version_3_messages_still_decode() {
    let path = dir().join("v3-hello.bin");
    if std::env::var_os("KEYWAY_CAPNP_WRITE_FIXTURES").is_some() && !path.exists() {
        std::fs::write(&path, v3_hello().encode()).unwrap();
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(FromDataPlane::decode(&stored).unwrap(), v3_hello());
    // A version 1 Hello reads as one without a token.
    let v1 = std::fs::read(dir().join("v1-hello.bin")).unwrap();
    match FromDataPlane::decode(&v1).unwrap() {
        FromDataPlane::Hello(h) => assert_eq!((h.id.as_str(), h.token.as_str()), ("dp-1", "")),
        other => panic!("{other:?}"),
    }
}

/// Version 4 added groups' read policy and hold, and backend reports in acks.
fn v4_snapshot() -> Snapshot {
    let mut s = v2_snapshot();
    s.version = 44;
    s.groups[0].read_from = ReadFrom::LocalZone;
    s.groups[0].hold = true;
    s.groups[1].read_from = ReadFrom::Replica;
    s
}

fn v4_ack() -> FromDataPlane {
    FromDataPlane::Ack(Ack {
        version: 44,
        drained: true,
        seq: 9,
        fenced: false,
        backends: vec![
            BackendReport {
                address: "10.0.0.1:6379".into(),
                failures: 2,
                last_error: "connection refused".into(),
                since_success_ms: Some(5000),
                since_failure_ms: Some(10),
            },
            BackendReport {
                address: "10.0.0.2:6379".into(),
                failures: 0,
                last_error: String::new(),
                since_success_ms: Some(1),
                since_failure_ms: None,
            },
        ],
    })
}

#[test]
fn version_4_messages_still_decode() {
    let snap = dir().join("v4-snapshot.bin");
    let ack = dir().join("v4-ack.bin");
    if std::env::var_os("KEYWAY_CAPNP_WRITE_FIXTURES").is_some() {
        if !snap.exists() {
            std::fs::write(&snap, v4_snapshot().encode()).unwrap();
        }
        if !ack.exists() {
            std::fs::write(&ack, v4_ack().encode()).unwrap();
        }
    }
    let stored = std::fs::read(&snap).unwrap_or_else(|e| panic!("{}: {e}", snap.display()));
    assert_eq!(Snapshot::decode(&stored).unwrap(), v4_snapshot());
    let stored = std::fs::read(&ack).unwrap_or_else(|e| panic!("{}: {e}", ack.display()));
    assert_eq!(FromDataPlane::decode(&stored).unwrap(), v4_ack());
    // Earlier snapshots read as master-only reads without a hold, earlier
    // acks as reporting no backend.
    let v2 = Snapshot::decode(&std::fs::read(dir().join("v2-snapshot.bin")).unwrap()).unwrap();
    assert!(v2
        .groups
        .iter()
        .all(|g| g.read_from == ReadFrom::Master && !g.hold));
    match FromDataPlane::decode(&std::fs::read(dir().join("v1-ack.bin")).unwrap()).unwrap() {
        FromDataPlane::Ack(a) => assert!(a.backends.is_empty()),
        other => panic!("{other:?}"),
    }
}

/// Version 5 added the cluster's client users.
fn v5_snapshot() -> Snapshot {
    let mut s = v4_snapshot();
    s.version = 45;
    s.users = vec![
        User {
            name: "default".into(),
            rules: "on #5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 ~* &* +@all"
                .into(),
        },
        User {
            name: "app".into(),
            rules: "on #2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b ~app:* +@all -@dangerous"
                .into(),
        },
    ];
    s
}

#[test]
fn version_5_messages_still_decode() {
    let path = dir().join("v5-snapshot.bin");
    if std::env::var_os("KEYWAY_CAPNP_WRITE_FIXTURES").is_some() && !path.exists() {
        std::fs::write(&path, v5_snapshot().encode()).unwrap();
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let got = Snapshot::decode(&stored).unwrap();
    assert_eq!(got, v5_snapshot());
    got.validate().unwrap();
    // Earlier snapshots read as carrying no users: data planes keep their
    // config file's.
    let v4 = Snapshot::decode(&std::fs::read(dir().join("v4-snapshot.bin")).unwrap()).unwrap();
    assert!(v4.users.is_empty());
}

/// Version 6 added the Hello's admin endpoint.
fn v6_hello() -> FromDataPlane {
    FromDataPlane::Hello(Hello {
        id: "dp-1".into(),
        cluster: "fixture".into(),
        version: 44,
        address: "10.0.0.9:6380".into(),
        token: "fixture-token".into(),
        admin: "10.0.0.9:9121".into(),
        admin_tls: true,
    })
}

/// Version 6 added groups' TLS switch and server name.
fn v6_snapshot() -> Snapshot {
    let mut s = v5_snapshot();
    s.version = 46;
    s.groups[0].tls = true;
    s.groups[0].tls_server_name = "redis.internal".into();
    s.groups[1].tls = true;
    s
}

#[test]
fn version_6_hellos_still_decode() {
    let path = dir().join("v6-hello.bin");
    if std::env::var_os("KEYWAY_CAPNP_WRITE_FIXTURES").is_some() && !path.exists() {
        std::fs::write(&path, v6_hello().encode()).unwrap();
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(FromDataPlane::decode(&stored).unwrap(), v6_hello());
    // Earlier Hellos read as naming no admin endpoint.
    match FromDataPlane::decode(&std::fs::read(dir().join("v3-hello.bin")).unwrap()).unwrap() {
        FromDataPlane::Hello(h) => assert_eq!((h.admin.as_str(), h.admin_tls), ("", false)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn version_6_snapshots_still_decode() {
    let path = dir().join("v6-snapshot.bin");
    if std::env::var_os("KEYWAY_CAPNP_WRITE_FIXTURES").is_some() && !path.exists() {
        std::fs::write(&path, v6_snapshot().encode()).unwrap();
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let got = Snapshot::decode(&stored).unwrap();
    assert_eq!(got, v6_snapshot());
    got.validate().unwrap();
    // Earlier snapshots read as plain TCP to every group, each server's
    // certificate name its own host.
    let v5 = Snapshot::decode(&std::fs::read(dir().join("v5-snapshot.bin")).unwrap()).unwrap();
    assert!(v5
        .groups
        .iter()
        .all(|g| !g.tls && g.tls_server_name.is_empty()));
}
