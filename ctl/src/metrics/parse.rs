//! Reads the Prometheus text format (what keyway's and ctld's `/metrics`
//! write) into samples, and computes from two scrapes what `keywayctl top`
//! shows: rates of counters, and quantiles of histograms interpolated
//! within buckets as Prometheus's `histogram_quantile` does.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (for a histogram: `…_bucket`, `…_sum`, `…_count`).
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if it has one.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A line that is not the text format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ParseError {
    /// The line number (from 1).
    pub line: usize,
    /// What is wrong.
    pub what: &'static str,
}

fn value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        s => s.parse().ok(),
    }
}

/// Parses `{k="v",…}` at the start of `s`; returns the labels and the rest.
fn labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut out = Vec::new();
    let mut rest = s.strip_prefix('{')?;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(r) = rest.strip_prefix('}') {
            return Some((out, r));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        let body = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut chars = body.char_indices();
        let mut v = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => v.push('\n'),
                    c => v.push(c),
                },
                c => v.push(c),
            }
        };
        out.push((key, v));
        rest = &body[end + 1..];
    }
}

/// Parses a whole text. Comments and blank lines are skipped; a sample's
/// timestamp, if any, is ignored.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |what| ParseError { line: n + 1, what };
        let name_end = line.find(['{', ' ']).ok_or(err("no value"))?;
        let name = &line[..name_end];
        let (labels, rest) = if line[name_end..].starts_with('{') {
            labels(&line[name_end..]).ok_or(err("bad labels"))?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let v = rest
            .split_whitespace()
            .next()
            .and_then(value)
            .ok_or(err("bad value"))?;
        out.push(Sample {
            name: name.to_string(),
            labels,
            value: v,
        });
    }
    Ok(out)
}

/// Does `s` carry every label of `want`?
fn matches(s: &Sample, want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| s.label(k) == Some(v))
}

/// The sum of the samples named `name` with the labels `want`.
pub fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && matches(s, want))
        .map(|s| s.value)
        .sum()
}

/// The values of label `key` among the samples named `name`.
pub fn label_values(samples: &[Sample], name: &str, key: &str) -> Vec<String> {
    let mut out: Vec<String> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter_map(|s| s.label(key).map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Cumulative bucket counts by upper bound (`+Inf` last) of histogram
/// `name` (without `_bucket`), summed over the series with labels `want`.
pub fn buckets(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == bucket && matches(s, want))
    {
        let Some(le) = s.label("le").and_then(value) else {
            continue;
        };
        // f64's order on non-negative bounds is its bits' order.
        let e = by_le.entry(le.max(0.0).to_bits()).or_insert((le, 0.0));
        e.1 += s.value;
    }
    by_le.into_values().collect()
}

/// `later` minus `earlier`, bucket by bucket (a bound missing from
/// `earlier` counts from 0; a counter that went down restarted: `later`).
pub fn delta(later: &[(f64, f64)], earlier: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let restarted = later
        .iter()
        .any(|(le, n)| earlier.iter().any(|(l, m)| l == le && m > n));
    later
        .iter()
        .map(|&(le, n)| {
            let before = if restarted {
                0.0
            } else {
                earlier
                    .iter()
                    .find(|(l, _)| *l == le)
                    .map_or(0.0, |(_, m)| *m)
            };
            (le, n - before)
        })
        .collect()
}

/// Quantile `q` (0..=1) of cumulative `buckets`, interpolated linearly
/// within the bucket it falls in (from 0 for the first); in the `+Inf`
/// bucket, the highest finite bound. `None` with no observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || buckets.last()?.0 != f64::INFINITY {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, n) in buckets {
        if n >= rank && n > below {
            if le == f64::INFINITY {
                return Some(lower);
            }
            return Some(lower + (le - lower) * (rank - below) / (n - below));
        }
        lower = if le.is_finite() { le } else { lower };
        below = n;
    }
    Some(lower)
}

/// The rate per second of a counter that went from `earlier` to `later`
/// in `secs` (a counter that went down restarted: `later` counts from 0).
pub fn rate(later: f64, earlier: f64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    let d = if later >= earlier {
        later - earlier
    } else {
        later
    };
    d / secs
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANNED: &str = r#"# HELP keyway_requests_total Requests.
# TYPE keyway_requests_total counter
keyway_requests_total{command="get",result="ok"} 10
keyway_requests_total{command="set",result="ok"} 5
keyway_requests_total{command="get",result="error"} 2 1700000000000
keyway_requests_total{command="weird\"na\\me",result="refused"} 1
# TYPE keyway_request_duration_seconds histogram
keyway_request_duration_seconds_bucket{family="string",le="0.001"} 4
keyway_request_duration_seconds_bucket{family="string",le="0.0025"} 8
keyway_request_duration_seconds_bucket{family="string",le="+Inf"} 10
keyway_request_duration_seconds_sum{family="string"} 0.02
keyway_request_duration_seconds_count{family="string"} 10
keyway_request_duration_seconds_bucket{family="hash",le="0.001"} 0
keyway_request_duration_seconds_bucket{family="hash",le="0.0025"} 0
keyway_request_duration_seconds_bucket{family="hash",le="+Inf"} 0
keyway_client_connections 3
"#;

    #[test]
    fn the_parser_reads_labels_escapes_and_timestamps() {
        let s = parse(CANNED).expect("canned text parses");
        assert_eq!(s.len(), 13, "every sample line, comments skipped");
        assert_eq!(
            s[3].label("command"),
            Some("weird\"na\\me"),
            "escapes undone"
        );
        assert_eq!(sum(&s, "keyway_requests_total", &[]), 18.0);
        assert_eq!(
            sum(&s, "keyway_requests_total", &[("result", "ok")]),
            15.0,
            "filtered by label"
        );
        assert_eq!(sum(&s, "keyway_client_connections", &[]), 3.0);
        assert_eq!(
            label_values(&s, "keyway_request_duration_seconds_count", "family"),
            ["string"]
        );
        assert!(
            parse("x{a=\"b} 1").is_err(),
            "an unterminated label is an error"
        );
        assert!(parse("x 1\ny zz").is_err(), "a bad value is an error");
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let s = parse(CANNED).expect("canned text parses");
        let b = buckets(
            &s,
            "keyway_request_duration_seconds",
            &[("family", "string")],
        );
        assert_eq!(b, [(0.001, 4.0), (0.0025, 8.0), (f64::INFINITY, 10.0)]);
        let p50 = quantile(0.5, &b).expect("observations");
        // rank 5: the second bucket (4..8), a quarter of the way in.
        assert!((p50 - 0.001375).abs() < 1e-12, "p50 {p50}");
        let p25 = quantile(0.25, &b).expect("observations");
        assert!(
            (p25 - 0.000625).abs() < 1e-12,
            "p25 {p25}: from 0 in the first"
        );
        assert_eq!(
            quantile(0.99, &b),
            Some(0.0025),
            "+Inf: the highest finite bound"
        );
        let empty = buckets(&s, "keyway_request_duration_seconds", &[("family", "hash")]);
        assert_eq!(quantile(0.5, &empty), None, "no observations, no quantile");
    }

    #[test]
    fn deltas_and_rates_of_two_scrapes() {
        let before = [(0.001, 4.0), (0.0025, 8.0), (f64::INFINITY, 10.0)];
        let after = [(0.001, 4.0), (0.0025, 18.0), (f64::INFINITY, 20.0)];
        let d = delta(&after, &before);
        assert_eq!(d, [(0.001, 0.0), (0.0025, 10.0), (f64::INFINITY, 10.0)]);
        let p50 = quantile(0.5, &d).expect("ten new observations");
        assert!(
            (p50 - 0.00175).abs() < 1e-12,
            "p50 of the second only: {p50}"
        );
        let restarted = delta(&[(0.001, 1.0), (f64::INFINITY, 1.0)], &before);
        assert_eq!(
            restarted,
            [(0.001, 1.0), (f64::INFINITY, 1.0)],
            "reset: from 0"
        );
        assert_eq!(rate(30.0, 10.0, 2.0), 10.0);
        assert_eq!(rate(4.0, 10.0, 1.0), 4.0, "a counter reset counts from 0");
        assert_eq!(rate(4.0, 1.0, 0.0), 0.0);
    }
}
