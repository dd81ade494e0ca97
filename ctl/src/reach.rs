//! How keyway-ctld reaches one group's servers ([`Reach`]): the cluster's
//! backend login (`crate::backend_login`) and, for a group with `tls`,
//! TLS with this host's own files — `keyway-ctld --backend-tls-ca`,
//! `--backend-tls-cert`, `--backend-tls-key` ([`BackendTls`], set once at
//! start); without `--backend-tls-ca` the system's CA bundle. The health
//! probe wraps its tokio stream with tokio-rustls; the mover, sweep and
//! function copies open `rediss://` connections of the `redis` crate with
//! the same files.
//!
//! The `redis` crate verifies a server's certificate against the host of
//! its address and has no way to name another: a group's
//! `tls_server_name` is used by data planes and by ctld's health checks
//! and failover, while the mover, sweep and function copies verify each
//! master's own host.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::backend_login::BackendLogin;
use crate::model::Group;
use crate::tls::TlsError;

/// Where TLS groups' trust roots come from without `--backend-tls-ca`.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// ctld's TLS to backends: a rustls configuration (for the probe) and the
/// same files as PEM (for the `redis` crate). Its `Debug` shows nothing.
pub struct BackendTls {
    config: Arc<rustls::ClientConfig>,
    certs: redis::TlsCertificates,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendTls { .. }")
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        what: e.to_string(),
    })
}

impl BackendTls {
    /// Reads the CA (else [`SYSTEM_CA`]) and the client certificate and key,
    /// if given.
    pub fn load(ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Result<BackendTls, TlsError> {
        let ca = ca.unwrap_or(Path::new(SYSTEM_CA));
        let roots = crate::tls::roots(ca)?;
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots);
        let (config, client_tls) = match client {
            Some((cert, key)) => {
                let config = builder
                    .with_client_auth_cert(crate::tls::certs(cert)?, crate::tls::key(key)?)
                    .map_err(|e| TlsError::File {
                        path: key.to_path_buf(),
                        what: e.to_string(),
                    })?;
                let pem = redis::ClientTlsConfig {
                    client_cert: read(cert)?,
                    client_key: read(key)?,
                };
                (config, Some(pem))
            }
            None => (builder.with_no_client_auth(), None),
        };
        Ok(BackendTls {
            config: Arc::new(config),
            certs: redis::TlsCertificates {
                client_tls,
                root_cert: Some(read(ca)?),
            },
        })
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    /// The files, for `redis::Client::build_with_tls`.
    pub fn certificates(&self) -> redis::TlsCertificates {
        self.certs.clone()
    }
}

static TLS: OnceLock<Result<BackendTls, String>> = OnceLock::new();

/// Sets ctld's backend TLS, or why there is none (the first call wins).
pub fn set_tls(tls: Result<BackendTls, String>) {
    let _ = TLS.set(tls);
}

/// ctld's backend TLS, or why TLS groups cannot be reached.
pub fn tls() -> Result<&'static BackendTls, String> {
    match TLS.get_or_init(|| BackendTls::load(None, None).map_err(|e| e.to_string())) {
        Ok(t) => Ok(t),
        Err(e) => Err(e.clone()),
    }
}

/// How to reach one group's servers.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// The cluster's backend login, if any.
    pub login: Option<Arc<BackendLogin>>,
    /// Speak TLS.
    pub tls: bool,
    /// With `tls`: the name the certificates carry (none: each server's
    /// host).
    pub server_name: Option<String>,
}

impl PartialEq for Reach {
    fn eq(&self, other: &Reach) -> bool {
        let same_login = match (&self.login, &other.login) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_login && self.tls == other.tls && self.server_name == other.server_name
    }
}

impl Reach {
    /// How ctld reaches group `g` of cluster `cluster` now.
    pub fn of(cluster: &str, g: &Group) -> Reach {
        Reach {
            login: crate::backend_login::for_cluster(cluster),
            tls: g.tls,
            server_name: g.tls_server_name.clone(),
        }
    }

    /// A server of `cluster` whose group is not known (yet): the cluster's
    /// login, plain TCP.
    pub fn plain(cluster: &str) -> Reach {
        Reach {
            login: crate::backend_login::for_cluster(cluster),
            ..Reach::default()
        }
    }

    /// The name to verify `addr`'s (`host:port`) certificate against.
    pub fn name_for<'a>(&'a self, addr: &'a str) -> &'a str {
        match &self.server_name {
            Some(n) => n,
            None => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                host.trim_start_matches('[').trim_end_matches(']')
            }
        }
    }
}
