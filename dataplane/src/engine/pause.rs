//! `CLIENT PAUSE` and `CLIENT UNPAUSE` applied at keyway (see
//! `engine::clients` for how they reach every core): while a pause is in
//! force on a core, `Ctx::run_frames` sends each request through
//! [`Ctx::dispatch_admin`]; a request the pause holds stays unparsed in its
//! client's input, the client is `ClientState::postponed` (not read) and
//! listed in `Admin::postponed`, and [`Worker::end_pause`] (on `UNPAUSE`,
//! or [`Worker::tick_admin`] past the timeout) parses them again, in the
//! order they were held.

use std::time::{Duration, Instant};

use keyway_protocol::command::{self, flag, CommandSpec, Lookup};
use keyway_protocol::resp::Args;

use super::client::ClientState;
use super::clients::parse_i64;
use super::replies::Refusal;
use super::route::Req;
use super::{Ctx, Worker};

/// `CLIENT PAUSE` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PauseMode {
    /// Writes (and what may replicate) are held.
    Write,
    /// Every command is held.
    All,
}

/// Whether Redis 7.0 holds `spec` in a `WRITE` pause: flagged `write`, or
/// one of its `may-replicate` commands (an internal flag `COMMAND` does not
/// show, so not in the generated table: listed here, as a 7.0
/// redis-server holds them). `EXEC` is held when such a command is queued
/// (`Tx::writes`).
pub(crate) fn held_in_write_pause(spec: &CommandSpec) -> bool {
    spec.has(flag::WRITE)
        || matches!(
            spec.name,
            "eval" | "evalsha" | "fcall" | "publish" | "spublish" | "pfcount"
        )
}

/// `CLIENT PAUSE`'s arguments: until when, and the mode.
/// A pause longer than `max_ms` is refused (`limits.client_pause_max`).
pub(crate) fn pause_args<'a>(
    args: &Args<'a>,
    max_ms: u64,
) -> Result<(Instant, PauseMode), Refusal<'a>> {
    let n = args.len();
    if n > 4 {
        return Err(Refusal::SubcommandSyntax { sub: args.get(1) });
    }
    let ms = parse_i64(args.get(2)).ok_or(Refusal::TimeoutNotInteger)?;
    if ms < 0 {
        return Err(Refusal::TimeoutNegative);
    }
    let mode = match args.try_get(3) {
        None => PauseMode::All,
        Some(m) if m.eq_ignore_ascii_case(b"write") => PauseMode::Write,
        Some(m) if m.eq_ignore_ascii_case(b"all") => PauseMode::All,
        Some(_) => return Err(Refusal::PauseMode),
    };
    if ms as u64 > max_ms {
        return Err(Refusal::PauseTooLong { max_ms });
    }
    let now = Instant::now();
    let until = now
        .checked_add(Duration::from_millis(ms as u64))
        .unwrap_or(now);
    Ok((until, mode))
}

impl Ctx {
    /// Applies a pause on this core (the longer and stricter of it and the
    /// one in force, as Redis does).
    pub(crate) fn pause(&mut self, until: Instant, mode: PauseMode) {
        self.admin.pause = Some(match self.admin.pause {
            None => (mode, until),
            Some((m, u)) => (m.max(mode), u.max(until)),
        });
    }

    /// Ends this core's pause; the worker resumes the clients it held.
    pub(crate) fn unpause(&mut self) {
        if self.admin.pause.take().is_some() || !self.admin.postponed.is_empty() {
            self.admin.posted = true;
        }
    }

    /// Whether the pause in force holds this request (the test is made only
    /// while a pause is in force): `ALL` holds every command but `QUIT`,
    /// `WRITE` those [`held_in_write_pause`] and an `EXEC` of some;
    /// an unknown command or a wrong arity is answered at once, as Redis
    /// answers them before its pause check.
    fn held_by_pause(&mut self, st: &ClientState, args: &Args<'_>) -> bool {
        let Some((mode, until)) = self.admin.pause else {
            return false;
        };
        if Instant::now() >= until {
            // Over: the next tick resumes the clients it held.
            self.admin.posted = true;
            return false;
        }
        let Lookup::Found(spec) = command::lookup(args.get(0), args.try_get(1)) else {
            return false;
        };
        if !spec.arity_ok(args.len()) || spec.name == "quit" {
            return false;
        }
        match mode {
            PauseMode::All => true,
            PauseMode::Write if spec.name == "exec" => st.tx.as_ref().is_some_and(|t| t.writes),
            PauseMode::Write => held_in_write_pause(spec),
        }
    }

    /// Dispatches a request while a pause is in force or of a client with
    /// `CLIENT REPLY` state (cold; see the module documentation); false if
    /// the pause holds it: the client is not read until the pause ends,
    /// and the request stays unparsed in its input.
    #[cold]
    pub(crate) fn dispatch_admin(&mut self, st: &mut ClientState, req: Req<'_>) -> bool {
        if self.admin.pause.is_some() && self.held_by_pause(st, req.args) {
            st.postponed = true;
            self.admin.postponed.push((st.me.idx, st.me.gen));
            return false;
        }
        self.dispatch_muted(st, req);
        true
    }
}

impl Worker {
    /// Admin work after a client's requests (`Admin::posted`): mail to
    /// read, and the clients a pause that ended held.
    pub(crate) fn after_admin(&mut self) {
        self.ctx.admin.posted = false;
        self.read_mail();
        let over = match self.ctx.admin.pause {
            Some((_, until)) => Instant::now() >= until,
            None => true,
        };
        if over {
            self.end_pause();
        }
    }

    /// The tick's share: mail not read yet (a core whose transport was not
    /// woken), and the pause's timeout.
    pub(crate) fn tick_admin(&mut self, now: Instant) {
        self.read_mail();
        match self.ctx.admin.pause {
            Some((_, until)) if now >= until => self.end_pause(),
            None if !self.ctx.admin.postponed.is_empty() => self.end_pause(),
            _ => {}
        }
    }

    /// Ends this core's pause: the clients it held are parsed again, in the
    /// order they were held.
    pub(crate) fn end_pause(&mut self) {
        self.ctx.admin.pause = None;
        if self.ctx.admin.postponed.is_empty() {
            return;
        }
        for (idx, gen) in std::mem::take(&mut self.ctx.admin.postponed) {
            if let Some(c) = super::live_client(&mut self.clients, idx, gen) {
                if c.st.postponed {
                    c.st.postponed = false;
                    self.ctx.resume.push(idx);
                }
            }
        }
        // `resume_paused` pops from the end: keep the held order.
        self.ctx.resume.reverse();
        self.resume_paused();
        self.run_deferred();
    }
}
