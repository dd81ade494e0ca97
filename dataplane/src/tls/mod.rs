//! TLS with rustls (ring provider): the `[tls]` settings and the server
//! configuration they load ([`ServerTls`]), and one connection's session
//! ([`TlsSession`]).
//!
//! TLS lives in the transports (`runtime::uring_driver`,
//! `runtime::glommio_driver`), not in the engine: a connection that speaks
//! TLS carries a [`TlsSession`]; after a receive the transport feeds it the
//! ciphertext and hands the plaintext it yields to the worker, and before a
//! send it runs the worker's plaintext through it and sends the records it
//! produces (handshake records too, when the worker has nothing to say).
//! A plain connection has no session and pays one branch.
//!
//! Certificates are read when the config is validated, so a bad file fails
//! the start or the reload that names it (the old certificate stays in use
//! after a failed reload). Connections keep the configuration they were
//! accepted with: a reload changes what new connections see only.

mod pem;
mod session;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use serde::Deserialize;

pub use session::{TlsFailure, TlsLog, TlsSession};

/// Why TLS settings could not be loaded. Messages name files, never their
/// content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{path} {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The certificate and the key do not go together, or rustls refused
    /// them.
    #[error("certificate {cert} with key {key}: {reason}")]
    KeyPair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused a setting.
    #[error("{0}")]
    Rustls(String),
}

/// The oldest TLS version accepted.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    #[serde(rename = "1.2")]
    V12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V13,
}

static TLS12_AND_13: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

impl TlsVersion {
    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        match self {
            TlsVersion::V12 => TLS12_AND_13,
            TlsVersion::V13 => TLS13_ONLY,
        }
    }
}

/// `[tls]`: TLS for clients.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// A TLS port beside `listen` (dual: plain on `listen`, TLS here).
    /// Without it, `listen` itself speaks TLS only.
    #[serde(default)]
    pub listen: Option<String>,
    /// The server certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM): when set, every client must present a
    /// certificate signed by one of them; none by default.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The oldest TLS version accepted: "1.2" (default) or "1.3".
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Close a client whose handshake has not ended this long after it
    /// connected (default "10s"; at least 1ms).
    #[serde(
        default = "default_handshake_timeout",
        deserialize_with = "crate::config::units::duration"
    )]
    pub handshake_timeout: crate::config::units::Millis,
    /// The admin HTTP endpoint (`admin`) speaks HTTPS with this
    /// certificate too (asking for client certificates when `ca` is set);
    /// default false.
    #[serde(default)]
    pub admin: bool,
}

fn default_handshake_timeout() -> crate::config::units::Millis {
    crate::config::units::Millis(10_000)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A loaded server configuration (certificate, key, client verification).
/// Its `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct ServerTls(Arc<ServerConfig>);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls { .. }")
    }
}

impl ServerTls {
    /// Reads the certificate, key and CA files `s` names.
    pub fn load(s: &TlsSettings) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(s.min_version.versions())
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match &s.ca {
            Some(ca) => {
                let roots = pem::roots(ca)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsError::Rustls(format!("CA file {}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let certs = pem::certs(&s.cert)?;
        let key = pem::key(&s.key)?;
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| key_pair(&s.cert, &s.key, e))?;
        Ok(ServerTls(Arc::new(config)))
    }

    /// The rustls configuration, for new connections.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.0
    }
}

fn key_pair(cert: &Path, key: &Path, e: rustls::Error) -> TlsError {
    let reason = match e {
        rustls::Error::InconsistentKeys(_) => "the key does not match the certificate".into(),
        other => other.to_string(),
    };
    TlsError::KeyPair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    }
}

/// Where a group's TLS trust roots come from when `tls_ca` is not given:
/// the system's CA bundle (Debian's `ca-certificates`).
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS to a group's servers (`[[group]] tls = true`): trust roots, an
/// optional client certificate, an optional server name. Its `Debug`
/// shows nothing of the key.
#[derive(Clone)]
pub struct BackendTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<Arc<str>>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for BackendTls {
    fn eq(&self, other: &BackendTls) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for BackendTls {}

/// What a transport needs to open one TLS connection to a backend: the
/// configuration and the name to verify (and send as SNI, for a DNS name).
#[derive(Clone)]
pub struct TlsConnect {
    /// The rustls client configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// The server's name.
    pub name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnect")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsConnect {
    fn eq(&self, other: &TlsConnect) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.name == other.name
    }
}

impl Eq for TlsConnect {}

impl BackendTls {
    /// Loads the CA (`ca`, else [`SYSTEM_CA`]) and the client certificate
    /// and key, if given.
    pub fn load(
        ca: Option<&Path>,
        client: Option<(&Path, &Path)>,
        server_name: Option<&str>,
    ) -> Result<BackendTls, TlsError> {
        let roots = pem::roots(ca.unwrap_or(Path::new(SYSTEM_CA)))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(TlsVersion::V12.versions())
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => builder
                .with_client_auth_cert(pem::certs(cert)?, pem::key(key)?)
                .map_err(|e| key_pair(cert, key, e))?,
            None => builder.with_no_client_auth(),
        };
        if let Some(name) = server_name {
            server_name_of(name)?;
        }
        Ok(BackendTls {
            config: Arc::new(config),
            server_name: server_name.map(Arc::from),
        })
    }

    /// The same trust roots and client certificate, with another server
    /// name (`None`: each server's own host); the files are not read again.
    pub fn named(&self, server_name: Option<&str>) -> Result<BackendTls, TlsError> {
        if let Some(name) = server_name {
            server_name_of(name)?;
        }
        Ok(BackendTls {
            config: self.config.clone(),
            server_name: server_name.map(Arc::from),
        })
    }

    /// How to connect to the server configured as `address` (`host:port`):
    /// its certificate must name `tls_server_name` if set, else `host`.
    pub fn connect(&self, address: &str) -> Result<TlsConnect, TlsError> {
        let host = match &self.server_name {
            Some(n) => n.as_ref(),
            None => host_of(address),
        };
        Ok(TlsConnect {
            config: self.config.clone(),
            name: server_name_of(host)?,
        })
    }
}

/// The host of `host:port` (brackets of an IPv6 address removed).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Most characters of an invalid server name an error quotes (a name from
/// a snapshot is not bounded, and the error is the reply to every request
/// for its group).
const QUOTED_NAME: usize = 64;

fn server_name_of(name: &str) -> Result<rustls::pki_types::ServerName<'static>, TlsError> {
    rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|_| {
        let quoted: String = name.chars().take(QUOTED_NAME).collect();
        let more = if name.chars().nth(QUOTED_NAME).is_some() {
            "…"
        } else {
            ""
        };
        TlsError::Rustls(format!("{quoted:?}{more} is not a valid TLS server name"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_server_name_is_quoted_in_part() {
        let huge = "a..".repeat(100_000);
        let why = server_name_of(&huge).unwrap_err().to_string();
        assert!(why.len() < 200, "{} bytes", why.len());
        assert!(why.contains("…"), "{why}");
        let why = server_name_of("bad name").unwrap_err().to_string();
        assert!(why.contains("\"bad name\" is not"), "{why}");
        assert!(
            server_name_of("10.0.0.1").is_ok(),
            "an IP address is a name"
        );
    }

    #[test]
    fn debug_output_shows_no_key() {
        let dir = keyway_testkit::TempDir::new("tls-debug");
        let certs = keyway_testkit::tls::Certs::generate(dir.path());
        let server = ServerTls::load(&TlsSettings {
            listen: None,
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            ca: Some(certs.ca.clone()),
            min_version: TlsVersion::V13,
            handshake_timeout: crate::config::units::Millis(1000),
            admin: false,
        })
        .unwrap();
        let backend = BackendTls::load(
            Some(&certs.ca),
            Some((&certs.client_cert, &certs.client_key)),
            Some("redis.internal"),
        )
        .unwrap();
        let connect = backend.connect("127.0.0.1:6379").unwrap();
        let shown = format!("{server:?} {backend:?} {connect:?}");
        for key in [&certs.server_key, &certs.client_key] {
            let pem = std::fs::read_to_string(key).unwrap();
            for line in pem.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!shown.contains(line), "a key line in {shown}");
            }
        }
        assert!(shown.contains("redis.internal"), "{shown}");
    }

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("redis.example:6379"), "redis.example");
        assert_eq!(host_of("127.0.0.1:6379"), "127.0.0.1");
        assert_eq!(host_of("[::1]:6379"), "::1");
    }
}
