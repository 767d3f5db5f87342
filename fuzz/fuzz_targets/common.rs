//! Shared set-up for the connection targets.
#![allow(dead_code)]

use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::connection::{Connection, ConnectionConfig};
use asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
use bytes::BytesMut;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const MAX: u32 = 4096;

pub fn config() -> ConnectionConfig {
    ConnectionConfig::builder()
        .max_payload(MAX)
        .max_incoming_streams(16)
        .build()
        .expect("valid config")
}

pub fn authenticator(node: u8) -> Authenticator {
    let key = ApiKey::new("fuzz-key-0123456789abcdef").expect("key");
    Authenticator::new(AuthenticatorConfig::new(Uuid::from_bytes([node; 16]), KeyRing::new(key)), [node; 32])
}

/// Feeds `input` in pieces of `step` bytes, giving verdicts and draining
/// output and events after each, with time moving forward; checks bounds.
pub fn feed(conn: &mut Connection, auth: &mut Authenticator, input: &[u8], step: usize, t0: Instant) {
    let mut buf = BytesMut::new();
    let mut now = t0;
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        conn.handle_input(now, &mut buf);
        auth.drive(now, conn);
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
