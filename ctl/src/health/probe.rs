//! ctld's connection to one Redis server for health checks and failover
//! commands: `PING`, `INFO replication`, `REPLICAOF`. A few commands with
//! short replies, so a small RESP client over tokio rather than a pool:
//! every call is bounded in time (the caller's timeout) and in size (a reply
//! longer than [`MAX_REPLY`] is an error), and a connection that failed is
//! dropped and dialled again on the next call. The connection logs in
//! and speaks TLS as its group's [`Reach`] says (tokio-rustls over the
//! tokio stream).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::reach::Reach;

/// A plain or TLS stream to a server.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type Con = BufReader<Box<dyn Stream>>;

/// Longest reply accepted (INFO replication is a few hundred bytes).
const MAX_REPLY: usize = 64 << 10;

/// A server's role and replication state, from `INFO replication`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Replication {
    /// "master" or "slave".
    pub role: String,
    /// The replication offset: `master_repl_offset` of a master, the
    /// processed `slave_repl_offset` of a replica.
    pub offset: u64,
    /// A replica's master (`master_host:master_port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// A replica's `master_link_status` is `up`.
    pub link_up: bool,
    /// A master's `connected_slaves`.
    pub replicas: u32,
    /// A replica has synced with a master since it started: its link is up,
    /// or went down after being up (`master_link_down_since_seconds` is not
    /// -1), and no full sync is under way (`master_sync_in_progress`). One
    /// that never did is empty, or holds what it loaded at start.
    pub synced: bool,
}

/// Why a check or command of a server failed (the text ctld shows as the
/// server's `last_error`).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// `INFO replication` without a role.
    #[error("INFO replication has no role")]
    NoRole,
    /// A role other than master or slave.
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    /// A command answered something else than expected.
    #[error("{command} answered {reply}")]
    Unexpected {
        /// The command's name.
        command: String,
        /// The reply, as `Debug` shows it.
        reply: String,
    },
    /// A `REPLICAOF` target that is not `host:port`.
    #[error("{0:?} is not host:port")]
    NotHostPort(String),
    /// No answer in time.
    #[error("no answer within {ms} ms")]
    Timeout {
        /// The time given.
        ms: u128,
    },
    /// Dialling, writing or reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// TLS could not be set up, or its handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server closed the connection.
    #[error("connection closed")]
    Closed,
    /// A reply line without CRLF, too short, or longer than `MAX_REPLY`.
    #[error("malformed or oversized reply")]
    Malformed,
    /// The server answered an error (its text).
    #[error("{0}")]
    Server(String),
    /// An integer reply that is not one.
    #[error("bad integer reply {0:?}")]
    BadInteger(String),
    /// A bulk length that is not one.
    #[error("bad bulk length {0:?}")]
    BadBulkLength(String),
    /// A bulk reply over `MAX_REPLY`.
    #[error("a {0}-byte reply: at most {MAX_REPLY}")]
    TooLarge(usize),
    /// A reply type these commands never return.
    #[error("unexpected reply type {0:?}")]
    BadType(char),
}

impl Replication {
    /// Parses the text of `INFO replication`.
    pub fn parse(info: &str) -> Result<Replication, ProbeError> {
        let mut r = Replication::default();
        let (mut host, mut port) = (None, None);
        let (mut master_offset, mut slave_offset) = (0u64, None);
        let (mut never_linked, mut syncing) = (false, false);
        for line in info.lines() {
            let Some((k, v)) = line.trim_end().split_once(':') else {
                continue;
            };
            match k {
                "role" => r.role = v.to_string(),
                "master_host" => host = Some(v.to_string()),
                "master_port" => port = Some(v.to_string()),
                "master_link_status" => r.link_up = v == "up",
                "connected_slaves" => r.replicas = v.parse().unwrap_or(0),
                "master_repl_offset" => master_offset = v.parse().unwrap_or(0),
                "slave_repl_offset" => slave_offset = v.parse().ok(),
                "master_link_down_since_seconds" => never_linked = v == "-1",
                "master_sync_in_progress" => syncing = v == "1",
                _ => {}
            }
        }
        match r.role.as_str() {
            "master" => r.offset = master_offset,
            "slave" => {
                r.offset = slave_offset.unwrap_or(master_offset);
                r.master = host.zip(port).map(|(h, p)| format!("{h}:{p}"));
                r.synced = (r.link_up || !never_linked) && !syncing;
            }
            "" => return Err(ProbeError::NoRole),
            other => return Err(ProbeError::UnknownRole(other.to_string())),
        }
        Ok(r)
    }

    /// A master.
    pub fn is_master(&self) -> bool {
        self.role == "master"
    }
}

/// One RESP reply (the kinds these commands return).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Bulk(Vec<u8>),
    Int(i64),
}

/// A lazily dialled connection to one server.
pub struct Probe {
    addr: String,
    reach: Reach,
    con: Option<Con>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("addr", &self.addr)
            .field("tls", &self.reach.tls)
            .field("connected", &self.con.is_some())
            .finish()
    }
}

impl Probe {
    /// A probe of `addr` (`host:port`) reached as `reach` says; nothing is
    /// dialled yet.
    pub fn new(addr: &str, reach: Reach) -> Probe {
        Probe {
            addr: addr.to_string(),
            reach,
            con: None,
        }
    }

    /// Reaches the server as `reach` says from now on: a connection made
    /// otherwise (another login, TLS on or off) is dropped.
    pub fn set_reach(&mut self, reach: Reach) {
        if self.reach != reach {
            self.reach = reach;
            self.con = None;
        }
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `PING` then `INFO replication`, within `timeout` in all.
    pub async fn check(&mut self, timeout: Duration) -> Result<Replication, ProbeError> {
        let info = self
            .bounded(timeout, |p| {
                Box::pin(async move {
                    match p.call(&[b"PING"]).await? {
                        Reply::Simple(s) if s == "PONG" => {}
                        other => return Err(unexpected(b"PING", &other)),
                    }
                    match p.call(&[b"INFO", b"replication"]).await? {
                        Reply::Bulk(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
                        other => Err(unexpected(b"INFO", &other)),
                    }
                })
            })
            .await?;
        Replication::parse(&info)
    }

    /// `REPLICAOF NO ONE` (`master` none) or `REPLICAOF host port`.
    pub async fn replicaof(
        &mut self,
        master: Option<&str>,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        let (host, port) = match master {
            None => ("NO".to_string(), "ONE".to_string()),
            Some(m) => {
                let (h, p) = m
                    .rsplit_once(':')
                    .ok_or_else(|| ProbeError::NotHostPort(m.to_string()))?;
                (h.trim_matches(['[', ']']).to_string(), p.to_string())
            }
        };
        self.command(&[b"REPLICAOF", host.as_bytes(), port.as_bytes()], timeout)
            .await
    }

    /// Sends a command that answers a simple string (`+OK`).
    pub async fn command(&mut self, args: &[&[u8]], timeout: Duration) -> Result<(), ProbeError> {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        self.bounded(timeout, move |p| {
            Box::pin(async move {
                let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                match p.call(&refs).await? {
                    Reply::Simple(_) => Ok(()),
                    other => Err(unexpected(refs[0], &other)),
                }
            })
        })
        .await
    }

    /// Runs `f` within `timeout`; any failure drops the connection.
    async fn bounded<T>(
        &mut self,
        timeout: Duration,
        f: impl for<'a> FnOnce(
            &'a mut Probe,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, ProbeError>> + Send + 'a>,
        >,
    ) -> Result<T, ProbeError> {
        let r = match tokio::time::timeout(timeout, f(self)).await {
            Ok(r) => r,
            Err(_) => Err(ProbeError::Timeout {
                ms: timeout.as_millis(),
            }),
        };
        if r.is_err() {
            self.con = None;
        }
        r
    }

    async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, ProbeError> {
        if self.con.is_none() {
            let s = TcpStream::connect(&self.addr).await?;
            let _ = s.set_nodelay(true);
            let s: Box<dyn Stream> = if self.reach.tls {
                let tls = crate::reach::tls().map_err(ProbeError::Tls)?;
                let name = rustls::pki_types::ServerName::try_from(self.reach.name_for(&self.addr))
                    .map_err(|e| ProbeError::Tls(e.to_string()))?
                    .to_owned();
                let s = tokio_rustls::TlsConnector::from(tls.config().clone())
                    .connect(name, s)
                    .await
                    .map_err(|e| ProbeError::Tls(e.to_string()))?;
                Box::new(s)
            } else {
                Box::new(s)
            };
            let mut con = BufReader::new(s);
            if let Some(login) = &self.reach.login {
                // First on the connection (see `crate::backend_login`).
                let mut args: Vec<&[u8]> = vec![b"AUTH"];
                args.extend(login.auth_args());
                con.get_mut().write_all(&encode(&args)).await?;
                read_reply(&mut con).await?;
            }
            self.con = Some(con);
        }
        let con = self.con.as_mut().expect("dialled above");
        con.get_mut().write_all(&encode(args)).await?;
        read_reply(con).await
    }
}

/// A request's bytes.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    req
}

/// The error for a command `name` that answered `reply`.
fn unexpected(name: &[u8], reply: &Reply) -> ProbeError {
    ProbeError::Unexpected {
        command: String::from_utf8_lossy(name).into_owned(),
        reply: format!("{reply:?}"),
    }
}

async fn read_reply(con: &mut Con) -> Result<Reply, ProbeError> {
    let mut line = Vec::new();
    (&mut *con)
        .take(MAX_REPLY as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if line.is_empty() {
        return Err(ProbeError::Closed);
    }
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(ProbeError::Malformed);
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    match line[0] {
        b'+' => Ok(Reply::Simple(text)),
        b'-' => Err(ProbeError::Server(text)),
        b':' => match text.parse() {
            Ok(n) => Ok(Reply::Int(n)),
            Err(_) => Err(ProbeError::BadInteger(text)),
        },
        b'$' => {
            let n: i64 = match text.parse() {
                Ok(n) => n,
                Err(_) => return Err(ProbeError::BadBulkLength(text)),
            };
            if n < 0 {
                return Ok(Reply::Bulk(Vec::new()));
            }
            let n = n as usize;
            if n > MAX_REPLY {
                return Err(ProbeError::TooLarge(n));
            }
            let mut body = vec![0u8; n + 2];
            con.read_exact(&mut body).await?;
            body.truncate(n);
            Ok(Reply::Bulk(body))
        }
        other => Err(ProbeError::BadType(other as char)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_roles() {
        let m = Replication::parse(
            "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
             slave0:ip=127.0.0.1,port=7101,state=online,offset=42,lag=0\r\n\
             master_repl_offset:42\r\n",
        )
        .unwrap();
        assert!(m.is_master());
        assert_eq!((m.offset, m.replicas, m.master), (42, 1, None));
        let r = Replication::parse(
            "role:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7001\r\n\
             master_link_status:down\r\nslave_repl_offset:40\r\nmaster_repl_offset:41\r\n",
        )
        .unwrap();
        assert!(!r.is_master() && !r.link_up && r.synced);
        assert_eq!(r.offset, 40);
        let never = Replication::parse(
            "role:slave\r\nmaster_host:h\r\nmaster_port:1\r\nmaster_link_status:down\r\n\
             slave_repl_offset:1\r\nmaster_link_down_since_seconds:-1\r\n",
        )
        .unwrap();
        assert!(!never.synced);
        assert_eq!(r.master.as_deref(), Some("127.0.0.1:7001"));
        assert!(matches!(
            Replication::parse("nothing"),
            Err(ProbeError::NoRole)
        ));
        assert_eq!(
            Replication::parse("role:sentinel").unwrap_err().to_string(),
            "unknown role \"sentinel\""
        );
    }
}
