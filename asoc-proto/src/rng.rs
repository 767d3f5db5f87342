//! Seeded randomness. The crate never asks the OS for entropy: callers pass a
//! 32-byte seed (adapters draw it from the OS), and a ChaCha20 CSPRNG expands
//! it, so a fixed seed and fixed inputs give byte-identical output.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// A 32-byte seed for the crate's CSPRNG.
pub type Seed = [u8; 32];

/// The CSPRNG used for challenges, session tokens and jitter.
#[derive(Clone, Debug)]
pub struct Rng(ChaCha20Rng);

impl Rng {
    /// A generator expanded from `seed`.
    #[must_use]
    pub fn from_seed(seed: Seed) -> Self {
        Self(ChaCha20Rng::from_seed(seed))
    }

    /// A 32-bit challenge.
    pub fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    /// A uniformly distributed value in `0..bound` (`bound` > 0), without
    /// modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound <= 1 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let v = self.0.next_u64();
            if v < zone {
                return v % bound;
            }
        }
    }

    /// A seed for another generator derived from this one, so that child
    /// objects get independent but reproducible streams.
    pub fn fork(&mut self) -> Seed {
        let mut seed = [0u8; 32];
        self.0.fill_bytes(&mut seed);
        seed
    }

    /// The underlying generator, for APIs that take a `CryptoRngCore`.
    pub fn inner(&mut self) -> &mut ChaCha20Rng {
        &mut self.0
    }
}
