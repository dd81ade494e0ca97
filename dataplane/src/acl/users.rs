//! [`Users`]: the users one config or snapshot defines, looked up by name.

use std::sync::Arc;

use serde::Deserialize;

use super::rules::User;

/// One `[[user]]` table (its `Debug` masks passwords and hashes).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user name (what `AUTH name password` gives).
    pub name: String,
    /// Redis `ACL SETUSER` rules, space-separated (e.g. `on >pass ~app:*
    /// +@all -@dangerous`); a user starts `off`, with no password, keys,
    /// channels or commands.
    #[serde(default)]
    pub rules: String,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("rules", &keyway_capnp::users::masked(&self.rules))
            .finish()
    }
}

/// The users of one config, sorted by name; `default` is always there.
#[derive(Debug)]
pub struct Users {
    users: Vec<Arc<User>>,
    default: Arc<User>,
}

/// Redis's `default` user when none is configured.
pub const DEFAULT_RULES: &str = "on nopass ~* &* +@all";

/// Longest user name.
pub const MAX_NAME: usize = 128;

impl Default for Users {
    fn default() -> Users {
        Users::from_config(&[]).expect("the default user's rules parse")
    }
}

impl Users {
    /// Builds the users of `[[user]]` tables (plus Redis's `default` if
    /// they do not define it); the error names the user and the rule.
    pub fn from_config(list: &[UserConfig]) -> Result<Users, String> {
        let mut users: Vec<Arc<User>> = Vec::with_capacity(list.len() + 1);
        for u in list {
            let name = u.name.as_str();
            if name.is_empty()
                || name.len() > MAX_NAME
                || !name.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(format!(
                    "user {name:?}: names are 1 to {MAX_NAME} printable characters without spaces"
                ));
            }
            if users.iter().any(|x| &*x.name == name) {
                return Err(format!("user {name:?} is defined twice"));
            }
            let user = User::parse(name, &u.rules).map_err(|e| format!("user {name:?}: {e}"))?;
            users.push(Arc::new(user));
        }
        if !users.iter().any(|u| &*u.name == "default") {
            let default = User::parse("default", DEFAULT_RULES).map_err(|e| e.to_string())?;
            users.push(Arc::new(default));
        }
        users.sort_by(|a, b| a.name.cmp(&b.name));
        let default = users
            .iter()
            .find(|u| &*u.name == "default")
            .cloned()
            .ok_or("no default user")?;
        Ok(Users { users, default })
    }

    /// The user called `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Arc<User>> {
        self.users
            .binary_search_by(|u| u.name.as_bytes().cmp(name))
            .ok()
            .map(|i| &self.users[i])
    }

    /// The `default` user: new connections start as it.
    pub fn default_user(&self) -> &Arc<User> {
        &self.default
    }

    /// Whether a new connection must authenticate before running commands
    /// (the default user needs a password or is off), as Redis's
    /// `authRequired`.
    pub fn auth_required(&self) -> bool {
        !self.default.nopass || !self.default.enabled
    }

    /// Every user, by name.
    pub fn iter(&self) -> std::slice::Iter<'_, Arc<User>> {
        self.users.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_passwords() {
        let u = UserConfig {
            name: "app".into(),
            rules: "on >s3cretPass ~* +@all".into(),
        };
        let shown = format!("{u:?}");
        assert!(
            !shown.contains("s3cretPass") && shown.contains("app"),
            "{shown}"
        );
    }

    fn cfg(list: &[(&str, &str)]) -> Result<Users, String> {
        let list: Vec<UserConfig> = list
            .iter()
            .map(|&(name, rules)| UserConfig {
                name: name.into(),
                rules: rules.into(),
            })
            .collect();
        Users::from_config(&list)
    }

    #[test]
    fn default_user_as_redis() {
        let u = cfg(&[]).unwrap();
        assert!(!u.auth_required());
        assert_eq!(
            u.default_user().describe(),
            "user default on nopass ~* &* +@all"
        );
        let u = cfg(&[("default", "on >p ~* &* +@all"), ("app", "on >a")]).unwrap();
        assert!(u.auth_required());
        assert!(u.get(b"app").is_some() && u.get(b"nobody").is_none());
        let names: Vec<&str> = u.iter().map(|u| &*u.name).collect();
        assert_eq!(names, ["app", "default"]);
        let u = cfg(&[("default", "off nopass")]).unwrap();
        assert!(u.auth_required());
    }

    #[test]
    fn bad_users_are_refused() {
        assert!(cfg(&[("a", ""), ("a", "")]).unwrap_err().contains("twice"));
        assert!(cfg(&[("a b", "")]).unwrap_err().contains("printable"));
        let e = cfg(&[("a", "on >secret +nosuch")]).unwrap_err();
        assert!(e.contains("+nosuch") && !e.contains("secret"), "{e}");
    }
}
