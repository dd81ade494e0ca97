//! The backend login keyway-ctld's own Redis connections use: health
//! checks and failover (`crate::health::probe`), and the migration mover and
//! sweep (`crate::migrate::mover`), whose `MIGRATE`s also carry it as
//! `AUTH2` so that the target accepts the keys. All of these are
//! maintenance (`REPLICAOF`, `MIGRATE`, `SCAN`, `INFO`), so this is the
//! privileged user of the data planes' `[backend] admin_username`.
//!
//! Set once at start from `keyway-ctld --backend-username` and
//! `--backend-password-file` ([`set`]); one login for every server of every
//! cluster. The password is a [`Token`]: never printed, and errors about
//! its file never quote it.

use std::sync::OnceLock;

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

static LOGIN: OnceLock<BackendLogin> = OnceLock::new();

/// Sets the login for the process (the first call wins).
pub fn set(login: BackendLogin) {
    let _ = LOGIN.set(login);
}

/// The login, if one was set.
pub fn get() -> Option<&'static BackendLogin> {
    LOGIN.get()
}
