//! `keyway-cmdgen`: generates keyway's command table from a real Redis server.
//!
//! It starts `redis-server` on a private unix socket (no TCP port), reads the raw
//! replies of `COMMAND`, `COMMAND DOCS` and `INFO server`, and writes three files
//! under `dataplane/protocol/src/command/`:
//!
//! - `table.rs`: one `CommandSpec` per command and subcommand (arity, flags, ACL
//!   categories, key specs), plus byte ranges into the two blobs;
//! - `data/commands.resp`: the raw `COMMAND` reply, served for `COMMAND` and
//!   sliced for `COMMAND INFO`;
//! - `data/docs.resp`: the raw `COMMAND DOCS` reply, sliced for `COMMAND DOCS`.
//!
//! Usage: `cargo run -p keyway-cmdgen [-- --check] [--redis-server PATH]`.
//! `--check` writes nothing and exits 1 when the checked-in files differ from what
//! the installed Redis produces.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

mod resp;

use resp::{parse, Val};

/// Command flags Redis 7 may report, in the order of the bits in
/// `keyway_protocol::command::flag`.
const FLAGS: &[&str] = &[
    "write",
    "readonly",
    "denyoom",
    "module",
    "admin",
    "pubsub",
    "noscript",
    "blocking",
    "loading",
    "stale",
    "skip_monitor",
    "skip_slowlog",
    "asking",
    "fast",
    "no_auth",
    "may_replicate",
    "sentinel",
    "only_sentinel",
    "no_mandatory_keys",
    "protected",
    "no_async_loading",
    "no_multi",
    "movablekeys",
    "allow_busy",
];

/// ACL categories, in the order of the bits in `keyway_protocol::command::acl`.
const CATEGORIES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// Key spec flags, in the order of the bits in `keyway_protocol::command::key_flag`.
const KEY_FLAGS: &[&str] = &[
    "RO",
    "RW",
    "OW",
    "RM",
    "access",
    "update",
    "insert",
    "delete",
    "not_key",
    "incomplete",
    "variable_flags",
];

struct Args {
    redis_server: String,
    out: PathBuf,
    check: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        redis_server: "redis-server".to_string(),
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/src/command"),
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" => args.check = true,
            "--redis-server" => {
                args.redis_server = it.next().ok_or("--redis-server needs a path")?
            }
            "--out" => args.out = PathBuf::from(it.next().ok_or("--out needs a directory")?),
            "-h" | "--help" => {
                return Err(
                    "usage: keyway-cmdgen [--check] [--redis-server PATH] [--out DIR]".into(),
                )
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// A redis-server on a private unix socket, killed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Server {
    fn start(bin: &str) -> Result<(Server, UnixStream), String> {
        let dir = std::env::temp_dir().join(format!("keyway-cmdgen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let sock = dir.join("redis.sock");
        let child = Command::new(bin)
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(&sock)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {bin}: {e}"))?;
        let server = Server { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = UnixStream::connect(&sock) {
                return Ok((server, s));
            }
            if Instant::now() > deadline {
                return Err(format!("{bin} did not open {} within 10s", sock.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends one command and returns the raw bytes of its complete reply.
fn query(s: &mut UnixStream, args: &[&str]) -> Result<Vec<u8>, String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        let _ = write!(req, "${}\r\n{a}\r\n", a.len());
    }
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        if let Some((_, end)) = parse(&buf, 0) {
            if end == buf.len() {
                return Ok(buf);
            }
            return Err("trailing bytes after reply".into());
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("redis closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyway-cmdgen: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let args = parse_args()?;
    let (_server, mut conn) = Server::start(&args.redis_server)?;
    // Redis lists commands in hash order, which changes from run to run: sort
    // them (and their subcommands) so the output is reproducible.
    let commands = canonical_commands(&query(&mut conn, &["COMMAND"])?)?;
    let docs = canonical_docs(&query(&mut conn, &["COMMAND", "DOCS"])?)?;
    let info = query(&mut conn, &["INFO", "server"])?;
    let version = redis_version(&info)?;

    let table = generate(&version, &commands, &docs)?;
    let files: [(PathBuf, &[u8]); 3] = [
        (args.out.join("table.rs"), table.as_bytes()),
        (args.out.join("data/commands.resp"), &commands),
        (args.out.join("data/docs.resp"), &docs),
    ];
    if args.check {
        let mut stale = false;
        for (path, want) in &files {
            let have = std::fs::read(path).unwrap_or_default();
            if have != *want {
                eprintln!(
                    "stale: {} (regenerate with `cargo run -p keyway-cmdgen`)",
                    path.display()
                );
                stale = true;
            }
        }
        return Ok(if stale {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    std::fs::create_dir_all(args.out.join("data")).map_err(|e| e.to_string())?;
    for (path, bytes) in &files {
        std::fs::write(path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn name_of(entry: &Val) -> Vec<u8> {
    entry
        .array()
        .and_then(|a| a.first())
        .and_then(Val::text)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

/// `COMMAND`'s reply with entries, and each entry's subcommands, sorted by name.
fn canonical_commands(raw: &[u8]) -> Result<Vec<u8>, String> {
    fn entry(raw: &[u8], e: &Val, out: &mut Vec<u8>) -> Result<(), String> {
        let a = e.array().ok_or("command entry is not an array")?;
        if a.len() != 10 {
            return Err(format!("command entry has {} fields, expected 10", a.len()));
        }
        out.extend_from_slice(b"*10\r\n");
        out.extend_from_slice(&raw[a[0].start..a[8].end]);
        list(raw, a[9].array().ok_or("subcommands")?, out)
    }
    fn list(raw: &[u8], items: &[Val], out: &mut Vec<u8>) -> Result<(), String> {
        let mut items: Vec<&Val> = items.iter().collect();
        items.sort_by_key(|e| name_of(e));
        out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
        for e in items {
            entry(raw, e, out)?;
        }
        Ok(())
    }
    let (top, _) = parse(raw, 0).ok_or("bad COMMAND reply")?;
    let mut out = Vec::with_capacity(raw.len());
    list(raw, top.array().ok_or("COMMAND is not an array")?, &mut out)?;
    Ok(out)
}

/// `COMMAND DOCS`'s reply with commands, and each doc's subcommands, sorted by name.
fn canonical_docs(raw: &[u8]) -> Result<Vec<u8>, String> {
    fn map(raw: &[u8], items: &[Val], out: &mut Vec<u8>) -> Result<(), String> {
        let mut pairs: Vec<&[Val]> = items.chunks(2).collect();
        pairs.sort_by_key(|p| p[0].text().map(<[u8]>::to_vec));
        out.extend_from_slice(format!("*{}\r\n", pairs.len() * 2).as_bytes());
        for p in pairs {
            let [name, doc] = p else {
                return Err("odd COMMAND DOCS map".into());
            };
            out.extend_from_slice(&raw[name.start..name.end]);
            let fields = doc.array().ok_or("doc is not a map")?;
            out.extend_from_slice(format!("*{}\r\n", fields.len()).as_bytes());
            for kv in fields.chunks(2) {
                out.extend_from_slice(&raw[kv[0].start..kv[0].end]);
                if kv[0].text() == Some(b"subcommands") {
                    map(raw, kv[1].array().ok_or("subcommands is not a map")?, out)?;
                } else {
                    out.extend_from_slice(&raw[kv[1].start..kv[1].end]);
                }
            }
        }
        Ok(())
    }
    let (top, _) = parse(raw, 0).ok_or("bad COMMAND DOCS reply")?;
    let mut out = Vec::with_capacity(raw.len());
    map(
        raw,
        top.array().ok_or("COMMAND DOCS is not an array")?,
        &mut out,
    )?;
    Ok(out)
}

fn redis_version(info: &[u8]) -> Result<String, String> {
    let (v, _) = parse(info, 0).ok_or("bad INFO reply")?;
    let text = String::from_utf8_lossy(v.bulk().ok_or("INFO is not a bulk string")?).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| "INFO has no redis_version".to_string())
}

/// Byte ranges of each command's `COMMAND DOCS` pair (name and doc map), by full name.
fn doc_ranges(docs: &[u8]) -> Result<BTreeMap<String, (usize, usize)>, String> {
    fn walk(items: &[Val], out: &mut BTreeMap<String, (usize, usize)>) -> Result<(), String> {
        for pair in items.chunks(2) {
            let [name, doc] = pair else {
                return Err("odd COMMAND DOCS map".into());
            };
            let name = String::from_utf8_lossy(name.bulk().ok_or("doc name is not a bulk")?)
                .to_ascii_lowercase();
            out.insert(name, (pair[0].start, doc.end));
            if let Some(sub) = doc.map_get("subcommands") {
                walk(sub.array().ok_or("subcommands is not a map")?, out)?;
            }
        }
        Ok(())
    }
    let (top, _) = parse(docs, 0).ok_or("bad COMMAND DOCS reply")?;
    let mut out = BTreeMap::new();
    walk(top.array().ok_or("COMMAND DOCS is not an array")?, &mut out)?;
    Ok(out)
}

fn generate(version: &str, commands: &[u8], docs: &[u8]) -> Result<String, String> {
    let (top, _) = parse(commands, 0).ok_or("bad COMMAND reply")?;
    let docs = doc_ranges(docs)?;
    let mut entries: Vec<&Val> = top
        .array()
        .ok_or("COMMAND is not an array")?
        .iter()
        .collect();
    entries.sort_by_key(|e| {
        e.array()
            .and_then(|a| a.first())
            .and_then(Val::bulk)
            .map(<[u8]>::to_vec)
    });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "// @generated by keyway-cmdgen from Redis {version}. Do not edit: run `cargo run -p keyway-cmdgen`.\n\
         use super::{{acl, flag, key_flag, Begin, Blob, CommandSpec, Find, KeySpec}};\n\n\
         /// The Redis version whose `COMMAND` output this table was generated from.\n\
         pub const REDIS_VERSION: &str = \"{version}\";\n\n\
         /// Every Redis command, sorted by name; subcommands nested in their container.\n\
         pub static COMMANDS: &[CommandSpec] = &["
    );
    let mut next_id = 0u16;
    for e in &entries {
        emit_command(&mut out, e, &docs, 1, &mut next_id)?;
    }
    out.push_str("];\n");
    let _ = writeln!(
        out,
        "\n/// How many commands and subcommands the table holds (ids are `0..COMMAND_IDS`).\n\
         pub const COMMAND_IDS: usize = {next_id};"
    );
    Ok(out)
}

fn bits(names: &[&str], known: &[&str], module: &str, strip: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for n in names {
        let n = n.strip_prefix(strip).unwrap_or(n);
        if !known.contains(&n) {
            return Err(format!(
                "unknown {module} {n:?}: teach keyway-cmdgen and keyway-protocol about it"
            ));
        }
        parts.push(format!("{module}::{}", n.to_ascii_uppercase()));
    }
    Ok(if parts.is_empty() {
        "0".to_string()
    } else {
        parts.join(" | ")
    })
}

fn strings(v: &Val) -> Result<Vec<String>, String> {
    v.array()
        .ok_or("expected an array of strings")?
        .iter()
        .map(|s| {
            s.text()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .ok_or_else(|| "expected a string".into())
        })
        .collect()
}

fn emit_command(
    out: &mut String,
    e: &Val,
    docs: &BTreeMap<String, (usize, usize)>,
    depth: usize,
    next_id: &mut u16,
) -> Result<(), String> {
    let a = e.array().ok_or("command entry is not an array")?;
    if a.len() < 10 {
        return Err("command entry has fewer than 10 fields".into());
    }
    let name = String::from_utf8_lossy(a[0].bulk().ok_or("name")?).to_ascii_lowercase();
    let arity = a[1].int().ok_or("arity")?;
    let flags: Vec<String> = strings(&a[2])?;
    let flags = bits(
        &flags.iter().map(String::as_str).collect::<Vec<_>>(),
        FLAGS,
        "flag",
        "",
    )?;
    let cats: Vec<String> = strings(&a[6])?;
    let cats = bits(
        &cats.iter().map(String::as_str).collect::<Vec<_>>(),
        CATEGORIES,
        "acl",
        "@",
    )?;
    let pad = "    ".repeat(depth);
    let (ds, de) = docs.get(&name).copied().unwrap_or((0, 0));
    let id = *next_id;
    *next_id += 1;
    let _ = writeln!(
        out,
        "{pad}CommandSpec {{ id: {id}, name: \"{name}\", arity: {arity}, flags: {flags}, acl: {cats}, \
         info: Blob {{ start: {}, len: {} }}, docs: Blob {{ start: {ds}, len: {} }},",
        e.start,
        e.end - e.start,
        de - ds
    );
    let _ = write!(out, "{pad}    key_specs: &[");
    for ks in a[8].array().ok_or("key specs")? {
        emit_key_spec(out, ks)?;
    }
    out.push_str("],\n");
    let subs = a[9].array().ok_or("subcommands")?;
    if subs.is_empty() {
        let _ = writeln!(out, "{pad}    subcommands: &[] }},");
    } else {
        let mut subs: Vec<&Val> = subs.iter().collect();
        subs.sort_by_key(|e| {
            e.array()
                .and_then(|a| a.first())
                .and_then(Val::bulk)
                .map(<[u8]>::to_vec)
        });
        let _ = writeln!(out, "{pad}    subcommands: &[");
        for s in subs {
            emit_command(out, s, docs, depth + 2, next_id)?;
        }
        let _ = writeln!(out, "{pad}    ] }},");
    }
    Ok(())
}

fn emit_key_spec(out: &mut String, ks: &Val) -> Result<(), String> {
    let flags = strings(ks.map_get("flags").ok_or("key spec without flags")?)?;
    let flags = bits(
        &flags.iter().map(String::as_str).collect::<Vec<_>>(),
        KEY_FLAGS,
        "key_flag",
        "",
    )?;
    let bs = ks
        .map_get("begin_search")
        .ok_or("key spec without begin_search")?;
    let bs_type = bs
        .map_get("type")
        .and_then(Val::text)
        .ok_or("begin_search type")?;
    let bs_spec = bs.map_get("spec").ok_or("begin_search spec")?;
    let begin = match bs_type {
        b"index" => format!(
            "Begin::Index({})",
            bs_spec.map_get("index").and_then(Val::int).ok_or("index")?
        ),
        b"keyword" => format!(
            "Begin::Keyword {{ keyword: \"{}\", startfrom: {} }}",
            String::from_utf8_lossy(
                bs_spec
                    .map_get("keyword")
                    .and_then(Val::text)
                    .ok_or("keyword")?
            ),
            bs_spec
                .map_get("startfrom")
                .and_then(Val::int)
                .ok_or("startfrom")?
        ),
        b"unknown" => "Begin::Unknown".to_string(),
        other => {
            return Err(format!(
                "unknown begin_search type {:?}",
                String::from_utf8_lossy(other)
            ))
        }
    };
    let fk = ks
        .map_get("find_keys")
        .ok_or("key spec without find_keys")?;
    let fk_type = fk
        .map_get("type")
        .and_then(Val::text)
        .ok_or("find_keys type")?;
    let fk_spec = fk.map_get("spec").ok_or("find_keys spec")?;
    let int = |k: &str| {
        fk_spec
            .map_get(k)
            .and_then(Val::int)
            .ok_or_else(|| format!("find_keys {k}"))
    };
    let find = match fk_type {
        b"range" => format!(
            "Find::Range {{ lastkey: {}, step: {}, limit: {} }}",
            int("lastkey")?,
            int("keystep")?,
            int("limit")?
        ),
        b"keynum" => format!(
            "Find::Keynum {{ keynumidx: {}, firstkey: {}, step: {} }}",
            int("keynumidx")?,
            int("firstkey")?,
            int("keystep")?
        ),
        b"unknown" => "Find::Unknown".to_string(),
        other => {
            return Err(format!(
                "unknown find_keys type {:?}",
                String::from_utf8_lossy(other)
            ))
        }
    };
    let _ = write!(
        out,
        "KeySpec {{ begin: {begin}, find: {find}, flags: {flags} }}, "
    );
    Ok(())
}
