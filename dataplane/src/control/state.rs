//! What a managed data plane keeps on disk (`--state-dir`): its id, and its
//! last snapshot with the lease it held, so that after a restart it serves
//! from that snapshot for what remains of the lease even if keyway-ctld is
//! unreachable. The lease end is stored as wall-clock time (the only clock
//! that survives a restart). Written atomically; the checksum covers the
//! lease as well as the snapshot (a damaged lease could otherwise let a data
//! plane serve past it). A file that does not check out is ignored with a
//! warning (keyway-ctld will send the snapshot again).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyway_capnp::snapshot::Snapshot;

const MAGIC: &str = "keyway data plane state v2";

/// The checksum of a saved state: the lease end, then the snapshot.
fn checksum(lease_until_ms: u64, body: &[u8]) -> u32 {
    let mut digest = CRC.digest();
    digest.update(&lease_until_ms.to_le_bytes());
    digest.update(body);
    digest.finalize()
}
static CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
        let body = snapshot.encode();
        let lease = unix_ms(lease_until);
        let mut bytes = format!(
            "{MAGIC} lease_until_ms={lease} len={} crc32c={:08x}\n",
            body.len(),
            checksum(lease, &body)
        )
        .into_bytes();
        bytes.extend_from_slice(&body);
        write_atomically(&self.0.join("snapshot"), &bytes)
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

fn decode(bytes: &[u8]) -> Result<(Snapshot, u64), String> {
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or("no header")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "bad header")?;
    let rest = match header.strip_prefix(MAGIC) {
        Some(rest) => rest,
        None if header.starts_with("keyway data plane state v1") => {
            return Err(
                "written by an older keyway, whose checksum does not cover the lease".into(),
            )
        }
        None => return Err("bad header".into()),
    };
    let field = |name: &str| rest.split_whitespace().find_map(|f| f.strip_prefix(name));
    let lease = field("lease_until_ms=")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or("no lease in header")?;
    let len = field("len=")
        .and_then(|v| v.parse::<usize>().ok())
        .ok_or("no length in header")?;
    let crc = field("crc32c=")
        .and_then(|v| u32::from_str_radix(v, 16).ok())
        .ok_or("no checksum in header")?;
    let body = bytes.get(nl + 1..nl + 1 + len).ok_or("truncated")?;
    if checksum(lease, body) != crc {
        return Err("checksum mismatch".into());
    }
    let s = Snapshot::decode(body).map_err(|e| e.to_string())?;
    s.validate()?;
    Ok((s, lease))
}

/// Writes a file so that a crash leaves the old or the new content.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_capnp::snapshot::{Group, SlotRange};

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
        }
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
