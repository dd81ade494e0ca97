//! Keyway's data plane: a RESP proxy that routes each Redis command to the
//! group owning its key's hash slot.
//!
//! - [`acl`]: client users and their ACL rules;
//! - [`config`]: the `keyway.toml` file and its validation;
//! - [`routing`]: the immutable slot → group table swapped on reload;
//! - [`engine`]: one core's proxy logic, with no I/O (parsing, routing,
//!   batching, reply ordering, splitting, timeouts);
//! - [`runtime`]: one pinned thread per core driving sockets (keyway's own
//!   io_uring loop, or glommio), listeners, timers, and process control
//!   (reload, shutdown);
//! - [`control`]: a managed data plane's session with keyway-ctld (snapshots,
//!   acks, lease, fencing) and its saved state;
//! - [`tls`]: TLS settings and per-connection sessions (rustls), used by
//!   the transports;
//! - [`admin`]: `/healthz` and `/table` over HTTP;
//! - [`provision`]: the restricted backend user created on every server.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod acl;
pub mod admin;
pub mod config;
pub mod control;
pub mod engine;
pub mod metrics;
pub mod provision;
pub mod resolve;
pub mod routing;
pub mod runtime;
pub mod tls;
