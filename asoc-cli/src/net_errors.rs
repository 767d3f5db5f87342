//! Socket failures as one-line messages with the exit code they deserve.

use std::io;
use std::net::SocketAddr;

use crate::error::CliError;

/// `HOST:PORT` with a numeric port, or a usage error naming `flag`.
pub(crate) fn check_target(target: &str, flag: &str) -> Result<(), CliError> {
    let bad = || {
        CliError::usage(format!(
            "bad address {target:?} for {flag}: expected HOST:PORT, e.g. 10.0.0.2:9000"
        ))
    };
    if target.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(':') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// A failed connect to `peer`.
pub(crate) fn unreachable(peer: &str, e: &io::Error) -> CliError {
    let hint = match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            " (nothing listens there: is `asoc listen` running on that host and port?)"
        }
        io::ErrorKind::TimedOut => " (no answer: check the address and any firewall)",
        _ => "",
    };
    CliError::runtime(format!("cannot reach {peer}: {e}{hint}"))
}

/// A failed bind of `what` at `addr`.
pub(crate) fn bind_failed(what: &str, e: &io::Error) -> CliError {
    match e.kind() {
        io::ErrorKind::AddrInUse => CliError::runtime(format!(
            "cannot listen on {what}: address already in use (another process has this port; \
             pick another)"
        )),
        io::ErrorKind::AddrNotAvailable => CliError::usage(format!(
            "cannot listen on {what}: that address is not one of this host's"
        )),
        _ => CliError::runtime(format!("cannot listen on {what}: {e}")),
    }
}
