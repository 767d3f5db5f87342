//! Seeds and node ids from the operating system's CSPRNG, for every
//! adapter: asoc-proto takes randomness as a seed and never asks the OS.

use std::io;

use asoc_proto::rng::Seed;
use uuid::Uuid;

fn os_random<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(bytes)
}

/// A 32-byte seed (for a node or an authenticator) from the OS CSPRNG.
pub fn os_seed() -> io::Result<Seed> {
    os_random()
}

/// A random (version 4) node id from the OS CSPRNG.
pub fn os_node_id() -> io::Result<Uuid> {
    Ok(uuid::Builder::from_random_bytes(os_random()?).into_uuid())
}

/// An [`Authenticator`](asoc_proto::handshake::Authenticator) for `config`,
/// seeded from the OS CSPRNG, ready to share between the connections (and
/// threads) of one program so that one replay cache covers them all.
pub fn shared_authenticator(
    config: asoc_proto::handshake::AuthenticatorConfig,
) -> io::Result<crate::SharedAuthenticator> {
    let auth = asoc_proto::handshake::Authenticator::new(config, os_seed()?);
    Ok(std::sync::Arc::new(std::sync::Mutex::new(auth)))
}
