//! The only places the CLI takes entropy and node ids from the OS.

use asoc_proto::rng::Seed;
use uuid::Uuid;

/// 32 bytes from the OS CSPRNG, to seed asoc-proto's generator.
pub(crate) fn seed() -> Result<Seed, getrandom::Error> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)?;
    Ok(seed)
}

/// A random (version 4) node id.
pub(crate) fn node_id() -> Result<Uuid, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)?;
    Ok(uuid::Builder::from_random_bytes(bytes).into_uuid())
}
