//! A small RESP2/RESP3 value parser that keeps each value's byte range, for reading
//! trusted replies from a local Redis. Not for untrusted input: it recurses.

/// One parsed value and where it sits in the buffer.
pub struct Val {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

pub enum Kind {
    /// `+`, `-`, `,`, `#`, `(`, `_` lines.
    Line(Vec<u8>),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    /// Arrays, sets, pushes, and maps (as flat key/value lists).
    Array(Vec<Val>),
}

impl Val {
    pub fn bulk(&self) -> Option<&[u8]> {
        match &self.kind {
            Kind::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// A bulk or simple string.
    pub fn text(&self) -> Option<&[u8]> {
        match &self.kind {
            Kind::Bulk(Some(b)) | Kind::Line(b) => Some(b),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match &self.kind {
            Kind::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn array(&self) -> Option<&[Val]> {
        match &self.kind {
            Kind::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Looks up `key` in a map sent as a flat key/value array.
    pub fn map_get(&self, key: &str) -> Option<&Val> {
        self.array()?
            .chunks(2)
            .find(|kv| kv[0].text() == Some(key.as_bytes()))
            .and_then(|kv| kv.get(1))
    }
}

fn line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let nl = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..nl], pos + nl + 2))
}

fn number(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Parses one value starting at `pos`; `None` if the buffer is incomplete or malformed.
pub fn parse(buf: &[u8], pos: usize) -> Option<(Val, usize)> {
    let tag = *buf.get(pos)?;
    let (head, mut next) = line(buf, pos + 1)?;
    let kind = match tag {
        b'+' | b'-' | b',' | b'#' | b'(' | b'_' => Kind::Line(head.to_vec()),
        b':' => Kind::Int(number(head)?),
        b'$' | b'=' | b'!' => {
            let n = number(head)?;
            if n < 0 {
                Kind::Bulk(None)
            } else {
                let n = n as usize;
                let data = buf.get(next..next + n)?.to_vec();
                next += n + 2;
                if buf.len() < next {
                    return None;
                }
                Kind::Bulk(Some(data))
            }
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = number(head)?;
            let n = if tag == b'%' { n * 2 } else { n };
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                let (v, after) = parse(buf, next)?;
                items.push(v);
                next = after;
            }
            Kind::Array(items)
        }
        _ => return None,
    };
    Some((
        Val {
            start: pos,
            end: next,
            kind,
        },
        next,
    ))
}
