//! API keys, key generation, key rotation and session tokens
//! (WIRE.md §1, RFC-0002 §4.5, §5, §8).

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use asoc_proto::auth::{
    generate_key_hex, sign_hello, verify_hello, ApiKey, KeyError, KeyId, KeyRing, SessionToken,
    MIN_KEY_LEN,
};
use asoc_proto::rng::Rng;
use asoc_proto::wire::Hello;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use uuid::Uuid;

fn key(s: &str) -> ApiKey {
    ApiKey::new(s).unwrap()
}

fn node(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

#[test]
fn previous_key_verifies_until_its_deadline_and_not_at_it() {
    // The previous key and its HELLO come from the shared vectors.
    let v = &common::section("hello")[0];
    let old_key = common::vector_key(v);
    let hello = Hello::decode(&common::hex_field(v, "payload")).unwrap();
    assert!(verify_hello(&old_key, &hello));

    let new_key = key("the-next-key-0123456789");
    assert!(!verify_hello(&new_key, &hello));

    let t0 = Instant::now();
    let mut ring = KeyRing::new(old_key.clone());
    assert_eq!(ring.current().0, KeyId(0));
    assert_eq!(
        ring.find(t0, |k| verify_hello(k, &hello)),
        Some(KeyId(0)),
        "the only key verifies"
    );

    let rotated_at = t0 + Duration::from_secs(100);
    let grace = Duration::from_secs(30);
    let deadline = rotated_at + grace;
    let id = ring.rotate(new_key.clone(), rotated_at, grace);
    assert_eq!(id, KeyId(1));
    assert_eq!(ring.current(), (KeyId(1), &new_key));

    for now in [
        rotated_at,
        rotated_at + Duration::from_secs(29),
        deadline - Duration::from_millis(1),
        deadline - Duration::from_nanos(1),
    ] {
        assert_eq!(
            ring.find(now, |k| verify_hello(k, &hello)),
            Some(KeyId(0)),
            "previous key must verify {:?} before its deadline",
            deadline - now
        );
    }
    for now in [
        deadline,
        deadline + Duration::from_nanos(1),
        deadline + Duration::from_secs(3600),
    ] {
        assert_eq!(
            ring.find(now, |k| verify_hello(k, &hello)),
            None,
            "previous key must be refused {:?} after its deadline",
            now - deadline
        );
    }

    // A HELLO under the new key verifies as key 1 at every time.
    let fresh = sign_hello(&new_key, node(9), 42);
    for now in [rotated_at, deadline, deadline + Duration::from_secs(86_400)] {
        assert_eq!(ring.find(now, |k| verify_hello(k, &fresh)), Some(KeyId(1)));
    }
}

#[test]
fn several_rotations_report_each_keys_id() {
    let keys: Vec<ApiKey> = (0..4)
        .map(|i| key(&format!("rotation-key-number-{i}")))
        .collect();
    let hellos: Vec<Hello> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| sign_hello(k, node(1), u32::try_from(i).unwrap()))
        .collect();
    let t0 = Instant::now();
    let mut ring = KeyRing::new(keys[0].clone());
    // key 0 retired at 10 s for 100 s; key 1 at 20 s for 10 s; key 2 at 30 s for 50 s.
    assert_eq!(
        ring.rotate(
            keys[1].clone(),
            t0 + Duration::from_secs(10),
            Duration::from_secs(100)
        ),
        KeyId(1)
    );
    assert_eq!(
        ring.rotate(
            keys[2].clone(),
            t0 + Duration::from_secs(20),
            Duration::from_secs(10)
        ),
        KeyId(2)
    );
    assert_eq!(
        ring.rotate(
            keys[3].clone(),
            t0 + Duration::from_secs(30),
            Duration::from_secs(50)
        ),
        KeyId(3)
    );
    let deadlines = [110u64, 30, 80];
    for secs in [30u64, 31, 79, 80, 109, 110, 1000] {
        let now = t0 + Duration::from_secs(secs);
        for (i, h) in hellos.iter().enumerate() {
            let expected = if i == 3 || secs < deadlines[i] {
                Some(KeyId(u32::try_from(i).unwrap()))
            } else {
                None
            };
            assert_eq!(
                ring.find(now, |k| verify_hello(k, h)),
                expected,
                "HELLO under key {i} at {secs} s"
            );
        }
        // Current first, then the previous keys still accepted.
        let accepted: Vec<KeyId> = ring.accepted(now).map(|(id, _)| id).collect();
        assert_eq!(accepted[0], KeyId(3));
        assert_eq!(
            accepted.len(),
            1 + deadlines.iter().filter(|d| secs < **d).count()
        );
    }

    // expire() drops what has passed for good, even for earlier queries.
    ring.expire(t0 + Duration::from_secs(80));
    let early = t0 + Duration::from_secs(31);
    assert_eq!(
        ring.find(early, |k| verify_hello(k, &hellos[0])),
        Some(KeyId(0))
    );
    assert_eq!(ring.find(early, |k| verify_hello(k, &hellos[2])), None);
    assert_eq!(ring.find(early, |k| verify_hello(k, &hellos[1])), None);
}

#[test]
fn find_tries_the_current_key_first() {
    let k = key("same-key-in-two-slots");
    let t0 = Instant::now();
    let mut ring = KeyRing::new(k.clone());
    ring.rotate(k.clone(), t0, Duration::from_secs(60));
    let h = sign_hello(&k, node(3), 3);
    let mut tried = 0;
    assert_eq!(
        ring.find(t0, |c| {
            tried += 1;
            verify_hello(c, &h)
        }),
        Some(KeyId(1))
    );
    assert_eq!(tried, 1, "stops at the first match");
}

#[test]
fn generated_keys_are_64_lower_case_hex_of_the_rng_bytes() {
    for s in 0u8..16 {
        let seed = [s; 32];
        let hex_key = generate_key_hex(&mut ChaCha20Rng::from_seed(seed));
        assert_eq!(hex_key.len(), 64);
        assert!(
            hex_key
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{}",
            hex_key.as_str()
        );
        // Both nibbles of every byte, in order.
        let mut raw = [0u8; 32];
        ChaCha20Rng::from_seed(seed).fill_bytes(&mut raw);
        assert_eq!(hex::decode(hex_key.as_str()).unwrap(), raw);
        // ApiKey::generate uses those 64 characters as the key bytes.
        let k = ApiKey::generate(&mut ChaCha20Rng::from_seed(seed));
        assert_eq!(k.expose_secret(), hex_key.as_bytes());
        assert!(k.len() >= MIN_KEY_LEN);
        assert_eq!(ApiKey::new(&hex_key).as_ref(), Ok(&k));
    }
}

#[test]
fn generated_keys_depend_on_the_seed_only() {
    let mut seen = HashSet::new();
    for s in 0u8..=255 {
        let mut seed = [0u8; 32];
        seed[31] = s;
        let a = generate_key_hex(&mut ChaCha20Rng::from_seed(seed));
        let b = generate_key_hex(&mut ChaCha20Rng::from_seed(seed));
        assert_eq!(a, b, "same seed, same key");
        // Through the crate's own seeded RNG too.
        let c = generate_key_hex(Rng::from_seed(seed).inner());
        let d = generate_key_hex(Rng::from_seed(seed).inner());
        assert_eq!(c, d);
        assert!(seen.insert(a.to_string()), "seed {s} repeats a key");
    }
    // Successive keys from one generator differ.
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let first = generate_key_hex(&mut rng);
    let second = generate_key_hex(&mut rng);
    assert_ne!(first, second);
}

fn assert_redacted(shown: &str, k: &ApiKey) {
    let bytes = k.expose_secret();
    let as_text = String::from_utf8_lossy(bytes);
    assert!(!shown.contains(as_text.as_ref()), "key text in {shown}");
    assert!(!shown.contains(&hex::encode(bytes)), "key hex in {shown}");
    assert!(
        !shown.contains(&format!("{bytes:?}")),
        "key byte list in {shown}"
    );
    // Not even a recognisable piece of it.
    for window in bytes.windows(6) {
        let piece = String::from_utf8_lossy(window);
        assert!(!shown.contains(piece.as_ref()), "{piece:?} in {shown}");
    }
}

#[test]
fn key_material_is_wiped() {
    // Removing the zeroize-on-drop derive (or returning derived keys in a
    // plain array) stops this from compiling.
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}
    let mut k = key("0123456789abcdef0123456789abcdef");
    wiped_on_drop(&k);
    wiped_on_drop(&asoc_proto::auth::derive_cluster_key(b"master", "cluster"));
    wiped_on_drop(&generate_key_hex(&mut ChaCha20Rng::from_seed([3; 32])));
    // What drop runs: the buffer is overwritten with zeros, then emptied.
    zeroize::Zeroize::zeroize(&mut k);
    assert!(k.is_empty());
}

#[test]
fn api_key_debug_never_shows_key_bytes() {
    let mut keys = vec![
        key("super-secret-key-material"),
        ApiKey::new_insecure(b"short-secret").unwrap(),
        ApiKey::from_bytes(&[
            0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ])
        .unwrap(),
        ApiKey::generate(&mut ChaCha20Rng::from_seed([3; 32])),
    ];
    for section in ["hello", "accept", "discovery"] {
        for v in common::section(section) {
            keys.push(common::vector_key(&v));
        }
    }
    for k in &keys {
        for shown in [format!("{k:?}"), format!("{k:#?}")] {
            assert_redacted(&shown, k);
            assert!(shown.contains("redacted"), "{shown}");
        }
    }
    // Nor through a KeyRing holding current and previous keys.
    let t0 = Instant::now();
    let mut ring = KeyRing::new(keys[0].clone());
    ring.rotate(keys[1].clone(), t0, Duration::from_secs(5));
    ring.rotate(keys[3].clone(), t0, Duration::from_secs(5));
    let shown = format!("{ring:?} {ring:#?}");
    for i in [0, 1, 3] {
        assert_redacted(&shown, &keys[i]);
    }
}

#[test]
fn empty_and_short_keys_are_refused() {
    assert_eq!(ApiKey::new(""), Err(KeyError::Empty));
    assert_eq!(ApiKey::from_bytes(&[]), Err(KeyError::Empty));
    assert_eq!(ApiKey::new_insecure(&[]), Err(KeyError::Empty));
    for len in 1..MIN_KEY_LEN {
        let s = "k".repeat(len);
        assert_eq!(ApiKey::new(&s), Err(KeyError::TooShort { len }));
        assert_eq!(ApiKey::new_insecure(s.as_bytes()).unwrap().len(), len);
    }
    assert_eq!(
        ApiKey::new(&"k".repeat(MIN_KEY_LEN)).unwrap().len(),
        MIN_KEY_LEN
    );
}

#[test]
fn session_token_verify_rejects_other_keys() {
    let k = key("session-token-signing-key");
    let others = [
        key("session-token-signing-kez"),
        key("session-token-signing-key-"),
        key("Session-token-signing-key"),
        ApiKey::new_insecure(b"session-token-signing-ke").unwrap(),
    ];
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    for i in 0..16 {
        let st = if i % 2 == 0 {
            SessionToken::issue(&k, &mut rng)
        } else {
            SessionToken::sign(&k, [u8::try_from(i).unwrap(); 8])
        };
        assert!(st.verify(&k));
        assert!(SessionToken::from_accept(&st.to_accept()).verify(&k));
        for o in &others {
            assert!(
                !st.verify(o),
                "token signed by one key verifies under another"
            );
        }
    }
    // The vector tokens too: each verifies under its own key only.
    let vs = common::section("accept");
    for v in &vs {
        let st = SessionToken::sign(
            &common::vector_key(v),
            common::hex_array(v, "session_token"),
        );
        for w in &vs {
            let same_key = common::str_field(v, "api_key") == common::str_field(w, "api_key");
            assert_eq!(st.verify(&common::vector_key(w)), same_key);
        }
    }
}

#[test]
fn issued_tokens_come_from_the_rng() {
    let k = key("session-token-signing-key");
    let a = SessionToken::issue(&k, &mut ChaCha20Rng::from_seed([1; 32]));
    let b = SessionToken::issue(&k, &mut ChaCha20Rng::from_seed([1; 32]));
    let c = SessionToken::issue(&k, &mut ChaCha20Rng::from_seed([2; 32]));
    assert_eq!(a, b);
    assert_ne!(a.token, c.token);
    let mut raw = [0u8; 8];
    ChaCha20Rng::from_seed([1; 32]).fill_bytes(&mut raw);
    assert_eq!(a.token, raw);
}
