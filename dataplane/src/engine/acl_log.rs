//! `ACL LOG`: the refused commands and failed authentications of every
//! core, newest first, at most `auth.acllog_max_len` entries (shared, locked
//! on a refusal only). As Redis 7.0, an entry like the newest one of less
//! than 60 s ago (same reason, context, object and user) is counted in it
//! instead of added.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use keyway_protocol::resp::encode;

use super::client::ClientState;
use super::Ctx;

/// Why an entry was logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Command,
    Key,
    Channel,
    Auth,
}

/// Where the refused command was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    TopLevel,
    Multi,
}

#[derive(Debug)]
struct Entry {
    count: u64,
    reason: Reason,
    context: Context,
    object: String,
    username: String,
    created: Instant,
    client_info: String,
}

/// The log.
#[derive(Debug, Default)]
pub(crate) struct AclLog {
    entries: VecDeque<Entry>,
}

const GROUP_WINDOW: Duration = Duration::from_secs(60);

impl AclLog {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        reason: Reason,
        context: Context,
        object: String,
        username: String,
        client_info: String,
        max: usize,
        now: Instant,
    ) {
        // Bounded: a refused key, channel or user name may be as large as a
        // request, and an entry outlives its connection.
        let (object, username) = (capped(object, MAX_NAME), capped(username, MAX_NAME));
        let client_info = capped(client_info, MAX_CLIENT_INFO);
        let same = self.entries.iter().position(|e| {
            e.reason == reason
                && e.context == context
                && e.object == object
                && e.username == username
                && now.duration_since(e.created) < GROUP_WINDOW
        });
        if let Some(i) = same {
            if let Some(mut e) = self.entries.remove(i) {
                e.count += 1;
                e.created = now;
                e.client_info = client_info;
                self.entries.push_front(e);
            }
            return;
        }
        self.entries.push_front(Entry {
            count: 1,
            reason,
            context,
            object,
            username,
            created: now,
            client_info,
        });
        self.entries.truncate(max);
    }

    /// `ACL LOG RESET`.
    pub fn reset(&mut self) {
        self.entries.clear();
    }

    /// `ACL LOG [count]`: the newest `count` entries in Redis's format.
    pub fn write(&self, out: &mut Vec<u8>, count: usize, resp3: bool, now: Instant) {
        let n = count.min(self.entries.len());
        encode::array_header(out, n);
        for e in self.entries.iter().take(n) {
            encode::map_header(out, 7, resp3);
            encode::bulk(out, b"count");
            encode::integer(out, e.count as i64);
            let reason = match e.reason {
                Reason::Command => "command",
                Reason::Key => "key",
                Reason::Channel => "channel",
                Reason::Auth => "auth",
            };
            let context = match e.context {
                Context::TopLevel => "toplevel",
                Context::Multi => "multi",
            };
            for (k, v) in [
                ("reason", reason),
                ("context", context),
                ("object", &e.object),
                ("username", &e.username),
            ] {
                encode::bulk(out, k.as_bytes());
                encode::bulk(out, v.as_bytes());
            }
            encode::bulk(out, b"age-seconds");
            let age = now.duration_since(e.created).as_millis() as f64 / 1000.0;
            encode::double(out, age, resp3);
            encode::bulk(out, b"client-info");
            encode::bulk(out, e.client_info.as_bytes());
        }
    }
}

impl Ctx {
    /// Adds an entry for client `st`.
    pub(super) fn acl_log(
        &mut self,
        st: &ClientState,
        reason: Reason,
        context: Context,
        object: String,
        username: String,
    ) {
        let max = self.cfg.auth.acllog_max_len;
        if max == 0 {
            return;
        }
        let mut info = String::new();
        super::clients::client_line(&mut info, st, self.now_ms, self.core);
        if let Ok(mut log) = self.shared.acl_log.lock() {
            log.add(reason, context, object, username, info, max, Instant::now());
        }
    }
}

/// The longest object or user name an `ACL LOG` entry keeps (bytes; a
/// longer one is cut at a character boundary and ends with `...`).
const MAX_NAME: usize = 256;

/// The longest client description an entry keeps.
const MAX_CLIENT_INFO: usize = 1024;

/// `s`, cut to at most `max` bytes (plus `...`) at a character boundary.
fn capped(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_keeps_bounded_names() {
        let mut log = AclLog::default();
        let big = "é".repeat(10_000);
        log.add(
            Reason::Auth,
            Context::TopLevel,
            big.clone(),
            big.clone(),
            big,
            10,
            Instant::now(),
        );
        let e = &log.entries[0];
        assert!(e.object.len() <= MAX_NAME + 3 && e.object.ends_with("..."));
        assert!(e.username.len() <= MAX_NAME + 3);
        assert!(e.client_info.len() <= MAX_CLIENT_INFO + 3);
        assert_eq!(capped("short".into(), MAX_NAME), "short");
    }

    #[test]
    fn like_entries_are_counted_and_the_log_is_bounded() {
        let mut log = AclLog::default();
        let t = Instant::now();
        let add = |log: &mut AclLog, object: &str, at: Duration| {
            let (r, c) = (Reason::Key, Context::TopLevel);
            log.add(r, c, object.into(), "u".into(), "id=1".into(), 2, t + at);
        };
        add(&mut log, "a", Duration::ZERO);
        add(&mut log, "a", Duration::from_secs(1));
        assert_eq!(log.entries.len(), 1);
        assert_eq!(log.entries[0].count, 2);
        add(&mut log, "b", Duration::from_secs(2));
        add(&mut log, "c", Duration::from_secs(3));
        assert_eq!(log.entries.len(), 2, "bounded");
        assert_eq!(log.entries[0].object, "c", "newest first");
        add(&mut log, "c", Duration::from_secs(100));
        assert_eq!(log.entries[0].count, 1, "older than 60 s: a new entry");
        let mut out = Vec::new();
        log.write(&mut out, 1, false, t + Duration::from_secs(100));
        assert!(out.starts_with(b"*1\r\n*14\r\n$5\r\ncount\r\n:1\r\n$6\r\nreason\r\n$3\r\nkey\r\n"));
    }
}
