//! Byte-exact agreement with the Python implementation, through the shared
//! vectors in `shared/vectors/asoc-v1.json` (WIRE.md §1–§3, §7).

use crate::common;

use asoc_proto::auth::{
    community_hash, ct_eq, derive_cluster_key, sign_announcement, sign_hello, verify_announcement,
    verify_hello, SessionToken, CLUSTER_KEY_ITERATIONS,
};
use asoc_proto::wire::{
    Accept, Announcement, Frame, FrameDecoder, FrameError, FrameType, Header, Hello, ACCEPT_HEADER,
    ACCEPT_LEN, ANNOUNCEMENT_LEN, DEFAULT_MAX_PAYLOAD, HEADER_LEN, HELLO_HEADER, HELLO_LEN,
};
use bytes::BytesMut;
use common::{
    hex_array, hex_field, section, single_bit_flips, str_field, u32_field, u64_field, uuid_field,
    vector_key,
};

/// Feeds `bytes` to a fresh decoder one byte at a time and returns every
/// result that was not `Ok(None)`, stopping at the first error.
fn decode_bytewise(
    mut dec: FrameDecoder,
    bytes: &[u8],
) -> (Vec<Frame>, Option<(usize, FrameError)>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some((i, e))),
            }
        }
    }
    (frames, None)
}

/// Decodes the first frame of `bytes` handed over in one piece.
fn decode_one(mut dec: FrameDecoder, bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
    dec.decode(&mut BytesMut::from(bytes))
}

fn hello_decoder() -> FrameDecoder {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_PAYLOAD);
    dec.expect_first(HELLO_HEADER);
    dec
}

fn accept_decoder() -> FrameDecoder {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_PAYLOAD);
    dec.expect_first(ACCEPT_HEADER);
    dec
}

#[test]
fn vector_file_has_every_section() {
    let v = common::vectors();
    for name in [
        "community_hash",
        "frame_header",
        "hello",
        "accept",
        "discovery",
        "pbkdf2_cluster_key",
    ] {
        assert!(
            !section(name).is_empty(),
            "{}: section {name} is empty",
            common::VECTORS_PATH
        );
    }
    assert!(v.get("_about").is_some());
}

#[test]
#[should_panic(
    expected = "cannot read the ASoc test vectors at /nonexistent/shared/vectors/asoc-v1.json"
)]
fn missing_vector_file_names_the_expected_path() {
    common::load_vectors("/nonexistent/shared/vectors/asoc-v1.json");
}

#[test]
fn community_hash_vectors() {
    for v in section("community_hash") {
        let community = str_field(&v, "community");
        let expected: [u8; 8] = hex_array(&v, "hash");
        assert_eq!(
            community_hash(community),
            expected,
            "community hash of {community:?}"
        );
    }
}

#[test]
fn community_hash_vectors_reject_every_bit_flip() {
    let mut name_flips = 0;
    for v in section("community_hash") {
        let community = str_field(&v, "community");
        let expected: [u8; 8] = hex_array(&v, "hash");
        let own = community_hash(community);
        // A received hash one bit off is another community.
        for (bit, flipped) in single_bit_flips(&expected) {
            assert!(!ct_eq(&own, &flipped), "{community:?}: hash bit {bit}");
        }
        // A community name one bit off hashes differently (flips that leave
        // UTF-8 are not names).
        for (bit, flipped) in single_bit_flips(community.as_bytes()) {
            if let Ok(other) = String::from_utf8(flipped) {
                assert!(
                    !ct_eq(&community_hash(&other), &expected),
                    "{community:?}: name bit {bit} ({other:?}) has the same hash"
                );
                name_flips += 1;
            }
        }
    }
    assert!(name_flips > 0, "no community name was flipped");
}

fn vector_header(v: &serde_json::Value) -> (Header, Vec<u8>) {
    let payload = hex_field(v, "payload");
    let version = u8::try_from(u64_field(v, "version")).expect("version is one byte");
    let frame_type = u8::try_from(u64_field(v, "type")).expect("type is one byte");
    let header = Header {
        version,
        frame_type: FrameType::from_byte(frame_type),
        stream_id: u32_field(v, "stream_id"),
        seq: u32_field(v, "seq"),
        length: u32::try_from(payload.len()).expect("payload length fits u32"),
    };
    (header, payload)
}

#[test]
fn frame_header_vectors_encode() {
    for v in section("frame_header") {
        let (header, payload) = vector_header(&v);
        let expected = hex_field(&v, "frame");
        // The vectors are version-1 frames, which is what Header::new builds.
        assert_eq!(
            Header::new(
                header.frame_type,
                header.stream_id,
                header.seq,
                header.length
            ),
            header
        );
        let mut wire = header.encode().to_vec();
        wire.extend_from_slice(&payload);
        assert_eq!(hex::encode(&wire), hex::encode(&expected), "vector {v}");
        let head: &[u8; HEADER_LEN] = expected[..HEADER_LEN].try_into().unwrap();
        assert_eq!(Header::decode(head), header);
        assert_eq!(Header::peek(&expected), Some(header));
    }
}

#[test]
fn frame_header_vectors_decode() {
    let mut saw_control = false;
    for v in section("frame_header") {
        let (header, payload) = vector_header(&v);
        let frame = hex_field(&v, "frame");
        saw_control |= header.frame_type == FrameType::Control;

        let f = decode_one(FrameDecoder::new(DEFAULT_MAX_PAYLOAD), &frame)
            .unwrap_or_else(|e| panic!("vector {v} refused: {e}"))
            .unwrap_or_else(|| panic!("vector {v}: whole frame present but not decoded"));
        assert_eq!(f.header, header, "vector {v}");
        assert_eq!(&f.payload[..], &payload[..], "vector {v}");

        // The tightest limit that still admits the frame.
        let f = decode_one(FrameDecoder::new(header.length), &frame)
            .unwrap()
            .unwrap();
        assert_eq!(f.header, header);

        // Fed byte by byte: nothing until the last byte, then exactly this frame.
        let (frames, err) = decode_bytewise(FrameDecoder::new(DEFAULT_MAX_PAYLOAD), &frame);
        assert_eq!(err, None);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].header, header);
        assert_eq!(&frames[0].payload[..], &payload[..]);

        // One byte short: the decoder waits and says how much it needs.
        let dec = FrameDecoder::new(DEFAULT_MAX_PAYLOAD);
        let short = &frame[..frame.len() - 1];
        assert_eq!(dec.bytes_needed(short), 1);
        assert_eq!(
            decode_one(FrameDecoder::new(DEFAULT_MAX_PAYLOAD), short),
            Ok(None)
        );
        assert_eq!(dec.bytes_needed(&frame), 0);

        // One byte under the declared length is refused from the header alone.
        if header.length > 0 {
            assert_eq!(
                decode_one(FrameDecoder::new(header.length - 1), &frame[..HEADER_LEN]),
                Err(FrameError::PayloadTooLarge {
                    declared: header.length,
                    max: header.length - 1
                })
            );
        }
    }
    assert!(saw_control, "the vectors include a CONTROL frame");
}

#[test]
fn frame_header_vectors_decode_back_to_back() {
    let vs = section("frame_header");
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for v in &vs {
        wire.extend(hex_field(v, "frame"));
        expected.push(vector_header(v));
    }
    let (frames, err) = decode_bytewise(FrameDecoder::new(DEFAULT_MAX_PAYLOAD), &wire);
    assert_eq!(err, None);
    let got: Vec<(Header, Vec<u8>)> = frames
        .into_iter()
        .map(|f| (f.header, f.payload.to_vec()))
        .collect();
    assert_eq!(got, expected);

    let mut buf = BytesMut::from(&wire[..]);
    let mut dec = FrameDecoder::new(DEFAULT_MAX_PAYLOAD);
    for (header, payload) in &expected {
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&f.header, header);
        assert_eq!(&f.payload[..], &payload[..]);
    }
    assert_eq!(dec.decode(&mut buf), Ok(None));
    assert!(buf.is_empty());
}

/// Every 14 bytes are a header, so for a plain frame "rejected" means the
/// flip never goes unnoticed: the decoder refuses it (version, limit), waits
/// for bytes that never come (a longer length), or yields a frame that is
/// not the vector's.
#[test]
fn frame_header_vectors_reject_every_bit_flip() {
    for v in section("frame_header") {
        let (header, payload) = vector_header(&v);
        let frame = hex_field(&v, "frame");
        for (bit, flipped) in single_bit_flips(&frame) {
            let mut buf = BytesMut::from(&flipped[..]);
            let mut dec = FrameDecoder::new(DEFAULT_MAX_PAYLOAD);
            match dec.decode(&mut buf) {
                Err(FrameError::UnsupportedVersion { .. }) => {
                    assert_eq!(bit / 8, 0, "bit {bit}: version refused for a later byte")
                }
                Err(FrameError::PayloadTooLarge { declared, .. }) => {
                    assert_ne!(declared, header.length, "bit {bit}")
                }
                Err(e) => panic!("bit {bit}: {e}"),
                Ok(None) => assert!(
                    Header::peek(&flipped).is_some_and(|h| h.length > header.length),
                    "bit {bit}: the decoder waits although the frame is whole"
                ),
                Ok(Some(f)) => {
                    let same = f.header == header && f.payload[..] == payload[..] && buf.is_empty();
                    assert!(!same, "bit {bit} flipped decodes as the vector ({v})");
                    // Each field lands where the layout says.
                    match bit / 8 {
                        1 => assert_ne!(f.header.frame_type, header.frame_type),
                        2..=5 => assert_ne!(f.header.stream_id, header.stream_id),
                        6..=9 => assert_ne!(f.header.seq, header.seq),
                        10..=13 => assert!(f.header.length < header.length),
                        _ => assert_ne!(&f.payload[..], &payload[..]),
                    }
                }
            }
        }
    }
}

#[test]
fn hello_vectors_sign_encode_and_verify() {
    for v in section("hello") {
        let key = vector_key(&v);
        let node = uuid_field(&v, "node_uuid");
        let challenge = u32_field(&v, "challenge");
        let payload = hex_field(&v, "payload");
        let frame = hex_field(&v, "frame");
        assert_eq!(payload.len(), HELLO_LEN);

        let hello = sign_hello(&key, node, challenge);
        assert_eq!(hex::encode(hello.encode()), hex::encode(&payload), "{v}");
        assert_eq!(
            hex::encode(hello.encode_frame()),
            hex::encode(&frame),
            "{v}"
        );

        let decoded = Hello::decode(&payload).expect("36-byte payload decodes");
        assert_eq!(decoded, hello);
        assert_eq!(decoded.node_id, node);
        assert_eq!(decoded.challenge, challenge);
        assert!(verify_hello(&key, &decoded), "{v}");

        let f = decode_one(hello_decoder(), &frame).unwrap().unwrap();
        assert_eq!(f.header, HELLO_HEADER);
        assert_eq!(&f.payload[..], &payload[..]);
        assert!(verify_hello(&key, &Hello::decode(&f.payload).unwrap()));
    }
}

#[test]
fn hello_vectors_reject_every_payload_bit_flip() {
    for v in section("hello") {
        let key = vector_key(&v);
        let payload = hex_field(&v, "payload");
        let original = Hello::decode(&payload).unwrap();
        for (bit, flipped) in single_bit_flips(&payload) {
            let h = Hello::decode(&flipped).expect("still 36 bytes");
            assert_ne!(h, original, "bit {bit}");
            assert!(
                !verify_hello(&key, &h),
                "HELLO with payload bit {bit} flipped still verifies ({v})"
            );
        }
    }
}

#[test]
fn hello_vectors_reject_every_frame_bit_flip() {
    for v in section("hello") {
        let key = vector_key(&v);
        let frame = hex_field(&v, "frame");
        assert_eq!(frame.len(), HEADER_LEN + HELLO_LEN);
        for (bit, flipped) in single_bit_flips(&frame) {
            let byte = bit / 8;
            if byte < HEADER_LEN {
                // A server expecting HELLO refuses at the first wrong byte,
                // before reading any further.
                let (frames, err) = decode_bytewise(hello_decoder(), &flipped);
                assert!(frames.is_empty(), "bit {bit}");
                let (at, e) = err.unwrap_or_else(|| panic!("header bit {bit} accepted"));
                assert_eq!(at, byte, "bit {bit}: refused at byte {at}");
                assert!(
                    matches!(e, FrameError::UnexpectedFirstFrame { offset, expected: FrameType::Hello, .. } if offset == byte),
                    "bit {bit}: {e:?}"
                );
                // Without the first-frame rule, the result is still not a
                // valid HELLO frame.
                match decode_one(FrameDecoder::new(DEFAULT_MAX_PAYLOAD), &flipped) {
                    Err(_) | Ok(None) => {}
                    Ok(Some(f)) => assert_ne!(f.header, HELLO_HEADER, "bit {bit}"),
                }
            } else {
                let f = decode_one(hello_decoder(), &flipped)
                    .unwrap_or_else(|e| panic!("payload bit {bit}: header refused: {e}"))
                    .unwrap();
                assert_eq!(f.header, HELLO_HEADER);
                let h = Hello::decode(&f.payload).unwrap();
                assert!(!verify_hello(&key, &h), "frame bit {bit} flipped verifies");
            }
        }
    }
}

#[test]
fn accept_vectors_sign_encode_and_verify() {
    for v in section("accept") {
        let key = vector_key(&v);
        let token: [u8; 8] = hex_array(&v, "session_token");
        let payload = hex_field(&v, "payload");
        let frame = hex_field(&v, "frame");
        assert_eq!(payload.len(), ACCEPT_LEN);

        let st = SessionToken::sign(&key, token);
        assert_eq!(st.token, token);
        assert!(st.verify(&key));
        let accept = st.to_accept();
        assert_eq!(hex::encode(accept.encode()), hex::encode(&payload), "{v}");
        assert_eq!(
            hex::encode(accept.encode_frame()),
            hex::encode(&frame),
            "{v}"
        );

        let decoded = Accept::decode(&payload).unwrap();
        assert_eq!(decoded, accept);
        let back = SessionToken::from_accept(&decoded);
        assert_eq!(back, st);
        assert!(back.verify(&key));

        let f = decode_one(accept_decoder(), &frame).unwrap().unwrap();
        assert_eq!(f.header, ACCEPT_HEADER);
        assert_eq!(&f.payload[..], &payload[..]);
    }
}

#[test]
fn accept_vectors_reject_every_bit_flip() {
    for v in section("accept") {
        let key = vector_key(&v);
        let payload = hex_field(&v, "payload");
        for (bit, flipped) in single_bit_flips(&payload) {
            let st = SessionToken::from_accept(&Accept::decode(&flipped).unwrap());
            assert!(
                !st.verify(&key),
                "ACCEPT payload bit {bit} flipped verifies"
            );
        }
        let frame = hex_field(&v, "frame");
        for (bit, flipped) in single_bit_flips(&frame) {
            let byte = bit / 8;
            if byte < HEADER_LEN {
                let (frames, err) = decode_bytewise(accept_decoder(), &flipped);
                assert!(frames.is_empty());
                let (at, e) = err.unwrap_or_else(|| panic!("header bit {bit} accepted"));
                assert_eq!(at, byte);
                assert!(
                    matches!(e, FrameError::UnexpectedFirstFrame { offset, expected: FrameType::Accept, .. } if offset == byte),
                    "bit {bit}: {e:?}"
                );
            } else {
                let f = decode_one(accept_decoder(), &flipped).unwrap().unwrap();
                let st = SessionToken::from_accept(&Accept::decode(&f.payload).unwrap());
                assert!(!st.verify(&key), "ACCEPT frame bit {bit} flipped verifies");
            }
        }
    }
}

fn vector_announcement(v: &serde_json::Value) -> Announcement {
    Announcement {
        community_hash: community_hash(str_field(v, "community")),
        node_id: uuid_field(v, "node_uuid"),
        port: u16::try_from(u64_field(v, "port")).expect("port fits u16"),
        timestamp: u32_field(v, "timestamp"),
        challenge: u32_field(v, "challenge"),
        // Deliberately not zero: signing must overwrite it.
        mac: [0xa5; 16],
    }
}

#[test]
fn discovery_vectors_sign_encode_and_verify() {
    for v in section("discovery") {
        let key = vector_key(&v);
        let message = hex_field(&v, "message");
        assert_eq!(message.len(), ANNOUNCEMENT_LEN);
        let unsigned = vector_announcement(&v);
        let signed = sign_announcement(&key, unsigned);
        assert_eq!(
            Announcement {
                mac: unsigned.mac,
                ..signed
            },
            unsigned,
            "signing changes only the MAC"
        );
        assert_eq!(hex::encode(signed.encode()), hex::encode(&message), "{v}");

        let decoded = Announcement::decode(&message).unwrap();
        assert_eq!(decoded, signed);
        assert!(verify_announcement(&key, &decoded));
        assert!(ct_eq(
            &decoded.community_hash,
            &community_hash(str_field(&v, "community"))
        ));
    }
}

#[test]
fn discovery_vectors_reject_every_bit_flip() {
    for v in section("discovery") {
        let key = vector_key(&v);
        let own_hash = community_hash(str_field(&v, "community"));
        let message = hex_field(&v, "message");
        for (bit, flipped) in single_bit_flips(&message) {
            let a = Announcement::decode(&flipped).expect("still 50 bytes");
            let hash_ok = ct_eq(&a.community_hash, &own_hash);
            let mac_ok = verify_announcement(&key, &a);
            assert!(
                !(hash_ok && mac_ok),
                "discovery bit {bit} flipped is accepted ({v})"
            );
            // The community hash is both compared and covered by the MAC.
            if bit / 8 < 8 {
                assert!(!hash_ok, "bit {bit}");
            } else {
                assert!(hash_ok, "bit {bit}");
            }
            assert!(!mac_ok, "bit {bit}: MAC still verifies");
        }
    }
}

#[test]
fn pbkdf2_cluster_key_vectors() {
    for v in section("pbkdf2_cluster_key") {
        assert_eq!(
            u32_field(&v, "iterations"),
            CLUSTER_KEY_ITERATIONS,
            "vector iteration count"
        );
        let master = hex_field(&v, "master_key");
        let cluster = str_field(&v, "cluster");
        let expected: [u8; 32] = hex_array(&v, "key");
        let derived = derive_cluster_key(&master, cluster);
        assert_eq!(hex::encode(*derived), hex::encode(expected), "{v}");
    }
}

/// One flipped bit in the master key or in the cluster name gives another
/// key. PBKDF2 at 100,000 iterations is slow, so each byte is flipped once
/// (bit `byte % 8`) rather than each of its eight bits.
#[test]
fn pbkdf2_cluster_key_vectors_change_with_every_input_byte() {
    for v in section("pbkdf2_cluster_key") {
        let master = hex_field(&v, "master_key");
        let cluster = str_field(&v, "cluster");
        let expected: [u8; 32] = hex_array(&v, "key");
        for i in 0..master.len() {
            let mut m = master.clone();
            m[i] ^= 1 << (i % 8);
            assert_ne!(
                *derive_cluster_key(&m, cluster),
                expected,
                "master byte {i}"
            );
        }
        for i in 0..cluster.len() {
            let mut c = cluster.as_bytes().to_vec();
            c[i] ^= 1 << (i % 7);
            let c = String::from_utf8(c).expect("ASCII stays UTF-8 below bit 7");
            assert_ne!(*derive_cluster_key(&master, &c), expected, "cluster {c:?}");
        }
    }
}

#[test]
fn vector_keys_are_utf8_bytes_not_hex_decoded() {
    // A 64-hex-char key is used as 64 ASCII bytes. Hex-decoding it instead
    // must not reproduce the vector, or this rule is untested.
    let mut checked = 0;
    for v in section("hello") {
        let s = str_field(&v, "api_key");
        let Ok(raw) = hex::decode(s) else { continue };
        let decoded_key = asoc_proto::auth::ApiKey::new_insecure(&raw).unwrap();
        let h = sign_hello(
            &decoded_key,
            uuid_field(&v, "node_uuid"),
            u32_field(&v, "challenge"),
        );
        assert_ne!(h.encode().to_vec(), hex_field(&v, "payload"));
        assert!(verify_hello(
            &vector_key(&v),
            &Hello::decode(&hex_field(&v, "payload")).unwrap()
        ));
        checked += 1;
    }
    assert!(checked > 0, "the vectors include a hex-looking API key");
}
