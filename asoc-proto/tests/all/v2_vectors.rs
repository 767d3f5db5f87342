//! Byte-exact agreement with the independent v2 implementation, through
//! `shared/vectors/asoc-v2.json` (WIRE-v2.md §1–§4): key derivation, HELLO2,
//! ACCEPT2, the handshake hash, the split keys, CONFIRM and sealed frames.

use crate::common::{
    hex_array, hex_field, single_bit_flips, str_field, u32_field, u64_field, uuid_field, v2_section,
};

use asoc_proto::auth::ApiKey;
use asoc_proto::v2::noise::{AcceptPayload, HelloPayload, Initiator, Responder, MESSAGE_LEN};
use asoc_proto::v2::seal::{Opener, Sealer, TAG_LEN};
use asoc_proto::v2::{derive_discovery_key, derive_psk, Suite};
use asoc_proto::wire::{FrameType, Header, HEADER_LEN};
use bytes::BytesMut;
use serde_json::Value;
use zeroize::Zeroizing;

fn api_key(v: &Value) -> ApiKey {
    ApiKey::new_insecure(str_field(v, "api_key").as_bytes()).unwrap()
}

#[test]
fn psk_and_discovery_key_match_every_vector() {
    for v in v2_section("keys") {
        let key = api_key(&v);
        assert_eq!(derive_psk(&key).as_ref(), &hex_array::<32>(&v, "psk"));
        assert_eq!(
            derive_discovery_key(&key).as_ref(),
            &hex_array::<32>(&v, "discovery_key")
        );
    }
}

struct Run {
    suite: Suite,
    hello: [u8; MESSAGE_LEN],
    accept: [u8; MESSAGE_LEN],
    hash: [u8; 32],
    c2s: [u8; 32],
    s2c: [u8; 32],
}

fn body(frame: &[u8]) -> [u8; MESSAGE_LEN] {
    frame[HEADER_LEN..].try_into().unwrap()
}

/// Runs both sides with the vector's ephemeral keys and checks every byte.
fn run_vector(v: &Value) -> Run {
    let suite = Suite::from_seq(u32_field(v, "suite")).unwrap();
    assert_eq!(suite.protocol_name(), str_field(v, "protocol_name"));
    let psk = derive_psk(&api_key(v));
    let hello_frame = hex_field(v, "hello_frame");
    let accept_frame = hex_field(v, "accept_frame");
    let hello_header = Header::decode(hello_frame[..HEADER_LEN].try_into().unwrap());
    assert_eq!(
        hello_header,
        Header {
            version: 2,
            frame_type: FrameType::Hello,
            stream_id: 0,
            seq: suite.seq(),
            length: MESSAGE_LEN as u32
        }
    );
    let hello_payload = HelloPayload {
        node_id: uuid_field(v, "client_node_id"),
        unix_ms: u64_field(v, "client_unix_ms"),
    };
    let (initiator, hello) = Initiator::start(
        suite,
        &psk,
        Zeroizing::new(hex_array(v, "client_ephemeral_private")),
        &hello_payload,
    )
    .unwrap();
    assert_eq!(hello, body(&hello_frame), "HELLO2 body");

    let (responder, got) = Responder::read_hello(
        suite,
        &psk,
        Zeroizing::new(hex_array(v, "server_ephemeral_private")),
        &hello,
    )
    .unwrap();
    assert_eq!(got, hello_payload);
    let accept_payload = AcceptPayload {
        node_id: uuid_field(v, "server_node_id"),
        session_id: hex_array(v, "session_id"),
    };
    let (accept, server) = responder.reply(&accept_payload).unwrap();
    assert_eq!(accept, body(&accept_frame), "ACCEPT2 body");
    assert_eq!(accept_frame[1], 5);
    assert_eq!(&accept_frame[..HEADER_LEN], &{
        let mut h = hello_header;
        h.frame_type = FrameType::Accept;
        h.encode()
    });

    let (got, client) = initiator.finish(&accept).unwrap();
    assert_eq!(got, accept_payload);
    let hash = hex_array::<32>(v, "handshake_hash");
    assert_eq!(client.handshake_hash, hash);
    assert_eq!(server.handshake_hash, hash);
    let c2s = hex_array::<32>(v, "key_client_to_server");
    let s2c = hex_array::<32>(v, "key_server_to_client");
    assert_eq!(*client.client_to_server, c2s);
    assert_eq!(*server.client_to_server, c2s);
    assert_eq!(*client.server_to_client, s2c);
    assert_eq!(*server.server_to_client, s2c);
    Run {
        suite,
        hello,
        accept,
        hash,
        c2s,
        s2c,
    }
}

#[test]
fn handshakes_reproduce_every_vector_on_both_sides() {
    let vectors = v2_section("handshake");
    let suites: Vec<u32> = vectors.iter().map(|v| u32_field(v, "suite")).collect();
    assert!(
        suites.contains(&1) && suites.contains(&2),
        "both suites covered"
    );
    for v in &vectors {
        let run = run_vector(v);
        assert_eq!(run.hash.len(), 32);
    }
}

#[test]
fn a_one_bit_change_anywhere_in_hello2_or_accept2_is_rejected() {
    for v in v2_section("handshake") {
        let run = run_vector(&v);
        let psk = derive_psk(&api_key(&v));
        for (_, flipped) in single_bit_flips(&run.hello) {
            let msg: [u8; MESSAGE_LEN] = flipped.try_into().unwrap();
            assert!(Responder::read_hello(run.suite, &psk, Zeroizing::new([9; 32]), &msg).is_err());
        }
        for (_, flipped) in single_bit_flips(&run.accept) {
            let (initiator, _) = Initiator::start(
                run.suite,
                &psk,
                Zeroizing::new(hex_array(&v, "client_ephemeral_private")),
                &HelloPayload {
                    node_id: uuid_field(&v, "client_node_id"),
                    unix_ms: u64_field(&v, "client_unix_ms"),
                },
            )
            .unwrap();
            let msg: [u8; MESSAGE_LEN] = flipped.try_into().unwrap();
            assert!(initiator.finish(&msg).is_err());
        }
        // The other key of the file does not open this HELLO2.
        let other = v2_section("keys")
            .into_iter()
            .map(|k| api_key(&k))
            .find(|k| k.expose_secret() != api_key(&v).expose_secret())
            .unwrap();
        assert!(Responder::read_hello(
            run.suite,
            &derive_psk(&other),
            Zeroizing::new([9; 32]),
            &run.hello
        )
        .is_err());
    }
}

/// CONFIRM and every transport frame: sealing gives the vector's bytes,
/// opening recovers the plaintext, any flipped bit fails.
#[test]
fn confirm_and_transport_frames_match_and_resist_bit_flips() {
    for v in v2_section("handshake") {
        let run = run_vector(&v);
        let mut client_seal = Sealer::new(run.suite, &run.c2s);
        let mut server_seal = Sealer::new(run.suite, &run.s2c);
        let mut server_open = Opener::new(run.suite, &run.c2s);
        let mut client_open = Opener::new(run.suite, &run.s2c);

        let confirm = hex_field(&v, "confirm_frame");
        let header: [u8; HEADER_LEN] = confirm[..HEADER_LEN].try_into().unwrap();
        assert_eq!(
            Header::decode(&header),
            Header {
                version: 2,
                frame_type: FrameType::Control,
                stream_id: 0,
                seq: 0,
                length: TAG_LEN as u32
            }
        );
        assert_eq!(
            &client_seal.seal(&header, b"").unwrap()[..],
            &confirm[HEADER_LEN..]
        );
        let mut b = BytesMut::from(&confirm[HEADER_LEN..]);
        server_open.open(&header, &mut b).unwrap();
        assert!(b.is_empty());

        let frames = v["frames"].as_array().unwrap();
        assert!(frames.iter().any(|f| f["from"] == "server"));
        for f in frames {
            let wire = hex_field(f, "frame");
            let plaintext = hex_field(f, "plaintext");
            let header: [u8; HEADER_LEN] = wire[..HEADER_LEN].try_into().unwrap();
            let h = Header::decode(&header);
            assert_eq!(h.version, 2);
            assert_eq!(h.frame_type.to_byte() as u32, u32_field(f, "type"));
            assert_eq!(h.stream_id, u32_field(f, "stream_id"));
            assert_eq!(h.seq, u32_field(f, "seq"));
            assert_eq!(h.length as usize, plaintext.len() + TAG_LEN);
            let (sealer, opener, key) = match f["from"].as_str().unwrap() {
                "client" => (&mut client_seal, &mut server_open, run.c2s),
                _ => (&mut server_seal, &mut client_open, run.s2c),
            };
            assert_eq!(
                &sealer.seal(&header, &plaintext).unwrap()[..],
                &wire[HEADER_LEN..]
            );
            // Every flipped bit, header or body, fails under the right nonce.
            let nonce_at = opener.count();
            for (_, flipped) in single_bit_flips(&wire) {
                let mut o = Opener::starting_at(run.suite, &key, nonce_at);
                let h: [u8; HEADER_LEN] = flipped[..HEADER_LEN].try_into().unwrap();
                let mut b = BytesMut::from(&flipped[HEADER_LEN..]);
                assert!(o.open(&h, &mut b).is_err());
            }
            let mut b = BytesMut::from(&wire[HEADER_LEN..]);
            opener.open(&header, &mut b).unwrap();
            assert_eq!(&b[..], &plaintext[..]);
        }
    }
}
