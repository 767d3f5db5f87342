//! Where keys come from: an environment variable or a key file that only
//! its owner can read (WIRE.md §1). Never a command-line value: it would
//! show in `ps` and in shell history.
//!
//! Both sources go through `asoc-secrets`, which the conformance suite
//! uses too: key files are opened without following symbolic links and
//! checked on the open descriptor, and `main` takes the key variables out
//! of the environment before anything else runs ([`take_from_environment`]).
//! Every key is then held to an entropy estimate
//! ([`asoc_proto::auth::strength`]) unless `--weak-key` is given.

use std::path::Path;

use asoc_proto::auth::{estimated_bits, ApiKey, MIN_KEY_BITS};
use zeroize::Zeroizing;

use crate::cli::KeyArgs;
use crate::error::{CliError, CliResult};

/// The environment variable holding the API key.
pub(crate) const API_KEY_ENV: &str = "ASOC_API_KEY";
/// The environment variable holding the master key of `derive-key`.
pub(crate) const MASTER_KEY_ENV: &str = "ASOC_MASTER_KEY";

/// Moves `ASOC_API_KEY` and `ASOC_MASTER_KEY` out of the process
/// environment: no child process inherits them, `std::env` no longer has
/// them, and their values are wiped from the initial environment block
/// that `/proc/<pid>/environ` shows (the names stay there, with empty
/// values). [`api_key`] and [`master_key`] still find them.
///
/// Called first thing in `main`, while the process has one thread: the C
/// library's environment is not synchronised, so changing it is sound only
/// while nothing else can read it. No runtime, signal thread or progress
/// bar exists yet at that point.
pub(crate) fn take_from_environment() {
    // SAFETY: called at the top of `main`, before any thread is spawned
    // (see above), so nothing reads or writes the environment meanwhile.
    #[allow(unsafe_code)]
    unsafe {
        asoc_secrets::take_from_environment(&[API_KEY_ENV, MASTER_KEY_ENV]);
    }
}

/// The API key from `--api-key-file` when given, else from `ASOC_API_KEY`;
/// refused when its estimated entropy is below 128 bits, unless
/// `--weak-key`.
pub(crate) fn api_key(args: &KeyArgs) -> CliResult<ApiKey> {
    let file = args.api_key_file.as_deref();
    let (bytes, source) = secret(API_KEY_ENV, file, "--api-key-file")?;
    let key = ApiKey::from_bytes(&bytes).map_err(|e| CliError::usage(format!("{source}: {e}")))?;
    check_strength(&bytes, &source, "API", args.weak_key)?;
    Ok(key)
}

/// The master key from `--master-key-file` when given, else from
/// `ASOC_MASTER_KEY`; held to the same strength rules as API keys.
pub(crate) fn master_key(file: Option<&Path>, weak_key: bool) -> CliResult<Zeroizing<Vec<u8>>> {
    let (bytes, source) = secret(MASTER_KEY_ENV, file, "--master-key-file")?;
    ApiKey::from_bytes(&bytes).map_err(|e| {
        CliError::usage(format!(
            "{source}: {}",
            e.to_string().replace("API", "master")
        ))
    })?;
    check_strength(&bytes, &source, "master", weak_key)?;
    Ok(bytes)
}

/// Refuses a key estimated below 128 bits; with `weak_key`, warns instead.
fn check_strength(bytes: &[u8], source: &str, what: &str, weak_key: bool) -> CliResult {
    let bits = estimated_bits(bytes);
    if bits >= MIN_KEY_BITS {
        return Ok(());
    }
    if weak_key {
        crate::output::warn(format_args!(
            "asoc: warning: --weak-key: the {what} key from {source} is estimated at {bits} \
             bits, below {MIN_KEY_BITS}; anyone who captures one handshake or announcement \
             can guess it offline. Use it for development only."
        ));
        return Ok(());
    }
    Err(CliError::usage(format!(
        "{source}: the {what} key is estimated at {bits} bits of entropy, below \
         {MIN_KEY_BITS} (repeats, sequences or a small alphabet); generate one with \
         `asoc keygen`, or pass --weak-key for development"
    )))
}

fn secret(env: &str, file: Option<&Path>, flag: &str) -> CliResult<(Zeroizing<Vec<u8>>, String)> {
    if let Some(path) = file {
        let bytes =
            asoc_secrets::read_private_file(path).map_err(|e| CliError::usage(e.to_string()))?;
        return Ok((bytes, path.display().to_string()));
    }
    match asoc_secrets::env_secret(env) {
        Some(value) => Ok((value, env.to_string())),
        None => Err(CliError::usage(format!(
            "no key: set {env} or pass {flag} PATH (generate a key with `asoc keygen`)"
        ))),
    }
}
