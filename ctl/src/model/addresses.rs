//! When two addresses are one server. `127.0.0.1:7001` and
//! `localhost:7001` are the same Redis: a cluster must not use it twice
//! (as two groups' masters, or a master and a replica). Each address is known
//! by its keys — every socket address it resolved to, and its canonical text
//! (`crate::model::names::Address::canonical`) — and two addresses are one
//! server when their keys meet.
//!
//! Resolving is the API's job, done before a change and outside the state
//! lock (`crate::resolve`); the model only compares. An address nobody
//! resolved (the store's load, or one that did not resolve and was forced)
//! is known by its canonical text alone.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::names::{parse_address, Address};
use super::ModelError;

/// What addresses resolved to, by their text as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved(HashMap<String, Vec<SocketAddr>>);

impl Resolved {
    /// Nothing resolved: addresses compare by canonical text.
    pub fn none() -> Resolved {
        Resolved::default()
    }

    /// Records what `addr` resolved to.
    pub fn insert(&mut self, addr: &str, to: Vec<SocketAddr>) {
        self.0.insert(addr.to_string(), to);
    }

    /// What `addr` resolved to, if it was resolved.
    pub fn get(&self, addr: &str) -> Option<&[SocketAddr]> {
        self.0.get(addr).map(Vec::as_slice)
    }

    fn keys(&self, addr: &str) -> Vec<Key> {
        let mut out = vec![match parse_address(addr) {
            Ok(Address::Ip(a)) => Key::Socket(a),
            Ok(a) => Key::Text(a.canonical()),
            Err(_) => Key::Text(addr.to_string()),
        }];
        if let Some(r) = self.get(addr) {
            out.extend(r.iter().map(|a| Key::Socket(*a)));
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Socket(SocketAddr),
    Text(String),
}

/// The servers a cluster uses so far, to refuse one given twice. Linear:
/// each address is looked up by its keys.
#[derive(Debug)]
pub struct Used<'r> {
    cluster: String,
    resolved: &'r Resolved,
    by_key: HashMap<Key, String>,
}

impl<'r> Used<'r> {
    /// None yet, for cluster `cluster`.
    pub fn new(cluster: &str, resolved: &'r Resolved) -> Used<'r> {
        Used {
            cluster: cluster.to_string(),
            resolved,
            by_key: HashMap::new(),
        }
    }

    /// Records `addr`; refused if it is a server already recorded.
    pub fn claim(&mut self, addr: &str) -> Result<(), ModelError> {
        let keys = self.resolved.keys(addr);
        if let Some(other) = keys.iter().find_map(|k| self.by_key.get(k)) {
            return Err(ModelError::conflict(if other == addr {
                format!("{addr} is already used in cluster {:?}", self.cluster)
            } else {
                format!(
                    "{addr} is the same server as {other}, already used in cluster {:?}",
                    self.cluster
                )
            }));
        }
        for k in keys {
            self.by_key.insert(k, addr.to_string());
        }
        Ok(())
    }

    /// Forgets `addr` (a master being replaced).
    pub fn release(&mut self, addr: &str) {
        self.by_key.retain(|_, a| a != addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_and_resolutions_of_one_server_clash() {
        let none = Resolved::none();
        let mut used = Used::new("c", &none);
        used.claim("127.0.0.1:7001").unwrap();
        let e = used.claim("127.0.0.1:07001").unwrap_err();
        assert!(e.message.contains("same server as 127.0.0.1:7001"), "{e}");
        used.claim("Redis-A:7001").unwrap();
        assert!(used.claim("redis-a.:7001").is_err(), "case and final dot");
        used.claim("127.0.0.1:7002").unwrap();
        used.release("127.0.0.1:7002");
        used.claim("127.0.0.1:7002").unwrap();

        let mut resolved = Resolved::none();
        resolved.insert(
            "localhost:7001",
            vec![
                "127.0.0.1:7001".parse().unwrap(),
                "[::1]:7001".parse().unwrap(),
            ],
        );
        let mut used = Used::new("c", &resolved);
        used.claim("127.0.0.1:7001").unwrap();
        let e = used.claim("localhost:7001").unwrap_err();
        assert_eq!(e.kind, crate::model::ErrorKind::Conflict);
        assert!(e
            .message
            .contains("localhost:7001 is the same server as 127.0.0.1:7001"));
        let mut used = Used::new("c", &resolved);
        used.claim("localhost:7001").unwrap();
        assert!(used.claim("[::1]:7001").is_err(), "either way round");
        used.claim("localhost:7002").unwrap();
    }
}
