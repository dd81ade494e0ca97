//! Writing RESP2 into a byte buffer: the replies the proxy makes itself and the
//! sub-requests it builds when it splits a multi-key command.

use super::Args;

/// `+s\r\n`.
#[inline]
pub fn simple(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'+');
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

/// `-msg\r\n`; `msg` must start with an error code (`ERR`, `CROSSSLOT`, …) and
/// must not contain CR or LF (they are replaced by spaces).
pub fn error(out: &mut Vec<u8>, msg: &str) {
    out.push(b'-');
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// `:n\r\n`.
#[inline]
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `$len\r\ndata\r\n`.
#[inline]
pub fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(data.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// `$-1\r\n`.
#[inline]
pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// `*n\r\n`, the header of an array of `n` elements that follow.
#[inline]
pub fn array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A whole request: every argument of `args` as a multibulk frame.
pub fn request(out: &mut Vec<u8>, args: &Args<'_>) {
    array_header(out, args.len());
    for a in args.iter() {
        bulk(out, a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::Span;

    #[test]
    fn encodes() {
        let mut out = Vec::new();
        simple(&mut out, b"OK");
        error(&mut out, "ERR bad\r\nthing");
        integer(&mut out, -7);
        bulk(&mut out, b"hi");
        null(&mut out);
        array_header(&mut out, 2);
        assert_eq!(
            out,
            b"+OK\r\n-ERR bad  thing\r\n:-7\r\n$2\r\nhi\r\n$-1\r\n*2\r\n"
        );
    }

    #[test]
    fn re_encodes_a_request() {
        let buf = b"GETkey";
        let spans = [Span::new(0, 3), Span::new(3, 3)];
        let mut out = Vec::new();
        request(&mut out, &Args::new(buf, &spans));
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
    }
}
