//! The attacks v2 exists to stop (WIRE-v2.md), each performed from outside
//! with raw bytes against one connection and its authenticator: what the
//! attacked side did (closed silently, wrote nothing, delivered nothing),
//! the verdict it reported and the counter it moved. Where input matters,
//! each runs with whole writes and one byte per read.

use crate::harness;

use std::time::{Duration, Instant};

use asoc_proto::auth::{sign_hello, AuthFailure, KeyRing};
use asoc_proto::connection::{
    CloseReason, Connection, ConnectionConfig, Event, ProtocolError, StreamId,
};
use asoc_proto::handshake::{
    Authenticator, AuthenticatorConfig, AuthenticatorConfigBuilder, ClientOptions, HandshakeOutcome,
};
use asoc_proto::v2::{Suite, WireVersion};
use asoc_proto::wire::{FrameError, FrameType, Header, HEADER_LEN};
use bytes::{Bytes, BytesMut};
use harness::v2peer::{RawClient, RawServer, HANDSHAKE_FRAME_LEN};
use harness::{key, Pair, CHUNKINGS, KEY, UNIX_START};
use uuid::Uuid;

const CLIENT: Uuid = Uuid::from_bytes([1; 16]);
const SERVER: Uuid = Uuid::from_bytes([2; 16]);

/// The server node's authenticator (v2 only, the default), with `tune`
/// applied to its settings.
fn server_auth(
    tune: impl FnOnce(AuthenticatorConfigBuilder) -> AuthenticatorConfigBuilder,
) -> Authenticator {
    let builder = AuthenticatorConfig::builder(SERVER, KeyRing::new(key(KEY)));
    Authenticator::new(tune(builder).build().unwrap(), [22; 32])
}

fn client_auth(seed: u8) -> Authenticator {
    Authenticator::new(
        AuthenticatorConfig::new(CLIENT, KeyRing::new(key(KEY))),
        [seed; 32],
    )
}

/// One connection driven by hand: every read followed by a verdict, the
/// output written and the events taken.
struct Driven {
    conn: Connection,
    buf: BytesMut,
    events: Vec<Event>,
    outcomes: Vec<HandshakeOutcome>,
    written: Vec<u8>,
}

impl Driven {
    fn new(conn: Connection, now: Instant) -> Self {
        let mut d = Self {
            conn,
            buf: BytesMut::new(),
            events: Vec::new(),
            outcomes: Vec::new(),
            written: Vec::new(),
        };
        d.settle_output(now);
        d
    }

    fn server(now: Instant) -> Self {
        Self::server_with(ConnectionConfig::default(), now)
    }

    fn server_with(config: ConnectionConfig, now: Instant) -> Self {
        Self::new(Connection::server(config, now), now)
    }

    fn settle_output(&mut self, now: Instant) {
        self.conn.write_to(now, &mut self.written).unwrap();
        while let Some(e) = self.conn.poll_event() {
            self.events.push(e);
        }
    }

    /// `bytes` in reads of `chunk` bytes, judged by `auth` at wall clock
    /// `unix_ms`.
    fn feed(
        &mut self,
        auth: &mut Authenticator,
        now: Instant,
        unix_ms: u64,
        bytes: &[u8],
        chunk: usize,
    ) {
        self.feed_with(auth, now, unix_ms, bytes, chunk, &|_| false);
    }

    /// [`feed`](Self::feed) with verdicts from `drive_with(speaks_v2)`.
    fn feed_with(
        &mut self,
        auth: &mut Authenticator,
        now: Instant,
        unix_ms: u64,
        bytes: &[u8],
        chunk: usize,
        speaks_v2: &dyn Fn(&Uuid) -> bool,
    ) {
        for piece in bytes.chunks(chunk.max(1)) {
            self.buf.extend_from_slice(piece);
            self.conn.handle_input(now, &mut self.buf);
            if let Some(o) = auth.drive_with(now, unix_ms, &mut self.conn, speaks_v2) {
                self.outcomes.push(o);
            }
            self.conn.write_to(now, &mut self.written).unwrap();
            while let Some(e) = self.conn.poll_event() {
                self.events.push(e);
            }
        }
    }

    fn timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        self.settle_output(now);
    }

    fn closed(&self) -> Option<&CloseReason> {
        self.events.iter().find_map(|e| match e {
            Event::Closed { reason } => Some(reason),
            _ => None,
        })
    }

    fn established(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::Established { .. }))
    }

    fn delivered(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &self.events {
            if let Event::Data { payload, .. } = e {
                out.extend_from_slice(payload);
            }
        }
        out
    }

    /// Closed for `failure` without writing a byte or establishing.
    fn assert_refused_silently(&self, failure: AuthFailure, what: &str) {
        assert_eq!(
            self.closed(),
            Some(&CloseReason::AuthFailed(failure)),
            "{what}: {:?}",
            self.events
        );
        assert!(
            self.written.is_empty(),
            "{what}: wrote {} bytes",
            self.written.len()
        );
        assert!(!self.established(), "{what}");
        assert_eq!(
            self.outcomes,
            vec![HandshakeOutcome::Rejected(failure)],
            "{what}"
        );
    }
}

/// A HELLO2 from a raw client of node `node` with ephemeral `[e; 32]`.
fn raw(node: Uuid, unix_ms: u64, e: u8) -> RawClient {
    RawClient::new(&key(KEY), Suite::AesGcm, node, unix_ms, u32::from(e))
}

/// A server connection that took `client`'s HELLO2 and answered ACCEPT2;
/// the client's keys are installed and its CONFIRM returned.
fn answered(
    auth: &mut Authenticator,
    now: Instant,
    unix_ms: u64,
    client: &mut RawClient,
    chunk: usize,
) -> (Driven, Vec<u8>) {
    let mut s = Driven::server(now);
    s.feed(auth, now, unix_ms, &client.hello.clone(), chunk);
    assert_eq!(
        s.outcomes,
        vec![HandshakeOutcome::AwaitingConfirm],
        "{:?}",
        s.events
    );
    assert_eq!(
        s.written.len(),
        HANDSHAKE_FRAME_LEN,
        "ACCEPT2 and nothing else"
    );
    let (accepted, confirm) = client.finish(&s.written).expect("ACCEPT2 verifies");
    assert_eq!(accepted.node_id, SERVER);
    (s, confirm)
}

/// An established server connection with a raw client of node 1.
fn established(
    auth: &mut Authenticator,
    config: ConnectionConfig,
    now: Instant,
    chunk: usize,
    e: u32,
) -> (Driven, RawClient) {
    let mut client = RawClient::new(&key(KEY), Suite::AesGcm, CLIENT, UNIX_START, e);
    let mut s = Driven::server_with(config, now);
    s.feed(auth, now, UNIX_START, &client.hello.clone(), chunk);
    let (_, confirm) = client.finish(&s.written).expect("ACCEPT2 verifies");
    s.feed(auth, now, UNIX_START, &confirm, chunk);
    assert!(s.established(), "{:?}", s.events);
    (s, client)
}

// ----- replayed, reflected and stale HELLO2s ---------------------------------

#[test]
fn replayed_hello2_on_a_new_connection_is_refused_with_nothing_sent() {
    for chunk in CHUNKINGS {
        let now = Instant::now();
        let mut auth = server_auth(|b| b);
        let mut client = raw(CLIENT, UNIX_START, 0x31);
        let recorded = client.hello.clone();
        let (mut first, confirm) = answered(&mut auth, now, UNIX_START, &mut client, chunk);
        first.feed(&mut auth, now, UNIX_START, &confirm, chunk);
        assert!(first.established());
        // The recorded HELLO2 on a second connection, 1 s later.
        let later = now + Duration::from_secs(1);
        let mut replay = Driven::server(later);
        replay.feed(&mut auth, later, UNIX_START + 1_000, &recorded, chunk);
        replay.assert_refused_silently(AuthFailure::Replay, "replay");
        assert_eq!(auth.counters().replays, 1);
        assert_eq!(auth.counters().v2_established, 1, "only the genuine one");
        // Also while the original is still waiting for its CONFIRM.
        let mut pending = raw(CLIENT, UNIX_START, 0x32);
        let (_waiting, _) = answered(&mut auth, now, UNIX_START, &mut pending, chunk);
        let mut replay = Driven::server(now);
        replay.feed(&mut auth, now, UNIX_START, &pending.hello, chunk);
        replay.assert_refused_silently(AuthFailure::Replay, "replay of a pending HELLO2");
        assert_eq!(auth.counters().replays, 2);
    }
}

#[test]
fn hello2_with_the_servers_own_node_id_is_a_reflection() {
    for chunk in CHUNKINGS {
        let now = Instant::now();
        let mut auth = server_auth(|b| b);
        let mut s = Driven::server(now);
        s.feed(
            &mut auth,
            now,
            UNIX_START,
            &raw(SERVER, UNIX_START, 0x33).hello,
            chunk,
        );
        s.assert_refused_silently(AuthFailure::Reflection, "own node id");
        assert_eq!(auth.counters().reflections, 1);
    }
}

#[test]
fn own_pending_hello2_bounced_back_is_a_reflection() {
    for chunk in CHUNKINGS {
        let now = Instant::now();
        // The node dials out; an attacker sends its HELLO2 straight back to
        // the node's own listener.
        let mut auth = server_auth(|b| b);
        let mut hello = Vec::new();
        auth.client(
            now,
            UNIX_START,
            ConnectionConfig::default(),
            ClientOptions::v2(),
        )
        .write_to(now, &mut hello)
        .unwrap();
        assert_eq!(hello.len(), HANDSHAKE_FRAME_LEN);
        let mut s = Driven::server(now);
        s.feed(&mut auth, now, UNIX_START, &hello, chunk);
        s.assert_refused_silently(AuthFailure::Reflection, "own HELLO2");
        assert_eq!(auth.counters().reflections, 1);
    }
}

#[test]
fn own_pending_ephemeral_under_another_node_id_is_a_reflection() {
    for chunk in CHUNKINGS {
        let now = Instant::now();
        // A twin of the server node's randomness under node id 7 draws the
        // same ephemeral key: its HELLO2 carries the server's pending
        // ephemeral but not the server's node id.
        let twin_hello = |auth: &mut Authenticator| {
            let mut v = Vec::new();
            auth.client(
                now,
                UNIX_START,
                ConnectionConfig::default(),
                ClientOptions::v2(),
            )
            .write_to(now, &mut v)
            .unwrap();
            v
        };
        let mut twin = Authenticator::new(
            AuthenticatorConfig::new(Uuid::from_bytes([7; 16]), KeyRing::new(key(KEY))),
            [22; 32],
        );
        let forged = twin_hello(&mut twin);
        let mut auth = server_auth(|b| b);
        let own = twin_hello(&mut auth);
        assert_eq!(
            forged[HEADER_LEN..HEADER_LEN + 32],
            own[HEADER_LEN..HEADER_LEN + 32],
            "same ephemeral"
        );
        let mut s = Driven::server(now);
        s.feed(&mut auth, now, UNIX_START, &forged, chunk);
        s.assert_refused_silently(AuthFailure::Reflection, "own ephemeral");
        assert_eq!(auth.counters().reflections, 1);
        // A server without that pending ephemeral accepts the same HELLO2.
        let mut other = server_auth(|b| b);
        let mut s = Driven::server(now);
        s.feed(&mut other, now, UNIX_START, &forged, chunk);
        assert_eq!(s.outcomes, vec![HandshakeOutcome::AwaitingConfirm]);
    }
}

#[test]
fn hello2_timestamps_exactly_at_the_window_are_in_and_one_ms_beyond_are_stale() {
    let window =
        |ms: u64| move |b: AuthenticatorConfigBuilder| b.v2_window(Duration::from_millis(ms));
    for (w, tune) in [(60_000u64, window(60_000)), (5_000, window(5_000))] {
        for chunk in CHUNKINGS {
            let now = Instant::now();
            let server_clock = UNIX_START + 10 * 60_000;
            let mut auth = server_auth(tune);
            for (n, ts) in [server_clock - w, server_clock + w].into_iter().enumerate() {
                let mut client = raw(CLIENT, ts, 0x40 + n as u8);
                let (mut s, confirm) = answered(&mut auth, now, server_clock, &mut client, chunk);
                s.feed(&mut auth, now, server_clock, &confirm, chunk);
                assert!(s.established(), "window {w}, timestamp {ts}");
            }
            for (n, ts) in [server_clock - w - 1, server_clock + w + 1]
                .into_iter()
                .enumerate()
            {
                let mut s = Driven::server(now);
                s.feed(
                    &mut auth,
                    now,
                    server_clock,
                    &raw(CLIENT, ts, 0x50 + n as u8).hello,
                    chunk,
                );
                s.assert_refused_silently(AuthFailure::Stale, "stale");
            }
            assert_eq!(auth.counters().stale, 2);
            assert_eq!(auth.counters().v2_established, 2);
        }
    }
}

#[test]
fn a_full_ephemeral_cache_fails_closed_and_frees_a_slot_only_at_timestamp_plus_61_s() {
    for chunk in CHUNKINGS {
        let now = Instant::now();
        let mut auth = server_auth(|b| b.v2_replay_capacity(1));
        // HELLO2s that do not decrypt are never recorded.
        let mut s = Driven::server(now);
        let wrong = RawClient::new(
            &key("another-key-0123456789"),
            Suite::AesGcm,
            CLIENT,
            UNIX_START,
            0x60,
        );
        s.feed(&mut auth, now, UNIX_START, &wrong.hello, chunk);
        s.assert_refused_silently(AuthFailure::BadMac, "wrong key");
        let mut first = raw(CLIENT, UNIX_START, 0x61);
        let _ = answered(&mut auth, now, UNIX_START, &mut first, chunk);
        // Full: a fresh, valid HELLO2 is refused rather than left unrecorded.
        for (clock, e) in [(UNIX_START, 0x62), (UNIX_START + 60_999, 0x63)] {
            let mut s = Driven::server(now);
            s.feed(&mut auth, now, clock, &raw(CLIENT, clock, e).hello, chunk);
            s.assert_refused_silently(AuthFailure::Capacity, "cache full");
        }
        assert_eq!(auth.counters().replay_cache_full, 2);
        // The first key is still remembered at the window's far edge ...
        let mut s = Driven::server(now);
        s.feed(&mut auth, now, UNIX_START + 60_000, &first.hello, chunk);
        s.assert_refused_silently(AuthFailure::Replay, "replay at the window's edge");
        // ... and forgotten at its timestamp + 61 s, when it is stale anyway.
        let clock = UNIX_START + 61_000;
        let mut next = raw(CLIENT, clock, 0x64);
        let _ = answered(&mut auth, now, clock, &mut next, chunk);
        let mut s = Driven::server(now);
        s.feed(&mut auth, now, clock, &first.hello, chunk);
        s.assert_refused_silently(AuthFailure::Stale, "expired and stale");
    }
}

// ----- the client side --------------------------------------------------------

/// A v2 client of node 1 and its HELLO2.
fn client(auth: &mut Authenticator, now: Instant, options: ClientOptions) -> (Driven, Vec<u8>) {
    let mut c = Driven::new(
        auth.client(now, UNIX_START, ConnectionConfig::default(), options),
        now,
    );
    let hello = std::mem::take(&mut c.written);
    assert_eq!(hello.len(), HANDSHAKE_FRAME_LEN);
    (c, hello)
}

#[test]
fn recorded_accept2_replayed_to_a_new_hello2_is_refused() {
    for chunk in CHUNKINGS {
        let now = Instant::now();
        let mut p = Pair::defaults(WireVersion::V2, chunk);
        p.handshake();
        let recorded = p.server.wire_log[..HANDSHAKE_FRAME_LEN].to_vec();
        let mut auth = client_auth(5);
        let (mut c, _) = client(&mut auth, now, ClientOptions::v2());
        c.feed(&mut auth, now, UNIX_START, &recorded, chunk);
        c.assert_refused_silently(AuthFailure::BadMac, "recorded ACCEPT2");
        assert_eq!(auth.counters().bad_mac, 1);
        assert_eq!(auth.counters().v2_established, 0);
    }
}

#[test]
fn a_server_proving_another_node_id_than_expected_is_refused() {
    for chunk in CHUNKINGS {
        let now = Instant::now();
        let mut auth = client_auth(6);
        let expected = Uuid::from_bytes([9; 16]);
        let (mut c, hello) = client(
            &mut auth,
            now,
            ClientOptions::v2().expect_peer(Some(expected)),
        );
        assert_eq!(c.conn.expected_peer(), Some(expected));
        // A key holder answering as node 2.
        let (_, accept) = RawServer::answer(&key(KEY), &hello, SERVER, [1; 8], 0x70).unwrap();
        c.feed(&mut auth, now, UNIX_START, &accept, chunk);
        c.assert_refused_silently(
            AuthFailure::UnexpectedPeer {
                expected,
                proven: SERVER,
            },
            "unexpected peer",
        );
        assert_eq!(auth.counters().unexpected_peer, 1);
        // The same answer from the expected node id is accepted.
        let (mut c, hello) = client(
            &mut auth,
            now,
            ClientOptions::v2().expect_peer(Some(SERVER)),
        );
        let (mut server, accept) =
            RawServer::answer(&key(KEY), &hello, SERVER, [1; 8], 0x71).unwrap();
        c.feed(&mut auth, now, UNIX_START, &accept, chunk);
        assert!(c.established());
        assert_eq!(c.conn.peer_node(), Some(SERVER));
        let frames = server.keys().open_all(&c.written).expect("CONFIRM opens");
        assert_eq!(frames.len(), 1);
        assert_eq!(
            frames[0].0,
            Header {
                version: 2,
                ..Header::new(FrameType::Control, 0, 0, 0)
            }
        );
    }
}

// ----- CONFIRM -----------------------------------------------------------------

#[test]
fn a_confirm_with_any_bit_flipped_is_refused_as_bad_frame_mac() {
    let max = 4096;
    let config = ConnectionConfig::builder()
        .max_payload(max)
        .build()
        .unwrap();
    let now = Instant::now();
    let mut auth = server_auth(|b| b);
    let mut n = 0;
    for chunk in CHUNKINGS {
        for bit in 0..30 * 8 {
            let (byte, b) = (bit / 8, (bit % 8) as u32);
            n += 1;
            let mut client = RawClient::new(&key(KEY), Suite::AesGcm, CLIENT, UNIX_START, 1000 + n);
            let mut s = Driven::server_with(config, now);
            s.feed(&mut auth, now, UNIX_START, &client.hello.clone(), chunk);
            let (_, mut confirm) = client.finish(&s.written).expect("ACCEPT2 verifies");
            confirm[byte] ^= 1 << b;
            // A length that grew is completed, so that the tag is checked.
            let (expected, filler) = if byte < HEADER_LEN {
                flipped_header_outcome(byte, b, 16, max)
            } else {
                (CloseReason::BadFrameMac, 0)
            };
            confirm.extend(vec![0u8; filler]);
            s.feed(&mut auth, now, UNIX_START, &confirm, chunk);
            // Before establishment the same failures are handshake failures.
            let expected = match expected {
                CloseReason::Protocol(ProtocolError::Frame(e)) => {
                    CloseReason::MalformedHandshake(e)
                }
                CloseReason::BadFrameMac => CloseReason::AuthFailed(AuthFailure::BadFrameMac),
                other => other,
            };
            assert_eq!(
                s.closed(),
                Some(&expected),
                "byte {byte} bit {b}, chunk {chunk}"
            );
            assert!(!s.established(), "byte {byte} bit {b}");
            assert_eq!(
                s.written.len(),
                HANDSHAKE_FRAME_LEN,
                "byte {byte} bit {b}: nothing after ACCEPT2"
            );
        }
    }
    assert_eq!(auth.counters().v2_established, 0);
}

#[test]
fn a_sealed_frame_other_than_confirm_first_is_refused() {
    for chunk in CHUNKINGS {
        let now = Instant::now();
        let mut auth = server_auth(|b| b);
        let mut client = raw(CLIENT, UNIX_START, 0x72);
        let mut s = Driven::server(now);
        s.feed(&mut auth, now, UNIX_START, &client.hello.clone(), chunk);
        client.finish_keys(&s.written).unwrap();
        // Properly sealed under nonce 0, but DATA instead of CONFIRM.
        let data = client.keys().seal(FrameType::Data, 1, 0, b"early");
        s.feed(&mut auth, now, UNIX_START, &data, chunk);
        assert_eq!(
            s.closed(),
            Some(&CloseReason::AuthFailed(AuthFailure::Malformed))
        );
        assert!(!s.established());
        assert!(s.delivered().is_empty());
        assert_eq!(s.written.len(), HANDSHAKE_FRAME_LEN);
    }
}

#[test]
fn without_confirm_the_server_times_out_and_never_reports_the_peer() {
    for chunk in CHUNKINGS {
        let now = Instant::now();
        let mut auth = server_auth(|b| b);
        let mut client = raw(CLIENT, UNIX_START, 0x73);
        let (mut s, _) = answered(&mut auth, now, UNIX_START, &mut client, chunk);
        assert_eq!(s.conn.peer_node(), None, "no peer before CONFIRM");
        assert!(s.conn.open_stream().is_err());
        s.timeout(now + Duration::from_millis(9_999));
        assert_eq!(s.closed(), None);
        s.timeout(now + Duration::from_secs(10));
        assert_eq!(s.closed(), Some(&CloseReason::HandshakeTimeout));
        assert!(!s.established());
        assert_eq!(s.written.len(), HANDSHAKE_FRAME_LEN);
        assert_eq!(auth.counters().v2_established, 0);
        // A CONFIRM just inside the deadline still establishes.
        let mut client = raw(CLIENT, UNIX_START, 0x74);
        let (mut s, confirm) = answered(&mut auth, now, UNIX_START, &mut client, chunk);
        let late = now + Duration::from_millis(9_999);
        s.timeout(late);
        s.feed(&mut auth, late, UNIX_START + 9_999, &confirm, chunk);
        assert!(s.established(), "{:?}", s.events);
        assert_eq!(s.conn.peer_node(), Some(CLIENT));
    }
}

// ----- sealed transport frames ---------------------------------------------------

/// What a flipped bit in the header of a sealed frame of `length` bytes
/// (tag included) turns into at a receiver with payload limit `max`, and
/// the filler that completes a frame whose length grew.
fn flipped_header_outcome(byte: usize, bit: u32, length: u32, max: u32) -> (CloseReason, usize) {
    if byte == 0 {
        let version = 2 ^ (1u8 << bit);
        return (
            CloseReason::Protocol(ProtocolError::Frame(FrameError::UnsupportedVersion {
                version,
                expected: 2,
            })),
            0,
        );
    }
    if (10..14).contains(&byte) {
        let flipped = length ^ (1u32 << ((13 - byte) * 8 + bit as usize));
        if flipped > max + 16 {
            return (
                CloseReason::Protocol(ProtocolError::Frame(FrameError::PayloadTooLarge {
                    declared: flipped - 16,
                    max,
                })),
                0,
            );
        }
        if flipped < 16 {
            return (
                CloseReason::Protocol(ProtocolError::Frame(FrameError::ShorterThanTag {
                    declared: flipped,
                    tag: 16,
                })),
                0,
            );
        }
        return (
            CloseReason::BadFrameMac,
            flipped.saturating_sub(length) as usize,
        );
    }
    (CloseReason::BadFrameMac, 0)
}

#[test]
fn every_single_bit_flip_of_a_sealed_data_frame_closes_and_delivers_nothing_of_it() {
    let max = 4096;
    let config = ConnectionConfig::builder()
        .max_payload(max)
        .build()
        .unwrap();
    let now = Instant::now();
    let mut auth = server_auth(|b| b);
    let plaintext = b"tensor bytes";
    let mut flips = 0;
    for chunk in CHUNKINGS {
        for bit in 0..(HEADER_LEN + plaintext.len() + 16) * 8 {
            let (byte, b) = (bit / 8, (bit % 8) as u32);
            let (mut s, mut client) = established(&mut auth, config, now, chunk, 10_000 + flips);
            flips += 1;
            let intact = client.keys().seal(FrameType::Data, 1, 0, b"first");
            let mut frame = client.keys().seal(FrameType::Data, 1, 1, plaintext);
            frame[byte] ^= 1 << b;
            let (expected, filler) = if byte < HEADER_LEN {
                flipped_header_outcome(byte, b, (plaintext.len() + 16) as u32, max)
            } else {
                (CloseReason::BadFrameMac, 0)
            };
            frame.extend(vec![0u8; filler]);
            let mut input = intact;
            input.extend(frame);
            s.feed(&mut auth, now, UNIX_START, &input, chunk);
            assert_eq!(
                s.closed(),
                Some(&expected),
                "byte {byte} bit {b}, chunk {chunk}"
            );
            assert_eq!(
                s.delivered(),
                b"first",
                "byte {byte} bit {b}: nothing of the frame"
            );
            assert!(
                s.events.contains(&Event::StreamIncomplete {
                    stream: StreamId::new(1),
                    frames: 1,
                    bytes: 5,
                    reason: expected.clone(),
                }),
                "byte {byte} bit {b}"
            );
            assert!(!s
                .events
                .iter()
                .any(|e| matches!(e, Event::StreamEnd { .. })));
            assert_eq!(
                s.written.len(),
                HANDSHAKE_FRAME_LEN,
                "nothing sent in reply"
            );
        }
    }
}

#[test]
fn replayed_reordered_reflected_or_transplanted_sealed_frames_close() {
    for chunk in CHUNKINGS {
        let now = Instant::now();
        let mut auth = server_auth(|b| b);
        let config = ConnectionConfig::default();
        // Replayed: the same frame twice.
        let (mut s, mut c) = established(&mut auth, config, now, chunk, 20_000);
        let f0 = c.keys().seal(FrameType::Data, 1, 0, b"a");
        s.feed(
            &mut auth,
            now,
            UNIX_START,
            &[f0.clone(), f0.clone()].concat(),
            chunk,
        );
        assert_eq!(s.closed(), Some(&CloseReason::BadFrameMac), "replayed");
        assert_eq!(s.delivered(), b"a");
        // Reordered: the second frame first.
        let (mut s, mut c) = established(&mut auth, config, now, chunk, 20_001);
        let f0 = c.keys().seal(FrameType::Data, 1, 0, b"a");
        let f1 = c.keys().seal(FrameType::Data, 1, 1, b"b");
        s.feed(&mut auth, now, UNIX_START, &[f1, f0].concat(), chunk);
        assert_eq!(s.closed(), Some(&CloseReason::BadFrameMac), "reordered");
        assert!(s.delivered().is_empty());
        // Dropped: a frame missing from the middle.
        let (mut s, mut c) = established(&mut auth, config, now, chunk, 20_002);
        let f0 = c.keys().seal(FrameType::Data, 1, 0, b"a");
        let _lost = c.keys().seal(FrameType::Data, 1, 1, b"b");
        let f2 = c.keys().seal(FrameType::Data, 1, 2, b"c");
        s.feed(&mut auth, now, UNIX_START, &[f0, f2].concat(), chunk);
        assert_eq!(s.closed(), Some(&CloseReason::BadFrameMac), "dropped");
        assert_eq!(s.delivered(), b"a");
        // Reflected: the server's own frame sent back to it.
        let (mut s, _c) = established(&mut auth, config, now, chunk, 20_003);
        let stream = s.conn.open_stream().unwrap();
        s.conn
            .send(now, stream, Bytes::from_static(b"mine"))
            .unwrap();
        let before = s.written.len();
        s.conn.write_to(now, &mut s.written).unwrap();
        let own = s.written[before..].to_vec();
        s.feed(&mut auth, now, UNIX_START, &own, chunk);
        assert_eq!(s.closed(), Some(&CloseReason::BadFrameMac), "reflected");
        assert!(s.delivered().is_empty());
        // Transplanted: a frame of one session at the same position of another.
        let (_, mut c1) = established(&mut auth, config, now, chunk, 20_004);
        let (mut s2, _) = established(&mut auth, config, now, chunk, 20_005);
        let other = c1.keys().seal(FrameType::Data, 1, 0, b"a");
        s2.feed(&mut auth, now, UNIX_START, &other, chunk);
        assert_eq!(s2.closed(), Some(&CloseReason::BadFrameMac), "transplanted");
        assert!(s2.delivered().is_empty());
    }
}

#[test]
fn a_relaying_man_in_the_middle_reads_nothing_and_any_rewrite_closes() {
    let plaintext = harness::pattern(3 * 1000, 42);
    for chunk in CHUNKINGS {
        for (n, target) in [0usize, 1, 999].into_iter().enumerate() {
            // The attacker relays every byte between a genuine client and a
            // genuine server, and rewrites one byte of the second DATA frame.
            let mut p = Pair::defaults(WireVersion::V2, chunk);
            p.handshake();
            let stream = p.client.conn.open_stream().unwrap();
            for piece in plaintext.chunks(1000) {
                p.client
                    .conn
                    .send(p.now, stream, Bytes::copy_from_slice(piece))
                    .unwrap();
            }
            p.client.conn.finish(p.now, stream).unwrap();
            let mut relayed = Vec::new();
            p.client.conn.write_to(p.now, &mut relayed).unwrap();
            assert_eq!(relayed.len(), 3 * (14 + 1000 + 16) + 30);
            for window in [&plaintext[..64], &plaintext[1000..1064]] {
                assert!(
                    !relayed.windows(64).any(|w| w == window),
                    "plaintext visible on the wire"
                );
            }
            let second_body = (14 + 1000 + 16) + 14;
            relayed[second_body + target] ^= 0x80 >> (n % 8);
            p.inject_to_server(&relayed);
            assert_eq!(
                p.server.closed_reason(),
                Some(&CloseReason::BadFrameMac),
                "byte {target}, chunk {chunk}"
            );
            assert_eq!(p.server.received(stream), &plaintext[..1000]);
            assert!(!p
                .server
                .events
                .iter()
                .any(|e| matches!(e, Event::StreamEnd { .. })));
            assert!(p.server.events.iter().any(|e| matches!(
                e,
                Event::StreamIncomplete { stream: s, frames: 1, bytes: 1000, .. } if *s == stream
            )));
            p.deliver_eof_to_client();
            assert_eq!(p.client.closed_reason(), Some(&CloseReason::PeerClosed));
        }
    }
}

#[test]
fn a_relay_that_rewrites_any_handshake_byte_gets_nothing_established() {
    for chunk in [usize::MAX, 1] {
        for byte in HEADER_LEN..HANDSHAKE_FRAME_LEN {
            // HELLO2 rewritten: the server refuses it silently.
            let now = Instant::now();
            let mut auth = server_auth(|b| b);
            let mut cauth = client_auth(byte as u8);
            let (_c, mut hello) = client(&mut cauth, now, ClientOptions::v2());
            hello[byte] ^= 1;
            let mut s = Driven::server(now);
            s.feed(&mut auth, now, UNIX_START, &hello, chunk);
            s.assert_refused_silently(AuthFailure::BadMac, "rewritten HELLO2");
            // ACCEPT2 rewritten: the client refuses it and sends no CONFIRM.
            let (mut c, hello) = client(&mut cauth, now, ClientOptions::v2());
            let mut s = Driven::server(now);
            s.feed(&mut auth, now, UNIX_START, &hello, chunk);
            let mut accept = s.written.clone();
            accept[byte] ^= 1;
            c.feed(&mut cauth, now, UNIX_START, &accept, chunk);
            c.assert_refused_silently(AuthFailure::BadMac, "rewritten ACCEPT2");
            s.timeout(now + Duration::from_secs(10));
            assert_eq!(s.closed(), Some(&CloseReason::HandshakeTimeout));
            assert!(!s.established());
        }
    }
}

// ----- versions -----------------------------------------------------------------

#[test]
fn a_v1_hello_to_a_v2_only_server_is_refused_as_v1_disabled() {
    for chunk in CHUNKINGS {
        let now = Instant::now();
        let mut auth = server_auth(|b| b);
        let mut s = Driven::server(now);
        let hello = sign_hello(&key(KEY), CLIENT, 7).encode_frame();
        s.feed(&mut auth, now, UNIX_START, &hello, chunk);
        s.assert_refused_silently(AuthFailure::V1Disabled, "v1 HELLO");
        let counters = auth.counters();
        assert_eq!(counters.v1_disabled, 1);
        assert_eq!(counters.bad_mac, 0, "not a failed authentication");
        // Even with a key it does not hold: refused before any MAC check.
        let mut s = Driven::server(now);
        let wrong = sign_hello(&key("another-key-0123456789"), CLIENT, 8).encode_frame();
        s.feed(&mut auth, now, UNIX_START, &wrong, chunk);
        s.assert_refused_silently(AuthFailure::V1Disabled, "v1 HELLO, other key");
        assert_eq!(auth.counters().bad_mac, 0);
    }
}

#[test]
fn a_verified_v1_hello_from_a_node_that_speaks_v2_is_a_downgrade() {
    for chunk in CHUNKINGS {
        let now = Instant::now();
        let mut auth = server_auth(|b| b.allow_v1(true));
        let speaks_v2 = |id: &Uuid| *id == CLIENT;
        let mut s = Driven::server(now);
        let hello = sign_hello(&key(KEY), CLIENT, 7).encode_frame();
        s.feed_with(&mut auth, now, UNIX_START, &hello, chunk, &speaks_v2);
        s.assert_refused_silently(AuthFailure::Downgrade, "downgrade");
        assert_eq!(auth.counters().downgrades, 1);
        assert_eq!(auth.counters().hellos_accepted, 0);
        // Judged after the MAC: a forged one is a bad MAC, not a downgrade.
        let mut s = Driven::server(now);
        let forged = sign_hello(&key("another-key-0123456789"), CLIENT, 8).encode_frame();
        s.feed_with(&mut auth, now, UNIX_START, &forged, chunk, &speaks_v2);
        s.assert_refused_silently(AuthFailure::BadMac, "forged");
        assert_eq!(auth.counters().downgrades, 1);
        // A node id not known to speak v2 still connects with v1.
        let mut s = Driven::server(now);
        let other = sign_hello(&key(KEY), Uuid::from_bytes([3; 16]), 9).encode_frame();
        s.feed_with(&mut auth, now, UNIX_START, &other, chunk, &speaks_v2);
        assert!(s.established());
        assert_eq!(s.conn.version(), WireVersion::V1);
    }
}

// ----- replays across a restart ----------------------------------------------

/// A recorded v1 HELLO replayed to the same node after it restarted: a
/// restarted node that took over the replay memory refuses it, one that
/// did not (the control) accepts it, which is the attack the memory stops.
#[test]
fn a_v1_hello_recorded_before_a_restart_is_refused_after_it() {
    for chunk in CHUNKINGS {
        let t0 = Instant::now();
        let mut before = server_auth(|b| b.allow_v1(true));
        let recorded = sign_hello(&key(KEY), CLIENT, 0x5157).encode_frame();
        let mut s = Driven::server(t0);
        s.feed(&mut before, t0, UNIX_START, &recorded, chunk);
        assert!(s.established(), "{:?}", s.events);
        let saved = before.replay_state(t0, UNIX_START).to_bytes();
        drop(before);

        // The new process: its monotonic clock restarted, the wall clock
        // moved on by 5 minutes.
        let t1 = Instant::now();
        let unix = UNIX_START + 300_000;
        let state = asoc_proto::persist::AuthReplayState::from_bytes(&saved, 1 << 20).unwrap();
        let mut after = server_auth(|b| b.allow_v1(true));
        let report = after.restore_replay_state(t1, unix, &state);
        assert_eq!(report.restored, 1, "{report:?}");
        let mut replay = Driven::server(t1);
        replay.feed(&mut after, t1, unix, &recorded, chunk);
        replay.assert_refused_silently(AuthFailure::Replay, "replay after a restart");
        assert_eq!(after.counters().replays, 1);

        let mut forgetful = server_auth(|b| b.allow_v1(true));
        let mut control = Driven::server(t1);
        control.feed(&mut forgetful, t1, unix, &recorded, chunk);
        assert!(
            control.established(),
            "without the saved memory the replay gets in: the attack is real"
        );
    }
}

/// The restored pair lives exactly as long as it would have without the
/// restart: still a replay 1 ms before the original retention ends,
/// forgotten at it.
#[test]
fn a_restored_hello_pair_expires_when_the_original_would_have() {
    let retention = Duration::from_secs(600);
    let t0 = Instant::now();
    let mut before = server_auth(|b| b.allow_v1(true).hello_retention(retention));
    let recorded = sign_hello(&key(KEY), CLIENT, 0x0e0e).encode_frame();
    let mut s = Driven::server(t0);
    s.feed(&mut before, t0, UNIX_START, &recorded, usize::MAX);
    assert!(s.established());
    let state = before.replay_state(t0, UNIX_START);
    assert_eq!(state.hellos.len(), 1);
    assert_eq!(state.hellos[0].expires_unix_ms, UNIX_START + 600_000);

    let t1 = Instant::now();
    let restart_ms = UNIX_START + 100_000;
    let mut after = server_auth(|b| b.allow_v1(true).hello_retention(retention));
    after.restore_replay_state(t1, restart_ms, &state);
    let just_before = t1 + Duration::from_millis(500_000 - 1);
    let mut replay = Driven::server(just_before);
    replay.feed(
        &mut after,
        just_before,
        restart_ms + 499_999,
        &recorded,
        usize::MAX,
    );
    replay.assert_refused_silently(AuthFailure::Replay, "1 ms before the retention ends");
    let at_end = t1 + Duration::from_millis(500_000);
    let mut again = Driven::server(at_end);
    again.feed(
        &mut after,
        at_end,
        restart_ms + 500_000,
        &recorded,
        usize::MAX,
    );
    assert!(
        again.established(),
        "forgotten when the original retention ends"
    );
}

/// A HELLO2 carries a timestamp, but inside its 60 s window a restarted
/// node without the memory would take it again.
#[test]
fn a_hello2_recorded_before_a_restart_is_refused_after_it() {
    for chunk in CHUNKINGS {
        let t0 = Instant::now();
        let mut before = server_auth(|b| b);
        let mut client = raw(CLIENT, UNIX_START, 0x61);
        let recorded = client.hello.clone();
        let (mut first, confirm) = answered(&mut before, t0, UNIX_START, &mut client, chunk);
        first.feed(&mut before, t0, UNIX_START, &confirm, chunk);
        assert!(first.established());
        let saved = before.replay_state(t0, UNIX_START).to_bytes();

        let t1 = Instant::now();
        let unix = UNIX_START + 2_000;
        let state = asoc_proto::persist::AuthReplayState::from_bytes(&saved, 1 << 20).unwrap();
        assert_eq!(state.ephemerals.len(), 1);
        let mut after = server_auth(|b| b);
        after.restore_replay_state(t1, unix, &state);
        let mut replay = Driven::server(t1);
        replay.feed(&mut after, t1, unix, &recorded, chunk);
        replay.assert_refused_silently(AuthFailure::Replay, "HELLO2 replay after a restart");

        let mut forgetful = server_auth(|b| b);
        let mut control = Driven::server(t1);
        control.feed(&mut forgetful, t1, unix, &recorded, chunk);
        assert_eq!(
            control.outcomes,
            vec![HandshakeOutcome::AwaitingConfirm],
            "without the memory the replay is answered"
        );
    }
}

/// A damaged or hostile state cannot pin the caches: entries are kept no
/// longer than the node's own settings allow, expired ones are dropped,
/// and what does not fit is reported.
#[test]
fn a_restored_state_is_bounded_by_the_nodes_own_settings() {
    use asoc_proto::persist::{AuthReplayState, SeenEphemeral, SeenHello};
    let t1 = Instant::now();
    let mut state = AuthReplayState::default();
    state.hellos.push(SeenHello::new(CLIENT, 1, u64::MAX));
    state.hellos.push(SeenHello::new(CLIENT, 2, UNIX_START - 1));
    state.hellos.push(SeenHello::new(CLIENT, 3, UNIX_START + 1));
    state.ephemerals.push(SeenEphemeral::new([7; 32], u64::MAX));
    let mut auth = server_auth(|b| b.allow_v1(true).hello_replay_capacity(1));
    let report = auth.restore_replay_state(t1, UNIX_START, &state);
    assert_eq!(
        (report.restored, report.expired, report.over_capacity),
        (2, 1, 1),
        "{report:?}"
    );
    let kept = auth.replay_state(t1, UNIX_START);
    assert_eq!(kept.hellos[0].expires_unix_ms, UNIX_START + 600_000);
    assert_eq!(
        kept.ephemerals[0].expires_unix_ms,
        UNIX_START + 2 * 60_000 + 1_000
    );
}
