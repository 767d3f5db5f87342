//! A v2 client connection fed arbitrary bytes. Input: `mode(1) | rest`.
//! Mode bit 0: an in-process server answers the client's HELLO2 with a
//! genuine ACCEPT2 (node id `[mode; 16]`) so that the fuzzer reaches the
//! established state; bit 1 (with bit 0): `rest` is frames to seal with
//! the server's keys (`common::seal_frames`), else raw bytes; bit 2: the
//! dial expects node id `[2; 16]`, which that server (an odd mode) never
//! proves, so the client refuses it as `unexpected_peer`; bits 3..: read
//! size (`common::read_size`).
#![no_main]

#[path = "common.rs"]
mod common;

use std::time::Instant;

use asoc_proto::connection::v2_handshake_header;
use asoc_proto::handshake::ClientOptions;
use asoc_proto::v2::noise::{AcceptPayload, Message, Responder, MESSAGE_LEN};
use asoc_proto::v2::seal::Sealer;
use asoc_proto::v2::{derive_psk, Suite};
use asoc_proto::wire::{Header, HEADER_LEN};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let t0 = Instant::now();
    let mut auth = common::authenticator_v2(1, t0);
    let expect = (mode & 4 == 4).then(|| Uuid::from_bytes([2; 16]));
    let options = ClientOptions::v2().expect_peer(expect);
    let mut conn = auth.client(t0, common::UNIX_START, common::config(), options);
    let mut hello = Vec::new();
    let _ = conn.write_to(t0, &mut hello);
    let mut input = Vec::new();
    if mode & 1 == 1 {
        let message: Option<Message> = hello
            .get(HEADER_LEN..HEADER_LEN + MESSAGE_LEN)
            .and_then(|m| m.try_into().ok());
        let suite = Header::peek(&hello).and_then(|h| Suite::from_seq(h.seq));
        let psk = derive_psk(&common::v2_key());
        let answered = match (message, suite) {
            (Some(m), Some(suite)) => {
                Responder::read_hello(suite, &psk, Zeroizing::new([mode; 32]), &m).ok().and_then(|(r, _)| {
                    let reply = AcceptPayload { node_id: Uuid::from_bytes([mode; 16]), session_id: [mode; 8] };
                    r.reply(&reply).ok().map(|(accept, session)| (suite, accept, session))
                })
            }
            _ => None,
        };
        if let Some((suite, accept, session)) = answered {
            input.extend_from_slice(&v2_handshake_header(suite, true).encode());
            input.extend_from_slice(&accept);
            if mode & 2 == 2 {
                let mut sealer = Sealer::new(suite, &session.server_to_client);
                input.extend(common::seal_frames(&mut sealer, rest));
            }
        }
        if mode & 2 == 0 {
            input.extend_from_slice(rest);
        }
    } else {
        input.extend_from_slice(rest);
    }
    common::feed(&mut conn, &mut auth, &input, common::read_size(mode >> 3), t0);
});
