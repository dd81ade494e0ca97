//! The one grammar for durations people type, in the data plane's config file
//! and on keyway-ctld's and keywayctl's command lines: `"<digits><unit>"` with
//! unit `ms`, `s`, `m` or `h`, or `"0"` alone; surrounding spaces are ignored.
//! The arithmetic is checked: a duration is at most `u64::MAX` milliseconds.

use std::time::Duration;

/// Why text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No number before the unit.
    #[error("invalid duration {0:?}: expected e.g. \"500ms\", \"5s\", \"2m\"")]
    NoNumber(String),
    /// The unit is missing or unknown.
    #[error("invalid duration {0:?}: the unit must be ms, s, m or h")]
    BadUnit(String),
    /// More milliseconds than a `u64` holds.
    #[error("duration {0:?} is too large")]
    TooLarge(String),
}

/// Parses a duration in milliseconds (see the module's grammar).
pub fn parse_millis(text: &str) -> Result<u64, DurationError> {
    let s = text.trim();
    if s == "0" {
        return Ok(0);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(DurationError::NoNumber(s.to_string()));
    }
    // Only digits: failing to parse means more than a u64 holds.
    let n: u64 = num
        .parse()
        .map_err(|_| DurationError::TooLarge(s.to_string()))?;
    let scale: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(DurationError::BadUnit(s.to_string())),
    };
    n.checked_mul(scale)
        .ok_or_else(|| DurationError::TooLarge(s.to_string()))
}

/// Parses a duration (see the module's grammar).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    parse_millis(text).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_millis("0"), Ok(0));
        assert_eq!(parse_millis(" 0 "), Ok(0));
        assert_eq!(parse_millis("0s"), Ok(0));
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("5s"), Ok(5000));
        assert_eq!(parse_millis("2m"), Ok(120_000));
        assert_eq!(parse_millis("1h"), Ok(3_600_000));
        assert_eq!(parse_millis("3 h"), Ok(3 * 3_600_000));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_millis("5"), Err(DurationError::BadUnit("5".into())));
        assert_eq!(
            parse_millis("5 days"),
            Err(DurationError::BadUnit("5 days".into()))
        );
        assert_eq!(
            parse_millis("1.5s"),
            Err(DurationError::BadUnit("1.5s".into()))
        );
        assert_eq!(parse_millis("s"), Err(DurationError::NoNumber("s".into())));
        assert_eq!(
            parse_millis("-1s"),
            Err(DurationError::NoNumber("-1s".into()))
        );
        assert_eq!(parse_millis(""), Err(DurationError::NoNumber("".into())));
        assert_eq!(
            parse_millis("x").unwrap_err().to_string(),
            "invalid duration \"x\": expected e.g. \"500ms\", \"5s\", \"2m\""
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let max = u64::MAX.to_string();
        assert_eq!(parse_millis(&format!("{max}ms")), Ok(u64::MAX));
        for unit in ["s", "m", "h"] {
            let text = format!("{}{unit}", u64::MAX / 1000 + 1);
            assert_eq!(
                parse_millis(&text),
                Err(DurationError::TooLarge(text.clone()))
            );
        }
        assert_eq!(
            parse_millis("5124095576030h"),
            Ok(5_124_095_576_030 * 3_600_000)
        );
        assert!(matches!(
            parse_millis("5124095576031h"),
            Err(DurationError::TooLarge(_))
        ));
        assert!(
            matches!(
                parse_millis("99999999999999999999s"),
                Err(DurationError::TooLarge(_))
            ),
            "more digits than a u64 holds"
        );
        assert_eq!(
            parse_millis("307445734561825861m").unwrap_err().to_string(),
            "duration \"307445734561825861m\" is too large"
        );
    }
}
