//! Keyway's control plane.
//!
//! - [`model`]: the desired state of named clusters and its rules;
//! - [`store`]: where it is persisted (the embedded file store);
//! - [`etcd`]: the etcd store and the election of the active ctld;
//! - [`leader`]: roles (active, standby), terms, the lease safety rule, and
//!   where active-only tasks start and stop;
//! - [`daemon`]: the shared state of `keyway-ctld`: change, persist, publish;
//! - [`api`]: the HTTP JSON API and its server;
//! - [`wire`]: the API's request and response bodies, shared by the server
//!   and the CLI (which imports neither `api` nor `daemon`);
//! - [`auth`]: the shared token of the API and the control sessions;
//! - [`resolve`]: bounded resolution of the addresses the API is given;
//! - [`control`]: data-plane sessions (snapshots, heartbeats, leases);
//! - [`tls`]: the control listener's TLS (mutual, with `--tls-ca`);
//! - [`migrate`]: the migration orchestrator and the sweep of sources;
//! - [`metrics`]: ctld's Prometheus metrics, and the text format's
//!   writer and reader (`keywayctl top`);
//! - [`events`]: structured events of changes, failovers and migrations;
//! - [`health`]: health checks of every server, automatic failover and
//!   switchover;
//! - [`client`] and [`cli`]: `keywayctl`;
//! - [`local`]: `keywayctl local up|down`, a whole system on loopback.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod api;
pub mod auth;
pub mod backend_login;
pub mod cli;
pub mod client;
pub mod control;
pub mod daemon;
pub mod etcd;
pub mod events;
pub mod functions;
pub mod health;
pub mod leader;
pub mod local;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod reach;
pub mod resolve;
pub mod store;
pub mod tls;
pub mod wire;
