//! Property tests: parsing a byte stream gives the same frames however it is cut
//! into reads, for requests and for replies.

use keyway_protocol::resp::{encode, Args, Frame, ReplyFramer, RequestLimits, RequestParser, Span};
use proptest::prelude::*;

/// Feeds `stream` in chunks of the given sizes, the way a connection does: bytes
/// accumulate in a buffer, complete frames are taken from its front.
fn requests_in_chunks(stream: &[u8], cuts: &[usize]) -> Vec<Vec<Vec<u8>>> {
    let mut parser = RequestParser::new(RequestLimits::default());
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut fed = 0;
    let mut cuts = cuts.iter().copied().chain(std::iter::repeat(usize::MAX));
    while fed < stream.len() {
        let n = cuts
            .next()
            .unwrap_or(usize::MAX)
            .clamp(1, stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        let mut at = 0;
        while let Some(frame) = parser.parse(&buf[at..]).expect("valid stream") {
            if !matches!(frame, Frame::Empty { .. }) {
                out.push(parser.args(&buf[at..]).iter().map(<[u8]>::to_vec).collect());
            }
            at += frame.len();
        }
        buf.drain(..at);
    }
    assert!(buf.is_empty(), "bytes left over");
    out
}

fn encode_requests(reqs: &[Vec<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in reqs {
        let mut flat = Vec::new();
        let mut spans = Vec::new();
        for a in r {
            spans.push(Span::new(flat.len(), a.len()));
            flat.extend_from_slice(a);
        }
        encode::request(&mut out, &Args::new(&flat, &spans));
    }
    out
}

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..12),
        proptest::collection::vec(any::<u8>(), 100..3000),
    ]
}

proptest! {
    #[test]
    fn any_split_of_requests_yields_the_same_frames(
        reqs in proptest::collection::vec(proptest::collection::vec(arg(), 1..6), 1..12),
        cuts in proptest::collection::vec(1usize..64, 0..200),
    ) {
        let stream = encode_requests(&reqs);
        prop_assert_eq!(requests_in_chunks(&stream, &cuts), reqs);
    }

    #[test]
    fn inline_and_multibulk_mix_survives_any_split(
        words in proptest::collection::vec("[a-z0-9]{1,8}", 1..5),
        cuts in proptest::collection::vec(1usize..16, 0..100),
    ) {
        let mut stream = words.join(" ").into_bytes();
        stream.extend_from_slice(b"\r\n");
        let bulk: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
        stream.extend_from_slice(&encode_requests(std::slice::from_ref(&bulk)));
        prop_assert_eq!(requests_in_chunks(&stream, &cuts), vec![bulk.clone(), bulk]);
    }

    #[test]
    fn any_split_of_replies_yields_the_same_replies(
        n in 1usize..40,
        seed in any::<u64>(),
        cuts in proptest::collection::vec(1usize..32, 0..300),
    ) {
        let replies: Vec<Vec<u8>> = (0..n).map(|i| sample_reply(seed.wrapping_add(i as u64), 0)).collect();
        let stream: Vec<u8> = replies.concat();
        let mut framer = ReplyFramer::new();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let mut fed = 0;
        let mut cuts = cuts.iter().copied().chain(std::iter::repeat(usize::MAX));
        while fed < stream.len() {
            let step = cuts.next().unwrap_or(usize::MAX).clamp(1, stream.len() - fed);
            buf.extend_from_slice(&stream[fed..fed + step]);
            fed += step;
            let mut at = 0;
            while let Some(len) = framer.next(&buf[at..]).expect("valid replies") {
                got.push(buf[at..at + len].to_vec());
                at += len;
            }
            buf.drain(..at);
        }
        prop_assert_eq!(got, replies);
    }
}

/// A deterministic pseudo-random reply of mixed types and nesting.
fn sample_reply(seed: u64, depth: u32) -> Vec<u8> {
    let x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let pick = (x >> 33) % if depth > 3 { 6 } else { 9 };
    let mut out = Vec::new();
    match pick {
        0 => out.extend_from_slice(b"+OK\r\n"),
        1 => out.extend_from_slice(b"-ERR something went wrong\r\n"),
        2 => encode::integer(&mut out, (x >> 7) as i64 % 100_000 - 50_000),
        3 => encode::null(&mut out),
        4 => encode::bulk(&mut out, &vec![b'v'; ((x >> 40) % 300) as usize]),
        5 => encode::bulk(&mut out, b"a\r\nb"),
        6 | 7 => {
            let n = ((x >> 20) % 5) as usize;
            encode::array_header(&mut out, n);
            for i in 0..n {
                out.extend_from_slice(&sample_reply(x.wrapping_add(i as u64 + 1), depth + 1));
            }
        }
        _ => {
            out.extend_from_slice(b"%1\r\n");
            encode::simple(&mut out, b"k");
            out.extend_from_slice(&sample_reply(x ^ 0xabc, depth + 1));
        }
    }
    out
}
