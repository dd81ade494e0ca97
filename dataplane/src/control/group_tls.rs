//! TLS to a managed data plane's groups. A snapshot says which groups speak
//! TLS (`Group::tls`) and which name their certificates carry
//! (`Group::tls_server_name`); what is host-local — the CA, the client
//! certificate and its key — comes from this data plane's own `[backend]
//! tls_ca`, `tls_cert` and `tls_key`, never from the snapshot.
//!
//! The files are read again for every snapshot applied and on `SIGHUP`, so
//! a snapshot turning TLS on for a group, or a rotated certificate, takes
//! effect at once (for new connections; see `Backends::pool`). A group
//! whose TLS cannot be set up is unavailable, its requests answered
//! `-ERR backend G unavailable: TLS: …`; it is never reached in plain text,
//! and the rest of the snapshot serves.

use std::sync::Arc;

use keyway_capnp::snapshot::Snapshot;

use crate::config::BackendSettings;
use crate::tls::BackendTls;

/// Each group's TLS, in snapshot order: `None` for a plain group.
pub(super) type GroupTls = Vec<Option<Result<BackendTls, Arc<str>>>>;

/// The TLS of `snapshot`'s groups with `backend`'s files (read once, and
/// only when some group speaks TLS).
pub(super) fn of(snapshot: &Snapshot, backend: &BackendSettings) -> GroupTls {
    if !snapshot.groups.iter().any(|g| g.tls) {
        return vec![None; snapshot.groups.len()];
    }
    let base = backend
        .load_tls()
        .map_err(|e| Arc::<str>::from(e.to_string()));
    snapshot
        .groups
        .iter()
        .map(|g| {
            if !g.tls {
                return None;
            }
            let name = Some(g.tls_server_name.as_str()).filter(|n| !n.is_empty());
            let tls = match &base {
                Ok(b) => b.named(name).map_err(|e| Arc::from(e.to_string())),
                Err(e) => Err(e.clone()),
            };
            if let Err(why) = &tls {
                tracing::warn!(group = %g.name, "group unavailable: TLS: {why}");
            }
            Some(tls)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_capnp::snapshot::Group;

    fn snapshot() -> Snapshot {
        let group = |name: &str, tls: bool, server_name: &str| Group {
            name: name.into(),
            master: "127.0.0.1:6379".into(),
            tls,
            tls_server_name: server_name.into(),
            ..Group::default()
        };
        Snapshot {
            groups: vec![
                group("plain", false, ""),
                group("tls", true, ""),
                group("named", true, "redis.internal"),
            ],
            ..Snapshot::default()
        }
    }

    #[test]
    fn tls_groups_get_the_hosts_files_and_their_names() {
        let dir = keyway_testkit::TempDir::new("group-tls");
        let certs = keyway_testkit::tls::Certs::generate(dir.path());
        let backend = BackendSettings {
            tls_ca: Some(certs.ca.clone()),
            tls_cert: Some(certs.client_cert.clone()),
            tls_key: Some(certs.client_key.clone()),
            ..BackendSettings::default()
        };
        let got = of(&snapshot(), &backend);
        assert!(got[0].is_none(), "a plain group stays plain");
        let name = |g: &Option<Result<BackendTls, Arc<str>>>| {
            let tls = g.as_ref().unwrap().as_ref().unwrap();
            format!("{:?}", tls.connect("localhost:6379").unwrap().name)
        };
        assert!(
            name(&got[1]).contains("localhost"),
            "each server's own host: {}",
            name(&got[1])
        );
        assert!(
            name(&got[2]).contains("redis.internal"),
            "the snapshot's name: {}",
            name(&got[2])
        );
    }

    #[test]
    fn a_group_whose_tls_cannot_be_set_up_says_why() {
        let backend = BackendSettings {
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..BackendSettings::default()
        };
        let got = of(&snapshot(), &backend);
        assert!(got[0].is_none(), "a plain group is untouched");
        for g in &got[1..] {
            let why = g.as_ref().unwrap().as_ref().unwrap_err();
            assert!(why.contains("/nonexistent/ca.pem"), "{why}");
        }
    }
}
