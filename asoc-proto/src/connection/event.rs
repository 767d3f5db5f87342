//! What a connection reports, and why it closed.

use core::fmt;

use bytes::Bytes;
use uuid::Uuid;

use super::StreamId;
use crate::auth::{AuthFailure, KeyId, SessionToken};
use crate::v2::{Suite, WireVersion};
use crate::wire::{FrameError, FrameType};

/// Which end of the TCP connection this is. The side that opened it is the
/// client (WIRE.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::exhaustive_enums)] // a connection has exactly two ends
pub enum Role {
    /// Opened the connection; sends HELLO, expects ACCEPT.
    Client,
    /// Accepted the connection; expects HELLO, sends ACCEPT.
    Server,
}

/// Something the application should know, drained with
/// [`Connection::poll_event`](super::Connection::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake succeeded; streams may be opened.
    Established {
        /// The peer's node id: the client's on a server; on a v2 client the
        /// server's, proven by ACCEPT2 (v1 carries no server node id).
        peer_node: Option<Uuid>,
        /// The version, suite, session id and channel binding.
        session: SessionInfo,
        /// The key that verified the handshake.
        key: KeyId,
    },
    /// A chunk of an incoming stream, in order.
    Data {
        /// Stream id.
        stream: StreamId,
        /// Sequence number, 0 for the first chunk.
        seq: u32,
        /// The chunk; a view of the receive buffer.
        payload: Bytes,
    },
    /// An incoming stream ended with its END frame: every chunk arrived.
    StreamEnd {
        /// Stream id.
        stream: StreamId,
        /// DATA frames received.
        frames: u32,
        /// Payload bytes received.
        bytes: u64,
    },
    /// An incoming stream was cut off by the connection closing before its
    /// END. Its data MUST NOT be treated as a complete tensor.
    StreamIncomplete {
        /// Stream id.
        stream: StreamId,
        /// DATA frames received.
        frames: u32,
        /// Payload bytes received.
        bytes: u64,
        /// Why the connection closed.
        reason: CloseReason,
    },
    /// An outgoing stream whose END was never written because the connection
    /// closed first.
    SendAborted {
        /// Stream id.
        stream: StreamId,
    },
    /// A frame of unknown type, or a CONTROL frame this side does not
    /// understand, was skipped whole (RFC-0001 §9.2).
    FrameSkipped {
        /// Its type.
        frame_type: FrameType,
        /// Its stream id.
        stream: StreamId,
        /// Its payload length.
        length: u32,
    },
    /// A CONTROL frame on stream 0 with a nonzero `seq`: a control message
    /// of kind `seq` for whoever interprets control messages (the
    /// [`Node`](crate::node::Node), through
    /// [`Node::handle_control`](crate::node::Node::handle_control)). Kinds
    /// nobody knows are ignored there. CONTROL frames on other streams, or
    /// with seq 0, are still skipped as [`FrameSkipped`](Self::FrameSkipped).
    Control {
        /// The message kind (the frame's seq).
        kind: u32,
        /// The body (on v2, decrypted and verified).
        payload: Bytes,
    },
    /// The connection is closed; no more events follow. The adapter closes
    /// the transport.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// What a handshake established, the same on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The protocol the connection runs.
    pub version: WireVersion,
    /// v2: the suite both sides ran.
    pub suite: Option<Suite>,
    /// The session id: v1's session token, v2's ACCEPT2 session id.
    pub session_id: [u8; 8],
    /// v2: the Noise handshake hash, the session's channel binding.
    pub handshake_hash: Option<[u8; 32]>,
    /// v1: the session token and its MAC (RFC-0002 §5).
    pub token: Option<SessionToken>,
}

impl SessionInfo {
    /// A v1 session carrying `token`.
    #[must_use]
    pub fn v1(token: SessionToken) -> Self {
        Self {
            version: WireVersion::V1,
            suite: None,
            session_id: token.token,
            handshake_hash: None,
            token: Some(token),
        }
    }

    /// A v2 session.
    #[must_use]
    pub const fn v2(suite: Suite, session_id: [u8; 8], handshake_hash: [u8; 32]) -> Self {
        Self {
            version: WireVersion::V2,
            suite: Some(suite),
            session_id,
            handshake_hash: Some(handshake_hash),
            token: None,
        }
    }
}

/// A receiver rule of WIRE.md §4 that the peer broke once established.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The byte stream broke a framing rule (version, payload limit).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// DATA MUST NOT use stream 0.
    #[error("DATA frame on stream 0, which is reserved for the handshake")]
    DataOnStreamZero,
    /// END MUST NOT use stream 0.
    #[error("END frame on stream 0, which is reserved for the handshake")]
    EndOnStreamZero,
    /// HELLO and ACCEPT MUST NOT appear after the handshake.
    #[error("{frame_type} frame after the handshake completed")]
    UnexpectedHandshake {
        /// HELLO or ACCEPT.
        frame_type: FrameType,
    },
    /// Every frame of a stream MUST carry the next sequence number.
    #[error("stream {stream}: {frame_type} frame has seq {got}, expected {expected}")]
    SequenceGap {
        /// Stream id.
        stream: StreamId,
        /// DATA or END.
        frame_type: FrameType,
        /// The next sequence number.
        expected: u32,
        /// The one received.
        got: u32,
    },
    /// A stream MUST NOT carry more DATA frames than an END's seq can count.
    #[error("stream {stream} has 2^32-1 DATA frames; only END may follow")]
    StreamTooLong {
        /// Stream id.
        stream: StreamId,
    },
    /// END MUST have an empty payload.
    #[error("END frame on stream {stream} declares a {length}-byte payload; END MUST be empty")]
    EndWithPayload {
        /// Stream id.
        stream: StreamId,
        /// Declared length.
        length: u32,
    },
    /// The peer opened more concurrent streams than allowed locally.
    #[error("peer opened more than {max} concurrent streams")]
    TooManyStreams {
        /// The local limit.
        max: usize,
    },
    /// v2: a frame counter reached 2^64 − 1; the nonce would repeat.
    #[error("the v2 frame counter is exhausted; a nonce would repeat")]
    NonceExhausted,
}

/// Why a connection closed. Exactly one `Closed` event carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The first frame was not the required HELLO/ACCEPT header (wrong
    /// type, length, stream, seq or version). Nothing was sent.
    MalformedHandshake(FrameError),
    /// The handshake message was refused (bad MAC, replay, reflection, ...).
    /// Nothing was sent.
    AuthFailed(AuthFailure),
    /// The handshake did not finish in time (RFC-0001 §9.3).
    HandshakeTimeout,
    /// The peer broke a receiver rule after the handshake.
    Protocol(ProtocolError),
    /// v2: a frame's tag did not verify after the handshake: altered,
    /// forged, replayed or reordered. Nothing of it was delivered.
    BadFrameMac,
    /// Pending output made no progress for the send-stall timeout.
    SendStall,
    /// An open incoming stream received nothing for the receive-idle timeout.
    ReceiveIdle {
        /// The idle stream.
        stream: StreamId,
    },
    /// The peer closed its side of the connection.
    PeerClosed,
    /// The transport failed (reported by the adapter).
    Transport,
    /// This side closed the connection.
    Local,
    /// The peer node was learned by discovery and sent no valid announcement
    /// for the expiry time: the node treats it as gone (its link may be cut
    /// without either TCP side noticing) and closed the connection at once;
    /// the dial rules reconnect when its announcements resume.
    PeerExpired,
    /// The peer opened a newer connection to this node while this one had
    /// carried nothing since its handshake: the idle duplicate was closed so
    /// that a peer reconnecting over and over cannot pile connections up.
    Superseded,
    /// The peer opened an incoming stream while the node already had
    /// `max` open over all its connections (the node's
    /// `PolicyConfig::max_incoming_streams`): the connection was closed,
    /// as one that breaks its own stream cap is.
    StreamLimit {
        /// The node's cap.
        max: usize,
    },
}

impl CloseReason {
    /// The authentication failure this close represents, if it happened
    /// during the handshake through the peer's doing. Policy counts these
    /// toward the per-IP lockout.
    #[must_use]
    pub fn auth_failure(&self) -> Option<AuthFailure> {
        match self {
            Self::MalformedHandshake(_) => Some(AuthFailure::Malformed),
            Self::AuthFailed(f) => Some(*f),
            Self::HandshakeTimeout => Some(AuthFailure::Timeout),
            _ => None,
        }
    }

    /// A stable snake_case name for logs and JSON.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::MalformedHandshake(_) => "malformed",
            Self::AuthFailed(f) => f.as_str(),
            Self::HandshakeTimeout => "timeout",
            Self::Protocol(_) => "protocol_error",
            Self::BadFrameMac => "bad_frame_mac",
            Self::SendStall => "send_stall",
            Self::ReceiveIdle { .. } => "receive_idle",
            Self::PeerClosed => "peer_closed",
            Self::Transport => "transport_error",
            Self::Local => "local_close",
            Self::PeerExpired => "peer_expired",
            Self::Superseded => "superseded",
            Self::StreamLimit { .. } => "stream_limit",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MalformedHandshake(e) => write!(f, "malformed handshake: {e}"),
            Self::AuthFailed(a) => write!(f, "authentication failed: {a}"),
            Self::HandshakeTimeout => f.write_str("handshake timed out"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::BadFrameMac => {
                f.write_str("a frame failed its authentication tag (altered, forged or replayed)")
            }
            Self::SendStall => f.write_str("send stalled: the peer stopped reading"),
            Self::ReceiveIdle { stream } => {
                write!(f, "stream {stream} received nothing for the idle timeout")
            }
            Self::PeerClosed => f.write_str("peer closed the connection"),
            Self::Transport => f.write_str("transport error"),
            Self::Local => f.write_str("closed locally"),
            Self::PeerExpired => {
                f.write_str("the peer's discovery announcements stopped for the expiry time")
            }
            Self::Superseded => {
                f.write_str("an idle duplicate: the peer opened a newer connection")
            }
            Self::StreamLimit { max } => write!(
                f,
                "the peer opened a stream while this node had {max} incoming streams open"
            ),
        }
    }
}

/// Misuse of a connection's command API; the connection itself is unharmed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Streams can be opened only once the handshake completed.
    #[error("the connection is not established yet")]
    NotEstablished,
    /// The connection is closing or closed.
    #[error("the connection is closed")]
    Closed,
    /// Output queued beyond the high-water mark; retry after the transport
    /// drained some (see `Connection::can_send`).
    #[error("send queue is above its high-water mark ({high_water} bytes); wait for the transport to drain")]
    WouldBlock {
        /// The configured mark.
        high_water: usize,
    },
    /// A control message needs a nonzero kind: a CONTROL frame with seq 0
    /// on stream 0 is v2's CONFIRM.
    #[error("control message kind 0 is reserved (seq 0 on stream 0 is v2's CONFIRM)")]
    ControlKindZero,
    /// The stream id is not an open outgoing stream.
    #[error("stream {stream} is not an open outgoing stream")]
    UnknownStream {
        /// The id given.
        stream: StreamId,
    },
    /// The chunk is larger than the configured maximum payload; this
    /// poisons the stream (see [`SendError::Poisoned`]).
    #[error("chunk of {len} bytes exceeds the maximum payload of {max} bytes")]
    PayloadTooLarge {
        /// Chunk length.
        len: usize,
        /// The maximum.
        max: u32,
    },
    /// The stream already carries 2^32-1 DATA frames. The chunk was
    /// refused, which poisons the stream (see [`SendError::Poisoned`]).
    #[error("stream {stream} has reached 2^32-1 DATA frames; it takes no more")]
    StreamTooLong {
        /// Stream id.
        stream: StreamId,
    },
    /// An earlier chunk of the stream was refused (too large, too many
    /// frames), so its data has a hole: nothing more of it is sent and it
    /// is never finished, lest the peer take a shortened tensor for a
    /// complete one. The peer sees it incomplete when the connection
    /// closes.
    #[error("stream {stream} takes no more chunks and cannot be finished: an earlier chunk was refused: {refused}")]
    Poisoned {
        /// Stream id.
        stream: StreamId,
        /// Why the earlier chunk was refused.
        refused: Box<SendError>,
    },
    /// As many outgoing streams are open as the configuration allows.
    #[error("{max} outgoing streams are already open")]
    TooManyStreams {
        /// The limit.
        max: usize,
    },
}

/// A handshake step that was asked for in the wrong state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeStateError {
    /// No handshake message is waiting for a verdict.
    #[error("no handshake message awaits a verdict")]
    NothingToVerify,
    /// The verdict does not fit this connection's role.
    #[error("a {role:?} connection cannot take this verdict")]
    WrongRole {
        /// This connection's role.
        role: Role,
    },
}
