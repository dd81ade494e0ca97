//! ctld's connection to one Redis server for health checks and failover
//! commands: `PING`, `INFO replication`, `REPLICAOF`. A few commands with
//! short replies, so a small RESP client over tokio rather than a pool:
//! every call is bounded in time (the caller's timeout) and in size (a reply
//! longer than [`MAX_REPLY`] is an error), and a connection that failed is
//! dropped and dialled again on the next call.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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

impl Replication {
    /// Parses the text of `INFO replication`.
    pub fn parse(info: &str) -> Result<Replication, String> {
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
            "" => return Err("INFO replication has no role".into()),
            other => return Err(format!("unknown role {other:?}")),
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
#[derive(Debug)]
pub struct Probe {
    addr: String,
    con: Option<BufReader<TcpStream>>,
}

impl Probe {
    /// A probe of `addr` (`host:port`); nothing is dialled yet.
    pub fn new(addr: &str) -> Probe {
        Probe {
            addr: addr.to_string(),
            con: None,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `PING` then `INFO replication`, within `timeout` in all.
    pub async fn check(&mut self, timeout: Duration) -> Result<Replication, String> {
        let info = self
            .bounded(timeout, |p| {
                Box::pin(async move {
                    match p.call(&[b"PING"]).await? {
                        Reply::Simple(s) if s == "PONG" => {}
                        other => return Err(format!("PING answered {other:?}")),
                    }
                    match p.call(&[b"INFO", b"replication"]).await? {
                        Reply::Bulk(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
                        other => Err(format!("INFO answered {other:?}")),
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
    ) -> Result<(), String> {
        let (host, port) = match master {
            None => ("NO".to_string(), "ONE".to_string()),
            Some(m) => {
                let (h, p) = m
                    .rsplit_once(':')
                    .ok_or_else(|| format!("{m:?} is not host:port"))?;
                (h.trim_matches(['[', ']']).to_string(), p.to_string())
            }
        };
        self.command(&[b"REPLICAOF", host.as_bytes(), port.as_bytes()], timeout)
            .await
    }

    /// Sends a command that answers a simple string (`+OK`).
    pub async fn command(&mut self, args: &[&[u8]], timeout: Duration) -> Result<(), String> {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        self.bounded(timeout, move |p| {
            Box::pin(async move {
                let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                match p.call(&refs).await? {
                    Reply::Simple(_) => Ok(()),
                    other => Err(format!(
                        "{} answered {other:?}",
                        String::from_utf8_lossy(refs[0])
                    )),
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
            Box<dyn std::future::Future<Output = Result<T, String>> + Send + 'a>,
        >,
    ) -> Result<T, String> {
        let r = match tokio::time::timeout(timeout, f(self)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        if r.is_err() {
            self.con = None;
        }
        r
    }

    async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, String> {
        if self.con.is_none() {
            let s = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = s.set_nodelay(true);
            self.con = Some(BufReader::new(s));
        }
        let con = self.con.as_mut().expect("dialled above");
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        con.get_mut()
            .write_all(&req)
            .await
            .map_err(|e| e.to_string())?;
        read_reply(con).await
    }
}

async fn read_reply(con: &mut BufReader<TcpStream>) -> Result<Reply, String> {
    let mut line = Vec::new();
    (&mut *con)
        .take(MAX_REPLY as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| e.to_string())?;
    if line.is_empty() {
        return Err("connection closed".into());
    }
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err("malformed or oversized reply".into());
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    match line[0] {
        b'+' => Ok(Reply::Simple(text)),
        b'-' => Err(text),
        b':' => text
            .parse()
            .map(Reply::Int)
            .map_err(|_| format!("bad integer reply {text:?}")),
        b'$' => {
            let n: i64 = text
                .parse()
                .map_err(|_| format!("bad bulk length {text:?}"))?;
            if n < 0 {
                return Ok(Reply::Bulk(Vec::new()));
            }
            let n = n as usize;
            if n > MAX_REPLY {
                return Err(format!("a {n}-byte reply: at most {MAX_REPLY}"));
            }
            let mut body = vec![0u8; n + 2];
            con.read_exact(&mut body).await.map_err(|e| e.to_string())?;
            body.truncate(n);
            Ok(Reply::Bulk(body))
        }
        other => Err(format!("unexpected reply type {:?}", other as char)),
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
        assert!(Replication::parse("nothing").is_err());
        assert!(Replication::parse("role:sentinel").is_err());
    }
}
