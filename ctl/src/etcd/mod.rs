//! keyway-ctld on etcd (`--store etcd:http://H:P[,http://H:P…]`): the state
//! in etcd ([`store`]) and an election that makes one ctld of several the
//! active one ([`election`]; what that means for sessions and the API is in
//! `crate::leader`).
//!
//! Every etcd call runs on a runtime of its own, on its own thread
//! ([`Etcd`]): never on the control sessions' runtime, never on the API's.
//! The store's synchronous `save` (called off the async runtimes, holding
//! only the daemon's `writer` lock) hands its transaction to that runtime
//! and waits for the answer at most [`Etcd::timeout`].
//!
//! Layout under the prefix (default `/keyway`), each value the JSON of the
//! model's own serialization:
//! - `PREFIX/clusters/NAME`: a cluster, its migrations and their progress;
//! - `PREFIX/dataplanes/ID`: a data plane's record;
//! - `PREFIX/election/…`: the election's keys (value: [`crate::leader::Addresses`]).

pub mod election;
pub mod store;

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::store::StoreError;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/keyway";

/// The etcd endpoints of a `--store etcd:…` spec, if it is one.
pub fn endpoints(spec: &str) -> Option<Result<Vec<String>, StoreError>> {
    let list = spec.strip_prefix("etcd:")?;
    let eps: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if eps.is_empty() || eps.iter().any(|e| !e.starts_with("http://")) {
        return Some(Err(StoreError::Unsupported(spec.to_string())));
    }
    Some(Ok(eps))
}

/// A connection to etcd with a runtime of its own.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    rt: tokio::runtime::Handle,
    /// The key prefix.
    pub prefix: String,
    /// How long one call may take before it is given up (its outcome is
    /// then unknown).
    pub timeout: Duration,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// Starts the etcd runtime's thread and a client of `endpoints`
    /// (connections are made as needed: etcd may be down now).
    pub fn connect(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<Etcd, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Etcd(format!("cannot start its runtime: {e}")))?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("keyway-etcd".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| StoreError::Etcd(format!("cannot start its thread: {e}")))?;
        let eps = endpoints.to_vec();
        let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let _ = tx.send(Client::connect(eps, Some(opts)).await);
        });
        let client = rx
            .recv_timeout(timeout + Duration::from_secs(2))
            .map_err(|_| StoreError::Etcd("connecting timed out".into()))?
            .map_err(|e| StoreError::Etcd(e.to_string()))?;
        Ok(Etcd {
            client,
            rt: handle,
            prefix: prefix.trim_end_matches('/').to_string(),
            timeout,
        })
    }

    /// A client, for calls made on the etcd runtime.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The etcd runtime.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// `PREFIX/rest`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    /// Runs `f` on the etcd runtime and waits for it, at most
    /// [`Etcd::timeout`]. Blocking: call it off the async runtimes. A
    /// timeout is `Err(None)`: the call's outcome is unknown.
    pub fn call<T, F>(&self, f: impl FnOnce(Client) -> F) -> Result<T, Option<etcd_client::Error>>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let fut = f(self.client.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let timeout = self.timeout;
        self.rt.spawn(async move {
            let r = tokio::time::timeout(timeout, fut).await;
            let _ = tx.send(r);
        });
        match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(Ok(r)) => r.map_err(Some),
            Ok(Err(_)) | Err(_) => Err(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert!(endpoints("file:/x").is_none());
        assert_eq!(
            endpoints("etcd:http://a:1, http://b:2").unwrap().unwrap(),
            vec!["http://a:1".to_string(), "http://b:2".to_string()]
        );
        assert!(endpoints("etcd:").unwrap().is_err());
        assert!(
            endpoints("etcd:a:1").unwrap().is_err(),
            "a URL, with its scheme"
        );
        assert!(
            endpoints("etcd:https://a:1").unwrap().is_err(),
            "no TLS yet"
        );
    }
}
