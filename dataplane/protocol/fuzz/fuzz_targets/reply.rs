//! Fuzzes the reply framer: never panics, and the boundaries it finds in one
//! buffer are the boundaries it finds when the same bytes arrive in two reads.
#![no_main]

use keyway_protocol::resp::ReplyFramer;
use libfuzzer_sys::fuzz_target;

fn frames(chunks: &[&[u8]]) -> Vec<usize> {
    let mut framer = ReplyFramer::new();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let mut at = 0;
        loop {
            match framer.next(&buf[at..]) {
                Ok(Some(len)) => {
                    assert!(len > 0 && at + len <= buf.len());
                    out.push(len);
                    at += len;
                }
                Ok(None) => break,
                Err(_) => return out,
            }
        }
        buf.drain(..at);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let cut = usize::from(data[0]) % data.len();
    let data = &data[1..];
    let cut = cut.min(data.len());
    let whole = frames(&[data]);
    let split = frames(&[&data[..cut], &data[cut..]]);
    assert_eq!(whole, split);
});
