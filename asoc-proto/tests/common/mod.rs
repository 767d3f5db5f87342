//! Shared helpers for the integration tests: loading the cross-implementation
//! test vectors (`shared/vectors/asoc-v1.json`) and reading their fields.
//!
//! The vectors are read at test time; no expected byte is copied into code.

// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]

use asoc_proto::auth::{ApiKey, KeyError, MIN_KEY_LEN};
use serde_json::Value;
use uuid::Uuid;

/// Where the vectors live: `<checkout>/../shared/vectors/asoc-v1.json`, i.e.
/// two levels above this crate's manifest.
pub(crate) const VECTORS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/asoc-v1.json"
);

/// The v2 vectors: `<checkout>/../shared/vectors/asoc-v2.json`.
pub(crate) const V2_VECTORS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/asoc-v2.json"
);

/// The vectors of one section of the v2 file, never empty.
pub(crate) fn v2_section(name: &str) -> Vec<Value> {
    let all = load_vectors(V2_VECTORS_PATH);
    let list = all
        .get(name)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{V2_VECTORS_PATH}: no array section {name:?}"))
        .clone();
    assert!(
        !list.is_empty(),
        "{V2_VECTORS_PATH}: section {name:?} is empty"
    );
    list
}

/// The parsed vector file. Panics with the expected path when it is missing.
pub(crate) fn vectors() -> Value {
    load_vectors(VECTORS_PATH)
}

/// Parses the vector file at `path`, panicking with a message that names
/// the path when it cannot be read or parsed.
pub(crate) fn load_vectors(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read the ASoc test vectors at {path}: {e}\n\
             the tests need the `shared/` directory beside this checkout \
             (expected file: {path})"
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid JSON: {e}"))
}

/// The vectors of one section, e.g. `"hello"`. Panics if the section is
/// missing or empty, so that no test passes by iterating over nothing.
pub(crate) fn section(name: &str) -> Vec<Value> {
    let all = vectors();
    let list = all
        .get(name)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{VECTORS_PATH}: no array section {name:?}"))
        .clone();
    assert!(
        !list.is_empty(),
        "{VECTORS_PATH}: section {name:?} is empty"
    );
    list
}

/// A string field of a vector.
pub(crate) fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("vector has no string field {key:?}: {v}"))
}

/// An unsigned integer field of a vector.
pub(crate) fn u64_field(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("vector has no unsigned integer field {key:?}: {v}"))
}

/// A `u32` field of a vector.
pub(crate) fn u32_field(v: &Value, key: &str) -> u32 {
    let n = u64_field(v, key);
    u32::try_from(n).unwrap_or_else(|_| panic!("field {key:?} = {n} does not fit in u32: {v}"))
}

/// A hex-encoded byte-string field of a vector.
pub(crate) fn hex_field(v: &Value, key: &str) -> Vec<u8> {
    let s = str_field(v, key);
    hex::decode(s).unwrap_or_else(|e| panic!("field {key:?} is not hex ({e}): {v}"))
}

/// A hex-encoded byte-string field of exactly `N` bytes.
pub(crate) fn hex_array<const N: usize>(v: &Value, key: &str) -> [u8; N] {
    let bytes = hex_field(v, key);
    bytes
        .as_slice()
        .try_into()
        .unwrap_or_else(|_| panic!("field {key:?} is {} bytes, expected {N}: {v}", bytes.len()))
}

/// A UUID field (textual form) of a vector.
pub(crate) fn uuid_field(v: &Value, key: &str) -> Uuid {
    let s = str_field(v, key);
    Uuid::parse_str(s).unwrap_or_else(|e| panic!("field {key:?} is not a UUID ({e}): {v}"))
}

/// The vector's `api_key` string as an [`ApiKey`] over its UTF-8 bytes.
///
/// Keys shorter than [`MIN_KEY_LEN`] bytes are built with
/// [`ApiKey::new_insecure`], after checking that [`ApiKey::new`] refuses them.
pub(crate) fn vector_key(v: &Value) -> ApiKey {
    key_from_str(str_field(v, "api_key"))
}

/// See [`vector_key`].
pub(crate) fn key_from_str(s: &str) -> ApiKey {
    let insecure = ApiKey::new_insecure(s.as_bytes()).expect("vector keys are never empty");
    assert_eq!(insecure.expose_secret(), s.as_bytes());
    if s.len() < MIN_KEY_LEN {
        assert_eq!(
            ApiKey::new(s),
            Err(KeyError::TooShort { len: s.len() }),
            "ApiKey::new must refuse the {}-byte key {s:?}",
            s.len()
        );
    } else {
        assert_eq!(ApiKey::new(s).as_ref(), Ok(&insecure));
    }
    insecure
}

/// Every byte string that differs from `bytes` in exactly one bit, with the
/// index of the flipped bit (bit `i` is bit `i % 8` of byte `i / 8`).
pub(crate) fn single_bit_flips(bytes: &[u8]) -> impl Iterator<Item = (usize, Vec<u8>)> + '_ {
    (0..bytes.len() * 8).map(move |bit| {
        let mut flipped = bytes.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        (bit, flipped)
    })
}
