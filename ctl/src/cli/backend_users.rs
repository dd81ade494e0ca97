//! `keywayctl backend-users provision CLUSTER`: creates (or resets) the
//! restricted backend user the data planes' client traffic runs as on every
//! server — masters and replicas, since ACL users are not replicated — of a
//! cluster's groups (or of one, `--group`, e.g. a group added later), with
//! the rules keyway derives from its command policy
//! ([`keyway_capnp::backend_acl::CLIENT_USER_SETUSER`]).
//!
//! Each server is reached as the admin user (`--admin-user`,
//! `--admin-password-file`; that it authenticates shows the privileged user
//! exists), or with no `AUTH` without one (a fresh server). `ACL SETUSER …
//! reset …` makes the user exactly what the rules say, so running it again is
//! harmless. A server with an `aclfile` gets `ACL SAVE`; without one the user
//! lasts until the server restarts. Passwords never appear in the report: a
//! server's error is shown with them masked.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::{emit, table, CliError};
use crate::auth::Token;
use crate::client::Client;
use crate::model::Cluster;

/// `keywayctl backend-users …`.
#[derive(Debug, Subcommand)]
pub enum BackendUsersCmd {
    /// Create or reset the restricted backend user on every server (masters
    /// and replicas) of a cluster's groups, as the admin user.
    Provision(ProvisionArgs),
}

/// `keywayctl backend-users provision`.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Cluster name.
    cluster: String,
    /// Only this group's servers (e.g. a group added later).
    #[arg(long)]
    group: Option<String>,
    /// The restricted user (the data planes' `[backend] username`).
    #[arg(long, value_name = "USER")]
    user: String,
    /// A file holding its password (the data planes' `password_file`).
    #[arg(long, value_name = "PATH")]
    password_file: PathBuf,
    /// The admin user to log in as (the data planes' `admin_username`).
    #[arg(long, value_name = "USER", requires = "admin_password_file")]
    admin_user: Option<String>,
    /// A file holding the admin password.
    #[arg(long, value_name = "PATH")]
    admin_password_file: Option<PathBuf>,
}

/// What happened on one server.
#[derive(Debug, Serialize)]
struct Outcome {
    group: String,
    server: String,
    role: &'static str,
    ok: bool,
    detail: String,
}

/// The passwords, to send them and to mask them.
struct Secrets<'a> {
    user: &'a str,
    password: Token,
    admin: Option<(&'a str, Token)>,
}

/// Runs `provision`.
pub fn provision(c: &Client, a: ProvisionArgs, json: bool) -> Result<(), CliError> {
    let read = |p: &PathBuf| -> Result<Token, CliError> {
        let (t, warning) =
            Token::read_file(p).map_err(|e| CliError::Secret(format!("password: {e}")))?;
        if let Some(w) = warning {
            eprintln!("warning: {w}");
        }
        Ok(t)
    };
    let secrets = Secrets {
        user: &a.user,
        password: read(&a.password_file)?,
        admin: match (&a.admin_user, &a.admin_password_file) {
            (Some(u), Some(p)) => Some((u.as_str(), read(p)?)),
            _ => None,
        },
    };
    let cluster: Cluster = c.get(&format!("/v1/clusters/{}", a.cluster))?;
    let mut outcomes = Vec::new();
    for g in &cluster.groups {
        if a.group.as_ref().is_some_and(|only| *only != g.name) {
            continue;
        }
        let servers = std::iter::once((g.master.as_str(), "master"))
            .chain(g.replicas.iter().map(|r| (r.address.as_str(), "replica")));
        for (server, role) in servers {
            let r = one(server, &secrets);
            outcomes.push(Outcome {
                group: g.name.clone(),
                server: server.to_string(),
                role,
                ok: r.is_ok(),
                detail: r.unwrap_or_else(|e| e),
            });
        }
    }
    if let Some(only) = &a.group {
        if outcomes.is_empty() {
            return Err(CliError::Secret(format!(
                "cluster {} has no group {only}",
                a.cluster
            )));
        }
    }
    emit(json, &outcomes, |o| {
        let rows = o
            .iter()
            .map(|o| {
                vec![
                    o.group.clone(),
                    o.server.clone(),
                    o.role.to_string(),
                    if o.ok { "ok" } else { "FAILED" }.to_string(),
                    o.detail.clone(),
                ]
            })
            .collect();
        table(&["GROUP", "SERVER", "ROLE", "RESULT", "DETAIL"], rows);
    });
    match outcomes.iter().filter(|o| !o.ok).count() {
        0 => Ok(()),
        failed => Err(CliError::Provision { failed }),
    }
}

/// One connection, one request at a time.
struct Conn {
    r: BufReader<TcpStream>,
}

/// A reply: a line (`+`/`-`/`:`), a bulk string, or an array of them.
#[derive(Debug)]
enum Reply {
    Line,
    Error(String),
    Bulk(Vec<u8>),
    Array(Vec<Reply>),
}

impl Conn {
    fn call(&mut self, args: &[&[u8]]) -> Result<Reply, String> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        self.r
            .get_mut()
            .write_all(&req)
            .map_err(|e| e.to_string())?;
        self.reply(0)
    }

    fn reply(&mut self, depth: u8) -> Result<Reply, String> {
        let mut line = Vec::new();
        (&mut self.r)
            .take(64 << 10)
            .read_until(b'\n', &mut line)
            .map_err(|e| e.to_string())?;
        let Some(body) = line.strip_suffix(b"\r\n").filter(|b| !b.is_empty()) else {
            return Err("the server closed the connection or sent no RESP".into());
        };
        let text = String::from_utf8_lossy(&body[1..]).into_owned();
        let n = || {
            text.parse::<i64>()
                .map_err(|_| "a malformed reply".to_string())
        };
        match body[0] {
            b'+' | b':' => Ok(Reply::Line),
            b'-' => Ok(Reply::Error(text)),
            b'$' => {
                let n = n()?;
                if !(0..=1 << 20).contains(&n) {
                    return Ok(Reply::Bulk(Vec::new()));
                }
                let mut b = vec![0; n as usize + 2];
                self.r.read_exact(&mut b).map_err(|e| e.to_string())?;
                b.truncate(n as usize);
                Ok(Reply::Bulk(b))
            }
            b'*' if depth < 2 => {
                let n = n()?.clamp(0, 1024);
                (0..n)
                    .map(|_| self.reply(depth + 1))
                    .collect::<Result<_, _>>()
                    .map(Reply::Array)
            }
            _ => Err("an unexpected reply".into()),
        }
    }
}

/// `reply` as a success, or its error with `secrets` masked.
fn ok(reply: Reply, what: &str, secrets: &Secrets<'_>) -> Result<(), String> {
    match reply {
        Reply::Error(e) => {
            let mut e = e.replace(secrets.password.expose(), "<hidden>");
            if let Some((_, p)) = &secrets.admin {
                e = e.replace(p.expose(), "<hidden>");
            }
            Err(format!("{what}: {e}"))
        }
        _ => Ok(()),
    }
}

fn one(server: &str, secrets: &Secrets<'_>) -> Result<String, String> {
    let timeout = Duration::from_secs(5);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(server)
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{server} does not resolve"))?;
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut c = Conn {
        r: BufReader::new(s),
    };
    if let Some((user, pass)) = &secrets.admin {
        let r = c.call(&[b"AUTH", user.as_bytes(), pass.expose().as_bytes()])?;
        ok(r, &format!("AUTH as {user:?}"), secrets)?;
    }
    let password = format!(">{}", secrets.password.expose());
    let rules = keyway_capnp::backend_acl::CLIENT_USER_SETUSER;
    let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", secrets.user.as_bytes()];
    args.extend(rules.split(' ').map(str::as_bytes));
    args.push(password.as_bytes());
    let r = c.call(&args)?;
    ok(r, &format!("ACL SETUSER {}", secrets.user), secrets)?;
    let mut done = format!("user {:?} provisioned", secrets.user);
    if let Some((user, _)) = &secrets.admin {
        done.push_str(&format!("; admin user {user:?} authenticated"));
    }
    let has_file = match c.call(&[b"CONFIG", b"GET", b"aclfile"])? {
        Reply::Array(v) => matches!(v.get(1), Some(Reply::Bulk(f)) if !f.is_empty()),
        _ => false,
    };
    if has_file {
        let r = c.call(&[b"ACL", b"SAVE"])?;
        ok(r, "ACL SAVE", secrets)?;
        done.push_str("; ACL SAVE done");
    } else {
        done.push_str("; no aclfile: run again after the server restarts");
    }
    Ok(done)
}
