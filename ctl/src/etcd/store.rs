//! The etcd store: one key per cluster and per data plane (see the layout in
//! [`super`]), loaded when a term begins and saved by compare-and-swap.
//!
//! Each save is ONE etcd transaction that writes the keys whose value
//! changed and deletes the keys that are gone, if and only if
//! - each of those keys is as this store last read or wrote it (its
//!   `mod_revision`; a key it believes absent must not exist), and
//! - this ctld still holds the election (its leader key exists with the
//!   create revision it won with; the key goes when the election lease
//!   expires or is revoked).
//!
//! A transaction whose comparison fails writes nothing and is
//! [`StoreError::Conflict`]: never a merged state. It ends the term, as does
//! a save whose outcome is unknown (etcd did not answer within the
//! timeout, or the connection broke): what is in etcd may no longer be what
//! this ctld believes, so it steps down and whoever is active next loads
//! the state afresh.

use std::collections::BTreeMap;
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::Etcd;
use crate::leader::Term;
use crate::model::{Cluster, DataPlaneRecord, State};
use crate::store::{Store, StoreError};

/// Proof of holding the election, checked by every save: the leader key
/// and the revision it was created at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// The leader key.
    pub key: Vec<u8>,
    /// Its create revision.
    pub create_revision: i64,
}

/// The etcd store of one term.
#[derive(Debug)]
pub struct EtcdStore {
    etcd: Etcd,
    guard: Guard,
    /// Every key as this store last read or wrote it: its mod revision and
    /// value.
    known: BTreeMap<String, (i64, Vec<u8>)>,
    /// Ended on a conflict or an unknown outcome.
    term: Arc<Term>,
}

fn cluster_key(etcd: &Etcd, name: &str) -> String {
    etcd.key(&format!("clusters/{name}"))
}

fn dataplane_key(etcd: &Etcd, id: &str) -> String {
    etcd.key(&format!("dataplanes/{id}"))
}

/// Every key `state` is stored as, with its value.
fn encode(etcd: &Etcd, state: &State) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (name, c) in &state.clusters {
        out.insert(
            cluster_key(etcd, name),
            serde_json::to_vec(c).expect("a cluster serializes"),
        );
    }
    for (id, r) in &state.dataplanes {
        out.insert(
            dataplane_key(etcd, id),
            serde_json::to_vec(r).expect("a record serializes"),
        );
    }
    out
}

fn failed(what: &str, e: Option<etcd_client::Error>, timeout: std::time::Duration) -> String {
    match e {
        Some(e) => format!("{what}: {e}"),
        None => format!("{what}: no answer within {timeout:?}"),
    }
}

/// etcd refused the request itself: it was certainly not applied.
fn refused(e: &etcd_client::Error) -> bool {
    match e {
        // gRPC codes: INVALID_ARGUMENT 3, PERMISSION_DENIED 7,
        // RESOURCE_EXHAUSTED 8, FAILED_PRECONDITION 9, OUT_OF_RANGE 11,
        // UNAUTHENTICATED 16.
        etcd_client::Error::GRpcStatus(s) => {
            matches!(i32::from(s.code()), 3 | 7 | 8 | 9 | 11 | 16)
        }
        etcd_client::Error::InvalidArgs(_) => true,
        _ => false,
    }
}

impl EtcdStore {
    /// Loads the whole state in one read (one revision) and returns the
    /// store of `term`, whose saves require `guard`. A state that breaks a
    /// rule of the model is refused, as the file store refuses one.
    pub fn load(
        etcd: &Etcd,
        guard: Guard,
        term: Arc<Term>,
    ) -> Result<(EtcdStore, State), StoreError> {
        let prefix = etcd.key("");
        let p = prefix.clone();
        let kvs = etcd
            .call(move |mut c| async move {
                c.get(p, Some(GetOptions::new().with_prefix()))
                    .await
                    .map(|mut r| r.take_kvs())
            })
            .map_err(|e| StoreError::Etcd(failed("cannot read the state", e, etcd.timeout)))?;
        let mut state = State::default();
        let mut known = BTreeMap::new();
        let invalid = |key: &str, why: String| StoreError::Invalid {
            path: format!("etcd key {key}"),
            reason: why,
        };
        for kv in kvs {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(name) = rest.strip_prefix("clusters/") {
                let c: Cluster =
                    serde_json::from_slice(kv.value()).map_err(|e| invalid(&key, e.to_string()))?;
                state.clusters.insert(name.to_string(), c);
            } else if let Some(id) = rest.strip_prefix("dataplanes/") {
                let r: DataPlaneRecord =
                    serde_json::from_slice(kv.value()).map_err(|e| invalid(&key, e.to_string()))?;
                state.dataplanes.insert(id.to_string(), r);
            } else {
                continue;
            }
            known.insert(key, (kv.mod_revision(), kv.value().to_vec()));
        }
        state.validate().map_err(|e| StoreError::Invalid {
            path: format!("etcd prefix {prefix}"),
            reason: e.to_string(),
        })?;
        Ok((
            EtcdStore {
                etcd: etcd.clone(),
                guard,
                known,
                term,
            },
            state,
        ))
    }
}

impl Store for EtcdStore {
    fn save(&mut self, state: &State) -> Result<(), StoreError> {
        if let Some(why) = self.term.ended() {
            return Err(StoreError::Conflict(format!(
                "this keyway-ctld is no longer active ({why})"
            )));
        }
        let wanted = encode(&self.etcd, state);
        let mut compares = vec![Compare::create_revision(
            self.guard.key.clone(),
            CompareOp::Equal,
            self.guard.create_revision,
        )];
        let mut ops = Vec::new();
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        for (key, value) in &wanted {
            match self.known.get(key) {
                Some((_, old)) if old == value => continue,
                Some((rev, _)) => {
                    compares.push(Compare::mod_revision(key.clone(), CompareOp::Equal, *rev))
                }
                None => compares.push(Compare::version(key.clone(), CompareOp::Equal, 0)),
            }
            ops.push(TxnOp::put(key.clone(), value.clone(), None));
            puts.push(key.clone());
        }
        for (key, (rev, _)) in &self.known {
            if !wanted.contains_key(key) {
                compares.push(Compare::mod_revision(key.clone(), CompareOp::Equal, *rev));
                ops.push(TxnOp::delete(key.clone(), None));
                deletes.push(key.clone());
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        let txn = Txn::new().when(compares).and_then(ops);
        let r = self.etcd.call(move |mut c| async move { c.txn(txn).await });
        let resp = match r {
            Ok(resp) => resp,
            Err(Some(e)) if refused(&e) => {
                // etcd refused the request as such (too many keys for its
                // --max-txn-ops, too large for its --max-request-bytes):
                // nothing was written.
                return Err(StoreError::Etcd(format!("the save was refused: {e}")));
            }
            Err(e) => {
                let why = failed("a save's outcome is unknown", e, self.etcd.timeout);
                self.term.end(&why);
                return Err(StoreError::Etcd(why));
            }
        };
        if !resp.succeeded() {
            let why = format!(
                "the state in etcd changed under this keyway-ctld, or it lost the election \
                 (keys: {})",
                puts.iter()
                    .chain(&deletes)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.term.end(&format!("a save was refused: {why}"));
            return Err(StoreError::Conflict(why));
        }
        let revision = resp.header().map_or(0, |h| h.revision());
        for key in puts {
            if let Some(v) = wanted.get(&key) {
                self.known.insert(key, (revision, v.clone()));
            }
        }
        for key in deletes {
            self.known.remove(&key);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("etcd prefix {}", self.etcd.prefix)
    }

    fn kind(&self) -> crate::metrics::StoreKind {
        crate::metrics::StoreKind::Etcd
    }
}
