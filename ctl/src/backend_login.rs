//! The backend logins keyway-ctld's own Redis connections use: health
//! checks and failover (`crate::health::probe`), the migration mover and
//! sweep (`crate::migrate::mover`), whose `MIGRATE`s also carry it as
//! `AUTH2` so that the target accepts the keys, and function copies
//! (`crate::functions`). All of these are maintenance (`REPLICAOF`,
//! `MIGRATE`, `SCAN`, `INFO`), so this is the privileged user of the data
//! planes' `[backend] admin_username`.
//!
//! One login per cluster: the `[cluster.NAME]` entries of `keyway-ctld
//! --backend-credentials FILE` ([`CredentialsFile`]), read at start and
//! again on `SIGHUP` ([`set_clusters`]), and for clusters not listed the
//! default of `--backend-username` / `--backend-password-file`
//! ([`set_default`]). [`for_cluster`] is what every connection asks. A
//! password is a [`Token`]: never printed, and errors about its file never
//! quote it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use serde::Deserialize;

use crate::auth::Token;

/// A backend user and its password.
#[derive(Debug)]
pub struct BackendLogin {
    /// The ACL user (`None`: `default`, as with `requirepass`).
    pub username: Option<String>,
    /// Its password.
    pub password: Token,
}

impl BackendLogin {
    /// `AUTH [user] password`'s arguments after `AUTH`.
    pub fn auth_args(&self) -> Vec<&[u8]> {
        let mut args: Vec<&[u8]> = Vec::with_capacity(2);
        if let Some(u) = &self.username {
            args.push(u.as_bytes());
        }
        args.push(self.password.expose().as_bytes());
        args
    }

    /// `MIGRATE`'s options that log in at the target (`AUTH2 user pass`, or
    /// `AUTH pass`).
    pub fn migrate_args(&self) -> Vec<&[u8]> {
        match &self.username {
            Some(u) => vec![
                b"AUTH2".as_slice(),
                u.as_bytes(),
                self.password.expose().as_bytes(),
            ],
            None => vec![b"AUTH".as_slice(), self.password.expose().as_bytes()],
        }
    }
}

/// `--backend-credentials FILE`: one login per cluster.
///
/// ```toml
/// [cluster.prod]
/// username = "keyway-admin"      # optional: `default` without it
/// password_file = "/etc/keyway/prod-backend.pass"
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    /// Logins by cluster name.
    #[serde(default)]
    pub cluster: BTreeMap<String, ClusterLogin>,
}

/// One `[cluster.NAME]` of [`CredentialsFile`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterLogin {
    /// The ACL user (none: `default`, as with `requirepass`).
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding its password (at most 4 KiB, trimmed).
    pub password_file: PathBuf,
}

/// Why `--backend-credentials` could not be read. Never quotes a password.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape (position and
    /// message only: the `toml` crate's quoted line is left out).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A cluster's password file could not be read.
    #[error("{path}: cluster {cluster:?}: {why}")]
    Password {
        /// The credentials file.
        path: PathBuf,
        /// The cluster.
        cluster: String,
        /// Why (names the password file, never its content).
        why: String,
    },
}

/// Largest credentials file.
const MAX_FILE: u64 = 1 << 20;

impl CredentialsFile {
    /// Reads `path` and every password file it names; warnings (a password
    /// file others may read) are returned to be logged.
    pub fn load(path: &Path) -> Result<(ClusterLogins, Vec<String>), CredentialsError> {
        use std::io::Read;
        let read = |source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(read)?
            .take(MAX_FILE)
            .read_to_string(&mut text)
            .map_err(read)?;
        let file: CredentialsFile = toml::from_str(&text).map_err(|e| CredentialsError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        let mut logins = HashMap::with_capacity(file.cluster.len());
        let mut warnings = Vec::new();
        for (cluster, l) in file.cluster {
            let (password, warning) =
                Token::read_file(&l.password_file).map_err(|e| CredentialsError::Password {
                    path: path.to_path_buf(),
                    cluster: cluster.clone(),
                    why: e.to_string(),
                })?;
            warnings.extend(warning);
            logins.insert(
                cluster,
                Arc::new(BackendLogin {
                    username: l.username,
                    password,
                }),
            );
        }
        Ok((logins, warnings))
    }
}

/// Logins by cluster name.
pub type ClusterLogins = HashMap<String, Arc<BackendLogin>>;

/// The process's logins: the default and the per-cluster ones.
#[derive(Debug, Default)]
struct Logins {
    default: Option<Arc<BackendLogin>>,
    clusters: ClusterLogins,
}

fn logins() -> &'static RwLock<Logins> {
    static LOGINS: OnceLock<RwLock<Logins>> = OnceLock::new();
    LOGINS.get_or_init(Default::default)
}

/// Sets the login of clusters without one of their own.
pub fn set_default(login: BackendLogin) {
    let mut l = logins().write().unwrap_or_else(|p| p.into_inner());
    l.default = Some(Arc::new(login));
}

/// Replaces the per-cluster logins (`--backend-credentials`, at start and
/// on `SIGHUP`); connections opened from now on use them.
pub fn set_clusters(clusters: ClusterLogins) {
    let mut l = logins().write().unwrap_or_else(|p| p.into_inner());
    l.clusters = clusters;
}

/// The login of `cluster`'s servers: its own, else the default, if any.
pub fn for_cluster(cluster: &str) -> Option<Arc<BackendLogin>> {
    let l = logins().read().unwrap_or_else(|p| p.into_inner());
    l.clusters.get(cluster).or(l.default.as_ref()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_file_names_clusters_and_never_quotes_passwords() {
        let dir = std::env::temp_dir().join(format!("kw-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pass = dir.join("a.pass");
        std::fs::write(&pass, "s3cret-a\n").unwrap();
        let file = dir.join("creds.toml");
        std::fs::write(
            &file,
            format!(
                "[cluster.a]\nusername = \"admin\"\npassword_file = \"{}\"\n",
                pass.display()
            ),
        )
        .unwrap();
        let (got, _) = CredentialsFile::load(&file).unwrap();
        let a = &got["a"];
        assert_eq!(a.username.as_deref(), Some("admin"));
        assert_eq!(a.password.expose(), "s3cret-a");
        assert!(!format!("{a:?}").contains("s3cret-a"), "{a:?}");

        std::fs::write(
            &file,
            "[cluster.a]\npassword_file = \"x\"\npassword = \"s3cret-b\"\n",
        )
        .unwrap();
        let err = CredentialsFile::load(&file).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        assert!(!err.contains("s3cret-b"), "{err}");
        std::fs::write(&file, "[cluster.a]\npassword_file = \"/nonexistent/p\"\n").unwrap();
        let err = CredentialsFile::load(&file).unwrap_err().to_string();
        assert!(
            err.contains("cluster \"a\"") && err.contains("/nonexistent/p"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cluster_without_its_own_login_gets_the_default() {
        set_default(BackendLogin {
            username: None,
            password: Token::new("default-pw", "test").unwrap(),
        });
        set_clusters(HashMap::from([(
            "mine".to_string(),
            Arc::new(BackendLogin {
                username: Some("u".into()),
                password: Token::new("mine-pw", "test").unwrap(),
            }),
        )]));
        assert_eq!(for_cluster("mine").unwrap().password.expose(), "mine-pw");
        assert_eq!(
            for_cluster("other").unwrap().password.expose(),
            "default-pw"
        );
    }
}
