//! `keywayctl`'s commands: each calls the API and prints a human table, or
//! the API's JSON with `--json`. Failures return a one-line reason; the binary
//! prints it and exits non-zero.

mod backend_users;
mod events;
mod ha;
mod migrations;
pub mod top;
mod users;

pub use backend_users::{BackendUsersCmd, ProvisionArgs};
pub use ha::{FailoverArgs, SetArgs};
pub use migrations::{MigrationCmd, SettingsArgs};
pub use users::UsersCmd;

use std::time::Duration;

use clap::{Args, Subcommand};
use keyway_capnp::duration::parse_duration;
use serde_json::Value;

use crate::auth::Token;
use crate::client::{Client, ClientError};
use crate::model::slots::format_slots;
use crate::model::{Cluster, Group, Replica};
use crate::wire::{Assign, ClusterSummary, CreateCluster, DataPlaneView, GroupEdit};

/// Why a command failed: the one line keywayctl prints.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API refused the request, or could not be reached.
    #[error(transparent)]
    Api(#[from] ClientError),
    /// `keywayctl local` failed.
    #[error(transparent)]
    Local(#[from] crate::local::LocalError),
    /// A `--group` that is not `NAME=HOST:PORT`.
    #[error("--group {0:?}: expected NAME=HOST:PORT")]
    GroupArg(String),
    /// A `--replica-zone` that is not `ADDR=ZONE`.
    #[error("--replica-zone {0:?}: expected ADDR=ZONE")]
    ReplicaZoneArg(String),
    /// An on/off flag that is neither.
    #[error("{0:?}: use on or off")]
    OnOff(String),
    /// A failover ended without promoting the replica.
    #[error("failover {id} did not happen: {outcome}")]
    FailoverFailed {
        /// The failover.
        id: u64,
        /// Why, as ctld recorded it.
        outcome: String,
    },
    /// A failover still runs after the CLI stopped waiting.
    #[error("failover {id} is still under way after 120 s; see keywayctl cluster show {cluster}")]
    FailoverSlow {
        /// The failover.
        id: u64,
        /// Its cluster.
        cluster: String,
    },
    /// A migration waited for failed.
    #[error("migration {id} failed: {why}")]
    MigrationFailed {
        /// The migration.
        id: u64,
        /// Why.
        why: String,
    },
    /// A migration waited for ended in another state than wanted.
    #[error("migration {id} ended {state}")]
    MigrationEnded {
        /// The migration.
        id: u64,
        /// Its state, as the table shows it.
        state: String,
    },
    /// A password file that cannot be used, or a group that does not exist.
    #[error("{0}")]
    Secret(String),
    /// A users file that cannot be used (`users set`).
    #[error("{0}")]
    UsersFile(String),
    /// `backend-users provision` failed on some servers.
    #[error("backend users: {failed} server(s) failed (see above)")]
    Provision {
        /// How many.
        failed: usize,
    },
    /// A snapshot could not be serialized.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A snapshot file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A snapshot file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A snapshot file is not a cluster.
    #[error("{} is not a cluster snapshot: {source}", path.display())]
    NotASnapshot {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, show, delete, grow and shrink clusters.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Assign unowned slots.
    #[command(subcommand)]
    Slots(SlotsCmd),
    /// Edit a group: master, zone, replicas.
    Group(GroupArgs),
    /// List data planes (of one cluster, or all).
    Dataplanes {
        /// Cluster name.
        cluster: Option<String>,
    },
    /// Forget a data plane that is gone for good.
    #[command(subcommand)]
    Dataplane(DataplaneCmd),
    /// A cluster's recent structured events: changes (with who made them),
    /// failover and migration steps.
    Events {
        /// Cluster name.
        name: String,
        /// Only the events numbered above this one.
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
    /// A live view of a cluster's data planes (requests/s, errors/s,
    /// p50/p99, connections), groups and migrations, from the data planes'
    /// admin /metrics; --json prints one sample and exits.
    Top(top::TopArgs),
    /// Move slots to a group, key by key, while clients keep working.
    Migrate {
        /// Cluster name.
        name: String,
        /// Slot ranges, e.g. "0-100,200".
        #[arg(long)]
        slots: String,
        /// The target group.
        #[arg(long)]
        to: String,
        /// How keys move.
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Even out the slots across all groups (after a grow).
    Rebalance {
        /// Cluster name.
        name: String,
        /// How keys move.
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Move every slot of a group to the others, so that shrink succeeds.
    Drain {
        /// Cluster name.
        name: String,
        /// The group to empty.
        #[arg(long)]
        group: String,
        /// How keys move.
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// List a cluster's migrations (slots, state, keys moved, rate, ETA,
    /// errors), or show one in detail.
    Migrations {
        /// Cluster name.
        name: String,
        /// A migration id.
        id: Option<u64>,
    },
    /// Pause, resume or cancel a migration.
    #[command(subcommand)]
    Migration(MigrationCmd),
    /// Replace a group's master by a replica: a switchover (writes held,
    /// the replica catches up, no write lost) while the master is up.
    Failover(FailoverArgs),
    /// Export a cluster's desired state to a file, or apply one.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Run a whole system on loopback: Redis groups, keyway-ctld, keyway.
    #[command(subcommand)]
    Local(crate::local::LocalCmd),
    /// The backend ACL users of a cluster's servers (see README, "Backend
    /// authentication").
    #[command(subcommand)]
    BackendUsers(BackendUsersCmd),
    /// The client users of a cluster's data planes (see README,
    /// "Authentication and ACL users").
    #[command(subcommand)]
    Users(UsersCmd),
}

/// `keywayctl dataplane …`.
#[derive(Debug, Subcommand)]
pub enum DataplaneCmd {
    /// Remove a data plane's record, so that migrations no longer wait for
    /// it. Refused while it is connected, or while a lease it may hold could
    /// still run.
    Forget {
        /// Its id.
        id: String,
    },
}

/// `keywayctl cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Create a cluster; its slots are split evenly among the groups, in order.
    Create {
        /// Cluster name.
        name: String,
        /// Slot count: a power of two up to 16384.
        #[arg(long, default_value_t = 16384)]
        slots: u32,
        /// A group as NAME=HOST:PORT (repeat for each group).
        #[arg(long = "group", value_name = "NAME=HOST:PORT", required = true)]
        groups: Vec<String>,
        /// Lease for its data planes, e.g. "30s" (default: ctld's --lease).
        #[arg(long, value_parser = parse_duration)]
        lease: Option<Duration>,
        /// TLS to the group's servers.
        #[command(flatten)]
        tls: GroupTlsArgs,
        /// Accept addresses that do not resolve (yet).
        #[arg(long)]
        force: bool,
    },
    /// List clusters.
    List,
    /// Show a cluster: groups, slot ranges, data planes.
    Show {
        /// Cluster name.
        name: String,
    },
    /// Delete a cluster.
    Delete {
        /// Cluster name.
        name: String,
    },
    /// Add an empty group (it owns no slots until some are assigned or moved).
    Grow {
        /// Cluster name.
        name: String,
        /// The group as NAME=HOST:PORT.
        #[arg(long = "group", value_name = "NAME=HOST:PORT")]
        group: String,
        /// TLS to the group's servers.
        #[command(flatten)]
        tls: GroupTlsArgs,
        /// Accept an address that does not resolve (yet).
        #[arg(long)]
        force: bool,
    },
    /// Change a cluster's health checks, automatic failover or lease.
    Set(SetArgs),
    /// Remove a group; refused while it owns slots.
    Shrink {
        /// Cluster name.
        name: String,
        /// Group name.
        #[arg(long = "group")]
        group: String,
    },
}

/// `keywayctl slots …`.
#[derive(Debug, Subcommand)]
pub enum SlotsCmd {
    /// Give unowned slots to a group.
    Assign {
        /// Cluster name.
        name: String,
        /// Slot ranges, e.g. "0-100,200".
        #[arg(long)]
        slots: String,
        /// The group.
        #[arg(long)]
        to: String,
    },
}

/// `keywayctl group CLUSTER GROUP [edits]`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// Cluster name.
    cluster: String,
    /// Group name.
    group: String,
    /// New master address.
    #[arg(long)]
    master: Option<String>,
    /// The master's zone or rack.
    #[arg(long)]
    zone: Option<String>,
    /// Add a replica: HOST:PORT or HOST:PORT@ZONE.
    #[arg(long = "add-replica", value_name = "ADDR[@ZONE]")]
    add_replica: Vec<String>,
    /// Remove a replica by address.
    #[arg(long = "remove-replica", value_name = "ADDR")]
    remove_replica: Vec<String>,
    /// Set a replica's zone: ADDR=ZONE.
    #[arg(long = "replica-zone", value_name = "ADDR=ZONE")]
    replica_zone: Vec<String>,
    /// Where data planes send read-only commands: master, replica or
    /// local-zone.
    #[arg(long = "read-from", value_name = "POLICY")]
    read_from: Option<crate::model::ReadFrom>,
    /// Speak TLS to the group's servers (with each host's own CA and
    /// client certificate: `[backend] tls_*`, `keyway-ctld
    /// --backend-tls-*`).
    #[arg(long, conflicts_with = "no_tls")]
    tls: bool,
    /// Speak plain TCP to the group's servers (forgets the server name).
    #[arg(long = "no-tls")]
    no_tls: bool,
    /// The name the servers' certificates must carry ("" for none: each
    /// server's own host).
    #[arg(long = "tls-server-name", value_name = "NAME")]
    tls_server_name: Option<String>,
    /// Accept addresses that do not resolve (yet).
    #[arg(long)]
    force: bool,
}

/// TLS of the groups `cluster create` and `cluster grow` add.
#[derive(Debug, Args)]
pub struct GroupTlsArgs {
    /// Speak TLS to the group's servers (with each host's own CA and
    /// client certificate: `[backend] tls_*`, `keyway-ctld
    /// --backend-tls-*`).
    #[arg(long)]
    tls: bool,
    /// With --tls: the name the servers' certificates must carry (default:
    /// each server's own host).
    #[arg(long = "tls-server-name", value_name = "NAME", requires = "tls")]
    tls_server_name: Option<String>,
}

/// `keywayctl snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Write a cluster's desired state as JSON (stdout, or --output).
    Export {
        /// Cluster name.
        name: String,
        /// File to write.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Replace a cluster's groups and slots with a file's (validated; refused
    /// if the cluster changed since the export, unless --force).
    Apply {
        /// Cluster name.
        name: String,
        /// The JSON file.
        #[arg(long, short)]
        file: std::path::PathBuf,
        /// Apply even if the cluster changed since the export, or if new
        /// addresses do not resolve.
        #[arg(long)]
        force: bool,
    },
}

/// `path` with `?force=true` when forced.
fn forced(path: String, force: bool) -> String {
    if force {
        path + "?force=true"
    } else {
        path
    }
}

fn parse_group(s: &str, tls: &GroupTlsArgs) -> Result<Group, CliError> {
    let (name, master) = s
        .split_once('=')
        .ok_or_else(|| CliError::GroupArg(s.to_string()))?;
    Ok(Group {
        name: name.to_string(),
        master: master.to_string(),
        tls: tls.tls,
        tls_server_name: tls.tls_server_name.clone(),
        ..Group::default()
    })
}

/// Prints rows as aligned columns.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", table_text(header, rows));
}

/// Columns aligned, two spaces apart, one line per row after the header.
pub(crate) fn table_text(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut out = String::new();
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.len());
            }
        }
    }
    let mut line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width.get(i).copied().unwrap_or(0)))
            .collect();
        out.push_str(s.join("  ").trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
    out
}

fn print_cluster(c: &Cluster) {
    println!(
        "cluster {}  version {}  slots {}  lease {}ms",
        c.name, c.version, c.slot_count, c.lease_millis
    );
    let owners = c.owners();
    let mut by_group: Vec<Vec<u32>> = vec![Vec::new(); c.groups.len()];
    for (s, o) in owners.iter().enumerate() {
        if let Some(slots) = o.and_then(|g| by_group.get_mut(g)) {
            slots.push(s as u32);
        }
    }
    let rows = c
        .groups
        .iter()
        .zip(by_group)
        .map(|(g, slots)| {
            let replicas: Vec<String> = g
                .replicas
                .iter()
                .map(|r| {
                    if r.zone.is_empty() {
                        r.address.clone()
                    } else {
                        format!("{}@{}", r.address, r.zone)
                    }
                })
                .collect();
            vec![
                g.name.clone(),
                g.master.clone(),
                if g.zone.is_empty() {
                    "-".into()
                } else {
                    g.zone.clone()
                },
                if replicas.is_empty() {
                    "-".into()
                } else {
                    replicas.join(",")
                },
                match (g.tls, &g.tls_server_name) {
                    (false, _) => "-".into(),
                    (true, None) => "on".into(),
                    (true, Some(n)) => format!("on ({n})"),
                },
                slots.len().to_string(),
                if slots.is_empty() {
                    "-".into()
                } else {
                    format_slots(&slots)
                },
            ]
        })
        .collect();
    table(
        &[
            "GROUP", "MASTER", "ZONE", "REPLICAS", "TLS", "SLOTS", "RANGES",
        ],
        rows,
    );
    let unowned = owners.iter().filter(|o| o.is_none()).count();
    if unowned > 0 {
        let free: Vec<u32> = owners
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_none())
            .map(|(s, _)| s as u32)
            .collect();
        println!("unowned slots: {} ({})", unowned, format_slots(&free));
    }
}

fn print_dataplanes(d: &[DataPlaneView]) {
    let rows = d
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.cluster.clone(),
                d.address.clone(),
                if d.connected { "yes" } else { "no" }.into(),
                d.acked_version.to_string(),
                d.lease_remaining_ms
                    .map_or("expired".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
                if d.fenced { "yes" } else { "no" }.into(),
                match (d.admin.as_str(), d.admin_tls) {
                    ("", _) => "-".into(),
                    (a, true) => format!("https://{a}"),
                    (a, false) => format!("http://{a}"),
                },
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "CLUSTER",
            "ADDRESS",
            "CONNECTED",
            "ACKED",
            "LEASE",
            "FENCED",
            "ADMIN",
        ],
        rows,
    );
}

pub(crate) fn emit<T: serde::Serialize>(json: bool, v: &T, human: impl FnOnce(&T)) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        human(v);
    }
}

/// Runs one command against the API at `api`, with `token` if given, over
/// HTTPS verified against `ca` if given.
pub fn run(
    cmd: Command,
    api: &str,
    token: Option<&Token>,
    ca: Option<&std::path::Path>,
    json: bool,
) -> Result<(), CliError> {
    let c = Client::with_ca(api, token, ca)?;
    match cmd {
        Command::Cluster(ClusterCmd::Create {
            name,
            slots,
            groups,
            lease,
            tls,
            force,
        }) => {
            let groups = groups
                .iter()
                .map(|g| parse_group(g, &tls))
                .collect::<Result<Vec<_>, _>>()?;
            let req = CreateCluster {
                name,
                slots,
                groups,
                lease_ms: lease.map(|d| d.as_millis() as u64),
                ha: None,
            };
            let cl: Cluster = c.post(&forced("/v1/clusters".into(), force), &req)?;
            emit(json, &cl, print_cluster);
        }
        Command::Cluster(ClusterCmd::List) => {
            let list: Vec<ClusterSummary> = c.get("/v1/clusters")?;
            emit(json, &list, |l| {
                let rows = l
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.version.to_string(),
                            s.slots.to_string(),
                            s.groups.to_string(),
                            s.dataplanes.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &["CLUSTER", "VERSION", "SLOTS", "GROUPS", "DATAPLANES"],
                    rows,
                );
            });
        }
        Command::Cluster(ClusterCmd::Show { name }) => {
            let v: Value = c.get(&format!("/v1/clusters/{name}"))?;
            emit(json, &v, |v| {
                let cl: Cluster = serde_json::from_value(v.clone())
                    .unwrap_or_else(|_| unreachable!("the API returns clusters"));
                print_cluster(&cl);
                let d: Vec<DataPlaneView> =
                    serde_json::from_value(v["dataplanes"].clone()).unwrap_or_default();
                if !d.is_empty() {
                    println!();
                    print_dataplanes(&d);
                }
                ha::print_health(v);
            });
        }
        Command::Cluster(ClusterCmd::Delete { name }) => {
            let v: Value = c.delete(&format!("/v1/clusters/{name}"))?;
            emit(json, &v, |_| println!("deleted cluster {name}"));
        }
        Command::Cluster(ClusterCmd::Grow {
            name,
            group,
            tls,
            force,
        }) => {
            let cl: Cluster = c.post(
                &forced(format!("/v1/clusters/{name}/groups"), force),
                &parse_group(&group, &tls)?,
            )?;
            emit(json, &cl, print_cluster);
        }
        Command::Cluster(ClusterCmd::Shrink { name, group }) => {
            let cl: Cluster = c.delete(&format!("/v1/clusters/{name}/groups/{group}"))?;
            emit(json, &cl, print_cluster);
        }
        Command::Slots(SlotsCmd::Assign { name, slots, to }) => {
            let cl: Cluster = c.post(
                &format!("/v1/clusters/{name}/slots"),
                &Assign { slots, group: to },
            )?;
            emit(json, &cl, print_cluster);
        }
        Command::Group(g) => {
            let mut edit = GroupEdit {
                master: g.master,
                zone: g.zone,
                remove_replicas: g.remove_replica,
                read_from: g.read_from,
                tls: match (g.tls, g.no_tls) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                tls_server_name: g.tls_server_name,
                ..GroupEdit::default()
            };
            for r in &g.add_replica {
                let (address, zone) = r.split_once('@').unwrap_or((r, ""));
                edit.add_replicas.push(Replica {
                    address: address.to_string(),
                    zone: zone.to_string(),
                });
            }
            for rz in &g.replica_zone {
                let (a, z) = rz
                    .split_once('=')
                    .ok_or_else(|| CliError::ReplicaZoneArg(rz.clone()))?;
                edit.replica_zones.insert(a.to_string(), z.to_string());
            }
            let cl: Cluster = c.patch(
                &forced(
                    format!("/v1/clusters/{}/groups/{}", g.cluster, g.group),
                    g.force,
                ),
                &edit,
            )?;
            emit(json, &cl, print_cluster);
        }
        Command::Dataplanes { cluster } => {
            let path = cluster.map_or("/v1/dataplanes".to_string(), |n| {
                format!("/v1/clusters/{n}/dataplanes")
            });
            let d: Vec<DataPlaneView> = c.get(&path)?;
            emit(json, &d, |d| print_dataplanes(d));
        }
        Command::Events { name, since } => events::run(&c, &name, since, json)?,
        Command::Top(a) => top::run(&c, ca, a, json)?,
        Command::Dataplane(DataplaneCmd::Forget { id }) => {
            let v: Value = c.delete(&format!("/v1/dataplanes/{id}"))?;
            emit(json, &v, |_| println!("forgot data plane {id}"));
        }
        Command::Snapshot(SnapshotCmd::Export { name, output }) => {
            let cl: Cluster = c.get(&format!("/v1/clusters/{name}/snapshot"))?;
            let text = serde_json::to_string_pretty(&cl)? + "\n";
            match output {
                Some(p) => {
                    std::fs::write(&p, text).map_err(|source| CliError::Write {
                        path: p.clone(),
                        source,
                    })?;
                    if !json {
                        println!(
                            "wrote cluster {name} version {} to {}",
                            cl.version,
                            p.display()
                        );
                    }
                }
                None => print!("{text}"),
            }
        }
        Command::Snapshot(SnapshotCmd::Apply { name, file, force }) => {
            let text = std::fs::read_to_string(&file).map_err(|source| CliError::Read {
                path: file.clone(),
                source,
            })?;
            let desired: Cluster =
                serde_json::from_str(&text).map_err(|source| CliError::NotASnapshot {
                    path: file.clone(),
                    source,
                })?;
            let path = format!(
                "/v1/clusters/{name}/snapshot{}",
                if force { "?force=true" } else { "" }
            );
            let cl: Cluster = c.put(&path, &desired)?;
            emit(json, &cl, print_cluster);
        }
        Command::Local(l) => crate::local::run(l, json)?,
        Command::BackendUsers(BackendUsersCmd::Provision(a)) => {
            backend_users::provision(&c, a, json)?
        }
        Command::Users(u) => users::run(&c, u, json)?,
        Command::Failover(a) => ha::failover(&c, a, json)?,
        Command::Cluster(ClusterCmd::Set(a)) => ha::set(&c, a, json)?,
        Command::Migrate {
            name,
            slots,
            to,
            settings,
        } => migrations::run(
            &c,
            migrations::Request::Migrate {
                name,
                slots,
                to,
                settings,
            },
            json,
        )?,
        Command::Rebalance { name, settings } => migrations::run(
            &c,
            migrations::Request::Plan {
                name,
                group: None,
                settings,
            },
            json,
        )?,
        Command::Drain {
            name,
            group,
            settings,
        } => migrations::run(
            &c,
            migrations::Request::Plan {
                name,
                group: Some(group),
                settings,
            },
            json,
        )?,
        Command::Migrations { name, id } => {
            migrations::run(&c, migrations::Request::List { name, id }, json)?
        }
        Command::Migration(a) => migrations::run(&c, migrations::Request::Action(a), json)?,
    }
    Ok(())
}
