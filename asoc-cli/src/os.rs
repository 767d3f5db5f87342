//! The only places the CLI takes entropy and node ids from the OS, with the
//! CLI's error for a machine that has none.

use asoc_proto::rng::Seed;
use uuid::Uuid;

use crate::error::CliError;

fn no_randomness(e: std::io::Error) -> CliError {
    CliError::runtime(format!("no OS randomness: {e}"))
}

/// 32 bytes from the OS CSPRNG, to seed asoc-proto's generator.
pub(crate) fn seed() -> Result<Seed, CliError> {
    asoc_async::os_seed().map_err(no_randomness)
}

/// A random (version 4) node id.
pub(crate) fn node_id() -> Result<Uuid, CliError> {
    asoc_async::os_node_id().map_err(no_randomness)
}
