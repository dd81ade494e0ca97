//! Writing RESP2 (and, where a client chose it with `HELLO 3`, RESP3) into a byte buffer: the replies the proxy makes itself and the
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

/// The header of a map of `n` pairs that follow: `%n` in RESP3, a flat
/// array of `2n` elements (`*2n`) in RESP2, as Redis's `addReplyMapLen`.
#[inline]
pub fn map_header(out: &mut Vec<u8>, n: usize, resp3: bool) {
    if resp3 {
        out.push(b'%');
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    } else {
        array_header(out, n * 2);
    }
}

/// The header of a set of `n` elements: `~n` in RESP3, `*n` in RESP2
/// (Redis's `addReplySetLen`).
#[inline]
pub fn set_header(out: &mut Vec<u8>, n: usize, resp3: bool) {
    if resp3 {
        out.push(b'~');
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    } else {
        array_header(out, n);
    }
}

/// A push message header of `n` elements: `>n` in RESP3, `*n` in RESP2
/// (Redis's `addReplyPushLen`).
#[inline]
pub fn push_header(out: &mut Vec<u8>, n: usize, resp3: bool) {
    if resp3 {
        out.push(b'>');
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    } else {
        array_header(out, n);
    }
}

/// A null where Redis sends a null bulk string: `_` in RESP3, `$-1` in
/// RESP2 (Redis's `addReplyNull`).
#[inline]
pub fn null_of(out: &mut Vec<u8>, resp3: bool) {
    out.extend_from_slice(if resp3 { b"_\r\n" } else { b"$-1\r\n" });
}

/// A null where Redis sends a null array: `_` in RESP3, `*-1` in RESP2
/// (Redis's `addReplyNullArray`).
#[inline]
pub fn null_array(out: &mut Vec<u8>, resp3: bool) {
    out.extend_from_slice(if resp3 { b"_\r\n" } else { b"*-1\r\n" });
}

/// Text Redis sends as a verbatim string (`INFO`, `CLIENT LIST`, `CLIENT
/// INFO`, `LATENCY DOCTOR`, `MEMORY DOCTOR`): `=len\r\ntxt:text` in RESP3,
/// a bulk string in RESP2 (Redis's `addReplyVerbatim` with `txt`).
pub fn verbatim(out: &mut Vec<u8>, text: &[u8], resp3: bool) {
    if resp3 {
        out.push(b'=');
        out.extend_from_slice(itoa::Buffer::new().format(text.len() + 4).as_bytes());
        out.extend_from_slice(b"\r\ntxt:");
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    } else {
        bulk(out, text);
    }
}

/// A boolean: `#t`/`#f` in RESP3, `:1`/`:0` in RESP2 (Redis's
/// `addReplyBool`).
#[inline]
pub fn boolean(out: &mut Vec<u8>, b: bool, resp3: bool) {
    if resp3 {
        out.extend_from_slice(if b { b"#t\r\n" } else { b"#f\r\n" });
    } else {
        integer(out, i64::from(b));
    }
}

/// A double as Redis 7.0 writes it (`%.17g`, `inf`, `-inf`): `,d` in RESP3,
/// a bulk string in RESP2 (Redis's `addReplyDouble`).
pub fn double(out: &mut Vec<u8>, d: f64, resp3: bool) {
    let text = if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        g17(d)
    };
    if resp3 {
        out.push(b',');
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    } else {
        bulk(out, text.as_bytes());
    }
}

/// `printf("%.17g", d)` for a finite `d`.
fn g17(d: f64) -> String {
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let exp = d.abs().log10().floor() as i32;
    if (-4..17).contains(&exp) {
        let decimals = (16 - exp).max(0) as usize;
        let s = format!("{d:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let s = format!("{d:.16e}");
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let mant = if mant.contains('.') {
            mant.trim_end_matches('0').trim_end_matches('.')
        } else {
            mant
        };
        let e: i32 = e.parse().unwrap_or(0);
        format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    }
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
    fn encodes_resp3_types_and_their_resp2_forms() {
        let both = |f: &dyn Fn(&mut Vec<u8>, bool)| {
            let (mut two, mut three) = (Vec::new(), Vec::new());
            f(&mut two, false);
            f(&mut three, true);
            (
                String::from_utf8(two).unwrap(),
                String::from_utf8(three).unwrap(),
            )
        };
        assert_eq!(
            both(&|o, r| map_header(o, 2, r)),
            ("*4\r\n".into(), "%2\r\n".into())
        );
        assert_eq!(
            both(&|o, r| set_header(o, 3, r)),
            ("*3\r\n".into(), "~3\r\n".into())
        );
        assert_eq!(
            both(&|o, r| push_header(o, 3, r)),
            ("*3\r\n".into(), ">3\r\n".into())
        );
        assert_eq!(
            both(&|o, r| null_of(o, r)),
            ("$-1\r\n".into(), "_\r\n".into())
        );
        assert_eq!(
            both(&|o, r| null_array(o, r)),
            ("*-1\r\n".into(), "_\r\n".into())
        );
        assert_eq!(
            both(&|o, r| verbatim(o, b"a:1", r)),
            ("$3\r\na:1\r\n".into(), "=7\r\ntxt:a:1\r\n".into())
        );
        assert_eq!(
            both(&|o, r| boolean(o, true, r)),
            (":1\r\n".into(), "#t\r\n".into())
        );
        assert_eq!(
            both(&|o, r| double(o, 1.5, r)),
            ("$3\r\n1.5\r\n".into(), ",1.5\r\n".into())
        );
    }

    #[test]
    fn doubles_print_as_redis_does() {
        let g = |d: f64| {
            let mut o = Vec::new();
            double(&mut o, d, true);
            String::from_utf8(o).unwrap()
        };
        assert_eq!(g(0.1), ",0.10000000000000001\r\n");
        assert_eq!(g(3.0), ",3\r\n");
        assert_eq!(g(-2.5), ",-2.5\r\n");
        assert_eq!(g(1e20), ",1e+20\r\n");
        assert_eq!(g(1.5e-7), ",1.4999999999999999e-07\r\n");
        assert_eq!(g(f64::INFINITY), ",inf\r\n");
        assert_eq!(g(f64::NEG_INFINITY), ",-inf\r\n");
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
