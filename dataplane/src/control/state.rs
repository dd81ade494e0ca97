//! What a managed data plane keeps on disk (`--state-dir`): its id, and its
//! last snapshot with the lease it held, so that after a restart it serves
//! from that snapshot for what remains of the lease even if keyway-ctld is
//! unreachable. The lease end is stored as wall-clock time (the only clock
//! that survives a restart). Written atomically; the checksum covers the
//! lease as well as the snapshot (a damaged lease could otherwise let a data
//! plane serve past it). A file that does not check out is ignored with a
//! warning (keyway-ctld will send the snapshot again).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use keyway_capnp::snapshot::{Snapshot, SnapshotError};
use keyway_capnp::statefile::{self, write_atomically, StateFileError};
use keyway_capnp::DecodeError;

/// Milliseconds since the Unix epoch (the one definition, shared with ctld).
pub use keyway_capnp::clock::unix_ms;

/// The file's format; the checksum covers the lease end, then the snapshot.
const FORMAT: statefile::Format = statefile::Format {
    magic: "keyway data plane state v2",
    what: "keyway data plane state",
};

/// The header field holding the lease end (wall-clock milliseconds).
const LEASE: &str = "lease_until_ms";

/// Why a saved snapshot is ignored.
#[derive(Debug, thiserror::Error)]
enum StateError {
    /// Written by a keyway before the checksum covered the lease.
    #[error("written by an older keyway, whose checksum does not cover the lease")]
    OlderFormat,
    /// The file does not check out.
    #[error(transparent)]
    File(#[from] StateFileError),
    /// The checksum is right but the snapshot does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The snapshot decodes but breaks a rule.
    #[error(transparent)]
    Invalid(#[from] SnapshotError),
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir(pub PathBuf);

impl StateDir {
    /// Creates the directory if needed.
    pub fn open(path: &Path) -> std::io::Result<StateDir> {
        std::fs::create_dir_all(path)?;
        Ok(StateDir(path.to_path_buf()))
    }

    /// This data plane's id: the one stored here, else `fallback` (stored).
    pub fn id(&self, fallback: &str) -> std::io::Result<String> {
        let path = self.0.join("id");
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
            _ => {
                write_atomically(&path, format!("{fallback}\n").as_bytes())?;
                Ok(fallback.to_string())
            }
        }
    }

    /// Saves a snapshot and the wall-clock end of its lease.
    pub fn save(&self, snapshot: &Snapshot, lease_until: SystemTime) -> std::io::Result<()> {
        let bytes = FORMAT.encode(&[(LEASE, unix_ms(lease_until))], &snapshot.encode());
        Ok(write_atomically(&self.0.join("snapshot"), &bytes)?)
    }

    /// The saved snapshot and how much of its lease is left (zero if it has
    /// ended), if a valid one is saved.
    pub fn load(&self) -> Option<(Snapshot, Duration)> {
        let path = self.0.join("snapshot");
        let bytes = std::fs::read(&path).ok()?;
        match decode(&bytes) {
            Ok((snapshot, lease_until_ms)) => {
                let now = unix_ms(SystemTime::now());
                Some((
                    snapshot,
                    Duration::from_millis(lease_until_ms.saturating_sub(now)),
                ))
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), "ignoring the saved snapshot: {why}");
                None
            }
        }
    }
}

fn decode(bytes: &[u8]) -> Result<(Snapshot, u64), StateError> {
    if bytes.starts_with(b"keyway data plane state v1") {
        return Err(StateError::OlderFormat);
    }
    let ([lease], body) = FORMAT.decode([LEASE], bytes)?;
    let s = Snapshot::decode(body)?;
    s.validate()?;
    Ok((s, lease))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_capnp::snapshot::{Group, SlotRange};
    use std::time::UNIX_EPOCH;

    fn snapshot() -> Snapshot {
        Snapshot {
            cluster: "c".into(),
            version: 4,
            slot_count: 16,
            groups: vec![Group {
                name: "g".into(),
                master: "127.0.0.1:1".into(),
                ..Group::default()
            }],
            slot_ranges: vec![SlotRange {
                first: 0,
                last: 15,
                group: 0,
            }],
            migrations: vec![],
            lease_millis: 5000,
            users: vec![],
        }
    }

    /// CRC32C bit by bit: an oracle independent of the `crc` crate.
    fn crc32c(parts: &[&[u8]]) -> u32 {
        let mut crc = !0u32;
        for b in parts.iter().flat_map(|p| p.iter()) {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ if crc & 1 == 1 { 0x82F6_3B78 } else { 0 };
            }
        }
        !crc
    }

    /// A file laid out as the data plane wrote it before the state-file
    /// format moved to `keyway_capnp::statefile` still loads.
    #[test]
    fn loads_a_file_written_by_the_earlier_code() {
        let dir = std::env::temp_dir().join(format!("keyway-dpstate-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = StateDir::open(&dir).unwrap();
        let lease = unix_ms(SystemTime::now() + Duration::from_secs(60));
        let body = snapshot().encode();
        let mut bytes = format!(
            "keyway data plane state v2 lease_until_ms={lease} len={} crc32c={:08x}\n",
            body.len(),
            crc32c(&[&lease.to_le_bytes(), &body])
        )
        .into_bytes();
        bytes.extend_from_slice(&body);
        std::fs::write(dir.join("snapshot"), &bytes).unwrap();
        let (got, left) = s.load().expect("the earlier file loads");
        assert_eq!(got, snapshot());
        assert!(left > Duration::from_secs(50), "{left:?}");
        s.save(&snapshot(), UNIX_EPOCH + Duration::from_millis(lease))
            .unwrap();
        assert_eq!(
            std::fs::read(dir.join("snapshot")).unwrap(),
            bytes,
            "and is written byte for byte as before"
        );
        std::fs::write(dir.join("snapshot"), b"keyway data plane state v1 len=0\n").unwrap();
        assert!(matches!(
            decode(b"keyway data plane state v1 len=0\n"),
            Err(StateError::OlderFormat)
        ));
        assert!(s.load().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn saves_loads_and_ignores_damage() {
        let dir = std::env::temp_dir().join(format!("keyway-dpstate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = StateDir::open(&dir).unwrap();
        assert_eq!(s.id("dp-a").unwrap(), "dp-a");
        assert_eq!(s.id("dp-b").unwrap(), "dp-a", "the stored id wins");
        assert!(s.load().is_none());
        s.save(&snapshot(), SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        let (got, left) = s.load().unwrap();
        assert_eq!(got, snapshot());
        assert!(left > Duration::from_secs(50) && left <= Duration::from_secs(60));
        s.save(&snapshot(), SystemTime::now() - Duration::from_secs(1))
            .unwrap();
        assert_eq!(s.load().unwrap().1, Duration::ZERO);
        let path = dir.join("snapshot");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(s.load().is_none());
        // The lease is covered too: pushing it a day further is detected.
        s.save(&snapshot(), SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        let text = std::fs::read(&path).unwrap();
        let nl = text.iter().position(|&b| b == b'\n').unwrap();
        let header = String::from_utf8(text[..nl].to_vec()).unwrap();
        let lease: u64 = header
            .split_whitespace()
            .find_map(|f| f.strip_prefix("lease_until_ms="))
            .unwrap()
            .parse()
            .unwrap();
        let forged = header.replace(
            &format!("lease_until_ms={lease}"),
            &format!("lease_until_ms={}", lease + 86_400_000),
        );
        let mut bytes = forged.into_bytes();
        bytes.extend_from_slice(&text[nl..]);
        std::fs::write(&path, &bytes).unwrap();
        assert!(s.load().is_none(), "a lease changed on disk is refused");
        let _ = std::fs::remove_dir_all(dir);
    }
}
