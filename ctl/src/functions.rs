//! Redis functions follow a cluster's growth: before a group is added
//! (`Change::Grow`, which gives it no slot), the libraries of the cluster
//! are copied to its master — `FUNCTION DUMP` from the first existing
//! group's master that answers, `FUNCTION RESTORE <payload>` into the new
//! one — so that an `FCALL` routed to it once it owns slots finds them.
//! (Data planes send `FUNCTION LOAD` to every group of their table; this
//! covers the libraries loaded before the group joined.)
//!
//! A cluster without libraries costs one `FUNCTION LIST` on an existing
//! master and never touches the new group. Any failure fails the grow with
//! a [`CopyError`] naming the server and Redis's answer: the new master
//! already has a library of the same name (`RESTORE` without `REPLACE` never
//! overwrites), it cannot be reached, or no existing master answers.
//! Known window: a `FUNCTION LOAD` sent through the data planes after the
//! copy and before they load the grown table misses the new group.

use std::time::Duration;

use redis::{Connection, Value};

use crate::migrate::mover;
use crate::model::Group;
use crate::reach::Reach;

/// Reads and writes of the copy give up after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the libraries could not be copied to a new group.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// No existing group's master answered.
    #[error(
        "cannot copy the cluster's functions to the new group: no existing group's master answered ({0})"
    )]
    NoSource(String),
    /// The new group's master refused or could not be reached.
    #[error(
        "cannot copy the cluster's functions from {from} to the new group's master {to}: {why}"
    )]
    Target {
        /// The source master.
        from: String,
        /// The new master.
        to: String,
        /// What went wrong (Redis's error, or the connection's).
        why: String,
    },
}

/// Runs `cmd`; an error reply reads as Redis wrote it (`ERR …`).
fn call(con: &mut Connection, cmd: &redis::Cmd) -> Result<Value, String> {
    cmd.query::<Value>(con)
        .map_err(|e| match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            _ => e.to_string(),
        })
}

/// The source's libraries as a `FUNCTION DUMP` payload, or `None` when it
/// has none.
fn dump(addr: &str, reach: &Reach) -> Result<Option<Vec<u8>>, String> {
    let mut con = mover::connect(addr, reach, IO_TIMEOUT).map_err(|e| e.to_string())?;
    match call(&mut con, redis::cmd("FUNCTION").arg("LIST"))? {
        Value::Array(libs) if libs.is_empty() => return Ok(None),
        Value::Array(_) => {}
        other => return Err(format!("unexpected FUNCTION LIST reply {other:?}")),
    }
    match call(&mut con, redis::cmd("FUNCTION").arg("DUMP"))? {
        Value::BulkString(payload) => Ok(Some(payload)),
        other => Err(format!("unexpected FUNCTION DUMP reply {other:?}")),
    }
}

/// Copies the libraries of `existing` groups of `cluster` (the first
/// master that answers) to the master of group `new`; returns the source's
/// address, or `None` if it had no library (nothing was sent to `new`).
pub fn copy_to_new_group(
    cluster: &str,
    existing: &[Group],
    new: &Group,
) -> Result<Option<String>, CopyError> {
    let new_master = new.master.as_str();
    let mut failures = Vec::new();
    for g in existing {
        let payload = match dump(&g.master, &Reach::of(cluster, g)) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(None),
            Err(why) => {
                failures.push(format!("{} {}: {why}", g.name, g.master));
                continue;
            }
        };
        let target = |why: String| CopyError::Target {
            from: g.master.clone(),
            to: new_master.to_string(),
            why,
        };
        let mut con = mover::connect(new_master, &Reach::of(cluster, new), IO_TIMEOUT)
            .map_err(|e| target(e.to_string()))?;
        call(&mut con, redis::cmd("FUNCTION").arg("RESTORE").arg(payload)).map_err(target)?;
        tracing::info!(from = %g.master, to = new_master, "functions copied to the new group");
        return Ok(Some(g.master.clone()));
    }
    if failures.is_empty() {
        // A cluster has groups; none means nothing to copy from.
        return Ok(None);
    }
    Err(CopyError::NoSource(failures.join("; ")))
}
