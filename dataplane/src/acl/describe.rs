//! A user written back as Redis 7.0 writes one: the `ACL LIST` line
//! ([`User::describe`]) and the fields of `ACL GETUSER`.

use super::rules::{KeyPattern, User};

fn hex(h: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in h {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn pattern(p: &KeyPattern) -> String {
    let text = String::from_utf8_lossy(&p.pattern);
    match (p.read, p.write) {
        (true, true) => format!("~{text}"),
        (true, false) => format!("%R~{text}"),
        _ => format!("%W~{text}"),
    }
}

impl User {
    /// `ACL GETUSER`'s `flags`: `on` or `off`, `nopass`, and
    /// `skip-sanitize-payload` or `sanitize-payload` if set.
    pub fn flags(&self) -> Vec<&'static str> {
        let mut f = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            f.push("nopass");
        }
        match self.sanitize_payload {
            Some(false) => f.push("skip-sanitize-payload"),
            Some(true) => f.push("sanitize-payload"),
            None => {}
        }
        f
    }

    /// The password hashes, in hex.
    pub fn password_hashes(&self) -> Vec<String> {
        self.passwords.iter().map(hex).collect()
    }

    /// The command rules: `+@all` or `-@all`, then the rules since.
    pub fn commands_text(&self) -> String {
        let mut s = String::from(if self.future { "+@all" } else { "-@all" });
        if !self.command_rules.is_empty() {
            s.push(' ');
            s.push_str(self.command_rules.trim_end());
        }
        s
    }

    /// The key patterns, space-separated (`~*` for all keys).
    pub fn keys_text(&self) -> String {
        if self.all_keys {
            return "~*".into();
        }
        let all: Vec<String> = self.keys.iter().map(pattern).collect();
        all.join(" ")
    }

    /// The channel patterns, space-separated (`&*` for all channels).
    pub fn channels_text(&self) -> String {
        if self.all_channels {
            return "&*".into();
        }
        let all: Vec<String> = self
            .channels
            .iter()
            .map(|c| format!("&{}", String::from_utf8_lossy(c)))
            .collect();
        all.join(" ")
    }

    /// The `ACL LIST` line: `user NAME on #hash ~keys resetchannels &chan
    /// +@all …`.
    pub fn describe(&self) -> String {
        let mut s = format!("user {}", self.name);
        for f in self.flags() {
            s.push(' ');
            s.push_str(f);
        }
        for h in self.password_hashes() {
            s.push_str(" #");
            s.push_str(&h);
        }
        let keys = self.keys_text();
        if !keys.is_empty() {
            s.push(' ');
            s.push_str(&keys);
        }
        if self.all_channels {
            s.push_str(" &*");
        } else {
            s.push_str(" resetchannels");
            let channels = self.channels_text();
            if !channels.is_empty() {
                s.push(' ');
                s.push_str(&channels);
            }
        }
        s.push(' ');
        s.push_str(&self.commands_text());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines `ACL LIST` printed on Redis 7.0.15 for the same rules.
    #[test]
    fn describes_as_redis_does() {
        let cases = [
            ("on nopass ~* &* +@all", "user u on nopass ~* &* +@all"),
            (
                "on >apppass ~app:* +@all -@dangerous &chat:*",
                "user u on #46400f642c99584e51b14031f875ca9b7b33ccf94ff8d7657197a5bac06f4ffb ~app:* resetchannels &chat:* +@all -@dangerous",
            ),
            (
                "on >ro %R~r:* %W~w:* +@all",
                "user u on #7ef9ec0cf2c4facafddd03ab96eca0939d6749b49952bd816f1e0cc6901941d5 %R~r:* %W~w:* resetchannels +@all",
            ),
            (
                "on nopass ~* +@all -config +config|get",
                "user u on nopass ~* resetchannels +@all -config +config|get",
            ),
            ("", "user u off resetchannels -@all"),
            ("+get", "user u off resetchannels -@all +get"),
            (
                "reset +@read -get",
                "user u off sanitize-payload resetchannels -@all +@read -get",
            ),
        ];
        for (rules, want) in cases {
            assert_eq!(User::parse("u", rules).unwrap().describe(), want, "{rules}");
        }
    }
}
