//! `keywayctl events CLUSTER [--since SEQ]`: a cluster's recent structured
//! events (`GET /v1/clusters/{name}/events`), oldest first: number, time
//! (UTC), who, kind, and what as compact JSON.

use super::{emit, table, CliError};
use crate::client::Client;
use crate::wire::Event;

/// `at_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn utc(at_ms: u64) -> String {
    let (days, ms) = (at_ms / 86_400_000, at_ms % 86_400_000);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn who(e: &Event) -> String {
    match (&e.peer, &e.route) {
        (Some(p), Some(r)) => format!("{} {p} {r}", e.who),
        (None, Some(r)) => format!("{} {r}", e.who),
        _ => e.who.clone(),
    }
}

/// Prints the events of `cluster` numbered above `since`.
pub fn run(c: &Client, cluster: &str, since: u64, json: bool) -> Result<(), CliError> {
    let events: Vec<Event> = c.get(&format!("/v1/clusters/{cluster}/events?since={since}"))?;
    emit(json, &events, |events| {
        let rows = events
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    utc(e.at_ms),
                    who(e),
                    e.kind.clone(),
                    e.what.to_string(),
                ]
            })
            .collect();
        table(&["SEQ", "TIME", "WHO", "KIND", "WHAT"], rows);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000 + 1_234), "2000-02-29T00:00:01.234Z");
        assert_eq!(utc(1_796_300_000_000), "2026-12-03T12:13:20.000Z");
    }
}
