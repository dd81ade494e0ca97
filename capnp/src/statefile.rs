//! The one format of keyway's checksummed state files, and their atomic write.
//! A data plane keeps its last snapshot and lease in one
//! (`dataplane/src/control/state.rs`), keyway-ctld its desired state in
//! another (`ctl/src/store.rs`); both must survive a crash and detect damage
//! the same way, so both use this module.
//!
//! A file is one text header line, then the body:
//!
//! ```text
//! <magic> [name=<u64> …] len=<body bytes> crc32c=<8 hex digits>\n<body>
//! ```
//!
//! The CRC32C covers each named field (its `u64`, little-endian, in order)
//! and then the body, so a field edited on disk (a data plane's lease end)
//! is detected like a damaged body. Bytes after the body are ignored.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

static CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Why bytes are not a state file of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateFileError {
    /// No newline, so no header.
    #[error("no header line")]
    NoHeader,
    /// The header line is not UTF-8.
    #[error("the header is not text")]
    HeaderNotText,
    /// The header does not start with the expected magic.
    #[error("not a {what} file (bad header)")]
    BadMagic {
        /// What kind of file was expected.
        what: &'static str,
    },
    /// A field is missing from the header or is not a number.
    #[error("the header has no valid {field}")]
    MissingField {
        /// The field's name (`len`, `crc32c`, or a named field).
        field: &'static str,
    },
    /// The body is shorter than the header says.
    #[error("truncated: {got} of {want} bytes")]
    Truncated {
        /// Bytes present after the header.
        got: usize,
        /// Bytes the header announces.
        want: usize,
    },
    /// The checksum does not match the fields and body.
    #[error("checksum mismatch")]
    ChecksumMismatch,
}

/// One kind of state file: its magic (the header's first words, which carry
/// the format's version) and what to call it in errors.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// The header's first words, e.g. `"keyway-ctld state v1"`.
    pub magic: &'static str,
    /// What it is, for errors: `"keyway-ctld state"`.
    pub what: &'static str,
}

impl Format {
    /// The file's bytes: the header with `fields` (name and value, in the
    /// order the checksum covers them), then `body`.
    pub fn encode(&self, fields: &[(&str, u64)], body: &[u8]) -> Vec<u8> {
        let mut header = String::from(self.magic);
        for (name, value) in fields {
            header.push_str(&format!(" {name}={value}"));
        }
        let crc = checksum(fields.iter().map(|(_, v)| *v), body);
        header.push_str(&format!(" len={} crc32c={crc:08x}\n", body.len()));
        let mut out = header.into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// The values of the named `fields` (in that order) and the body, once
    /// the header, length and checksum check out.
    pub fn decode<'a, const N: usize>(
        &self,
        fields: [&'static str; N],
        bytes: &'a [u8],
    ) -> Result<([u64; N], &'a [u8]), StateFileError> {
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(StateFileError::NoHeader)?;
        let header =
            std::str::from_utf8(&bytes[..nl]).map_err(|_| StateFileError::HeaderNotText)?;
        let rest = header
            .strip_prefix(self.magic)
            .ok_or(StateFileError::BadMagic { what: self.what })?;
        let field = |name: &'static str| {
            rest.split_whitespace()
                .filter_map(|f| f.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
        };
        let mut values = [0u64; N];
        for (value, name) in values.iter_mut().zip(fields) {
            *value = field(name)
                .and_then(|v| v.parse().ok())
                .ok_or(StateFileError::MissingField { field: name })?;
        }
        let len = field("len")
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or(StateFileError::MissingField { field: "len" })?;
        let crc = field("crc32c")
            .and_then(|v| u32::from_str_radix(v, 16).ok())
            .ok_or(StateFileError::MissingField { field: "crc32c" })?;
        let after = &bytes[nl + 1..];
        let body = after.get(..len).ok_or(StateFileError::Truncated {
            got: after.len(),
            want: len,
        })?;
        if checksum(values.iter().copied(), body) != crc {
            return Err(StateFileError::ChecksumMismatch);
        }
        Ok((values, body))
    }
}

/// CRC32C of the fields (little-endian) and then the body.
fn checksum(fields: impl Iterator<Item = u64>, body: &[u8]) -> u32 {
    let mut digest = CRC.digest();
    for v in fields {
        digest.update(&v.to_le_bytes());
    }
    digest.update(body);
    digest.finalize()
}

/// Writing a file atomically failed at `path` (the temporary file, the
/// file, or its directory).
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WriteError {
    /// Where it failed.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: std::io::Error,
}

impl From<WriteError> for std::io::Error {
    fn from(e: WriteError) -> std::io::Error {
        std::io::Error::new(e.source.kind(), e)
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old or the new
/// content: a temporary file beside it (`path` with extension `tmp`),
/// fsynced, renamed over `path`, and the directory fsynced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError { path, source }
    };
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(at(&tmp))?;
    f.write_all(bytes).map_err(at(&tmp))?;
    f.sync_all().map_err(at(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(at(path))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Format = Format {
        magic: "test state v1",
        what: "test state",
    };

    #[test]
    fn round_trips_fields_and_body() {
        let bytes = F.encode(&[("a", 7), ("b", u64::MAX)], b"body\n");
        assert!(bytes.starts_with(b"test state v1 a=7 b=18446744073709551615 len=5 crc32c="));
        let (values, body) = F.decode(["a", "b"], &bytes).unwrap();
        assert_eq!(values, [7, u64::MAX]);
        assert_eq!(body, b"body\n");
        let bare = F.encode(&[], b"x");
        let (none, body) = F.decode([], &bare).unwrap();
        assert_eq!((none, body), ([], &b"x"[..]));
    }

    #[test]
    fn trailing_bytes_after_the_body_are_ignored() {
        let mut bytes = F.encode(&[], b"{}");
        bytes.push(b'\n');
        assert_eq!(F.decode([], &bytes).unwrap().1, b"{}");
    }

    /// Files written before this module existed, byte for byte (the ctld
    /// store appends a newline after the body; the data plane's covers the
    /// lease): they must still load.
    #[test]
    fn reads_files_written_by_the_earlier_code() {
        let ctld = b"keyway-ctld state v1 len=2 crc32c=297bd0aa\n{}\n";
        let old = Format {
            magic: "keyway-ctld state v1",
            what: "keyway-ctld state",
        };
        assert_eq!(old.decode([], ctld), Ok(([], &b"{}"[..])));
        assert_eq!(
            old.encode(&[], b"{}"),
            ctld[..ctld.len() - 1].to_vec(),
            "the same bytes as before"
        );
        let dp = Format {
            magic: "keyway data plane state v2",
            what: "keyway data plane state",
        };
        let bytes = dp.encode(&[("lease_until_ms", 1_700_000_000_000)], b"snap");
        let mut digest = CRC.digest();
        digest.update(&1_700_000_000_000u64.to_le_bytes());
        digest.update(b"snap");
        let expected = format!(
            "keyway data plane state v2 lease_until_ms=1700000000000 len=4 crc32c={:08x}\nsnap",
            digest.finalize()
        );
        assert_eq!(
            bytes,
            expected.as_bytes(),
            "the earlier layout and checksum"
        );
    }

    #[test]
    fn damage_is_detected() {
        let good = F.encode(&[("lease", 5)], b"0123456789");
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            F.decode(["lease"], &flipped),
            Err(StateFileError::ChecksumMismatch)
        );
        let forged = String::from_utf8(good.clone())
            .unwrap()
            .replace("lease=5", "lease=6");
        assert_eq!(
            F.decode(["lease"], forged.as_bytes()),
            Err(StateFileError::ChecksumMismatch),
            "a field changed on disk is caught"
        );
        assert_eq!(
            F.decode(["lease"], &good[..good.len() - 3]),
            Err(StateFileError::Truncated { got: 7, want: 10 })
        );
        assert_eq!(
            F.decode(["other"], &good),
            Err(StateFileError::MissingField { field: "other" })
        );
        assert_eq!(F.decode::<0>([], b"{}"), Err(StateFileError::NoHeader));
        assert_eq!(
            F.decode::<0>([], b"\xff\n"),
            Err(StateFileError::HeaderNotText)
        );
        assert_eq!(
            F.decode::<0>([], b"something else\n{}")
                .unwrap_err()
                .to_string(),
            "not a test state file (bad header)"
        );
        assert_eq!(
            F.decode::<0>([], b"test state v1 len=x crc32c=0\n"),
            Err(StateFileError::MissingField { field: "len" })
        );
    }

    #[test]
    fn writes_atomically() {
        let dir = std::env::temp_dir().join(format!("keyway-statefile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(
            !dir.join("state.tmp").exists(),
            "the temporary file was renamed"
        );
        let err = write_atomically(&dir.join("missing/state"), b"x").unwrap_err();
        assert!(err.path.ends_with("missing/state.tmp"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
