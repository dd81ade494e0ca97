//! Slot ranges as operators write them (`"0-8191,9000,9100-9199"`), the set
//! of slots they describe, and the owner map of a cluster.
//!
//! Parsing is linear in the text and the slot count: each range is checked
//! against a bitmap of the slots already named, and a slot named twice is an
//! error, so no input makes the parser touch a slot more than once (a body of
//! `"0-16383,0-16383,…"` is refused at its second range).

use serde::{Deserialize, Serialize};

use super::ModelError;

/// The longest slot text accepted: every one of 16384 slots written alone,
/// with a space after each comma, is about 100 KiB.
pub const MAX_SLOTS_TEXT: usize = 128 << 10;

/// How much of an operator's text an error message quotes.
const QUOTE: usize = 32;

/// Slots `first..=last` owned by a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedRange {
    /// First slot.
    pub first: u32,
    /// Last slot (inclusive).
    pub last: u32,
    /// The owning group's name.
    pub group: String,
}

/// A set of slots of a cluster with `slot_count` slots, as a bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSet {
    slot_count: u32,
    words: Vec<u64>,
    len: u32,
}

/// `text` cut to a length fit for an error message.
pub(crate) fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE) {
        Some((at, _)) => format!("{:?}…", &text[..at]),
        None => format!("{text:?}"),
    }
}

/// Why slot ranges are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotsError {
    /// The text is longer than [`MAX_SLOTS_TEXT`].
    #[error("slot ranges of {0} characters: at most {MAX_SLOTS_TEXT}")]
    TooLong(usize),
    /// More ranges than slots.
    #[error("more than {0} slot ranges: at most one per slot")]
    TooManyRanges(u32),
    /// A part is not a slot or a range (quoted, bounded).
    #[error("{0} is not a slot or a range like \"0-8191\"")]
    NotASlot(String),
    /// Nothing but commas and spaces.
    #[error("no slots given")]
    Empty,
    /// `a-b` with `a > b`.
    #[error("{0}-{1}: the range is reversed")]
    Reversed(u32, u32),
    /// A range past the last slot.
    #[error("{first}-{last}: slots go from 0 to {}", slot_count.saturating_sub(1))]
    Beyond {
        /// First slot.
        first: u32,
        /// Last slot.
        last: u32,
        /// The cluster's slot count.
        slot_count: u32,
    },
    /// A slot in two ranges.
    #[error("{first}-{last}: slot {slot} is named twice (ranges must not overlap)")]
    Twice {
        /// First slot of the range.
        first: u32,
        /// Last slot of the range.
        last: u32,
        /// The slot already named.
        slot: u32,
    },
}

impl From<SlotsError> for ModelError {
    fn from(e: SlotsError) -> ModelError {
        ModelError::invalid(e.to_string())
    }
}

impl SlotSet {
    /// The empty set.
    pub fn new(slot_count: u32) -> SlotSet {
        SlotSet {
            slot_count,
            words: vec![0; (slot_count as usize).div_ceil(64)],
            len: 0,
        }
    }

    /// The set of `ranges` (inclusive); refused if a range is reversed,
    /// beyond the last slot, or overlaps an earlier one.
    pub fn from_ranges(ranges: &[(u32, u32)], slot_count: u32) -> Result<SlotSet, SlotsError> {
        let mut set = SlotSet::new(slot_count);
        for &(a, b) in ranges {
            set.insert_range(a, b)?;
        }
        Ok(set)
    }

    /// Parses `"a-b,c,d-e"`: at most [`MAX_SLOTS_TEXT`] characters and one
    /// range per slot; no range reversed, beyond the last slot, or
    /// overlapping another.
    pub fn parse(text: &str, slot_count: u32) -> Result<SlotSet, SlotsError> {
        if text.len() > MAX_SLOTS_TEXT {
            return Err(SlotsError::TooLong(text.len()));
        }
        let mut set = SlotSet::new(slot_count);
        let mut ranges = 0u32;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            ranges += 1;
            if ranges > slot_count {
                return Err(SlotsError::TooManyRanges(slot_count));
            }
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let parse = |x: &str| {
                x.trim()
                    .parse::<u32>()
                    .map_err(|_| SlotsError::NotASlot(quote(part)))
            };
            set.insert_range(parse(a)?, parse(b)?)?;
        }
        if set.is_empty() {
            return Err(SlotsError::Empty);
        }
        Ok(set)
    }

    /// Adds `a..=b`, none of which may be in the set yet.
    pub fn insert_range(&mut self, a: u32, b: u32) -> Result<(), SlotsError> {
        if a > b {
            return Err(SlotsError::Reversed(a, b));
        }
        if b >= self.slot_count {
            return Err(SlotsError::Beyond {
                first: a,
                last: b,
                slot_count: self.slot_count,
            });
        }
        for s in a..=b {
            if !self.insert(s) {
                return Err(SlotsError::Twice {
                    first: a,
                    last: b,
                    slot: s,
                });
            }
        }
        Ok(())
    }

    /// Adds slot `s` (below the slot count); false if it was there already.
    pub fn insert(&mut self, s: u32) -> bool {
        let (w, bit) = ((s / 64) as usize, 1u64 << (s % 64));
        let Some(word) = self.words.get_mut(w) else {
            return false;
        };
        if *word & bit != 0 {
            return false;
        }
        *word |= bit;
        self.len += 1;
        true
    }

    /// Whether slot `s` is in the set.
    pub fn contains(&self, s: u32) -> bool {
        self.words
            .get((s / 64) as usize)
            .is_some_and(|w| w & (1u64 << (s % 64)) != 0)
    }

    /// Number of slots.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// No slots.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot count of the cluster the set is of.
    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// The slots, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.slot_count).filter(|&s| self.contains(s))
    }

    /// The slots as ascending, maximal inclusive ranges.
    pub fn ranges(&self) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for s in self.iter() {
            match out.last_mut() {
                Some(r) if r.1 + 1 == s => r.1 = s,
                _ => out.push((s, s)),
            }
        }
        out
    }

    /// The slots as operators write them.
    pub fn text(&self) -> String {
        format_ranges(&self.ranges())
    }
}

fn format_ranges(ranges: &[(u32, u32)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    parts.join(",")
}

/// `"0-5,9,11-12"` for a sorted list of slots.
pub fn format_slots(slots: &[u32]) -> String {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &s in slots {
        match ranges.last_mut() {
            Some(r) if r.1.checked_add(1) == Some(s) => r.1 = s,
            _ => ranges.push((s, s)),
        }
    }
    format_ranges(&ranges)
}

/// Ranges of equal owner from an owner map (`None` entries are left out).
pub fn ranges_from_owners(owners: &[Option<usize>], names: &[String]) -> Vec<OwnedRange> {
    let mut out: Vec<OwnedRange> = Vec::new();
    let mut last_owner = None;
    for (s, o) in owners.iter().enumerate() {
        let Some(g) = *o else {
            last_owner = None;
            continue;
        };
        let Some(name) = names.get(g) else {
            last_owner = None;
            continue;
        };
        match out.last_mut() {
            Some(r) if last_owner == Some(g) => r.last = s as u32,
            _ => out.push(OwnedRange {
                first: s as u32,
                last: s as u32,
                group: name.clone(),
            }),
        }
        last_owner = Some(g);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, n: u32) -> Result<Vec<(u32, u32)>, String> {
        SlotSet::parse(s, n)
            .map(|s| s.ranges())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parse_and_format() {
        assert_eq!(
            parse("0-10, 12,14-15", 16).unwrap(),
            vec![(0, 10), (12, 12), (14, 15)]
        );
        assert_eq!(
            parse("3,1-2,0", 16).unwrap(),
            vec![(0, 3)],
            "any order; adjacent ranges merge"
        );
        assert!(parse("5-3", 16).unwrap_err().contains("reversed"));
        assert!(parse("0-16", 16).unwrap_err().contains("0 to 15"));
        assert!(parse("99999999999", 16).is_err());
        assert!(parse("x", 16).is_err());
        assert!(parse("", 16).is_err());
        assert!(parse(" , ,", 16).unwrap_err().contains("no slots"));
        assert_eq!(format_slots(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(format_slots(&[]), "");
        let set = SlotSet::parse("7,1-3", 16).unwrap();
        assert_eq!(set.len(), 4);
        assert!(set.contains(2) && !set.contains(4) && !set.contains(99));
        assert_eq!(set.text(), "1-3,7");
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![1, 2, 3, 7]);
    }

    #[test]
    fn overlaps_are_refused_at_the_first_slot_named_twice() {
        let e = parse("0-10,5-20", 16384).unwrap_err();
        assert!(e.contains("slot 5 is named twice"), "{e}");
        assert!(parse("3,3", 16).unwrap_err().contains("twice"));
        // The pathological body of the review: refused at its second range,
        // without expanding the other twelve thousand.
        let huge = vec!["0-16383"; 12_000].join(",");
        assert!(huge.len() < MAX_SLOTS_TEXT);
        let e = parse(&huge, 16384).unwrap_err();
        assert!(e.contains("slot 0 is named twice"), "{e}");
    }

    #[test]
    fn text_and_range_count_are_bounded() {
        let long = "0".repeat(MAX_SLOTS_TEXT + 1);
        let e = parse(&long, 16384).unwrap_err();
        assert!(e.contains("at most 131072"), "{e}");
        // One range per slot at most.
        let all: Vec<String> = (0..16).map(|s| s.to_string()).collect();
        assert_eq!(parse(&all.join(","), 16).unwrap(), vec![(0, 15)]);
        let e = parse(&format!("{},3", all.join(",")), 16).unwrap_err();
        assert!(e.contains("more than 16 slot ranges"), "{e}");
        // Every slot of the largest cluster written alone fits.
        let every: Vec<String> = (0..16384).map(|s| s.to_string()).collect();
        assert_eq!(parse(&every.join(", "), 16384).unwrap(), vec![(0, 16383)]);
    }

    #[test]
    fn errors_quote_a_bounded_piece_of_the_input() {
        let junk = format!("{}-1", "y".repeat(10_000));
        let e = parse(&junk, 16).unwrap_err();
        assert!(e.len() < 120, "{e}");
        assert!(e.contains("is not a slot"), "{e}");
    }

    #[test]
    fn from_ranges_checks_like_parse() {
        assert_eq!(
            SlotSet::from_ranges(&[(0, 3), (8, 9)], 16).unwrap().len(),
            6
        );
        assert!(SlotSet::from_ranges(&[(0, 3), (3, 9)], 16).is_err());
        assert!(SlotSet::from_ranges(&[(0, 16)], 16).is_err());
        assert!(SlotSet::from_ranges(&[(4, 3)], 16).is_err());
    }

    #[test]
    fn owner_maps_become_ranges() {
        let names = vec!["a".to_string(), "b".to_string()];
        let owners = [Some(0), Some(0), None, Some(1), Some(1), Some(0)];
        let r = ranges_from_owners(&owners, &names);
        assert_eq!(
            r.iter()
                .map(|r| (r.first, r.last, r.group.as_str()))
                .collect::<Vec<_>>(),
            vec![(0, 1, "a"), (3, 4, "b"), (5, 5, "a")]
        );
    }
}
