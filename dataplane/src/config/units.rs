//! Durations (`"500ms"`, `"5s"`, `"2m"`, `"1h"`, `"0"`) and byte sizes (`1024`,
//! `"64kb"`, `"512mb"`, `"1gb"`, `"16MiB"`) in the config file. Sizes follow
//! Redis's config conventions: `k`/`m`/`g` are powers of 1000, `kb`/`mb`/`gb`
//! and `KiB`/`MiB`/`GiB` powers of 1024.

use std::fmt;
use std::time::Duration;

use keyway_capnp::duration::DurationError;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration read from the config; zero often means "disabled".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// As a `Duration`.
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }

    /// `None` when zero (disabled).
    pub fn enabled(self) -> Option<Duration> {
        (self.0 > 0).then(|| self.duration())
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1000 == 0 {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

/// Parses `"<number><unit>"` with unit `ms`, `s`, `m` or `h`; `"0"` alone is
/// zero: the grammar shared with keyway-ctld and keywayctl
/// ([`keyway_capnp::duration`]), with checked arithmetic.
pub fn parse_duration(s: &str) -> Result<Millis, DurationError> {
    keyway_capnp::duration::parse_millis(s).map(Millis)
}

/// Why a size does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// No number first.
    #[error("invalid size {0:?}: expected e.g. 1024, \"64kb\", \"512mb\"")]
    Number(String),
    /// An unknown unit.
    #[error("invalid size {0:?}: the unit must be b, k, kb, m, mb, g or gb")]
    Unit(String),
    /// More than 2^64 - 1 bytes.
    #[error("size {0:?} is too large")]
    TooLarge(String),
}

/// Parses a byte size: a plain number of bytes, or a number with a unit.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| SizeError::Number(s.into()))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" | "kib" => 1 << 10,
        "m" => 1_000_000,
        "mb" | "mib" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" | "gib" => 1 << 30,
        _ => return Err(SizeError::Unit(s.into())),
    };
    n.checked_mul(scale)
        .ok_or_else(|| SizeError::TooLarge(s.into()))
}

/// Deserializes a duration string.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(de::Error::custom)
}

/// Deserializes a byte size given as an integer or a string with a unit.
pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct SizeVisitor;
    impl Visitor<'_> for SizeVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size in bytes, or a string such as \"64mb\"")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("a size cannot be negative"))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_size(v).map_err(E::custom)
        }
    }
    d.deserialize_any(SizeVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Millis(0)));
        assert_eq!(parse_duration("250ms"), Ok(Millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Millis(5000)));
        assert_eq!(parse_duration("2m"), Ok(Millis(120_000)));
        assert_eq!(parse_duration("1h"), Ok(Millis(3_600_000)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("5 days").is_err());
        assert_eq!(Millis(5000).to_string(), "5s");
        assert_eq!(Millis(1500).to_string(), "1500ms");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1k"), Ok(1000));
        assert_eq!(parse_size("1kb"), Ok(1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512mb"), Ok(512 << 20));
        assert_eq!(parse_size("1gb"), Ok(1 << 30));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999gb").is_err());
    }
}
