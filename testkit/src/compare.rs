//! The same commands sent to a real `redis-server` and through keyway, their
//! replies compared byte for byte: the expected reply is whatever Redis
//! answers, never one written by hand.

use std::net::{TcpStream, ToSocketAddrs};

use crate::resp::{closed, complete, escape, exchange, request, trailing};

/// One connection to a reference redis-server and one to keyway, fed the
/// same commands in the same order.
#[derive(Debug)]
pub struct SideBySide {
    redis: TcpStream,
    keyway: TcpStream,
}

impl SideBySide {
    /// Connects to both.
    pub fn connect(redis: impl ToSocketAddrs, keyway: impl ToSocketAddrs) -> SideBySide {
        let open = |a: &dyn Fn() -> std::io::Result<TcpStream>, what: &str| {
            let s = a().unwrap_or_else(|e| panic!("connect to {what}: {e}"));
            s.set_nodelay(true).expect("set TCP_NODELAY");
            s
        };
        SideBySide {
            redis: open(&|| TcpStream::connect(&redis), "redis-server"),
            keyway: open(&|| TcpStream::connect(&keyway), "keyway"),
        }
    }

    /// Sends one command to both and returns (redis's reply, keyway's).
    pub fn both<A: AsRef<[u8]>>(&mut self, args: &[A]) -> (Vec<u8>, Vec<u8>) {
        self.raw_both(&request(args), 1)
    }

    /// Sends the same raw bytes to both (inline or pipelined requests) and
    /// returns (redis's replies, keyway's) once `replies` replies arrived.
    ///
    /// Panics if redis-server did not give `replies` whole replies (a test
    /// that expects more replies than Redis sends compares nothing). Keyway's
    /// side includes whatever else arrives within a moment after its
    /// replies, so a reply too many shows as a difference.
    pub fn raw_both(&mut self, bytes: &[u8], replies: usize) -> (Vec<u8>, Vec<u8>) {
        let theirs = exchange(&mut self.redis, bytes, replies);
        assert!(
            complete(&theirs, replies),
            "redis-server gave fewer than {replies} replies to {}: {}",
            escape(bytes),
            escape(&theirs)
        );
        let mut ours = exchange(&mut self.keyway, bytes, replies);
        ours.extend(trailing(&mut self.keyway));
        (theirs, ours)
    }

    /// Sends one command to both; panics, showing both replies, unless they
    /// are the same bytes. Returns the reply.
    pub fn same<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Vec<u8> {
        let (theirs, ours) = self.both(args);
        let what: Vec<String> = args.iter().map(|a| escape(a.as_ref())).collect();
        assert_replies_equal(&format!("{what:?}"), &theirs, &ours);
        ours
    }

    /// [`same`](Self::same) for each command in turn.
    pub fn same_all(&mut self, cmds: &[&[&str]]) {
        for c in cmds {
            self.same(c);
        }
    }

    /// Sends the same raw bytes to both; panics unless the `replies` replies
    /// are the same bytes.
    pub fn raw_same(&mut self, bytes: &[u8], replies: usize) -> Vec<u8> {
        let (theirs, ours) = self.raw_both(bytes, replies);
        assert_replies_equal(&escape(bytes), &theirs, &ours);
        ours
    }

    /// Panics unless both servers close the connection (each within 5 s).
    pub fn same_close(&mut self) {
        let (theirs, ours) = (closed(&mut self.redis), closed(&mut self.keyway));
        assert!(
            theirs && ours,
            "expected both to close the connection: redis-server closed it: {theirs}; keyway: {ours}"
        );
    }
}

/// Sends `cmds` one at a time to redis-server at `redis` and to keyway at
/// `keyway` on a new connection to each, and asserts the replies are the same
/// bytes.
pub fn assert_same(redis: impl ToSocketAddrs, keyway: impl ToSocketAddrs, cmds: &[&[&str]]) {
    SideBySide::connect(redis, keyway).same_all(cmds);
}

/// Panics with both replies escaped and where they first differ, unless they
/// are equal.
pub fn assert_replies_equal(what: &str, redis: &[u8], keyway: &[u8]) {
    if redis == keyway {
        return;
    }
    let at = redis
        .iter()
        .zip(keyway)
        .position(|(a, b)| a != b)
        .unwrap_or(redis.len().min(keyway.len()));
    panic!(
        "keyway answers {what} unlike redis-server (first difference at byte {at}):\n  \
         redis : {}\n  keyway: {}",
        escape(redis),
        escape(keyway)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_replies_pass() {
        assert_replies_equal("PING", b"+PONG\r\n", b"+PONG\r\n");
    }

    #[test]
    #[should_panic(expected = "first difference at byte 4")]
    fn different_replies_panic_with_both() {
        assert_replies_equal("PING", b"+PONG\r\n", b"+PONK\r\n");
    }
}
