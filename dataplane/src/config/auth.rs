//! `[auth]`: failed-`AUTH` rate limiting and the ACL log, with their
//! documented defaults. (Users are `[[user]]` tables: see [`crate::acl`].)

use serde::Deserialize;

use super::units::{self, Millis};
use super::{invalid, ConfigError};

/// Client authentication settings (`[auth]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Failed `AUTH` (or `HELLO … AUTH`) attempts one client IP address (an
    /// IPv6 address's /64 prefix) may make within `failure_window` (default
    /// 10); past it, its attempts are refused unchecked until the window
    /// ends. 0: no limit.
    pub max_failures: u32,
    /// The window over which failures are counted (default "60s").
    #[serde(deserialize_with = "units::duration")]
    pub failure_window: Millis,
    /// Client addresses (IPv6: /64 prefixes) whose failures are remembered
    /// at once (default 4096): the oldest is forgotten first.
    pub tracked_addresses: usize,
    /// `ACL LOG` entries kept (default 128, as Redis's `acllog-max-len`).
    pub acllog_max_len: usize,
}

impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            max_failures: 10,
            failure_window: Millis(60_000),
            tracked_addresses: 4096,
            acllog_max_len: 128,
        }
    }
}

/// Most `auth.tracked_addresses`.
pub const MAX_TRACKED: usize = 1 << 20;
/// Most `auth.acllog_max_len`.
pub const MAX_ACLLOG: usize = 100_000;

pub(super) fn check(a: &AuthSettings) -> Result<(), ConfigError> {
    if a.tracked_addresses == 0 || a.tracked_addresses > MAX_TRACKED {
        return Err(invalid(format!(
            "auth.tracked_addresses must be 1 to {MAX_TRACKED}"
        )));
    }
    if a.acllog_max_len > MAX_ACLLOG {
        return Err(invalid(format!(
            "auth.acllog_max_len is at most {MAX_ACLLOG}"
        )));
    }
    if a.max_failures > 0 && a.failure_window.0 == 0 {
        return Err(invalid(
            "auth.failure_window must be more than 0 when auth.max_failures is set",
        ));
    }
    Ok(())
}
