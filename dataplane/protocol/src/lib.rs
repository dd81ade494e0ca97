//! The parts of keyway that speak Redis but do no I/O.
//!
//! - [`resp`]: the zero-copy, resumable request parser (multibulk and inline), the
//!   reply framer that finds where each backend reply ends, and RESP encoders;
//! - [`command`]: the Redis 7 command table generated from Redis's own `COMMAND`
//!   output, name lookup and key extraction from key specs;
//! - [`slot`]: CRC16/XMODEM hash slots with Redis Cluster hash-tag rules, the one
//!   definition both planes use (`keyway-capnp` re-exports it for the control plane);
//! - [`pattern`]: Redis glob patterns.
//!
//! The data plane feeds bytes in and gets byte ranges back; nothing here allocates
//! per request or touches a socket, so it is fuzzed and benchmarked on its own.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod command;
pub mod pattern;
pub mod resp;
pub mod slot;
