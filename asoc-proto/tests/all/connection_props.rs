//! Arbitrary input into client and server connections: no panic, and the
//! connection never holds more input than one frame's limit.

use crate::harness;

use std::time::{Duration, Instant};

use asoc_proto::connection::{Connection, ConnectionConfig, Event};
use asoc_proto::handshake::ClientOptions;
use asoc_proto::wire::{FrameType, Header, HEADER_LEN};
use bytes::BytesMut;
use harness::{authenticator, key, KEY, UNIX_START};
use proptest::prelude::*;

const MAX_PAYLOAD: u32 = 4096;
const MAX_INCOMING_STREAMS: usize = 8;

fn config() -> ConnectionConfig {
    ConnectionConfig::builder()
        .max_payload(MAX_PAYLOAD)
        .max_incoming_streams(MAX_INCOMING_STREAMS)
        .build()
        .unwrap()
}

/// Frames that are mostly well-formed so that the fuzzer reaches deep
/// states, mixed with raw garbage.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (
            0u8..8,
            0u32..6,
            0u32..4,
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(t, stream, seq, payload)| {
                let mut v = Header::new(FrameType::from_byte(t), stream, seq, payload.len() as u32)
                    .encode()
                    .to_vec();
                v.extend(payload);
                v
            }),
        1 => proptest::collection::vec(any::<u8>(), 0..80),
        // First DATA frames of `n` new streams in a row: runs longer than
        // the limit open more streams than it allows.
        4 => (1u32..64, 1u32..12).prop_map(|(first, n)| {
            let mut v = Vec::new();
            for stream in first..first + n {
                v.extend(Header::new(FrameType::Data, stream, 0, 1).encode());
                v.push(0);
            }
            v
        }),
    ]
}

/// Takes every pending event, checking what it may carry; counts streams
/// reported incomplete, which are the streams open at the close.
fn drain(conn: &mut Connection, incomplete: &mut usize) {
    while let Some(e) = conn.poll_event() {
        match e {
            Event::Data { payload, .. } => assert!(payload.len() <= MAX_PAYLOAD as usize),
            Event::StreamIncomplete { .. } => *incomplete += 1,
            _ => {}
        }
    }
    // A connection closes once, so every incomplete stream was open at the
    // same time: never more than the configured limit.
    assert!(
        *incomplete <= MAX_INCOMING_STREAMS,
        "{incomplete} streams open"
    );
}

/// `input` cut into reads of the lengths in `cuts` (each at least one byte),
/// the rest in one read once `cuts` runs out.
fn pieces_of<'a>(input: &'a [u8], cuts: &'a [usize]) -> impl Iterator<Item = &'a [u8]> {
    let mut rest = input;
    let mut cuts = cuts.iter();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = cuts
            .next()
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

fn feed(
    conn: &mut Connection,
    now: Instant,
    input: &[u8],
    cuts: &[usize],
    by_slice: bool,
    incomplete: &mut usize,
) {
    let mut buf = BytesMut::new();
    for head in pieces_of(input, cuts) {
        if by_slice {
            conn.handle_read(now, head);
        } else {
            buf.extend_from_slice(head);
            conn.handle_input(now, &mut buf);
            // The caller's buffer never has to hold more than one frame.
            assert!(buf.len() <= HEADER_LEN + MAX_PAYLOAD as usize + head.len());
        }
        assert!(conn.buffered_input() <= HEADER_LEN + MAX_PAYLOAD as usize + head.len());
        drain(conn, incomplete);
    }
    conn.handle_timeout(now + Duration::from_secs(3600));
    conn.handle_eof(now);
    drain(conn, incomplete);
    assert_eq!(
        conn.poll_timeout(),
        None,
        "a closed connection has no timers"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn server_survives_arbitrary_input(
        pieces in proptest::collection::vec(piece(), 0..24),
        cuts in proptest::collection::vec(1usize..100, 0..64),
        valid_hello in any::<bool>(),
        by_slice in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut client_auth = authenticator(1, key(KEY), 1);
        let mut server_auth = authenticator(2, key(KEY), 2);
        let mut input = Vec::new();
        if valid_hello {
            input.extend(client_auth.make_hello(now).encode_frame());
        }
        input.extend(pieces.concat());
        let mut conn = Connection::server(config(), now);
        // Feed in two halves with a verdict in between, as an adapter would.
        let mid = input.len().min(50);
        let mut open = 0;
        feed_with_verdicts(&mut conn, &mut server_auth, now, &input[..mid], &cuts, by_slice, &mut open);
        feed_with_verdicts(&mut conn, &mut server_auth, now, &input[mid..], &cuts, by_slice, &mut open);
        feed(&mut conn, now, &[], &[], by_slice, &mut open);
    }

    #[test]
    fn client_survives_arbitrary_input(
        pieces in proptest::collection::vec(piece(), 0..24),
        cuts in proptest::collection::vec(1usize..100, 0..64),
        by_slice in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut auth = authenticator(1, key(KEY), 1);
        let mut conn = auth.client(now, UNIX_START, config(), ClientOptions::v1());
        let mut sink = Vec::new();
        conn.write_to(now, &mut sink).unwrap();
        let mut open = 0;
        feed_with_verdicts(&mut conn, &mut auth, now, &pieces.concat(), &cuts, by_slice, &mut open);
        feed(&mut conn, now, &[], &[], by_slice, &mut open);
    }
}

fn feed_with_verdicts(
    conn: &mut Connection,
    auth: &mut asoc_proto::handshake::Authenticator,
    now: Instant,
    input: &[u8],
    cuts: &[usize],
    by_slice: bool,
    incomplete: &mut usize,
) {
    let mut buf = BytesMut::new();
    for head in pieces_of(input, cuts) {
        if by_slice {
            conn.handle_read(now, head);
        } else {
            buf.extend_from_slice(head);
            conn.handle_input(now, &mut buf);
        }
        let _ = auth.drive(now, UNIX_START, conn);
        assert!(conn.buffered_input() <= HEADER_LEN + MAX_PAYLOAD as usize + input.len());
        drain(conn, incomplete);
        let mut sink = Vec::new();
        conn.write_to(now, &mut sink).unwrap();
    }
}
