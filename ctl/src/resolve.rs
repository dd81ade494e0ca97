//! Resolving the addresses an API request gives, before the change is made
//! and outside the state lock: a master that does not resolve would fence
//! every data plane of the cluster once published, so the API refuses it
//! (unless the request is forced), and two names of one server must be
//! recognised as one (`crate::model::addresses`).
//!
//! Lookups are bounded three ways: a request waits at most [`DEADLINE`] for
//! all of its lookups; at most [`MAX_LOOKUPS`] names are looked up for one
//! request; and at most [`CONCURRENT`] lookups run at once across all
//! requests (each runs `getaddrinfo` on the blocking pool, which cannot be
//! cancelled: a lookup past its request's deadline finishes in the
//! background, holding its permit). Addresses that are IP literals need no
//! lookup. The cluster's existing names are looked up too, to compare with,
//! but their results are cached for [`KNOWN_TTL`] and their failures
//! tolerated (they compare by text then).

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::model::names::{parse_address, Address};
use crate::model::Resolved;

/// How long one request waits for its lookups.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Lookups running at once, across every request.
pub const CONCURRENT: usize = 32;

/// Names one request may have looked up.
pub const MAX_LOOKUPS: usize = 4096;

/// How long a lookup of an address the cluster already uses is reused.
pub const KNOWN_TTL: Duration = Duration::from_secs(60);

/// Entries kept in the cache before it is emptied.
const CACHE_MAX: usize = 65_536;

type Lookup = Result<Vec<SocketAddr>, LookupError>;

/// Why an address did not resolve (cached with the answer, hence `Clone`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// The resolver answered with no address.
    #[error("it resolves to no address")]
    NoAddress,
    /// The resolver failed.
    #[error(transparent)]
    Resolver(Arc<std::io::Error>),
    /// The resolver is shutting down.
    #[error("the resolver is shut down")]
    ShutDown,
    /// The lookup's blocking task did not finish.
    #[error("the lookup failed: {0}")]
    Task(Arc<tokio::task::JoinError>),
    /// Past the first `MAX_LOOKUPS` host names of one request.
    #[error("not looked up: one request resolves at most {MAX_LOOKUPS} host names")]
    TooMany,
    /// No answer before the request's deadline.
    #[error("no answer within {secs}s")]
    Deadline {
        /// The deadline.
        secs: f32,
    },
}

/// What a request's addresses resolved to.
#[derive(Debug, Default)]
pub struct Lookups {
    /// Every address that resolved, new or known.
    pub resolved: Resolved,
    /// New addresses that did not, with the resolver's error.
    pub failed: Vec<(String, LookupError)>,
}

/// The resolver the API uses.
#[derive(Debug)]
pub struct Resolver {
    permits: Arc<Semaphore>,
    deadline: Duration,
    cache: Mutex<HashMap<String, (Instant, Lookup)>>,
}

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver::new(DEADLINE)
    }
}

fn lookup(addr: &str) -> Lookup {
    match addr.to_socket_addrs() {
        Ok(found) => {
            let found: Vec<SocketAddr> = found.collect();
            if found.is_empty() {
                Err(LookupError::NoAddress)
            } else {
                Ok(found)
            }
        }
        Err(e) => Err(LookupError::Resolver(Arc::new(e))),
    }
}

/// Whether `addr` is a host name (not an IP literal, not malformed).
fn is_name(addr: &str) -> bool {
    matches!(parse_address(addr), Ok(Address::Name(..)))
}

impl Resolver {
    /// A resolver whose requests wait at most `deadline`.
    pub fn new(deadline: Duration) -> Resolver {
        Resolver {
            permits: Arc::new(Semaphore::new(CONCURRENT)),
            deadline,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Lookup)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves `new` (each must resolve; the failures are returned) and
    /// `known` (the cluster's addresses, to compare with: best effort).
    /// Malformed addresses are left to the model to refuse.
    pub async fn resolve(&self, new: &[String], known: &[String]) -> Lookups {
        let mut out = Lookups::default();
        let fresh: Vec<String> = unique(new.iter().filter(|a| is_name(a)));
        let mut todo: Vec<(String, bool)> = Vec::new();
        for a in fresh.iter().take(MAX_LOOKUPS) {
            todo.push((a.clone(), true));
        }
        for a in fresh.iter().skip(MAX_LOOKUPS) {
            out.failed.push((a.clone(), LookupError::TooMany));
        }
        let fresh: HashSet<&String> = fresh.iter().collect();
        {
            let cache = self.cache();
            for a in unique(known.iter().filter(|a| is_name(a) && !fresh.contains(a))) {
                match cache.get(&a).filter(|(at, _)| at.elapsed() < KNOWN_TTL) {
                    Some((_, Ok(to))) => out.resolved.insert(&a, to.clone()),
                    Some((_, Err(_))) => {}
                    None if todo.len() < MAX_LOOKUPS => todo.push((a, false)),
                    None => {}
                }
            }
        }
        let mut set = JoinSet::new();
        for (addr, is_new) in todo.iter().cloned() {
            let permits = self.permits.clone();
            set.spawn(async move {
                let Ok(permit) = permits.acquire_owned().await else {
                    return (addr, is_new, Err(LookupError::ShutDown));
                };
                let a = addr.clone();
                let r = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    lookup(&a)
                })
                .await
                .unwrap_or_else(|e| Err(LookupError::Task(Arc::new(e))));
                (addr, is_new, r)
            });
        }
        let mut done: HashMap<String, Lookup> = HashMap::new();
        let _ = tokio::time::timeout(self.deadline, async {
            while let Some(r) = set.join_next().await {
                if let Ok((addr, _, r)) = r {
                    done.insert(addr, r);
                }
            }
        })
        .await;
        let mut cache = self.cache();
        if cache.len() > CACHE_MAX {
            cache.clear();
        }
        for (addr, is_new) in todo {
            match done.remove(&addr) {
                Some(r) => {
                    match &r {
                        Ok(to) => out.resolved.insert(&addr, to.clone()),
                        Err(e) if is_new => out.failed.push((addr.clone(), e.clone())),
                        Err(_) => {}
                    }
                    cache.insert(addr, (Instant::now(), r));
                }
                None if is_new => out.failed.push((
                    addr,
                    LookupError::Deadline {
                        secs: self.deadline.as_secs_f32(),
                    },
                )),
                None => {}
            }
        }
        out
    }
}

fn unique<'a>(addrs: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut seen = HashSet::new();
    addrs.filter(|a| seen.insert(a.as_str())).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[tokio::test]
    async fn names_resolve_literals_need_not_and_failures_are_named() {
        let r = Resolver::default();
        let got = r
            .resolve(
                &s(&[
                    "localhost:7001",
                    "127.0.0.1:7002",
                    "no-such-host.invalid:1",
                    "bad",
                ]),
                &s(&["localhost:7003"]),
            )
            .await;
        let local = got
            .resolved
            .get("localhost:7001")
            .expect("localhost resolves");
        assert!(
            local.contains(&"127.0.0.1:7001".parse().unwrap()),
            "{local:?}"
        );
        assert!(
            got.resolved.get("localhost:7003").is_some(),
            "known ones too"
        );
        assert!(
            got.resolved.get("127.0.0.1:7002").is_none(),
            "no lookup for an IP"
        );
        assert_eq!(got.failed.len(), 1, "{:?}", got.failed);
        assert_eq!(got.failed[0].0, "no-such-host.invalid:1");
        // The resolver refuses it, or (no resolver reachable) the deadline.
        assert!(
            matches!(
                got.failed[0].1,
                LookupError::Resolver(_) | LookupError::NoAddress | LookupError::Deadline { .. }
            ),
            "{:?}",
            got.failed[0].1
        );
    }

    #[tokio::test]
    async fn known_failures_are_tolerated_and_cached() {
        let r = Resolver::default();
        let got = r.resolve(&[], &s(&["no-such-host.invalid:1"])).await;
        assert!(got.failed.is_empty());
        assert!(r.cache().contains_key("no-such-host.invalid:1"));
    }
}
