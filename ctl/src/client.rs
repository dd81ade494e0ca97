//! A small blocking client of keyway-ctld's HTTP JSON API, for keywayctl.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::Token;

/// The API at one address.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// `Bearer <token>`, if ctld wants one.
    authorization: Option<String>,
}

impl Client {
    /// A client of the API at `addr` (`host:port` or a URL), sending `token`
    /// if given.
    pub fn new(addr: &str, token: Option<&Token>) -> Client {
        let base = if addr.starts_with("http://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client {
            base,
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

    fn finish<T: DeserializeOwned>(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, String> {
        let mut resp = r.map_err(|e| format!("cannot reach keyway-ctld at {}: {e}", self.base))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("bad response from keyway-ctld: {e}"))?;
        if !status.is_success() {
            let msg = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {status}: {}", text.trim()));
            return Err(msg);
        }
        serde_json::from_str(&text)
            .map_err(|e| format!("unexpected response from keyway-ctld: {e}"))
    }

    /// `GET path`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        self.finish(
            self.with_auth(self.agent.get(&format!("{}{path}", self.base)))
                .call(),
        )
    }

    /// `DELETE path`.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        self.finish(
            self.with_auth(self.agent.delete(&format!("{}{path}", self.base)))
                .call(),
        )
    }

    /// `POST path` with a JSON body.
    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, String> {
        self.finish(
            self.with_auth(self.agent.post(&format!("{}{path}", self.base)))
                .send_json(body),
        )
    }

    /// `PUT path` with a JSON body.
    pub fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, String> {
        self.finish(
            self.with_auth(self.agent.put(&format!("{}{path}", self.base)))
                .send_json(body),
        )
    }

    /// `PATCH path` with a JSON body.
    pub fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, String> {
        self.finish(
            self.with_auth(self.agent.patch(&format!("{}{path}", self.base)))
                .send_json(body),
        )
    }
}
