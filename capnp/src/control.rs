//! The control session's messages as plain Rust values, and their encoding
//! (`schema/control.capnp`). See that schema for the protocol.

use crate::generated::control_capnp as schema;
use crate::snapshot::Snapshot;
use crate::DecodeError;

/// The first message of a data plane.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Hello {
    /// Unique per data plane, stable across restarts.
    pub id: String,
    /// The cluster it serves.
    pub cluster: String,
    /// The snapshot version it serves now (0: none).
    pub version: u64,
    /// Where its clients connect.
    pub address: String,
    /// The shared secret ctld checks (empty: none). `Debug` hides it.
    pub token: String,
    /// Where its admin endpoint listens (`host:port`; empty: none).
    pub admin: String,
    /// The admin endpoint speaks HTTPS.
    pub admin_tls: bool,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("id", &self.id)
            .field("cluster", &self.cluster)
            .field("version", &self.version)
            .field("address", &self.address)
            .field(
                "token",
                &if self.token.is_empty() {
                    "<none>"
                } else {
                    "<hidden>"
                },
            )
            .field("admin", &self.admin)
            .field("admin_tls", &self.admin_tls)
            .finish()
    }
}

/// A data plane's report and lease request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    /// The newest version every core has loaded.
    pub version: u64,
    /// No request routed under an older version is in flight.
    pub drained: bool,
    /// Echoed by the answering heartbeat.
    pub seq: u64,
    /// The data plane is fenced.
    pub fenced: bool,
    /// How it fares with each backend it used.
    pub backends: Vec<BackendReport>,
}

/// How a data plane fares with one backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendReport {
    /// `host:port` as the snapshot names it.
    pub address: String,
    /// Consecutive failures since the last success (0: the last attempt
    /// succeeded).
    pub failures: u32,
    /// The last failure's reason ("" if none).
    pub last_error: String,
    /// Milliseconds since the last success, if any.
    pub since_success_ms: Option<u64>,
    /// Milliseconds since the last failure, if any.
    pub since_failure_ms: Option<u64>,
}

/// Most backend reports one Ack carries (a data plane with more backends
/// reports the failing ones first).
pub const MAX_BACKEND_REPORTS: usize = 1024;

/// Longest `last_error` text sent; longer ones are cut.
pub const MAX_REPORT_ERROR: usize = 200;

/// ctld's answer to an ack: a lease renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// The ack answered.
    pub seq: u64,
    /// Lease length, counted from when that ack was sent.
    pub lease_millis: u64,
    /// The cluster's current version.
    pub version: u64,
}

/// Data plane → ctld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromDataPlane {
    /// Session start.
    Hello(Hello),
    /// Applied version and lease request.
    Ack(Ack),
}

/// ctld → data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToDataPlane {
    /// A new snapshot to apply.
    Snapshot(Snapshot),
    /// A lease renewal.
    Heartbeat(Heartbeat),
    /// Why ctld will not serve this data plane.
    Refused(String),
}

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, DecodeError> {
    Ok(t?
        .to_str()
        .map_err(|_| DecodeError::Invalid("text is not UTF-8".into()))?
        .to_string())
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl FromDataPlane {
    /// The message, ready to frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut msg = capnp::message::Builder::new_default();
        let root = msg.init_root::<schema::from_data_plane::Builder<'_>>();
        match self {
            FromDataPlane::Hello(h) => {
                let mut b = root.init_hello();
                b.set_id(h.id.as_str());
                b.set_cluster(h.cluster.as_str());
                b.set_version(h.version);
                b.set_address(h.address.as_str());
                b.set_token(h.token.as_str());
                b.set_admin(h.admin.as_str());
                b.set_admin_tls(h.admin_tls);
            }
            FromDataPlane::Ack(a) => {
                let mut b = root.init_ack();
                b.set_version(a.version);
                b.set_drained(a.drained);
                b.set_seq(a.seq);
                b.set_fenced(a.fenced);
                let n = a.backends.len().min(MAX_BACKEND_REPORTS);
                let mut list = b.init_backends(n as u32);
                for (i, r) in a.backends.iter().take(n).enumerate() {
                    let mut rb = list.reborrow().get(i as u32);
                    rb.set_address(r.address.as_str());
                    rb.set_failures(r.failures);
                    rb.set_last_error(cut(&r.last_error, MAX_REPORT_ERROR));
                    rb.set_since_success_millis(r.since_success_ms.unwrap_or(u64::MAX));
                    rb.set_since_failure_millis(r.since_failure_ms.unwrap_or(u64::MAX));
                }
            }
        }
        capnp::serialize::write_message_to_words(&msg)
    }

    /// Decodes a framed message's bytes.
    pub fn decode(bytes: &[u8]) -> Result<FromDataPlane, DecodeError> {
        let msg = crate::read_message(bytes)?;
        let root: schema::from_data_plane::Reader<'_> = msg.get_root()?;
        match root
            .which()
            .map_err(|e| DecodeError::Invalid(format!("unknown message {}", e.0)))?
        {
            schema::from_data_plane::Hello(h) => {
                let h = h?;
                Ok(FromDataPlane::Hello(Hello {
                    id: text(h.get_id())?,
                    cluster: text(h.get_cluster())?,
                    version: h.get_version(),
                    address: text(h.get_address())?,
                    token: text(h.get_token())?,
                    admin: text(h.get_admin())?,
                    admin_tls: h.get_admin_tls(),
                }))
            }
            schema::from_data_plane::Ack(a) => {
                let a = a?;
                let list = a.get_backends()?;
                if list.len() as usize > MAX_BACKEND_REPORTS {
                    return Err(DecodeError::Invalid(format!(
                        "{} backend reports: at most {MAX_BACKEND_REPORTS}",
                        list.len()
                    )));
                }
                let mut backends = Vec::with_capacity(list.len() as usize);
                for r in list {
                    let ms = |v: u64| (v != u64::MAX).then_some(v);
                    backends.push(BackendReport {
                        address: text(r.get_address())?,
                        failures: r.get_failures(),
                        last_error: text(r.get_last_error())?,
                        since_success_ms: ms(r.get_since_success_millis()),
                        since_failure_ms: ms(r.get_since_failure_millis()),
                    });
                }
                Ok(FromDataPlane::Ack(Ack {
                    version: a.get_version(),
                    drained: a.get_drained(),
                    seq: a.get_seq(),
                    fenced: a.get_fenced(),
                    backends,
                }))
            }
        }
    }
}

impl ToDataPlane {
    /// The message, ready to frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut msg = capnp::message::Builder::new_default();
        let mut root = msg.init_root::<schema::to_data_plane::Builder<'_>>();
        match self {
            ToDataPlane::Snapshot(s) => s.write(root.init_snapshot()),
            ToDataPlane::Heartbeat(h) => {
                let mut b = root.init_heartbeat();
                b.set_seq(h.seq);
                b.set_lease_millis(h.lease_millis);
                b.set_version(h.version);
            }
            ToDataPlane::Refused(why) => root.set_refused(why.as_str()),
        }
        capnp::serialize::write_message_to_words(&msg)
    }

    /// Decodes a framed message's bytes.
    pub fn decode(bytes: &[u8]) -> Result<ToDataPlane, DecodeError> {
        let msg = crate::read_message(bytes)?;
        let root: schema::to_data_plane::Reader<'_> = msg.get_root()?;
        match root
            .which()
            .map_err(|e| DecodeError::Invalid(format!("unknown message {}", e.0)))?
        {
            schema::to_data_plane::Snapshot(s) => Ok(ToDataPlane::Snapshot(Snapshot::read(s?)?)),
            schema::to_data_plane::Heartbeat(h) => {
                let h = h?;
                Ok(ToDataPlane::Heartbeat(Heartbeat {
                    seq: h.get_seq(),
                    lease_millis: h.get_lease_millis(),
                    version: h.get_version(),
                }))
            }
            schema::to_data_plane::Refused(t) => Ok(ToDataPlane::Refused(text(t)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::sample;

    #[test]
    fn messages_round_trip() {
        for m in [
            FromDataPlane::Hello(Hello {
                id: "dp1".into(),
                cluster: "c".into(),
                version: 3,
                address: "1.2.3.4:6380".into(),
                token: "s3cret".into(),
                admin: String::new(),
                admin_tls: false,
            }),
            FromDataPlane::Ack(Ack {
                version: 9,
                drained: true,
                seq: 44,
                fenced: false,
                backends: vec![],
            }),
            FromDataPlane::Ack(Ack {
                version: 9,
                backends: vec![
                    BackendReport {
                        address: "10.0.0.1:6379".into(),
                        failures: 3,
                        last_error: "connection refused".into(),
                        since_success_ms: Some(5200),
                        since_failure_ms: Some(0),
                    },
                    BackendReport {
                        address: "10.0.0.2:6379".into(),
                        ..BackendReport::default()
                    },
                ],
                ..Ack::default()
            }),
        ] {
            assert_eq!(FromDataPlane::decode(&m.encode()).unwrap(), m);
        }
        for m in [
            ToDataPlane::Snapshot(sample()),
            ToDataPlane::Heartbeat(Heartbeat {
                seq: 44,
                lease_millis: 30_000,
                version: 9,
            }),
            ToDataPlane::Refused("no cluster \"x\"".into()),
        ] {
            assert_eq!(ToDataPlane::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn reports_are_bounded() {
        let long = "é".repeat(MAX_REPORT_ERROR);
        let a = Ack {
            backends: vec![
                BackendReport {
                    last_error: long.clone(),
                    ..BackendReport::default()
                };
                MAX_BACKEND_REPORTS + 5
            ],
            ..Ack::default()
        };
        let FromDataPlane::Ack(back) =
            FromDataPlane::decode(&FromDataPlane::Ack(a).encode()).unwrap()
        else {
            panic!("not an ack")
        };
        assert_eq!(back.backends.len(), MAX_BACKEND_REPORTS);
        assert_eq!(back.backends[0].last_error, long[..MAX_REPORT_ERROR]);
    }

    #[test]
    fn the_token_is_never_in_debug_output() {
        let h = Hello {
            id: "dp1".into(),
            token: "s3cret".into(),
            ..Hello::default()
        };
        let shown = format!("{h:?} {:?}", FromDataPlane::Hello(h.clone()));
        assert!(
            !shown.contains("s3cret") && shown.contains("<hidden>"),
            "{shown}"
        );
    }

    /// One message of each kind, each direction.
    fn every_message() -> (Vec<FromDataPlane>, Vec<ToDataPlane>) {
        let from = vec![
            FromDataPlane::Hello(Hello {
                id: "dp1".into(),
                cluster: "c".into(),
                token: "t".into(),
                admin: String::new(),
                admin_tls: false,
                ..Hello::default()
            }),
            FromDataPlane::Ack(Ack {
                version: 9,
                backends: vec![BackendReport {
                    address: "10.0.0.1:6379".into(),
                    ..BackendReport::default()
                }],
                ..Ack::default()
            }),
        ];
        let to = vec![
            ToDataPlane::Snapshot(sample()),
            ToDataPlane::Heartbeat(Heartbeat {
                seq: 1,
                lease_millis: 30_000,
                version: 9,
            }),
            ToDataPlane::Refused("x".into()),
        ];
        (from, to)
    }

    #[test]
    fn the_wrong_message_type_is_refused_or_misread_without_panicking() {
        // `refused` is member 2 of ToDataPlane's union; FromDataPlane has
        // members 0 and 1 only, so read as a FromDataPlane it is refused.
        let refused = ToDataPlane::Refused("x".into()).encode();
        match FromDataPlane::decode(&refused) {
            Err(DecodeError::Invalid(why)) => assert_eq!(why, "unknown message 2"),
            other => panic!("refused read as a data plane message: {other:?}"),
        }
        // The other members share numbers with the other direction's: read
        // as the wrong struct they decode to something or fail, and return
        // either way (a panic would fail this test).
        let (from, to) = every_message();
        for m in &from {
            let _ = ToDataPlane::decode(&m.encode());
        }
        for m in &to {
            let _ = FromDataPlane::decode(&m.encode());
        }
        assert!(FromDataPlane::decode(&[1, 2, 3]).is_err());
        assert!(ToDataPlane::decode(&[]).is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (from, to) = every_message();
        let mut checked = 0;
        for bytes in from.iter().map(FromDataPlane::encode) {
            for n in 0..bytes.len() {
                assert!(
                    FromDataPlane::decode(&bytes[..n]).is_err(),
                    "{n} of {} bytes decoded",
                    bytes.len()
                );
                checked += 1;
            }
        }
        for bytes in to.iter().map(ToDataPlane::encode) {
            for n in 0..bytes.len() {
                assert!(
                    ToDataPlane::decode(&bytes[..n]).is_err(),
                    "{n} of {} bytes decoded",
                    bytes.len()
                );
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} truncations checked");
    }
}
