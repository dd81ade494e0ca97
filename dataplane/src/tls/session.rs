//! One connection's TLS session ([`TlsSession`]), driven by a transport:
//! ciphertext in, plaintext out to the worker; the worker's plaintext in,
//! records out to the socket.
//!
//! What a peer can make keyway hold is bounded: rustls keeps at most one
//! incoming record not yet decrypted, and every call here drains what it
//! produced — plaintext to the caller's sink, records to the caller's send
//! buffer — so the session itself never grows; the worker's own input and
//! output limits then count the plaintext as for a plain connection.

use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

use std::sync::Arc;

use rustls::ServerConfig;

use super::TlsConnect;

/// Why a session ended in error.
#[derive(Debug, thiserror::Error)]
pub enum TlsFailure {
    /// The peer broke the protocol, or its certificate was refused.
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    /// rustls refused a buffer operation.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A connection's TLS state (client or server side).
pub struct TlsSession {
    conn: rustls::Connection,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    /// A server-side session for a newly accepted client.
    pub fn server(config: Arc<ServerConfig>) -> Result<Box<TlsSession>, TlsFailure> {
        let mut conn = rustls::ServerConnection::new(config)?;
        // What goes in is drained at once (see the module documentation):
        // no second limit on top of the worker's.
        conn.set_buffer_limit(None);
        Ok(Box::new(TlsSession { conn: conn.into() }))
    }

    /// A client-side session for a new connection to a backend.
    pub fn client(connect: &TlsConnect) -> Result<Box<TlsSession>, TlsFailure> {
        let mut conn = rustls::ClientConnection::new(connect.config.clone(), connect.name.clone())?;
        // As for a server session: what the worker writes before the
        // handshake ends waits here, bounded by the worker's own limits.
        conn.set_buffer_limit(None);
        Ok(Box::new(TlsSession { conn: conn.into() }))
    }

    /// Feeds `data` (ciphertext as received) and hands each piece of
    /// plaintext it holds to `deliver`, through `plain` (a scratch buffer).
    /// Returns whether the peer ended the session (`close_notify`).
    pub fn read(
        &mut self,
        mut data: &[u8],
        plain: &mut [u8],
        mut deliver: impl FnMut(&[u8]),
    ) -> Result<bool, TlsFailure> {
        let mut closed = false;
        while !data.is_empty() {
            // rustls reads nothing more once the peer's close_notify is in
            // (Ok(0)): what follows it is dropped, never looped over.
            if self.conn.read_tls(&mut data)? == 0 {
                break;
            }
            let state = self.conn.process_new_packets()?;
            closed |= state.peer_has_closed();
            loop {
                match self.conn.reader().read(plain) {
                    Ok(0) => break,
                    Ok(n) => deliver(&plain[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(closed)
    }

    /// Encrypts `plain` (may be empty) and appends to `out` every record the
    /// session has to send (handshake records included).
    pub fn write(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), TlsFailure> {
        if !plain.is_empty() {
            self.conn.writer().write_all(plain)?;
        }
        self.pending(out)
    }

    /// Appends to `out` the records the session has to send (after an error:
    /// its alert).
    pub fn pending(&mut self, out: &mut Vec<u8>) -> Result<(), TlsFailure> {
        while self.conn.wants_write() {
            self.conn.write_tls(out)?;
        }
        Ok(())
    }

    /// Whether records wait to be sent.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Whether the handshake is still going on.
    pub fn handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Ends the session: appends a `close_notify` alert to `out`.
    pub fn close(&mut self, out: &mut Vec<u8>) {
        self.conn.send_close_notify();
        let _ = self.pending(out);
    }

    /// Sends what the session still has to say (its alert after an error, or
    /// its `close_notify`) on `fd` at once, without waiting: best effort
    /// before the socket closes.
    pub fn send_last_words(&mut self, fd: RawFd, close: bool) {
        let mut out = Vec::new();
        if close {
            self.close(&mut out);
        } else {
            let _ = self.pending(&mut out);
        }
        if !out.is_empty() {
            // SAFETY: a non-blocking send of a live buffer on a socket the
            // caller owns.
            unsafe {
                libc::send(
                    fd,
                    out.as_ptr().cast(),
                    out.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                );
            }
        }
    }
}

/// A rate limit for the log lines of failed sessions: at most `BURST` a
/// window; the next line after a quiet spell says how many were left out.
#[derive(Debug, Default)]
pub struct TlsLog {
    window: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl TlsLog {
    const WINDOW: Duration = Duration::from_secs(10);
    const BURST: u32 = 20;

    /// Logs that the session with `peer` failed (rate-limited).
    pub fn failed(&mut self, core: usize, peer: Option<SocketAddr>, e: &TlsFailure) {
        let now = Instant::now();
        match self.window {
            Some(start) if now.duration_since(start) < Self::WINDOW => {}
            _ => {
                self.window = Some(now);
                self.in_window = 0;
            }
        }
        if self.in_window >= Self::BURST {
            self.suppressed += 1;
            return;
        }
        self.in_window += 1;
        let left_out = std::mem::take(&mut self.suppressed);
        match peer {
            Some(peer) => tracing::warn!(
                core,
                %peer,
                earlier_lines_left_out = left_out,
                "closing a TLS connection: {e}"
            ),
            None => tracing::warn!(
                core,
                earlier_lines_left_out = left_out,
                "closing a TLS connection: {e}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use keyway_testkit::tls::Certs;
    use keyway_testkit::TempDir;

    use super::*;
    use crate::tls::{BackendTls, ServerTls, TlsSettings, TlsVersion};

    fn server(certs: &Certs, ca: Option<&Path>) -> Box<TlsSession> {
        let tls = ServerTls::load(&TlsSettings {
            listen: None,
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            ca: ca.map(Path::to_path_buf),
            min_version: TlsVersion::V12,
            handshake_timeout: crate::config::units::Millis(10_000),
            admin: false,
        })
        .unwrap();
        TlsSession::server(tls.config().clone()).unwrap()
    }

    fn client(ca: &Path, cert: Option<(&Path, &Path)>) -> Box<TlsSession> {
        let tls = BackendTls::load(Some(ca), cert, None).unwrap();
        TlsSession::client(&tls.connect("127.0.0.1:6379").unwrap()).unwrap()
    }

    /// Moves what `from` has to send to `to`; returns the plaintext `to`
    /// got and whether it saw `close_notify`. A small plaintext buffer, so
    /// a record takes several reads.
    fn pump(from: &mut TlsSession, to: &mut TlsSession) -> Result<(Vec<u8>, bool), TlsFailure> {
        let mut wire = Vec::new();
        from.pending(&mut wire)?;
        let mut got = Vec::new();
        let mut plain = [0u8; 1000];
        let closed = to.read(&wire, &mut plain, |p| got.extend_from_slice(p))?;
        Ok((got, closed))
    }

    #[test]
    fn data_written_before_the_handshake_arrives_after_it_both_ways() {
        let dir = TempDir::new("tls-session");
        let certs = Certs::generate(dir.path());
        let mut s = server(&certs, None);
        let mut c = client(&certs.ca, None);
        let mut wire = Vec::new();
        c.write(b"*1\r\n$4\r\nPING\r\n", &mut wire).unwrap();
        assert!(
            !wire.is_empty(),
            "the ClientHello goes out with nothing else"
        );
        let mut got = Vec::new();
        let mut plain = [0u8; 1000];
        s.read(&wire, &mut plain, |p| got.extend_from_slice(p))
            .unwrap();
        for _ in 0..5 {
            pump(&mut s, &mut c).unwrap();
            got.extend(pump(&mut c, &mut s).unwrap().0);
        }
        assert_eq!(
            got, b"*1\r\n$4\r\nPING\r\n",
            "held until the handshake ended"
        );
        assert!(!s.handshaking() && !c.handshaking());
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        s.write(&big, &mut out).unwrap();
        let mut plain = [0u8; 700];
        let mut back = Vec::new();
        // Fed in odd pieces, as a socket delivers them.
        for piece in out.chunks(1234) {
            c.read(piece, &mut plain, |p| back.extend_from_slice(p))
                .unwrap();
        }
        assert!(back == big, "100 kB in several records, read back whole");
        let mut bye = Vec::new();
        c.close(&mut bye);
        let mut plain = [0u8; 16];
        assert!(
            s.read(&bye, &mut plain, |_| {}).unwrap(),
            "close_notify seen"
        );
        // Bytes after a close_notify (in the same read) are dropped, and the
        // call returns (rustls reads nothing after it: looping until the
        // input is used up would never end).
        let mut c2 = client(&certs.ca, None);
        let mut s2 = server(&certs, None);
        for _ in 0..5 {
            let _ = pump(&mut c2, &mut s2);
            let _ = pump(&mut s2, &mut c2);
        }
        let mut tail = Vec::new();
        c2.close(&mut tail);
        // More than rustls takes in one read_tls.
        tail.extend_from_slice(&[b'x'; 100_000]);
        assert!(s2.read(&tail, &mut plain, |_| {}).unwrap());
    }

    #[test]
    fn a_server_requiring_client_certificates_refuses_a_wrong_one() {
        let dir = TempDir::new("tls-session");
        let certs = Certs::generate(dir.path());
        let good = (certs.client_cert.as_path(), certs.client_key.as_path());
        let wrong = (certs.other_cert.as_path(), certs.other_key.as_path());
        for (cert, ok) in [(Some(good), true), (Some(wrong), false), (None, false)] {
            let mut s = server(&certs, Some(&certs.ca));
            let mut c = client(&certs.ca, cert);
            let mut failed = None;
            for _ in 0..5 {
                if let Err(e) = pump(&mut c, &mut s) {
                    failed = Some(e.to_string());
                    break;
                }
                let _ = pump(&mut s, &mut c);
            }
            assert_eq!(failed.is_none(), ok, "{cert:?}: {failed:?}");
            if !ok {
                let mut alert = Vec::new();
                s.pending(&mut alert).unwrap();
                assert!(!alert.is_empty(), "the refusal is told with an alert");
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = TempDir::new("tls-session");
        let certs = Certs::generate(dir.path());
        let mut s = server(&certs, None);
        let mut plain = [0u8; 64];
        let r = s.read(b"*1\r\n$4\r\nPING\r\n", &mut plain, |_| {});
        assert!(r.is_err(), "plaintext RESP on a TLS session fails it");
    }
}
