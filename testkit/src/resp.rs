//! Just enough RESP2 for tests to talk to a server byte for byte: encode a
//! request, find where one reply ends, and show bytes escaped. Written apart
//! from `keyway-protocol` on purpose: the oracle shares no code with what it
//! checks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `args` as a RESP array of bulk strings.
pub fn request<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The length of the first complete reply in `buf`, or `None` while it is
/// incomplete. Panics on bytes that are not a RESP2 or RESP3 reply.
pub fn reply_len(buf: &[u8]) -> Option<usize> {
    let kind = *buf.first()?;
    let line = buf.windows(2).position(|w| w == b"\r\n")?;
    let after = line + 2;
    let count = || -> i64 {
        std::str::from_utf8(&buf[1..line])
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad RESP length in {}", escape(buf)))
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(after),
        b'$' | b'=' | b'!' => match usize::try_from(count()) {
            Err(_) => Some(after),
            Ok(n) => {
                let end = after + n + 2;
                (buf.len() >= end).then_some(end)
            }
        },
        b'*' | b'~' | b'>' | b'%' | b'|' => match usize::try_from(count()) {
            Err(_) => Some(after),
            Ok(n) => {
                // A map has n pairs; an attribute map's pairs annotate the
                // value after them.
                let n = match kind {
                    b'%' => 2 * n,
                    b'|' => 2 * n + 1,
                    _ => n,
                };
                let mut at = after;
                for _ in 0..n {
                    at += reply_len(&buf[at..])?;
                }
                Some(at)
            }
        },
        _ => panic!("not a RESP reply: {}", escape(buf)),
    }
}

/// Writes `req` and reads until `replies` complete replies have arrived (or
/// the peer closed, or 10 s passed), returning exactly the bytes read.
pub fn exchange(s: &mut TcpStream, req: &[u8], replies: usize) -> Vec<u8> {
    s.write_all(req).expect("write a request");
    read_replies(s, replies)
}

/// Reads until `replies` complete replies have arrived, the peer closed, or
/// 10 s passed.
pub fn read_replies(s: &mut TcpStream, replies: usize) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while !complete(&out, replies) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left)).expect("set a read timeout");
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// Whether `buf` starts with `replies` whole replies.
pub fn complete(buf: &[u8], replies: usize) -> bool {
    let mut at = 0;
    for _ in 0..replies {
        match reply_len(&buf[at..]) {
            Some(n) => at += n,
            None => return false,
        }
    }
    true
}

/// Whatever the peer sends within 20 ms (nothing, normally: every reply
/// asked for has been read).
pub fn trailing(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("set a read timeout");
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Whether the peer has closed the connection (reads EOF within 5 s).
pub fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    matches!(s.read(&mut [0u8; 1]), Ok(0))
}

/// `bytes` as printable ASCII, `\r\n` and the rest escaped.
pub fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// `reply` with the integer that follows the bulk string `field` replaced by
/// `:<field>`: for map-like replies (`HELLO`) holding a per-server value.
pub fn mask_field(reply: &[u8], field: &str) -> Vec<u8> {
    let key = format!("${}\r\n{field}\r\n:", field.len()).into_bytes();
    let Some(at) = reply.windows(key.len()).position(|w| w == key.as_slice()) else {
        return reply.to_vec();
    };
    let start = at + key.len();
    let end = start
        + reply[start..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(reply.len() - start);
    let mut out = reply[..start].to_vec();
    out.extend_from_slice(format!("<{field}>").as_bytes());
    out.extend_from_slice(&reply[end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_an_array_of_bulk_strings() {
        assert_eq!(request(&["GET", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn reply_len_finds_the_end_of_nested_replies() {
        let r = b"*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:5\r\n+OK\r\n";
        assert_eq!(reply_len(r), Some(r.len() - 5));
        assert_eq!(reply_len(b"-ERR x\r\n"), Some(8));
        assert_eq!(reply_len(b"*-1\r\n"), Some(5));
        for cut in 0..r.len() - 5 {
            assert_eq!(reply_len(&r[..cut]), None, "incomplete at {cut}");
        }
    }

    #[test]
    fn mask_field_hides_only_that_integer() {
        let hello = b"*4\r\n$2\r\nid\r\n:17\r\n$5\r\nproto\r\n:2\r\n";
        assert_eq!(
            mask_field(hello, "id"),
            b"*4\r\n$2\r\nid\r\n:<id>\r\n$5\r\nproto\r\n:2\r\n"
        );
        assert_eq!(mask_field(b"+OK\r\n", "id"), b"+OK\r\n");
    }
}
