//! Fuzzes the request parser, fed in two chunks the way a socket delivers bytes:
//! it must never panic, every frame it accepts must re-parse identically from a
//! fresh parser, and argument spans must lie inside the frame.
#![no_main]

use keyway_protocol::resp::{Frame, RequestLimits, RequestParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let limits = RequestLimits {
        max_request_bytes: 1 << 16,
        max_arguments: 64,
        max_bulk_bytes: 1 << 12,
        max_inline_bytes: 1 << 10,
        unauthenticated: data[0] & 1 == 1,
    };
    let cut = usize::from(data[0]) % data.len();
    let data = &data[1..];
    let mut parser = RequestParser::new(limits);
    let mut buf: Vec<u8> = Vec::new();
    for chunk in [&data[..cut.min(data.len())], &data[cut.min(data.len())..]] {
        buf.extend_from_slice(chunk);
        let mut at = 0;
        loop {
            match parser.parse(&buf[at..]) {
                Ok(Some(frame)) => {
                    assert!(frame.len() > 0 && at + frame.len() <= buf.len());
                    let args: Vec<Vec<u8>> = parser.args(&buf[at..]).iter().map(<[u8]>::to_vec).collect();
                    if let Frame::Multibulk { len } = frame {
                        let mut fresh = RequestParser::new(limits);
                        assert_eq!(fresh.parse(&buf[at..at + len]), Ok(Some(frame)));
                        let again: Vec<Vec<u8>> =
                            fresh.args(&buf[at..at + len]).iter().map(<[u8]>::to_vec).collect();
                        assert_eq!(args, again);
                    }
                    at += frame.len();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        buf.drain(..at);
    }
});
