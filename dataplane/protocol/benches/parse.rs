//! Parser and routing-lookup costs per small command. Run with
//! `cargo bench -p keyway-protocol`; the target is 30 ns or less per small
//! command for parsing on the 2-core CI machines.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use keyway_protocol::command::{extract_keys, lookup, Lookup};
use keyway_protocol::resp::{Frame, ReplyFramer, RequestLimits, RequestParser};
use keyway_protocol::slot::key_slot;

const BATCH: usize = 100;

fn requests() -> Vec<u8> {
    let mut buf = Vec::new();
    for i in 0..BATCH {
        let key = format!("key:{:06}", i * 7919 % 100_000);
        if i % 2 == 0 {
            buf.extend_from_slice(
                format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes(),
            );
        } else {
            buf.extend_from_slice(
                format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$3\r\nxxx\r\n",
                    key.len()
                )
                .as_bytes(),
            );
        }
    }
    buf
}

fn parse(c: &mut Criterion) {
    let buf = requests();
    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("parse GET/SET", |b| {
        let mut p = RequestParser::new(RequestLimits::default());
        b.iter(|| {
            let mut at = 0;
            while let Ok(Some(f)) = p.parse(black_box(&buf[at..])) {
                black_box(p.args(&buf[at..]).len());
                at += f.len();
            }
            at
        })
    });
    g.bench_function("parse + lookup + keys + slot", |b| {
        let mut p = RequestParser::new(RequestLimits::default());
        let mut keys = Vec::with_capacity(8);
        b.iter(|| {
            let mut at = 0;
            let mut acc = 0u32;
            while let Ok(Some(f)) = p.parse(&buf[at..]) {
                let Frame::Multibulk { len } = f else { break };
                let args = p.args(&buf[at..]);
                if let Lookup::Found(spec) = lookup(args.get(0), args.try_get(1)) {
                    keys.clear();
                    if extract_keys(spec, &args, &mut keys).is_ok() {
                        acc = acc.wrapping_add(key_slot(args.get(keys[0] as usize), 16384));
                    }
                }
                at += len;
            }
            acc
        })
    });
    let keys: Vec<String> = (0..BATCH)
        .map(|i| format!("key:{:012}", i * 7919))
        .collect();
    g.bench_function("key_slot 16-byte keys", |b| {
        b.iter(|| {
            keys.iter().fold(0u32, |acc, k| {
                acc ^ key_slot(black_box(k.as_bytes()), 16384)
            })
        })
    });
    g.bench_function("lookup GET/SET", |b| {
        b.iter(|| {
            (0..BATCH).fold(0usize, |acc, i| {
                let name: &[u8] = if i % 2 == 0 { b"GET" } else { b"set" };
                match lookup(black_box(name), None) {
                    Lookup::Found(c) => acc + c.arity as usize,
                    _ => acc,
                }
            })
        })
    });
    g.finish();

    let mut replies = Vec::new();
    for i in 0..BATCH {
        if i % 2 == 0 {
            replies.extend_from_slice(b"$3\r\nxxx\r\n");
        } else {
            replies.extend_from_slice(b"+OK\r\n");
        }
    }
    let mut g = c.benchmark_group("reply");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("frame bulk/+OK", |b| {
        let mut f = ReplyFramer::new();
        b.iter(|| {
            let mut at = 0;
            while let Ok(Some(len)) = f.next(black_box(&replies[at..])) {
                at += len;
            }
            at
        })
    });
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
