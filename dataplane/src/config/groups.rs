//! A standalone file's `[[group]]`s as a routing [`Snapshot`], so that a
//! standalone table is built and checked exactly as a table from keyway-ctld
//! is: [`Snapshot::validate`] is the one rulebook for groups, servers and
//! slots, and [`RoutingTable::from_snapshot_with`] the one builder. What is
//! left here is the file's own grammar (slot range syntax, slots shared among
//! groups without `slots`), the standalone rule that every name must resolve
//! at start and reload, and the warnings only a file can deserve.

use std::path::PathBuf;
use std::time::Duration;

use keyway_capnp::snapshot::{self, SlotRange, Snapshot};

use serde::Deserialize;

use super::settings::BackendSettings;
use super::{invalid, ConfigError};
use crate::routing::{ReadFrom, RoutingTable};
use crate::tls::BackendTls;

/// One `[[group]]`: a Redis master and the slots it serves.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Unique name, used in errors and by the control plane.
    pub name: String,
    /// `host:port` of the master.
    pub master: String,
    /// Slot ranges (`"0-8191"`, `"9000"`); groups without them share the slots
    /// no group names, evenly and in listed order.
    pub slots: Option<Vec<String>>,
    /// The master's replicas (none by default); read from only when
    /// `read_from` says so.
    #[serde(default, rename = "replica")]
    pub replicas: Vec<ReplicaConfig>,
    /// Where read-only commands go: "master" (default), "replica" (any up
    /// replica, round robin; the master when none is up) or "local-zone"
    /// (an up replica whose zone is keyway's own `zone`; the master when
    /// none is, or when keyway has no zone). Replica reads may be stale by
    /// the replication lag.
    #[serde(default)]
    pub read_from: ReadFromConfig,
    /// This group's backend user, instead of `[backend] username` (with
    /// `password_file` or `password_env`; none by default).
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password of this group's `username`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password of this group's
    /// `username`.
    #[serde(default)]
    pub password_env: Option<String>,
    /// This group's privileged user, instead of `[backend]
    /// admin_username`.
    #[serde(default)]
    pub admin_username: Option<String>,
    /// File holding the password of this group's `admin_username`.
    #[serde(default)]
    pub admin_password_file: Option<PathBuf>,
    /// Environment variable holding the password of this group's
    /// `admin_username`.
    #[serde(default)]
    pub admin_password_env: Option<String>,
    /// Speak TLS to the master and replicas (default false).
    #[serde(default)]
    pub tls: bool,
    /// CA certificates (PEM) the servers' certificates must be signed by
    /// (default: the system's bundle, /etc/ssl/certs/ca-certificates.crt).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// The name the servers' certificates must bear, sent as SNI (default:
    /// the host of each server's address).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// A client certificate (PEM) to present, for servers that require one
    /// (`redis-server --tls-auth-clients yes`, its default); with `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

impl GroupConfig {
    /// The group's own credential keys (`section` names it in errors).
    pub(super) fn credential_keys<'a>(
        &'a self,
        section: &'a str,
    ) -> super::secrets::CredentialKeys<'a> {
        super::secrets::CredentialKeys {
            section,
            username: self.username.as_deref(),
            password_file: self.password_file.as_deref(),
            password_env: self.password_env.as_deref(),
            admin_username: self.admin_username.as_deref(),
            admin_password_file: self.admin_password_file.as_deref(),
            admin_password_env: self.admin_password_env.as_deref(),
        }
    }
}

/// One `[[group.replica]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// `host:port` of the replica.
    pub address: String,
    /// Its zone or rack (none by default), for `read_from = "local-zone"`.
    #[serde(default)]
    pub zone: String,
}

/// `read_from` of a group.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReadFromConfig {
    /// Every command to the master.
    #[default]
    Master,
    /// Read-only commands to any up replica.
    Replica,
    /// Read-only commands to an up replica in keyway's own zone.
    LocalZone,
}

impl ReadFromConfig {
    /// As written in the file.
    pub fn name(self) -> &'static str {
        match self {
            ReadFromConfig::Master => "master",
            ReadFromConfig::Replica => "replica",
            ReadFromConfig::LocalZone => "local-zone",
        }
    }
}

impl From<ReadFromConfig> for ReadFrom {
    fn from(r: ReadFromConfig) -> ReadFrom {
        match r {
            ReadFromConfig::Master => ReadFrom::Master,
            ReadFromConfig::Replica => ReadFrom::Replica,
            ReadFromConfig::LocalZone => ReadFrom::LocalZone,
        }
    }
}

impl From<&ReplicaConfig> for snapshot::Replica {
    fn from(r: &ReplicaConfig) -> snapshot::Replica {
        snapshot::Replica {
            address: r.address.clone(),
            zone: r.zone.clone(),
        }
    }
}

/// How long a standalone start or reload waits for its names to resolve: a
/// resolver's own worst case (glibc: 5 s per try, 2 tries, 3 name servers)
/// and then some, so that a slow DNS delays the start rather than fails it.
const RESOLVE_WITHIN: Duration = Duration::from_secs(60);

/// The routing table the file's groups describe, under `version`; every
/// master and replica must resolve.
pub(super) fn standalone_table(
    version: u64,
    slot_count: u32,
    groups: &[GroupConfig],
    zone: Option<&str>,
    backend: &BackendSettings,
    warnings: &mut Vec<String>,
) -> Result<RoutingTable, ConfigError> {
    let snap = file_snapshot(version, slot_count, groups, warnings)?;
    snap.validate().map_err(|e| invalid(e.to_string()))?;
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
    let mut table =
        RoutingTable::from_snapshot_with(&snap, &resolved).map_err(|e| invalid(e.to_string()))?;
    table.same_server().map_err(|e| invalid(e.to_string()))?;
    let tls = groups
        .iter()
        .map(|g| Ok(group_tls(g, backend)?.map(Ok)))
        .collect::<Result<Vec<_>, ConfigError>>()?;
    table.set_backend_tls(tls);
    Ok(table)
}

/// A group's `tls*` keys (each one unset falls back to `[backend]`'s),
/// checked and loaded.
fn group_tls(
    g: &GroupConfig,
    backend: &BackendSettings,
) -> Result<Option<BackendTls>, ConfigError> {
    let err = |e: &dyn std::fmt::Display| invalid(format!("group {:?}: {e}", g.name));
    let any = g.tls_ca.is_some()
        || g.tls_server_name.is_some()
        || g.tls_cert.is_some()
        || g.tls_key.is_some();
    if !g.tls {
        if any {
            return Err(err(
                &"tls_ca, tls_server_name, tls_cert and tls_key need tls = true",
            ));
        }
        return Ok(None);
    }
    let client = match (&g.tls_cert, &g.tls_key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        (None, None) => backend.tls_client(),
        _ => return Err(err(&"tls_cert and tls_key go together")),
    };
    let ca = g.tls_ca.as_deref().or(backend.tls_ca.as_deref());
    let tls = BackendTls::load(ca, client, g.tls_server_name.as_deref())
        .map_err(|e| err(&format_args!("tls: {e}")))?;
    let servers =
        std::iter::once(g.master.as_str()).chain(g.replicas.iter().map(|r| r.address.as_str()));
    for s in servers {
        tls.connect(s).map_err(|e| err(&format_args!("tls: {e}")))?;
    }
    Ok(Some(tls))
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
                replicas: g.replicas.iter().map(snapshot::Replica::from).collect(),
                zone: String::new(),
                read_from: g.read_from.into(),
                hold: false,
                // TLS of a file's groups is set on the table (group_tls).
                tls: false,
                tls_server_name: String::new(),
            })
            .collect(),
        slot_ranges,
        migrations: Vec::new(),
        lease_millis: u64::MAX,
        users: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::super::{FileConfig, Mode, Overrides};
    use crate::routing::{ReadFrom, SlotRoute};

    #[test]
    fn slots_split_evenly_in_listed_order() {
        let c = parse(
            r#"
            listen = "127.0.0.1:0"
            slots = 1024
            [[group]]
            name = "a"
            master = "127.0.0.1:1"
            [[group]]
            name = "b"
            master = "127.0.0.1:2"
            [[group]]
            name = "c"
            master = "127.0.0.1:3"
            "#,
        )
        .unwrap();
        // 1024 = 342 + 341 + 341: the first group takes the extra slot.
        for (slot, group) in [(0, 0), (341, 0), (342, 1), (682, 1), (683, 2), (1023, 2)] {
            assert_eq!(
                c.live.table.route(slot),
                SlotRoute::Stable(group),
                "slot {slot}"
            );
        }
    }

    #[test]
    fn replicas_read_policy_and_zone() {
        let c = parse(
            r#"
            listen = "127.0.0.1:0"
            zone = "z1"
            [[group]]
            name = "a"
            master = "127.0.0.1:7000"
            read_from = "local-zone"
            [[group.replica]]
            address = "127.0.0.1:7100"
            zone = "z1"
            [[group.replica]]
            address = "127.0.0.1:7101"
            [[group]]
            name = "b"
            master = "127.0.0.1:7001"
            "#,
        )
        .unwrap();
        let a = c.live.table.group(0);
        assert_eq!(a.read_from, ReadFrom::LocalZone);
        assert_eq!(a.replicas.len(), 2);
        assert_eq!((&*a.replicas[0].zone, &*a.replicas[1].zone), ("z1", ""));
        assert_eq!(
            c.live.table.group(1).read_from,
            ReadFrom::Master,
            "the default"
        );
        assert_eq!(c.live.zone.as_deref(), Some("z1"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        let mut f = FileConfig::parse(
            "listen='127.0.0.1:0'\n[[group]]\nname='a'\nmaster='127.0.0.1:7000'\nread_from='local-zone'\n\
             [[group.replica]]\naddress='127.0.0.1:7100'\nzone='z2'",
        )
        .unwrap();
        let warned = f.clone().validate(1, Mode::Standalone).unwrap().warnings;
        assert!(warned[0].contains("keyway has no zone"), "{warned:?}");
        Overrides {
            zone: Some("z2".into()),
            ..Overrides::default()
        }
        .apply(&mut f);
        let c = f.validate(1, Mode::Standalone).unwrap();
        assert_eq!(c.live.zone.as_deref(), Some("z2"), "--zone");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn replica_errors_name_the_problem() {
        let base = "listen = \"127.0.0.1:0\"\n";
        let g = "[[group]]\nname='a'\nmaster='127.0.0.1:1'\n";
        let cases = [
            (format!("{g}read_from='replicas'"), "unknown variant"),
            (format!("{g}[[group.replica]]\naddress='127.0.0.1:1'"), "is the group's master"),
            (
                format!("{g}[[group.replica]]\naddress='127.0.0.1:2'\n[[group.replica]]\naddress='127.0.0.1:2'"),
                "listed twice",
            ),
            (format!("{g}[[group.replica]]\naddress='nowhere'"), "replica"),
            (format!("{g}[[group.replica]]\naddress='127.0.0.1:2'\nzone='a b'"), "zone"),
            (format!("{g}[[group.replica]]\naddress='127.0.0.1:2'\nport=3"), "unknown field"),
            (format!("zone=''\n{g}"), "zone"),
        ];
        for (body, want) in cases {
            let err = parse(&format!("{base}{body}"))
                .expect_err(&body)
                .to_string();
            assert!(
                err.contains(want),
                "{body:?}: {err:?} does not mention {want:?}"
            );
        }
        let c = parse(&format!("{base}{g}read_from='replica'")).unwrap();
        assert!(c.warnings[0].contains("no replicas"), "{:?}", c.warnings);
    }

    #[test]
    fn backend_tls_files_are_the_groups_defaults() {
        let dir = keyway_testkit::TempDir::new("backend-tls");
        let certs = keyway_testkit::tls::Certs::generate(dir.path());
        let backend = format!(
            "listen='127.0.0.1:0'\n[backend]\ntls_ca='{}'\ntls_cert='{}'\ntls_key='{}'\n",
            certs.ca.display(),
            certs.client_cert.display(),
            certs.client_key.display()
        );
        let c = parse(&format!(
            "{backend}[[group]]\nname='a'\nmaster='127.0.0.1:1'\ntls=true\n\
             [[group]]\nname='b'\nmaster='127.0.0.1:2'\n"
        ))
        .unwrap();
        assert!(
            matches!(c.live.table.group(0).tls, Some(Ok(_))),
            "tls = true without files of its own uses [backend]'s"
        );
        assert!(
            c.live.table.group(1).tls.is_none(),
            "a plain group stays plain"
        );
        for (body, want) in [
            (
                format!("listen='127.0.0.1:0'\n[backend]\ntls_cert='{}'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'", certs.client_cert.display()),
                "backend.tls_cert and backend.tls_key go together",
            ),
            (
                "listen='127.0.0.1:0'\n[backend]\ntls_ca='/nonexistent/ca.pem'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'".to_string(),
                "/nonexistent/ca.pem",
            ),
        ] {
            let err = parse(&body).expect_err(&body).to_string();
            assert!(err.contains(want), "{err:?} does not say {want:?}");
        }
    }

    #[test]
    fn unowned_slots_are_a_warning() {
        let c = parse(
            "listen='127.0.0.1:0'\n[[group]]\nname='a'\nmaster='127.0.0.1:1'\nslots=['0-100']",
        )
        .unwrap();
        assert_eq!(c.live.table.route(101), SlotRoute::Unassigned);
        assert_eq!(c.warnings.len(), 1);
    }
}
