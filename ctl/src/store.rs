//! Where ctld keeps its state. The embedded default is a single local file:
//! written to a temporary file, fsynced, renamed over the old one, and the
//! directory fsynced, so a crash leaves either the old or the new state. The
//! file starts with a header carrying the body's length and CRC32C; a file
//! that does not check out is refused with an error, never replaced; nor is
//! one whose content breaks a rule of the model (`State::validate`, the
//! same check every change passes). An exclusive lock keeps two daemons off
//! one file.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use keyway_capnp::statefile::{self, write_atomically, StateFileError};

use crate::model::{State, StateError};

/// The file's format (`keyway_capnp::statefile`): no header fields; the
/// body is the state as JSON, followed by a newline.
const FORMAT: statefile::Format = statefile::Format {
    magic: "keyway-ctld state v1",
    what: "keyway-ctld state",
};

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Writing the file atomically failed.
    #[error(transparent)]
    Write(#[from] statefile::WriteError),
    /// The file exists but is not a state keyway-ctld wrote.
    #[error(
        "{path} is corrupt ({reason}); refusing to start rather than replace it. \
         Restore it from a backup, or move it away to start with an empty state."
    )]
    Corrupt {
        /// The file.
        path: String,
        /// What does not check out.
        reason: CorruptReason,
    },
    /// The file checks out but its content breaks a rule of the model.
    #[error(
        "{path} holds a state that is not valid: {reason}; refusing to start rather than \
         serve it. Restore it from a backup, or move it away to start with an empty state."
    )]
    Invalid {
        /// The file.
        path: String,
        /// The cluster (or data plane) and the rule (a [`StateError`], or
        /// from etcd a record that is not JSON).
        reason: String,
    },
    /// Another process holds the store.
    #[error("{path} is in use by another keyway-ctld")]
    Locked {
        /// The file.
        path: String,
    },
    /// The store spec is not understood.
    #[error("unsupported store {0:?}: use file:PATH or etcd:http://HOST:PORT[,http://HOST:PORT…]")]
    Unsupported(String),
    /// A compare-and-swap failed: what this ctld last read was replaced by
    /// another writer, or it no longer holds the election. Nothing was
    /// written; this ctld steps down and whoever is active loads the state
    /// afresh.
    #[error("conflict: {0}; nothing was written and this keyway-ctld steps down")]
    Conflict(String),
    /// etcd could not be used (unreachable, too slow, refused the request).
    #[error("etcd: {0}")]
    Etcd(String),
}

/// Why a state file's bytes are not a state.
#[derive(Debug, thiserror::Error)]
pub enum CorruptReason {
    /// The header, length or checksum does not check out.
    #[error(transparent)]
    File(#[from] StateFileError),
    /// The checksum is right but the body is not a state.
    #[error("unreadable body: {0}")]
    Body(#[from] serde_json::Error),
}

/// A place ctld persists its state.
pub trait Store: Send {
    /// Persists `state` durably before returning.
    fn save(&mut self, state: &State) -> Result<(), StoreError>;
    /// A short description for logs.
    fn describe(&self) -> String;
    /// Which kind it is, for `keyway_ctld_store_write_duration_seconds`.
    fn kind(&self) -> crate::metrics::StoreKind {
        crate::metrics::StoreKind::File
    }
}

/// Opens the store named by `spec` (`file:PATH`) and loads its state. The
/// etcd store is opened per term by the election (`crate::etcd`).
pub fn open(spec: &str) -> Result<(Box<dyn Store>, State), StoreError> {
    match spec.strip_prefix("file:") {
        Some(path) if !path.is_empty() => {
            let (s, state) = FileStore::open(Path::new(path))?;
            Ok((Box::new(s), state))
        }
        _ => Err(StoreError::Unsupported(spec.to_string())),
    }
}

/// The embedded file store.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    /// Held open for the lock.
    _lock: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl FileStore {
    /// Locks and loads `path` (a missing file is an empty state).
    pub fn open(path: &Path) -> Result<(FileStore, State), StoreError> {
        let lock_path = path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StoreError::Locked {
                path: path.display().to_string(),
            });
        }
        let state = match std::fs::read(path) {
            Ok(bytes) => decode(&bytes).map_err(|reason| StoreError::Corrupt {
                path: path.display().to_string(),
                reason,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(path)(e)),
        };
        state
            .validate()
            .map_err(|e: StateError| StoreError::Invalid {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok((
            FileStore {
                path: path.to_path_buf(),
                _lock: lock,
            },
            state,
        ))
    }
}

/// The file's bytes for `state`.
pub fn encode(state: &State) -> Vec<u8> {
    let body = serde_json::to_vec_pretty(state).expect("the state serializes");
    let mut out = FORMAT.encode(&[], &body);
    out.push(b'\n');
    out
}

/// The state in a file's bytes, or why they are not one.
pub fn decode(bytes: &[u8]) -> Result<State, CorruptReason> {
    let ([], body) = FORMAT.decode([], bytes)?;
    Ok(serde_json::from_slice(body)?)
}

impl Store for FileStore {
    fn save(&mut self, state: &State) -> Result<(), StoreError> {
        Ok(write_atomically(&self.path, &encode(state))?)
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cluster, Group, Resolved};

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("keyway-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn state() -> State {
        let mut s = State::default();
        let g = Group {
            name: "g1".into(),
            master: "127.0.0.1:7001".into(),
            ..Group::default()
        };
        s.clusters.insert(
            "c".into(),
            Cluster::create("c", 1024, vec![g], 30_000, &Resolved::none()).unwrap(),
        );
        s
    }

    #[test]
    fn saves_and_loads_and_locks() {
        let d = dir("rt");
        let path = d.join("state");
        let (mut store, empty) = FileStore::open(&path).unwrap();
        assert_eq!(empty, State::default());
        store.save(&state()).unwrap();
        assert!(matches!(
            FileStore::open(&path),
            Err(StoreError::Locked { .. })
        ));
        drop(store);
        let (_, loaded) = FileStore::open(&path).unwrap();
        assert_eq!(loaded, state());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn corruption_is_detected_and_refused() {
        let good = encode(&state());
        let mut flipped = good.clone();
        let at = flipped.len() - 20;
        flipped[at] ^= 0x01;
        assert!(matches!(
            decode(&flipped),
            Err(CorruptReason::File(StateFileError::ChecksumMismatch))
        ));
        assert!(matches!(
            decode(&good[..good.len() / 2]),
            Err(CorruptReason::File(StateFileError::Truncated { .. }))
        ));
        assert_eq!(decode(b"{}").unwrap_err().to_string(), "no header line");
        assert_eq!(
            decode(b"something else\n{}").unwrap_err().to_string(),
            "not a keyway-ctld state file (bad header)"
        );
        let garbage = FORMAT.encode(&[], b"[1]");
        assert!(decode(&garbage)
            .unwrap_err()
            .to_string()
            .starts_with("unreadable body: "));
        let d = dir("corrupt");
        let path = d.join("state");
        std::fs::write(&path, &flipped).unwrap();
        let err = FileStore::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("corrupt (checksum mismatch)") && err.contains("refusing"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            flipped,
            "a corrupt file is never replaced"
        );
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_well_formed_file_with_invalid_content_is_refused() {
        let mut bad = state();
        bad.clusters.get_mut("c").unwrap().slot_count = 0;
        let bytes = encode(&bad);
        assert!(decode(&bytes).is_ok(), "the checksum is valid");
        let d = dir("invalid");
        let path = d.join("state");
        std::fs::write(&path, &bytes).unwrap();
        let err = FileStore::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("cluster \"c\": slot count 0 is not a power of two")
                && err.contains("refusing to start"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "never replaced");
        let _ = std::fs::remove_dir_all(d);
    }

    /// The file an empty state was saved to before the format moved to
    /// `keyway_capnp::statefile` (CRC32C of the body computed independently).
    #[test]
    fn loads_a_file_written_by_the_earlier_code() {
        let old = b"keyway-ctld state v1 len=15 crc32c=a9f2a01b\n{\"clusters\":{}}\n";
        assert_eq!(decode(old).unwrap(), State::default());
        let d = dir("old");
        let path = d.join("state");
        std::fs::write(&path, old).unwrap();
        let (mut store, loaded) = FileStore::open(&path).unwrap();
        assert_eq!(loaded, State::default());
        store.save(&loaded).unwrap();
        let again = std::fs::read(&path).unwrap();
        assert!(
            again.starts_with(b"keyway-ctld state v1 len="),
            "the same header"
        );
        assert_eq!(decode(&again).unwrap(), loaded);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn specs() {
        assert!(matches!(open("nfs:x"), Err(StoreError::Unsupported(_))));
        assert!(matches!(open("file:"), Err(StoreError::Unsupported(_))));
    }
}
