//! Reading the groups' `INFO` text and merging a section over groups (see
//! [`super::info`]): which fields add up, which take the largest or the
//! smallest value, which are computed again from the sums.

use super::info::Section;

/// A section's `name:value` lines, in order.
pub(crate) type Fields = Vec<(String, String)>;

/// A group's `INFO` reply parsed: each section's title and fields.
pub(crate) type Parsed = Vec<(String, Fields)>;

/// The text of an `INFO` reply: a bulk string (RESP2) or a verbatim
/// string (RESP3, `=len\r\ntxt:…`); `None` for an error or anything else.
pub(crate) fn info_text(reply: &[u8]) -> Option<String> {
    let tag = *reply.first()?;
    if tag != b'$' && tag != b'=' {
        return None;
    }
    let nl = reply.iter().position(|&b| b == b'\n')?;
    let len: usize = std::str::from_utf8(&reply[1..nl.checked_sub(1)?])
        .ok()?
        .parse()
        .ok()?;
    let body = reply.get(nl + 1..nl + 1 + len)?;
    let body = if tag == b'=' { body.get(4..)? } else { body };
    Some(String::from_utf8_lossy(body).into_owned())
}

/// Sections of an `INFO` text (`# Title` lines, then `name:value`).
pub(crate) fn parse(text: &str) -> Parsed {
    let mut out: Parsed = Vec::new();
    for line in text.split("\r\n") {
        if let Some(title) = line.strip_prefix("# ") {
            out.push((title.to_string(), Vec::new()));
        } else if let Some((k, v)) = line.split_once(':') {
            if let Some((_, f)) = out.last_mut() {
                f.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

/// The fields of section `title` in a parsed reply (none if absent).
pub(crate) fn section<'a>(p: &'a Parsed, title: &str) -> &'a Fields {
    static EMPTY: Fields = Vec::new();
    p.iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(title))
        .map_or(&EMPTY, |(_, f)| f)
}

/// How a field's values over groups become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Sum,
    Max,
    Min,
    /// The first group's value.
    First,
    /// `ok` when every group says `ok`, else the first other value.
    Status,
}

fn rule(sec: Section, name: &str) -> Rule {
    if name.ends_with("_status") {
        return Rule::Status;
    }
    match sec {
        Section::Memory => match name {
            "number_of_cached_scripts"
            | "number_of_functions"
            | "number_of_libraries"
            | "total_system_memory"
            | "active_defrag_running" => Rule::Max,
            "maxmemory_policy" | "mem_allocator" => Rule::First,
            _ => Rule::Sum,
        },
        Section::Persistence => match name {
            "rdb_last_save_time" => Rule::Min,
            "rdb_changes_since_last_save"
            | "rdb_saves"
            | "aof_rewrites"
            | "rdb_last_load_keys_expired"
            | "rdb_last_load_keys_loaded"
            | "current_save_keys_processed"
            | "current_save_keys_total" => Rule::Sum,
            _ => Rule::Max,
        },
        Section::Stats => match name {
            "expired_stale_perc" | "pubsub_patterns" | "migrate_cached_sockets" => Rule::Max,
            _ => Rule::Sum,
        },
        _ => Rule::First,
    }
}

fn combine(rule: Rule, values: &[&str]) -> String {
    let Some(&first) = values.first() else {
        return String::new();
    };
    match rule {
        Rule::First => first.to_string(),
        Rule::Status => values
            .iter()
            .find(|v| **v != "ok")
            .unwrap_or(&first)
            .to_string(),
        Rule::Sum | Rule::Max | Rule::Min => {
            if let Some(ints) = values
                .iter()
                .map(|v| v.parse::<i64>().ok())
                .collect::<Option<Vec<_>>>()
            {
                let n = match rule {
                    Rule::Sum => ints.iter().fold(0i64, |a, b| a.saturating_add(*b)),
                    Rule::Max => ints.iter().copied().max().unwrap_or(0),
                    _ => ints.iter().copied().min().unwrap_or(0),
                };
                return n.to_string();
            }
            if let Some(fs) = values
                .iter()
                .map(|v| v.parse::<f64>().ok())
                .collect::<Option<Vec<_>>>()
            {
                let n = match rule {
                    Rule::Sum => fs.iter().sum(),
                    Rule::Max => fs.iter().copied().fold(f64::MIN, f64::max),
                    _ => fs.iter().copied().fold(f64::MAX, f64::min),
                };
                return format!("{n:.2}");
            }
            first.to_string()
        }
    }
}

/// Redis's `bytesToHuman`.
pub(crate) fn human(n: u64) -> String {
    let d = n as f64;
    const K: f64 = 1024.0;
    if n < 1024 {
        format!("{n}B")
    } else if d < K * K {
        format!("{:.2}K", d / K)
    } else if d < K * K * K {
        format!("{:.2}M", d / (K * K))
    } else if d < K * K * K * K {
        format!("{:.2}G", d / (K * K * K))
    } else if d < K * K * K * K * K {
        format!("{:.2}T", d / (K * K * K * K))
    } else if d < K * K * K * K * K * K {
        format!("{:.2}P", d / (K * K * K * K * K))
    } else {
        format!("{n}B")
    }
}

/// Lowest `redis_version` first: "7.0.15" → (7, 0, 15).
fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Section `sec` merged over the groups' `theirs`, with keyway's `own`
/// fields: keyway's take the place of the groups' of the same name.
pub(crate) fn merge_section(sec: Section, own: &Fields, theirs: &[&Fields]) -> Fields {
    match sec {
        Section::Server => return merge_server(own, theirs),
        Section::Keyspace => return merge_keyspace(theirs),
        _ => {}
    }
    let mut names: Vec<&str> = Vec::new();
    for f in theirs {
        for (k, _) in f.iter() {
            if !names.contains(&k.as_str()) {
                names.push(k);
            }
        }
    }
    let mut out: Fields = Vec::new();
    for name in names {
        if let Some((_, v)) = own.iter().find(|(k, _)| k == name) {
            out.push((name.to_string(), v.clone()));
            continue;
        }
        let values: Vec<&str> = theirs
            .iter()
            .filter_map(|f| f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()))
            .collect();
        out.push((name.to_string(), combine(rule(sec, name), &values)));
    }
    for (k, v) in own {
        if !out.iter().any(|(n, _)| n == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    if sec == Section::Memory {
        recompute_memory(&mut out);
    }
    out
}

/// The memory section's ratios and `_human` fields, from the sums.
fn recompute_memory(f: &mut Fields) {
    let get = |f: &Fields, k: &str| -> Option<f64> {
        f.iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.parse::<f64>().ok())
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let used = get(f, "used_memory");
    let mut set: Vec<(&str, String)> = Vec::new();
    if let Some(r) = ratio(used, get(f, "used_memory_peak")) {
        set.push(("used_memory_peak_perc", format!("{:.2}%", r * 100.0)));
    }
    let net = match (used, get(f, "used_memory_startup")) {
        (Some(u), Some(s)) => Some(u - s),
        _ => None,
    };
    if let Some(r) = ratio(get(f, "used_memory_dataset"), net) {
        set.push(("used_memory_dataset_perc", format!("{:.2}%", r * 100.0)));
    }
    let pairs = [
        (
            "allocator_frag_ratio",
            "allocator_active",
            "allocator_allocated",
        ),
        (
            "allocator_rss_ratio",
            "allocator_resident",
            "allocator_active",
        ),
        (
            "rss_overhead_ratio",
            "used_memory_rss",
            "allocator_resident",
        ),
        ("mem_fragmentation_ratio", "used_memory_rss", "used_memory"),
    ];
    for (name, a, b) in pairs {
        if let Some(r) = ratio(get(f, a), get(f, b)) {
            set.push((name, format!("{r:.2}")));
        }
    }
    for (k, v) in f.iter_mut() {
        if let Some((_, nv)) = set.iter().find(|(n, _)| n == k) {
            *v = nv.clone();
        }
    }
    let bases: Vec<(String, Option<u64>)> = f
        .iter()
        .filter_map(|(k, _)| k.strip_suffix("_human").map(str::to_string))
        .map(|base| {
            let v = f
                .iter()
                .find(|(n, _)| *n == base)
                .and_then(|(_, v)| v.parse::<u64>().ok());
            (base, v)
        })
        .collect();
    for (base, v) in bases {
        if let Some(v) = v {
            let name = format!("{base}_human");
            if let Some((_, hv)) = f.iter_mut().find(|(n, _)| *n == name) {
                *hv = human(v);
            }
        }
    }
}

/// `server`: keyway's own fields, with `redis_version` and the build
/// fields of the group with the lowest version.
fn merge_server(own: &Fields, theirs: &[&Fields]) -> Fields {
    let lowest = theirs
        .iter()
        .filter_map(|f| {
            f.iter()
                .find(|(k, _)| k == "redis_version")
                .map(|(_, v)| (version_key(v), *f))
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, f)| f);
    let mut out = own.clone();
    if let Some(g) = lowest {
        for (k, v) in out.iter_mut() {
            if matches!(
                k.as_str(),
                "redis_version"
                    | "redis_git_sha1"
                    | "redis_git_dirty"
                    | "redis_build_id"
                    | "gcc_version"
            ) {
                if let Some((_, gv)) = g.iter().find(|(n, _)| n == k) {
                    *v = gv.clone();
                }
            }
        }
    }
    out
}

/// `keyspace`: `dbN:keys=…,expires=…,avg_ttl=…` added up per database
/// (`avg_ttl` weighted by each group's `expires`).
fn merge_keyspace(theirs: &[&Fields]) -> Fields {
    // db → (keys, expires, ttl × expires)
    let mut dbs: Vec<(String, u64, u64, u128)> = Vec::new();
    for f in theirs {
        for (db, v) in f.iter() {
            let mut keys = 0u64;
            let mut expires = 0u64;
            let mut ttl = 0u64;
            for part in v.split(',') {
                if let Some((k, n)) = part.split_once('=') {
                    let n: u64 = n.parse().unwrap_or(0);
                    match k {
                        "keys" => keys = n,
                        "expires" => expires = n,
                        "avg_ttl" => ttl = n,
                        _ => {}
                    }
                }
            }
            let i = match dbs.iter().position(|(d, ..)| d == db) {
                Some(i) => i,
                None => {
                    dbs.push((db.clone(), 0, 0, 0));
                    dbs.len() - 1
                }
            };
            let e = &mut dbs[i];
            e.1 += keys;
            e.2 += expires;
            e.3 += u128::from(ttl) * u128::from(expires);
        }
    }
    dbs.sort_by_key(|(d, ..)| d.trim_start_matches("db").parse::<u64>().unwrap_or(0));
    dbs.into_iter()
        .map(|(db, keys, expires, weighted)| {
            let avg = if expires > 0 {
                weighted / u128::from(expires)
            } else {
                0
            };
            (db, format!("keys={keys},expires={expires},avg_ttl={avg}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn info_text_reads_bulk_and_verbatim_replies() {
        assert_eq!(
            info_text(b"$13\r\n# Server\r\na:1\r\n\r\n").as_deref(),
            Some("# Server\r\na:1")
        );
        assert_eq!(
            info_text(b"=17\r\ntxt:# Server\r\na:1\r\n\r\n").as_deref(),
            Some("# Server\r\na:1")
        );
        assert_eq!(info_text(b"-ERR down\r\n"), None);
        let p = parse("# Server\r\nredis_version:7.0.15\r\n\r\n# Keyspace\r\ndb0:keys=1\r\n");
        assert_eq!(section(&p, "keyspace"), &f(&[("db0", "keys=1")]));
        assert!(section(&p, "memory").is_empty());
    }

    #[test]
    fn keyspace_adds_up_per_database() {
        let a = f(&[("db0", "keys=10,expires=2,avg_ttl=1000")]);
        let b = f(&[
            ("db0", "keys=5,expires=2,avg_ttl=3000"),
            ("db1", "keys=1,expires=0,avg_ttl=0"),
        ]);
        assert_eq!(
            merge_section(Section::Keyspace, &Vec::new(), &[&a, &b]),
            f(&[
                ("db0", "keys=15,expires=4,avg_ttl=2000"),
                ("db1", "keys=1,expires=0,avg_ttl=0")
            ])
        );
    }

    #[test]
    fn memory_sums_and_recomputes_ratios() {
        let g = f(&[
            ("used_memory", "1048576"),
            ("used_memory_human", "1.00M"),
            ("used_memory_rss", "2097152"),
            ("mem_fragmentation_ratio", "2.00"),
            ("maxmemory_policy", "noeviction"),
            ("number_of_cached_scripts", "1"),
        ]);
        let own = f(&[("keyway_used_memory", "7")]);
        let m = merge_section(Section::Memory, &own, &[&g, &g]);
        assert_eq!(
            m,
            f(&[
                ("used_memory", "2097152"),
                ("used_memory_human", "2.00M"),
                ("used_memory_rss", "4194304"),
                ("mem_fragmentation_ratio", "2.00"),
                ("maxmemory_policy", "noeviction"),
                ("number_of_cached_scripts", "1"),
                ("keyway_used_memory", "7"),
            ])
        );
    }

    #[test]
    fn persistence_says_the_most_telling_group() {
        let a = f(&[
            ("loading", "0"),
            ("rdb_last_save_time", "200"),
            ("rdb_last_bgsave_status", "ok"),
            ("rdb_changes_since_last_save", "3"),
        ]);
        let b = f(&[
            ("loading", "1"),
            ("rdb_last_save_time", "100"),
            ("rdb_last_bgsave_status", "err"),
            ("rdb_changes_since_last_save", "4"),
        ]);
        assert_eq!(
            merge_section(Section::Persistence, &Vec::new(), &[&a, &b]),
            f(&[
                ("loading", "1"),
                ("rdb_last_save_time", "100"),
                ("rdb_last_bgsave_status", "err"),
                ("rdb_changes_since_last_save", "7"),
            ])
        );
    }

    #[test]
    fn server_takes_the_lowest_version() {
        let own = f(&[
            ("redis_version", "0"),
            ("gcc_version", "0"),
            ("os", "Linux"),
        ]);
        let a = f(&[("redis_version", "7.2.1"), ("gcc_version", "12")]);
        let b = f(&[("redis_version", "7.0.15"), ("gcc_version", "10")]);
        assert_eq!(
            merge_section(Section::Server, &own, &[&a, &b]),
            f(&[
                ("redis_version", "7.0.15"),
                ("gcc_version", "10"),
                ("os", "Linux")
            ])
        );
    }

    #[test]
    fn stats_are_keyways_where_it_counts_and_summed_elsewhere() {
        let g = f(&[("total_commands_processed", "100"), ("keyspace_hits", "2")]);
        let own = f(&[("total_commands_processed", "5")]);
        assert_eq!(
            merge_section(Section::Stats, &own, &[&g, &g]),
            f(&[("total_commands_processed", "5"), ("keyspace_hits", "4")])
        );
        assert_eq!(human(1023), "1023B");
        assert_eq!(human(1536), "1.50K");
    }
}
