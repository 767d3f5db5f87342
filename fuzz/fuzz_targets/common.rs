//! Shared set-up for the connection targets.
#![allow(dead_code)]

use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::v2::seal::{Sealer, TAG_LEN};
use asoc_proto::wire::{FrameType, Header};
use asoc_proto::connection::{Connection, ConnectionConfig};
use asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
use bytes::BytesMut;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const MAX: u32 = 4096;

/// The wall clock the targets read at their start (unix milliseconds).
pub const UNIX_START: u64 = 1_767_000_000_000;


pub fn config() -> ConnectionConfig {
    ConnectionConfig::builder()
        .max_payload(MAX)
        .max_incoming_streams(16)
        .build()
        .expect("valid config")
}

/// A v1-enabled authenticator under the v1 targets' key, so that their
/// HELLOs reach the established state.
pub fn authenticator(node: u8) -> Authenticator {
    let key = ApiKey::new("fuzz-key-0123456789abcdef").expect("key");
    let config = AuthenticatorConfig::builder(Uuid::from_bytes([node; 16]), KeyRing::new(key))
        .allow_v1(true)
        .build()
        .expect("valid authenticator config");
    Authenticator::new(config, [node; 32])
}

/// Feeds `input` in pieces of `step` bytes, giving verdicts and draining
/// output and events after each, with time moving forward; checks bounds.
pub fn feed(conn: &mut Connection, auth: &mut Authenticator, input: &[u8], step: usize, t0: Instant) {
    feed_at(conn, auth, input, step, t0, UNIX_START);
}

/// [`feed`] with the wall clock at `t0` being `unix_start`.
pub fn feed_at(
    conn: &mut Connection,
    auth: &mut Authenticator,
    input: &[u8],
    step: usize,
    t0: Instant,
    unix_start: u64,
) {
    let mut buf = BytesMut::new();
    let mut now = t0;
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        conn.handle_input(now, &mut buf);
        auth.drive(now, unix_start.saturating_add(now.saturating_duration_since(t0).as_millis() as u64), conn);
        // v2 frames carry a tag beyond the payload limit.
        assert!(buf.len() < (14 + MAX as usize + TAG_LEN).saturating_add(step.max(1)));
        assert!(conn.buffered_input() < 14 + MAX as usize + TAG_LEN + input.len());
        let mut sink = Vec::new();
        let _ = conn.write_to(now, &mut sink);
        while conn.poll_event().is_some() {}
        now += Duration::from_millis(u64::from(piece[0] % 8) * 500);
        conn.handle_timeout(now);
    }
    conn.handle_eof(now);
    while conn.poll_event().is_some() {}
    assert!(conn.poll_timeout().is_none());
}

/// The keys of `../shared/vectors/asoc-v2.json`, so that the seeds written
/// from it decrypt: the v2 targets accept both, the first being current.
pub const V2_KEYS: [&str; 2] = [
    "test-secret-key-0",
    "a3f5b8c9e2d4f7a1b6c8e9f0d3a5b7c9e1f3a5b7c9e1f3a5b7c9e1f3a5b7c9e1",
];

pub fn v2_key() -> ApiKey {
    ApiKey::new(V2_KEYS[0]).expect("key")
}

/// The read size the v2 targets take from their mode's top bits: 0 for
/// whole input in one read (the virtual clock moves on after every read,
/// so small reads of a handshake often run into its timeout), else that
/// many bytes.
pub fn read_size(bits: u8) -> usize {
    match bits {
        0 => usize::MAX,
        n => usize::from(n),
    }
}

/// A v2-only authenticator (the default) holding both vector keys.
pub fn authenticator_v2(node: u8, t0: Instant) -> Authenticator {
    let mut ring = KeyRing::new(ApiKey::new(V2_KEYS[1]).expect("key"));
    ring.rotate(v2_key(), t0, Duration::from_secs(365 * 86_400));
    Authenticator::new(AuthenticatorConfig::new(Uuid::from_bytes([node; 16]), ring), [node; 32])
}

/// Frames encoded as `type(1) stream_id(4) seq(4) length(2) plaintext`,
/// each sealed in turn (a truncated last one with what is left), so that
/// the fuzzer steers the plaintext of an established v2 connection.
pub fn seal_frames(sealer: &mut Sealer, mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while data.len() >= 11 {
        let (head, rest) = data.split_at(11);
        let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let len = usize::from(u16::from_be_bytes([head[9], head[10]])).min(rest.len());
        let (plain, rest) = rest.split_at(len);
        let header = Header {
            version: 2,
            ..Header::new(FrameType::from_byte(head[0]), word(1), word(5), (len + TAG_LEN) as u32)
        };
        let Ok(body) = sealer.seal(&header.encode(), plain) else { break };
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&body);
        data = rest;
    }
    out
}
