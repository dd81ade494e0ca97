//! Keyway's benchmarks: a load generator ([`load`]), the side-by-side harness
//! ([`harness`]) that runs direct Redis, twemproxy and keyway over the same
//! Redis in one run, the online-migration benchmark ([`migrate`]), and the
//! keyway-ctld leader-takeover benchmark ([`takeover`]), and the Pub/Sub
//! fan-out benchmark ([`pubsub`]).
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod ha;
pub mod harness;
pub mod load;
pub mod migrate;
pub mod procs;
pub mod pubsub;
pub mod takeover;
