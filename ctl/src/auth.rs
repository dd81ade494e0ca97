//! The shared token that authenticates API clients and data planes.
//!
//! `keyway-ctld --token-file PATH` reads one secret at start. API requests
//! carry it as `Authorization: Bearer <token>` (checked in one place:
//! `crate::api::auth`), control sessions in their `Hello` (checked in one
//! place: `crate::control`). Without a token ctld listens on loopback only
//! (`keyway-ctld` refuses anything else). Each transport checks through
//! [`Auth`]; TLS, when it comes, wraps the transports and leaves the checks
//! where they are.
//!
//! The token is never printed: [`Token`]'s `Debug` hides it, errors about a
//! token file never quote its content, and a refused peer is told only
//! "authentication failed".

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The largest token file accepted.
pub const MAX_TOKEN_FILE: usize = 4096;

/// A token file that cannot be used (never quotes the content).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It cannot be read.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is larger than [`MAX_TOKEN_FILE`].
    #[error("token file {path} is larger than {MAX_TOKEN_FILE} bytes")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// The token is empty or not printable ASCII.
    #[error("{what}: {why}")]
    Invalid {
        /// Where it came from.
        what: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// A shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

impl Token {
    /// A token from text (trimmed): non-empty printable ASCII without
    /// spaces, so it fits an HTTP header as it is. `what` names the source
    /// for the error.
    pub fn new(text: &str, what: &str) -> Result<Token, TokenError> {
        let t = text.trim();
        let invalid = |why| TokenError::Invalid {
            what: what.to_string(),
            why,
        };
        if t.is_empty() {
            return Err(invalid("the token is empty"));
        }
        if t.len() > MAX_TOKEN_FILE {
            return Err(invalid("the token is longer than 4096 bytes"));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "the token must be printable ASCII without spaces or control characters",
            ));
        }
        Ok(Token(t.to_string()))
    }

    /// Reads a token file: at most [`MAX_TOKEN_FILE`] bytes, trimmed. The
    /// second value is a warning to log when others than its owner may read
    /// it.
    pub fn read_file(path: &Path) -> Result<(Token, Option<String>), TokenError> {
        let shown = path.display().to_string();
        let io = |source| TokenError::Io {
            path: shown.clone(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let meta = f.metadata().map_err(io)?;
        let mut bytes = Vec::new();
        f.take(MAX_TOKEN_FILE as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() > MAX_TOKEN_FILE {
            return Err(TokenError::TooLarge { path: shown });
        }
        let text = String::from_utf8(bytes).map_err(|_| TokenError::Invalid {
            what: format!("token file {shown}"),
            why: "the token must be printable ASCII without spaces or control characters",
        })?;
        let token = Token::new(&text, &format!("token file {shown}"))?;
        let mode = meta.permissions().mode();
        let warning = (mode & 0o044 != 0).then(|| {
            format!(
                "token file {shown} is readable by its group or by others (mode {:o}); \
                 chmod 600 it",
                mode & 0o777
            )
        });
        Ok((token, warning))
    }

    /// Whether `presented` is this token, in time that does not depend on
    /// where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        let mut diff = u8::from(mine.len() != presented.len());
        for (i, &b) in mine.iter().enumerate() {
            diff |= b ^ presented.get(i).copied().unwrap_or(!b);
        }
        std::hint::black_box(diff) == 0
    }

    /// The secret, to send it (clients only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Who may use ctld's API and control port.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Anyone who can connect: ctld listens on loopback only.
    LoopbackOnly,
    /// Holders of the token.
    Token(Token),
}

impl Auth {
    /// Whether an `Authorization` header value admits a request.
    pub fn admits_header(&self, header: Option<&[u8]>) -> bool {
        match self {
            Auth::LoopbackOnly => true,
            Auth::Token(t) => header
                .and_then(|h| h.strip_prefix(b"Bearer "))
                .is_some_and(|presented| t.matches(presented.trim_ascii())),
        }
    }

    /// Whether a Hello's token admits a control session.
    pub fn admits_hello(&self, token: &str) -> bool {
        match self {
            Auth::LoopbackOnly => true,
            Auth::Token(t) => t.matches(token.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        let t = Token::new("  s3cret-token\n", "test").unwrap();
        assert!(t.matches(b"s3cret-token"));
        for wrong in [
            &b""[..],
            b"s3cret-toke",
            b"s3cret-token!",
            b"S3cret-token",
            b"x",
        ] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{t:?}"), "Token(<hidden>)");
        assert!(Token::new(" \n", "x").is_err());
        assert!(Token::new("a b", "x").is_err());
        assert!(Token::new("a\u{1}b", "x").is_err());
        assert!(Token::new(&"a".repeat(4097), "x").is_err());
    }

    #[test]
    fn auth_checks_headers_and_hellos() {
        let auth = Auth::Token(Token::new("tok", "test").unwrap());
        assert!(auth.admits_header(Some(b"Bearer tok")));
        assert!(!auth.admits_header(Some(b"Bearer nope")));
        assert!(!auth.admits_header(Some(b"Basic tok")));
        assert!(!auth.admits_header(Some(b"tok")));
        assert!(!auth.admits_header(None));
        assert!(auth.admits_hello("tok"));
        assert!(!auth.admits_hello(""));
        assert!(Auth::LoopbackOnly.admits_header(None));
        assert!(Auth::LoopbackOnly.admits_hello(""));
    }

    #[test]
    fn token_files_are_bounded_trimmed_and_checked() {
        let dir = std::env::temp_dir().join(format!("keyway-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t");
        std::fs::write(&p, "secret-value\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (t, warning) = Token::read_file(&p).unwrap();
        assert!(t.matches(b"secret-value") && warning.is_none());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (_, warning) = Token::read_file(&p).unwrap();
        assert!(warning.unwrap().contains("chmod 600"));
        std::fs::write(&p, "x".repeat(5000)).unwrap();
        let e = Token::read_file(&p).unwrap_err().to_string();
        assert!(e.contains("larger than 4096") && !e.contains("xxx"), "{e}");
        std::fs::write(&p, "\n\n").unwrap();
        assert!(Token::read_file(&p)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        std::fs::write(&p, "two words").unwrap();
        let e = Token::read_file(&p).unwrap_err().to_string();
        assert!(!e.contains("two words"), "never quoted: {e}");
        assert!(Token::read_file(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
