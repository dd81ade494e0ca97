//! A [`Change`] as an event's JSON: its kind and what it names. Secrets
//! stay out: client users are listed by name only (their rules hold
//! password hashes), and an applied snapshot by its groups' names.

use serde_json::{json, Value};

use crate::model::Change;

/// The JSON of `c`.
pub fn change(c: &Change) -> Value {
    match c {
        Change::Grow { group, .. } => json!({ "kind": "grow", "group": group }),
        Change::Shrink { group } => json!({ "kind": "shrink", "group": group }),
        Change::EditGroup { group, edit, .. } => json!({
            "kind": "edit-group",
            "group": group,
            "master": edit.master,
            "zone": edit.zone,
            "add_replicas": edit.add_replicas,
            "remove_replicas": edit.remove_replicas,
            "replica_zones": edit.replica_zones,
            "read_from": edit.read_from,
        }),
        Change::Assign { slots, group } => {
            json!({ "kind": "assign", "slots": slots, "group": group })
        }
        Change::Apply { desired, force, .. } => json!({
            "kind": "apply",
            "force": force,
            "from_version": desired.version,
            "groups": desired.groups.iter().map(|g| &g.name).collect::<Vec<_>>(),
        }),
        Change::Settings {
            check_interval_ms,
            down_after_ms,
            auto_failover,
            max_lag_bytes,
            lease_ms,
        } => json!({
            "kind": "settings",
            "check_interval_ms": check_interval_ms,
            "down_after_ms": down_after_ms,
            "auto_failover": auto_failover,
            "max_lag_bytes": max_lag_bytes,
            "lease_ms": lease_ms,
        }),
        Change::Migrate {
            slots,
            to,
            settings,
            paused,
            ..
        } => json!({
            "kind": "migrate", "slots": slots, "to": to, "settings": settings, "paused": paused,
        }),
        Change::Balance {
            drain,
            settings,
            paused,
            ..
        } => json!({
            "kind": if drain.is_some() { "drain" } else { "rebalance" },
            "drain": drain, "settings": settings, "paused": paused,
        }),
        Change::Pause { id } => json!({ "kind": "pause-migration", "id": id }),
        Change::Resume { id } => json!({ "kind": "resume-migration", "id": id }),
        Change::Cancel { id, .. } => json!({ "kind": "cancel-migration", "id": id }),
        Change::Advance { ids, moving, .. } => json!({
            "kind": "advance-migrations", "ids": ids,
            "to": if *moving { "moving" } else { "blocking" },
        }),
        Change::FinishMigration { id, version, .. } => {
            json!({ "kind": "finish-migration", "id": id, "swept_under": version })
        }
        Change::BeginFailover {
            group,
            kind,
            from,
            to,
            offsets,
            ..
        } => json!({
            "kind": "begin-failover", "group": group, "failover": kind, "from": from, "to": to,
            "offsets": [offsets.0, offsets.1],
        }),
        Change::AbandonFailover { group, id, why, .. } => {
            json!({ "kind": "abandon-failover", "group": group, "id": id, "why": why })
        }
        Change::FinishFailover { group, id, .. } => {
            json!({ "kind": "finish-failover", "group": group, "id": id })
        }
        Change::SetUsers { users } => json!({
            "kind": "set-users",
            "users": users.iter().map(|u| &u.name).collect::<Vec<_>>(),
        }),
        Change::Demoted { group, address } => {
            json!({ "kind": "demoted", "group": group, "address": address })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ClientUser;

    #[test]
    fn users_are_named_and_their_rules_left_out() {
        let c = Change::SetUsers {
            users: vec![ClientUser {
                name: "app".into(),
                rules: "on #5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 ~*"
                    .into(),
            }],
        };
        let v = change(&c);
        assert_eq!(v, json!({ "kind": "set-users", "users": ["app"] }));
        assert!(!v.to_string().contains("5e88"), "no password hash");
    }
}
