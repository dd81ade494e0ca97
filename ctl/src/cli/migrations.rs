//! `keywayctl migrate | rebalance | drain | migrations | migration …`: start
//! slot migrations, watch them (`--wait`: a progress bar on a terminal, a
//! line per change otherwise; non-zero exit if a migration fails), and pause,
//! resume or cancel them.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use keyway_capnp::duration::parse_duration;

use super::{emit, table, CliError};
use crate::client::Client;
use crate::model::{MigrationState, MoveSettings};
use crate::wire::{MigrationView, Rebalance, StartMigration};

/// How the sweep moves keys (`--batch`, `--rate`, …).
#[derive(Debug, Clone, Args)]
pub struct SettingsArgs {
    /// Keys per MIGRATE call.
    #[arg(long, default_value_t = 100)]
    batch: u32,
    /// Keys per second at most (0: no limit).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// MIGRATE calls in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// MIGRATE timeout; a key that cannot move within it is reported and
    /// retried alone with four times the timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// The longest timeout a big key is tried with before the move stops
    /// with an error naming it.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    max_timeout: Duration,
    /// Start with the sweep paused (data planes still move keys on demand;
    /// `migration resume` starts it).
    #[arg(long)]
    paused: bool,
    /// Wait until the move is done, showing progress; exit non-zero if it
    /// fails.
    #[arg(long)]
    wait: bool,
}

impl SettingsArgs {
    fn settings(&self) -> MoveSettings {
        MoveSettings {
            batch: self.batch,
            rate: self.rate,
            concurrency: self.concurrency,
            timeout_ms: self.timeout.as_millis() as u64,
            max_timeout_ms: self.max_timeout.as_millis() as u64,
        }
    }
}

/// `keywayctl migration …`.
#[derive(Debug, Subcommand)]
pub enum MigrationCmd {
    /// Pause a migration's sweep (data planes still move keys on demand).
    Pause {
        /// Cluster name.
        name: String,
        /// Migration id.
        id: u64,
    },
    /// Resume a paused or failed migration.
    Resume {
        /// Cluster name.
        name: String,
        /// Migration id.
        id: u64,
        /// Wait until it is done.
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a migration: before keys move it just ends; after, the keys
    /// moved so far are moved back.
    Cancel {
        /// Cluster name.
        name: String,
        /// Migration id.
        id: u64,
        /// Wait until the keys are back.
        #[arg(long)]
        wait: bool,
    },
}

/// The migration commands, as `run` dispatches them.
#[derive(Debug)]
pub enum Request {
    /// `migrate`.
    Migrate {
        /// Cluster.
        name: String,
        /// Slot ranges.
        slots: String,
        /// Target group.
        to: String,
        /// Settings.
        settings: SettingsArgs,
    },
    /// `rebalance` (no group) or `drain` (a group).
    Plan {
        /// Cluster.
        name: String,
        /// The group to drain.
        group: Option<String>,
        /// Settings.
        settings: SettingsArgs,
    },
    /// `migrations`.
    List {
        /// Cluster.
        name: String,
        /// One migration in detail.
        id: Option<u64>,
    },
    /// `migration …`.
    Action(MigrationCmd),
}

fn state_text(v: &MigrationView) -> String {
    let m = &v.migration;
    let p = &m.progress;
    let back = if m.cancelling {
        "moving back"
    } else {
        "moving"
    };
    match m.state {
        MigrationState::Pending => "pending".into(),
        MigrationState::Blocking { .. } if p.waiting_for.is_empty() => "blocking".into(),
        MigrationState::Blocking { .. } => {
            format!("blocking (waiting for {})", p.waiting_for.join(", "))
        }
        MigrationState::Moving { .. } if p.failed.is_some() => "failed".into(),
        MigrationState::Moving { .. } if m.paused => format!("{back}, paused"),
        MigrationState::Moving { .. } => {
            format!("{back}, pass {} at {}%", p.sweeps + 1, p.pass_permille / 10)
        }
        MigrationState::Done => "done".into(),
        MigrationState::Cancelled => "cancelled".into(),
    }
}

/// How far along, 0 to 1 (the first pass moves the keys; later ones check).
fn fraction(v: &MigrationView) -> f64 {
    let p = &v.migration.progress;
    match v.migration.state {
        MigrationState::Done | MigrationState::Cancelled => 1.0,
        MigrationState::Moving { .. } => {
            let pass = f64::from(p.pass_permille.min(1000)) / 1000.0;
            if p.sweeps == 0 {
                0.95 * pass
            } else {
                0.95 + 0.05 * pass
            }
        }
        _ => 0.0,
    }
}

fn print_list(list: &[MigrationView]) {
    if list.is_empty() {
        println!("no migrations");
        return;
    }
    let rows = list
        .iter()
        .map(|v| {
            let p = &v.migration.progress;
            vec![
                v.migration.id.to_string(),
                v.migration.from.clone(),
                v.migration.to.clone(),
                format!("{} ({})", v.slots, v.migration.slot_count()),
                state_text(v),
                p.keys_moved.to_string(),
                format!("{}/s", p.rate),
                v.eta_s.map_or("-".into(), |s| format!("{s}s")),
                (p.errors.len() + p.big_keys.len()).to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "FROM", "TO", "SLOTS", "STATE", "MOVED", "RATE", "ETA", "ERRORS",
        ],
        rows,
    );
    let count = |f: &dyn Fn(&MigrationView) -> bool| {
        let ms: Vec<&MigrationView> = list.iter().filter(|v| f(v)).collect();
        let slots: u32 = ms.iter().map(|v| v.migration.slot_count()).sum();
        (ms.len(), slots)
    };
    let (active, moving) = count(&|v| v.migration.active());
    let (done, moved) = count(&|v| v.migration.state == MigrationState::Done);
    println!(
        "slots done: {moved} in {done} finished migration(s); {moving} still moving in {active} active"
    );
}

fn print_detail(v: &MigrationView) {
    let m = &v.migration;
    let p = &m.progress;
    println!(
        "migration {}: slots {} from {} to {}",
        m.id, v.slots, m.from, m.to
    );
    println!("state        {}", state_text(v));
    println!(
        "moved        {} keys by the sweep (estimated {}), {} deleted on the source as copies",
        p.keys_moved,
        p.estimated_keys.map_or("?".into(), |e| e.to_string()),
        p.deleted_on_source
    );
    println!(
        "rate         {} keys/s, ETA {}",
        p.rate,
        v.eta_s.map_or("-".into(), |s| format!("{s}s"))
    );
    println!(
        "passes       {} done, current at {}%",
        p.sweeps,
        p.pass_permille / 10
    );
    let s = &m.settings;
    println!(
        "settings     batch {}, rate {}, concurrency {}, timeout {}ms, max timeout {}ms",
        s.batch, s.rate, s.concurrency, s.timeout_ms, s.max_timeout_ms
    );
    if let Some(f) = &p.failed {
        println!("failed       {f} (keywayctl migration resume … tries again)");
    }
    for b in &p.big_keys {
        println!(
            "big key      {:?}: {} bytes, timed out at {}ms{}",
            b.key,
            b.bytes,
            b.timed_out_ms,
            match (b.moved_with_timeout_ms, b.move_ms) {
                (Some(t), Some(ms)) => format!(", moved with {t}ms in {ms}ms"),
                (Some(t), None) => format!(", moved with {t}ms"),
                _ => ", not moved yet".into(),
            }
        );
    }
    for e in &p.errors {
        println!("error        {e}");
    }
}

/// Polls migrations `ids` until each has ended; `want` is the end that
/// counts as success.
fn wait(c: &Client, name: &str, ids: &[u64], want: MigrationState) -> Result<(), CliError> {
    let tty = std::io::stderr().is_terminal();
    let mut last_line = String::new();
    let mut last_print = Instant::now() - Duration::from_secs(60);
    loop {
        let mut views = Vec::new();
        for id in ids {
            views.push(c.get::<MigrationView>(&format!("/v1/clusters/{name}/migrations/{id}"))?);
        }
        let frac = views.iter().map(fraction).sum::<f64>() / views.len().max(1) as f64;
        let moved: u64 = views.iter().map(|v| v.migration.progress.keys_moved).sum();
        let rate: u64 = views.iter().map(|v| v.migration.progress.rate).sum();
        let states: Vec<String> = views
            .iter()
            .map(|v| format!("#{} {}", v.migration.id, state_text(v)))
            .collect();
        let line = format!("{moved} keys moved, {rate} keys/s; {}", states.join("; "));
        if tty {
            let width = 30;
            let filled = (frac * width as f64).round() as usize;
            eprint!(
                "\r\x1b[2K[{}{}] {:>3}% {line}",
                "#".repeat(filled.min(width)),
                ".".repeat(width - filled.min(width)),
                (frac * 100.0).floor()
            );
            let _ = std::io::stderr().flush();
        } else if line != last_line && last_print.elapsed() >= Duration::from_secs(2) {
            eprintln!("{:>3}% {line}", (frac * 100.0).floor());
            last_print = Instant::now();
            last_line = line;
        }
        if let Some(v) = views.iter().find(|v| v.migration.progress.failed.is_some()) {
            if tty {
                eprintln!();
            }
            return Err(CliError::MigrationFailed {
                id: v.migration.id,
                why: v.migration.progress.failed.clone().unwrap_or_default(),
            });
        }
        if views.iter().all(|v| !v.migration.active()) {
            if tty {
                eprintln!();
            }
            if let Some(v) = views.iter().find(|v| v.migration.state != want) {
                return Err(CliError::MigrationEnded {
                    id: v.migration.id,
                    state: state_text(v),
                });
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs one migration command.
pub fn run(c: &Client, req: Request, json: bool) -> Result<(), CliError> {
    match req {
        Request::Migrate {
            name,
            slots,
            to,
            settings,
        } => {
            let body = StartMigration {
                slots,
                to,
                settings: settings.settings(),
                paused: settings.paused,
            };
            let started: Vec<MigrationView> =
                c.post(&format!("/v1/clusters/{name}/migrations"), &body)?;
            started_then_wait(c, &name, started, &settings, json)
        }
        Request::Plan {
            name,
            group,
            settings,
        } => {
            let what = if group.is_some() {
                "drain"
            } else {
                "rebalance"
            };
            let body = Rebalance {
                group,
                settings: settings.settings(),
                paused: settings.paused,
            };
            let started: Vec<MigrationView> =
                c.post(&format!("/v1/clusters/{name}/{what}"), &body)?;
            if started.is_empty() && !json {
                println!("cluster {name} is balanced: nothing to move");
                return Ok(());
            }
            started_then_wait(c, &name, started, &settings, json)
        }
        Request::List { name, id: None } => {
            let list: Vec<MigrationView> = c.get(&format!("/v1/clusters/{name}/migrations"))?;
            emit(json, &list, |l| print_list(l));
            Ok(())
        }
        Request::List { name, id: Some(id) } => {
            let v: MigrationView = c.get(&format!("/v1/clusters/{name}/migrations/{id}"))?;
            emit(json, &v, print_detail);
            Ok(())
        }
        Request::Action(a) => {
            let (name, id, action, wait_for) = match a {
                MigrationCmd::Pause { name, id } => (name, id, "pause", None),
                MigrationCmd::Resume { name, id, wait } => {
                    (name, id, "resume", wait.then_some(MigrationState::Done))
                }
                MigrationCmd::Cancel { name, id, wait } => (
                    name,
                    id,
                    "cancel",
                    wait.then_some(MigrationState::Cancelled),
                ),
            };
            let v: MigrationView = c.post(
                &format!("/v1/clusters/{name}/migrations/{id}/{action}"),
                &serde_json::json!({}),
            )?;
            emit(json, &v, print_detail);
            match wait_for {
                Some(want) => wait(c, &name, &[id], want),
                None => Ok(()),
            }
        }
    }
}

fn started_then_wait(
    c: &Client,
    name: &str,
    started: Vec<MigrationView>,
    settings: &SettingsArgs,
    json: bool,
) -> Result<(), CliError> {
    let ids: Vec<u64> = started.iter().map(|v| v.migration.id).collect();
    emit(json, &started, |l| print_list(l));
    if settings.wait {
        wait(c, name, &ids, MigrationState::Done)?;
        if !json {
            println!(
                "done: migration{} {} finished",
                if ids.len() > 1 { "s" } else { "" },
                ids.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}
