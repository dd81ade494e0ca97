//! Backend credentials (`[backend] username`, `password_file` |
//! `password_env`, their `admin_*` twins, and the same keys in a
//! `[[group]]`): read when the config is validated — at start and on every
//! reload, so `SIGHUP` re-reads the files and the environment — and turned
//! into the `AUTH` commands keyway sends first on each backend connection.
//!
//! Two identities (see README, "Backend authentication"): the *client*
//! login, which every backend connection authenticates as when it opens
//! (a restricted ACL user whose rules `engine::backend_acl` derives from
//! keyway's own policy), and the *admin* login, which keyway switches to
//! around the few commands it runs on purpose that the restricted user may
//! not (`FLUSHALL`, `KEYS`, `CONFIG`, `MIGRATE` of its key moves, …).
//!
//! A password is never shown: [`Secret`]'s and [`Login`]'s `Debug` hide
//! it, errors about a password file never quote its content, and nothing
//! here is ever part of `/table`, `INFO` or `CONFIG GET`.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use keyway_protocol::resp::encode;

use super::{invalid, ConfigError};

/// The largest password file accepted.
pub const MAX_SECRET_FILE: usize = 4096;

/// A password: bytes, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<[u8]>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

impl Secret {
    /// A password from its text: one trailing newline (`\n` or `\r\n`)
    /// dropped, not empty, at most [`MAX_SECRET_FILE`] bytes. `what` names
    /// the source for the error.
    pub fn new(mut bytes: &[u8], what: &str) -> Result<Secret, ConfigError> {
        if let Some(rest) = bytes.strip_suffix(b"\n") {
            bytes = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        if bytes.is_empty() {
            return Err(invalid(format!("{what}: the password is empty")));
        }
        if bytes.len() > MAX_SECRET_FILE {
            return Err(invalid(format!(
                "{what}: the password is longer than {MAX_SECRET_FILE} bytes"
            )));
        }
        Ok(Secret(bytes.into()))
    }

    /// Reads a password file: at most [`MAX_SECRET_FILE`] bytes (plus a
    /// newline). The second value is a warning to log when others than its
    /// owner may read it.
    pub fn read_file(path: &Path, key: &str) -> Result<(Secret, Option<String>), ConfigError> {
        let shown = path.display().to_string();
        let io = |e: std::io::Error| invalid(format!("{key} {shown}: {e}"));
        let f = std::fs::File::open(path).map_err(io)?;
        let meta = f.metadata().map_err(io)?;
        let mut bytes = Vec::new();
        f.take(MAX_SECRET_FILE as u64 + 3)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let secret = Secret::new(&bytes, &format!("{key} {shown}"))?;
        let mode = meta.permissions().mode();
        let warning = (mode & 0o044 != 0).then(|| {
            format!(
                "{key} {shown} is readable by its group or by others (mode {:o}); chmod 600 it",
                mode & 0o777
            )
        });
        Ok((secret, warning))
    }

    /// The password, to send it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// A backend user and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The ACL user (`None`: Redis's `default` user, as `AUTH password`
    /// with `requirepass`).
    pub username: Option<Arc<str>>,
    password: Secret,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

impl Login {
    /// A login from its parts.
    pub fn new(username: Option<&str>, password: Secret) -> Login {
        Login {
            username: username.map(Arc::from),
            password,
        }
    }

    /// The user as messages name it.
    pub fn shown_user(&self) -> &str {
        self.username.as_deref().unwrap_or("default")
    }

    /// The password.
    pub fn password(&self) -> &Secret {
        &self.password
    }

    /// `AUTH [username] password`, encoded.
    pub fn auth_command(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.username {
            Some(u) => {
                encode::array_header(&mut out, 3);
                encode::bulk(&mut out, b"AUTH");
                encode::bulk(&mut out, u.as_bytes());
            }
            None => {
                encode::array_header(&mut out, 2);
                encode::bulk(&mut out, b"AUTH");
            }
        }
        encode::bulk(&mut out, self.password.expose());
        out
    }

    /// `MIGRATE`'s options that make the target accept it (`AUTH2 user
    /// pass`, or `AUTH pass`), encoded, and how many arguments they are.
    pub fn migrate_options(&self) -> (usize, Vec<u8>) {
        let mut out = Vec::new();
        let n = match &self.username {
            Some(u) => {
                encode::bulk(&mut out, b"AUTH2");
                encode::bulk(&mut out, u.as_bytes());
                3
            }
            None => {
                encode::bulk(&mut out, b"AUTH");
                2
            }
        };
        encode::bulk(&mut out, self.password.expose());
        (n, out)
    }
}

/// The logins for one group's servers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupLogins {
    /// What every backend connection authenticates as (none: no `AUTH`).
    pub client: Option<Arc<Login>>,
    /// What keyway switches to around its maintenance commands (none: the
    /// client login does them too).
    pub admin: Option<Arc<Login>>,
}

impl GroupLogins {
    /// The login maintenance commands run as: the admin login, else the
    /// client one.
    pub fn maintenance(&self) -> Option<&Arc<Login>> {
        self.admin.as_ref().or(self.client.as_ref())
    }
}

/// Every group's logins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendAuth {
    /// `[backend]`'s, for groups without their own.
    pub default: GroupLogins,
    /// Groups with keys of their own, by name.
    pub groups: HashMap<String, GroupLogins>,
}

impl BackendAuth {
    /// The logins of group `name`.
    pub fn of(&self, name: &str) -> &GroupLogins {
        self.groups.get(name).unwrap_or(&self.default)
    }
}

/// The credential keys of one section, as written.
#[derive(Debug, Clone, Copy)]
pub(super) struct CredentialKeys<'a> {
    /// The section, for errors (`backend`, `group "g1"`).
    pub section: &'a str,
    pub username: Option<&'a str>,
    pub password_file: Option<&'a Path>,
    pub password_env: Option<&'a str>,
    pub admin_username: Option<&'a str>,
    pub admin_password_file: Option<&'a Path>,
    pub admin_password_env: Option<&'a str>,
}

impl CredentialKeys<'_> {
    /// Whether any key is given.
    pub fn any(&self) -> bool {
        self.username.is_some()
            || self.password_file.is_some()
            || self.password_env.is_some()
            || self.admin_username.is_some()
            || self.admin_password_file.is_some()
            || self.admin_password_env.is_some()
    }

    /// Reads the passwords; warnings (file modes) go to `warnings`.
    pub fn resolve(&self, warnings: &mut Vec<String>) -> Result<GroupLogins, ConfigError> {
        let s = self.section;
        let client = login(
            (s, ""),
            self.username,
            self.password_file,
            self.password_env,
            warnings,
        )?;
        let admin = login(
            (s, "admin_"),
            self.admin_username,
            self.admin_password_file,
            self.admin_password_env,
            warnings,
        )?;
        if admin.is_some() && client.is_none() {
            return Err(invalid(format!(
                "{s}: admin credentials need client credentials too (username and \
                 password_file or password_env): the admin login is only switched to \
                 around keyway's maintenance commands"
            )));
        }
        Ok(GroupLogins {
            client: client.map(Arc::new),
            admin: admin.map(Arc::new),
        })
    }
}

fn login(
    (section, prefix): (&str, &str),
    username: Option<&str>,
    file: Option<&Path>,
    env: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Option<Login>, ConfigError> {
    let key = |k: &str| format!("{section}.{prefix}{k}");
    if let Some(u) = username {
        if u.is_empty() || u.len() > 256 || !u.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(format!(
                "{}: 1 to 256 printable characters without spaces",
                key("username")
            )));
        }
    }
    let password = match (file, env) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "{} and {} are exclusive: give one",
                key("password_file"),
                key("password_env")
            )))
        }
        (Some(path), None) => {
            let (secret, warning) = Secret::read_file(path, &key("password_file"))?;
            warnings.extend(warning);
            secret
        }
        (None, Some(var)) => {
            let what = format!("{} {var}", key("password_env"));
            let value = std::env::var_os(var)
                .ok_or_else(|| invalid(format!("{what}: the variable is not set")))?;
            Secret::new(
                std::os::unix::ffi::OsStrExt::as_bytes(value.as_os_str()),
                &what,
            )?
        }
        (None, None) if username.is_some() => {
            return Err(invalid(format!(
                "{} needs {} or {}",
                key("username"),
                key("password_file"),
                key("password_env")
            )))
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(Login::new(username, password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(section: &'a str) -> CredentialKeys<'a> {
        CredentialKeys {
            section,
            username: None,
            password_file: None,
            password_env: None,
            admin_username: None,
            admin_password_file: None,
            admin_password_env: None,
        }
    }

    #[test]
    fn a_password_drops_one_newline_and_never_shows() {
        let s = Secret::new(b"p@ss word\r\n", "x").unwrap();
        assert_eq!(s.expose(), b"p@ss word");
        assert_eq!(Secret::new(b"pass\n\n", "x").unwrap().expose(), b"pass\n");
        assert!(Secret::new(b"\n", "x").is_err());
        assert!(Secret::new(&[b'a'; MAX_SECRET_FILE + 1], "x").is_err());
        let login = Login::new(Some("kw"), s);
        let shown = format!("{login:?}");
        assert!(!shown.contains("p@ss"), "{shown}");
        assert!(shown.contains("kw"), "{shown}");
        assert_eq!(
            login.auth_command(),
            b"*3\r\n$4\r\nAUTH\r\n$2\r\nkw\r\n$9\r\np@ss word\r\n"
        );
        let (n, opts) = login.migrate_options();
        assert_eq!(n, 3);
        assert_eq!(opts, b"$5\r\nAUTH2\r\n$2\r\nkw\r\n$9\r\np@ss word\r\n");
        let default = Login::new(None, Secret::new(b"pw", "x").unwrap());
        assert_eq!(default.auth_command(), b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n");
        assert_eq!(default.migrate_options().0, 2);
    }

    #[test]
    fn files_and_variables_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("keyway-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pass");
        std::fs::write(&file, "from-file\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::env::set_var("KEYWAY_TEST_SECRET_A", "from-env");
        let mut w = Vec::new();
        let logins = CredentialKeys {
            username: Some("kw"),
            password_file: Some(&file),
            admin_username: Some("kwadmin"),
            admin_password_env: Some("KEYWAY_TEST_SECRET_A"),
            ..keys("backend")
        }
        .resolve(&mut w)
        .unwrap();
        assert_eq!(logins.client.unwrap().password().expose(), b"from-file");
        assert_eq!(logins.admin.unwrap().password().expose(), b"from-env");
        assert!(w[0].contains("chmod 600"), "{w:?}");
        assert!(!w[0].contains("from-file"));

        let err = |k: CredentialKeys<'_>| k.resolve(&mut Vec::new()).unwrap_err().to_string();
        let e = err(CredentialKeys {
            password_file: Some(&file),
            password_env: Some("KEYWAY_TEST_SECRET_A"),
            ..keys("backend")
        });
        assert!(e.contains("exclusive"), "{e}");
        let e = err(CredentialKeys {
            username: Some("kw"),
            ..keys("group \"g1\"")
        });
        assert!(e.contains("group \"g1\".username needs"), "{e}");
        let e = err(CredentialKeys {
            password_env: Some("KEYWAY_TEST_SECRET_UNSET"),
            ..keys("backend")
        });
        assert!(e.contains("not set"), "{e}");
        let e = err(CredentialKeys {
            password_file: Some(&dir.join("missing")),
            ..keys("backend")
        });
        assert!(e.contains("backend.password_file"), "{e}");
        let e = err(CredentialKeys {
            admin_password_file: Some(&file),
            ..keys("backend")
        });
        assert!(e.contains("need client credentials"), "{e}");
        let e = err(CredentialKeys {
            username: Some("a b"),
            password_file: Some(&file),
            ..keys("backend")
        });
        assert!(e.contains("printable"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
