//! [`User`] and the `ACL SETUSER` rules that build one, applied left to
//! right as Redis 7.0 applies them: `on`/`off`, `>pass`/`<pass`,
//! `#hash`/`!hash`, `nopass`, `resetpass`, `~pattern`, `%R~`/`%W~`/`%RW~`,
//! `allkeys`, `resetkeys`, `&pattern`, `allchannels`, `resetchannels`,
//! `+cmd`, `-cmd`, `+cmd|sub`, `+@category`, `-@category`, `allcommands`,
//! `nocommands`, `reset`. A cleartext password is hashed as the rule is
//! applied and never kept; an error never quotes one.

use keyway_protocol::command::{self, CommandSpec, COMMAND_IDS};
use sha2::{Digest, Sha256};

use super::categories::category_by_name;

/// Why a rule was refused; `Display` quotes the rule (passwords masked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule '{rule}': {why}")]
pub struct RuleError {
    /// The rule, or `>***`/`<***` for a password.
    pub rule: String,
    /// Redis's reason.
    pub why: &'static str,
}

/// A key pattern and what it grants (`~` both, `%R~` read, `%W~` write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    /// The glob.
    pub pattern: Box<[u8]>,
    /// Grants reads (`R`).
    pub read: bool,
    /// Grants writes (`W`).
    pub write: bool,
    /// The pattern is a literal prefix and one final `*` (`app:*`, the
    /// common case): matched by comparing the prefix, without the glob.
    pub prefix_only: bool,
}

impl KeyPattern {
    /// Whether `key` matches the pattern (Redis's glob, case-sensitive).
    #[inline]
    pub fn matches(&self, key: &[u8]) -> bool {
        if self.prefix_only {
            let prefix = &self.pattern[..self.pattern.len() - 1];
            key.starts_with(prefix)
        } else {
            keyway_protocol::pattern::glob_match(&self.pattern, key, false)
        }
    }
}

/// Whether `pattern` is a literal prefix and one final `*`.
fn prefix_only(pattern: &[u8]) -> bool {
    match pattern.split_last() {
        Some((b'*', prefix)) => !prefix
            .iter()
            .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\')),
        _ => false,
    }
}

/// A user, as its rules left it.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Its name.
    pub name: Box<str>,
    /// `on`.
    pub enabled: bool,
    /// `nopass`: any password authenticates it.
    pub nopass: bool,
    /// SHA-256 of each password.
    pub(super) passwords: Vec<[u8; 32]>,
    /// One bit per command id: the commands it may run.
    pub(super) commands: Box<[u64]>,
    /// `+@all` (or `allcommands`) was the last all-or-nothing rule: commands
    /// added to Redis later would be allowed (`ACL LIST` says `+@all`).
    pub(super) future: bool,
    /// The command rules since the last `+@all`/`-@all`, as Redis keeps them.
    pub(super) command_rules: String,
    /// `~*` or `allkeys`.
    pub all_keys: bool,
    /// Its key patterns (empty when `all_keys`).
    pub(super) keys: Vec<KeyPattern>,
    /// `&*` or `allchannels`.
    pub all_channels: bool,
    /// Its channel patterns (empty when `all_channels`).
    pub(super) channels: Vec<Box<[u8]>>,
    /// `sanitize-payload` (true, also set by `reset`) or
    /// `skip-sanitize-payload` (false): shown as Redis shows them (keyway
    /// forwards `RESTORE` payloads to Redis, which sanitizes per its own
    /// config).
    pub(super) sanitize_payload: Option<bool>,
}

impl std::fmt::Debug for User {
    /// Never shows password hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("nopass", &self.nopass)
            .field("passwords", &self.passwords.len())
            .field("commands", &self.command_rules)
            .field("all_keys", &self.all_keys)
            .field("all_channels", &self.all_channels)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a password.
pub fn hash_password(password: &[u8]) -> [u8; 32] {
    Sha256::digest(password).into()
}

const WORDS: usize = COMMAND_IDS.div_ceil(64);

impl User {
    /// A new user as Redis creates one: `off`, no password, no keys, no
    /// channels, no commands.
    pub fn new(name: &str) -> User {
        User {
            name: name.into(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            commands: vec![0; WORDS].into_boxed_slice(),
            future: false,
            command_rules: String::new(),
            all_keys: false,
            keys: Vec::new(),
            all_channels: false,
            channels: Vec::new(),
            sanitize_payload: None,
        }
    }

    /// A user built from space-separated rules, starting from [`User::new`].
    pub fn parse(name: &str, rules: &str) -> Result<User, RuleError> {
        let mut u = User::new(name);
        for rule in rules.split_ascii_whitespace() {
            u.apply(rule)?;
        }
        Ok(u)
    }

    /// Whether every request passes its checks: all commands, keys, channels.
    pub fn unrestricted(&self) -> bool {
        self.all_keys && self.all_channels && self.commands.iter().all(|&w| w == !0)
    }

    /// Whether it may run command `id` (its bit).
    #[inline]
    pub fn may_run(&self, id: u16) -> bool {
        let id = usize::from(id);
        self.commands
            .get(id / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Whether `password` authenticates it (a constant-time comparison with
    /// each hash).
    pub fn password_ok(&self, password: &[u8]) -> bool {
        if self.nopass {
            return true;
        }
        let h = hash_password(password);
        let mut ok = false;
        for p in &self.passwords {
            let diff = p.iter().zip(h.iter()).fold(0u8, |d, (a, b)| d | (a ^ b));
            ok |= diff == 0;
        }
        ok
    }

    /// Applies one rule.
    pub fn apply(&mut self, rule: &str) -> Result<(), RuleError> {
        let err = |why| {
            let shown = match rule.as_bytes().first() {
                Some(b'>') => ">***".to_string(),
                Some(b'<') => "<***".to_string(),
                _ => rule.to_string(),
            };
            RuleError { rule: shown, why }
        };
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => self.set_all_keys(),
            "resetkeys" => {
                self.all_keys = false;
                self.keys.clear();
            }
            "allchannels" => self.set_all_channels(),
            "resetchannels" => {
                self.all_channels = false;
                self.channels.clear();
            }
            "allcommands" | "+@all" => self.all_commands(true),
            "nocommands" | "-@all" => self.all_commands(false),
            "reset" => {
                let name = std::mem::take(&mut self.name);
                *self = User::new(&name);
                self.sanitize_payload = Some(true);
            }
            "sanitize-payload" => self.sanitize_payload = Some(true),
            "skip-sanitize-payload" => self.sanitize_payload = Some(false),
            _ => return self.apply_with_argument(rule, &lower).map_err(err),
        }
        Ok(())
    }

    fn apply_with_argument(&mut self, rule: &str, lower: &str) -> Result<(), &'static str> {
        let b = rule.as_bytes();
        match b[0] {
            b'>' => {
                self.add_password(hash_password(&b[1..]));
                Ok(())
            }
            b'<' => self.remove_password(&hash_password(&b[1..])),
            b'#' => {
                let h = parse_hash(&rule[1..])?;
                self.add_password(h);
                Ok(())
            }
            b'!' => {
                let h = parse_hash(&rule[1..])?;
                self.remove_password(&h)
            }
            b'~' => self.add_key(&b[1..], true, true),
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
                self.add_key(&b[tilde + 1..], read, write)
            }
            b'&' => self.add_channel(&b[1..]),
            b'+' | b'-' => {
                let allow = b[0] == b'+';
                match lower[1..].strip_prefix('@') {
                    Some(cat) => {
                        let bit = category_by_name(cat.as_bytes()).ok_or(UNKNOWN)?;
                        for c in command::all().filter(|c| c.in_category(bit)) {
                            self.set(c, allow);
                        }
                        self.record_rule(lower, &lower[1..]);
                        Ok(())
                    }
                    None => {
                        let c = find_command(&lower[1..]).ok_or(UNKNOWN)?;
                        self.set(c, allow);
                        for sub in c.subcommands {
                            self.set(sub, allow);
                        }
                        let rule = format!("{}{}", &lower[..1], c.name);
                        self.record_rule(&rule, c.name);
                        Ok(())
                    }
                }
            }
            _ => Err(SYNTAX),
        }
    }

    fn set(&mut self, c: &CommandSpec, allow: bool) {
        let id = usize::from(c.id);
        if let Some(w) = self.commands.get_mut(id / 64) {
            if allow {
                *w |= 1 << (id % 64);
            } else {
                *w &= !(1 << (id % 64));
            }
        }
    }

    fn all_commands(&mut self, allow: bool) {
        let fill = if allow { !0 } else { 0 };
        self.commands.iter_mut().for_each(|w| *w = fill);
        self.future = allow;
        self.command_rules.clear();
    }

    /// Keeps `rule` (about `name`: a command, or `@category`) in the
    /// rules `ACL LIST` shows, as Redis 7.0 does: earlier rules about the
    /// same name (and a command's subcommands) are dropped, and the rule is
    /// kept only if the rules left would not grant the same commands.
    fn record_rule(&mut self, rule: &str, name: &str) {
        let mut kept: Vec<String> = self
            .command_rules
            .split_ascii_whitespace()
            .filter(|r| {
                let n = &r[1..];
                !(n == name
                    || n.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('|')))
            })
            .map(String::from)
            .collect();
        let mut fake = User::new("");
        fake.all_commands(self.future);
        for r in &kept {
            // Rules kept were valid when applied.
            let _ = fake.apply(r);
        }
        if fake.commands != self.commands {
            kept.push(rule.to_string());
        }
        self.command_rules.clear();
        for r in kept {
            self.command_rules.push_str(&r);
            self.command_rules.push(' ');
        }
    }

    fn add_password(&mut self, h: [u8; 32]) {
        if !self.passwords.contains(&h) {
            self.passwords.push(h);
        }
        self.nopass = false;
    }

    fn remove_password(&mut self, h: &[u8; 32]) -> Result<(), &'static str> {
        let before = self.passwords.len();
        self.passwords.retain(|p| p != h);
        if self.passwords.len() == before {
            return Err("The password you are trying to remove from the user does not exist");
        }
        Ok(())
    }

    fn set_all_keys(&mut self) {
        self.all_keys = true;
        self.keys.clear();
    }

    fn set_all_channels(&mut self) {
        self.all_channels = true;
        self.channels.clear();
    }

    fn add_key(&mut self, pattern: &[u8], read: bool, write: bool) -> Result<(), &'static str> {
        if self.all_keys {
            return Err(
                "Adding a pattern after the * pattern (or the 'allkeys' flag) is not \
                        valid and does not have any effect. Try 'resetkeys' to start with an \
                        empty list of patterns",
            );
        }
        if pattern == b"*" && read && write {
            self.set_all_keys();
            return Ok(());
        }
        match self.keys.iter_mut().find(|k| &*k.pattern == pattern) {
            Some(k) => {
                k.read |= read;
                k.write |= write;
            }
            None => self.keys.push(KeyPattern {
                pattern: pattern.into(),
                read,
                write,
                prefix_only: prefix_only(pattern),
            }),
        }
        Ok(())
    }

    fn add_channel(&mut self, pattern: &[u8]) -> Result<(), &'static str> {
        if self.all_channels {
            return Err(
                "Adding a pattern after the * pattern (or the 'allchannels' flag) is \
                        not valid and does not have any effect. Try 'resetchannels' to start \
                        with an empty list of channels",
            );
        }
        if pattern == b"*" {
            self.set_all_channels();
        } else if !self.channels.iter().any(|c| &**c == pattern) {
            self.channels.push(pattern.into());
        }
        Ok(())
    }
}

const SYNTAX: &str = "Syntax error";
const UNKNOWN: &str = "Unknown command or category name in ACL";

/// `name` or `container|sub`.
fn find_command(name: &str) -> Option<&'static CommandSpec> {
    match name.split_once('|') {
        None => command::lookup::by_name(name.as_bytes()),
        Some((top, sub)) => {
            let c = command::lookup::by_name(top.as_bytes())?;
            command::lookup::subcommand(c, sub.as_bytes())
        }
    }
}

fn parse_hash(hex: &str) -> Result<[u8; 32], &'static str> {
    const BAD: &str = "The password hash must be exactly 64 characters and contain only \
                       lowercase hexadecimal characters";
    let b = hex.as_bytes();
    if b.len() != 64 {
        return Err(BAD);
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        out[i] = (nibble(pair[0]).ok_or(BAD)? << 4) | nibble(pair[1]).ok_or(BAD)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> u16 {
        find_command(name).expect(name).id
    }

    #[test]
    fn a_prefix_pattern_matches_as_the_glob_does() {
        let patterns: [&[u8]; 9] = [
            b"app:*", b"*", b"a", b"app:?*", b"a[b]*", b"a\\**", b"ap*p*", b"", b"x*y",
        ];
        let keys: [&[u8]; 8] = [b"app:1", b"app:", b"ap", b"", b"a", b"ab", b"a*c", b"xay"];
        for p in patterns {
            let kp = KeyPattern {
                pattern: p.into(),
                read: true,
                write: true,
                prefix_only: prefix_only(p),
            };
            for k in keys {
                assert_eq!(
                    kp.matches(k),
                    keyway_protocol::pattern::glob_match(p, k, false),
                    "{:?} against {:?}",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(k)
                );
            }
        }
        assert!(prefix_only(b"app:*") && prefix_only(b"*"));
        assert!(!prefix_only(b"a?*") && !prefix_only(b"a\\**") && !prefix_only(b"a"));
    }

    #[test]
    fn default_user_is_unrestricted() {
        let u = User::parse("default", "on nopass ~* &* +@all").unwrap();
        assert!(u.enabled && u.nopass && u.unrestricted());
        assert!(u.password_ok(b"anything"));
    }

    #[test]
    fn passwords_are_hashed_and_checked() {
        let u = User::parse("app", "on >secret").unwrap();
        assert!(u.password_ok(b"secret"));
        assert!(!u.password_ok(b"Secret"));
        assert!(!format!("{u:?}").contains("secret"));
        let hex = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        let u = User::parse("app", &format!("on #{hex}")).unwrap();
        assert!(u.password_ok(b"secret"));
        let u = User::parse("app", &format!("on #{hex} >other !{hex}")).unwrap();
        assert!(!u.password_ok(b"secret") && u.password_ok(b"other"));
        let u = User::parse("app", "on >a >b <a").unwrap();
        assert!(!u.password_ok(b"a") && u.password_ok(b"b"));
        let u = User::parse("app", "on >a nopass").unwrap();
        assert!(u.password_ok(b"x"));
        let u = User::parse("app", "on nopass resetpass").unwrap();
        assert!(!u.password_ok(b"x"));
    }

    #[test]
    fn errors_quote_the_rule_but_never_a_password() {
        let e = User::parse("u", "on <hunter2").unwrap_err();
        assert_eq!(e.rule, "<***");
        assert!(!e.to_string().contains("hunter2"));
        for (rules, quoted) in [
            ("#abc", "#abc"),
            (
                "#2BB80D537B1DA3E38BD30361AA855686BDE0EACD7162FEF6A25FE97BF527A25B",
                "#2BB",
            ),
            ("+nosuchcommand", "+nosuchcommand"),
            ("+@nosuchcategory", "+@nosuchcategory"),
            ("bogus", "bogus"),
            ("%X~a", "%X~a"),
            ("~* ~a", "~a"),
            ("&* &a", "&a"),
        ] {
            let e = User::parse("u", rules).expect_err(rules);
            assert!(e.rule.starts_with(quoted), "{rules}: {e}");
        }
    }

    #[test]
    fn commands_and_categories() {
        let u = User::parse("u", "+@all -@dangerous +get").unwrap();
        assert!(u.may_run(id("get")));
        assert!(!u.may_run(id("flushall")));
        assert!(!u.may_run(id("config|set")));
        assert!(!u.may_run(id("config|get")), "config|get is @dangerous");
        let u = User::parse("u", "+get +config|get").unwrap();
        assert!(u.may_run(id("get")) && u.may_run(id("config|get")));
        assert!(!u.may_run(id("set")) && !u.may_run(id("config|set")));
        let u = User::parse("u", "+config -config|set").unwrap();
        assert!(u.may_run(id("config|get")) && !u.may_run(id("config|set")));
        let u = User::parse("u", "allcommands nocommands +@read").unwrap();
        assert!(u.may_run(id("get")) && !u.may_run(id("set")));
        let u = User::parse("u", "on ~* &* +@all reset").unwrap();
        assert!(!u.enabled && !u.may_run(id("get")) && !u.all_keys);
        assert_eq!(u.name.as_ref(), "u");
    }

    #[test]
    fn rules_about_one_command_replace_earlier_ones() {
        let u = User::parse("u", "+get +config|get -get +set -config").unwrap();
        assert_eq!(u.command_rules, "+set ");
        // As Redis 7.0.15's `ACL LIST` shows them.
        for (rules, want) in [
            ("+@read -get", "-@all +@read -get"),
            ("+get -get", "-@all"),
            ("+@all -get", "+@all -get"),
            ("+@all -get +get", "+@all"),
            ("+@read -@read", "-@all"),
            ("+config|get -config", "-@all"),
            ("+@read +get", "-@all +@read"),
            ("+@all -config +config|get", "+@all -config +config|get"),
        ] {
            assert_eq!(
                User::parse("u", rules).unwrap().commands_text(),
                want,
                "{rules}"
            );
        }
    }

    /// keyway-ctld refuses the rules the data plane refuses, with the same
    /// words: its check (`keyway_capnp::users::check_rules`) is a copy of
    /// this parser's decisions, kept equal by this test.
    #[test]
    fn the_control_planes_check_agrees() {
        let names: Vec<&str> = super::super::CATEGORIES.iter().map(|&(n, _)| n).collect();
        assert_eq!(names, keyway_capnp::users::CATEGORY_NAMES);
        let hex = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        let mut corpus: Vec<String> = [
            "on off nopass resetpass reset allkeys resetkeys allchannels resetchannels",
            "allcommands nocommands +@all -@all sanitize-payload skip-sanitize-payload",
            "ON NoPass +@ALL ~* &* +GET -Config|Get",
            ">a >b <a <b",
            "<a",
            ">a nopass <a",
            ">a resetpass <a",
            ">a reset <a",
            "~* ~a",
            "~* resetkeys ~a",
            "allkeys ~a",
            "~* reset ~a",
            "%R~* ~a",
            "%RW~* ~a",
            "%W~* %R~*",
            "%X~a",
            "%~a",
            "%R",
            "%rw~a",
            "&* &a",
            "allchannels &a",
            "&* resetchannels &a",
            "+nosuch",
            "+@nosuch",
            "-@",
            "+",
            "+config|nosuch",
            "+get|x",
            "+config|get|x",
            "bogus",
            "#abc",
            "!abc",
            "=x",
            "(~a +get)",
            "on\t>p\n~k",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        corpus.push(format!("#{hex} !{hex}"));
        corpus.push(format!("!{hex}"));
        corpus.push(format!("#{} ", hex.to_uppercase()));
        corpus.push(format!("#{hex}0"));
        corpus.push(format!(">secret !{hex}"));
        for (name, _) in super::super::CATEGORIES {
            corpus.push(format!("+@{name} -@{}", name.to_uppercase()));
        }
        for c in command::all() {
            corpus.push(format!("+{} -{}", c.name, c.name.to_uppercase()));
            for sub in c.subcommands {
                corpus.push(format!("-{} +{}", sub.name, sub.name.to_uppercase()));
            }
        }
        for rules in &corpus {
            let ours = User::parse("u", rules)
                .map(|_| ())
                .map_err(|e| e.to_string());
            let ctld = keyway_capnp::users::check_rules(rules).map_err(|e| e.to_string());
            assert_eq!(ours, ctld, "{rules:?}");
        }
    }

    #[test]
    fn key_and_channel_patterns() {
        let u = User::parse("u", "~a:* %R~r:* %W~w:* %RW~b allchannels").unwrap();
        assert!(!u.all_keys && u.all_channels);
        assert_eq!(u.keys.len(), 4);
        assert!(u.keys[1].read && !u.keys[1].write);
        assert!(!u.keys[2].read && u.keys[2].write);
        assert!(u.keys[3].read && u.keys[3].write);
        let u = User::parse("u", "~a %R~a").unwrap();
        assert_eq!(u.keys.len(), 1);
        let u = User::parse("u", "%R~* &a &a").unwrap();
        assert!(!u.all_keys && u.channels.len() == 1);
        let u = User::parse("u", "allkeys resetkeys ~x").unwrap();
        assert!(!u.all_keys && u.keys.len() == 1);
    }
}
