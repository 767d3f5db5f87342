//! The suite's own v2 peer against every entry of `asoc-v2.json`, read at
//! test time: keys, both handshake messages from the given ephemerals, the
//! handshake hash and split keys, CONFIRM and every transport frame from
//! both sides, and every discovery datagram. A one-bit change of a frame or
//! datagram must be refused.

use conformance::v2::{self, discovery_key, psk, Announcement, Hello, Initiator, Session, Suite};
use serde_json::Value;
use uuid::Uuid;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/asoc-v2.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    unhex(v).try_into().unwrap()
}

#[test]
fn keys_and_prologue() {
    let v = vectors();
    assert_eq!(unhex(&v["prologue"]), v2::PROLOGUE);
    let keys = v["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    for k in keys {
        let api = k["api_key"].as_str().unwrap().as_bytes();
        assert_eq!(psk(api), arr::<32>(&k["psk"]), "{k}");
        assert_eq!(discovery_key(api), arr::<32>(&k["discovery_key"]), "{k}");
    }
}

#[test]
fn every_handshake_and_frame() {
    let v = vectors();
    let cases = v["handshake"].as_array().unwrap();
    assert!(!cases.is_empty());
    for h in cases {
        let suite = Suite::from_number(h["suite"].as_u64().unwrap() as u32).unwrap();
        assert_eq!(suite.protocol_name(), h["protocol_name"].as_str().unwrap());
        let api = h["api_key"].as_str().unwrap().as_bytes();
        let client = Uuid::from_bytes(arr(&h["client_node_id"]));
        let server = Uuid::from_bytes(arr(&h["server_node_id"]));
        let ms = h["client_unix_ms"].as_u64().unwrap();
        let hello_frame = unhex(&h["hello_frame"]);
        let accept_frame = unhex(&h["accept_frame"]);

        let init =
            Initiator::new(api, suite, arr(&h["client_ephemeral_private"]), &client, ms).unwrap();
        assert_eq!(init.hello(), &hello_frame[..], "HELLO2 of {h}");

        let hello = Hello::read(
            api,
            &Suite::ALL,
            arr(&h["server_ephemeral_private"]),
            &hello_frame,
        )
        .unwrap();
        assert_eq!(
            (hello.node, hello.unix_ms, hello.suite()),
            (client, ms, suite)
        );
        let (accept, mut server_side) = hello.accept(&server, arr(&h["session_id"])).unwrap();
        assert_eq!(accept, accept_frame, "ACCEPT2 of {h}");

        let accepted = init.accept(&accept_frame).unwrap();
        assert_eq!(accepted.server_node, server);
        assert_eq!(accepted.session_id, arr::<8>(&h["session_id"]));
        let mut client_side = accepted.session;
        let hash = arr::<32>(&h["handshake_hash"]);
        assert_eq!((client_side.hash, server_side.hash), (hash, hash));
        let keys = (
            arr::<32>(&h["key_client_to_server"]),
            arr::<32>(&h["key_server_to_client"]),
        );
        assert_eq!(client_side.keys, keys);
        assert_eq!(server_side.keys, keys);

        let confirm = unhex(&h["confirm_frame"]);
        assert_eq!(client_side.tx.confirm(), confirm);
        let ch: [u8; 14] = confirm[..14].try_into().unwrap();
        assert_eq!(server_side.rx.open(&ch, &confirm[14..]).unwrap(), b"");

        for f in h["frames"].as_array().unwrap() {
            let bytes = unhex(&f["frame"]);
            let plain = unhex(&f["plaintext"]);
            let (tx, rx): (&mut Session, &mut Session) = match f["from"].as_str().unwrap() {
                "client" => (&mut client_side, &mut server_side),
                _ => (&mut server_side, &mut client_side),
            };
            let ty = f["type"].as_u64().unwrap() as u8;
            let stream = f["stream_id"].as_u64().unwrap() as u32;
            let seq = f["seq"].as_u64().unwrap() as u32;
            let n = tx.tx.next_nonce();
            assert_eq!(tx.tx.seal(ty, stream, seq, &plain), bytes, "frame {f}");
            let hd: [u8; 14] = bytes[..14].try_into().unwrap();
            // A one-bit change anywhere, header or body, does not open.
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << (i % 8);
                let bh: [u8; 14] = bad[..14].try_into().unwrap();
                assert!(
                    rx.rx.open(&bh, &bad[14..]).is_err(),
                    "bit flip at {i} of {f} opened"
                );
            }
            assert_eq!(rx.rx.next_nonce(), n, "a refused frame moved the counter");
            assert_eq!(rx.rx.open(&hd, &bytes[14..]).unwrap(), plain, "frame {f}");
            // Opened once; the same frame again is a replay.
            assert!(
                rx.rx.open(&hd, &bytes[14..]).is_err(),
                "replay of {f} opened"
            );
        }
    }
}

#[test]
fn a_bit_flip_of_a_handshake_message_is_refused() {
    let v = vectors();
    for h in v["handshake"].as_array().unwrap() {
        let api = h["api_key"].as_str().unwrap().as_bytes();
        let hello_frame = unhex(&h["hello_frame"]);
        for i in 0..hello_frame.len() {
            let mut bad = hello_frame.clone();
            bad[i] ^= 1 << (i % 8);
            assert!(
                Hello::read(api, &Suite::ALL, [7; 32], &bad).is_err(),
                "HELLO2 bit flip at {i} accepted"
            );
        }
        let accept_frame = unhex(&h["accept_frame"]);
        let suite = Suite::from_number(h["suite"].as_u64().unwrap() as u32).unwrap();
        let client = Uuid::from_bytes(arr(&h["client_node_id"]));
        let ms = h["client_unix_ms"].as_u64().unwrap();
        for i in 0..accept_frame.len() {
            let init = Initiator::new(api, suite, arr(&h["client_ephemeral_private"]), &client, ms)
                .unwrap();
            let mut bad = accept_frame.clone();
            bad[i] ^= 1 << (i % 8);
            assert!(
                init.accept(&bad).is_err(),
                "ACCEPT2 bit flip at {i} accepted"
            );
        }
        // The other suite's parameters never read this HELLO2.
        let other = if suite == Suite::AesGcm {
            Suite::ChaChaPoly
        } else {
            Suite::AesGcm
        };
        assert!(Hello::read(api, &[other], [7; 32], &hello_frame).is_err());
    }
}

#[test]
fn every_discovery_datagram() {
    let v = vectors();
    let ds = v["discovery"].as_array().unwrap();
    assert!(!ds.is_empty());
    for d in ds {
        let key = discovery_key(d["api_key"].as_str().unwrap().as_bytes());
        let mut a = Announcement::new(
            d["community"].as_str().unwrap(),
            Uuid::from_bytes(arr(&d["node_id"])),
            d["tcp_port"].as_u64().unwrap() as u16,
            d["unix_ms"].as_u64().unwrap(),
        );
        a.flags = d["flags"].as_u64().unwrap() as u8;
        let bytes = unhex(&d["datagram"]);
        assert_eq!(a.encode(&key).to_vec(), bytes, "{d}");
        assert_eq!(Announcement::decode(&key, &bytes), Some(a));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1 << (i % 8);
            assert_eq!(
                Announcement::decode(&key, &bad),
                None,
                "bit flip at {i} of {d}"
            );
        }
    }
}
