//! ACL category names and their bits in the command table, in Redis 7.0's
//! order (the order of `ACL CAT`).

use keyway_protocol::command::acl;

/// Every ACL category: (name, bit).
pub const CATEGORIES: &[(&str, u32)] = &[
    ("keyspace", acl::KEYSPACE),
    ("read", acl::READ),
    ("write", acl::WRITE),
    ("set", acl::SET),
    ("sortedset", acl::SORTEDSET),
    ("list", acl::LIST),
    ("hash", acl::HASH),
    ("string", acl::STRING),
    ("bitmap", acl::BITMAP),
    ("hyperloglog", acl::HYPERLOGLOG),
    ("geo", acl::GEO),
    ("stream", acl::STREAM),
    ("pubsub", acl::PUBSUB),
    ("admin", acl::ADMIN),
    ("fast", acl::FAST),
    ("slow", acl::SLOW),
    ("blocking", acl::BLOCKING),
    ("dangerous", acl::DANGEROUS),
    ("connection", acl::CONNECTION),
    ("transaction", acl::TRANSACTION),
    ("scripting", acl::SCRIPTING),
];

/// The bit of category `name` (case-insensitive, without the `@`).
pub fn category_by_name(name: &[u8]) -> Option<u32> {
    CATEGORIES
        .iter()
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
        .map(|&(_, b)| b)
}
