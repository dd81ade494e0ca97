//! Bytes waiting to be written to a socket. Appends go to the end; writes take
//! from the front; the buffer resets once everything is written, and gives back
//! memory after a burst so idle connections stay small.

/// A connection's output buffer.
pub(crate) struct OutBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
    /// Bytes handed to the transport over the buffer's life (written, or
    /// taken for writing): whatever was appended before this offset may have
    /// reached the peer.
    handed: u64,
    /// Bytes last taken by a transport that writes asynchronously, until it
    /// says the write is done: still in memory, so still counted.
    in_transport: usize,
    /// Capacity kept after a burst that grew the buffer past 64 times this.
    keep: usize,
}

/// Lengths only: the bytes may hold a backend password (`AUTH`).
impl std::fmt::Debug for OutBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutBuf")
            .field("len", &self.len())
            .field("handed", &self.handed)
            .field("in_transport", &self.in_transport)
            .finish_non_exhaustive()
    }
}

impl OutBuf {
    /// An empty buffer that keeps `keep` bytes of capacity after bursts.
    pub fn new(keep: usize) -> OutBuf {
        OutBuf {
            buf: Vec::new(),
            pos: 0,
            handed: 0,
            in_transport: 0,
            keep,
        }
    }

    /// The bytes not yet written.
    #[inline]
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// How many bytes are not yet written.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether everything has been written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// The buffer to append to.
    #[inline]
    pub fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Bytes handed to the transport so far, over the buffer's life.
    #[inline]
    pub fn handed(&self) -> u64 {
        self.handed
    }

    /// The stream offset just past the last byte appended: once
    /// [`handed`](Self::handed) reaches it, everything appended so far may
    /// have reached the peer.
    #[inline]
    pub fn end_offset(&self) -> u64 {
        self.handed + self.len() as u64
    }

    /// Puts `bytes` ahead of the unwritten ones.
    pub fn prepend(&mut self, bytes: &[u8]) {
        self.buf.splice(self.pos..self.pos, bytes.iter().copied());
    }

    /// Records that `n` bytes of [`pending`](Self::pending) were written.
    #[inline]
    pub fn wrote(&mut self, n: usize) {
        self.handed += n as u64;
        self.pos += n;
        if self.pos >= self.buf.len() {
            self.clear();
        }
    }

    /// Hands the unwritten bytes over, leaving `spare` (cleared) in their place:
    /// for a transport whose writes complete later and must not see the buffer
    /// move while the kernel reads it.
    pub fn take(&mut self, mut spare: Vec<u8>) -> Vec<u8> {
        spare.clear();
        let mut out = std::mem::replace(&mut self.buf, spare);
        out.drain(..self.pos);
        self.pos = 0;
        self.handed += out.len() as u64;
        self.in_transport = out.len();
        out
    }

    /// The transport finished writing what it took last; returns how much
    /// that was.
    pub fn transport_done(&mut self) -> usize {
        std::mem::take(&mut self.in_transport)
    }

    /// Bytes this buffer accounts for in memory: unwritten, plus taken and
    /// not yet written by the transport.
    #[inline]
    pub fn held(&self) -> usize {
        self.len() + self.in_transport
    }

    /// Drops the unwritten bytes if none of them has been written yet (so
    /// they are whole replies: everything is appended a reply at a time).
    pub fn discard_if_whole(&mut self) {
        if self.pos == 0 {
            self.clear();
        }
    }

    /// Drops everything not yet written.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
        if self.buf.capacity() > 64 * self.keep {
            self.buf.shrink_to(self.keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_drain_from_the_front() {
        let mut o = OutBuf::new(16);
        o.buf_mut().extend_from_slice(b"hello world");
        o.wrote(6);
        assert_eq!(o.pending(), b"world");
        o.buf_mut().extend_from_slice(b"!");
        assert_eq!(o.len(), 6);
        o.wrote(6);
        assert!(o.is_empty());
        o.buf_mut().extend_from_slice(&[0; 4096]);
        o.wrote(4096);
        assert!(o.buf.capacity() <= 64 * 16);
    }

    #[test]
    fn take_hands_over_the_unwritten_bytes() {
        let mut o = OutBuf::new(16);
        o.buf_mut().extend_from_slice(b"abcdef");
        o.wrote(2);
        let taken = o.take(b"junk".to_vec());
        assert_eq!(taken, b"cdef");
        assert!(o.is_empty());
        o.buf_mut().extend_from_slice(b"x");
        assert_eq!(o.pending(), b"x");
        assert_eq!(o.handed(), 6, "two written, four taken");
        assert_eq!(o.end_offset(), 7);
    }

    #[test]
    fn only_whole_output_is_discarded() {
        let mut o = OutBuf::new(16);
        o.buf_mut().extend_from_slice(b"+OK\r\n+OK\r\n");
        o.wrote(3);
        o.discard_if_whole();
        assert_eq!(o.pending(), b"\r\n+OK\r\n", "a half-written reply stays");
        o.wrote(7);
        o.buf_mut().extend_from_slice(b"+OK\r\n");
        o.discard_if_whole();
        assert!(o.is_empty());
    }
}
