//! Arbitrary input into client and server connections: no panic, and the
//! connection never holds more input than one frame's limit.

use crate::harness;

use std::time::{Duration, Instant};

use asoc_proto::connection::{Connection, ConnectionConfig, Event};
use asoc_proto::handshake::ClientOptions;
use asoc_proto::v2::{Suite, WireVersion};
use asoc_proto::wire::{FrameType, Header, HEADER_LEN};
use bytes::BytesMut;
use harness::v2peer::{Keys, RawClient, RawServer};
use harness::{authenticator, key, pattern, Pair, KEY, UNIX_START};
use proptest::prelude::*;
use uuid::Uuid;

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

// ----- v2 -----------------------------------------------------------------------

/// v2-flavoured pieces: handshake-shaped headers with arbitrary bodies (so
/// that decryption runs on garbage), v2 frame headers, and raw bytes.
fn piece_v2() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => (any::<bool>(), 0u32..4, proptest::collection::vec(any::<u8>(), 72))
            .prop_map(|(accept, seq, body)| {
                let mut v = Header {
                    version: 2,
                    ..Header::new(
                        if accept { FrameType::Accept } else { FrameType::Hello },
                        0,
                        seq,
                        72,
                    )
                }
                .encode()
                .to_vec();
                v.extend(body);
                v
            }),
        2 => (
            0u8..8,
            0u32..6,
            0u32..4,
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(t, stream, seq, body)| {
                let mut v = Header {
                    version: 2,
                    ..Header::new(FrameType::from_byte(t), stream, seq, body.len() as u32)
                }
                .encode()
                .to_vec();
                v.extend(body);
                v
            }),
        1 => piece(),
    ]
}

/// Plaintext frames to seal: (type, stream, seq, payload).
fn plain_frames() -> impl Strategy<Value = Vec<(u8, u32, u32, Vec<u8>)>> {
    proptest::collection::vec(
        (
            0u8..8,
            0u32..6,
            0u32..4,
            proptest::collection::vec(any::<u8>(), 0..64),
        ),
        0..16,
    )
}

/// Takes every event, checking that nothing is delivered before
/// `Established` and returning whether it came.
fn drain_v2(conn: &mut Connection, established: &mut bool, incomplete: &mut usize) {
    while let Some(e) = conn.poll_event() {
        match e {
            Event::Established { .. } => *established = true,
            Event::Data { payload, .. } => {
                assert!(*established, "Data before Established");
                assert!(payload.len() <= MAX_PAYLOAD as usize);
            }
            Event::StreamEnd { .. } | Event::FrameSkipped { .. } => {
                assert!(*established, "stream event before Established");
            }
            Event::StreamIncomplete { .. } => *incomplete += 1,
            _ => {}
        }
    }
    assert!(*incomplete <= MAX_INCOMING_STREAMS);
}

/// Feeds `input` in reads cut by `cuts`, a verdict after each, output
/// taken and appended to `written`.
#[allow(clippy::too_many_arguments)]
fn feed_v2(
    conn: &mut Connection,
    auth: &mut asoc_proto::handshake::Authenticator,
    now: Instant,
    input: &[u8],
    cuts: &[usize],
    established: &mut bool,
    incomplete: &mut usize,
    written: &mut Vec<u8>,
) {
    let mut buf = BytesMut::new();
    // Odd first cuts give the input by slice (copied), even ones by buffer.
    let by_slice = cuts.first().is_some_and(|c| c % 2 == 1);
    for head in pieces_of(input, cuts) {
        if by_slice {
            conn.handle_read(now, head);
        } else {
            buf.extend_from_slice(head);
            conn.handle_input(now, &mut buf);
        }
        let _ = auth.drive(now, UNIX_START, conn);
        assert!(conn.buffered_input() <= HEADER_LEN + MAX_PAYLOAD as usize + 16 + input.len());
        assert!(buf.len() <= HEADER_LEN + MAX_PAYLOAD as usize + 16 + head.len());
        conn.write_to(now, written).unwrap();
        drain_v2(conn, established, incomplete);
    }
}

fn seal_all(keys: &mut Keys, frames: &[(u8, u32, u32, Vec<u8>)]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|(t, stream, seq, payload)| {
            keys.seal(FrameType::from_byte(*t), *stream, *seq, payload)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `stage` 0: garbage only; 1: a HELLO2 under another key first;
    /// 2: a valid HELLO2 but no CONFIRM; 3: HELLO2 and CONFIRM, then the
    /// frames sealed with the client's keys. Only stage 3 may establish.
    #[test]
    fn v2_server_survives_arbitrary_input_and_needs_the_key(
        stage in 0u8..4,
        pieces in proptest::collection::vec(piece_v2(), 0..16),
        frames in plain_frames(),
        cuts in proptest::collection::vec(1usize..100, 0..64),
        suite in prop_oneof![Just(Suite::AesGcm), Just(Suite::ChaChaPoly)],
        e in any::<u32>(),
    ) {
        let now = Instant::now();
        let mut auth = authenticator(2, key(KEY), 2);
        let mut conn = Connection::server(config(), now);
        let (mut established, mut open, mut written) = (false, 0, Vec::new());
        let k = if stage == 1 { key("another-key-0123456789") } else { key(KEY) };
        let mut client = RawClient::new(&k, suite, Uuid::from_bytes([1; 16]), UNIX_START, e);
        let garbage = pieces.concat();
        if stage > 0 {
            feed_v2(&mut conn, &mut auth, now, &client.hello.clone(), &cuts, &mut established, &mut open, &mut written);
        }
        let mut rest = Vec::new();
        if stage == 3 {
            let (_, confirm) = client.finish(&written).expect("ACCEPT2 verifies");
            rest.extend(confirm);
            rest.extend(seal_all(client.keys(), &frames));
        }
        rest.extend(garbage);
        feed_v2(&mut conn, &mut auth, now, &rest, &cuts, &mut established, &mut open, &mut written);
        prop_assert!(stage == 3 || !established, "established without the key (stage {})", stage);
        conn.handle_timeout(now + Duration::from_secs(3600));
        conn.handle_eof(now);
        drain_v2(&mut conn, &mut established, &mut open);
        prop_assert_eq!(conn.poll_timeout(), None);
        if stage < 2 {
            prop_assert!(written.is_empty(), "wrote {} bytes", written.len());
        }
    }

    /// `stage` 0: garbage only; 1: an ACCEPT2 under another key first;
    /// 2: a genuine ACCEPT2, then the frames sealed with the server's keys.
    /// Only stage 2 may establish.
    #[test]
    fn v2_client_survives_arbitrary_input_and_needs_the_key(
        stage in 0u8..3,
        pieces in proptest::collection::vec(piece_v2(), 0..16),
        frames in plain_frames(),
        cuts in proptest::collection::vec(1usize..100, 0..64),
        e in any::<u8>(),
    ) {
        let now = Instant::now();
        let mut auth = authenticator(1, key(KEY), 1);
        let mut conn = auth.client(now, UNIX_START, config(), ClientOptions::v2());
        let mut hello = Vec::new();
        conn.write_to(now, &mut hello).unwrap();
        let (mut established, mut open, mut written) = (false, 0, Vec::new());
        let mut input = Vec::new();
        if stage > 0 {
            let k = if stage == 1 { key("another-key-0123456789") } else { key(KEY) };
            // A server holding another key cannot even read HELLO2; answer
            // with a responder under that key reading a HELLO2 it made.
            let (mut server, accept) = if stage == 1 {
                let other = RawClient::new(&k, Suite::AesGcm, Uuid::from_bytes([1; 16]), UNIX_START, 3);
                RawServer::answer(&k, &other.hello, Uuid::from_bytes([2; 16]), [e; 8], e).unwrap()
            } else {
                RawServer::answer(&k, &hello, Uuid::from_bytes([2; 16]), [e; 8], e).unwrap()
            };
            input.extend(accept);
            input.extend(seal_all(server.keys(), &frames));
        }
        input.extend(pieces.concat());
        feed_v2(&mut conn, &mut auth, now, &input, &cuts, &mut established, &mut open, &mut written);
        prop_assert!(stage == 2 || !established, "established without the key (stage {})", stage);
        if !established {
            prop_assert!(written.is_empty(), "no CONFIRM without a verified ACCEPT2");
        }
        conn.handle_timeout(now + Duration::from_secs(3600));
        conn.handle_eof(now);
        drain_v2(&mut conn, &mut established, &mut open);
        prop_assert_eq!(conn.poll_timeout(), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Genuine v2 sessions, any suite, any read size, streams both ways in
    /// any chunk sizes: each side receives exactly what the other sent.
    #[test]
    fn v2_sessions_deliver_exactly_what_was_sent_under_any_chunking(
        read in 1usize..300,
        suite in prop_oneof![Just(Suite::AesGcm), Just(Suite::ChaChaPoly)],
        streams in proptest::collection::vec(
            (any::<bool>(), 0usize..3000, 1usize..1500, any::<u32>()),
            1..6,
        ),
    ) {
        let cfg = ConnectionConfig::builder().suite(suite).build().unwrap();
        let mut p = Pair::version(WireVersion::V2, cfg, key(KEY), key(KEY), read);
        p.handshake();
        let mut sent = Vec::new();
        for (from_client, len, piece_len, seed) in streams {
            let data = pattern(len, seed);
            let conn = if from_client { &mut p.client.conn } else { &mut p.server.conn };
            let id = conn.open_stream().unwrap();
            for piece in data.chunks(piece_len) {
                conn.send(p.now, id, bytes::Bytes::copy_from_slice(piece)).unwrap();
            }
            conn.finish(p.now, id).unwrap();
            sent.push((from_client, id, data));
        }
        p.drive();
        for (from_client, id, data) in sent {
            let rx = if from_client { &p.server } else { &p.client };
            prop_assert!(rx.received(id) == data, "stream {} differs", id);
            let ended = rx.events.iter().any(|e| matches!(
                e,
                Event::StreamEnd { stream, bytes, .. } if *stream == id && *bytes == data.len() as u64
            ));
            prop_assert!(ended, "stream {} not complete", id);
        }
        prop_assert!(p.client.closed_reason().is_none() && p.server.closed_reason().is_none());
    }
}
