//! Reply framing: where does the next backend reply end? Replies are forwarded as
//! the bytes Redis sent, so the proxy only needs their boundaries. The framer
//! handles every RESP2 and RESP3 type, nests without recursion, and resumes a
//! long reply (a big `LRANGE`, a huge bulk) where it stopped instead of
//! rescanning it on every read.

/// The backend sent something that is not RESP; the connection is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// An unknown type byte.
    #[error("unexpected reply type byte 0x{0:02x}")]
    BadType(u8),
    /// A length or count that is not an integer.
    #[error("malformed reply length")]
    BadLength,
    /// A bulk reply not followed by CRLF.
    #[error("bulk reply not terminated by CRLF")]
    MissingCrlf,
    /// Aggregates nested deeper than the framer allows.
    #[error("reply nested deeper than {0} levels")]
    TooDeep(usize),
}

/// Deepest nesting of aggregates accepted in a reply.
const MAX_DEPTH: usize = 4096;

/// A resumable reply framer; one per backend connection.
///
/// [`next`](Self::next) takes a buffer starting at the current reply and returns
/// `Ok(Some(len))` once the whole reply is there, `Ok(None)` when more bytes are
/// needed (call again with the same start and more bytes appended).
#[derive(Debug, Default)]
pub struct ReplyFramer {
    /// Where scanning resumes within the reply in progress.
    pos: usize,
    /// Elements still expected by each open aggregate, innermost last.
    open: Vec<u64>,
    needed: usize,
    /// The end (CRLF included) of a bulk string whose header has been read
    /// but whose payload has not all arrived; 0 when none is.
    bulk_end: usize,
    /// A line element (`+`, `-`, `:`, …) has started and its LF has not
    /// arrived: the next call looks for it from the buffer's start (its
    /// bytes so far may have been dropped).
    in_line: bool,
}

enum Line {
    Int(i64, usize),
    Incomplete,
}

/// What finishing an element left incomplete by a previous call gave.
enum Resumed {
    /// The call's answer: the reply's end, or more bytes needed.
    Answer(Option<usize>),
    /// The reply goes on from here.
    At(usize),
}

/// The longest length or count line: a sign, 18 digits (the most
/// accepted), CR LF.
const MAX_INT_LINE: usize = 21;

#[inline]
fn int_line(buf: &[u8], pos: usize) -> Result<Line, ReplyError> {
    // Digits scanned in place (lengths are short: no `memchr` set-up).
    let mut i = pos;
    let neg = buf.get(i) == Some(&b'-');
    if neg {
        i += 1;
    }
    let start = i;
    let mut v: i64 = 0;
    while let Some(&d) = buf.get(i) {
        if !d.is_ascii_digit() {
            break;
        }
        if i - start == 18 {
            return Err(ReplyError::BadLength);
        }
        v = v * 10 + i64::from(d - b'0');
        i += 1;
    }
    match buf.get(i) {
        // An endless length is malformed, not incomplete: nothing past it
        // could be framed, so bytes would pile up waiting for its end.
        None if buf.len().saturating_sub(pos) > MAX_INT_LINE => Err(ReplyError::BadLength),
        None => Ok(Line::Incomplete),
        Some(b'\r') if i > start => match buf.get(i + 1) {
            None => Ok(Line::Incomplete),
            Some(b'\n') => Ok(Line::Int(if neg { -v } else { v }, i + 2)),
            Some(_) => Err(ReplyError::BadLength),
        },
        Some(_) => Err(ReplyError::BadLength),
    }
}

/// The first `\n` in `buf`: a byte loop over the first 32 bytes (most
/// lines, `+OK`, `:1`, are shorter than `memchr`'s set-up is worth), then
/// `memchr`.
#[inline(always)]
fn find_newline(buf: &[u8]) -> Option<usize> {
    let head = &buf[..buf.len().min(32)];
    match head.iter().position(|&b| b == b'\n') {
        Some(i) => Some(i),
        None if buf.len() > 32 => memchr::memchr(b'\n', &buf[32..]).map(|i| i + 32),
        None => None,
    }
}

impl ReplyFramer {
    /// A framer between replies.
    pub fn new() -> ReplyFramer {
        ReplyFramer::default()
    }

    /// Bytes from the reply start that the reply in progress needs before the
    /// next call can make progress (a buffer-sizing hint).
    pub fn bytes_needed(&self) -> usize {
        self.needed
    }

    /// Forgets any reply in progress (after the connection is reset).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.open.clear();
        self.needed = 0;
        self.bulk_end = 0;
        self.in_line = false;
    }

    /// How many bytes at the start of the reply in progress the framer will
    /// never look at again, given that `available` bytes of it are buffered:
    /// a caller that drops a reply instead of keeping it (one too large to
    /// forward) may discard them and call [`rebase`](Self::rebase).
    pub fn discardable(&self, available: usize) -> usize {
        if self.bulk_end > 0 {
            // Keep the payload's trailing CRLF, which is checked.
            available.min(self.bulk_end - 2)
        } else if self.in_line {
            // Only the LF that ends it is looked for.
            available
        } else {
            available.min(self.pos)
        }
    }

    /// The caller dropped the first `n` bytes of the reply in progress (at
    /// most [`discardable`](Self::discardable)): later calls get a buffer
    /// that starts `n` bytes further on.
    pub fn rebase(&mut self, n: usize) {
        if self.bulk_end > 0 {
            self.bulk_end -= n;
            self.pos = 0;
        } else if self.in_line {
            self.pos = self.pos.saturating_sub(n);
        } else {
            self.pos -= n;
        }
        self.needed = self.needed.saturating_sub(n);
    }

    /// Closes every aggregate the element that ended at `pos` completes;
    /// `Some(pos)` when that ends the reply.
    #[inline]
    fn element_done(&mut self, pos: usize) -> Option<usize> {
        loop {
            match self.open.last_mut() {
                None => {
                    self.pos = 0;
                    self.needed = 0;
                    return Some(pos);
                }
                Some(left) => {
                    *left -= 1;
                    if *left > 0 {
                        return None;
                    }
                    self.open.pop();
                }
            }
        }
    }

    /// Finishes the bulk or line element a previous call left incomplete
    /// (off the common path: most replies arrive whole).
    #[cold]
    #[inline(never)]
    fn resume(&mut self, buf: &[u8]) -> Result<Resumed, ReplyError> {
        let mut pos = self.pos;
        if self.bulk_end > 0 {
            let end = self.bulk_end;
            if buf.len() < end {
                return Ok(Resumed::Answer(self.incomplete(pos, end)));
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(ReplyError::MissingCrlf);
            }
            self.bulk_end = 0;
            pos = end;
        } else {
            // The line's start may have been dropped: its end is the first
            // LF from where it was.
            match memchr::memchr(b'\n', &buf[pos.min(buf.len())..]) {
                Some(nl) => {
                    self.in_line = false;
                    pos += nl + 1;
                }
                None => return Ok(Resumed::Answer(self.incomplete(pos, buf.len() + 1))),
            }
        }
        Ok(match self.element_done(pos) {
            Some(done) => Resumed::Answer(Some(done)),
            None => Resumed::At(pos),
        })
    }

    /// Finds the end of the reply at the start of `buf`; see the type's docs.
    #[inline]
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<usize>, ReplyError> {
        let mut pos = self.pos;
        if self.bulk_end > 0 || self.in_line {
            match self.resume(buf)? {
                Resumed::Answer(r) => return Ok(r),
                Resumed::At(at) => pos = at,
            }
        }
        loop {
            let Some(&tag) = buf.get(pos) else {
                return Ok(self.incomplete(pos, pos + 1));
            };
            // Where the element that starts at `pos` ends, if it is not an
            // aggregate that opens a new level.
            let done_at = match tag {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => match find_newline(&buf[pos..]) {
                    Some(nl) => pos + nl + 1,
                    None => {
                        self.in_line = true;
                        return Ok(self.incomplete(pos, buf.len() + 1));
                    }
                },
                b'$' | b'=' | b'!' => match int_line(buf, pos + 1)? {
                    Line::Incomplete => return Ok(self.incomplete(pos, buf.len() + 1)),
                    Line::Int(n, data) if n < 0 => {
                        if n != -1 {
                            return Err(ReplyError::BadLength);
                        }
                        data
                    }
                    Line::Int(n, data) => {
                        let end = data + n as usize + 2;
                        if buf.len() < end {
                            self.bulk_end = end;
                            return Ok(self.incomplete(pos, end));
                        }
                        if &buf[end - 2..end] != b"\r\n" {
                            return Err(ReplyError::MissingCrlf);
                        }
                        end
                    }
                },
                b'*' | b'~' | b'>' | b'%' | b'|' => match int_line(buf, pos + 1)? {
                    Line::Incomplete => return Ok(self.incomplete(pos, buf.len() + 1)),
                    Line::Int(n, next) if n <= 0 => {
                        if n < -1 {
                            return Err(ReplyError::BadLength);
                        }
                        next
                    }
                    Line::Int(n, next) => {
                        let n = n as u64;
                        let elements = match tag {
                            b'%' => n * 2,
                            // An attribute map annotates the value after it.
                            b'|' => n * 2 + 1,
                            _ => n,
                        };
                        if self.open.len() >= MAX_DEPTH {
                            return Err(ReplyError::TooDeep(MAX_DEPTH));
                        }
                        self.open.push(elements);
                        pos = next;
                        continue;
                    }
                },
                other => return Err(ReplyError::BadType(other)),
            };
            pos = done_at;
            if let Some(done) = self.element_done(pos) {
                return Ok(Some(done));
            }
        }
    }

    #[inline]
    fn incomplete(&mut self, pos: usize, needed: usize) -> Option<usize> {
        self.pos = pos;
        self.needed = needed;
        None
    }
}

/// The elements of a complete array reply: `None` if `reply` is not an array
/// (an error, a nil array, …), else each element's bytes in order.
pub fn array_elements(reply: &[u8]) -> Option<ArrayElements<'_>> {
    if reply.first() != Some(&b'*') {
        return None;
    }
    match int_line(reply, 1).ok()? {
        Line::Int(n, next) if n >= 0 => Some(ArrayElements {
            buf: reply,
            pos: next,
            left: n as usize,
        }),
        _ => None,
    }
}

/// Iterator over the elements of an array reply; see [`array_elements`].
#[derive(Debug)]
pub struct ArrayElements<'a> {
    buf: &'a [u8],
    pos: usize,
    left: usize,
}

impl ArrayElements<'_> {
    /// Elements not yet returned.
    pub fn remaining(&self) -> usize {
        self.left
    }
}

impl<'a> Iterator for ArrayElements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let len = ReplyFramer::new().next(rest).ok()??;
        self.pos += len;
        self.left -= 1;
        Some(&rest[..len])
    }
}

/// The value of an integer reply (`:N\r\n`), or `None` for any other reply.
pub fn integer_reply(reply: &[u8]) -> Option<i64> {
    if reply.first() != Some(&b':') {
        return None;
    }
    match int_line(reply, 1).ok()? {
        Line::Int(n, _) => Some(n),
        Line::Incomplete => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(input: &[u8]) -> Result<Vec<&[u8]>, ReplyError> {
        let mut f = ReplyFramer::new();
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(len) = f.next(&input[at..])? {
            out.push(&input[at..at + len]);
            at += len;
        }
        Ok(out)
    }

    #[test]
    fn resp2_types() {
        let input =
            b"+OK\r\n-ERR x\r\n:12\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n*0\r\n*2\r\n$1\r\na\r\n:1\r\n";
        let got = frame_all(input).unwrap();
        assert_eq!(
            got,
            [
                &b"+OK\r\n"[..],
                b"-ERR x\r\n",
                b":12\r\n",
                b"$3\r\nabc\r\n",
                b"$-1\r\n",
                b"*-1\r\n",
                b"*0\r\n",
                b"*2\r\n$1\r\na\r\n:1\r\n"
            ]
        );
    }

    #[test]
    fn nested_and_resp3() {
        let nested = b"*2\r\n*2\r\n:1\r\n*1\r\n+x\r\n$2\r\nab\r\n";
        assert_eq!(frame_all(nested).unwrap(), [&nested[..]]);
        let map = b"%2\r\n+a\r\n:1\r\n+b\r\n_\r\n";
        assert_eq!(frame_all(map).unwrap(), [&map[..]]);
        let attr = b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n";
        assert_eq!(frame_all(attr).unwrap(), [&attr[..]]);
        let misc = b",1.5\r\n#t\r\n(12345678901234567890\r\n=7\r\ntxt:abc\r\n~1\r\n:1\r\n>2\r\n+a\r\n+b\r\n";
        assert_eq!(frame_all(misc).unwrap().len(), 6);
    }

    #[test]
    fn every_resp3_type_frames_and_resumes_at_every_cut() {
        // A map holding a set, a double, a boolean, a null, a big number,
        // a verbatim string, a blob error and an attribute before a value;
        // then a push and a top-level null.
        let reply: &[u8] = b"%4\r\n+set\r\n~2\r\n,1.5\r\n#t\r\n$4\r\nnull\r\n_\r\n\
            (12345678901234567890\r\n=8\r\ntxt:abcd\r\n!10\r\nERR bad\r\nx\r\n\
            |1\r\n+ttl\r\n:3\r\n*1\r\n$1\r\nv\r\n";
        let push: &[u8] = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
        let input = [reply, push, b"_\r\n"].concat();
        assert_eq!(
            frame_all(&input).unwrap(),
            [reply, push, &b"_\r\n"[..]],
            "three replies"
        );
        for cut in 0..reply.len() {
            let mut f = ReplyFramer::new();
            assert_eq!(f.next(&reply[..cut]).unwrap(), None, "cut at {cut}");
            assert_eq!(f.next(reply).unwrap(), Some(reply.len()), "cut at {cut}");
        }
        // The same bounds as RESP2's.
        assert_eq!(frame_all(b"%-2\r\n"), Err(ReplyError::BadLength));
        assert_eq!(frame_all(b"=2\r\nabcd"), Err(ReplyError::MissingCrlf));
        assert_eq!(frame_all(b"!x\r\n"), Err(ReplyError::BadLength));
        let deep = b"%1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(frame_all(&deep), Err(ReplyError::TooDeep(MAX_DEPTH)));
    }

    #[test]
    fn resumes_at_every_cut() {
        let input = b"*3\r\n$5\r\nhello\r\n*2\r\n:1\r\n:2\r\n+done\r\n";
        for cut in 0..input.len() {
            let mut f = ReplyFramer::new();
            assert_eq!(f.next(&input[..cut]).unwrap(), None, "cut at {cut}");
            assert_eq!(f.next(input).unwrap(), Some(input.len()), "cut at {cut}");
        }
    }

    #[test]
    fn lines_of_every_length_around_the_byte_loop_frame_and_resume() {
        for len in [0, 1, 29, 30, 31, 32, 33, 34, 64, 200] {
            let line = [b"+".as_slice(), &vec![b'x'; len], b"\r\n"].concat();
            let input = [line.as_slice(), b":1\r\n"].concat();
            assert_eq!(
                frame_all(&input).unwrap(),
                [line.as_slice(), b":1\r\n"],
                "line of {len}"
            );
            for cut in 0..line.len() {
                let mut f = ReplyFramer::new();
                assert_eq!(f.next(&line[..cut]).unwrap(), None, "{len} cut at {cut}");
                assert_eq!(
                    f.next(&input).unwrap(),
                    Some(line.len()),
                    "{len} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn length_lines_are_scanned_in_place() {
        let eighteen = format!("${}\r\n", "9".repeat(18));
        let mut f = ReplyFramer::new();
        assert_eq!(
            f.next(eighteen.as_bytes()).unwrap(),
            None,
            "a huge bulk, incomplete"
        );
        let nineteen = format!("${}\r\n", "9".repeat(19));
        assert_eq!(frame_all(nineteen.as_bytes()), Err(ReplyError::BadLength));
        assert_eq!(frame_all(b"$\r\n"), Err(ReplyError::BadLength));
        assert_eq!(frame_all(b"$-\r\n"), Err(ReplyError::BadLength));
        assert_eq!(frame_all(b"$+1\r\n"), Err(ReplyError::BadLength));
        assert_eq!(frame_all(b"$1 \r\n"), Err(ReplyError::BadLength));
        assert_eq!(frame_all(b"$1\rx"), Err(ReplyError::BadLength));
        assert_eq!(frame_all(b"$-2\r\n"), Err(ReplyError::BadLength));
        assert_eq!(frame_all(b"$007\r\nabcdefg\r\n").unwrap().len(), 1);
        let mut f = ReplyFramer::new();
        assert_eq!(f.next(b"$-").unwrap(), None);
        assert_eq!(f.next(b"$-1\r").unwrap(), None);
        assert_eq!(f.next(b"$-1\r\n").unwrap(), Some(5));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(frame_all(b"?x\r\n"), Err(ReplyError::BadType(b'?')));
        assert_eq!(frame_all(b"$x\r\n"), Err(ReplyError::BadLength));
        assert_eq!(frame_all(b"$1\r\nabc"), Err(ReplyError::MissingCrlf));
        assert_eq!(frame_all(b"*-2\r\n"), Err(ReplyError::BadLength));
    }

    #[test]
    fn an_endless_length_line_is_malformed() {
        let mut f = ReplyFramer::new();
        assert_eq!(f.next(b"$12345").unwrap(), None);
        assert_eq!(f.next(&[b'$'; 30]), Err(ReplyError::BadLength));
        let mut f = ReplyFramer::new();
        let mut long = b"*1\r\n*".to_vec();
        long.extend_from_slice(&[b'9'; 40]);
        assert_eq!(f.next(&long), Err(ReplyError::BadLength));
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let input = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(frame_all(&input), Err(ReplyError::TooDeep(MAX_DEPTH)));
    }

    #[test]
    fn array_elements_and_integers() {
        let r = b"*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:5\r\n";
        let els: Vec<&[u8]> = array_elements(r).unwrap().collect();
        assert_eq!(els, [&b"$1\r\na\r\n"[..], b"$-1\r\n", b"*1\r\n:5\r\n"]);
        assert!(array_elements(b"-ERR\r\n").is_none());
        assert!(array_elements(b"*-1\r\n").is_none());
        assert_eq!(integer_reply(b":-42\r\n"), Some(-42));
        assert_eq!(integer_reply(b"+OK\r\n"), None);
    }

    /// Feeds `input` in `chunk`-byte reads, keeping at most what the framer
    /// still needs (as a caller dropping an oversized reply does); returns
    /// each reply's length and the most bytes ever kept.
    fn frame_dropping(input: &[u8], chunk: usize) -> (Vec<usize>, usize) {
        let mut f = ReplyFramer::new();
        let (mut kept, mut lens, mut dropped, mut most) = (Vec::new(), Vec::new(), 0, 0);
        for piece in input.chunks(chunk) {
            kept.extend_from_slice(piece);
            loop {
                match f.next(&kept).unwrap() {
                    Some(len) => {
                        lens.push(dropped + len);
                        dropped = 0;
                        kept.drain(..len);
                    }
                    None => {
                        let d = f.discardable(kept.len());
                        f.rebase(d);
                        kept.drain(..d);
                        dropped += d;
                        break;
                    }
                }
            }
            most = most.max(kept.len());
        }
        assert!(kept.is_empty());
        (lens, most)
    }

    #[test]
    fn a_reply_can_be_framed_while_its_bytes_are_dropped() {
        let mut big = b"*3\r\n$100000\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', 100_000));
        big.extend_from_slice(b"\r\n*2\r\n:1\r\n$3\r\nabc\r\n+OK\r\n");
        // A status line of 100 kB (Redis sends one for a script's
        // status_reply), inside an array and alone.
        let mut line = b"+".to_vec();
        line.extend(std::iter::repeat_n(b'y', 100_000));
        line.extend_from_slice(b"\r\n");
        let mut lines = b"*2\r\n".to_vec();
        lines.extend_from_slice(&line);
        lines.extend_from_slice(&line);
        let mut input = big.clone();
        input.extend_from_slice(b"+NEXT\r\n$2\r\nab\r\n");
        input.extend_from_slice(&lines);
        input.extend_from_slice(&line);
        for chunk in [1, 7, 4096, 1 << 20] {
            let (lens, most) = frame_dropping(&input, chunk);
            assert_eq!(
                lens,
                [big.len(), 7, 8, lines.len(), line.len()],
                "chunk {chunk}"
            );
            if chunk <= 4096 {
                assert!(most < 2 * chunk + 32, "chunk {chunk} kept {most} bytes");
            }
        }
        // A bad terminator is still caught after the payload was dropped.
        let mut bad = b"$5\r\nab".to_vec();
        let mut f = ReplyFramer::new();
        assert_eq!(f.next(&bad).unwrap(), None);
        let d = f.discardable(bad.len());
        f.rebase(d);
        bad.drain(..d);
        bad.extend_from_slice(b"cdeXX");
        assert_eq!(f.next(&bad), Err(ReplyError::MissingCrlf));
    }
}
