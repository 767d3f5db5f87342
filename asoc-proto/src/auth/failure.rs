//! Why an authentication attempt was refused.

use core::fmt;

use uuid::Uuid;

/// Why a peer was not let in. The [`as_str`](Self::as_str) names are stable
/// and are what logs and the CLI's JSON events print.
///
/// None of these is ever told to the peer: on every failure the server
/// closes the connection without sending a byte (RFC-0001 §9.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The MAC did not verify under any accepted key.
    BadMac,
    /// The `(node id, challenge)` pair was already used.
    Replay,
    /// The first frame was not a well-formed HELLO (server) or ACCEPT (client).
    Malformed,
    /// The handshake did not finish before its deadline.
    Timeout,
    /// The source address is throttled after repeated failures or
    /// attempts, and already had its handshake of the current interval.
    Throttled,
    /// A HELLO carried this node's own id or a challenge this node sent:
    /// a reflected message.
    Reflection,
    /// A bounded table (replay cache, connection slots) is full; the node
    /// fails closed rather than forget state.
    Capacity,
    /// v2: the HELLO2 timestamp is more than the window (60 s) away from
    /// this node's wall clock, in either direction.
    Stale,
    /// v2 client: the server proved a node id other than the one the dial
    /// expected.
    UnexpectedPeer {
        /// The node id the dial expected.
        expected: Uuid,
        /// The node id the server proved.
        proven: Uuid,
    },
    /// v2: a sealed frame's tag did not verify (CONFIRM, during the
    /// handshake).
    BadFrameMac,
    /// A v1 HELLO reached a node that accepts only v2.
    V1Disabled,
    /// A v1 HELLO claimed a node id this node knows speaks v2.
    Downgrade,
    /// v2: the HELLO2 decrypted only under a key this node retired after a
    /// rotation's grace period: the peer missed the rotation (it was down
    /// past the grace period) and needs the new key.
    RetiredKey,
}

impl AuthFailure {
    /// Stable snake_case name: `bad_mac`, `replay`, `malformed`, `timeout`,
    /// `throttled`, `reflection`, `capacity`, `stale`,
    /// `unexpected_peer`, `bad_frame_mac`, `v1_disabled`, `downgrade`,
    /// `retired_key`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadMac => "bad_mac",
            Self::Replay => "replay",
            Self::Malformed => "malformed",
            Self::Timeout => "timeout",
            Self::Throttled => "throttled",
            Self::Reflection => "reflection",
            Self::Capacity => "capacity",
            Self::Stale => "stale",
            Self::UnexpectedPeer { .. } => "unexpected_peer",
            Self::BadFrameMac => "bad_frame_mac",
            Self::V1Disabled => "v1_disabled",
            Self::Downgrade => "downgrade",
            Self::RetiredKey => "retired_key",
        }
    }

    /// Whether this failure spends the per-address failure budget (and so
    /// may throttle the address): failures the peer caused by what it sent,
    /// not refusals the node made on its own.
    /// A v1 HELLO to a v2-only node is a configuration mismatch, not an
    /// attack, and does not count (WIRE-v2.md §6).
    #[must_use]
    pub const fn counts_toward_throttle(self) -> bool {
        matches!(
            self,
            Self::BadMac
                | Self::Replay
                | Self::Malformed
                | Self::Timeout
                | Self::Reflection
                | Self::Stale
                | Self::BadFrameMac
                | Self::Downgrade
                | Self::RetiredKey
        )
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
