//! keyway-ctld's desired state: named clusters and the data planes known to
//! serve them. Pure data and rules; the daemon persists and publishes it.
//!
//! Every operation is linear in the size of the cluster and of its input,
//! and everything the API accepts is bounded ([`names`], [`slots`],
//! [`migration::check_settings`]); [`Cluster::validate`] is the one check
//! of a whole cluster, used on every change and on the store's load.

pub mod addresses;
pub mod change;
pub mod cluster;
pub mod ha;
pub mod migration;
pub mod names;
pub mod slots;
pub mod users;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use addresses::Resolved;
pub use change::{Applied, Change, GroupChanges};
pub use cluster::{Cluster, Group, ReadFrom, Replica};
pub use ha::{FailoverKind, FailoverProgress, FailoverRecord, HaSettings};
pub use migration::{Migration, MigrationState, MoveSettings};
pub use slots::{OwnedRange, SlotSet};
pub use users::ClientUser;

/// How a request to change the state failed; maps to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorKind {
    /// Malformed or out-of-range input (400).
    Invalid,
    /// No such cluster, group or replica (404).
    NotFound,
    /// Clashes with the current state (409).
    Conflict,
    /// Refused by a rule, e.g. shrinking a group that owns slots (403).
    Forbidden,
}

/// A refused change, with a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    /// The kind.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
}

impl ModelError {
    /// A 400.
    pub fn invalid(m: impl Into<String>) -> ModelError {
        ModelError {
            kind: ErrorKind::Invalid,
            message: m.into(),
        }
    }
    /// A 404.
    pub fn not_found(m: impl Into<String>) -> ModelError {
        ModelError {
            kind: ErrorKind::NotFound,
            message: m.into(),
        }
    }
    /// A 409.
    pub fn conflict(m: impl Into<String>) -> ModelError {
        ModelError {
            kind: ErrorKind::Conflict,
            message: m.into(),
        }
    }
    /// A 403.
    pub fn forbidden(m: impl Into<String>) -> ModelError {
        ModelError {
            kind: ErrorKind::Forbidden,
            message: m.into(),
        }
    }
}

/// A rule of [`State::validate`] that a state breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A cluster is filed under a name that is not its own.
    #[error("cluster {filed:?} is filed under another name ({name:?})")]
    ClusterMisfiled {
        /// The name it is filed under.
        filed: String,
        /// Its own name.
        name: String,
    },
    /// A cluster breaks a rule of [`Cluster::validate`].
    #[error("cluster {cluster:?}: {source}")]
    Cluster {
        /// The cluster.
        cluster: String,
        /// The rule.
        #[source]
        source: ModelError,
    },
    /// A data plane is filed under an id that is not its own.
    #[error("data plane {filed:?} is filed under another id ({id:?})")]
    DataPlaneMisfiled {
        /// The id it is filed under.
        filed: String,
        /// Its own id.
        id: String,
    },
}

/// A data plane ctld has heard from (kept across ctld restarts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPlaneRecord {
    /// Its id.
    pub id: String,
    /// The cluster it serves.
    pub cluster: String,
    /// Where its clients connect.
    pub address: String,
    /// The newest version it has acked.
    pub acked_version: u64,
}

/// Everything ctld persists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Clusters by name.
    pub clusters: BTreeMap<String, Cluster>,
    /// Data planes by id.
    #[serde(default)]
    pub dataplanes: BTreeMap<String, DataPlaneRecord>,
}

impl State {
    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Result<&Cluster, ModelError> {
        self.clusters
            .get(name)
            .ok_or_else(|| ModelError::not_found(format!("no cluster {name:?}")))
    }

    /// A cluster by name, to change.
    pub fn cluster_mut(&mut self, name: &str) -> Result<&mut Cluster, ModelError> {
        self.clusters
            .get_mut(name)
            .ok_or_else(|| ModelError::not_found(format!("no cluster {name:?}")))
    }

    /// Checks every cluster ([`Cluster::validate`]) and that each record is
    /// filed under its own id and name; the error names the cluster or data
    /// plane and the rule.
    pub fn validate(&self) -> Result<(), StateError> {
        for (name, c) in &self.clusters {
            if *name != c.name {
                return Err(StateError::ClusterMisfiled {
                    filed: name.clone(),
                    name: c.name.clone(),
                });
            }
            c.validate().map_err(|source| StateError::Cluster {
                cluster: name.clone(),
                source,
            })?;
        }
        for (id, r) in &self.dataplanes {
            if *id != r.id {
                return Err(StateError::DataPlaneMisfiled {
                    filed: id.clone(),
                    id: r.id.clone(),
                });
            }
        }
        Ok(())
    }
}
