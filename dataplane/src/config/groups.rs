//! A standalone file's `[[group]]`s as a routing [`Snapshot`], so that a
//! standalone table is built and checked exactly as a table from keyway-ctld
//! is: [`Snapshot::validate`] is the one rulebook for groups, servers and
//! slots, and [`RoutingTable::from_snapshot_with`] the one builder. What is
//! left here is the file's own grammar (slot range syntax, slots shared among
//! groups without `slots`), the standalone rule that every name must resolve
//! at start and reload, and the warnings only a file can deserve.

use std::time::Duration;

use keyway_capnp::snapshot::{self, SlotRange, Snapshot};

use super::{invalid, ConfigError, GroupConfig, ReadFromConfig};
use crate::routing::RoutingTable;

/// How long a standalone start or reload waits for its names to resolve.
const RESOLVE_WITHIN: Duration = Duration::from_secs(5);

/// The routing table the file's groups describe, under `version`; every
/// master and replica must resolve.
pub(super) fn standalone_table(
    version: u64,
    slot_count: u32,
    groups: &[GroupConfig],
    zone: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<RoutingTable, ConfigError> {
    let snap = file_snapshot(version, slot_count, groups, warnings)?;
    snap.validate().map_err(invalid)?;
    let names = groups.iter().flat_map(|g| {
        std::iter::once(g.master.as_str()).chain(g.replicas.iter().map(|r| r.address.as_str()))
    });
    let resolved = crate::resolve::resolve_all(names, RESOLVE_WITHIN);
    for g in groups {
        if let Some(Err(e)) = resolved.get(&g.master) {
            return Err(invalid(format!("group {:?}: master: {e}", g.name)));
        }
        for r in &g.replicas {
            if let Some(Err(e)) = resolved.get(&r.address) {
                return Err(invalid(format!("group {:?}: replica: {e}", g.name)));
            }
        }
        read_policy_warnings(g, zone, warnings);
    }
    RoutingTable::from_snapshot_with(&snap, &resolved).map_err(|e| invalid(e.to_string()))
}

/// The file's groups as a snapshot: ranges parsed, shared slots dealt out.
/// A standalone table has no cluster and no lease; the snapshot's header
/// carries placeholders that pass validation.
fn file_snapshot(
    version: u64,
    slot_count: u32,
    groups: &[GroupConfig],
    warnings: &mut Vec<String>,
) -> Result<Snapshot, ConfigError> {
    if groups.is_empty() {
        return Err(invalid(
            "no [[group]]: keyway needs at least one Redis group to route to",
        ));
    }
    if groups.len() > snapshot::MAX_GROUPS {
        return Err(invalid(format!(
            "too many groups (at most {})",
            snapshot::MAX_GROUPS
        )));
    }
    for (i, g) in groups.iter().enumerate() {
        if groups[..i].iter().any(|o| o.name == g.name) {
            return Err(invalid(format!("group {:?} is defined twice", g.name)));
        }
    }
    let owner = assign_slots(slot_count, groups, warnings)?;
    let mut slot_ranges: Vec<SlotRange> = Vec::new();
    for (s, o) in owner.into_iter().enumerate() {
        let Some(group) = o else { continue };
        match slot_ranges.last_mut() {
            Some(r) if r.group == group && r.last + 1 == s as u32 => r.last = s as u32,
            _ => slot_ranges.push(SlotRange {
                first: s as u32,
                last: s as u32,
                group,
            }),
        }
    }
    Ok(Snapshot {
        cluster: "standalone".into(),
        version,
        slot_count,
        groups: groups
            .iter()
            .map(|g| snapshot::Group {
                name: g.name.clone(),
                master: g.master.clone(),
                replicas: g
                    .replicas
                    .iter()
                    .map(|r| snapshot::Replica {
                        address: r.address.clone(),
                        zone: r.zone.clone(),
                    })
                    .collect(),
                zone: String::new(),
                read_from: g.read_from.into(),
                hold: false,
            })
            .collect(),
        slot_ranges,
        migrations: Vec::new(),
        lease_millis: u64::MAX,
    })
}

/// Each slot's group: the ranges groups name, then the rest dealt out evenly,
/// in listed order, to the groups that name none.
fn assign_slots(
    slot_count: u32,
    groups: &[GroupConfig],
    warnings: &mut Vec<String>,
) -> Result<Vec<Option<u16>>, ConfigError> {
    let mut owner: Vec<Option<u16>> = vec![None; slot_count as usize];
    for (gi, g) in groups.iter().enumerate() {
        for r in g.slots.iter().flatten() {
            let (a, b) = parse_range(r, slot_count)
                .map_err(|e| invalid(format!("group {:?}: slots {e}", g.name)))?;
            for s in a..=b {
                if let Some(prev) = owner[s as usize] {
                    return Err(invalid(format!(
                        "slot {s} is assigned to both {:?} and {:?}",
                        groups[usize::from(prev)].name,
                        g.name
                    )));
                }
                owner[s as usize] = Some(gi as u16);
            }
        }
    }
    let unassigned: Vec<u32> = (0..slot_count)
        .filter(|&s| owner[s as usize].is_none())
        .collect();
    let sharing: Vec<usize> = (0..groups.len())
        .filter(|&i| groups[i].slots.is_none())
        .collect();
    if sharing.is_empty() {
        if !unassigned.is_empty() {
            warnings.push(format!(
                "{} of {slot_count} slots are assigned to no group; their keys get -CLUSTERDOWN",
                unassigned.len()
            ));
        }
        return Ok(owner);
    }
    let per = unassigned.len() / sharing.len();
    let extra = unassigned.len() % sharing.len();
    let mut next = 0;
    for (k, &gi) in sharing.iter().enumerate() {
        let n = per + usize::from(k < extra);
        for &s in &unassigned[next..next + n] {
            owner[s as usize] = Some(gi as u16);
        }
        next += n;
        if n == 0 {
            warnings.push(format!(
                "group {:?} gets no slots: there are more groups than free slots",
                groups[gi].name
            ));
        }
    }
    Ok(owner)
}

/// What is wrong with a `slots` entry.
#[derive(Debug, thiserror::Error)]
enum RangeError {
    #[error("{0:?} is not a slot or a range like \"0-8191\"")]
    Syntax(String),
    #[error("{0:?}: the range is reversed")]
    Reversed(String),
    #[error("{text:?}: slots go from 0 to {last}")]
    Beyond { text: String, last: u32 },
}

/// Parses `"a-b"` or `"a"` into an inclusive range within `slot_count`.
fn parse_range(s: &str, slot_count: u32) -> Result<(u32, u32), RangeError> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) else {
        return Err(RangeError::Syntax(s.to_string()));
    };
    if a > b {
        return Err(RangeError::Reversed(s.to_string()));
    }
    if b >= slot_count {
        return Err(RangeError::Beyond {
            text: s.to_string(),
            last: slot_count - 1,
        });
    }
    Ok((a, b))
}

/// A read policy that can never use a replica is worth a warning.
fn read_policy_warnings(g: &GroupConfig, zone: Option<&str>, warnings: &mut Vec<String>) {
    match g.read_from {
        ReadFromConfig::Master => {}
        _ if g.replicas.is_empty() => warnings.push(format!(
            "group {:?}: read_from = {:?} but it has no replicas: reads go to the master",
            g.name,
            g.read_from.name()
        )),
        ReadFromConfig::LocalZone if zone.is_none() => warnings.push(format!(
            "group {:?}: read_from = \"local-zone\" but keyway has no zone (set `zone` or --zone): reads go to the master",
            g.name
        )),
        ReadFromConfig::LocalZone if !g.replicas.iter().any(|r| Some(r.zone.as_str()) == zone) => {
            warnings.push(format!(
                "group {:?}: read_from = \"local-zone\" but no replica is in zone {:?}: reads go to the master",
                g.name,
                zone.unwrap_or_default()
            ))
        }
        _ => {}
    }
}
