//! The background sweep of a moving migration's source (DESIGN §4 step 3):
//! `SCAN` the source, keep the keys whose slot moves, and MIGRATE them to
//! the target in batches, at most `rate` keys a second, with `concurrency`
//! MIGRATE calls in flight. Passes repeat until one finds no key of the
//! moving slots on the source: then the migration can finish.
//!
//! Progress (the SCAN cursor, keys found in the pass, keys moved, errors,
//! big keys) is recorded in the store about once a second, so a restarted
//! ctld resumes from the cursor. The cursor only moves on once every key of
//! the SCAN page before it has been moved, and a pass counts as empty only
//! if it found nothing from its first page to its last, so resuming never
//! ends a move early.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyway_capnp::slot::key_slot;

use super::mover::{connect, error_text, Fatal, Mover, MoverError, Tally};
use crate::daemon::Shared;
use crate::model::{Migration, MigrationState, MoveSettings};
use crate::reach::Reach;

/// Keys a SCAN call is asked for.
const SCAN_COUNT: u64 = 1000;

/// How often progress is written to the store.
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// How a sweep ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A whole pass found no key of the moving slots on the source.
    Empty,
    /// Asked to stop (paused, cancelled, superseded, shutting down).
    Stopped,
    /// It could not go on; the reason is recorded in the progress.
    Failed(String),
}

/// What one sweep works on.
#[derive(Debug, Clone)]
pub struct Job {
    /// The cluster.
    pub cluster: String,
    /// The migration.
    pub id: u64,
    /// The version that started this direction of the move: the sweep stops
    /// when the migration is no longer moving under it.
    pub version: u64,
    /// The source's and the target's masters (`host:port`): the sweep stops
    /// when either changes (a failover), and the next one uses the new.
    pub masters: (String, String),
}

/// Keys per second at most, shared by the workers.
#[derive(Debug)]
struct RateLimit {
    rate: u64,
    next: Mutex<Instant>,
}

impl RateLimit {
    fn new(rate: u64) -> RateLimit {
        RateLimit {
            rate,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits until `n` more keys may go.
    fn take(&self, n: usize, stop: &dyn Fn() -> bool) -> Result<(), Fatal> {
        if self.rate == 0 {
            return Ok(());
        }
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(n as f64 / self.rate as f64);
            start
        };
        while Instant::now() < at {
            if stop() {
                return Err(Fatal::Stopped);
            }
            std::thread::sleep((at - Instant::now()).min(Duration::from_millis(20)));
        }
        Ok(())
    }
}

/// How far a SCAN cursor is through its pass, in thousandths (Redis walks the
/// table in reverse-binary order, so the cursor's reversed bits grow).
pub fn permille(cursor: u64) -> u32 {
    if cursor == 0 {
        return 0;
    }
    ((u128::from(cursor.reverse_bits()) * 1000) >> 64) as u32
}

struct Workers {
    jobs: Option<SyncSender<Vec<Vec<u8>>>>,
    done: Receiver<Result<(), Fatal>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// `settings.concurrency` movers from `source` to `target`.
    fn start(
        source: &str,
        target: &str,
        settings: &MoveSettings,
        reach: &Reach,
        tally: &Arc<Tally>,
        rate: &Arc<RateLimit>,
        stop: &Arc<AtomicBool>,
    ) -> Result<Workers, MoverError> {
        let n = settings.concurrency;
        let (jobs, rx) = mpsc::sync_channel::<Vec<Vec<u8>>>(n as usize * 2);
        let rx = Arc::new(Mutex::new(rx));
        let (done_tx, done) = mpsc::channel();
        let mut threads = Vec::new();
        for i in 0..n {
            let mut mover = Mover::new(source, target, settings, reach.clone())?;
            let (rx, done_tx, tally, rate, stop): (_, Sender<_>, _, _, _) = (
                rx.clone(),
                done_tx.clone(),
                tally.clone(),
                rate.clone(),
                stop.clone(),
            );
            let t = std::thread::Builder::new()
                .name(format!("keyway-sweep-{i}"))
                .spawn(move || loop {
                    let batch = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                        Ok(b) => b,
                        Err(_) => return,
                    };
                    let stopping = || stop.load(Ordering::Relaxed);
                    let r = rate
                        .take(batch.len(), &stopping)
                        .and_then(|()| mover.move_batch(&batch, &tally, &stopping));
                    if done_tx.send(r).is_err() {
                        return;
                    }
                })?;
            threads.push(t);
        }
        Ok(Workers {
            jobs: Some(jobs),
            done,
            threads,
        })
    }

    /// Moves every batch, `concurrency` at a time; the first fatal result.
    fn run(&self, batches: Vec<Vec<Vec<u8>>>) -> Result<(), Fatal> {
        let n = batches.len();
        let jobs = self.jobs.as_ref().expect("workers running");
        for b in batches {
            jobs.send(b)
                .map_err(|_| Fatal::Failed("sweep workers stopped".into()))?;
        }
        let mut first = Ok(());
        for _ in 0..n {
            match self.done.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if first.is_ok() {
                        first = Err(e);
                    }
                }
                Err(_) => return Err(Fatal::Failed("sweep workers stopped".into())),
            }
        }
        first
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sweeps until the pass is empty, it is stopped, or it fails.
pub fn run(ctld: &Shared, job: &Job, stop: &Arc<AtomicBool>) -> Ended {
    match sweep(ctld, job, stop) {
        Ok(()) => Ended::Empty,
        Err(Fatal::Stopped) => Ended::Stopped,
        Err(Fatal::Failed(why)) => Ended::Failed(why),
    }
}

/// The migration, if this sweep may still work on it.
fn current(ctld: &Shared, job: &Job) -> Option<Migration> {
    let m = ctld.migration(&job.cluster, job.id).ok()?;
    let moving = m.state
        == MigrationState::Moving {
            version: job.version,
        };
    (moving && !m.paused && m.progress.failed.is_none()).then_some(m)
}

fn sweep(ctld: &Shared, job: &Job, stop: &Arc<AtomicBool>) -> Result<(), Fatal> {
    let m = current(ctld, job).ok_or(Fatal::Stopped)?;
    let cluster = ctld
        .cluster(&job.cluster)
        .map_err(|e| Fatal::Failed(e.to_string()))?;
    let (source, target) = job.masters.clone();
    let slot_count = cluster.slot_count;
    let mut moving = vec![false; slot_count as usize];
    for &(a, b) in &m.ranges {
        for s in a..=b {
            moving[s as usize] = true;
        }
    }
    let tally = Arc::new(Tally::default());
    let rate = Arc::new(RateLimit::new(m.settings.rate));
    let reach = cluster
        .groups
        .iter()
        .find(|g| g.name == m.from)
        .map_or_else(
            || Reach::plain(&cluster.name),
            |g| Reach::of(&cluster.name, g),
        );
    let workers = Workers::start(&source, &target, &m.settings, &reach, &tally, &rate, stop)
        .map_err(|e| Fatal::Failed(e.to_string()))?;
    let stopped = || stop.load(Ordering::Relaxed) || current(ctld, job).is_none();

    let mut scan = Scanner::new(&source, reach);
    if m.progress.estimated_keys.is_none() {
        let owned = cluster
            .owners()
            .iter()
            .filter(|o| o.map(|g| &cluster.groups[g].name) == Some(&m.from))
            .count()
            .max(1) as u64;
        if let Ok(size) = scan.dbsize(&stopped) {
            let estimate = size.saturating_mul(u64::from(m.slot_count())) / owned;
            let _ = ctld.record(&job.cluster, |c| {
                let p = &mut c.migration_mut(job.id)?.progress;
                p.estimated_keys = Some(estimate);
                Ok(())
            });
        }
    }
    let mut book = Book::new(&m);
    let mut cursor = m.progress.cursor;
    let mut found = m.progress.pass_found;
    tracing::info!(cluster = %job.cluster, migration = job.id, from = %m.from, to = %m.to,
        cursor, "sweeping the source");
    loop {
        if stopped() {
            book.record(ctld, job, &tally, cursor, found, false);
            return Err(Fatal::Stopped);
        }
        let (next, keys) = scan.page(cursor, &stopped)?;
        let mut keys: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| moving[key_slot(k, slot_count) as usize])
            .collect();
        // SCAN may return a key twice; twice in one MIGRATE is a BUSYKEY.
        keys.sort_unstable();
        keys.dedup();
        found = found.saturating_add(keys.len() as u64);
        let mut batches: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut keys = keys.into_iter().peekable();
        while keys.peek().is_some() {
            batches.push(keys.by_ref().take(m.settings.batch as usize).collect());
        }
        if let Err(e) = workers.run(batches) {
            book.record(ctld, job, &tally, cursor, found, false);
            return Err(e);
        }
        cursor = next;
        if cursor == 0 {
            let empty = found == 0;
            book.sweeps = book.sweeps.saturating_add(1);
            found = 0;
            book.record(ctld, job, &tally, 0, 0, true);
            tracing::info!(cluster = %job.cluster, migration = job.id, sweeps = book.sweeps,
                empty, "sweep pass done");
            crate::events::emit(
                &job.cluster,
                "migration",
                serde_json::json!({
                    "step": "pass-done", "id": job.id, "pass": book.sweeps, "empty": empty,
                    "keys_moved": book.base_moved.saturating_add(book.last_moved),
                }),
            );
            if empty {
                return Ok(());
            }
        } else if book.last.elapsed() >= RECORD_EVERY {
            book.record(ctld, job, &tally, cursor, found, false);
        }
    }
}

/// SCAN and DBSIZE on the source, reconnecting with backoff.
struct Scanner {
    source: String,
    reach: Reach,
    con: Option<redis::Connection>,
    failures: u32,
}

impl Scanner {
    fn new(source: &str, reach: Reach) -> Scanner {
        Scanner {
            source: source.to_string(),
            reach,
            con: None,
            failures: 0,
        }
    }

    /// Runs `cmd` on the source; a connection problem is retried with
    /// backoff (too many in a row fail the sweep), an error reply fails it.
    fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
        stop: &dyn Fn() -> bool,
    ) -> Result<T, Fatal> {
        loop {
            if stop() {
                return Err(Fatal::Stopped);
            }
            let con = match self.con.as_mut() {
                Some(con) => con,
                None => match connect(&self.source, &self.reach, Duration::from_secs(10)) {
                    Ok(c) => self.con.insert(c),
                    Err(e) => {
                        self.backoff(e.to_string())?;
                        continue;
                    }
                },
            };
            match cmd.query::<T>(con) {
                Ok(v) => {
                    self.failures = 0;
                    return Ok(v);
                }
                Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                    self.con = None;
                    self.backoff(format!("source {}: {e}", self.source))?;
                }
                Err(e) => {
                    return Err(Fatal::Failed(format!(
                        "source {}: {}",
                        self.source,
                        error_text(&e)
                    )))
                }
            }
        }
    }

    fn backoff(&mut self, why: String) -> Result<(), Fatal> {
        self.failures += 1;
        if self.failures >= super::mover::MAX_FAILURES {
            return Err(Fatal::Failed(format!(
                "{why} ({} attempts in a row)",
                self.failures
            )));
        }
        std::thread::sleep(Duration::from_millis(100u64 << self.failures.min(5)));
        Ok(())
    }

    fn page(&mut self, cursor: u64, stop: &dyn Fn() -> bool) -> Result<(u64, Vec<Vec<u8>>), Fatal> {
        self.query(
            redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(SCAN_COUNT),
            stop,
        )
    }

    fn dbsize(&mut self, stop: &dyn Fn() -> bool) -> Result<u64, Fatal> {
        self.query(&redis::cmd("DBSIZE"), stop)
    }
}

/// Progress bookkeeping between records.
struct Book {
    base_moved: u64,
    base_deleted: u64,
    sweeps: u32,
    last: Instant,
    last_moved: u64,
    rate: f64,
}

impl Book {
    fn new(m: &Migration) -> Book {
        Book {
            base_moved: m.progress.keys_moved,
            base_deleted: m.progress.deleted_on_source,
            sweeps: m.progress.sweeps,
            last: Instant::now(),
            last_moved: 0,
            rate: m.progress.rate as f64,
        }
    }

    /// Writes the progress to the store (if the migration is still this
    /// sweep's).
    fn record(
        &mut self,
        ctld: &Shared,
        job: &Job,
        tally: &Tally,
        cursor: u64,
        found: u64,
        pass_done: bool,
    ) {
        let moved = tally.moved.load(Ordering::Relaxed);
        let deleted = tally.deleted.load(Ordering::Relaxed);
        let secs = self.last.elapsed().as_secs_f64().max(1e-3);
        let now_rate = (moved - self.last_moved) as f64 / secs;
        self.rate = if self.last_moved == 0 && self.rate == 0.0 {
            now_rate
        } else {
            0.5 * self.rate + 0.5 * now_rate
        };
        self.last = Instant::now();
        let metrics = crate::metrics::global();
        metrics.migration_keys_moved(&job.cluster, moved.saturating_sub(self.last_moved));
        self.last_moved = moved;
        let notes = std::mem::take(&mut *tally.notes.lock().unwrap_or_else(|p| p.into_inner()));
        metrics.migration_errors(&job.cluster, notes.errors.len() as u64);
        let now = crate::daemon::unix_ms();
        let r = ctld.record(&job.cluster, |c| {
            let m = c.migration_mut(job.id)?;
            if m.state
                != (MigrationState::Moving {
                    version: job.version,
                })
            {
                return Ok(());
            }
            let p = &mut m.progress;
            p.keys_moved = self.base_moved.saturating_add(moved);
            p.deleted_on_source = self.base_deleted.saturating_add(deleted);
            p.cursor = cursor;
            p.pass_found = found;
            p.pass_permille = if pass_done { 1000 } else { permille(cursor) };
            p.sweeps = self.sweeps;
            p.rate = self.rate.round() as u64;
            p.updated_ms = now;
            for e in notes.errors {
                p.error(e);
            }
            for b in notes.big_keys {
                match p.big_keys.iter_mut().find(|x| x.key == b.key) {
                    Some(x) => *x = b,
                    None => p.big_keys.push(b),
                }
            }
            Ok(())
        });
        if let Err(e) = r {
            tracing::warn!(cluster = %job.cluster, migration = job.id, "cannot record progress: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_progress_grows_through_a_pass() {
        assert_eq!(permille(0), 0);
        // A table of 8 buckets is walked 0, 4, 2, 6, 1, 5, 3, 7 (the bucket
        // index counts up in reversed bits).
        let seen: Vec<u32> = [4u64, 2, 6, 1, 5, 3, 7]
            .iter()
            .map(|&c| permille(c))
            .collect();
        assert_eq!(seen, vec![125, 250, 375, 500, 625, 750, 875]);
    }

    #[test]
    fn the_rate_limit_schedules_keys_and_stops_when_asked() {
        let r = RateLimit::new(1000);
        let start = Instant::now();
        r.take(500, &|| false).unwrap();
        let next = *r.next.lock().unwrap();
        assert!(
            next >= start + Duration::from_millis(500),
            "500 keys take 0.5 s"
        );
        assert_eq!(
            r.take(1, &|| true),
            Err(Fatal::Stopped),
            "the next must wait"
        );
        assert_eq!(
            RateLimit::new(0).take(1 << 30, &|| true),
            Ok(()),
            "no limit"
        );
    }
}
