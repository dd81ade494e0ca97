//! Keyway's data plane: a RESP proxy that routes each Redis command to the
//! group owning its key's hash slot.
//!
//! - [`config`]: the `keyway.toml` file and its validation;
//! - [`routing`]: the immutable slot → group table swapped on reload;
//! - [`engine`]: one core's proxy logic, with no I/O (parsing, routing,
//!   batching, reply ordering, splitting, timeouts);
//! - [`runtime`]: the glommio driver — one pinned executor per core, listeners,
//!   sockets, timers — and process control (reload, shutdown).
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod config;
pub mod engine;
pub mod routing;
pub mod runtime;
