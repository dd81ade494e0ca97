//! TLS for clients: Debian's `redis-cli --tls` (and a rustls client, for
//! what redis-cli cannot show: one connection kept across a reload, the
//! certificate a server presents) against keyway's TLS port, beside the
//! plain one or alone, with and without client certificates; certificates
//! reloaded on SIGHUP. Certificates are made with `openssl` at test time.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{groups, Keyway, Redis, TempDir};
use keyway_testkit::resp;
use keyway_testkit::tls::Certs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// `[tls]` with the server certificate of `certs`, `extra` lines after.
fn tls_section(certs: &Certs, extra: &str) -> String {
    format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
        certs.server_cert.display(),
        certs.server_key.display()
    )
}

/// Runs `redis-cli --tls` against `addr` verifying the server with `ca`,
/// presenting `client` (cert, key) if given; returns (success, stdout,
/// stderr).
fn redis_cli(
    addr: SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    args: &[&str],
) -> (bool, String, String) {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["--tls", "--cacert"]).arg(ca).args([
        "-h",
        &addr.ip().to_string(),
        "-p",
        &addr.port().to_string(),
    ]);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.args(args).output().expect("run redis-cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn certs_of(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
}

/// A rustls client connection to `addr`, verifying the server with `ca`,
/// with the handshake done (an error if it failed).
fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<TlsStream, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_of(ca) {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(certs_of(cert), PrivateKeyDer::from_pem_file(key).unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(addr.ip().to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
    }
    Ok(s)
}

/// Sends `req` and reads `replies` whole replies.
fn exchange(s: &mut TlsStream, req: &[u8], replies: usize) -> Vec<u8> {
    s.write_all(req).unwrap();
    s.flush().unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while !resp::complete(&out, replies) {
        let n = s.read(&mut buf).expect("read replies");
        assert!(n > 0, "connection closed after {} bytes", out.len());
        out.extend_from_slice(&buf[..n]);
    }
    out
}

#[test]
fn redis_cli_over_tls_beside_the_plain_port() {
    let dir = TempDir::new("tls-certs");
    let certs = Certs::generate(dir.path());
    let r = Redis::start();
    let mut kw = Keyway::start(&format!(
        "{}{}",
        groups(&[&r]),
        tls_section(&certs, "listen = \"127.0.0.1:0\"\n")
    ));
    let tls = kw.tls_addr();
    assert_ne!(tls, kw.addr, "a TLS port beside the plain one");
    let (ok, out, err) = redis_cli(tls, &certs.ca, None, &["SET", "tls:k", "over tls"]);
    assert!(ok && out == "OK", "SET over TLS: {out:?} {err:?}");
    let (ok, out, err) = redis_cli(tls, &certs.ca, None, &["GET", "tls:k"]);
    assert!(ok && out == "over tls", "GET over TLS: {out:?} {err:?}");
    let got: String = redis::cmd("GET")
        .arg("tls:k")
        .query(&mut kw.conn())
        .unwrap();
    assert_eq!(got, "over tls", "the plain port serves the same data");
    let direct: String = redis::cmd("GET").arg("tls:k").query(&mut r.conn()).unwrap();
    assert_eq!(direct, "over tls", "the value reached Redis");
    // A plain client on the TLS port gets no RESP answer.
    let mut plain = TcpStream::connect(tls).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(
        !buf[..n].starts_with(b"+PONG"),
        "plaintext on the TLS port must not be served"
    );
}

#[test]
fn listen_alone_is_tls_only() {
    let dir = TempDir::new("tls-certs");
    let certs = Certs::generate(dir.path());
    let r = Redis::start();
    let mut kw = Keyway::start(&format!("{}{}", groups(&[&r]), tls_section(&certs, "")));
    assert_eq!(kw.tls_addr(), kw.addr, "listen itself speaks TLS");
    let (ok, out, err) = redis_cli(kw.addr, &certs.ca, None, &["PING"]);
    assert!(ok && out == "PONG", "PING over TLS: {out:?} {err:?}");
    let client = redis::Client::open(format!("redis://{}", kw.addr)).unwrap();
    let plain = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    assert!(plain.is_err(), "a plain client is not served: {plain:?}");
}

#[test]
fn client_certificates_are_required_and_verified_when_ca_is_set() {
    let dir = TempDir::new("tls-certs");
    let certs = Certs::generate(dir.path());
    let r = Redis::start();
    let mut kw = Keyway::start(&format!(
        "{}{}",
        groups(&[&r]),
        tls_section(
            &certs,
            &format!(
                "listen = \"127.0.0.1:0\"\nca = \"{}\"\n",
                certs.ca.display()
            )
        )
    ));
    let tls = kw.tls_addr();
    let good = Some((certs.client_cert.as_path(), certs.client_key.as_path()));
    let (ok, out, err) = redis_cli(tls, &certs.ca, good, &["SET", "mtls:k", "v"]);
    assert!(
        ok && out == "OK",
        "a client with a good certificate: {out:?} {err:?}"
    );

    let (_, out, err) = redis_cli(tls, &certs.ca, None, &["SET", "mtls:k", "none"]);
    assert_ne!(
        out, "OK",
        "a client without a certificate is refused ({err})"
    );
    let wrong = Some((certs.other_cert.as_path(), certs.other_key.as_path()));
    let (_, out, err) = redis_cli(tls, &certs.ca, wrong, &["SET", "mtls:k", "wrong"]);
    assert_ne!(
        out, "OK",
        "a client with another CA's certificate is refused ({err})"
    );
    let direct: String = redis::cmd("GET")
        .arg("mtls:k")
        .query(&mut r.conn())
        .unwrap();
    assert_eq!(direct, "v", "the refused clients' SETs never reached Redis");
    assert!(
        tls_connect(tls, &certs.ca, wrong)
            .and_then(|mut s| {
                s.write_all(b"*1\r\n$4\r\nPING\r\n")
                    .map_err(|e| e.to_string())?;
                let mut buf = [0u8; 16];
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => Ok(()),
                    Ok(_) => Err("closed".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .is_err(),
        "rustls client with a wrong certificate is refused too"
    );
    kw.wait_log("closing a TLS connection");
    // The plain port is not affected by the client-certificate rule.
    let got: String = redis::cmd("GET")
        .arg("mtls:k")
        .query(&mut kw.conn())
        .unwrap();
    assert_eq!(got, "v");
}

/// A redis-server serving plain on its `port` (for readiness and direct
/// checks) and TLS on the returned port, requiring client certificates
/// signed by `certs.ca` (Redis's default `tls-auth-clients yes`).
fn tls_redis(certs: &Certs) -> (Redis, u16) {
    let tls_port = keyway_testkit::free_port();
    let r = Redis::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        certs.server_cert.to_str().unwrap(),
        "--tls-key-file",
        certs.server_key.to_str().unwrap(),
        "--tls-ca-cert-file",
        certs.ca.to_str().unwrap(),
    ]);
    (r, tls_port)
}

/// A `[[group]]` reaching `port` over TLS, trusting `ca`, presenting the
/// client certificate of `certs`.
fn tls_group(name: &str, port: u16, ca: &Path, certs: &Certs) -> String {
    format!(
        "[[group]]\nname = \"{name}\"\nmaster = \"127.0.0.1:{port}\"\ntls = true\n\
         tls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        ca.display(),
        certs.client_cert.display(),
        certs.client_key.display()
    )
}

#[test]
fn redis_cli_tls_through_keyway_to_redis_server_tls_port() {
    let dir = TempDir::new("tls-certs");
    let certs = Certs::generate(dir.path());
    let (r, tls_port) = tls_redis(&certs);
    let mut kw = Keyway::start(&format!(
        "{}{}",
        tls_group("g1", tls_port, &certs.ca, &certs),
        tls_section(&certs, "listen = \"127.0.0.1:0\"\n")
    ));
    let tls = kw.tls_addr();
    let (ok, out, err) = redis_cli(tls, &certs.ca, None, &["SET", "both:k", "tls all the way"]);
    assert!(ok && out == "OK", "SET: {out:?} {err:?}");
    let (ok, out, err) = redis_cli(tls, &certs.ca, None, &["GET", "both:k"]);
    assert!(ok && out == "tls all the way", "GET: {out:?} {err:?}");
    let direct: String = redis::cmd("GET")
        .arg("both:k")
        .query(&mut r.conn())
        .unwrap();
    assert_eq!(
        direct, "tls all the way",
        "the value reached Redis over its TLS port"
    );
    // Redis counts the TLS connection keyway holds.
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut r.conn())
        .unwrap();
    assert!(
        list.lines()
            .any(|l| l.contains(&format!("laddr=127.0.0.1:{tls_port}"))),
        "keyway is connected to the TLS port: {list}"
    );
}

#[test]
fn an_untrusted_backend_is_unavailable_until_a_reload_trusts_it() {
    let dir = TempDir::new("tls-certs");
    let certs = Certs::generate(dir.path());
    let (r, tls_port) = tls_redis(&certs);
    let kw = Keyway::start(&tls_group("g1", tls_port, &certs.other_ca, &certs));
    let got = redis::cmd("SET")
        .arg("untrusted:k")
        .arg("v")
        .query::<String>(&mut kw.conn());
    let err = got.expect_err("a backend keyway does not trust is never used");
    assert!(
        err.to_string().contains("TLS"),
        "the error says TLS failed: {err}"
    );
    let direct: Option<String> = redis::cmd("GET")
        .arg("untrusted:k")
        .query(&mut r.conn())
        .unwrap();
    assert_eq!(direct, None, "nothing reached Redis");

    // SIGHUP reads the group's TLS files again: trusting the right CA now,
    // new connections to the backend succeed.
    let mut kw = kw;
    kw.reload(&tls_group("g1", tls_port, &certs.ca, &certs));
    kw.wait_log("configuration reloaded");
    let set = common::wait_for("the backend over TLS", Duration::from_secs(10), || {
        redis::cmd("SET")
            .arg("untrusted:k")
            .arg("now trusted")
            .query::<String>(&mut kw.conn())
            .ok()
    });
    assert_eq!(set, "OK");
    let direct: String = redis::cmd("GET")
        .arg("untrusted:k")
        .query(&mut r.conn())
        .unwrap();
    assert_eq!(direct, "now trusted");
}

#[test]
fn large_values_and_long_pipelines_over_tls() {
    let dir = TempDir::new("tls-certs");
    let certs = Certs::generate(dir.path());
    let (r, tls_port) = tls_redis(&certs);
    let mut kw = Keyway::start(&format!(
        "{}{}",
        tls_group("g1", tls_port, &certs.ca, &certs),
        tls_section(&certs, "listen = \"127.0.0.1:0\"\n")
    ));
    let tls = kw.tls_addr();
    let mut s = tls_connect(tls, &certs.ca, None).expect("handshake");
    let big: Vec<u8> = (0..(1usize << 20)).map(|i| b'a' + (i % 26) as u8).collect();
    let set = exchange(
        &mut s,
        &resp::request(&[b"SET".as_slice(), b"big", &big]),
        1,
    );
    assert_eq!(set, b"+OK\r\n");
    let got = exchange(&mut s, &resp::request(&[b"GET".as_slice(), b"big"]), 1);
    let mut want = format!("${}\r\n", big.len()).into_bytes();
    want.extend_from_slice(&big);
    want.extend_from_slice(b"\r\n");
    assert!(got == want, "a 1 MiB value read back whole over TLS");

    let n = 2000;
    let mut req = Vec::new();
    for i in 0..n {
        req.extend(resp::request(&["SET", &format!("p:{i}"), &format!("v{i}")]));
        req.extend(resp::request(&["GET", &format!("p:{i}")]));
    }
    let replies = exchange(&mut s, &req, 2 * n);
    let mut want = Vec::new();
    for i in 0..n {
        want.extend_from_slice(b"+OK\r\n");
        let v = format!("v{i}");
        want.extend(format!("${}\r\n{v}\r\n", v.len()).into_bytes());
    }
    assert!(
        replies == want,
        "{} pipelined replies in order over TLS",
        2 * n
    );
    let direct: String = redis::cmd("GET")
        .arg("p:1999")
        .query(&mut r.conn())
        .unwrap();
    assert_eq!(direct, "v1999");
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections() {
    let dir = TempDir::new("tls-certs");
    let certs = Certs::generate(dir.path());
    let r = Redis::start();
    let body = |cert: &Path, key: &Path| {
        format!(
            "{}[tls]\nlisten = \"{{TLS}}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            groups(&[&r]),
            cert.display(),
            key.display()
        )
    };
    let first = body(&certs.server_cert, &certs.server_key).replace("{TLS}", "127.0.0.1:0");
    let mut kw = Keyway::start(&first);
    let tls = kw.tls_addr();
    let mut old = tls_connect(tls, &certs.ca, None).expect("handshake with the first certificate");
    assert_eq!(exchange(&mut old, b"*1\r\n$4\r\nPING\r\n", 1), b"+PONG\r\n");

    // The other CA's leaf is valid for 127.0.0.1 too: after the reload only
    // a client trusting that CA accepts the server.
    let second = body(&certs.other_cert, &certs.other_key).replace("{TLS}", &tls.to_string());
    kw.reload(&second);
    kw.wait_log("TLS certificate reloaded");
    let mut new =
        tls_connect(tls, &certs.other_ca, None).expect("new connections see the new certificate");
    assert_eq!(exchange(&mut new, b"*1\r\n$4\r\nPING\r\n", 1), b"+PONG\r\n");
    assert!(
        tls_connect(tls, &certs.ca, None).is_err(),
        "the old certificate is no longer presented"
    );
    assert_eq!(
        exchange(&mut old, b"*1\r\n$4\r\nPING\r\n", 1),
        b"+PONG\r\n",
        "a connection made before the reload goes on"
    );

    // A reload naming a key that does not match is rejected whole; the
    // certificate in use stays.
    let bad = body(&certs.other_cert, &certs.server_key).replace("{TLS}", &tls.to_string());
    kw.reload(&bad);
    kw.wait_log("does not match the certificate");
    assert!(tls_connect(tls, &certs.other_ca, None).is_ok());
}

#[test]
fn bad_tls_files_are_config_errors_naming_the_file() {
    let dir = TempDir::new("tls-certs");
    let certs = Certs::generate(dir.path());
    let r = Redis::start();
    let check = |tls: &str| {
        let config = dir.path().join("check.toml");
        std::fs::write(
            &config,
            format!("listen = \"127.0.0.1:0\"\n{}{tls}", groups(&[&r])),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
            .arg("--config")
            .arg(&config)
            .arg("--check")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let section = |cert: &Path, key: &Path| {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    let missing = dir.path().join("missing.crt");
    let cases = [
        (section(&missing, &certs.server_key), "cannot read"),
        (
            section(&certs.server_key, &certs.server_key),
            "holds no certificate",
        ),
        (
            section(&certs.server_cert, &certs.server_cert),
            "holds no private key",
        ),
        (
            section(&certs.server_cert, &certs.client_key),
            "does not match the certificate",
        ),
        (
            format!(
                "{}min_version = \"1.1\"\n",
                section(&certs.server_cert, &certs.server_key)
            ),
            "min_version",
        ),
    ];
    for (tls, want) in cases {
        let (ok, err) = check(&tls);
        assert!(
            !ok && err.contains(want),
            "{tls:?}: {err:?} does not say {want:?}"
        );
        let key = std::fs::read_to_string(&certs.server_key).unwrap();
        let body = key.lines().nth(1).unwrap();
        assert!(!err.contains(body), "a key never appears in an error");
    }
    let (ok, err) = check(&section(&certs.server_cert, &certs.server_key));
    assert!(ok, "a good [tls] section passes --check: {err}");
}

#[test]
fn a_managed_keyway_reloads_its_certificate_on_sighup() {
    let dir = TempDir::new("tls-certs");
    let certs = Certs::generate(dir.path());
    let r = Redis::start();
    let ctld = common::fake_ctld::FakeCtld::start(common::fake_ctld::snapshot(1, &r.addr(), false));
    let section = |cert: &Path, key: &Path| {
        format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    let mut kw = Keyway::start_args(
        &section(&certs.server_cert, &certs.server_key),
        &["--control", &ctld.addr, "--cluster", "c"],
    );
    let tls = kw.tls_addr();
    let mut old = tls_connect(tls, &certs.ca, None).expect("handshake with the first certificate");
    kw.reload(&section(&certs.other_cert, &certs.other_key));
    kw.wait_log("TLS certificate reloaded");
    assert!(
        tls_connect(tls, &certs.other_ca, None).is_ok(),
        "new connections get the new certificate"
    );
    assert!(tls_connect(tls, &certs.ca, None).is_err());
    assert_eq!(
        exchange(&mut old, b"*1\r\n$4\r\nPING\r\n", 1),
        b"+PONG\r\n",
        "a connection made before the reload goes on"
    );
}

/// A managed keyway reads its `[tls]` files again when a snapshot arrives
/// after they changed on disk (renewed in place, no `SIGHUP`); a pair that
/// does not load keeps the certificate in use and is logged once.
#[test]
fn a_managed_keyway_reloads_changed_certificate_files_with_a_snapshot() {
    let dir = TempDir::new("tls-certs");
    let certs = Certs::generate(dir.path());
    let r = Redis::start();
    let (cert, key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    let put = |c: &Path, k: &Path| {
        std::fs::copy(c, &cert).unwrap();
        std::fs::copy(k, &key).unwrap();
    };
    put(&certs.server_cert, &certs.server_key);
    let ctld = common::fake_ctld::FakeCtld::start(common::fake_ctld::snapshot(1, &r.addr(), false));
    let section = format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let mut kw = Keyway::start_args(&section, &["--control", &ctld.addr, "--cluster", "c"]);
    let tls = kw.tls_addr();
    let mut old = tls_connect(tls, &certs.ca, None).expect("handshake with the first certificate");
    let applied = |v: u64| {
        ctld.ack_where(Duration::from_secs(10), |a| a.version >= v);
    };
    // Renewed on disk: nothing changes until a snapshot arrives.
    put(&certs.other_cert, &certs.other_key);
    ctld.publish(common::fake_ctld::snapshot(2, &r.addr(), false));
    applied(2);
    kw.wait_log("TLS certificate reloaded");
    assert!(
        tls_connect(tls, &certs.other_ca, None).is_ok(),
        "new connections get the renewed certificate"
    );
    assert!(tls_connect(tls, &certs.ca, None).is_err());
    assert_eq!(
        exchange(&mut old, b"*1\r\n$4\r\nPING\r\n", 1),
        b"+PONG\r\n",
        "a connection made before goes on"
    );
    // A key that does not match: the certificate in use stays, one error.
    std::fs::copy(&certs.server_key, &key).unwrap();
    ctld.publish(common::fake_ctld::snapshot(3, &r.addr(), false));
    applied(3);
    kw.wait_log("TLS reload rejected");
    ctld.publish(common::fake_ctld::snapshot(4, &r.addr(), false));
    applied(4);
    std::thread::sleep(Duration::from_millis(300));
    let rejected = kw
        .logs()
        .iter()
        .filter(|l| l.contains("TLS reload rejected"))
        .count();
    assert_eq!(rejected, 1, "a failed load is logged once");
    assert!(
        tls_connect(tls, &certs.other_ca, None).is_ok(),
        "the certificate in use stays"
    );
}

#[test]
fn a_client_that_never_finishes_its_handshake_is_closed() {
    let dir = TempDir::new("tls-certs");
    let certs = Certs::generate(dir.path());
    let r = Redis::start();
    let mut kw = Keyway::start(&format!(
        "{}{}",
        groups(&[&r]),
        tls_section(
            &certs,
            "listen = \"127.0.0.1:0\"\nhandshake_timeout = \"300ms\"\n"
        )
    ));
    let tls = kw.tls_addr();
    let mut done = tls_connect(tls, &certs.ca, None).expect("a handshake that ends");
    // Half a ClientHello's record header, then nothing.
    let mut stuck = TcpStream::connect(tls).unwrap();
    stuck.write_all(&[0x16, 0x03]).unwrap();
    stuck
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 64];
    let closed = match stuck.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(closed, "closed once tls.handshake_timeout passed");
    kw.wait_log("the handshake did not end within 300ms");
    assert_eq!(
        exchange(&mut done, b"*1\r\n$4\r\nPING\r\n", 1),
        b"+PONG\r\n",
        "a client whose handshake ended is not subject to it"
    );
}

#[test]
fn the_admin_endpoint_speaks_https_when_asked() {
    let dir = TempDir::new("tls-certs");
    let certs = Certs::generate(dir.path());
    let r = Redis::start();
    let mut kw = Keyway::start(&format!(
        "admin = \"127.0.0.1:0\"\n{}{}",
        groups(&[&r]),
        tls_section(&certs, "listen = \"127.0.0.1:0\"\nadmin = true\n")
    ));
    let admin: SocketAddr = kw.admin().parse().unwrap();
    let mut s = tls_connect(admin, &certs.ca, None).expect("TLS handshake with the admin port");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    // The reply ends with the server's close_notify: read to the end.
    s.read_to_end(&mut out)
        .expect("the response, then close_notify");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\nok\n"),
        "{text:?}"
    );
    // Plain HTTP gets no answer: the port speaks TLS only.
    let mut plain = TcpStream::connect(admin).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // An untrusted certificate is refused by the client as for the data port.
    assert!(tls_connect(admin, &certs.other_ca, None).is_err());
}
