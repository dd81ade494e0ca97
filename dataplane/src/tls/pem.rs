//! Certificates, private keys and CA bundles read from PEM files, with errors
//! that name the file and never quote a key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use super::TlsError;

/// Largest PEM file read (a chain or a CA bundle is a few KiB; a system
/// bundle about 200 KiB).
const MAX_PEM_BYTES: u64 = 4 << 20;

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "is larger than 4 MiB",
        });
    }
    Ok(bytes)
}

/// The certificates of a PEM file, leaf first; at least one.
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| pem_error(path, "is not valid PEM"))?;
    if certs.is_empty() {
        return Err(pem_error(path, "holds no certificate (BEGIN CERTIFICATE)"));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| pem_error(path, "holds no private key (BEGIN PRIVATE KEY)"))
}

/// The CA certificates of a PEM file, as trust roots.
pub fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store
            .add(c)
            .map_err(|e| TlsError::Rustls(format!("CA file {}: {e}", path.display())))?;
    }
    Ok(Arc::new(store))
}

fn pem_error(path: &Path, what: &'static str) -> TlsError {
    TlsError::Pem {
        path: PathBuf::from(path),
        what,
    }
}
