//! The request parser: multibulk (`*N\r\n$len\r\narg\r\n…`) and inline
//! (`GET key\r\n`) requests, parsed in place and resumably.
//!
//! The parser is at least as strict as Redis's own (`processMultibulkBuffer`):
//! whatever it accepts, Redis parses the same way, so a request it forwards can
//! never desynchronize a backend connection that other clients share.

use super::inline::split_inline;
use super::{Args, Span};

/// Longest integer line (`*N` / `$N`) accepted, in digits and sign.
const MAX_INT_DIGITS: usize = 20;

/// Size limits on requests; exceeding one is a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest whole request frame, in bytes.
    pub max_request_bytes: usize,
    /// Most arguments in one request, command name included.
    pub max_arguments: usize,
    /// Largest single argument, in bytes (Redis's `proto-max-bulk-len`).
    pub max_bulk_bytes: usize,
    /// Longest inline request line (Redis's fixed 64 KiB).
    pub max_inline_bytes: usize,
    /// The client has yet to authenticate: a request past `max_arguments`
    /// or `max_bulk_bytes` gets Redis's `unauthenticated multibulk length`
    /// / `unauthenticated bulk length` errors (see [`RequestLimits::
    /// unauthenticated`]).
    pub unauthenticated: bool,
}

impl RequestLimits {
    /// What Redis 7.0 allows a client that must still authenticate: 10
    /// arguments of at most 16384 bytes each.
    pub fn unauthenticated(self) -> RequestLimits {
        RequestLimits {
            max_arguments: self.max_arguments.min(10),
            max_bulk_bytes: self.max_bulk_bytes.min(16384),
            unauthenticated: true,
            ..self
        }
    }
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_request_bytes: 512 << 20,
            max_arguments: 1 << 20,
            max_bulk_bytes: 512 << 20,
            max_inline_bytes: 64 << 10,
            unauthenticated: false,
        }
    }
}

/// A malformed or oversized request. The connection must be closed after the
/// error is reported, since the stream can no longer be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*` followed by something that is not a valid count.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$` followed by something that is not a valid length.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An argument does not start with `$`.
    #[error("Protocol error: expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    /// A bulk argument is not followed by CRLF.
    #[error("Protocol error: bulk argument not terminated by CRLF")]
    MissingCrlf,
    /// An integer line without its CRLF after too many bytes.
    #[error("Protocol error: too big count string")]
    CountTooLong,
    /// More arguments than `max_arguments`.
    #[error("Protocol error: too many arguments ({got}, the limit is {limit})")]
    TooManyArguments {
        /// Announced count.
        got: u64,
        /// Configured limit.
        limit: usize,
    },
    /// A request larger than `max_request_bytes`.
    #[error("Protocol error: request larger than the limit of {limit} bytes")]
    RequestTooLarge {
        /// Configured limit.
        limit: usize,
    },
    /// An inline request line longer than the limit.
    #[error("Protocol error: too big inline request")]
    InlineTooLarge,
    /// More than 10 arguments before authentication (Redis's text).
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulk,
    /// An argument longer than 16384 bytes before authentication.
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulk,
    /// An inline request with an unterminated quote.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// A complete request at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A multibulk request of `len` bytes; its arguments index the caller's buffer
    /// and its bytes can be forwarded as they are.
    Multibulk {
        /// Bytes the frame occupies.
        len: usize,
    },
    /// An inline request of `len` bytes; its arguments index the parser's own
    /// buffer (quotes and escapes resolved) and it must be re-encoded to forward.
    Inline {
        /// Bytes the frame occupies.
        len: usize,
    },
    /// A request with no arguments (`*0`, `*-1`, a blank line): Redis ignores it.
    Empty {
        /// Bytes the frame occupies.
        len: usize,
    },
}

impl Frame {
    /// Bytes the frame occupies in the input.
    #[inline]
    pub fn len(&self) -> usize {
        match *self {
            Frame::Multibulk { len } | Frame::Inline { len } | Frame::Empty { len } => len,
        }
    }

    /// Whether the frame occupies no bytes (never true for a parsed frame).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A resumable request parser; one per client connection.
///
/// Call [`parse`](Self::parse) with a buffer that starts at the current frame. On
/// `Ok(None)` keep the bytes and call again, with the same start and more bytes
/// appended: parsing resumes after the last complete argument. On `Ok(Some(f))`
/// the arguments are available from [`args`](Self::args) until the next call;
/// the next frame starts `f.len()` bytes later.
#[derive(Debug)]
pub struct RequestParser {
    limits: RequestLimits,
    spans: Vec<Span>,
    inline: Vec<u8>,
    /// Arguments announced by the frame in progress; 0 when between frames.
    argc: usize,
    /// Where parsing resumes within the frame in progress.
    pos: usize,
    /// Bytes the frame in progress needs before it can make progress.
    needed: usize,
    inline_frame: bool,
}

enum Int {
    Value(i64, usize),
    Incomplete,
    Invalid,
}

/// Parses `[-]digits\r\n` at `pos` the way Redis's `string2ll` does: no `+`, no
/// spaces, no leading zeros.
#[inline]
fn parse_int(buf: &[u8], pos: usize) -> Int {
    let mut i = pos;
    let neg = buf.get(i) == Some(&b'-');
    if neg {
        i += 1;
    }
    let digits_start = i;
    let mut v: i64 = 0;
    while let Some(&b) = buf.get(i) {
        if b.is_ascii_digit() {
            if i - pos >= MAX_INT_DIGITS {
                return Int::Invalid;
            }
            v = v.wrapping_mul(10).wrapping_add(i64::from(b - b'0'));
            i += 1;
            continue;
        }
        let ndigits = i - digits_start;
        if b != b'\r' || ndigits == 0 || ndigits > 18 {
            return Int::Invalid;
        }
        if buf[digits_start] == b'0' && (ndigits > 1 || neg) {
            return Int::Invalid;
        }
        return match buf.get(i + 1) {
            None => Int::Incomplete,
            Some(b'\n') => Int::Value(if neg { -v } else { v }, i + 2),
            Some(_) => Int::Invalid,
        };
    }
    if i - pos > MAX_INT_DIGITS {
        Int::Invalid
    } else {
        Int::Incomplete
    }
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: RequestLimits) -> RequestParser {
        RequestParser {
            limits,
            spans: Vec::with_capacity(8),
            inline: Vec::new(),
            argc: 0,
            pos: 0,
            needed: 0,
            inline_frame: false,
        }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> RequestLimits {
        self.limits
    }

    /// Replaces the limits; takes effect from the next frame.
    pub fn set_limits(&mut self, limits: RequestLimits) {
        self.limits = limits;
    }

    /// Whether a frame is partly parsed (its bytes must be kept).
    #[inline]
    pub fn in_progress(&self) -> bool {
        self.argc != 0 || self.pos != 0
    }

    /// How many bytes, from the frame start, the frame in progress needs before
    /// the next call can make progress: a hint for sizing the read buffer.
    #[inline]
    pub fn bytes_needed(&self) -> usize {
        self.needed
    }

    /// The arguments of the frame last returned; `input` is the buffer that was
    /// passed to [`parse`](Self::parse).
    #[inline]
    pub fn args<'a>(&'a self, input: &'a [u8]) -> Args<'a> {
        if self.inline_frame {
            Args::new(&self.inline, &self.spans)
        } else {
            Args::new(input, &self.spans)
        }
    }

    fn start_frame(&mut self) {
        self.spans.clear();
        if self.spans.capacity() > 4096 {
            self.spans.shrink_to(64);
        }
        self.inline_frame = false;
        self.pos = 0;
        self.argc = 0;
        self.needed = 0;
    }

    fn finish(&mut self, frame: Frame) -> Result<Option<Frame>, ProtocolError> {
        self.argc = 0;
        self.pos = 0;
        self.needed = 0;
        Ok(Some(frame))
    }

    /// Parses the frame at the start of `buf`; see the type's documentation.
    #[inline]
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        if !self.in_progress() {
            self.start_frame();
            match buf.first() {
                None => return Ok(None),
                Some(b'*') => {}
                Some(_) => return self.parse_inline(buf),
            }
            match parse_int(buf, 1) {
                Int::Incomplete => {
                    self.needed = buf.len() + 1;
                    return Ok(None);
                }
                Int::Invalid => return Err(self.fail(ProtocolError::InvalidMultibulkLength)),
                Int::Value(n, next) => {
                    if n <= 0 {
                        return self.finish(Frame::Empty { len: next });
                    }
                    if n > i64::from(i32::MAX) {
                        return Err(self.fail(ProtocolError::InvalidMultibulkLength));
                    }
                    if n as u64 > self.limits.max_arguments as u64 {
                        if self.limits.unauthenticated {
                            return Err(self.fail(ProtocolError::UnauthenticatedMultibulk));
                        }
                        return Err(self.fail(ProtocolError::TooManyArguments {
                            got: n as u64,
                            limit: self.limits.max_arguments,
                        }));
                    }
                    self.argc = n as usize;
                    self.pos = next;
                    self.spans.reserve(self.argc.min(1024));
                }
            }
        }
        self.parse_bulks(buf)
    }

    #[inline]
    fn parse_bulks(&mut self, buf: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        let mut pos = self.pos;
        while self.spans.len() < self.argc {
            match buf.get(pos) {
                None => {
                    self.pos = pos;
                    self.needed = pos + 1;
                    return Ok(None);
                }
                Some(b'$') => {}
                Some(&other) => return Err(self.fail(ProtocolError::ExpectedBulk(other))),
            }
            let (len, data) = match parse_int(buf, pos + 1) {
                Int::Incomplete => {
                    self.pos = pos;
                    self.needed = buf.len() + 1;
                    return Ok(None);
                }
                Int::Invalid => return Err(self.fail(ProtocolError::InvalidBulkLength)),
                Int::Value(n, next) => {
                    if n < 0 || n as u64 > self.limits.max_bulk_bytes as u64 {
                        if n >= 0 && self.limits.unauthenticated {
                            return Err(self.fail(ProtocolError::UnauthenticatedBulk));
                        }
                        return Err(self.fail(ProtocolError::InvalidBulkLength));
                    }
                    (n as usize, next)
                }
            };
            let end = data + len + 2;
            if end > self.limits.max_request_bytes {
                let limit = self.limits.max_request_bytes;
                return Err(self.fail(ProtocolError::RequestTooLarge { limit }));
            }
            if buf.len() < end {
                self.pos = pos;
                self.needed = end;
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(self.fail(ProtocolError::MissingCrlf));
            }
            self.spans.push(Span::new(data, len));
            pos = end;
        }
        self.finish(Frame::Multibulk { len: pos })
    }

    fn parse_inline(&mut self, buf: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        let window = &buf[..buf.len().min(self.limits.max_inline_bytes)];
        let Some(nl) = memchr::memchr(b'\n', window) else {
            if buf.len() >= self.limits.max_inline_bytes {
                return Err(self.fail(ProtocolError::InlineTooLarge));
            }
            // Not in progress: an inline line is rescanned whole (it is short).
            self.needed = buf.len() + 1;
            return Ok(None);
        };
        let line = &buf[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.inline.clear();
        if split_inline(line, &mut self.inline, &mut self.spans).is_err() {
            return Err(self.fail(ProtocolError::UnbalancedQuotes));
        }
        if self.inline.capacity() > 2 * self.limits.max_inline_bytes {
            self.inline.shrink_to(self.limits.max_inline_bytes);
        }
        let len = nl + 1;
        if self.spans.is_empty() {
            return self.finish(Frame::Empty { len });
        }
        self.inline_frame = true;
        self.finish(Frame::Inline { len })
    }

    fn fail(&mut self, e: ProtocolError) -> ProtocolError {
        self.argc = 0;
        self.pos = 0;
        self.needed = 0;
        self.spans.clear();
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut p = RequestParser::new(RequestLimits::default());
        let mut out = Vec::new();
        let mut at = 0;
        while at < input.len() {
            match p.parse(&input[at..])? {
                None => break,
                Some(f) => {
                    if !matches!(f, Frame::Empty { .. }) {
                        out.push(p.args(&input[at..]).iter().map(<[u8]>::to_vec).collect());
                    }
                    at += f.len();
                }
            }
        }
        Ok(out)
    }

    fn words(ws: &[&str]) -> Vec<Vec<u8>> {
        ws.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk() {
        let got = parse_all(b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(got, vec![words(&["GET", "foo"]), words(&["PING"])]);
    }

    #[test]
    fn binary_safe_arguments() {
        let got = parse_all(b"*2\r\n$3\r\nSET\r\n$4\r\na\r\nb\r\n").unwrap();
        assert_eq!(got, vec![vec![b"SET".to_vec(), b"a\r\nb".to_vec()]]);
        let got = parse_all(b"*1\r\n$0\r\n\r\n").unwrap();
        assert_eq!(got, vec![vec![Vec::new()]]);
    }

    #[test]
    fn empty_requests_are_skipped() {
        assert_eq!(
            parse_all(b"*0\r\n*-1\r\n\r\n*1\r\n$4\r\nPING\r\n").unwrap(),
            vec![words(&["PING"])]
        );
    }

    #[test]
    fn incomplete_then_resumed() {
        let mut p = RequestParser::new(RequestLimits::default());
        let full = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        for cut in 0..full.len() {
            assert_eq!(p.parse(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(
            p.parse(full).unwrap(),
            Some(Frame::Multibulk { len: full.len() })
        );
        assert_eq!(p.args(full).get(2), b"hello");
    }

    #[test]
    fn bytes_needed_covers_a_large_bulk() {
        let mut p = RequestParser::new(RequestLimits::default());
        assert_eq!(p.parse(b"*2\r\n$3\r\nSET\r\n$100\r\nab").unwrap(), None);
        assert_eq!(p.bytes_needed(), 13 + 6 + 100 + 2);
    }

    #[test]
    fn malformed_multibulk() {
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*x\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*01\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*1\rx", ProtocolError::InvalidMultibulkLength),
            (b"*+1\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*99999999999\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*1\r\n:1\r\n", ProtocolError::ExpectedBulk(b':')),
            (b"*1\r\n$-1\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$03\r\nabc\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$ 3\r\nabc\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$3\r\nabcde", ProtocolError::MissingCrlf),
            (
                b"*111111111111111111111111",
                ProtocolError::InvalidMultibulkLength,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_all(input),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_are_enforced_before_data_arrives() {
        let limits = RequestLimits {
            max_request_bytes: 64,
            max_arguments: 3,
            max_bulk_bytes: 32,
            max_inline_bytes: 16,
            unauthenticated: false,
        };
        let mut p = RequestParser::new(limits);
        assert!(matches!(
            p.parse(b"*4\r\n"),
            Err(ProtocolError::TooManyArguments { got: 4, limit: 3 })
        ));
        assert_eq!(
            p.parse(b"*1\r\n$33\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            p.parse(b"*3\r\n$30\r\n"),
            Ok(None),
            "30 bytes fit; the next argument decides"
        );
        let big = b"*3\r\n$30\r\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n$30\r\n";
        assert_eq!(
            p.parse(big),
            Err(ProtocolError::RequestTooLarge { limit: 64 })
        );
        assert_eq!(
            p.parse(b"GET aaaaaaaaaaaaaaaaaaaaa"),
            Err(ProtocolError::InlineTooLarge)
        );
    }

    #[test]
    fn inline_requests() {
        assert_eq!(parse_all(b"PING\r\n").unwrap(), vec![words(&["PING"])]);
        assert_eq!(
            parse_all(b"SET  k   v\n").unwrap(),
            vec![words(&["SET", "k", "v"])]
        );
        assert_eq!(
            parse_all(b"SET k \"a b\\n\\x41\"\r\n").unwrap(),
            vec![vec![b"SET".to_vec(), b"k".to_vec(), b"a b\nA".to_vec()]]
        );
        assert_eq!(
            parse_all(b"SET k 'it\\'s'\r\n").unwrap(),
            vec![words(&["SET", "k", "it's"])]
        );
        assert_eq!(parse_all(b"   \r\n").unwrap(), Vec::<Vec<Vec<u8>>>::new());
        assert_eq!(
            parse_all(b"SET k \"ab\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse_all(b"SET k \"ab\"c\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn inline_then_multibulk_in_one_buffer() {
        let got = parse_all(b"PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nECHO x\n").unwrap();
        assert_eq!(
            got,
            vec![
                words(&["PING"]),
                words(&["ECHO", "hi"]),
                words(&["ECHO", "x"])
            ]
        );
    }
}
