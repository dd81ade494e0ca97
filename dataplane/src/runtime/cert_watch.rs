//! A managed keyway re-reads its `[tls]` certificate files when a snapshot
//! arrives, if they changed on disk ([`CertWatch`]): certificates renewed
//! by a tool that cannot send `SIGHUP` (an ACME client's hook on another
//! host, a secrets agent writing files) reach new connections with the
//! next snapshot keyway-ctld pushes.
//!
//! The main thread, which handles signals, also looks at the live config's
//! version every 50 ms: when it changed (a snapshot was applied), it
//! compares each file's modification time and length with what they were
//! at the last load — a `stat` per file, nothing read. Only if one differs
//! is the settings file's `[tls]` loaded again, as `SIGHUP` does it
//! (`reload_managed_tls`): a load that fails keeps the certificate in use
//! and is logged once (the next attempt waits for the files to change
//! again).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::FileConfig;

/// A file's modification time and length (`None`: it could not be
/// `stat`ed).
type Stamp = Option<(Option<SystemTime>, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

/// The `[tls]` files of a managed keyway's settings file and their stamps
/// at the last load.
#[derive(Debug)]
pub(crate) struct CertWatch {
    /// The settings file (`--config`).
    config: PathBuf,
    files: Vec<(PathBuf, Stamp)>,
    /// The live config's version last seen.
    version: u64,
}

impl CertWatch {
    /// Watches the `[tls]` files `config` names now; `version` is the live
    /// config's.
    pub fn new(config: &Path, version: u64) -> CertWatch {
        let mut w = CertWatch {
            config: config.to_path_buf(),
            files: Vec::new(),
            version,
        };
        let now = w.stamp_now();
        w.loaded(now);
        w
    }

    /// The `[tls]` files' stamps now, to take *before* they are (re)loaded
    /// and hand to [`loaded`](Self::loaded) after: a file written while
    /// the load reads it then differs from its stamp at the next check
    /// (stamped after the load, its new content would never be loaded).
    /// The settings file is read again for their names, which a `SIGHUP`
    /// may have changed; `None`: it does not parse now (the next
    /// `SIGHUP`'s to report), the names known are kept.
    pub fn stamp_now(&self) -> Option<Vec<(PathBuf, Stamp)>> {
        let names = FileConfig::read(&self.config).ok().and_then(|f| f.tls)?;
        let mut v = vec![names.cert, names.key];
        v.extend(names.ca);
        Some(
            v.into_iter()
                .map(|p| {
                    let s = stamp(&p);
                    (p, s)
                })
                .collect(),
        )
    }

    /// The files were (re)loaded, or a load was tried, with `before` (from
    /// [`stamp_now`](Self::stamp_now), taken before the load) what the
    /// load saw: those are the stamps to compare with.
    pub fn loaded(&mut self, before: Option<Vec<(PathBuf, Stamp)>>) {
        match before {
            Some(files) => self.files = files,
            None => {
                for (p, s) in &mut self.files {
                    *s = stamp(p);
                }
            }
        }
    }

    /// Whether the live config is at a new `version` and a file changed
    /// since the last load: then the caller loads them again and calls
    /// [`loaded`](Self::loaded).
    pub fn due(&mut self, version: u64) -> bool {
        if version == self.version {
            return false;
        }
        self.version = version;
        self.files.iter().any(|(p, s)| stamp(p) != *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_only_on_a_new_version_with_a_changed_file() {
        let dir = std::env::temp_dir().join(format!("keyway-cert-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key, config) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("kw.toml"));
        std::fs::write(&cert, "one").unwrap();
        std::fs::write(&key, "key").unwrap();
        std::fs::write(
            &config,
            format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let mut w = CertWatch::new(&config, 1);
        assert_eq!(w.files.len(), 2, "cert and key, no CA");
        assert!(!w.due(2), "a new version, the files unchanged");
        std::fs::write(&cert, "second").unwrap();
        assert!(!w.due(2), "the files changed, but no new snapshot");
        assert!(w.due(3), "a new snapshot after the files changed");
        let before = w.stamp_now();
        w.loaded(before);
        assert!(!w.due(4), "loaded: unchanged since");
        // A file written while the load reads it: loaded again next time.
        let before = w.stamp_now();
        std::fs::write(&key, "a new key, written during the load").unwrap();
        w.loaded(before);
        assert!(w.due(5), "changed after the stamps the load saw");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
