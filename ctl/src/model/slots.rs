//! Slot ranges as operators write them (`"0-8191,9000,9100-9199"`), and the
//! owner map they describe.

use serde::{Deserialize, Serialize};

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

/// Parses `"a-b,c,d-e"` into inclusive ranges within `slot_count`.
pub fn parse_ranges(s: &str, slot_count: u32) -> Result<Vec<(u32, u32)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let parse = |x: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| format!("{part:?} is not a slot or a range like \"0-8191\""))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if a > b {
            return Err(format!("{part:?}: the range is reversed"));
        }
        if b >= slot_count {
            return Err(format!("{part:?}: slots go from 0 to {}", slot_count - 1));
        }
        out.push((a, b));
    }
    if out.is_empty() {
        return Err("no slots given".into());
    }
    Ok(out)
}

/// `"0-5,9,11-12"` for a sorted list of slots.
pub fn format_slots(slots: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < slots.len() {
        let start = slots[i];
        let mut end = start;
        while i + 1 < slots.len() && slots[i + 1] == end + 1 {
            i += 1;
            end = slots[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Ranges of equal owner from an owner map (`None` entries are left out).
pub fn ranges_from_owners(owners: &[Option<usize>], names: &[String]) -> Vec<OwnedRange> {
    let mut out: Vec<OwnedRange> = Vec::new();
    for (s, o) in owners.iter().enumerate() {
        let Some(g) = o else { continue };
        match out.last_mut() {
            Some(r) if r.group == names[*g] && r.last + 1 == s as u32 => r.last = s as u32,
            _ => out.push(OwnedRange {
                first: s as u32,
                last: s as u32,
                group: names[*g].clone(),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        assert_eq!(
            parse_ranges("0-10, 12,14-15", 16).unwrap(),
            vec![(0, 10), (12, 12), (14, 15)]
        );
        assert!(parse_ranges("5-3", 16).unwrap_err().contains("reversed"));
        assert!(parse_ranges("0-16", 16).unwrap_err().contains("0 to 15"));
        assert!(parse_ranges("x", 16).is_err());
        assert!(parse_ranges("", 16).is_err());
        assert_eq!(format_slots(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(format_slots(&[]), "");
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
