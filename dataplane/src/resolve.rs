//! Turning `host:port` into a socket address, off the request path. A
//! resolver can take seconds to fail (a DNS server that does not answer), so
//! many names are resolved at once on a few threads, within a deadline: a
//! name not resolved by then is reported as such and tried again later,
//! rather than holding up the thread that asked (the control session, which
//! must keep renewing its lease).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Threads resolving names at once.
const RESOLVERS: usize = 8;

/// Why a `host:port` gives no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The resolver failed (or the text is not `host:port`).
    #[error("cannot resolve {addr:?}: {source}")]
    Lookup {
        /// As given.
        addr: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The resolver answered with no address.
    #[error("{addr:?} resolves to no address")]
    Nothing {
        /// As given.
        addr: String,
    },
}

/// Resolves `host:port` to one socket address (the first the resolver gives).
pub fn resolve(addr: &str) -> Result<SocketAddr, ResolveError> {
    addr.to_socket_addrs()
        .map_err(|source| ResolveError::Lookup {
            addr: addr.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| ResolveError::Nothing {
            addr: addr.to_string(),
        })
}

/// Resolves every name in `names`, spending at most `deadline` waiting:
/// literal addresses at once, host names on up to [`RESOLVERS`] threads.
/// A name the resolver has not answered by then gets an error saying so
/// (its lookup finishes in the background and is dropped).
pub fn resolve_all<'a>(
    names: impl IntoIterator<Item = &'a str>,
    deadline: Duration,
) -> HashMap<String, Result<SocketAddr, Arc<str>>> {
    let mut out: HashMap<String, Result<SocketAddr, Arc<str>>> = HashMap::new();
    let mut pending: Vec<String> = Vec::new();
    for name in names {
        if out.contains_key(name) || pending.iter().any(|p| p == name) {
            continue;
        }
        match name.parse::<SocketAddr>() {
            Ok(a) => {
                out.insert(name.to_string(), Ok(a));
            }
            Err(_) => pending.push(name.to_string()),
        }
    }
    if pending.is_empty() {
        return out;
    }
    let waiting = pending.len();
    let queue = Arc::new(Mutex::new(pending.clone()));
    let (tx, rx) = mpsc::channel();
    for _ in 0..RESOLVERS.min(waiting) {
        let (queue, tx) = (queue.clone(), tx.clone());
        let spawned = std::thread::Builder::new()
            .name("keyway-resolve".into())
            .spawn(move || loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some(name) = next else { return };
                let result = resolve(&name);
                if tx.send((name, result)).is_err() {
                    return;
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a resolver thread: {e}");
        }
    }
    drop(tx);
    let until = Instant::now() + deadline;
    let mut answered = 0;
    while answered < waiting {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // The deadline holds even for an answer already in the channel
            // (`recv_timeout(0)` would take it): what a zero deadline means.
            break;
        }
        match rx.recv_timeout(left) {
            Ok((name, result)) => {
                answered += 1;
                out.insert(name, result.map_err(|e| Arc::from(e.to_string())));
            }
            Err(_) => break,
        }
    }
    // Whatever is left stays unanswered: the threads take no more names.
    queue.lock().unwrap_or_else(|p| p.into_inner()).clear();
    for name in pending {
        out.entry(name.clone()).or_insert_with(|| {
            Err(Arc::from(format!(
                "cannot resolve {name:?}: no answer within {}ms",
                deadline.as_millis()
            )))
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_at_once_names_by_threads_failures_named() {
        let got = resolve_all(
            [
                "127.0.0.1:7000",
                "[::1]:7001",
                "localhost:7002",
                "redis-typo.invalid:6379",
                "127.0.0.1:7000",
            ],
            Duration::from_secs(10),
        );
        assert_eq!(got.len(), 4);
        assert_eq!(got["127.0.0.1:7000"], Ok("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(got["[::1]:7001"], Ok("[::1]:7001".parse().unwrap()));
        assert_eq!(got["localhost:7002"].as_ref().unwrap().port(), 7002);
        let err = got["redis-typo.invalid:6379"].as_ref().unwrap_err();
        assert!(
            err.starts_with("cannot resolve \"redis-typo.invalid:6379\""),
            "{err}"
        );
    }

    #[test]
    fn a_name_not_answered_in_time_is_reported_and_left_behind() {
        // A zero deadline leaves any host name unanswered.
        let got = resolve_all(["localhost:1"], Duration::ZERO);
        let err = got["localhost:1"].as_ref().unwrap_err();
        assert!(err.contains("no answer within 0ms"), "{err}");
    }
}
