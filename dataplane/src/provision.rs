//! `keyway --config FILE --provision-backend-users`: creates (or resets) the
//! restricted backend user keyway's client traffic runs as on every server
//! of every group of a standalone config — masters and replicas, since ACL
//! users are not replicated — with the rules
//! [`crate::engine::backend_acl::client_user_setuser`] derives from keyway's
//! own policy and the password of `[backend] password_file|password_env`
//! (or the group's own keys).
//!
//! Each server is reached as the group's admin login (`admin_username`):
//! that it authenticates is the check that the privileged user exists.
//! Without one, keyway connects as Redis's `default` user with no `AUTH`
//! (a fresh server). `ACL SETUSER … reset …` makes the user exactly what
//! the rules say each time, so running it again is harmless. When the
//! server has an `aclfile`, `ACL SAVE` writes the users there; otherwise
//! they live until the server restarts, and the command must be run again
//! then. The password never appears in the report: a server's error is
//! shown with it masked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use keyway_protocol::resp::{encode, ReplyFramer};

use crate::config::{GroupLogins, LiveConfig, Login};
use crate::engine::backend_acl::client_user_setuser;

/// What happened on each server.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per server.
    pub lines: Vec<String>,
    /// How many failed.
    pub failed: usize,
}

/// Provisions every server of `live`'s groups, each within `timeout`.
pub fn provision(live: &LiveConfig, timeout: Duration) -> Report {
    let mut report = Report::default();
    for g in live.table.groups() {
        let logins = live.logins.of(&g.name);
        let servers = std::iter::once((&g.master, g.master_text.as_str(), "master")).chain(
            g.replicas
                .iter()
                .map(|r| (&r.addr, r.text.as_str(), "replica")),
        );
        for (addr, text, role) in servers {
            let result = match addr {
                Ok(a) => server(*a, logins, timeout),
                Err(why) => Err(why.to_string()),
            };
            let line = match result {
                Ok(done) => format!("{text} ({} {role}): {done}", g.name),
                Err(why) => {
                    report.failed += 1;
                    format!("{text} ({} {role}): FAILED: {why}", g.name)
                }
            };
            report.lines.push(line);
        }
    }
    report
}

/// One connection, one request at a time.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn call(&mut self, args: &[&[u8]]) -> Result<Vec<u8>, String> {
        let mut req = Vec::new();
        encode::array_header(&mut req, args.len());
        for a in args {
            encode::bulk(&mut req, a);
        }
        self.s.write_all(&req).map_err(|e| e.to_string())?;
        let mut framer = ReplyFramer::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(n) = framer.next(&self.buf).map_err(|e| e.to_string())? {
                let reply = self.buf[..n].to_vec();
                self.buf.drain(..n);
                return Ok(reply);
            }
            if self.buf.len() > 1 << 20 {
                return Err("a reply larger than 1mb".into());
            }
            let n = self.s.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The text of a reply, an error if it is one; `hide` masked.
fn text(reply: &[u8], hide: &[u8]) -> Result<String, String> {
    let mut t = String::from_utf8_lossy(reply).trim_end().to_string();
    if !hide.is_empty() {
        t = t.replace(&*String::from_utf8_lossy(hide), "<hidden>");
    }
    match t.strip_prefix('-') {
        Some(e) => Err(e.to_string()),
        None => Ok(t),
    }
}

fn auth(c: &mut Conn, login: &Login) -> Result<(), String> {
    let pass = login.password().expose();
    let reply = match &login.username {
        Some(u) => c.call(&[&b"AUTH"[..], u.as_bytes(), pass])?,
        None => c.call(&[&b"AUTH"[..], pass])?,
    };
    text(&reply, pass)
        .map(|_| ())
        .map_err(|e| format!("AUTH as {:?}: {e}", login.shown_user()))
}

fn server(addr: SocketAddr, logins: &GroupLogins, timeout: Duration) -> Result<String, String> {
    let Some(client) = &logins.client else {
        return Err("no backend credentials configured (backend.username and \
                    backend.password_file or password_env)"
            .into());
    };
    let Some(user) = &client.username else {
        return Err("backend.username must name the ACL user to provision \
                    (a password alone is the default user's)"
            .into());
    };
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut c = Conn { s, buf: Vec::new() };
    let admin = logins.admin.as_ref().filter(|a| *a != client);
    if let Some(a) = admin {
        auth(&mut c, a)?;
    }
    let pass = client.password().expose();
    let mut password = Vec::with_capacity(pass.len() + 1);
    password.push(b'>');
    password.extend_from_slice(pass);
    let rules = client_user_setuser();
    let mut args: Vec<&[u8]> = vec![&b"ACL"[..], b"SETUSER", user.as_bytes()];
    args.extend(rules.split(' ').map(str::as_bytes));
    args.push(&password);
    let reply = c.call(&args)?;
    text(&reply, pass).map_err(|e| format!("ACL SETUSER {user}: {e}"))?;
    let mut done = format!("user {user:?} provisioned");
    if let Some(a) = admin {
        done.push_str(&format!("; admin user {:?} authenticated", a.shown_user()));
    }
    let reply = c.call(&[&b"CONFIG"[..], b"GET", b"aclfile"])?;
    let has_file = text(&reply, pass)
        .map(|t| !t.ends_with("$0"))
        .unwrap_or(false);
    if has_file {
        let reply = c.call(&[&b"ACL"[..], b"SAVE"])?;
        text(&reply, pass).map_err(|e| format!("ACL SAVE: {e}"))?;
        done.push_str("; ACL SAVE done");
    } else {
        done.push_str("; no aclfile: run again after the server restarts");
    }
    Ok(done)
}
