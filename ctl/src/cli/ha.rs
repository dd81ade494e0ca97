//! `keywayctl failover`, `keywayctl cluster set`, and the health part of
//! `keywayctl cluster show`.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use keyway_capnp::duration::parse_duration;

use super::{emit, table, CliError};
use crate::client::Client;
use crate::model::{Cluster, FailoverRecord};
use crate::wire::{ClusterEdit, FailoverRequest, FailoverStarted, GroupHealth};

/// `keywayctl failover CLUSTER --group G [--to ADDR] [--wait] [--force]`.
#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// Cluster name.
    pub name: String,
    /// The group whose master is replaced.
    #[arg(long)]
    pub group: String,
    /// The replica to promote (default: the best one).
    #[arg(long, value_name = "ADDR")]
    pub to: Option<String>,
    /// Wait until it is done and say how it ended.
    #[arg(long)]
    pub wait: bool,
    /// Promote even a lagging or unchecked replica, or fail over a master
    /// that is down (what the replica lacks is lost).
    #[arg(long)]
    pub force: bool,
}

/// `keywayctl cluster set NAME [settings]`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Cluster name.
    pub name: String,
    /// How often ctld checks each server, e.g. "1s", "500ms".
    #[arg(long, value_parser = parse_duration)]
    pub check_interval: Option<Duration>,
    /// How long a master's checks fail before it is failed over, e.g. "5s".
    #[arg(long, value_parser = parse_duration)]
    pub down_after: Option<Duration>,
    /// Fail failed masters over automatically: on or off.
    #[arg(long, value_parser = on_off)]
    pub auto_failover: Option<bool>,
    /// The most a replica may lag (bytes) to be promoted automatically.
    #[arg(long)]
    pub max_lag_bytes: Option<u64>,
    /// The data planes' lease, e.g. "30s".
    #[arg(long, value_parser = parse_duration)]
    pub lease: Option<Duration>,
}

fn on_off(s: &str) -> Result<bool, CliError> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(CliError::OnOff(s.to_string())),
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// `keywayctl cluster set`.
pub fn set(c: &Client, a: SetArgs, json: bool) -> Result<(), CliError> {
    let edit = ClusterEdit {
        check_interval_ms: a.check_interval.map(ms),
        down_after_ms: a.down_after.map(ms),
        auto_failover: a.auto_failover,
        max_lag_bytes: a.max_lag_bytes,
        lease_ms: a.lease.map(ms),
    };
    let cl: Cluster = c.patch(&format!("/v1/clusters/{}", a.name), &edit)?;
    emit(json, &cl, |cl| {
        println!(
            "cluster {}  version {}: checks every {}ms, failed after {}ms, automatic failover {}, \
             max lag {} bytes, lease {}ms",
            cl.name,
            cl.version,
            cl.ha.check_interval_ms,
            cl.ha.down_after_ms,
            if cl.ha.auto_failover { "on" } else { "off" },
            cl.ha.max_lag_bytes,
            cl.lease_millis
        )
    });
    Ok(())
}

/// `keywayctl failover`.
pub fn failover(c: &Client, a: FailoverArgs, json: bool) -> Result<(), CliError> {
    let started: FailoverStarted = c.post(
        &format!("/v1/clusters/{}/groups/{}/failover", a.name, a.group),
        &FailoverRequest {
            to: a.to,
            force: a.force,
        },
    )?;
    if !a.wait {
        emit(json, &started, |s| {
            println!(
                "failover {} of group {} to {} started ({:?})",
                s.failover, a.group, s.to, s.kind
            )
        });
        return Ok(());
    }
    // A switchover waits at most a few seconds per step; an automatic one
    // may wait for a lease.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let cl: Cluster = c.get(&format!("/v1/clusters/{}", a.name))?;
        if let Some(r) = cl.failovers.iter().find(|r| r.id == started.failover) {
            let r: FailoverRecord = r.clone();
            emit(json, &r, |r| {
                println!(
                    "failover {} of group {}: {} ({} -> {}, {} ms)",
                    r.id,
                    r.group,
                    r.outcome,
                    r.from,
                    r.to,
                    r.finished_ms.saturating_sub(r.started_ms)
                )
            });
            return if r.outcome == "done" {
                Ok(())
            } else {
                Err(CliError::FailoverFailed {
                    id: r.id,
                    outcome: r.outcome.clone(),
                })
            };
        }
        if Instant::now() > deadline {
            return Err(CliError::FailoverSlow {
                id: started.failover,
                cluster: a.name.clone(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Prints the health part of a `cluster show` reply.
pub fn print_health(v: &Value) {
    let groups: Vec<GroupHealth> = serde_json::from_value(v["health"].clone()).unwrap_or_default();
    if groups.is_empty() {
        return;
    }
    println!();
    let mut rows = Vec::new();
    for g in &groups {
        for s in &g.servers {
            rows.push(vec![
                g.group.clone(),
                g.state.clone(),
                s.address.clone(),
                s.listed_as.clone(),
                s.health.clone(),
                s.role.clone().unwrap_or_else(|| "-".into()),
                s.offset.map_or("-".into(), |o| o.to_string()),
                s.link_up
                    .map_or("-".into(), |l| if l { "up" } else { "down" }.to_string()),
                format!("{}/{}", s.dataplanes_failing, s.dataplanes_reaching),
                if s.last_error.is_empty() {
                    "-".into()
                } else {
                    s.last_error.clone()
                },
            ]);
        }
    }
    table(
        &[
            "GROUP",
            "STATE",
            "SERVER",
            "LISTED",
            "HEALTH",
            "ROLE",
            "OFFSET",
            "LINK",
            "DP FAIL/OK",
            "LAST ERROR",
        ],
        rows,
    );
    for g in groups.iter().filter(|g| g.problem.is_some()) {
        println!(
            "group {} is failed: {}",
            g.group,
            g.problem.as_deref().unwrap_or_default()
        );
    }
    let failovers: Vec<FailoverRecord> =
        serde_json::from_value(v["failovers"].clone()).unwrap_or_default();
    if !failovers.is_empty() {
        println!();
        let rows = failovers
            .iter()
            .rev()
            .take(5)
            .map(|r| {
                vec![
                    r.id.to_string(),
                    r.group.clone(),
                    format!("{:?}", r.kind).to_lowercase(),
                    r.from.clone(),
                    r.to.clone(),
                    format!("{}ms", r.finished_ms.saturating_sub(r.started_ms)),
                    r.offset_gap.to_string(),
                    r.outcome.clone(),
                ]
            })
            .collect();
        table(
            &[
                "FAILOVER", "GROUP", "KIND", "FROM", "TO", "TOOK", "GAP", "OUTCOME",
            ],
            rows,
        );
    }
}
