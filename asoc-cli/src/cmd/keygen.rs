//! `asoc keygen`: a new 256-bit key from the OS CSPRNG, as 64 lower-case
//! hex characters (the key bytes are those characters, WIRE.md §1).

use crate::error::CliResult;
use crate::os;

pub(crate) fn run() -> CliResult {
    let seed = os::seed()?;
    let mut rng = asoc_proto::rng::Rng::from_seed(seed);
    let key = asoc_proto::auth::generate_key_hex(rng.inner());
    println!("{}", key.as_str());
    Ok(())
}
