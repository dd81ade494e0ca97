//! Keyway's benchmarks: a load generator ([`load`]) and the side-by-side harness
//! ([`harness`]) that runs direct Redis, twemproxy and keyway over the same
//! Redis in one run.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod harness;
pub mod load;
pub mod procs;
