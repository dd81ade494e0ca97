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
            .finish()
    }
}

/// A data plane's report and lease request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ack {
    /// The newest version every core has loaded.
    pub version: u64,
    /// No request routed under an older version is in flight.
    pub drained: bool,
    /// Echoed by the answering heartbeat.
    pub seq: u64,
    /// The data plane is fenced.
    pub fenced: bool,
}

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
            }
            FromDataPlane::Ack(a) => {
                let mut b = root.init_ack();
                b.set_version(a.version);
                b.set_drained(a.drained);
                b.set_seq(a.seq);
                b.set_fenced(a.fenced);
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
                }))
            }
            schema::from_data_plane::Ack(a) => {
                let a = a?;
                Ok(FromDataPlane::Ack(Ack {
                    version: a.get_version(),
                    drained: a.get_drained(),
                    seq: a.get_seq(),
                    fenced: a.get_fenced(),
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
            }),
            FromDataPlane::Ack(Ack {
                version: 9,
                drained: true,
                seq: 44,
                fenced: false,
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

    #[test]
    fn the_wrong_message_type_does_not_panic() {
        let bytes = ToDataPlane::Refused("x".into()).encode();
        // Decoding it as the other direction's union reads some member or fails;
        // it never panics.
        let _ = FromDataPlane::decode(&bytes);
        assert!(FromDataPlane::decode(&[1, 2, 3]).is_err());
    }
}
