//! A small blocking client of keyway-ctld's HTTP JSON API, for keywayctl:
//! with several addresses (`--api A,B,C`) it finds the active ctld itself.
//! Given a CA file (`keywayctl --ca`), it speaks HTTPS and verifies the
//! server's certificate against that CA only.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::Token;
use crate::wire::ErrorBody;

/// The API at one address, or at several (ctlds on etcd: one is active,
/// the others answer 503 "standby").
#[derive(Debug)]
pub struct Client {
    bases: Vec<String>,
    /// The address that answered last: tried first.
    preferred: AtomicUsize,
    agent: ureq::Agent,
    /// `Bearer <token>`, if ctld wants one.
    authorization: Option<String>,
}

/// Why a request to the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No address was given.
    #[error("no keyway-ctld API address given (--api)")]
    NoAddress,
    /// The CA file could not be used.
    #[error("CA file {path}: {why}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// The only address (or one a change may have reached) failed.
    #[error("cannot reach keyway-ctld at {base}: {source}")]
    Unreachable {
        /// The address.
        base: String,
        /// The transport error.
        #[source]
        source: ureq::Error,
    },
    /// Every address failed or stands by; what each said.
    #[error("cannot reach an active keyway-ctld: {}", .tried.join("; "))]
    NoneActive {
        /// `address: reason`, in the order tried.
        tried: Vec<String>,
    },
    /// The only ctld given stands by (its message starts with "standby").
    #[error("{0}")]
    Standby(String),
    /// The API refused the request: its `{"error": ...}`, or the status and
    /// body if it sent no such error.
    #[error("{0}")]
    Refused(String),
    /// The response body could not be read.
    #[error("bad response from keyway-ctld: {0}")]
    Unreadable(#[source] ureq::Error),
    /// The response is not the JSON expected.
    #[error("unexpected response from keyway-ctld: {0}")]
    Unexpected(#[source] serde_json::Error),
}

/// A TLS configuration trusting only the CA certificates in the PEM file
/// `ca` (`keywayctl --ca`: ctld's API, and data planes' admin endpoints
/// for `keywayctl top`).
pub fn tls_config(ca: &Path) -> Result<ureq::tls::TlsConfig, ClientError> {
    let bad = |why: String| ClientError::Ca {
        path: ca.display().to_string(),
        why,
    };
    let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) = item.map_err(|e| bad(e.to_string()))? {
            roots.push(c);
        }
    }
    if roots.is_empty() {
        return Err(bad("holds no certificate (BEGIN CERTIFICATE)".into()));
    }
    Ok(ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
        .build())
}

type Answer = Result<ureq::http::Response<ureq::Body>, ureq::Error>;

/// The request cannot have reached ctld: trying another address is safe
/// even for a change.
fn never_sent(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        _ => false,
    }
}

impl Client {
    /// A client of the API at `addr` (`host:port` or a URL, or several
    /// separated by commas), sending `token` if given.
    pub fn new(addr: &str, token: Option<&Token>) -> Client {
        Client::build(addr, token, None)
    }

    /// As [`new`](Self::new); with `ca`, over HTTPS, trusting only the
    /// certificates in that PEM file.
    pub fn with_ca(
        addr: &str,
        token: Option<&Token>,
        ca: Option<&Path>,
    ) -> Result<Client, ClientError> {
        let Some(ca) = ca else {
            return Ok(Client::new(addr, token));
        };
        let tls = tls_config(ca)?;
        Ok(Client::build(addr, token, Some(tls)))
    }

    fn build(addr: &str, token: Option<&Token>, tls: Option<ureq::tls::TlsConfig>) -> Client {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let bases = addr
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                if a.starts_with("http://") || a.starts_with("https://") {
                    a.trim_end_matches('/').to_string()
                } else {
                    format!("{scheme}://{a}")
                }
            })
            .collect();
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .timeout_connect(Some(Duration::from_secs(2)));
        if let Some(tls) = tls {
            config = config.tls_config(tls);
        }
        let agent = config.build().into();
        Client {
            bases,
            preferred: AtomicUsize::new(0),
            agent,
            authorization: token.map(|t| format!("Bearer {}", t.expose())),
        }
    }

    fn with_auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(a) => r.header("Authorization", a),
            None => r,
        }
    }

    /// Sends the request `send` builds to each address in turn, from the
    /// one that answered last, until one that is not a standby answers. A
    /// request an active ctld answered is never sent again; one that may
    /// have reached a ctld that then failed is sent again only if it is a
    /// read (`retry_any`).
    fn each<T: DeserializeOwned>(
        &self,
        retry_any: bool,
        send: impl Fn(&ureq::Agent, &str) -> Answer,
    ) -> Result<T, ClientError> {
        let n = self.bases.len();
        if n == 0 {
            return Err(ClientError::NoAddress);
        }
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut tried = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            let base = &self.bases[i];
            match send(&self.agent, base) {
                Err(e) if n > 1 && (retry_any || never_sent(&e)) => {
                    tried.push(format!("{base}: {e}"));
                }
                Err(source) => {
                    return Err(ClientError::Unreachable {
                        base: base.clone(),
                        source,
                    })
                }
                Ok(resp) => match self.finish(resp) {
                    Reply::Standby(why) if n > 1 => tried.push(format!("{base}: {why}")),
                    Reply::Standby(why) => return Err(ClientError::Standby(why)),
                    Reply::Done(r) => {
                        self.preferred.store(i, Ordering::Relaxed);
                        return r;
                    }
                },
            }
        }
        Err(ClientError::NoneActive { tried })
    }

    fn finish<T: DeserializeOwned>(&self, mut resp: ureq::http::Response<ureq::Body>) -> Reply<T> {
        let status = resp.status();
        let text = match resp.body_mut().read_to_string() {
            Ok(t) => t,
            Err(e) => return Reply::Done(Err(ClientError::Unreadable(e))),
        };
        if !status.is_success() {
            let msg = serde_json::from_str::<ErrorBody>(&text)
                .map(|body| body.error)
                .unwrap_or_else(|_| format!("HTTP {status}: {}", text.trim()));
            if status == ureq::http::StatusCode::SERVICE_UNAVAILABLE && msg.starts_with("standby") {
                return Reply::Standby(msg);
            }
            return Reply::Done(Err(ClientError::Refused(msg)));
        }
        Reply::Done(serde_json::from_str(&text).map_err(ClientError::Unexpected))
    }

    /// `GET path`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.each(true, |a, base| {
            self.with_auth(a.get(&format!("{base}{path}"))).call()
        })
    }

    /// `DELETE path`.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.each(false, |a, base| {
            self.with_auth(a.delete(&format!("{base}{path}"))).call()
        })
    }

    /// `POST path` with a JSON body.
    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        self.each(false, |a, base| {
            self.with_auth(a.post(&format!("{base}{path}")))
                .send_json(body)
        })
    }

    /// `PUT path` with a JSON body.
    pub fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        self.each(false, |a, base| {
            self.with_auth(a.put(&format!("{base}{path}")))
                .send_json(body)
        })
    }

    /// `PATCH path` with a JSON body.
    pub fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        self.each(false, |a, base| {
            self.with_auth(a.patch(&format!("{base}{path}")))
                .send_json(body)
        })
    }
}

/// An answer: final, or a standby's.
enum Reply<T> {
    Done(Result<T, ClientError>),
    Standby(String),
}
