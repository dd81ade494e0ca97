//! Client users and their ACL rules, as Redis 7.0's ACL has them.
//!
//! Users are written in Redis's `ACL SETUSER` rule syntax (`on >pass ~app:*
//! +@all -@dangerous`): [`rules`] parses a user's rules into a [`User`]
//! (passwords kept only as SHA-256, as Redis keeps them), [`describe`] writes
//! a user back as `ACL LIST` and `ACL GETUSER` show it, [`check`] decides
//! whether a user may run a request, and [`Users`] is the set of users one
//! config (or snapshot) defines, swapped as a whole on reload with the rest
//! of `LiveConfig`.
//!
//! The request path pays one test per request for a client that needs no
//! check (`ClientState::acl_free`: authenticated, or no password needed, and
//! a user that may run every command on every key and channel). Other
//! clients pay a bit test for the command (a bitset over the command
//! table's ids, precomputed per user) and, unless the user has `allkeys`/
//! `allchannels`, a glob match of each key or channel against the user's
//! patterns, without allocating.

mod categories;
pub mod check;
mod describe;
pub mod rules;
mod users;

pub use categories::{category_by_name, CATEGORIES};
pub use check::Denied;
pub use rules::{hash_password, RuleError, User};
pub use users::{UserConfig, Users};
