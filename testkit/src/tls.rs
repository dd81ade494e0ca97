//! Test certificates made with the `openssl` command at test time
//! ([`Certs::generate`]): a CA, a server certificate for 127.0.0.1 and
//! localhost, a client certificate signed by the same CA, and a second CA
//! with its own client certificate for the "wrong certificate" cases. Keys
//! are P-256 (quick to make); every certificate is valid for two days.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Certificate and key files in a directory.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA that signed `server` and `client`.
    pub ca: PathBuf,
    /// The server certificate (SAN IP:127.0.0.1, DNS:localhost) and key.
    pub server_cert: PathBuf,
    /// See `server_cert`.
    pub server_key: PathBuf,
    /// A client certificate signed by `ca`, and its key.
    pub client_cert: PathBuf,
    /// See `client_cert`.
    pub client_key: PathBuf,
    /// Another CA, which signed nothing of the above.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`, and its key.
    pub other_cert: PathBuf,
    /// See `other_cert`.
    pub other_key: PathBuf,
}

const CA_EXT: &str = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = keyway test CA\n\
[v3]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
subjectKeyIdentifier = hash\n";
const LEAF_EXT: &str = "[v3]\nbasicConstraints = CA:FALSE\n\
keyUsage = critical,digitalSignature,keyEncipherment\n\
extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = IP:127.0.0.1,DNS:localhost\n\
authorityKeyIdentifier = keyid\nsubjectKeyIdentifier = hash\n";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cannot run openssl (Debian package openssl; scripts/deps.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes CA `name` (`name.crt`, `name.key`) in `dir`.
fn ca(dir: &Path, name: &str) {
    std::fs::write(dir.join("ca.cnf"), CA_EXT).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-config",
            "ca.cnf",
            "-extensions",
            "v3",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// Makes `name.crt` and `name.key` in `dir`, signed by CA `ca`.
fn leaf(dir: &Path, name: &str, ca: &str) {
    std::fs::write(dir.join("leaf.cnf"), LEAF_EXT).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.cnf",
            "-extensions",
            "v3",
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

impl Certs {
    /// Makes every file in `dir`.
    pub fn generate(dir: &Path) -> Certs {
        ca(dir, "ca");
        ca(dir, "other-ca");
        leaf(dir, "server", "ca");
        leaf(dir, "client", "ca");
        leaf(dir, "other", "other-ca");
        Certs {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.crt"),
            other_cert: dir.join("other.crt"),
            other_key: dir.join("other.key"),
        }
    }

    /// Makes a second server certificate (`server2`) signed by the same CA,
    /// e.g. to replace the first on a reload; returns its (cert, key).
    pub fn another_server(&self) -> (PathBuf, PathBuf) {
        let dir = self.ca.parent().expect("certs are in a directory");
        leaf(dir, "server2", "ca");
        (dir.join("server2.crt"), dir.join("server2.key"))
    }
}
