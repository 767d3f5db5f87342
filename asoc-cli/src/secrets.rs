//! Where keys come from: an environment variable or a key file that only
//! its owner can read (WIRE.md §1). Never a command-line value: it would
//! show in `ps` and in shell history.

use std::path::Path;

use asoc_proto::auth::ApiKey;
use zeroize::Zeroizing;

use crate::error::{CliError, CliResult};

/// The environment variable holding the API key.
pub(crate) const API_KEY_ENV: &str = "ASOC_API_KEY";
/// The environment variable holding the master key of `derive-key`.
pub(crate) const MASTER_KEY_ENV: &str = "ASOC_MASTER_KEY";

/// The API key from `--api-key-file` when given, else from `ASOC_API_KEY`.
pub(crate) fn api_key(file: Option<&Path>) -> CliResult<ApiKey> {
    let (bytes, source) = secret(API_KEY_ENV, file, "--api-key-file")?;
    ApiKey::from_bytes(&bytes).map_err(|e| CliError::usage(format!("{source}: {e}")))
}

/// The master key from `--master-key-file` when given, else from
/// `ASOC_MASTER_KEY`; held to the same strength rule as API keys.
pub(crate) fn master_key(file: Option<&Path>) -> CliResult<Zeroizing<Vec<u8>>> {
    let (bytes, source) = secret(MASTER_KEY_ENV, file, "--master-key-file")?;
    ApiKey::from_bytes(&bytes).map_err(|e| {
        CliError::usage(format!(
            "{source}: {}",
            e.to_string().replace("API", "master")
        ))
    })?;
    Ok(bytes)
}

fn secret(env: &str, file: Option<&Path>, flag: &str) -> CliResult<(Zeroizing<Vec<u8>>, String)> {
    if let Some(path) = file {
        return Ok((read_key_file(path)?, path.display().to_string()));
    }
    match std::env::var_os(env) {
        Some(value) => Ok((Zeroizing::new(os_bytes(value)), env.to_string())),
        None => Err(CliError::usage(format!(
            "no key: set {env} or pass {flag} PATH (generate a key with `asoc keygen`)"
        ))),
    }
}

#[cfg(unix)]
fn os_bytes(value: std::ffi::OsString) -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    value.into_vec()
}

#[cfg(not(unix))]
fn os_bytes(value: std::ffi::OsString) -> Vec<u8> {
    value.to_string_lossy().into_owned().into_bytes()
}

/// Reads a key file, refusing one that group or others may access (as ssh
/// refuses such private keys) and stripping one trailing newline.
fn read_key_file(path: &Path) -> CliResult<Zeroizing<Vec<u8>>> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::usage(format!("cannot read key file {shown}: {e}")))?;
    check_private(path, &meta)?;
    let mut bytes = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| CliError::usage(format!("cannot read key file {shown}: {e}")))?,
    );
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    Ok(bytes)
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> CliResult {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let shown = path.display();
        return Err(CliError::usage(format!(
            "refusing key file {shown}: it is accessible by group or others (mode {mode:03o}); \
             run `chmod 600 {shown}`"
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> CliResult {
    Ok(())
}
