//! Property tests for the wire codecs and the incremental frame decoder
//! (WIRE.md §2, §3, §6, §7).

use asoc_proto::wire::{
    Accept, Announcement, Frame, FrameDecoder, FrameError, FrameType, Header, Hello, ACCEPT_HEADER,
    ACCEPT_LEN, ANNOUNCEMENT_LEN, ANNOUNCEMENT_SIGNED_LEN, HEADER_LEN, HELLO_HEADER, HELLO_LEN,
    VERSION,
};
use bytes::BytesMut;
use proptest::prelude::*;
use uuid::Uuid;

fn any_header() -> impl Strategy<Value = Header> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(version, t, stream_id, seq, length)| Header {
            version,
            frame_type: FrameType::from_byte(t),
            stream_id,
            seq,
            length,
        })
}

fn any_hello() -> impl Strategy<Value = Hello> {
    (any::<[u8; 16]>(), any::<[u8; 16]>(), any::<u32>()).prop_map(|(node, mac, challenge)| Hello {
        node_id: Uuid::from_bytes(node),
        mac,
        challenge,
    })
}

fn any_announcement() -> impl Strategy<Value = Announcement> {
    (
        any::<[u8; 8]>(),
        any::<[u8; 16]>(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<[u8; 16]>(),
    )
        .prop_map(
            |(community_hash, node, port, timestamp, challenge, mac)| Announcement {
                community_hash,
                node_id: Uuid::from_bytes(node),
                port,
                timestamp,
                challenge,
                mac,
            },
        )
}

/// A version-1 frame of any type with a payload of at most `max_len` bytes.
fn any_frame(max_len: usize) -> impl Strategy<Value = (Header, Vec<u8>)> {
    (
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..=max_len),
    )
        .prop_map(|(t, stream, seq, payload)| {
            let len = u32::try_from(payload.len()).unwrap();
            (
                Header::new(FrameType::from_byte(t), stream, seq, len),
                payload,
            )
        })
}

/// Some header to require first: HELLO, ACCEPT or any version-1 header.
/// (Requiring a header of another version would make a decoder that can
/// refuse only, for a reason that depends on how much input has arrived.)
fn any_first() -> impl Strategy<Value = Option<Header>> {
    prop_oneof![
        Just(None),
        Just(Some(HELLO_HEADER)),
        Just(Some(ACCEPT_HEADER)),
        any_header().prop_map(|h| Some(Header {
            version: VERSION,
            ..h
        })),
        any_frame(0).prop_map(|(h, _)| Some(Header { length: 5, ..h })),
    ]
}

/// Input for the robustness properties: either uniformly random bytes
/// (almost always refused at byte 0) or a valid stream with a few bytes
/// overwritten, which reaches every later check of the decoder.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let noisy = (
        proptest::collection::vec(any_frame(40), 0..6),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    )
        .prop_map(|(frames, edits)| {
            let mut wire = Vec::new();
            for (h, p) in frames {
                wire.extend_from_slice(&h.encode());
                wire.extend(p);
            }
            if !wire.is_empty() {
                let n = wire.len();
                for (at, b) in edits {
                    wire[at % n] = b;
                }
            }
            wire
        });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..600), noisy]
}

/// Splits `bytes` at the given points (taken modulo the length, sorted).
fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| if bytes.is_empty() { 0 } else { c % bytes.len() })
        .collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

/// Feeds `chunks` in order, draining the decoder after each, stopping at the
/// first error (returned with the buffer as it was then).
fn feed(
    dec: &mut FrameDecoder,
    chunks: &[Vec<u8>],
) -> (Vec<Frame>, Option<(FrameError, BytesMut)>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some((e, buf))),
            }
        }
    }
    (frames, None)
}

proptest! {
    // The properties are cheap; run more cases than proptest's default 256.
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn header_round_trips(h in any_header()) {
        let bytes = h.encode();
        prop_assert_eq!(bytes.len(), HEADER_LEN);
        prop_assert_eq!(Header::decode(&bytes), h);
        prop_assert_eq!(Header::peek(&bytes), Some(h));
        prop_assert_eq!(bytes[0], h.version);
        prop_assert_eq!(bytes[1], h.frame_type.to_byte());
        prop_assert_eq!(&bytes[2..6], &h.stream_id.to_be_bytes()[..]);
        prop_assert_eq!(&bytes[6..10], &h.seq.to_be_bytes()[..]);
        prop_assert_eq!(&bytes[10..14], &h.length.to_be_bytes()[..]);
    }

    #[test]
    fn every_14_bytes_are_a_header(bytes in any::<[u8; HEADER_LEN]>(), extra in proptest::collection::vec(any::<u8>(), 0..8)) {
        prop_assert_eq!(Header::decode(&bytes).encode(), bytes);
        let mut longer = bytes.to_vec();
        longer.extend(extra);
        prop_assert_eq!(Header::peek(&longer), Some(Header::decode(&bytes)));
        prop_assert_eq!(Header::peek(&bytes[..HEADER_LEN - 1]), None);
    }

    #[test]
    fn hello_round_trips(h in any_hello()) {
        let payload = h.encode();
        prop_assert_eq!(payload.len(), HELLO_LEN);
        prop_assert_eq!(Hello::decode(&payload), Some(h));
        prop_assert_eq!(&payload[..16], h.node_id.as_bytes());
        prop_assert_eq!(&payload[16..32], &h.mac[..]);
        prop_assert_eq!(&payload[32..], &h.challenge.to_be_bytes()[..]);
        prop_assert_eq!(&Hello::signed_bytes(&h.node_id, h.challenge)[..16], h.node_id.as_bytes());
        prop_assert_eq!(&Hello::signed_bytes(&h.node_id, h.challenge)[16..], &h.challenge.to_be_bytes()[..]);

        let frame = h.encode_frame();
        prop_assert_eq!(&frame[..HEADER_LEN], &HELLO_HEADER.encode()[..]);
        prop_assert_eq!(&frame[HEADER_LEN..], &payload[..]);
        let mut dec = FrameDecoder::new(HELLO_LEN as u32);
        dec.expect_first(HELLO_HEADER);
        let f = dec.decode(&mut BytesMut::from(&frame[..])).unwrap().unwrap();
        prop_assert_eq!(f.header, HELLO_HEADER);
        prop_assert_eq!(Hello::decode(&f.payload), Some(h));
    }

    #[test]
    fn hello_bytes_round_trip(bytes in any::<[u8; HELLO_LEN]>()) {
        prop_assert_eq!(Hello::decode(&bytes).map(|h| h.encode()), Some(bytes));
    }

    #[test]
    fn accept_round_trips(token in any::<[u8; 8]>(), mac in any::<[u8; 8]>()) {
        let a = Accept { token, mac };
        let payload = a.encode();
        prop_assert_eq!(payload.len(), ACCEPT_LEN);
        prop_assert_eq!(Accept::decode(&payload), Some(a));
        prop_assert_eq!(&payload[..8], &token[..]);
        prop_assert_eq!(&payload[8..], &mac[..]);

        let frame = a.encode_frame();
        prop_assert_eq!(&frame[..HEADER_LEN], &ACCEPT_HEADER.encode()[..]);
        let mut dec = FrameDecoder::new(ACCEPT_LEN as u32);
        dec.expect_first(ACCEPT_HEADER);
        let f = dec.decode(&mut BytesMut::from(&frame[..])).unwrap().unwrap();
        prop_assert_eq!(f.header, ACCEPT_HEADER);
        prop_assert_eq!(Accept::decode(&f.payload), Some(a));
    }

    #[test]
    fn accept_bytes_round_trip(bytes in any::<[u8; ACCEPT_LEN]>()) {
        prop_assert_eq!(Accept::decode(&bytes).map(|a| a.encode()), Some(bytes));
    }

    #[test]
    fn announcement_round_trips(a in any_announcement()) {
        let bytes = a.encode();
        prop_assert_eq!(bytes.len(), ANNOUNCEMENT_LEN);
        prop_assert_eq!(Announcement::decode(&bytes), Some(a));
        prop_assert_eq!(&bytes[..ANNOUNCEMENT_SIGNED_LEN], &a.signed_bytes()[..]);
        prop_assert_eq!(&bytes[..8], &a.community_hash[..]);
        prop_assert_eq!(&bytes[8..24], a.node_id.as_bytes());
        prop_assert_eq!(&bytes[24..26], &a.port.to_be_bytes()[..]);
        prop_assert_eq!(&bytes[26..30], &a.timestamp.to_be_bytes()[..]);
        prop_assert_eq!(&bytes[30..34], &a.challenge.to_be_bytes()[..]);
        prop_assert_eq!(&bytes[34..], &a.mac[..]);
    }

    #[test]
    fn announcement_bytes_round_trip(bytes in any::<[u8; ANNOUNCEMENT_LEN]>()) {
        prop_assert_eq!(Announcement::decode(&bytes).map(|a| a.encode()), Some(bytes));
    }

    #[test]
    fn fixed_messages_refuse_wrong_lengths(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        prop_assert_eq!(Hello::decode(&bytes).is_some(), bytes.len() == HELLO_LEN);
        prop_assert_eq!(Accept::decode(&bytes).is_some(), bytes.len() == ACCEPT_LEN);
        prop_assert_eq!(Announcement::decode(&bytes).is_some(), bytes.len() == ANNOUNCEMENT_LEN);
    }

    #[test]
    fn split_stream_decodes_to_the_same_frames(
        frames in proptest::collection::vec(any_frame(64), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
        max_extra in 0u32..4,
        expect_first_frame in any::<bool>(),
    ) {
        let mut wire = Vec::new();
        for (h, p) in &frames {
            wire.extend_from_slice(&h.encode());
            wire.extend_from_slice(p);
        }
        let biggest = frames.iter().map(|(h, _)| h.length).max().unwrap_or(0);
        let mut dec = FrameDecoder::new(biggest + max_extra);
        // Requiring the first frame's exact header changes nothing for a
        // stream that starts with it, and applies to the first frame only.
        if let (true, Some((h, _))) = (expect_first_frame, frames.first()) {
            dec.expect_first(*h);
        }
        let pieces = chunks(&wire, &cuts);
        prop_assert_eq!(pieces.concat(), wire.clone());
        let (got, err) = feed(&mut dec, &pieces);
        prop_assert!(err.is_none(), "{:?}", err);
        let got: Vec<(Header, Vec<u8>)> =
            got.into_iter().map(|f| (f.header, f.payload.to_vec())).collect();
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn every_byte_split_decodes_to_the_same_frames(
        frames in proptest::collection::vec(any_frame(16), 1..5),
    ) {
        let mut wire = Vec::new();
        for (h, p) in &frames {
            wire.extend_from_slice(&h.encode());
            wire.extend_from_slice(p);
        }
        let one_by_one: Vec<Vec<u8>> = wire.iter().map(|b| vec![*b]).collect();
        let mut dec = FrameDecoder::new(16);
        let (got, err) = feed(&mut dec, &one_by_one);
        prop_assert!(err.is_none());
        let got: Vec<(Header, Vec<u8>)> =
            got.into_iter().map(|f| (f.header, f.payload.to_vec())).collect();
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_never_exceed_max_payload(
        bytes in hostile_bytes(),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
        max in prop_oneof![0u32..48, any::<u32>()],
        first in any_first(),
    ) {
        let mut dec = FrameDecoder::new(max);
        if let Some(h) = first {
            dec.expect_first(h);
        }
        prop_assert_eq!(dec.max_payload(), max);
        let (frames, err) = feed(&mut dec, &chunks(&bytes, &cuts));
        let mut consumed = 0;
        for (i, f) in frames.iter().enumerate() {
            prop_assert!(f.payload.len() as u64 <= u64::from(max));
            prop_assert_eq!(f.payload.len() as u64, u64::from(f.header.length));
            prop_assert_eq!(f.header.version, VERSION);
            if i == 0 {
                if let Some(h) = first {
                    prop_assert_eq!(f.header, h);
                }
            }
            prop_assert_eq!(&f.header.encode()[..], &bytes[consumed..consumed + HEADER_LEN]);
            consumed += HEADER_LEN;
            prop_assert_eq!(&f.payload[..], &bytes[consumed..consumed + f.payload.len()]);
            consumed += f.payload.len();
        }
        if let Some((_, buf)) = err {
            // Nothing of the refused frame was consumed.
            prop_assert_eq!(&buf[..], &bytes[consumed..consumed + buf.len()]);
        }
    }

    /// Fed one byte at a time, every error is reported by the time at most
    /// the 14 header bytes of the offending frame are buffered: no payload
    /// byte is ever needed (or buffered) to refuse a frame.
    #[test]
    fn errors_come_from_the_header_alone(
        bytes in hostile_bytes(),
        max in 0u32..64,
        first in any_first(),
    ) {
        let mut dec = FrameDecoder::new(max);
        if let Some(h) = first {
            dec.expect_first(h);
        }
        let one_by_one: Vec<Vec<u8>> = bytes.iter().map(|b| vec![*b]).collect();
        let (_, err) = feed(&mut dec, &one_by_one);
        if let Some((e, buf)) = err {
            prop_assert!(buf.len() <= HEADER_LEN, "{:?} after {} buffered bytes", e, buf.len());
            // The error is sticky and decided by those bytes only: asking
            // again, with or without more input, gives the same error and
            // consumes nothing.
            let mut again = buf.clone();
            prop_assert_eq!(dec.decode(&mut again), Err(e.clone()));
            prop_assert_eq!(&again[..], &buf[..]);
            prop_assert_eq!(dec.peek_header(&buf), Err(e.clone()));
            let mut more = buf.clone();
            more.extend_from_slice(&[0u8; 64]);
            prop_assert_eq!(dec.decode(&mut more), Err(e));
            prop_assert_eq!(more.len(), buf.len() + 64);
        }
    }

    /// A header declaring more than the maximum is refused as soon as its
    /// 14th byte arrives, whatever follows.
    #[test]
    fn oversized_declaration_is_refused_at_byte_14(
        h in any_frame(0).prop_map(|(h, _)| h),
        max in 0u32..1_000_000,
        over in 1u32..1_000_000,
        tail in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut h = h;
        h.length = max.saturating_add(over);
        let mut wire = h.encode().to_vec();
        wire.extend(tail);
        let mut dec = FrameDecoder::new(max);
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let r = dec.decode(&mut buf);
            if i + 1 < HEADER_LEN {
                prop_assert_eq!(r, Ok(None));
                prop_assert_eq!(dec.bytes_needed(&buf), HEADER_LEN - (i + 1));
            } else {
                prop_assert_eq!(r, Err(FrameError::PayloadTooLarge { declared: h.length, max }));
                prop_assert_eq!(buf.len(), HEADER_LEN);
                break;
            }
        }
    }

    /// peek_header and decode agree on every input.
    #[test]
    fn peek_header_agrees_with_decode(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        max in 0u32..64,
        first in any_first(),
    ) {
        let mut dec = FrameDecoder::new(max);
        if let Some(h) = first {
            dec.expect_first(h);
        }
        let peeked = dec.peek_header(&bytes);
        let decoded = dec.clone().decode(&mut BytesMut::from(&bytes[..]));
        match (&peeked, &decoded) {
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (Ok(None), Ok(None)) => {}
            (Ok(Some(h)), Ok(None)) => {
                prop_assert!(bytes.len() < HEADER_LEN + h.length as usize);
                prop_assert_eq!(dec.bytes_needed(&bytes), HEADER_LEN + h.length as usize - bytes.len());
            }
            (Ok(Some(h)), Ok(Some(f))) => prop_assert_eq!(*h, f.header),
            _ => prop_assert!(false, "peek {:?} vs decode {:?}", peeked, decoded),
        }
    }
}

#[test]
fn every_other_version_byte_is_refused_on_arrival() {
    for version in (0..=u8::MAX).filter(|v| *v != VERSION) {
        let mut dec = FrameDecoder::new(64);
        assert_eq!(
            dec.decode(&mut BytesMut::from(&[version][..])),
            Err(FrameError::UnsupportedVersion {
                version,
                expected: VERSION
            })
        );
        // A frame that is well-formed apart from its version byte.
        let h = Header {
            version,
            ..Header::new(FrameType::Data, 1, 0, 3)
        };
        let mut wire = h.encode().to_vec();
        wire.extend_from_slice(b"abc");
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(FrameError::UnsupportedVersion {
                version,
                expected: VERSION
            })
        );
        assert_eq!(&buf[..], &wire[..], "nothing consumed");
    }
    let f = FrameDecoder::new(64)
        .decode(&mut BytesMut::from(
            &[VERSION, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0][..],
        ))
        .unwrap()
        .unwrap();
    assert_eq!(f.header, Header::new(FrameType::Data, 1, 0, 0));
}

#[test]
fn expected_first_header_applies_to_the_first_frame_only() {
    let hello = Hello {
        node_id: Uuid::from_bytes([1; 16]),
        mac: [2; 16],
        challenge: 3,
    };
    let mut wire = hello.encode_frame().to_vec();
    // The same HELLO again, then a DATA frame: both past the first frame.
    wire.extend_from_slice(&hello.encode_frame());
    wire.extend_from_slice(&Header::new(FrameType::Data, 1, 0, 2).encode());
    wire.extend_from_slice(b"hi");
    let mut dec = FrameDecoder::new(64);
    dec.expect_first(HELLO_HEADER);
    let mut buf = BytesMut::from(&wire[..]);
    let types: Vec<FrameType> = std::iter::from_fn(|| dec.decode(&mut buf).unwrap())
        .map(|f| f.header.frame_type)
        .collect();
    assert_eq!(types, [FrameType::Hello, FrameType::Hello, FrameType::Data]);
    assert!(buf.is_empty());

    // Before the first frame, anything else is refused at its first byte
    // that differs from the HELLO header.
    let mut dec = FrameDecoder::new(64);
    dec.expect_first(HELLO_HEADER);
    let data = Header::new(FrameType::Data, 1, 0, 2).encode();
    assert!(matches!(
        dec.decode(&mut BytesMut::from(&data[..2])),
        Err(FrameError::UnexpectedFirstFrame {
            offset: 1,
            got: 1,
            want: 4,
            ..
        })
    ));
}
