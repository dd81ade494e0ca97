//! A cluster's client users (Redis ACL users its data planes authenticate
//! clients against, in place of their config files' `[[user]]`s): set as a
//! whole by [`Change::SetUsers`](super::Change::SetUsers). Clear text
//! passwords never get here: the API replaces them with their SHA-256
//! ([`keyway_capnp::users::hash_passwords`]) before it makes the change, and
//! every check refuses a rule in clear text, so neither the store nor a
//! snapshot nor a log holds one.

use serde::{Deserialize, Serialize};

use super::ModelError;
use keyway_capnp::users::{self, User};

/// One client user, as stored and listed: rules with passwords as hashes
/// (`Debug` shows them masked, as `keyway_capnp::users::masked`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientUser {
    /// The user name.
    pub name: String,
    /// Redis `ACL SETUSER` rules (`#sha256` passwords).
    #[serde(default)]
    pub rules: String,
}

impl std::fmt::Debug for ClientUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientUser")
            .field("name", &self.name)
            .field("rules", &users::masked(&self.rules))
            .finish()
    }
}

impl ClientUser {
    /// As the snapshot carries it.
    pub fn wire(&self) -> User {
        User {
            name: self.name.clone(),
            rules: self.rules.clone(),
        }
    }
}

/// Checks users an operator gives and returns them with clear text
/// passwords hashed; the error names the user and the rule (a password as
/// `>***`).
pub fn prepare(given: &[ClientUser]) -> Result<Vec<ClientUser>, ModelError> {
    let list: Vec<User> = given.iter().map(ClientUser::wire).collect();
    let hashed = users::hash_passwords(&list).map_err(|e| ModelError::invalid(e.to_string()))?;
    Ok(hashed
        .into_iter()
        .map(|u| ClientUser {
            name: u.name,
            rules: u.rules,
        })
        .collect())
}

/// Checks users as stored: bounded, valid, no clear text.
pub fn check(list: &[ClientUser]) -> Result<(), ModelError> {
    let list: Vec<User> = list.iter().map(ClientUser::wire).collect();
    users::check_users(&list).map_err(|e| ModelError::invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_stored_as_hashes() {
        let given = [ClientUser {
            name: "app".into(),
            rules: "on >secret ~app:* +@all".into(),
        }];
        let got = prepare(&given).unwrap();
        assert!(!got[0].rules.contains("secret"));
        assert!(got[0].rules.starts_with("on #2bb80d53"));
        check(&got).unwrap();
        assert!(!format!("{given:?} {got:?}").contains("secret"));
        assert!(!format!("{got:?}").contains("2bb80d53"));
        assert!(check(&given).unwrap_err().message.contains("clear text"));
        let e = prepare(&[ClientUser {
            name: "app".into(),
            rules: "on <secret".into(),
        }])
        .unwrap_err();
        assert!(e.message.contains("'<***'") && !e.message.contains("secret"));
    }
}
