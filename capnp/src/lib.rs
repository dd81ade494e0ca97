//! What keyway's data plane and control plane share, and nothing else: the
//! Cap'n Proto schemas (`schema/`), their generated code, the Rust values they
//! carry ([`snapshot`], [`control`]), the framing of the control session
//! ([`frame`]), and the one definition of which slot a key is in ([`slot`],
//! defined in `keyway-protocol`), which both planes must compute identically.
//! Both planes depend on this crate and on no other of each other's, so the
//! few small pieces they share that are not messages live here too: the
//! checksummed state-file format and atomic write ([`statefile`]), wall-clock
//! milliseconds ([`clock`]) and the duration grammar ([`duration`]). The evolution rules are at the top of each schema;
//! `tests/fixtures.rs` decodes messages written by earlier versions.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod backend_acl;
pub mod clock;
pub mod control;
pub mod duration;
pub mod frame;
pub mod generated;
/// Hash slots: defined in `keyway-protocol` (no I/O, no Cap'n Proto), re-exported
/// so the control plane computes them exactly as the data plane does.
pub use keyway_protocol::slot;
pub mod snapshot;
pub mod statefile;
pub mod users;

/// A message that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a valid Cap'n Proto message, or over the reader limits.
    #[error("malformed message: {0}")]
    Capnp(#[from] capnp::Error),
    /// Well-formed but not acceptable (bad text, unknown union member).
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Reads a standalone message with limits that bound the work a hostile
/// message can cause.
fn read_message(
    bytes: &[u8],
) -> Result<capnp::message::Reader<capnp::serialize::OwnedSegments>, DecodeError> {
    let mut opts = capnp::message::ReaderOptions::new();
    opts.traversal_limit_in_words(Some(frame::MAX_FRAME / 8 * 2))
        .nesting_limit(16);
    let mut slice = bytes;
    Ok(capnp::serialize::read_message(&mut slice, opts)?)
}
