//! Cross-core requests: how a `CLIENT LIST`, `KILL`, `PAUSE`, `UNPAUSE` or
//! `UNBLOCK` served on one core reaches the clients of every core.
//!
//! Cores share nothing on the request path (DESIGN.md §2), so each
//! [`CoreReport`](super::CoreReport) carries an [`Inbox`]: a `Mutex<Vec<_>>`
//! locked only when a `CLIENT` command that looks at other clients is
//! served, never per request. The asking core records an [`Ask`] (the
//! client's reply slot, `ReplyQueue::push_waiting`, and how many cores
//! still owe an answer), posts a [`Letter::Ask`] to every core, its own
//! included, and wakes the others through their `CoreReport::waker` (the
//! wakeup that makes a core call `Worker::config_changed`, which reads its
//! mail, whichever the transport). Each core answers from its own clients
//! with a [`Letter::Answer`] to the asker (at the latest at its next tick);
//! when the last answer is in, the asker builds the reply and completes the
//! slot (`ReplyQueue::complete`), so the client's later replies stay behind
//! it. A core has at most `limits.client_commands_in_flight` asks open;
//! more are refused.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::client::ClientId;
use super::clients::{KillFilter, ListFilter};
use super::pause::PauseMode;
use super::pending::Seq;
use super::{Shared, Worker};

/// One core's letters from the others (and from itself).
#[derive(Debug, Default)]
pub struct Inbox {
    letters: Mutex<Vec<Letter>>,
}

/// What one core asks of, or answers to, another.
#[derive(Debug)]
pub(crate) enum Letter {
    /// `ask` of core `from` wants `what` done on this core's clients.
    Ask {
        from: usize,
        ask: u64,
        what: Question,
    },
    /// This core's answer to `ask` (of the receiving core).
    Answer { ask: u64, answer: Answer },
}

/// What a core is asked to do with its clients.
#[derive(Debug, Clone)]
pub(crate) enum Question {
    /// `CLIENT LIST`: the lines of the clients the filter keeps.
    List(Arc<ListFilter>),
    /// `CLIENT KILL`: close the clients the filter keeps; how many.
    Kill(Arc<KillFilter>),
    /// `CLIENT UNBLOCK id`: end that client's block, if it is blocked here.
    Unblock { id: u64, error: bool },
    /// `CLIENT PAUSE`: hold commands until `until`.
    Pause { until: Instant, mode: PauseMode },
    /// `CLIENT UNPAUSE`.
    Unpause,
}

/// A core's answer.
#[derive(Debug)]
pub(crate) enum Answer {
    /// `CLIENT LIST` lines, each with its client's id, and their bytes.
    Lines(Vec<(u64, String)>),
    /// Clients killed or unblocked.
    Count(u64),
    /// Done (a pause applied).
    Done,
}

/// An ask of this core's, waiting for every core's answer.
#[derive(Debug)]
pub(crate) struct Ask {
    pub id: u64,
    /// The asking client and its reply slot.
    pub client: ClientId,
    pub seq: Seq,
    /// Cores that have not answered yet.
    pub left: usize,
    pub what: Question,
    /// Answers gathered so far.
    pub lines: Vec<(u64, String)>,
    pub count: u64,
    /// Whether the command was `CLIENT KILL ip:port` (old form: `+OK` or
    /// an error rather than a count).
    pub old_form: bool,
}

/// This core's open asks.
#[derive(Debug, Default)]
pub(crate) struct Asks {
    next: u64,
    pub open: Vec<Ask>,
}

impl Asks {
    /// Whether another ask may be opened, `max` being open at most (each
    /// is one letter per core and one answer back: inboxes stay bounded).
    pub fn has_room(&self, max: usize) -> bool {
        self.open.len() < max
    }

    /// Records an ask of `client` (reply slot `seq`) to `cores` cores.
    pub fn open(
        &mut self,
        client: ClientId,
        seq: Seq,
        cores: usize,
        what: Question,
        old_form: bool,
    ) -> u64 {
        self.next += 1;
        self.open.push(Ask {
            id: self.next,
            client,
            seq,
            left: cores,
            what,
            lines: Vec::new(),
            count: 0,
            old_form,
        });
        self.next
    }

    /// Adds an answer to ask `id`; returns the ask once every core answered.
    pub fn answered(&mut self, id: u64, answer: Answer) -> Option<Ask> {
        let i = self.open.iter().position(|a| a.id == id)?;
        let a = &mut self.open[i];
        match answer {
            Answer::Lines(mut l) => a.lines.append(&mut l),
            Answer::Count(n) => a.count += n,
            Answer::Done => {}
        }
        a.left = a.left.saturating_sub(1);
        (a.left == 0).then(|| self.open.swap_remove(i))
    }
}

/// Posts `letter` to core `to` (does not wake it).
pub(crate) fn post(shared: &Shared, to: usize, letter: Letter) {
    if let Some(r) = shared.reports.get(to) {
        let mut inbox = r.inbox.letters.lock().unwrap_or_else(|e| e.into_inner());
        inbox.push(letter);
    }
}

/// Wakes core `to` so that it reads its mail now (else it does at its next
/// tick).
pub(crate) fn wake(shared: &Shared, to: usize) {
    if let Some(w) = shared.reports.get(to).and_then(|r| r.waker.load_full()) {
        w.wake();
    }
}

impl Worker {
    /// Reads this core's mail until none is left: answers other cores'
    /// questions from this core's clients, and completes this core's asks
    /// whose last answer came.
    pub(crate) fn read_mail(&mut self) {
        let core = self.ctx.core;
        loop {
            let letters = {
                let Some(r) = self.ctx.shared.reports.get(core) else {
                    return;
                };
                let mut inbox = r.inbox.letters.lock().unwrap_or_else(|e| e.into_inner());
                if inbox.is_empty() {
                    return;
                }
                std::mem::take(&mut *inbox)
            };
            for letter in letters {
                match letter {
                    Letter::Ask { from, ask, what } => {
                        let answer = self.answer(&what);
                        let reply = Letter::Answer { ask, answer };
                        post(&self.ctx.shared, from, reply);
                        if from != core {
                            wake(&self.ctx.shared, from);
                        }
                    }
                    Letter::Answer { ask, answer } => {
                        if let Some(done) = self.ctx.admin.asks.answered(ask, answer) {
                            self.ask_done(done);
                        }
                    }
                }
            }
        }
    }
}
