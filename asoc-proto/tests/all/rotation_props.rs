//! Property tests for the key-rotation control bodies: decoding never
//! panics on any bytes, and what is encoded decodes to itself.

use asoc_proto::auth::ApiKey;
use asoc_proto::rotation::wire::{MAX_ROTATION_KEY_LEN, ROTATION_FIXED_LEN};
use asoc_proto::rotation::{AckStatus, KeyRotation, RotationAck, RotationDecodeError};
use proptest::prelude::*;

fn any_rotation() -> impl Strategy<Value = KeyRotation> {
    (
        1..=u64::MAX,
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 16..=MAX_ROTATION_KEY_LEN),
    )
        .prop_map(|(epoch, at, grace, key)| {
            KeyRotation::new(epoch, at, grace, ApiKey::from_bytes(&key).unwrap())
        })
}

fn any_status() -> impl Strategy<Value = AckStatus> {
    prop_oneof![
        Just(AckStatus::Adopted),
        Just(AckStatus::Known),
        Just(AckStatus::Superseded)
    ]
}

proptest! {
    #[test]
    fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = KeyRotation::decode(&bytes);
        let _ = RotationAck::decode(&bytes);
    }

    #[test]
    fn rotations_round_trip(r in any_rotation()) {
        let body = r.encode();
        prop_assert_eq!(body.len(), ROTATION_FIXED_LEN + r.key.len());
        prop_assert_eq!(KeyRotation::decode(&body), Ok(r));
    }

    #[test]
    fn every_cut_or_extension_of_a_rotation_is_refused(r in any_rotation(), cut in 0usize..1100, extra in 1usize..8) {
        let body = r.encode();
        let cut = cut % body.len();
        prop_assert!(KeyRotation::decode(&body[..cut]).is_err());
        let mut longer = body.to_vec();
        longer.extend(std::iter::repeat_n(0u8, extra));
        prop_assert_eq!(
            KeyRotation::decode(&longer),
            Err(RotationDecodeError::TrailingBytes(extra))
        );
    }

    #[test]
    fn acks_round_trip(epoch in any::<u64>(), status in any_status()) {
        let ack = RotationAck::new(epoch, status);
        prop_assert_eq!(RotationAck::decode(&ack.encode()), Ok(ack));
    }

    #[test]
    fn any_other_version_byte_is_refused(r in any_rotation(), version in 2u8..=255) {
        let mut body = r.encode().to_vec();
        body[0] = version;
        prop_assert_eq!(KeyRotation::decode(&body), Err(RotationDecodeError::UnknownVersion(version)));
        let mut ack = RotationAck::new(r.epoch, AckStatus::Known).encode();
        ack[0] = version;
        prop_assert_eq!(RotationAck::decode(&ack), Err(RotationDecodeError::UnknownVersion(version)));
    }
}

#[test]
fn the_debug_form_never_shows_the_key() {
    let r = KeyRotation::new(1, 2, 3, ApiKey::new("super-secret-key-material").unwrap());
    let shown = format!("{r:?}");
    assert!(!shown.contains("secret"), "{shown}");
}
