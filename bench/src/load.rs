//! The load generator: N connections over mio, a pipeline window per
//! connection, a command mix over a random key space.
//!
//! Closed loop (the default) keeps every window full and measures the highest
//! throughput. Open loop (`rate`) schedules requests at fixed intervals and
//! measures each latency from the request's *intended* send time, so a stall
//! that delays later requests shows in their latency instead of silently
//! lowering the offered load (coordinated omission).
//!
//! Open-loop sends are timed by a `timerfd` (nanoseconds), not by the poll
//! timeout: epoll's timeout is in whole milliseconds, so waiting on it alone
//! sends each request up to a millisecond late and measures that lateness as
//! latency.
//!
//! A request is usually one command; a transaction (`tx` in the mix) is one
//! request of four commands (`MULTI`, `SET`, `INCR`, `EXEC`) sent together,
//! answered when `EXEC`'s reply is in, so throughput counts transactions.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keyway_protocol::resp::{encode, ReplyFramer};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

/// One command type of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET key`.
    Get,
    /// `SET key value`.
    Set,
    /// `MGET k1 … kn`.
    Mget,
    /// `MSET k1 v1 … kn vn`.
    Mset,
    /// `INCR counter:r`.
    Incr,
    /// `LPUSH list:r value`.
    Lpush,
    /// `LPOP list:r`.
    Lpop,
    /// `MULTI; SET {tx:r}s value; INCR {tx:r}c; EXEC`: one request, a
    /// transaction on two keys of one slot.
    Tx,
}

impl Op {
    /// Replies one request of this op gets.
    fn replies(self) -> u32 {
        match self {
            Op::Tx => 4,
            _ => 1,
        }
    }
}

impl Op {
    /// Parses a mix entry name.
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s.to_ascii_lowercase().as_str() {
            "get" => Op::Get,
            "set" => Op::Set,
            "mget" => Op::Mget,
            "mset" => Op::Mset,
            "incr" => Op::Incr,
            "lpush" => Op::Lpush,
            "lpop" => Op::Lpop,
            "tx" => Op::Tx,
            _ => return None,
        })
    }
}

/// Parses `get=50,set=50` into weighted ops.
pub fn parse_mix(s: &str) -> Result<Vec<(Op, u32)>, String> {
    let mut mix = Vec::new();
    for part in s.split(',') {
        let (name, w) = part.split_once('=').unwrap_or((part, "1"));
        let op =
            Op::parse(name.trim()).ok_or_else(|| format!("unknown command {name:?} in the mix"))?;
        let w: u32 = w
            .trim()
            .parse()
            .map_err(|_| format!("bad weight in {part:?}"))?;
        if w > 0 {
            mix.push((op, w));
        }
    }
    if mix.is_empty() {
        return Err("the mix is empty".into());
    }
    Ok(mix)
}

/// When a run ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this many replies.
    Requests(u64),
    /// After this long.
    Duration(Duration),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Server address.
    pub addr: SocketAddr,
    /// Connections in all.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Keys are drawn uniformly from `0..keys`.
    pub keys: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Weighted command mix.
    pub mix: Vec<(Op, u32)>,
    /// Keys per MGET / MSET.
    pub multi_keys: usize,
    /// When to stop.
    pub stop: Stop,
    /// Open loop at this many requests per second in all; closed loop if `None`.
    pub rate: Option<f64>,
    /// Threads, each with its share of the connections.
    pub threads: usize,
    /// Also stop as soon as this is set (for loads that last as long as
    /// something else does).
    pub until: Option<Arc<AtomicBool>>,
    /// Also report latency per window of this length (by each request's
    /// intended send time), to see where in a run the tail comes from.
    pub window: Option<Duration>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// Replies received.
    pub requests: u64,
    /// Error replies among them.
    pub errors: u64,
    /// The first error reply, if any.
    pub first_error: Option<String>,
    /// Wall time of the run.
    pub seconds: f64,
    /// Replies per second.
    pub throughput: f64,
    /// Latency quantiles in microseconds.
    pub latency_us: Quantiles,
    /// Latency per window, if asked for ([`LoadSpec::window`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
}

/// Latency of the requests sent in one window of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The window's start, milliseconds from the run's start.
    pub start_ms: u64,
    /// Requests sent in it (and answered).
    pub requests: u64,
    /// Latency quantiles in microseconds.
    pub latency_us: Quantiles,
}

impl Quantiles {
    fn of(h: &Histogram<u64>) -> Quantiles {
        Quantiles {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Latency quantiles, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    framer: ReplyFramer,
    /// Start (closed loop) or intended send time (open loop) of each request
    /// in flight, with the replies it still waits for and whether one was an
    /// error.
    inflight: VecDeque<(Instant, u32, bool)>,
    next_send: Instant,
    writable: bool,
}

struct Generator<'a> {
    spec: &'a LoadSpec,
    rng: Rng,
    total_weight: u32,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl Generator<'_> {
    fn key(&mut self, prefix: &[u8]) -> &[u8] {
        let n = self.rng.next() % self.spec.keys.max(1);
        self.key.clear();
        self.key.extend_from_slice(prefix);
        self.key.extend_from_slice(format!("{n:012}").as_bytes());
        &self.key
    }

    fn pick(&mut self) -> Op {
        let mut r = (self.rng.next() % u64::from(self.total_weight)) as u32;
        for &(op, w) in &self.spec.mix {
            if r < w {
                return op;
            }
            r -= w;
        }
        self.spec.mix[0].0
    }

    /// Writes one request; returns how many replies it gets.
    fn write(&mut self, out: &mut Vec<u8>) -> u32 {
        let op = self.pick();
        let value = std::mem::take(&mut self.value);
        match op {
            Op::Get => self.single(out, b"GET", b"key:", None),
            Op::Set => self.single(out, b"SET", b"key:", Some(&value)),
            Op::Incr => self.single(out, b"INCR", b"counter:", None),
            Op::Lpush => self.single(out, b"LPUSH", b"list:", Some(&value)),
            Op::Lpop => self.single(out, b"LPOP", b"list:", None),
            Op::Mget | Op::Mset => {
                let n = self.spec.multi_keys.max(1);
                let with_values = op == Op::Mset;
                encode::array_header(out, 1 + n * if with_values { 2 } else { 1 });
                encode::bulk(out, if with_values { b"MSET" } else { b"MGET" });
                for _ in 0..n {
                    encode::bulk(out, self.key(b"key:"));
                    if with_values {
                        encode::bulk(out, &value);
                    }
                }
            }
            Op::Tx => {
                let n = self.rng.next() % self.spec.keys.max(1);
                encode::array_header(out, 1);
                encode::bulk(out, b"MULTI");
                self.key.clear();
                self.key
                    .extend_from_slice(format!("{{tx:{n:012}}}s").as_bytes());
                encode::array_header(out, 3);
                encode::bulk(out, b"SET");
                encode::bulk(out, &self.key);
                encode::bulk(out, &value);
                let last = self.key.len() - 1;
                self.key[last] = b'c';
                encode::array_header(out, 2);
                encode::bulk(out, b"INCR");
                encode::bulk(out, &self.key);
                encode::array_header(out, 1);
                encode::bulk(out, b"EXEC");
            }
        }
        self.value = value;
        op.replies()
    }

    fn single(&mut self, out: &mut Vec<u8>, cmd: &[u8], prefix: &[u8], value: Option<&[u8]>) {
        encode::array_header(out, 2 + usize::from(value.is_some()));
        encode::bulk(out, cmd);
        encode::bulk(out, self.key(prefix));
        if let Some(v) = value {
            encode::bulk(out, v);
        }
    }
}

struct ThreadResult {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
    windows: Vec<Histogram<u64>>,
}

/// Runs the load and returns what it measured.
pub fn run(spec: &LoadSpec) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(
        spec.connections > 0 && spec.pipeline > 0,
        "connections and pipeline must be at least 1"
    );
    let threads = spec.threads.clamp(1, spec.connections);
    let started = Instant::now();
    let results: Vec<anyhow::Result<ThreadResult>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let conns =
                    spec.connections / threads + usize::from(t < spec.connections % threads);
                let share =
                    |n: u64| n / threads as u64 + u64::from((t as u64) < n % threads as u64);
                let stop = match spec.stop {
                    Stop::Requests(n) => Stop::Requests(share(n)),
                    d => d,
                };
                let rate = spec
                    .rate
                    .map(|r| r * conns as f64 / spec.connections as f64);
                s.spawn(move || run_thread(spec, t as u64, conns, stop, rate, started))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("load thread panicked"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut requests, mut errors, mut first_error) = (0, 0, None);
    let mut windows: Vec<Histogram<u64>> = Vec::new();
    for r in results {
        let r = r?;
        requests += r.requests;
        errors += r.errors;
        first_error = first_error.or(r.first_error);
        hist.add(&r.hist)?;
        for (i, w) in r.windows.iter().enumerate() {
            match windows.get_mut(i) {
                Some(h) => h.add(w)?,
                None => windows.push(w.clone()),
            }
        }
    }
    let width = spec.window.unwrap_or_default();
    Ok(LoadResult {
        requests,
        errors,
        first_error,
        seconds,
        throughput: requests as f64 / seconds,
        latency_us: Quantiles::of(&hist),
        windows: windows
            .iter()
            .enumerate()
            .map(|(i, h)| Window {
                start_ms: (width * i as u32).as_millis() as u64,
                requests: h.len(),
                latency_us: Quantiles::of(h),
            })
            .collect(),
    })
}

fn run_thread(
    spec: &LoadSpec,
    seed: u64,
    conns: usize,
    stop: Stop,
    rate: Option<f64>,
    started: Instant,
) -> anyhow::Result<ThreadResult> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let now = Instant::now();
    let interval = rate.map(|r| Duration::from_secs_f64(conns as f64 / r.max(1e-9)));
    let timer = match interval {
        Some(_) => Some(Timer::new(poll.registry())?),
        None => None,
    };
    let mut list = Vec::with_capacity(conns);
    for i in 0..conns {
        let std_stream = std::net::TcpStream::connect(spec.addr)?;
        std_stream.set_nodelay(true)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        // Spread the open-loop schedule so connections do not send in lockstep.
        let offset = interval.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / conns as f64));
        list.push(Conn {
            stream,
            out: Vec::with_capacity(4096),
            out_pos: 0,
            inbuf: Vec::with_capacity(16384),
            framer: ReplyFramer::new(),
            inflight: VecDeque::new(),
            next_send: now + offset,
            writable: true,
        });
    }
    let mut gen = Generator {
        spec,
        rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)),
        total_weight: spec.mix.iter().map(|&(_, w)| w).sum(),
        key: Vec::with_capacity(32),
        value: vec![b'x'; spec.value_size],
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut windows: Vec<Histogram<u64>> = Vec::new();
    let (mut done, mut sent, mut errors, mut first_error) = (0u64, 0u64, 0u64, None);
    let deadline = match stop {
        Stop::Duration(d) => Some(now + d),
        Stop::Requests(_) => None,
    };
    let budget = match stop {
        Stop::Requests(n) => n,
        Stop::Duration(_) => u64::MAX,
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let now = Instant::now();
        if done >= budget
            || deadline.is_some_and(|d| now >= d)
            || spec
                .until
                .as_ref()
                .is_some_and(|u| u.load(Ordering::Relaxed))
        {
            break;
        }
        // Fill windows and write.
        for c in list.iter_mut() {
            while c.inflight.len() < spec.pipeline && sent < budget {
                let start = match interval {
                    None => now,
                    Some(iv) => {
                        if c.next_send > now {
                            break;
                        }
                        let t = c.next_send;
                        c.next_send += iv;
                        t
                    }
                };
                let replies = gen.write(&mut c.out);
                c.inflight.push_back((start, replies, false));
                sent += 1;
            }
            if c.writable && c.out_pos < c.out.len() {
                flush(c)?;
            }
        }
        let timeout = interval.map(|_| {
            let next = list
                .iter()
                .filter(|c| c.inflight.len() < spec.pipeline)
                .map(|c| c.next_send)
                .min();
            next.map_or(Duration::from_millis(10), |t| {
                t.saturating_duration_since(now)
            })
        });
        if let (Some(timer), Some(wait)) = (&timer, timeout) {
            timer.arm(wait)?;
        }
        // The timer wakes an open loop on time; the poll timeout is only a
        // fallback (and the closed loop's stall check).
        poll.poll(&mut events, Some(Duration::from_secs(10)))?;
        if events.is_empty() && interval.is_none() {
            anyhow::bail!(
                "no reply for 10 s with {} requests in flight",
                list.iter().map(|c| c.inflight.len()).sum::<usize>()
            );
        }
        for ev in events.iter() {
            if ev.token() == TIMER {
                if let Some(timer) = &timer {
                    timer.clear();
                }
                continue;
            }
            let c = &mut list[ev.token().0];
            if ev.is_writable() {
                c.writable = true;
                flush(c)?;
            }
            if !ev.is_readable() {
                continue;
            }
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => anyhow::bail!("the server closed a connection"),
                    Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
            let now = Instant::now();
            let mut at = 0;
            while let Some(len) = c.framer.next(&c.inbuf[at..])? {
                let reply = &c.inbuf[at..at + len];
                at += len;
                let (start, left, failed) = c
                    .inflight
                    .front_mut()
                    .ok_or_else(|| anyhow::anyhow!("reply without a request"))?;
                // An error reply, or a transaction's EXEC answering nil.
                if reply.first() == Some(&b'-') || (*left == 1 && reply == b"*-1\r\n") {
                    if first_error.is_none() {
                        first_error = Some(String::from_utf8_lossy(reply).trim_end().to_string());
                    }
                    *failed = true;
                }
                *left -= 1;
                if *left > 0 {
                    continue;
                }
                errors += u64::from(*failed);
                let us = now.saturating_duration_since(*start).as_micros().max(1) as u64;
                hist.saturating_record(us);
                if let Some(width) = spec.window {
                    let i = (start.saturating_duration_since(started).as_nanos()
                        / width.as_nanos().max(1)) as usize;
                    while windows.len() <= i {
                        windows.push(Histogram::new_from(&hist));
                    }
                    windows[i].saturating_record(us);
                }
                c.inflight.pop_front();
                done += 1;
            }
            c.inbuf.drain(..at);
        }
    }
    Ok(ThreadResult {
        requests: done,
        errors,
        first_error,
        hist,
        windows,
    })
}

/// The timer's token (connections are `0..conns`).
const TIMER: Token = Token(usize::MAX);

/// A one-shot `timerfd` registered with the poll: wakes it at a nanosecond's
/// precision (epoll's own timeout rounds up to a millisecond).
struct Timer(std::os::fd::OwnedFd);

impl Timer {
    fn new(registry: &mio::Registry) -> io::Result<Timer> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: plain syscalls; the descriptor is owned from here on.
        let fd = unsafe {
            // The timer slack (50 µs by default) would delay every wake-up.
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let timer = Timer(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        registry.register(
            &mut mio::unix::SourceFd(&timer.0.as_raw_fd()),
            TIMER,
            Interest::READABLE,
        )?;
        Ok(timer)
    }

    /// Fires once, `after` from now (at once if zero).
    fn arm(&self, after: Duration) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // A zero it_value disarms the timer: fire after a nanosecond instead.
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        let r =
            unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the expiry count, so that the next wait does not wake at once.
    fn clear(&self) {
        use std::os::fd::AsRawFd;
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into `n`; a non-blocking read of an unfired
        // timer fails with EAGAIN, which is fine.
        unsafe {
            libc::read(
                self.0.as_raw_fd(),
                (&mut n as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

fn flush(c: &mut Conn) -> io::Result<()> {
    while c.out_pos < c.out.len() {
        match c.stream.write(&c.out[c.out_pos..]) {
            Ok(n) => c.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.writable = false;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    c.out.clear();
    c.out_pos = 0;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse() {
        assert_eq!(
            parse_mix("get=3,set=1").unwrap(),
            vec![(Op::Get, 3), (Op::Set, 1)]
        );
        assert_eq!(parse_mix("MGET").unwrap(), vec![(Op::Mget, 1)]);
        assert!(parse_mix("get=x").is_err());
        assert!(parse_mix("frobnicate=1").is_err());
        assert!(parse_mix("get=0").is_err());
    }

    #[test]
    fn requests_are_valid_resp() {
        let spec = LoadSpec {
            addr: "127.0.0.1:1".parse().unwrap(),
            connections: 1,
            pipeline: 1,
            keys: 100,
            value_size: 5,
            mix: parse_mix("get,set,mget,mset,incr,lpush,lpop,tx").unwrap(),
            multi_keys: 3,
            stop: Stop::Requests(1),
            rate: None,
            threads: 1,
            until: None,
            window: None,
        };
        let mut g = Generator {
            spec: &spec,
            rng: Rng(7),
            total_weight: 8,
            key: Vec::new(),
            value: vec![b'x'; 5],
        };
        let mut out = Vec::new();
        let mut replies = 0;
        for _ in 0..200 {
            replies += g.write(&mut out);
        }
        let mut p = keyway_protocol::resp::RequestParser::new(Default::default());
        let mut at = 0;
        let mut n = 0;
        while let Some(f) = p.parse(&out[at..]).unwrap() {
            at += f.len();
            n += 1;
        }
        assert_eq!((n, at), (replies as usize, out.len()));
        assert!(replies > 200, "some transactions of four commands");
    }
}
