//! A v2 server connection fed arbitrary bytes. Input: `mode(1) |
//! server wall clock, unix ms(8) | rest`. Mode bit 0: an in-process client
//! first completes a genuine handshake (HELLO2, then CONFIRM sealed with
//! its keys) so that the fuzzer reaches the established state; bit 1 (with
//! bit 0): `rest` is frames to seal with the client's keys
//! (`common::seal_frames`), else raw bytes; bit 2: that client offers
//! ChaChaPoly instead of AES-GCM; bits 3..: read size
//! (`common::read_size`).
#![no_main]

#[path = "common.rs"]
mod common;

use std::time::Instant;

use asoc_proto::connection::{v2_handshake_header, Connection};
use asoc_proto::v2::noise::{HelloPayload, Initiator, Message, MESSAGE_LEN};
use asoc_proto::v2::seal::Sealer;
use asoc_proto::v2::{derive_psk, Suite};
use asoc_proto::wire::{FrameType, Header, HEADER_LEN};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some((clock, rest)) = rest.split_first_chunk::<8>() else { return };
    let unix_ms = u64::from_be_bytes(*clock);
    let t0 = Instant::now();
    let mut auth = common::authenticator_v2(2, t0);
    let mut conn = Connection::server(common::config(), t0);
    let mut input = Vec::new();
    if mode & 1 == 1 {
        let suite = if mode & 4 == 0 { Suite::AesGcm } else { Suite::ChaChaPoly };
        let payload = HelloPayload { node_id: Uuid::from_bytes([1; 16]), unix_ms };
        let psk = derive_psk(&common::v2_key());
        let Ok((initiator, hello)) = Initiator::start(suite, &psk, Zeroizing::new([mode; 32]), &payload)
        else {
            return;
        };
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&v2_handshake_header(suite, false).encode());
        buf.extend_from_slice(&hello);
        conn.handle_input(t0, &mut buf);
        auth.drive(t0, unix_ms, &mut conn);
        let mut accept = Vec::new();
        let _ = conn.write_to(t0, &mut accept);
        // A stale timestamp (or any refusal) leaves no ACCEPT2: the rest
        // then goes to the closed connection, which must ignore it.
        let message: Option<Message> = accept
            .get(HEADER_LEN..HEADER_LEN + MESSAGE_LEN)
            .and_then(|m| m.try_into().ok());
        if let Some(Ok((_, session))) = message.map(|m| initiator.finish(&m)) {
            let mut sealer = Sealer::new(suite, &session.client_to_server);
            let confirm = Header { version: 2, ..Header::new(FrameType::Control, 0, 0, 16) };
            if let Ok(tag) = sealer.seal(&confirm.encode(), &[]) {
                input.extend_from_slice(&confirm.encode());
                input.extend_from_slice(&tag);
            }
            if mode & 2 == 2 {
                input.extend(common::seal_frames(&mut sealer, rest));
            }
        }
        if mode & 2 == 0 {
            input.extend_from_slice(rest);
        }
    } else {
        input.extend_from_slice(rest);
    }
    common::feed_at(&mut conn, &mut auth, &input, common::read_size(mode >> 3), t0, unix_ms);
});
