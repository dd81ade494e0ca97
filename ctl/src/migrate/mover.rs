//! Moving keys from a migration's source to its target with stock Redis
//! commands: `MIGRATE host port "" 0 timeout KEYS k…` on the source (atomic
//! per call: a key is either still on the source or restored on the target
//! and deleted from the source), `DEL` for copies found on both sides, and
//! `MEMORY USAGE` to report keys too big for the timeout.
//!
//! A batch that fails as a whole is retried key by key, so that each key's
//! outcome is known:
//! - `BUSYKEY`: the target already has the key. Nothing writes to the source
//!   of a moving slot and nothing reaches the target for a key before its
//!   move succeeded, so the target's copy was restored by a MIGRATE that
//!   timed out after the restore happened: it is the same value. The
//!   source's copy is deleted, as the data planes do.
//! - a read or write timeout: the key is too big for the timeout. It is
//!   reported by name and size and retried alone with four times the
//!   timeout, up to the settings' maximum; past that the sweep stops with an
//!   error naming it (never skipped).
//! - anything else (target unreachable, out of memory, …) is an error that
//!   is retried with backoff; too many in a row stop the sweep.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::{Connection, RedisError, Value};

use crate::model::migration::BigKey;
use crate::model::MoveSettings;
use crate::reach::Reach;

/// Consecutive failures (with backoff) before the sweep gives up.
pub const MAX_FAILURES: u32 = 20;

/// A connection attempt's timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a mover reports into, shared by the sweep's workers.
#[derive(Debug, Default)]
pub struct Tally {
    /// Keys moved (a key a data plane moved between the scan and the
    /// MIGRATE is counted too: MIGRATE says only that some key moved).
    pub moved: std::sync::atomic::AtomicU64,
    /// Keys deleted on the source (copies on both sides).
    pub deleted: std::sync::atomic::AtomicU64,
    /// Errors and big keys, drained into the migration's progress.
    pub notes: Mutex<Notes>,
}

/// Errors and big keys since the last progress record.
#[derive(Debug, Default)]
pub struct Notes {
    /// Errors (retried).
    pub errors: Vec<String>,
    /// Big keys, new or updated.
    pub big_keys: Vec<BigKey>,
}

/// Why a move stopped the sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fatal {
    /// The sweep was asked to stop.
    Stopped,
    /// It cannot go on; `resume` tries again.
    Failed(String),
}

/// One connection to the source and where its keys go.
pub struct Mover {
    source: String,
    target_host: String,
    target_port: String,
    con: Option<Connection>,
    settings: MoveSettings,
    failures: u32,
    /// How the source is reached; its login also logs `MIGRATE` in at the
    /// target (one cluster, one login).
    reach: Reach,
}

impl std::fmt::Debug for Mover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mover")
            .field("source", &self.source)
            .field(
                "target",
                &format!("{}:{}", self.target_host, self.target_port),
            )
            .finish_non_exhaustive()
    }
}

/// The text of a Redis error as the server sent it (`CODE detail`).
pub fn error_text(e: &RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    }
}

/// Why a mover (or a sweep's scan connection) cannot reach a server.
#[derive(Debug, thiserror::Error)]
pub enum MoverError {
    /// The address is not a Redis URL's host and port, or its connection's
    /// timeouts cannot be set.
    #[error("{addr}: {source}")]
    Address {
        /// The server.
        addr: String,
        /// Why.
        source: RedisError,
    },
    /// TLS to the server cannot be set up.
    #[error("cannot connect to {addr}: TLS: {why}")]
    Tls {
        /// The server.
        addr: String,
        /// Why.
        why: String,
    },
    /// The server cannot be reached.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The server.
        addr: String,
        /// Why.
        source: RedisError,
    },
    /// The connection to the source failed mid-command (dropped, timed out).
    #[error("source {addr}: {source}")]
    Source {
        /// The source.
        addr: String,
        /// Why.
        source: RedisError,
    },
    /// The target is not `host:port`.
    #[error("target {0:?} is not host:port")]
    Target(String),
    /// A timeout could not be set on the source connection.
    #[error(transparent)]
    Timeout(RedisError),
    /// A sweep worker thread could not be started.
    #[error(transparent)]
    Spawn(#[from] std::io::Error),
}

/// Opens a connection to `addr` (`host:port`) with timeouts, as `reach`
/// says (TLS, login).
pub fn connect(addr: &str, reach: &Reach, io_timeout: Duration) -> Result<Connection, MoverError> {
    let at = |source| MoverError::Address {
        addr: addr.to_string(),
        source,
    };
    let client = if reach.tls {
        let tls = crate::reach::tls().map_err(|why| MoverError::Tls {
            addr: addr.to_string(),
            why,
        })?;
        redis::Client::build_with_tls(format!("rediss://{addr}/"), tls.certificates())
            .map_err(at)?
    } else {
        redis::Client::open(format!("redis://{addr}/")).map_err(at)?
    };
    let mut con = client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|source| MoverError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    con.set_read_timeout(Some(io_timeout))
        .and_then(|()| con.set_write_timeout(Some(io_timeout)))
        .map_err(at)?;
    if let Some(login) = &reach.login {
        let mut auth = redis::cmd("AUTH");
        for a in login.auth_args() {
            auth.arg(a);
        }
        // The error is Redis's (`WRONGPASS …`): it never quotes the password.
        auth.query::<()>(&mut con)
            .map_err(|source| MoverError::Connect {
                addr: addr.to_string(),
                source,
            })?;
    }
    // Named so that a MONITOR through keyway leaves the sweep's and the
    // mover's commands out (keyway's `engine::monitor` matches this name).
    // Best effort: a server that refuses it only shows them.
    let _: redis::RedisResult<()> = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("keyway-ctld")
        .query(&mut con);
    Ok(con)
}

/// The I/O timeout of a connection that runs MIGRATE with `timeout_ms`:
/// Redis applies that timeout to each step (connect, send, reply), so three
/// of them and some slack. Saturating: settings are bounded at the API, but
/// no value of them may overflow here.
fn io_timeout(timeout_ms: u64) -> Duration {
    Duration::from_millis(timeout_ms.saturating_mul(3).saturating_add(5000))
}

enum Outcome {
    /// Moved, or not there.
    Done,
    /// The target has it too.
    Busy,
    /// The MIGRATE timed out reading or writing.
    TimedOut(String),
    /// Another error from Redis.
    Error(String),
}

impl Mover {
    /// A mover from `source` to `target` (`host:port` each), reaching the
    /// source as `reach` says.
    pub fn new(
        source: &str,
        target: &str,
        settings: &MoveSettings,
        reach: Reach,
    ) -> Result<Mover, MoverError> {
        let (host, port) = target
            .rsplit_once(':')
            .ok_or_else(|| MoverError::Target(target.to_string()))?;
        Ok(Mover {
            source: source.to_string(),
            target_host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            target_port: port.to_string(),
            con: None,
            settings: settings.clone(),
            failures: 0,
            reach,
        })
    }

    /// The source connection, opened if needed; its I/O timeout covers a
    /// MIGRATE with `timeout_ms` (Redis applies it to each step).
    fn con(&mut self, timeout_ms: u64) -> Result<&mut Connection, MoverError> {
        let io = io_timeout(timeout_ms);
        if self.con.is_none() {
            self.con = Some(connect(&self.source, &self.reach, io)?);
        }
        let con = self.con.as_mut().expect("just opened");
        con.set_read_timeout(Some(io))
            .map_err(MoverError::Timeout)?;
        Ok(con)
    }

    /// Runs a command on the source; a connection problem drops the
    /// connection (it may hold a late reply) and is an `Err`.
    fn call(
        &mut self,
        cmd: &redis::Cmd,
        timeout_ms: u64,
    ) -> Result<Result<Value, RedisError>, MoverError> {
        let con = self.con(timeout_ms)?;
        match cmd.query::<Value>(con) {
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                self.con = None;
                Err(MoverError::Source {
                    addr: self.source.clone(),
                    source: e,
                })
            }
            other => Ok(other),
        }
    }

    fn migrate_cmd(&self, keys: &[Vec<u8>], timeout_ms: u64) -> redis::Cmd {
        let mut cmd = redis::cmd("MIGRATE");
        cmd.arg(&self.target_host)
            .arg(&self.target_port)
            .arg("")
            .arg(0)
            .arg(timeout_ms);
        if let Some(login) = &self.reach.login {
            for a in login.migrate_args() {
                cmd.arg(a);
            }
        }
        cmd.arg("KEYS");
        for k in keys {
            cmd.arg(&k[..]);
        }
        cmd
    }

    /// What a MIGRATE's reply means. An `IOERR` reading from or writing to
    /// the target is a timeout (a key too big for it) only if the call took
    /// about the timeout; sooner, the target closed or reset the connection
    /// (it died, or failed over): an error to retry, not a big key.
    fn outcome(r: Result<Value, RedisError>, took: Duration, timeout_ms: u64) -> Outcome {
        match r {
            Ok(_) => Outcome::Done,
            Err(e) => {
                let text = error_text(&e);
                if text.contains("BUSYKEY") {
                    Outcome::Busy
                } else if text.starts_with("IOERR")
                    && (text.contains("reading") || text.contains("writing"))
                    && took.as_millis() as u64 >= timeout_ms / 2
                {
                    Outcome::TimedOut(text)
                } else {
                    Outcome::Error(text)
                }
            }
        }
    }

    /// Backs off after a failure; too many in a row stop the sweep.
    fn failed(
        &mut self,
        tally: &Tally,
        what: String,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), Fatal> {
        self.failures += 1;
        tracing::warn!(source = %self.source, failures = self.failures, "{what}");
        if let Ok(mut n) = tally.notes.lock() {
            n.errors.push(what.clone());
        }
        if self.failures >= MAX_FAILURES {
            return Err(Fatal::Failed(format!(
                "{what} ({} failures in a row)",
                self.failures
            )));
        }
        let wait = Duration::from_millis(100u64 << self.failures.min(5));
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if stop() {
                return Err(Fatal::Stopped);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Moves `keys` (all in the migration's slots): one MIGRATE, or one per
    /// key if that fails. A single key goes straight to [`Mover::move_key`].
    pub fn move_batch(
        &mut self,
        keys: &[Vec<u8>],
        tally: &Tally,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), Fatal> {
        use std::sync::atomic::Ordering::Relaxed;
        match keys {
            [] => return Ok(()),
            [key] => return self.move_key(key, None, tally, stop),
            _ => {}
        }
        let timeout = self.settings.timeout_ms;
        loop {
            if stop() {
                return Err(Fatal::Stopped);
            }
            let cmd = self.migrate_cmd(keys, timeout);
            let started = Instant::now();
            let outcome = match self.call(&cmd, timeout) {
                Ok(Ok(Value::Okay)) => {
                    tally.moved.fetch_add(keys.len() as u64, Relaxed);
                    self.failures = 0;
                    return Ok(());
                }
                // NOKEY: none of them is on the source any more.
                Ok(Ok(_)) => {
                    self.failures = 0;
                    return Ok(());
                }
                Ok(Err(e)) => Self::outcome(Err(e), started.elapsed(), timeout),
                Err(e) => {
                    self.failed(tally, e.to_string(), stop)?;
                    continue;
                }
            };
            // One by one. After a timeout (nothing was deleted from the
            // source), the biggest key of the batch is the suspect.
            let mut suspect = None;
            if let Outcome::TimedOut(text) = outcome {
                let mut biggest = (0, 0);
                for (i, k) in keys.iter().enumerate() {
                    let bytes = self.memory_usage(k, timeout);
                    if bytes > biggest.1 {
                        biggest = (i, bytes);
                    }
                }
                let b = self.big_key(&keys[biggest.0], biggest.1, timeout, &text, tally);
                suspect = Some((biggest.0, b));
            }
            for (i, k) in keys.iter().enumerate() {
                let prior = match &suspect {
                    Some((j, b)) if *j == i => Some(b.clone()),
                    _ => None,
                };
                self.move_key(k, prior, tally, stop)?;
            }
            return Ok(());
        }
    }

    /// `MEMORY USAGE` of a key on the source (0 if unknown or gone).
    fn memory_usage(&mut self, key: &[u8], timeout: u64) -> u64 {
        match self.call(redis::cmd("MEMORY").arg("USAGE").arg(key), timeout) {
            Ok(Ok(Value::Int(n))) => n.max(0) as u64,
            _ => 0,
        }
    }

    /// Reports a key a MIGRATE with `timeout` could not move in time.
    fn big_key(
        &mut self,
        key: &[u8],
        bytes: u64,
        timeout: u64,
        why: &str,
        tally: &Tally,
    ) -> BigKey {
        let b = BigKey {
            key: String::from_utf8_lossy(key).into_owned(),
            bytes,
            timed_out_ms: timeout,
            moved_with_timeout_ms: None,
            move_ms: None,
        };
        tracing::warn!(key = %b.key, bytes, timeout_ms = timeout, "big key: {why}");
        if let Ok(mut n) = tally.notes.lock() {
            n.big_keys.push(b.clone());
        }
        b
    }

    /// Moves one key, resolving copies on both sides and growing the timeout
    /// for a big key. `big`: the key was already reported too big for the
    /// timeout (the largest of a batch that timed out).
    fn move_key(
        &mut self,
        key: &[u8],
        mut big: Option<BigKey>,
        tally: &Tally,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), Fatal> {
        use std::sync::atomic::Ordering::Relaxed;
        let name = String::from_utf8_lossy(key).into_owned();
        let mut timeout = self.settings.timeout_ms;
        if let Some(b) = &big {
            timeout = b
                .timed_out_ms
                .saturating_mul(4)
                .min(self.settings.max_timeout_ms);
        }
        loop {
            if stop() {
                return Err(Fatal::Stopped);
            }
            let started = Instant::now();
            let cmd = self.migrate_cmd(&[key.to_vec()], timeout);
            let outcome = match self.call(&cmd, timeout) {
                Ok(r) => Self::outcome(r, started.elapsed(), timeout),
                Err(e) => {
                    self.failed(tally, e.to_string(), stop)?;
                    continue;
                }
            };
            match outcome {
                Outcome::Done => {
                    self.failures = 0;
                    tally.moved.fetch_add(1, Relaxed);
                    if let Some(mut b) = big {
                        b.moved_with_timeout_ms = Some(timeout);
                        b.move_ms = Some(started.elapsed().as_millis() as u64);
                        tracing::info!(key = %b.key, bytes = b.bytes, timeout_ms = timeout, "big key moved");
                        if let Ok(mut n) = tally.notes.lock() {
                            n.big_keys.push(b);
                        }
                    }
                    return Ok(());
                }
                Outcome::Busy => {
                    match self.call(redis::cmd("DEL").arg(key), timeout) {
                        Ok(Ok(_)) => {
                            self.failures = 0;
                            tally.deleted.fetch_add(1, Relaxed);
                            if let Some(mut b) = big {
                                // The timed-out MIGRATE did restore it.
                                b.moved_with_timeout_ms = Some(b.timed_out_ms);
                                if let Ok(mut n) = tally.notes.lock() {
                                    n.big_keys.push(b);
                                }
                            }
                            return Ok(());
                        }
                        Ok(Err(e)) => self.failed(
                            tally,
                            format!("DEL {name:?} on the source: {}", error_text(&e)),
                            stop,
                        )?,
                        Err(e) => self.failed(tally, e.to_string(), stop)?,
                    }
                }
                Outcome::TimedOut(text) => {
                    let bytes = self.memory_usage(key, timeout);
                    let b = self.big_key(key, bytes, timeout, &text, tally);
                    big = Some(b);
                    let next = timeout.saturating_mul(4);
                    if timeout >= self.settings.max_timeout_ms {
                        return Err(Fatal::Failed(format!(
                            "key {name:?} ({bytes} bytes) did not move within {timeout} ms, the \
                             max timeout; raise max_timeout_ms and resume"
                        )));
                    }
                    timeout = next.min(self.settings.max_timeout_ms);
                }
                Outcome::Error(text) => {
                    self.failed(tally, format!("MIGRATE {name:?}: {text}"), stop)?
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_never_overflow() {
        assert_eq!(io_timeout(1000), Duration::from_millis(8000));
        assert_eq!(io_timeout(u64::MAX), Duration::from_millis(u64::MAX));
        assert_eq!(
            io_timeout(u64::MAX / 3 + 1),
            Duration::from_millis(u64::MAX),
            "3x saturates, then + 5000 saturates"
        );
    }
}
