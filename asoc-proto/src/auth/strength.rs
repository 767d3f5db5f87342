//! A conservative estimate of how many bits of entropy a key carries, to
//! refuse keys that one captured HELLO or announcement would let an
//! observer guess offline.
//!
//! What [`estimated_bits`] does, byte by byte over the first
//! [`ANALYSED_BYTES`] bytes of the key (bytes past them add nothing):
//!
//! 1. **Alphabet.** The key's alphabet is the smallest of these that holds
//!    every byte: digits (10), lower-case hex or upper-case hex (16),
//!    lower-case or upper-case letters (26), lower-case letters and digits
//!    (36), letters (52), letters and digits (62), base64 in either the
//!    standard or the URL-safe alphabet, padding included (64), printable
//!    ASCII (95), any byte (256). A fresh byte is worth log2 of the
//!    alphabet's size: 4 bits in a hex key.
//! 2. **Repeats of earlier text.** Where the next 3 or more bytes repeat
//!    bytes that came earlier in the key (overlap allowed, so `aaaa…` is
//!    one), the whole repeat is worth only what it takes to point at it:
//!    log2(position) + log2(length) bits.
//! 3. **Runs and sequences.** A byte equal to the one before it, or
//!    continuing an arithmetic sequence of step at most 3 (`abc`, `1234`,
//!    `9753`, `aceg`), is worth 1 bit.
//!
//! The sum, rounded down, is the estimate. A 64-hex-character key from
//! `asoc keygen` (256 random bits) comes out well above 200;
//! `aaaaaaaaaaaaaaaa` at 8; a word padded to 16 bytes (`password00000000`)
//! at 48. No key of
//! 16 printable characters can reach 128 (16 × log2 95 ≈ 105).
//!
//! Its limits: it knows no words, so a long passphrase of dictionary words
//! (or a long English sentence) is overestimated, as are keyboard walks
//! (`qwertyuiop`) and any text with structure other than the repeats and
//! sequences above. And it cannot tell random bytes from bytes that only
//! look random: the hex of a SHA-256 of a guessable string scores as well
//! as a key from `asoc keygen`. It refuses keys that are weak on their
//! face; it does not prove a key strong. Generate keys with `asoc keygen`.

/// The fewest estimated bits a key must carry (RFC-0002 §4.5 asks for 128).
pub const MIN_KEY_BITS: u32 = 128;

/// How many leading bytes of a key [`estimated_bits`] looks at; the rest
/// add nothing to the estimate (which keeps it bounded for any input).
pub const ANALYSED_BYTES: usize = 1024;

/// An alphabet of step 1: its size, and whether a byte belongs to it.
type Alphabet = (u32, fn(u8) -> bool);

/// The alphabets of step 1, smallest first.
const ALPHABETS: [Alphabet; 11] = [
    (10, |b| b.is_ascii_digit()),
    (16, |b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
    (16, |b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
    (26, |b| b.is_ascii_lowercase()),
    (26, |b| b.is_ascii_uppercase()),
    (36, |b| b.is_ascii_lowercase() || b.is_ascii_digit()),
    (52, |b| b.is_ascii_alphabetic()),
    (62, |b| b.is_ascii_alphanumeric()),
    (64, |b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
    (64, |b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
    (95, |b| (0x20..=0x7e).contains(&b)),
];

/// The shortest repeat of earlier bytes that step 2 counts.
const MIN_REPEAT: usize = 3;
/// The longest step of a sequence that step 3 counts.
const MAX_STEP: i16 = 3;

/// The estimated entropy of `key` in bits, as described in the
/// [module documentation](self). Never panics; 0 for an empty key.
#[must_use]
pub fn estimated_bits(key: &[u8]) -> u32 {
    let data = key.get(..ANALYSED_BYTES).unwrap_or(key);
    let size = ALPHABETS
        .iter()
        .find(|(_, member)| data.iter().all(|b| member(*b)))
        .map_or(256, |(size, _)| *size);
    let fresh = f64::from(size).log2();
    let mut bits = 0.0_f64;
    let mut i = 0;
    while i < data.len() {
        let repeat = longest_earlier_match(data, i);
        if repeat >= MIN_REPEAT {
            bits += log2(i) + log2(repeat);
            i += repeat;
            continue;
        }
        bits += if continues_run(data, i) { 1.0 } else { fresh };
        i += 1;
    }
    // At most 1024 × 8 bits: the float holds the sum exactly enough, and
    // the conversion cannot overflow.
    let floor = bits.floor();
    if floor <= 0.0 {
        0
    } else if floor >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        whole_bits(floor)
    }
}

/// `floor`, a whole number strictly between 0 and `u32::MAX`, as a `u32`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn whole_bits(floor: f64) -> u32 {
    floor as u32
}

fn log2(n: usize) -> f64 {
    #[allow(clippy::cast_precision_loss)] // n ≤ ANALYSED_BYTES
    let x = n as f64;
    if x <= 1.0 {
        0.0
    } else {
        x.log2()
    }
}

/// The longest run of bytes from `at` on that also starts at an earlier
/// position (the two may overlap).
fn longest_earlier_match(data: &[u8], at: usize) -> usize {
    let Some(rest) = data.get(at..) else {
        return 0;
    };
    (0..at)
        .map(|start| {
            data.get(start..)
                .unwrap_or_default()
                .iter()
                .zip(rest)
                .take_while(|(a, b)| a == b)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Whether the byte at `at` repeats the one before it or continues a short
/// arithmetic sequence of the two before it.
fn continues_run(data: &[u8], at: usize) -> bool {
    let byte = |back: usize| {
        at.checked_sub(back)
            .and_then(|i| data.get(i))
            .map(|b| i16::from(*b))
    };
    match (byte(0), byte(1), byte(2)) {
        (Some(c), Some(b), _) if c == b => true,
        (Some(c), Some(b), Some(a)) => c - b == b - a && (c - b).abs() <= MAX_STEP,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::generate_key_hex;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn generated_keys_pass_with_room_to_spare() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
        let lowest = (0..2000)
            .map(|_| estimated_bits(generate_key_hex(&mut rng).as_bytes()))
            .min()
            .unwrap();
        assert!(lowest >= 200, "lowest estimate of a keygen key: {lowest}");
    }

    #[test]
    fn repeated_padded_and_sequential_keys_fail() {
        for weak in [
            "aaaaaaaaaaaaaaaa",
            "password00000000",
            "passwordpassword",
            "password!!!!!!!!",
            "p@ssw0rd12345678",
            "0123456789abcdef",
            "0123456789abcdef0123456789abcdef",
            "abababababababababababababababababababababababababababababababab",
            "correcthorsebatterystaple",
        ] {
            let bits = estimated_bits(weak.as_bytes());
            assert!(bits < MIN_KEY_BITS, "{weak:?} estimated at {bits} bits");
        }
    }

    #[test]
    fn random_keys_of_other_alphabets_count_their_alphabet() {
        // 22 base64 characters carry 132 bits; a 16-character printable
        // key cannot reach 128.
        assert!(estimated_bits(b"Zq3Xv9TmK2pLw8RbN5yHcD") >= MIN_KEY_BITS);
        assert!(estimated_bits(b"Zq3X!9T~K2p#w8Rb") < MIN_KEY_BITS);
        // 16 bytes outside printable ASCII: 8 bits each when none repeat.
        let raw: Vec<u8> = (0u8..16).map(|i| i.wrapping_mul(37) ^ 0x80).collect();
        assert_eq!(estimated_bits(&raw), 128);
    }

    #[test]
    fn any_input_is_bounded_and_never_panics() {
        assert_eq!(estimated_bits(b""), 0);
        let long = vec![0x41_u8; 100_000];
        assert!(estimated_bits(&long) < 32);
        let all: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let bits = estimated_bits(&all);
        assert!(bits <= 1024 * 8, "{bits}");
    }
}
