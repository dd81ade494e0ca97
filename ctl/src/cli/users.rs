//! `keywayctl users set CLUSTER --file users.toml` and `keywayctl users list
//! CLUSTER`: a cluster's client users, which its data planes use in place of
//! their config files' `[[user]]`s. The file has keyway's own `[[user]]`
//! tables (`name`, `rules`); clear text passwords in it are hashed by
//! keyway-ctld before anything is stored, and listed as hashes.

use std::io::Read;
use std::path::PathBuf;

use clap::Subcommand;
use serde::Deserialize;

use super::{emit, table, CliError};
use crate::client::Client;
use crate::model::ClientUser;
use crate::wire::ClusterUsers;

/// The largest users file read (ctld's body limit for users,
/// `api::MAX_CLUSTER_BODY`; the CLI does not depend on the server's code).
const MAX_FILE: u64 = 8 << 20;

/// `keywayctl users …`.
#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// Replace a cluster's client users with a file's `[[user]]` tables
    /// (none: the data planes go back to their config files' users).
    Set {
        /// Cluster name.
        cluster: String,
        /// A TOML file of `[[user]]` tables with `name` and `rules`, as in
        /// keyway's config.
        #[arg(long, short)]
        file: PathBuf,
    },
    /// List a cluster's client users and their rules (passwords as hashes).
    List {
        /// Cluster name.
        cluster: String,
    },
}

/// A users file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<ClientUser>,
}

fn read(path: &PathBuf) -> Result<Vec<ClientUser>, CliError> {
    let err = |source| CliError::Read {
        path: path.clone(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(err)?;
    if text.len() as u64 > MAX_FILE {
        return Err(CliError::UsersFile(format!(
            "{}: larger than {MAX_FILE} bytes",
            path.display()
        )));
    }
    // toml's message quotes the line it could not parse, which may hold a
    // password: say only where.
    let file: UsersFile = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        CliError::UsersFile(format!(
            "{}: not a users file ([[user]] tables of name and rules){}",
            path.display(),
            at.map(|l| format!(" at line {l}")).unwrap_or_default()
        ))
    })?;
    Ok(file.user)
}

fn print(u: &ClusterUsers) {
    if u.users.is_empty() {
        println!("no client users: the data planes use their config files' users");
        return;
    }
    let rows = u
        .users
        .iter()
        .map(|u| vec![u.name.clone(), u.rules.clone()])
        .collect();
    table(&["USER", "RULES"], rows);
}

/// Runs a `users` command.
pub fn run(c: &Client, cmd: UsersCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        UsersCmd::Set { cluster, file } => {
            let users = read(&file)?;
            let body = ClusterUsers { version: 0, users };
            let got: ClusterUsers = c.put(&format!("/v1/clusters/{cluster}/users"), &body)?;
            emit(json, &got, |u| {
                println!(
                    "cluster {cluster} version {}: {} client users",
                    u.version,
                    u.users.len()
                )
            });
        }
        UsersCmd::List { cluster } => {
            let got: ClusterUsers = c.get(&format!("/v1/clusters/{cluster}/users"))?;
            emit(json, &got, print);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_is_refused_without_quoting_it() {
        let dir = std::env::temp_dir().join(format!("keywayctl-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("users.toml");
        std::fs::write(&p, "[[user]]\nname = \"a\"\nrules = \"on >hunter2\"\n").unwrap();
        assert_eq!(read(&p).unwrap()[0].rules, "on >hunter2");
        std::fs::write(&p, "[[user]]\nname = \"a\"\nrules = on >hunter2\n").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("line 3") && !e.contains("hunter2"), "{e}");
        std::fs::write(&p, "[[user]]\nname = \"a\"\npassword = \"x\"\n").unwrap();
        assert!(read(&p).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
