//! Data-plane sessions (the schema in `capnp/schema/control.capnp` describes
//! the protocol). One task per session: a reader task decodes frames into a
//! channel (so the main loop's `select!` never cancels a half-read frame), and
//! the main loop answers acks with heartbeats and pushes every new snapshot of
//! the cluster.
//!
//! What a peer may cost before it has said a valid Hello is bounded: at most
//! [`MAX_PENDING`] connections wait for their Hello at once (more are closed
//! on accept), each gets [`HELLO_TIMEOUT`] to send it, and frames from data
//! planes are at most [`MAX_FRAME`] (they only send Hello and Ack). At most
//! [`MAX_SESSIONS`] sessions run at once, and one whose peer stops reading
//! ends after [`SEND_TIMEOUT`].
//!
//! The Hello is checked in one place ([`check_hello`]): the token first
//! (`crate::auth::Auth`; a wrong one is told only "authentication failed"
//! and nothing is recorded), then the id, cluster and address. An ack for a
//! version newer than the cluster's (as this session has sent it) is
//! refused and ends the session. A session is registered with the daemon
//! (`Ctld::hello`: it then replaces a live session of the same id, and its
//! record is saved if new) at its first valid ack — so a peer refused there
//! leaves no trace — and only then gets a heartbeat, i.e. a lease.
//!
//! Sessions go to the daemon of the current term (`crate::leader::Role`).
//! A standby refuses every Hello (after the token check) with a text
//! starting "standby" that names the active ctld, and the data plane dials
//! its next address. A heartbeat is sent only while the term may grant
//! leases (`Term::may_grant`: the lease safety rule in `crate::leader`), and
//! the term's end refuses and closes every session of it at once.
//!
//! With TLS (`keyway-ctld --tls-cert/--tls-key`, and `--tls-ca` to require
//! and verify data planes' certificates: mutual TLS) the handshake is done
//! within [`HELLO_TIMEOUT`], before the Hello; a data plane whose certificate
//! is missing or not signed by the CA is refused by the handshake itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keyway_capnp::control::{FromDataPlane, Heartbeat, Hello, ToDataPlane};
use keyway_capnp::frame::{check_len, frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::auth::Auth;
use crate::daemon::{Registration, Shared};
use crate::leader::Role;
use crate::model::names::{check_id, check_name, parse_address, NameError};
use crate::store::StoreError;

/// How long a new session may take to say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest frame a data plane may send (a Hello with a 4 KiB token and
/// bounded names is far smaller).
pub const MAX_FRAME: usize = 64 << 10;

/// Connections waiting for their Hello at once.
pub const MAX_PENDING: usize = 64;

/// Sessions at once.
pub const MAX_SESSIONS: usize = 4096;

/// How long a message to a data plane may take to be written.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A session's byte stream: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Reader = ReadHalf<Box<dyn Io>>;
type Writer = WriteHalf<Box<dyn Io>>;

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] keyway_capnp::frame::FrameError),
    #[error("{0}")]
    Decode(#[from] keyway_capnp::DecodeError),
    #[error("no hello within {0:?}")]
    HelloTimeout(Duration),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Ended(String),
}

/// Logs at most once per ten seconds (a flood of refused connections must
/// not flood the log).
#[derive(Debug, Default)]
struct Throttled {
    last: AtomicU64,
}

impl Throttled {
    const fn new() -> Throttled {
        Throttled {
            last: AtomicU64::new(0),
        }
    }

    fn allow(&self) -> bool {
        let now = crate::daemon::unix_ms();
        let last = self.last.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 10_000
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn warn(&self, what: &str, peer: SocketAddr) {
        if self.allow() {
            tracing::warn!(%peer, "control connection closed: {what} (logged once per 10 s)");
        }
    }
}

/// Refused Hellos, logged once per ten seconds: a data plane with a wrong
/// token retries every few hundred milliseconds.
static REFUSED_HELLOS: Throttled = Throttled::new();

/// Failed TLS handshakes, logged once per ten seconds.
static REFUSED_HANDSHAKES: Throttled = Throttled::new();

/// Accepts data-plane sessions forever, for whichever daemon `roles` says
/// is active; a standby refuses every Hello with a text starting
/// "standby" that names the active ctld.
pub async fn serve(
    listener: TcpListener,
    roles: watch::Receiver<Role>,
    auth: Arc<Auth>,
    tls: Option<crate::tls::ServerTls>,
) {
    let sessions = Arc::new(Semaphore::new(MAX_SESSIONS));
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    let refused = Throttled::new();
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let Ok(slot) = sessions.clone().try_acquire_owned() else {
                    refused.warn(&format!("{MAX_SESSIONS} sessions already"), peer);
                    continue;
                };
                let Ok(waiting) = pending.clone().try_acquire_owned() else {
                    refused.warn(
                        &format!("{MAX_PENDING} connections are already waiting for their hello"),
                        peer,
                    );
                    continue;
                };
                let (roles, auth, tls) = (roles.clone(), auth.clone(), tls.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let _ = sock.set_nodelay(true);
                    let io: Box<dyn Io> = match tls {
                        None => Box::new(sock),
                        Some(tls) => {
                            let acceptor = tls.acceptor();
                            match tokio::time::timeout(HELLO_TIMEOUT, acceptor.accept(sock)).await {
                                Ok(Ok(s)) => Box::new(s),
                                Ok(Err(e)) => {
                                    if REFUSED_HANDSHAKES.allow() {
                                        tracing::warn!(%peer, "control session refused: TLS: {e} (logged once per 10 s)");
                                    }
                                    return;
                                }
                                Err(_) => return,
                            }
                        }
                    };
                    if let Err(e) = session(io, peer, roles, &auth, waiting).await {
                        tracing::debug!(%peer, "control session ended: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("control accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_message(r: &mut Reader) -> Result<FromDataPlane, SessionError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await?;
    let len = check_len(header, MAX_FRAME)?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(FromDataPlane::decode(&buf)?)
}

/// Sends `m`; a peer that does not take it within [`SEND_TIMEOUT`] (it
/// stopped reading) ends the session.
async fn send(w: &mut Writer, m: &ToDataPlane) -> std::io::Result<()> {
    tokio::time::timeout(SEND_TIMEOUT, async {
        w.write_all(&frame(&m.encode())).await?;
        w.flush().await
    })
    .await
    .map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the data plane stopped reading",
        )
    })?
}

/// Sends `Refused(why)` and ends the session with it.
async fn refuse(w: &mut Writer, why: String) -> SessionError {
    let _ = send(w, &ToDataPlane::Refused(why.clone())).await;
    let _ = w.shutdown().await;
    SessionError::Refused(why)
}

/// Why a Hello is refused; the message is what the peer is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The token is missing or wrong (nothing else is checked or told).
    #[error("authentication failed")]
    Authentication,
    /// The id or cluster name breaks its rule.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The address clients connect to is not `host:port`.
    #[error("address {0}")]
    Address(NameError),
}

/// Checks a Hello: the token, then the id, cluster and address.
pub fn check_hello(h: &Hello, auth: &Auth) -> Result<(), HelloError> {
    if !auth.admits_hello(&h.token) {
        return Err(HelloError::Authentication);
    }
    check_id(&h.id)?;
    check_name("cluster", &h.cluster)?;
    if !h.address.is_empty() {
        parse_address(&h.address).map_err(HelloError::Address)?;
    }
    Ok(())
}

async fn session(
    sock: Box<dyn Io>,
    peer: SocketAddr,
    roles: watch::Receiver<Role>,
    auth: &Auth,
    waiting: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), SessionError> {
    let (mut r, mut w) = tokio::io::split(sock);
    let first = tokio::time::timeout(HELLO_TIMEOUT, read_message(&mut r))
        .await
        .map_err(|_| SessionError::HelloTimeout(HELLO_TIMEOUT))??;
    drop(waiting);
    let hello = match first {
        FromDataPlane::Hello(h) => h,
        FromDataPlane::Ack(_) => {
            return Err(refuse(&mut w, "a session starts with Hello".into()).await)
        }
    };
    if let Err(why) = check_hello(&hello, auth) {
        if REFUSED_HELLOS.allow() {
            tracing::warn!(%peer, "control session refused: {why} (logged once per 10 s)");
        }
        return Err(refuse(&mut w, why.to_string()).await);
    }
    let role = roles.borrow().clone();
    let ctld = match role {
        Role::Active(a) => a.ctld,
        Role::Standby(leader) => {
            return Err(refuse(&mut w, Role::standby_refusal(leader.as_ref())).await)
        }
    };
    // The term's end closes the session at once.
    let mut retired = ctld.term().watch();
    let Some(mut snapshots) = ctld.subscribe(&hello.cluster) else {
        return Err(refuse(&mut w, format!("no cluster {:?}", hello.cluster)).await);
    };
    let id = hello.id.clone();
    // The session is registered (and may replace another of its id) at its
    // first valid ack, not at its Hello: a peer whose first ack is refused
    // leaves no trace.
    let mut session: Option<u64> = None;
    let result = async {
        let current = snapshots.borrow_and_update().clone();
        let Some(current) = current else {
            return Err(refuse(&mut w, format!("cluster {:?} was deleted", hello.cluster)).await);
        };
        let mut lease = Duration::from_millis(current.lease_millis);
        let mut version = current.version;
        if hello.version != current.version {
            send(&mut w, &ToDataPlane::Snapshot((*current).clone())).await?;
        }
        let (tx, mut rx) = mpsc::channel(16);
        let reader = tokio::spawn(async move {
            loop {
                let m = read_message(&mut r).await;
                let stop = m.is_err();
                if tx.send(m).await.is_err() || stop {
                    return;
                }
            }
        });
        let mut replaced: Option<oneshot::Receiver<()>> = None;
        // A data plane asks for a lease every third of it; silence for a
        // whole lease means it is gone.
        let outcome = loop {
            tokio::select! {
                m = tokio::time::timeout(lease, rx.recv()) => {
                    let m = match m {
                        Err(_) => break Err(SessionError::Ended(format!("no message for {lease:?}"))),
                        Ok(None) => break Ok(()),
                        Ok(Some(m)) => m,
                    };
                    match m {
                        Ok(FromDataPlane::Ack(a)) => {
                            if a.version > version {
                                let why = format!(
                                    "ack for version {} but cluster {:?} is at version {version}",
                                    a.version, hello.cluster
                                );
                                tracing::warn!(dataplane = %id, %peer, "control session refused: {why}");
                                break Err(refuse(&mut w, why).await);
                            }
                            let number = match session {
                                Some(n) => n,
                                None => match register(&ctld, &hello, peer).await {
                                    Ok(r) => {
                                        session = Some(r.session);
                                        replaced = Some(r.replaced);
                                        r.session
                                    }
                                    Err(e) => {
                                        let why = format!("keyway-ctld cannot record this data plane: {e}");
                                        break Err(refuse(&mut w, why).await);
                                    }
                                },
                            };
                            if !ctld.ack(&id, number, &a, lease) {
                                break Err(SessionError::Ended("replaced by a newer session".into()));
                            }
                            // The lease safety rule (crate::leader): no
                            // lease unless the election lease is confirmed.
                            if !ctld.term().may_grant() {
                                break Err(refuse(&mut w, Role::standby_refusal(None)).await);
                            }
                            let hb = Heartbeat { seq: a.seq, lease_millis: lease.as_millis() as u64, version };
                            send(&mut w, &ToDataPlane::Heartbeat(hb)).await?;
                        }
                        Ok(FromDataPlane::Hello(_)) => break Err(SessionError::Ended("a second hello".into())),
                        Err(e) => break Err(e),
                    }
                }
                () = term_ended(&mut retired) => {
                    break Err(refuse(&mut w, Role::standby_refusal(None)).await);
                }
                () = closed(&mut replaced) => {
                    break Err(SessionError::Ended("replaced by a newer session".into()));
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break Ok(());
                    }
                    let next = snapshots.borrow_and_update().clone();
                    match next {
                        Some(s) => {
                            lease = Duration::from_millis(s.lease_millis);
                            version = s.version;
                            send(&mut w, &ToDataPlane::Snapshot((*s).clone())).await?;
                        }
                        None => {
                            break Err(refuse(&mut w, format!("cluster {:?} was deleted", hello.cluster)).await);
                        }
                    }
                }
            }
        };
        reader.abort();
        outcome
    }
    .await;
    if let Some(n) = session {
        ctld.disconnected(&id, n);
    }
    result
}

/// Resolves when the term ends.
async fn term_ended(retired: &mut watch::Receiver<bool>) {
    let _ = retired.wait_for(|ended| *ended).await;
}

/// Resolves when a newer session replaced this one (never before it is
/// registered).
async fn closed(replaced: &mut Option<oneshot::Receiver<()>>) {
    match replaced {
        Some(rx) => {
            let _ = rx.await;
        }
        None => std::future::pending().await,
    }
}

/// Registers the session and, if the store does not have this data plane's
/// record as it is now, saves it (off the runtime thread) before its first
/// lease. The error is what the peer is told.
async fn register(
    ctld: &Shared,
    hello: &Hello,
    peer: SocketAddr,
) -> Result<Registration, RecordError> {
    let reg = ctld.hello(hello, peer);
    if reg.must_persist {
        let (c, id) = (ctld.clone(), hello.id.clone());
        let saved = tokio::task::spawn_blocking(move || c.persist_dataplane(&id)).await;
        let err = match saved {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(RecordError::Store(e)),
            Err(e) => Some(RecordError::Task(e)),
        };
        if let Some(e) = err {
            tracing::warn!(dataplane = %hello.id, "could not record the data plane: {e}");
            ctld.disconnected(&hello.id, reg.session);
            return Err(e);
        }
    }
    Ok(reg)
}

/// Why a new data plane's record could not be saved; the peer is told
/// "keyway-ctld cannot record this data plane: " and this.
#[derive(Debug, thiserror::Error)]
enum RecordError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task that saves it did not finish.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Token;

    #[test]
    fn hellos_are_checked_token_first() {
        let auth = Auth::Token(Token::new("tok", "test").unwrap());
        let good = Hello {
            id: "dp1".into(),
            cluster: "c".into(),
            version: 0,
            address: "127.0.0.1:6380".into(),
            token: "tok".into(),
            admin: String::new(),
            admin_tls: false,
        };
        check_hello(&good, &auth).unwrap();
        let bad = |f: &dyn Fn(&mut Hello)| {
            let mut h = good.clone();
            f(&mut h);
            check_hello(&h, &auth).unwrap_err().to_string()
        };
        assert_eq!(
            bad(&|h| {
                h.token = "nope".into();
                h.id = "/".into();
            }),
            "authentication failed",
            "nothing else is checked, or told, before the token"
        );
        assert!(bad(&|h| h.id = "x".repeat(10_000)).contains("data plane id"));
        assert!(bad(&|h| h.id = String::new()).contains("data plane id"));
        assert!(bad(&|h| h.cluster = "..".into()).contains("cluster name"));
        assert!(bad(&|h| h.address = "a/b:1".into()).contains("address"));
        let mut no_address = good.clone();
        no_address.address = String::new();
        check_hello(&no_address, &auth).unwrap();
        let mut tokenless = good;
        tokenless.token = String::new();
        check_hello(&tokenless, &Auth::LoopbackOnly).unwrap();
        assert!(check_hello(&tokenless, &auth).is_err());
    }
}
