//! `docs/vectors/key-rotation.json`, which `docs/key-rotation.md` quotes,
//! recomputed from the codecs: the file and the code cannot drift apart.
//! Regenerate it after a deliberate change of the encoding with
//! `ASOC_WRITE_VECTORS=1 cargo test -p asoc-proto --test all rotation_vectors`.

use asoc_proto::auth::ApiKey;
use asoc_proto::rotation::wire::{KIND_KEY_ROTATION, KIND_KEY_ROTATION_ACK};
use asoc_proto::rotation::{AckStatus, KeyRotation, RotationAck};
use asoc_proto::wire::{FrameType, Header};
use serde_json::{json, Value};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/vectors/key-rotation.json"
);

fn rotation_cases() -> Vec<(u64, u64, u64, &'static str)> {
    vec![
        (
            1,
            1_767_000_010_000,
            30_000,
            "fedcba9876543210fedcba9876543210",
        ),
        (
            2,
            1_767_086_400_000,
            86_400_000,
            "3b9f0c2e7d41a6585e2f9d03c1b7a46e90d5f2c8e1a3b7d4f6c8e0a2b4d6f8e1",
        ),
        (u64::MAX, u64::MAX, 0, "0123456789abcdef"),
    ]
}

fn computed() -> Value {
    let rotations: Vec<Value> = rotation_cases()
        .into_iter()
        .map(|(epoch, at, grace, key)| {
            let body = KeyRotation::new(epoch, at, grace, ApiKey::new(key).unwrap()).encode();
            let header =
                Header::new(FrameType::Control, 0, KIND_KEY_ROTATION, body.len() as u32).encode();
            json!({
                "epoch": epoch,
                "activate_unix_ms": at,
                "grace_ms": grace,
                "key_utf8": key,
                "body_hex": hex::encode(&*body),
                "v1_tls_header_hex": hex::encode(header),
            })
        })
        .collect();
    let acks: Vec<Value> = [
        (1, AckStatus::Adopted),
        (1, AckStatus::Known),
        (7, AckStatus::Superseded),
    ]
    .into_iter()
    .map(|(epoch, status)| {
        let body = RotationAck::new(epoch, status).encode();
        let header = Header::new(
            FrameType::Control,
            0,
            KIND_KEY_ROTATION_ACK,
            body.len() as u32,
        )
        .encode();
        json!({
            "epoch": epoch,
            "status": status.as_str(),
            "body_hex": hex::encode(body),
            "v1_tls_header_hex": hex::encode(header),
        })
    })
    .collect();
    let good =
        hex::encode(&*KeyRotation::new(1, 1, 1, ApiKey::new("fedcba9876543210").unwrap()).encode());
    let invalid: Vec<Value> = [
        ("empty", String::new()),
        ("version 2", format!("02{}", &good[2..])),
        ("truncated key", good[..good.len() - 2].to_string()),
        ("trailing byte", format!("{good}00")),
        ("epoch 0", format!("01{}{}", "00".repeat(8), &good[18..])),
        (
            "key of 15 bytes",
            format!("{}000f{}", &good[..50], &good[54..good.len() - 2]),
        ),
    ]
    .into_iter()
    .map(|(name, body)| {
        let bytes = hex::decode(&body).unwrap();
        let error = KeyRotation::decode(&bytes).expect_err(name).to_string();
        json!({ "case": name, "body_hex": body, "error": error })
    })
    .collect();
    json!({
        "description": "KEY_ROTATION and KEY_ROTATION_ACK control bodies (docs/key-rotation.md); computed by asoc-proto/tests/all/rotation_vectors.rs",
        "kinds": { "key_rotation": KIND_KEY_ROTATION, "key_rotation_ack": KIND_KEY_ROTATION_ACK },
        "key_rotation": rotations,
        "key_rotation_ack": acks,
        "invalid_key_rotation": invalid,
    })
}

#[test]
fn the_vector_file_is_what_the_code_computes() {
    let want = computed();
    if std::env::var_os("ASOC_WRITE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&want).unwrap() + "\n";
        std::fs::write(PATH, text).unwrap();
    }
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(PATH).expect("docs/vectors/key-rotation.json exists"),
    )
    .unwrap();
    assert_eq!(
        file, want,
        "regenerate with ASOC_WRITE_VECTORS=1 (see the module docs)"
    );
}

#[test]
fn the_vectors_decode_back_to_their_fields() {
    let file: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    for v in file["key_rotation"].as_array().unwrap() {
        let body = hex::decode(v["body_hex"].as_str().unwrap()).unwrap();
        let r = KeyRotation::decode(&body).unwrap();
        assert_eq!(r.epoch, v["epoch"].as_u64().unwrap());
        assert_eq!(r.activate_unix_ms, v["activate_unix_ms"].as_u64().unwrap());
        assert_eq!(r.grace_ms, v["grace_ms"].as_u64().unwrap());
        assert_eq!(
            r.key.expose_secret(),
            v["key_utf8"].as_str().unwrap().as_bytes()
        );
    }
    for v in file["invalid_key_rotation"].as_array().unwrap() {
        let body = hex::decode(v["body_hex"].as_str().unwrap()).unwrap();
        assert!(KeyRotation::decode(&body).is_err(), "{}", v["case"]);
    }
}
