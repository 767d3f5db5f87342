//! Errors of the async API.

use asoc_proto::auth::KeyError;
use asoc_proto::connection::{CloseReason, ConfigError, SendError};
use asoc_proto::node::PeerRef;
use asoc_proto::policy::Refusal;

/// Why an operation on a connection or node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The handshake did not complete.
    #[error("handshake failed: {0}")]
    Handshake(CloseReason),
    /// The connection is closed.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// The connection went away without saying why (its task ended).
    #[error("connection is gone")]
    Gone,
    /// The protocol refused a command.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The node's admission policy refused the connection.
    #[error("refused by policy: {0}")]
    Refused(Refusal),
    /// The transport failed.
    #[error("transport error: {0}")]
    Io(#[from] std::io::Error),
    /// No established connection matches the peer named.
    #[error("no established connection to {0}")]
    UnknownPeer(PeerRef),
    /// A configuration value was refused.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// An API key was refused.
    #[error("invalid API key: {0}")]
    Key(#[from] KeyError),
    /// An incoming stream did not complete.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Why an incoming stream did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The connection closed before the stream's END; the data received
    /// so far MUST NOT be used as a complete tensor.
    #[error("stream incomplete after {bytes} bytes: {reason}")]
    Incomplete {
        /// Bytes received before the cut.
        bytes: u64,
        /// Why the connection closed.
        reason: CloseReason,
    },
}
