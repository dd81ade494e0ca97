//! Blocking commands: `BLPOP`, `BRPOP`, `BLMOVE`, `BRPOPLPUSH`, `BLMPOP`,
//! `BZPOPMIN`, `BZPOPMAX`, `BZMPOP`, `XREAD … BLOCK`, `XREADGROUP … BLOCK`.
//!
//! Each is sent on a connection dedicated to its client (see
//! [`super::dedicated`]), so that it blocks no other client of the core.
//! While it is blocked the client's later requests are read but not run
//! (Redis runs nothing of a blocked client either); the reply ends the block,
//! gives the connection back and lets the client go on. The reply is awaited
//! as long as the command's own timeout plus `backend.timeout` (forever for
//! a timeout of 0): see [`deadline_ms`].
//!
//! A client that leaves while blocked (closes, or is closed) gives its
//! connection back at once: keyway sends `CLIENT UNBLOCK` for it, and the
//! block ends with the command's timeout reply. If the command had popped
//! elements before the unblock reached Redis, its reply carries them and
//! nobody would read it: keyway pushes them back where they were taken from
//! ([`Restore`], [`restore_command`]): `LPUSH` for a pop from the left,
//! `RPUSH` for one from the right, `ZADD` with their scores for a sorted
//! set, in an order that puts each element back in its place. `BLMOVE` and
//! `BRPOPLPUSH` need nothing: the element is in the destination list, as it
//! would be in Redis had the client left just after; `XREAD` consumes
//! nothing; `XREADGROUP` leaves its entries in the group's pending list,
//! where `XPENDING`/`XCLAIM` find them, as in Redis.

use keyway_protocol::resp::{array_elements, encode, Args, Frame, RequestParser};

use crate::routing::GroupIndex;

/// What to do with the elements a blocking command popped for a client
/// that has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// Nothing was taken (or it is where Redis would leave it).
    Nothing,
    /// `LPUSH` them back (popped from the left).
    PushLeft,
    /// `RPUSH` them back (popped from the right).
    PushRight,
    /// `ZADD` them back with their scores.
    ZAdd,
}

/// Where a blocking command keeps its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The last argument, in seconds (`BLPOP k… timeout`).
    LastSeconds,
    /// The first argument, in seconds (`BLMPOP timeout numkeys …`).
    FirstSeconds,
    /// A `BLOCK ms` option (`XREAD`, `XREADGROUP`).
    BlockOption,
}

/// A blocking command as keyway serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    timeout: Timeout,
    restore: RestoreRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestoreRule {
    Always(Restore),
    /// `BLMPOP`: `LEFT` or `RIGHT` after the keys.
    ListDirection,
}

impl Blocking {
    /// The blocking form of command `name`, if it has one.
    pub fn of(name: &str) -> Option<Blocking> {
        use RestoreRule::*;
        use Timeout::*;
        let (timeout, restore) = match name {
            "blpop" => (LastSeconds, Always(Restore::PushLeft)),
            "brpop" => (LastSeconds, Always(Restore::PushRight)),
            "blmove" | "brpoplpush" => (LastSeconds, Always(Restore::Nothing)),
            "bzpopmin" | "bzpopmax" => (LastSeconds, Always(Restore::ZAdd)),
            "blmpop" => (FirstSeconds, ListDirection),
            "bzmpop" => (FirstSeconds, Always(Restore::ZAdd)),
            "xread" | "xreadgroup" => (BlockOption, Always(Restore::Nothing)),
            _ => return None,
        };
        Some(Blocking { timeout, restore })
    }

    /// How elements this call pops are put back if its client leaves.
    pub fn restore(&self, args: &Args<'_>) -> Restore {
        match self.restore {
            RestoreRule::Always(r) => r,
            RestoreRule::ListDirection => {
                // BLMPOP timeout numkeys key… LEFT|RIGHT [COUNT n]
                let numkeys = args
                    .try_get(2)
                    .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok());
                match numkeys.and_then(|n| args.try_get(3 + n)) {
                    Some(d) if d.eq_ignore_ascii_case(b"right") => Restore::PushRight,
                    _ => Restore::PushLeft,
                }
            }
        }
    }

    /// The command's block in milliseconds: `Some(0)` forever, `None` if
    /// keyway cannot read it (see [`deadline_ms`]).
    pub fn block_ms(&self, args: &Args<'_>) -> Option<u64> {
        let seconds = |a: &[u8]| -> Option<u64> {
            let s: f64 = std::str::from_utf8(a).ok()?.trim().parse().ok()?;
            (s.is_finite() && s >= 0.0).then(|| (s * 1000.0).ceil() as u64)
        };
        match self.timeout {
            Timeout::LastSeconds => seconds(args.get(args.len() - 1)),
            Timeout::FirstSeconds => seconds(args.try_get(1)?),
            Timeout::BlockOption => {
                let ms: i64 = std::str::from_utf8(args.try_get(stream_block_at(args)?)?)
                    .ok()?
                    .parse()
                    .ok()?;
                u64::try_from(ms).ok()
            }
        }
    }

    /// Whether the call can be sent again after a new table moved its keys
    /// (see [`Again`]): not an `XREAD` from `$`, which would then skip what
    /// was added meanwhile; its timeout reply goes to the client instead.
    pub fn can_resend(&self, args: &Args<'_>) -> bool {
        if self.timeout != Timeout::BlockOption {
            return true;
        }
        let streams = (1..args.len()).find(|&i| args.get(i).eq_ignore_ascii_case(b"streams"));
        match streams {
            Some(s) => !(s + 1..args.len()).any(|i| args.get(i) == b"$"),
            None => true,
        }
    }
}

/// Where the value of an `XREAD`/`XREADGROUP` call's `BLOCK` option is,
/// reading its options by position (`GROUP g c`, `COUNT n`, `BLOCK ms`,
/// `NOACK`) up to `STREAMS`, so that a group or consumer named "block" is
/// not taken for the option.
pub fn stream_block_at(args: &Args<'_>) -> Option<usize> {
    let mut i = 1;
    while i < args.len() {
        let a = args.get(i);
        if a.eq_ignore_ascii_case(b"streams") {
            return None;
        }
        if a.eq_ignore_ascii_case(b"block") {
            return (i + 1 < args.len()).then_some(i + 1);
        }
        i += if a.eq_ignore_ascii_case(b"group") {
            3
        } else if a.eq_ignore_ascii_case(b"count") {
            2
        } else {
            1
        };
    }
    None
}

/// A blocked command as sent, to send again (with what is left of its
/// timeout) when a new table moves its keys to another group: keyway ends
/// the block at Redis (`CLIENT UNBLOCK`), and the timeout reply that comes
/// back sends the command again, routed by the new table (see
/// [`Again::frame_for`]). A reply with elements (the pop won the race) is
/// the client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Again {
    pub frame: Box<[u8]>,
    pub blocking: Blocking,
    /// The group it blocks on.
    pub group: GroupIndex,
    /// When it was sent, and its block (`Some(0)`: forever).
    pub started_ms: u64,
    pub block_ms: Option<u64>,
    /// Keyway is ending the block to send it again.
    pub unblocking: bool,
    /// It may be sent again ([`Blocking::can_resend`]).
    pub resend: bool,
}

impl Again {
    /// The command again with what is left of its timeout at `now_ms`, or
    /// `None` if its time is up (the timeout reply is the answer).
    pub fn frame_for(&self, now_ms: u64) -> Option<Vec<u8>> {
        let left = match self.block_ms? {
            0 => 0,
            ms => {
                let spent = now_ms.saturating_sub(self.started_ms);
                if spent >= ms {
                    return None;
                }
                ms - spent
            }
        };
        let mut p = RequestParser::new(super::stateful::trusted_limits());
        let Ok(Some(Frame::Multibulk { .. })) = p.parse(&self.frame) else {
            return None;
        };
        let args = p.args(&self.frame);
        let at = match self.blocking.timeout {
            Timeout::LastSeconds => args.len() - 1,
            Timeout::FirstSeconds => 1,
            Timeout::BlockOption => stream_block_at(&args)?,
        };
        let value = match self.blocking.timeout {
            Timeout::BlockOption => left.to_string(),
            _ => format!("{}.{:03}", left / 1000, left % 1000),
        };
        let mut out = Vec::with_capacity(self.frame.len() + 8);
        encode::array_header(&mut out, args.len());
        for (i, a) in args.iter().enumerate() {
            encode::bulk(&mut out, if i == at { value.as_bytes() } else { a });
        }
        Some(out)
    }
}

/// A timeout reply: nothing was popped or read.
pub(crate) fn is_timeout_reply(reply: &[u8]) -> bool {
    // (`_`: RESP3's null, on a RESP3 client's connection.)
    reply == b"*-1\r\n" || reply == b"$-1\r\n" || reply == b"_\r\n"
}

/// The `sent_ms` that makes the backend reply timeout (`timeout_ms` after
/// it, see `Backends::expired`) fire only `block_ms` after `now_ms` too; a
/// block of 0 (forever) never times out, nor one keyway cannot read (Redis
/// reads timeouts more liberally, `0x10` say: it either refuses the call at
/// once or blocks).
pub(crate) fn deadline_ms(now_ms: u64, block_ms: Option<u64>) -> u64 {
    match block_ms {
        Some(0) | None => u64::MAX / 2,
        Some(ms) => now_ms.saturating_add(ms),
    }
}

/// The payload of a bulk string element (`$3\r\nabc\r\n` → `abc`).
fn bulk(el: &[u8]) -> Option<&[u8]> {
    let eol = el.iter().position(|&c| c == b'\r')?;
    if el.first() == Some(&b',') {
        // A RESP3 double (a score popped for a RESP3 client), in the
        // `%.17g` text ZADD reads back exactly.
        return el.get(1..eol);
    }
    if el.first() != Some(&b'$') {
        return None;
    }
    let n: usize = std::str::from_utf8(&el[1..eol]).ok()?.parse().ok()?;
    el.get(eol + 2..eol + 2 + n)
}

/// The command that puts back what an orphaned blocking command's `reply`
/// popped, if anything; `None` when there is nothing to put back (a nil
/// reply, a timeout, an error, `Restore::Nothing`).
pub(crate) fn restore_command(restore: Restore, reply: &[u8]) -> Option<Vec<u8>> {
    let mut top = array_elements(reply)?;
    let key = bulk(top.next()?)?;
    let rest: Vec<&[u8]> = top.collect();
    // Either [key, elem] / [key, member, score], or [key, [elems…]].
    let items: Vec<&[u8]> = match rest.as_slice() {
        [nested] if nested.first() == Some(&b'*') => array_elements(nested)?.collect(),
        _ => rest,
    };
    let mut args: Vec<&[u8]> = Vec::new();
    match restore {
        Restore::Nothing => return None,
        Restore::PushLeft | Restore::PushRight => {
            // Popped in order e1, e2…: pushing en … e1 puts e1 back at the
            // end it was taken from.
            for el in items.iter().rev() {
                args.push(bulk(el)?);
            }
        }
        Restore::ZAdd => {
            // [member, score] flat (BZPOPMIN) or as pairs (BZMPOP).
            let mut flat: Vec<&[u8]> = Vec::new();
            for el in &items {
                match array_elements(el) {
                    Some(pair) => flat.extend(pair),
                    None => flat.push(el),
                }
            }
            for pair in flat.chunks(2) {
                let [member, score] = pair else { return None };
                args.push(bulk(score)?);
                args.push(bulk(member)?);
            }
        }
    }
    if args.is_empty() {
        return None;
    }
    let name: &[u8] = match restore {
        Restore::PushLeft => b"LPUSH",
        Restore::PushRight => b"RPUSH",
        _ => b"ZADD",
    };
    let mut out = Vec::new();
    encode::array_header(&mut out, 2 + args.len());
    encode::bulk(&mut out, name);
    encode::bulk(&mut out, key);
    for a in args {
        encode::bulk(&mut out, a);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use keyway_protocol::resp::{Frame, RequestParser};

    use super::*;

    fn with_args<T>(req: &str, f: impl FnOnce(&Args<'_>) -> T) -> T {
        let mut p = RequestParser::new(Default::default());
        let buf = format!("{req}\r\n").into_bytes();
        let Ok(Some(Frame::Inline { .. })) = p.parse(&buf) else {
            panic!("{req}")
        };
        let args = p.args(&buf);
        f(&args)
    }

    #[test]
    fn timeouts_are_read_where_each_command_keeps_them() {
        let b = Blocking::of("blpop").unwrap();
        assert_eq!(with_args("BLPOP a b 1.5", |a| b.block_ms(a)), Some(1500));
        assert_eq!(with_args("BLPOP a 0", |a| b.block_ms(a)), Some(0));
        assert_eq!(with_args("BLPOP a x", |a| b.block_ms(a)), None);
        assert_eq!(with_args("BLPOP a -1", |a| b.block_ms(a)), None);
        let m = Blocking::of("bzmpop").unwrap();
        assert_eq!(with_args("BZMPOP 2 1 z MIN", |a| m.block_ms(a)), Some(2000));
        let x = Blocking::of("xread").unwrap();
        assert_eq!(
            with_args("XREAD COUNT 2 BLOCK 250 STREAMS s 0", |a| x.block_ms(a)),
            Some(250)
        );
        assert_eq!(deadline_ms(10, Some(0)), u64::MAX / 2);
        assert_eq!(deadline_ms(10, Some(5)), 15);
        assert_eq!(deadline_ms(10, None), u64::MAX / 2);
        let x = Blocking::of("xreadgroup").unwrap();
        assert_eq!(
            with_args("XREADGROUP GROUP block 100 BLOCK 0 STREAMS s >", |a| x
                .block_ms(a)),
            Some(0),
            "a group named block is not the option"
        );
        assert!(!with_args("XREAD BLOCK 0 STREAMS s $", |a| x.can_resend(a)));
        assert!(with_args("XREAD BLOCK 0 STREAMS s 0-0", |a| x.can_resend(a)));
    }

    #[test]
    fn a_command_sent_again_keeps_what_is_left_of_its_timeout() {
        let again = |req: &str, block_ms: Option<u64>| Again {
            frame: cmd(&req.split(' ').collect::<Vec<_>>()).into(),
            blocking: Blocking::of(&req.split(' ').next().unwrap().to_lowercase()).unwrap(),
            group: 0,
            started_ms: 1_000,
            block_ms,
            unblocking: true,
            resend: true,
        };
        assert_eq!(
            again("BLPOP q 2", Some(2000)).frame_for(1_500),
            Some(cmd(&["BLPOP", "q", "1.500"]))
        );
        assert_eq!(
            again("BLPOP q 2", Some(2000)).frame_for(3_000),
            None,
            "time is up"
        );
        assert_eq!(
            again("BLPOP q 0", Some(0)).frame_for(99_000),
            Some(cmd(&["BLPOP", "q", "0.000"])),
            "forever stays forever"
        );
        assert_eq!(
            again("BZMPOP 1 1 z MIN", Some(1000)).frame_for(1_250),
            Some(cmd(&["BZMPOP", "0.750", "1", "z", "MIN"]))
        );
        assert_eq!(
            again("XREAD BLOCK 500 STREAMS s $", Some(500)).frame_for(1_100),
            Some(cmd(&["XREAD", "BLOCK", "400", "STREAMS", "s", "$"]))
        );
        assert!(is_timeout_reply(b"*-1\r\n") && is_timeout_reply(b"$-1\r\n"));
        assert!(is_timeout_reply(b"_\r\n"));
        assert!(!is_timeout_reply(b"*0\r\n"));
    }

    #[test]
    fn blmpop_restores_to_the_side_it_popped_from() {
        let b = Blocking::of("blmpop").unwrap();
        assert_eq!(
            with_args("BLMPOP 0 2 a b RIGHT COUNT 2", |a| b.restore(a)),
            Restore::PushRight
        );
        assert_eq!(
            with_args("BLMPOP 0 1 a left", |a| b.restore(a)),
            Restore::PushLeft
        );
    }

    fn cmd(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        encode::array_header(&mut out, parts.len());
        for p in parts {
            encode::bulk(&mut out, p.as_bytes());
        }
        out
    }

    #[test]
    fn popped_elements_are_pushed_back_in_place() {
        let blpop = b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n";
        assert_eq!(
            restore_command(Restore::PushLeft, blpop),
            Some(cmd(&["LPUSH", "q", "x"]))
        );
        let blmpop = b"*2\r\n$1\r\nq\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        assert_eq!(
            restore_command(Restore::PushLeft, blmpop),
            Some(cmd(&["LPUSH", "q", "b", "a"])),
            "a was the head: pushed last"
        );
        assert_eq!(
            restore_command(Restore::PushRight, blmpop),
            Some(cmd(&["RPUSH", "q", "b", "a"])),
            "a was the tail: pushed last"
        );
        let bzpop = b"*3\r\n$1\r\nz\r\n$1\r\nm\r\n$3\r\n1.5\r\n";
        assert_eq!(
            restore_command(Restore::ZAdd, bzpop),
            Some(cmd(&["ZADD", "z", "1.5", "m"]))
        );
        let bzmpop =
            b"*2\r\n$1\r\nz\r\n*2\r\n*2\r\n$1\r\nm\r\n$1\r\n1\r\n*2\r\n$1\r\nn\r\n$1\r\n2\r\n";
        assert_eq!(
            restore_command(Restore::ZAdd, bzmpop),
            Some(cmd(&["ZADD", "z", "1", "m", "2", "n"]))
        );
        // RESP3 (a RESP3 client's connection): scores are doubles.
        let bzpop3 = b"*3\r\n$1\r\nz\r\n$1\r\nm\r\n,1.5\r\n";
        assert_eq!(
            restore_command(Restore::ZAdd, bzpop3),
            Some(cmd(&["ZADD", "z", "1.5", "m"]))
        );
        assert_eq!(restore_command(Restore::PushLeft, b"_\r\n"), None);
        assert_eq!(restore_command(Restore::PushLeft, b"*-1\r\n"), None);
        assert_eq!(restore_command(Restore::Nothing, blpop), None);
        assert_eq!(restore_command(Restore::PushLeft, b"-ERR x\r\n"), None);
    }
}
