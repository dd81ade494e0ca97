//! Client users (Redis ACL users) as a managed cluster's snapshots carry
//! them: their bounds, the check of their rules, and the hashing of clear
//! text passwords. keyway-ctld checks and hashes every user an operator
//! gives before it stores or sends anything; data planes check each
//! snapshot's users with the same code ([`Snapshot::validate`]) before they
//! build them.
//!
//! [`check_rules`] is a copy of the data plane's rule parser
//! (`keyway::acl::rules`) reduced to what decides whether a rule is
//! accepted: a test of the data plane
//! (`acl::rules::tests::the_control_planes_check_agrees`) runs the same rules
//! through both and fails when they differ.
//!
//! [`Snapshot::validate`]: crate::snapshot::Snapshot::validate

use keyway_protocol::command;
use sha2::{Digest, Sha256};

/// Most users a cluster may have (besides `default`, which a cluster may
/// define or leave as Redis's).
pub const MAX_USERS: usize = 256;

/// Longest rules text of one user, in bytes, as given and as stored (with
/// clear text passwords replaced by their 65-character hashes).
pub const MAX_RULES: usize = 4096;

/// Longest user name (the data plane's `[[user]]` bound).
pub const MAX_USER_NAME: usize = 128;

/// The ACL category names, as in `keyway::acl::CATEGORIES` (a test of the
/// data plane keeps them equal).
pub const CATEGORY_NAMES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// One client user: its name and its `ACL SETUSER` rules.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct User {
    /// The user name.
    pub name: String,
    /// Space-separated rules.
    pub rules: String,
}

impl std::fmt::Debug for User {
    /// Shows the rules [`masked`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("rules", &masked(&self.rules))
            .finish()
    }
}

/// `rules` with every password and password hash replaced by `***`
/// (`>***`, `#***`, …), for `Debug` output and logs.
pub fn masked(rules: &str) -> String {
    let mut out = String::with_capacity(rules.len());
    for r in rules.split_ascii_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        match r.as_bytes()[0] {
            c @ (b'>' | b'<' | b'#' | b'!') => {
                out.push(char::from(c));
                out.push_str("***");
            }
            _ => out.push_str(r),
        }
    }
    out
}

/// Why a rule was refused, as the data plane says it: the rule is quoted
/// (a clear text password as `>***`/`<***`), then Redis's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule '{rule}': {why}")]
pub struct RuleError {
    /// The rule, or `>***`/`<***` for a password.
    pub rule: String,
    /// Redis's reason.
    pub why: &'static str,
}

/// Why a list of users was refused; never quotes a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// More than [`MAX_USERS`] users.
    #[error("{0} users: at most {MAX_USERS}")]
    TooMany(usize),
    /// A name that is not 1 to [`MAX_USER_NAME`] printable characters.
    #[error("user {0:?}: names are 1 to {MAX_USER_NAME} printable characters without spaces")]
    Name(String),
    /// Two users of one name.
    #[error("user {0:?} is defined twice")]
    Twice(String),
    /// Rules longer than [`MAX_RULES`] bytes.
    #[error("user {name:?}: rules of {len} bytes: at most {MAX_RULES}")]
    TooLong {
        /// The user.
        name: String,
        /// The rules' length (as given or as stored).
        len: usize,
    },
    /// A rule the data plane would refuse.
    #[error("user {name:?}: {source}")]
    Rule {
        /// The user.
        name: String,
        /// The rule and why.
        source: RuleError,
    },
    /// A clear text password (`>pass`, `<pass`) in a snapshot.
    #[error(
        "user {0:?}: a password in clear text: snapshots carry passwords only as #<sha256 hex>"
    )]
    Cleartext(String),
}

/// Checks users as a snapshot carries them: at most [`MAX_USERS`], names
/// valid and distinct, rules bounded and accepted by the data plane, and no
/// password in clear text.
pub fn check_users(users: &[User]) -> Result<(), UserError> {
    check_list(users, false)
}

/// Checks users an operator gives (clear text passwords allowed), then
/// returns them with every `>pass` replaced by `#sha256(pass)` and every
/// `<pass` by `!sha256(pass)`: what ctld stores and sends.
pub fn hash_passwords(users: &[User]) -> Result<Vec<User>, UserError> {
    check_list(users, true)?;
    let hashed: Vec<User> = users
        .iter()
        .map(|u| User {
            name: u.name.clone(),
            rules: hash_rules(&u.rules),
        })
        .collect();
    check_list(&hashed, false)?;
    Ok(hashed)
}

fn check_list(users: &[User], cleartext: bool) -> Result<(), UserError> {
    if users.len() > MAX_USERS {
        return Err(UserError::TooMany(users.len()));
    }
    let mut names = std::collections::HashSet::with_capacity(users.len());
    for u in users {
        let name = u.name.as_str();
        if name.is_empty()
            || name.len() > MAX_USER_NAME
            || !name.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(UserError::Name(name.to_string()));
        }
        if !names.insert(name) {
            return Err(UserError::Twice(name.to_string()));
        }
        if u.rules.len() > MAX_RULES {
            return Err(UserError::TooLong {
                name: name.to_string(),
                len: u.rules.len(),
            });
        }
        if !cleartext
            && u.rules
                .split_ascii_whitespace()
                .any(|r| r.starts_with('>') || r.starts_with('<'))
        {
            return Err(UserError::Cleartext(name.to_string()));
        }
        check_rules(&u.rules).map_err(|source| UserError::Rule {
            name: name.to_string(),
            source,
        })?;
    }
    Ok(())
}

/// `rules` with clear text passwords replaced by their SHA-256 (`#hex`,
/// `!hex`), rules separated by one space.
pub fn hash_rules(rules: &str) -> String {
    let mut out = String::with_capacity(rules.len());
    for r in rules.split_ascii_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        match r.as_bytes()[0] {
            b'>' => {
                out.push('#');
                out.push_str(&sha256_hex(&r.as_bytes()[1..]));
            }
            b'<' => {
                out.push('!');
                out.push_str(&sha256_hex(&r.as_bytes()[1..]));
            }
            _ => out.push_str(r),
        }
    }
    out
}

/// SHA-256 as 64 lowercase hex digits (as `printf %s pass | sha256sum`).
pub fn sha256_hex(password: &[u8]) -> String {
    let digest: [u8; 32] = Sha256::digest(password).into();
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

/// What decides whether a later rule is accepted.
#[derive(Default)]
struct Check {
    passwords: Vec<[u8; 32]>,
    all_keys: bool,
    all_channels: bool,
}

const SYNTAX: &str = "Syntax error";
const UNKNOWN: &str = "Unknown command or category name in ACL";
const NO_PASSWORD: &str = "The password you are trying to remove from the user does not exist";
const KEYS_AFTER_ALL: &str = "Adding a pattern after the * pattern (or the 'allkeys' flag) is not \
                        valid and does not have any effect. Try 'resetkeys' to start with an \
                        empty list of patterns";
const CHANNELS_AFTER_ALL: &str =
    "Adding a pattern after the * pattern (or the 'allchannels' flag) is \
                        not valid and does not have any effect. Try 'resetchannels' to start \
                        with an empty list of channels";
const BAD_HASH: &str = "The password hash must be exactly 64 characters and contain only \
                       lowercase hexadecimal characters";

/// Whether the data plane accepts `rules` (space-separated, applied left to
/// right to a new user), with its error if not.
pub fn check_rules(rules: &str) -> Result<(), RuleError> {
    let mut c = Check::default();
    for rule in rules.split_ascii_whitespace() {
        c.apply(rule).map_err(|why| {
            let rule = match rule.as_bytes()[0] {
                b'>' => ">***".to_string(),
                b'<' => "<***".to_string(),
                _ => rule.to_string(),
            };
            RuleError { rule, why }
        })?;
    }
    Ok(())
}

impl Check {
    fn apply(&mut self, rule: &str) -> Result<(), &'static str> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on"
            | "off"
            | "allcommands"
            | "+@all"
            | "nocommands"
            | "-@all"
            | "sanitize-payload"
            | "skip-sanitize-payload" => Ok(()),
            "nopass" | "resetpass" => {
                self.passwords.clear();
                Ok(())
            }
            "allkeys" => {
                self.all_keys = true;
                Ok(())
            }
            "resetkeys" => {
                self.all_keys = false;
                Ok(())
            }
            "allchannels" => {
                self.all_channels = true;
                Ok(())
            }
            "resetchannels" => {
                self.all_channels = false;
                Ok(())
            }
            "reset" => {
                *self = Check::default();
                Ok(())
            }
            _ => self.with_argument(rule, &lower),
        }
    }

    fn with_argument(&mut self, rule: &str, lower: &str) -> Result<(), &'static str> {
        let b = rule.as_bytes();
        match b[0] {
            b'>' => {
                self.add(Sha256::digest(&b[1..]).into());
                Ok(())
            }
            b'<' => self.remove(&Sha256::digest(&b[1..]).into()),
            b'#' => {
                let h = parse_hash(&rule[1..])?;
                self.add(h);
                Ok(())
            }
            b'!' => self.remove(&parse_hash(&rule[1..])?),
            b'~' => self.key(&b[1..], true, true),
            b'%' => {
                let tilde = b.iter().position(|&c| c == b'~').ok_or(SYNTAX)?;
                let (mut read, mut write) = (false, false);
                for &c in &b[1..tilde] {
                    match c.to_ascii_uppercase() {
                        b'R' => read = true,
                        b'W' => write = true,
                        _ => return Err(SYNTAX),
                    }
                }
                if !read && !write {
                    return Err(SYNTAX);
                }
                self.key(&b[tilde + 1..], read, write)
            }
            b'&' => {
                if self.all_channels {
                    return Err(CHANNELS_AFTER_ALL);
                }
                self.all_channels = &b[1..] == b"*";
                Ok(())
            }
            b'+' | b'-' => match lower[1..].strip_prefix('@') {
                Some(cat) => CATEGORY_NAMES.contains(&cat).then_some(()).ok_or(UNKNOWN),
                None => {
                    let found = match lower[1..].split_once('|') {
                        None => command::lookup::by_name(&lower.as_bytes()[1..]),
                        Some((top, sub)) => command::lookup::by_name(top.as_bytes())
                            .and_then(|c| command::lookup::subcommand(c, sub.as_bytes())),
                    };
                    found.map(|_| ()).ok_or(UNKNOWN)
                }
            },
            _ => Err(SYNTAX),
        }
    }

    fn add(&mut self, h: [u8; 32]) {
        if !self.passwords.contains(&h) {
            self.passwords.push(h);
        }
    }

    fn remove(&mut self, h: &[u8; 32]) -> Result<(), &'static str> {
        let before = self.passwords.len();
        self.passwords.retain(|p| p != h);
        if self.passwords.len() == before {
            return Err(NO_PASSWORD);
        }
        Ok(())
    }

    fn key(&mut self, pattern: &[u8], read: bool, write: bool) -> Result<(), &'static str> {
        if self.all_keys {
            return Err(KEYS_AFTER_ALL);
        }
        if pattern == b"*" && read && write {
            self.all_keys = true;
        }
        Ok(())
    }
}

fn parse_hash(hex: &str) -> Result<[u8; 32], &'static str> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return Err(BAD_HASH);
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        out[i] = (nibble(pair[0]).ok_or(BAD_HASH)? << 4) | nibble(pair[1]).ok_or(BAD_HASH)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, rules: &str) -> User {
        User {
            name: name.into(),
            rules: rules.into(),
        }
    }

    #[test]
    fn clear_text_passwords_are_hashed() {
        let got = hash_passwords(&[user("app", "on  >secret ~app:* <secret +@all")]).unwrap();
        let h = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        assert_eq!(got[0].rules, format!("on #{h} ~app:* !{h} +@all"));
        assert!(check_users(&got).is_ok());
        let shown = format!("{:?}", got[0]);
        assert!(
            shown.contains("on #*** ~app:* !*** +@all") && !shown.contains(h),
            "{shown}"
        );
        assert_eq!(
            check_users(&[user("app", "on >secret")]),
            Err(UserError::Cleartext("app".into()))
        );
    }

    #[test]
    fn refusals_name_the_user_and_rule_never_the_password() {
        for (rules, want) in [
            (
                "on <hunter2",
                "rule '<***': The password you are trying to remove",
            ),
            ("+nosuch", "rule '+nosuch': Unknown command"),
            ("+@nosuch", "rule '+@nosuch': Unknown command"),
            ("bogus", "rule 'bogus': Syntax error"),
            ("%X~a", "rule '%X~a': Syntax error"),
            ("~* ~a", "rule '~a': Adding a pattern"),
            ("&* &a", "rule '&a': Adding a pattern"),
            ("#abc", "rule '#abc': The password hash"),
        ] {
            let e = hash_passwords(&[user("u", rules)]).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("user \"u\": {want}")),
                "{rules}: {e}"
            );
            assert!(!e.contains("hunter2"));
        }
        for ok in [
            "on >a >b <a ~x:* %R~y &c +@all -@dangerous +config|get -config|set",
            "reset on nopass allkeys allchannels allcommands",
            "~* resetkeys ~a &* resetchannels &b +GET",
        ] {
            hash_passwords(&[user("u", ok)]).expect(ok);
        }
    }

    #[test]
    fn bounds() {
        let many: Vec<User> = (0..=MAX_USERS)
            .map(|i| user(&format!("u{i}"), ""))
            .collect();
        assert_eq!(check_users(&many), Err(UserError::TooMany(MAX_USERS + 1)));
        assert!(matches!(
            check_users(&[user("a", ""), user("a", "")]),
            Err(UserError::Twice(_))
        ));
        assert!(matches!(
            check_users(&[user("a b", "")]),
            Err(UserError::Name(_))
        ));
        assert!(matches!(
            check_users(&[user("", "")]),
            Err(UserError::Name(_))
        ));
        let long = "~k ".repeat(MAX_RULES / 3 + 1);
        assert!(matches!(
            check_users(&[user("a", &long)]),
            Err(UserError::TooLong { .. })
        ));
        // Hashing makes rules longer: the stored length is bounded too.
        let grows = ">p ".repeat(MAX_RULES / 3);
        assert!(matches!(
            hash_passwords(&[user("a", &grows)]),
            Err(UserError::TooLong { .. })
        ));
    }
}
