//! Wall-clock time as both planes record it: milliseconds since the Unix
//! epoch (lease ends a data plane keeps across restarts, timestamps in
//! keyway-ctld's state that people read).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds from the Unix epoch to `t`; zero before the epoch, and
/// `u64::MAX` past what a `u64` holds (half a billion years from now).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// [`unix_ms`] of now.
pub fn now_unix_ms() -> u64 {
    unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn milliseconds_since_the_epoch() {
        assert_eq!(unix_ms(UNIX_EPOCH), 0);
        assert_eq!(
            unix_ms(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            1_700_000_000_123
        );
        assert_eq!(
            unix_ms(UNIX_EPOCH - Duration::from_secs(1)),
            0,
            "before the epoch"
        );
        let before = now_unix_ms();
        assert!(before > 1_700_000_000_000, "a clock after 2023: {before}");
    }
}
