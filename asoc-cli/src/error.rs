//! The one error type of the command: a one-line message and the exit code
//! it maps to (0 success, 1 runtime failure, 2 usage error, 3 authentication
//! or handshake failure).

use std::fmt;

/// Which exit code a failure maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Something failed while running: the OS, the network, the peer (1).
    Runtime,
    /// The command line or its inputs are wrong (2).
    Usage,
    /// Authentication or handshake failure (3).
    Auth,
}

/// A failure, printed as `asoc: <message>` on one line.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) kind: Kind,
    message: String,
}

impl CliError {
    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        Self::new(Kind::Runtime, message)
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }

    pub(crate) fn auth(message: impl Into<String>) -> Self {
        Self::new(Kind::Auth, message)
    }

    fn new(kind: Kind, message: impl Into<String>) -> Self {
        // One line, whatever the source error printed.
        let message = message.into().replace('\n', " ");
        Self { kind, message }
    }

    /// The process exit code.
    pub(crate) fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Runtime => 1,
            Kind::Usage => 2,
            Kind::Auth => 3,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Shorthand for command results.
pub(crate) type CliResult<T = ()> = Result<T, CliError>;
