//! RESP on the wire, without I/O.
//!
//! - [`RequestParser`] parses client requests (multibulk and inline) in place:
//!   arguments come back as [`Span`]s of the caller's buffer, and a request split
//!   across reads resumes where it stopped instead of rescanning;
//! - [`ReplyFramer`] finds where each backend reply ends, so replies are forwarded
//!   byte for byte, never decoded and re-encoded;
//! - [`encode`] writes the few replies the proxy produces itself.

pub mod encode;
mod inline;
mod reply;
mod request;

pub use reply::{array_elements, integer_reply, ReplyError, ReplyFramer};
pub use request::{Frame, ProtocolError, RequestLimits, RequestParser};

/// A byte range of a buffer: where one argument lies in a request frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Offset of the first byte.
    pub start: u32,
    /// Length in bytes.
    pub len: u32,
}

impl Span {
    /// A span of `len` bytes at `start`.
    #[inline]
    pub fn new(start: usize, len: usize) -> Span {
        Span {
            start: start as u32,
            len: len as u32,
        }
    }

    /// The bytes of `buf` this span covers.
    #[inline]
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..(self.start + self.len) as usize]
    }
}

/// A request's arguments: spans over the buffer that holds the frame.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    buf: &'a [u8],
    spans: &'a [Span],
}

impl<'a> Args<'a> {
    /// Arguments `spans` of `buf`.
    #[inline]
    pub fn new(buf: &'a [u8], spans: &'a [Span]) -> Args<'a> {
        Args { buf, spans }
    }

    /// The number of arguments, command name included.
    #[inline]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no arguments.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Argument `i`; panics if out of range (callers check arity first).
    #[inline]
    pub fn get(&self, i: usize) -> &'a [u8] {
        self.spans[i].of(self.buf)
    }

    /// Argument `i`, if present.
    #[inline]
    pub fn try_get(&self, i: usize) -> Option<&'a [u8]> {
        self.spans.get(i).map(|s| s.of(self.buf))
    }

    /// The spans themselves.
    #[inline]
    pub fn spans(&self) -> &'a [Span] {
        self.spans
    }

    /// The buffer the spans index.
    #[inline]
    pub fn buf(&self) -> &'a [u8] {
        self.buf
    }

    /// Iterates over the arguments.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let buf = self.buf;
        self.spans.iter().map(move |s| s.of(buf))
    }
}
