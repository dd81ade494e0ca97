//! A small writer of the Prometheus text format 0.0.4: one family at a time
//! (`# HELP`, `# TYPE`, then its samples), label values escaped, histograms
//! as cumulative `_bucket{le}` lines with `_sum` and `_count`. What ctld's
//! `GET /metrics` is written with; `promtool check metrics` checks its
//! output in `ctl/tests/metrics.rs`.

use std::fmt::Write;

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted in buckets.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A histogram's values at one moment: per-bucket counts (not
/// cumulative), the count above the last bound, and the sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramValues {
    /// Upper bounds, ascending (seconds).
    pub bounds: &'static [f64],
    /// Observations in each bucket (`bounds[i-1] < v <= bounds[i]`), then
    /// one more for those above the last bound.
    pub counts: Vec<u64>,
    /// The sum of the observations.
    pub sum: f64,
}

/// The text being written.
#[derive(Debug, Default)]
pub struct Encoder {
    out: String,
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A value as Prometheus reads it (`+Inf`, `-Inf`, `NaN`, or the number).
fn number(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

impl Encoder {
    /// An empty text.
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Starts a family: its help (one line) and type.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        let le = le.map(|v| ("le", v));
        for (k, v) in labels.iter().copied().chain(le) {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_label(v, &mut self.out);
            self.out.push('"');
        }
        self.out.push('}');
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        number(value, &mut self.out);
        self.out.push('\n');
    }

    /// One histogram of the current family (named `name`): cumulative
    /// buckets up to `+Inf`, `_sum`, `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramValues) {
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        let mut le = String::new();
        for (i, &bound) in h.bounds.iter().enumerate() {
            cumulative += h.counts.get(i).copied().unwrap_or(0);
            le.clear();
            number(bound, &mut le);
            self.out.push_str(&bucket);
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        cumulative += h.counts.get(h.bounds.len()).copied().unwrap_or(0);
        self.out.push_str(&bucket);
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.out, " {cumulative}");
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut e = Encoder::new();
        e.family("x_total", Kind::Counter, "help\nwith a newline");
        e.sample("x_total", &[("a", "q\"b\\c\nd"), ("b", "plain")], 3.0);
        assert_eq!(
            e.finish(),
            "# HELP x_total help with a newline\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"b\\\\c\\nd\",b=\"plain\"} 3\n",
            "quote, backslash and newline are escaped; help stays on one line"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let mut e = Encoder::new();
        e.family("d_seconds", Kind::Histogram, "d");
        e.histogram(
            "d_seconds",
            &[("store", "file")],
            &HistogramValues {
                bounds: &[0.5, 1.0, 2.5],
                counts: vec![1, 0, 2, 4],
                sum: 12.25,
            },
        );
        let text = e.finish();
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            lines,
            [
                "d_seconds_bucket{store=\"file\",le=\"0.5\"} 1",
                "d_seconds_bucket{store=\"file\",le=\"1\"} 1",
                "d_seconds_bucket{store=\"file\",le=\"2.5\"} 3",
                "d_seconds_bucket{store=\"file\",le=\"+Inf\"} 7",
                "d_seconds_sum{store=\"file\"} 12.25",
                "d_seconds_count{store=\"file\"} 7",
            ],
            "buckets count everything at or below their bound; +Inf equals _count"
        );
    }

    #[test]
    fn samples_without_labels_have_no_braces() {
        let mut e = Encoder::new();
        e.sample("g", &[], 0.25);
        e.sample("n", &[], f64::NAN);
        assert_eq!(e.finish(), "g 0.25\nn NaN\n");
    }
}
