//! Shared set-up for the connection targets.
#![allow(dead_code)]

use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::connection::{Connection, ConnectionConfig};
use asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
use bytes::BytesMut;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const MAX: u32 = 4096;

/// The wall clock the targets read at their start (unix milliseconds).
pub const UNIX_START: u64 = 1_767_000_000_000;

/// The wall clock at `now`, moving with the virtual clock from `t0`.
pub fn unix_ms(now: Instant, t0: Instant) -> u64 {
    UNIX_START + now.saturating_duration_since(t0).as_millis() as u64
}

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
    let mut buf = BytesMut::new();
    let mut now = t0;
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        conn.handle_input(now, &mut buf);
        auth.drive(now, unix_ms(now, t0), conn);
        assert!(buf.len() < 14 + MAX as usize + step.max(1));
        assert!(conn.buffered_input() < 14 + MAX as usize + input.len());
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
