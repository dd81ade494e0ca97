//! Framing on the control session: a 4-byte little-endian length, then that
//! many bytes of a Cap'n Proto message (standard flat serialization). The
//! length is checked against a limit before anything is allocated for it.

use std::io::{self, Read, Write};

/// The largest frame accepted: a snapshot of 16384 single-slot ranges and a
/// thousand groups is well under a megabyte.
pub const MAX_FRAME: usize = 16 << 20;

/// A frame that cannot be accepted.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced length exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The announced length is zero.
    #[error("empty frame")]
    Empty,
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Checks an announced frame length against `limit`.
pub fn check_len(header: [u8; 4], limit: usize) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(len)
}

/// `message` with its length prefix.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + message.len());
    out.extend_from_slice(&(message.len() as u32).to_le_bytes());
    out.extend_from_slice(message);
    out
}

/// Reads one frame's message bytes.
pub fn read_frame(r: &mut impl Read, limit: usize) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)?;
    let len = check_len(header, limit)?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, message: &[u8]) -> io::Result<()> {
    w.write_all(&frame(message))?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").unwrap();
        write_frame(&mut wire, b"x").unwrap();
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r, 100).unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 100).unwrap(), b"x");
        assert!(matches!(read_frame(&mut r, 100), Err(FrameError::Io(_))));
    }

    #[test]
    fn oversized_and_empty_frames_are_refused_before_allocating() {
        let huge = (u32::MAX).to_le_bytes();
        assert!(matches!(
            check_len(huge, MAX_FRAME),
            Err(FrameError::TooLarge { .. })
        ));
        let mut r = &huge[..];
        assert!(matches!(
            read_frame(&mut r, MAX_FRAME),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            check_len([0; 4], MAX_FRAME),
            Err(FrameError::Empty)
        ));
    }
}
