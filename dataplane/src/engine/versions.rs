//! Requests in flight per routing-table version, so a core can tell when every
//! request routed under an older table has completed (the control plane acks
//! a new version only then).

use std::collections::VecDeque;

/// The version of a request in flight that does not hold back a new
/// table's ack: a blocked command (see `engine::blocking`), which may wait
/// forever, and is sent again if the new table moves its keys.
pub(crate) const UNCOUNTED: u64 = u64::MAX;

/// Counts of in-flight requests by version, oldest first.
#[derive(Debug, Default)]
pub(crate) struct VersionCounts {
    counts: VecDeque<(u64, u64)>,
}

impl VersionCounts {
    /// A request routed under `version` was sent.
    #[inline]
    pub fn add(&mut self, version: u64) {
        match self.counts.back_mut() {
            Some((v, n)) if *v == version => *n += 1,
            _ => self.counts.push_back((version, 1)),
        }
    }

    /// A request routed under `version` completed (replied or failed).
    #[inline]
    pub fn done(&mut self, version: u64) {
        if let Some(i) = self.counts.iter().position(|&(v, _)| v == version) {
            self.counts[i].1 -= 1;
            if self.counts[i].1 == 0 {
                self.counts.remove(i);
            }
        }
    }

    /// The oldest version with requests still in flight.
    pub fn oldest(&self) -> Option<u64> {
        self.counts.iter().map(|&(v, _)| v).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_the_oldest_version_in_flight() {
        let mut c = VersionCounts::default();
        assert_eq!(c.oldest(), None);
        c.add(1);
        c.add(1);
        c.add(2);
        assert_eq!(c.oldest(), Some(1));
        c.done(1);
        assert_eq!(c.oldest(), Some(1));
        c.done(1);
        assert_eq!(c.oldest(), Some(2));
        c.add(3);
        c.done(3);
        c.done(2);
        assert_eq!(c.oldest(), None);
        c.done(7);
    }
}
