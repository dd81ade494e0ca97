//! What names, zones, ids and addresses may look like, and the bounds on
//! everything the API accepts. One place, so that the API, the store's load
//! and the control sessions check the same rules.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

pub use keyway_capnp::snapshot::MAX_GROUPS;

use super::slots::quote;
use super::ModelError;

/// Longest cluster, group or zone name.
pub const MAX_NAME: usize = 64;

/// Longest data-plane id (a default id is the host name and the port).
pub const MAX_ID: usize = 128;

/// Longest host name (DNS's limit).
pub const MAX_HOST: usize = 253;

/// Most replicas a group may have.
pub const MAX_REPLICAS: usize = 16;

/// Shortest lease a cluster may give its data planes, milliseconds.
pub const MIN_LEASE_MS: u64 = 1_000;

/// Longest lease, milliseconds (ten minutes): a data plane cut off from ctld
/// keeps serving that long, and a migration may wait that long for it.
pub const MAX_LEASE_MS: u64 = 600_000;

/// A name, zone, id, address or lease that breaks its rule. Texts are
/// quoted and bounded as the message shows them (`super::slots::quote`), so
/// a hostile input never makes a long reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A cluster or group name (`what` says which).
    #[error(
        "{what} name {name}: 1 to {MAX_NAME} letters, digits, '-', '_' or '.', \
         starting with a letter or digit"
    )]
    Name {
        /// "cluster" or "group".
        what: &'static str,
        /// The name, quoted.
        name: String,
    },
    /// A zone.
    #[error(
        "zone {0}: up to {MAX_NAME} letters, digits, '-', '_' or '.', \
         starting with a letter or digit"
    )]
    Zone(String),
    /// A data plane's id.
    #[error(
        "data plane id {0}: 1 to {MAX_ID} letters, digits, '-', '_' or '.', \
         starting with a letter or digit"
    )]
    Id(String),
    /// A `host:port`.
    #[error("{address}{problem}")]
    Address {
        /// The address, quoted.
        address: String,
        /// What is wrong with it.
        problem: AddressProblem,
    },
    /// A lease length out of bounds.
    #[error(
        "lease of {ms} ms: it must be from {}s to {}s",
        MIN_LEASE_MS / 1000,
        MAX_LEASE_MS / 1000
    )]
    Lease {
        /// The lease asked for, milliseconds.
        ms: u64,
    },
}

impl From<NameError> for ModelError {
    fn from(e: NameError) -> ModelError {
        ModelError::invalid(e.to_string())
    }
}

/// What is wrong with a `host:port` (the text after the quoted address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressProblem {
    /// Longer than any host and port.
    #[error(" is too long for host:port (host names have at most {MAX_HOST} characters)")]
    TooLong,
    /// No colon.
    #[error(" is not host:port")]
    NotHostPort,
    /// The port is not 1 to 65535.
    #[error(" has no valid port")]
    Port,
    /// Brackets without an IPv6 address.
    #[error(" has no valid IPv6 address in brackets")]
    Ipv6,
    /// Nothing before the port.
    #[error(" has no host")]
    NoHost,
    /// An IPv6 address without brackets.
    #[error(": write an IPv6 address in brackets, as [::1]:6379")]
    Unbracketed,
    /// Digits and dots that are not an IPv4 address.
    #[error(" has no valid IPv4 address")]
    Ipv4,
    /// Not a host name.
    #[error(
        " has no valid host: a name (letters, digits, '-', '.'; at most {MAX_HOST}), \
         an IPv4 address, or an IPv6 address in brackets"
    )]
    Host,
}

/// `[A-Za-z0-9._-]`, starting with a letter or digit, 1 to `max` bytes.
fn name_like(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks a cluster or group name; `what` says which, for the message.
pub fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if name_like(name, MAX_NAME) {
        Ok(())
    } else {
        Err(NameError::Name {
            what,
            name: quote(name),
        })
    }
}

/// Checks a zone (or rack): like a name, or empty for none.
pub fn check_zone(zone: &str) -> Result<(), NameError> {
    if zone.is_empty() || name_like(zone, MAX_NAME) {
        Ok(())
    } else {
        Err(NameError::Zone(quote(zone)))
    }
}

/// Checks a data plane's id.
pub fn check_id(id: &str) -> Result<(), NameError> {
    if name_like(id, MAX_ID) {
        Ok(())
    } else {
        Err(NameError::Id(quote(id)))
    }
}

/// A host name: dot-separated labels of letters, digits, '-' and '_' (1 to
/// 63 each, not starting or ending with '-'), at most [`MAX_HOST`] in all,
/// optionally ending with a dot.
fn hostname(host: &str) -> bool {
    let bare = host.strip_suffix('.').unwrap_or(host);
    !bare.is_empty()
        && host.len() <= MAX_HOST
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A checked `host:port`: the host is a name, an IPv4 address, or an IPv6
/// address in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// An IP address: nothing to resolve.
    Ip(SocketAddr),
    /// A host name (lowercased, without a final dot) and port.
    Name(String, u16),
}

impl Address {
    /// The canonical text (`127.0.0.1:6379`, `[::1]:6379`, `redis-a:6379`):
    /// equal for two spellings of one address.
    pub fn canonical(&self) -> String {
        match self {
            Address::Ip(a) => a.to_string(),
            Address::Name(h, p) => format!("{h}:{p}"),
        }
    }
}

/// Checks `host:port` (not resolved here: see `crate::resolve`).
pub fn parse_address(addr: &str) -> Result<Address, NameError> {
    let bad = |problem| NameError::Address {
        address: quote(addr),
        problem,
    };
    if addr.len() > MAX_HOST + 8 {
        return Err(bad(AddressProblem::TooLong));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| bad(AddressProblem::NotHostPort))?;
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 && !port.starts_with('+') => p,
        _ => return Err(bad(AddressProblem::Port)),
    };
    if let Some(inner) = host.strip_prefix('[') {
        let ip = inner
            .strip_suffix(']')
            .and_then(|i| i.parse::<Ipv6Addr>().ok())
            .ok_or_else(|| bad(AddressProblem::Ipv6))?;
        return Ok(Address::Ip(SocketAddr::new(IpAddr::V6(ip), port)));
    }
    if host.is_empty() {
        return Err(bad(AddressProblem::NoHost));
    }
    if host.contains(':') {
        return Err(bad(AddressProblem::Unbracketed));
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Ok(Address::Ip(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad(AddressProblem::Ipv4));
    }
    if !hostname(host) {
        return Err(bad(AddressProblem::Host));
    }
    let bare = host.strip_suffix('.').unwrap_or(host);
    Ok(Address::Name(bare.to_ascii_lowercase(), port))
}

/// Checks a lease length.
pub fn check_lease(ms: u64) -> Result<(), NameError> {
    if (MIN_LEASE_MS..=MAX_LEASE_MS).contains(&ms) {
        Ok(())
    } else {
        Err(NameError::Lease { ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_start_with_a_letter_or_digit_and_are_bounded() {
        for ok in ["a", "shop", "g1", "a.b_c-d", "0", &"x".repeat(64)] {
            check_name("cluster", ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "-a",
            "_a",
            "a/b",
            "a b",
            "a\0",
            "é",
            &"x".repeat(65),
        ] {
            assert!(check_name("cluster", bad).is_err(), "{bad:?}");
        }
        let e = check_name("group", &"/".repeat(5000))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200, "the message quotes a bounded piece: {e}");
        check_zone("").unwrap();
        check_zone("rack-a").unwrap();
        assert!(check_zone("rack a").is_err());
        assert!(check_zone(&"z".repeat(65)).is_err());
        check_id("host.example.com-6380").unwrap();
        assert!(check_id(&"d".repeat(129)).is_err());
        assert!(check_id("dp/1").is_err());
    }

    #[test]
    fn addresses() {
        let ip = |s: &str| parse_address(s).unwrap().canonical();
        assert_eq!(ip("127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(ip("[::1]:6379"), "[::1]:6379");
        assert_eq!(ip("[0:0::1]:6379"), "[::1]:6379");
        assert_eq!(ip("127.0.0.1:06379"), "127.0.0.1:6379");
        assert_eq!(ip("Redis-A.example:7000"), "redis-a.example:7000");
        assert_eq!(ip("localhost.:1"), "localhost:1");
        assert_eq!(
            parse_address("h:x").unwrap_err().to_string(),
            "\"h:x\" has no valid port"
        );
        assert_eq!(
            parse_address("::1:6379").unwrap_err().to_string(),
            "\"::1:6379\": write an IPv6 address in brackets, as [::1]:6379"
        );
        assert!(matches!(
            parse_address("10.0.0.1:1").unwrap(),
            Address::Ip(_)
        ));
        let long_ok = format!("{}.b:1", vec!["a".repeat(63); 3].join("."));
        assert!(long_ok.len() < MAX_HOST + 8);
        parse_address(&long_ok).unwrap();
        for bad in [
            "nohost",
            ":6379",
            "h:0",
            "h:65536",
            "h:+1",
            "h:x",
            "::1:6379",
            "[::1:6379",
            "[nope]:1",
            "300.1.1.1:1",
            "a/b:1",
            "a?b:1",
            "a\0b:1",
            "a b:1",
            "-a:1",
            "a..b:1",
            &format!("{}:1", "a".repeat(64)),
            &format!("{}:1", "a.".repeat(200)),
            &format!("{}:1", "h".repeat(10_000)),
        ] {
            let e = parse_address(bad);
            assert!(e.is_err(), "{bad:?} was accepted");
            assert!(e.unwrap_err().to_string().len() < 300);
        }
    }

    #[test]
    fn leases() {
        check_lease(1000).unwrap();
        check_lease(600_000).unwrap();
        assert_eq!(
            check_lease(999).unwrap_err().to_string(),
            "lease of 999 ms: it must be from 1s to 600s"
        );
        assert!(check_lease(600_001).is_err());
        assert!(check_lease(u64::MAX).is_err());
    }
}
