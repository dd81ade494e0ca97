//! Inline request splitting with Redis's `sdssplitargs` rules: blanks separate
//! arguments, `"…"` understands `\n \r \t \b \a \xHH` and `\c`, `'…'` understands
//! `\'`, and a closing quote must be followed by a blank or the end.

use super::Span;

/// The quoted string is not terminated, or a closing quote is followed by a
/// non-blank.
#[derive(Debug)]
pub(crate) struct Unbalanced;

#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits `line` into arguments appended to `out`, with their spans in `spans`.
pub(crate) fn split_inline(
    line: &[u8],
    out: &mut Vec<u8>,
    spans: &mut Vec<Span>,
) -> Result<(), Unbalanced> {
    // A NUL ends the line, as it ends the C string Redis splits.
    let line = match memchr::memchr(0, line) {
        Some(p) => &line[..p],
        None => line,
    };
    let at = |i: usize| line.get(i).copied();
    let mut i = 0;
    loop {
        while at(i).is_some_and(is_space) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(());
        }
        let start = out.len();
        let (mut in_dq, mut in_sq) = (false, false);
        loop {
            let c = at(i);
            if in_dq {
                match c {
                    None => return Err(Unbalanced),
                    Some(b'\\') if at(i + 1) == Some(b'x') => {
                        match (at(i + 2).and_then(hex), at(i + 3).and_then(hex)) {
                            (Some(h), Some(l)) => {
                                out.push(h * 16 + l);
                                i += 3;
                            }
                            _ => {
                                out.push(b'x');
                                i += 1;
                            }
                        }
                    }
                    Some(b'\\') if at(i + 1).is_some() => {
                        i += 1;
                        out.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        if at(i + 1).is_some_and(|n| !is_space(n)) {
                            return Err(Unbalanced);
                        }
                        i += 1;
                        break;
                    }
                    Some(b) => out.push(b),
                }
            } else if in_sq {
                match c {
                    None => return Err(Unbalanced),
                    Some(b'\\') if at(i + 1) == Some(b'\'') => {
                        i += 1;
                        out.push(b'\'');
                    }
                    Some(b'\'') => {
                        if at(i + 1).is_some_and(|n| !is_space(n)) {
                            return Err(Unbalanced);
                        }
                        i += 1;
                        break;
                    }
                    Some(b) => out.push(b),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if is_space(b) => break,
                    Some(b'"') => in_dq = true,
                    Some(b'\'') => in_sq = true,
                    Some(b) => out.push(b),
                }
            }
            i += 1;
        }
        spans.push(Span::new(start, out.len() - start));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &[u8]) -> Result<Vec<Vec<u8>>, Unbalanced> {
        let (mut out, mut spans) = (Vec::new(), Vec::new());
        split_inline(line, &mut out, &mut spans)?;
        Ok(spans.iter().map(|s| s.of(&out).to_vec()).collect())
    }

    #[test]
    fn matches_sdssplitargs() {
        assert_eq!(
            split(b"a b  c").unwrap(),
            [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(split(b"\"\"").unwrap(), [Vec::<u8>::new()]);
        assert_eq!(split(b"\"a\\x4\"").unwrap(), [b"ax4".to_vec()]);
        assert_eq!(
            split(b"x\"y\"").unwrap(),
            [b"xy".to_vec()],
            "quote opening mid-word"
        );
        assert_eq!(split(b"a\0b").unwrap(), [b"a".to_vec()]);
        assert!(split(b"'abc").is_err());
        assert!(split(b"'a'b").is_err());
    }
}
