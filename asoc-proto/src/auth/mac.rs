//! Truncated HMAC-SHA256, the community hash and constant-time comparison.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Full HMAC-SHA256 (RFC 2104) of the concatenation of `parts` under `key`.
#[must_use]
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of every length"),
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The first `N` bytes of HMAC-SHA256 (16 for HELLO and discovery, 8 for
/// session tokens).
#[must_use]
pub fn truncated_mac<const N: usize>(key: &[u8], parts: &[&[u8]]) -> [u8; N] {
    const { assert!(N <= 32) };
    let full = hmac_sha256(key, parts);
    let mut out = [0u8; N];
    out.copy_from_slice(full.get(..N).unwrap_or(&[]));
    out
}

/// Compares two byte strings in time that depends only on their lengths.
/// Every MAC and hash comparison in this crate goes through here.
#[must_use]
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Community hash: the first 8 bytes of SHA-256 of the UTF-8 community
/// string (WIRE.md §1). Public; it isolates clusters, it does not secure them.
#[must_use]
pub fn community_hash(community: &str) -> [u8; 8] {
    let digest = Sha256::digest(community.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(digest.get(..8).unwrap_or(&[]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4231 §4.2–§4.8: HMAC-SHA256 test cases 1–7 (case 5 is truncated to 128 bits).
    #[test]
    fn rfc4231_test_cases() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 7] = [
            (vec![0x0b; 20], b"Hi There".to_vec(),
             "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (b"Jefe".to_vec(), b"what do ya want for nothing?".to_vec(),
             "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            (vec![0xaa; 20], vec![0xdd; 50],
             "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
            ((1u8..=25).collect(), vec![0xcd; 50],
             "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
            (vec![0x0c; 20], b"Test With Truncation".to_vec(),
             "a3b6167473100ee06e0c796c2955552b"),
            (vec![0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
             "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
            (vec![0xaa; 131],
             b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
             "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
        ];
        for (i, (key, data, expected)) in cases.iter().enumerate() {
            let full = hmac_sha256(key, &[data]);
            let got = if expected.len() == 32 {
                hex::encode(truncated_mac::<16>(key, &[data]))
            } else {
                hex::encode(full)
            };
            assert_eq!(&got, expected, "RFC 4231 case {}", i + 1);
        }
    }

    #[test]
    fn parts_are_concatenated() {
        assert_eq!(
            hmac_sha256(b"k", &[b"ab", b"cd"]),
            hmac_sha256(b"k", &[b"abcd"])
        );
    }

    #[test]
    fn ct_eq_distinguishes_every_byte_and_length() {
        let a = [1u8, 2, 3, 4];
        assert!(ct_eq(&a, &a));
        for i in 0..4 {
            let mut b = a;
            b[i] ^= 1;
            assert!(!ct_eq(&a, &b));
        }
        assert!(!ct_eq(&a, &a[..3]));
    }
}
