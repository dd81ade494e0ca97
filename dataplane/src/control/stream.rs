//! The control session's socket: plain TCP, or TLS when keyway is started
//! with `--control-tls-ca` (mutual TLS: keyway verifies ctld's certificate
//! and presents its own, `--control-tls-cert`/`--control-tls-key`). The
//! session reads and writes it as one blocking stream either way.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::tls::{BackendTls, TlsConnect};

/// How long the TLS handshake with ctld may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected control socket.
pub(super) enum ControlStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl ControlStream {
    /// Wraps `sock`, connected to ctld at `addr` (`host:port`), in TLS if
    /// `tls` is given, handshake done.
    pub(super) fn open(
        sock: TcpStream,
        addr: &str,
        tls: Option<&BackendTls>,
    ) -> io::Result<ControlStream> {
        sock.set_nodelay(true)?;
        let Some(tls) = tls else {
            return Ok(ControlStream::Plain(sock));
        };
        let TlsConnect { config, name } = tls.connect(addr).map_err(io::Error::other)?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut s = rustls::StreamOwned::new(conn, sock);
        s.sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(ControlStream::Tls(Box::new(s)))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            ControlStream::Plain(s) => s,
            ControlStream::Tls(s) => &s.sock,
        }
    }

    /// As [`TcpStream::set_read_timeout`].
    pub(super) fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(d)
    }
}

impl Read for ControlStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ControlStream::Plain(s) => s.read(buf),
            ControlStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for ControlStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ControlStream::Plain(s) => s.write(buf),
            ControlStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ControlStream::Plain(s) => s.flush(),
            ControlStream::Tls(s) => s.flush(),
        }
    }
}
