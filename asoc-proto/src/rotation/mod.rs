//! Key rotation without a restart (RFC-0002 §10.4, `docs/key-rotation.md`):
//! a new key travels in a KEY_ROTATION control message, only inside an
//! encrypted channel (v2, or a transport the adapter marks as TLS), and
//! floods the cluster by epoch.
//!
//! Each node, on a rotation started here or received with a higher epoch
//! than its own from an authenticated peer: acknowledges it, forwards it
//! once to its other peers (equal and lower epochs are acknowledged and go
//! no further, so nothing loops), accepts the new key at once, signs with
//! it from the activation time, accepts the old key until the grace period
//! after activation ends, then drops it (its bytes are wiped). A peer that
//! connects with an older epoch (it was down) is sent the current rotation
//! as soon as its handshake completes. Past the grace period a v2 HELLO
//! under the dropped key is refused as
//! [`AuthFailure::RetiredKey`](crate::auth::AuthFailure::RetiredKey): the
//! node keeps, for that purpose only, the key's v2 PSK (a one-way HKDF
//! output from which the key cannot be recovered, and which no node
//! accepts any more), for the last [`RETIRED_REMEMBERED`] retired keys.
//!
//! [`Node`](crate::node::Node) drives this module; the wire codecs are in
//! [`wire`].

pub mod wire;

use core::time::Duration;
use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use zeroize::Zeroizing;

use crate::auth::{ApiKey, KeyId, KeyRing};
use crate::node::ConnId;
use crate::rng::{Rng, Seed};
use crate::time::after;
use crate::v2::noise::{Message, Responder};
use crate::v2::{derive_psk, Suite, V2Key};

pub use wire::{
    AckStatus, KeyRotation, RotationAck, RotationDecodeError, KIND_KEY_ROTATION,
    KIND_KEY_ROTATION_ACK,
};

/// How many retired keys a node still recognises (to refuse them with
/// `retired_key` rather than `bad_mac`).
pub const RETIRED_REMEMBERED: usize = 8;

/// Why a rotation could not be started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// The key is already one this node accepts.
    #[error("the new key is already in this node's key ring ({0}); generate a fresh one")]
    KeyInUse(KeyId),
    /// An earlier rotation is announced and not active yet.
    #[error("rotation epoch {epoch} is not active yet; start the next one after it activates")]
    InProgress {
        /// Its epoch.
        epoch: u64,
    },
    /// No epoch is left.
    #[error("the rotation epoch is at its maximum")]
    EpochExhausted,
    /// The key is too long to travel in a KEY_ROTATION.
    #[error("the new key is {len} bytes; a rotation carries at most {max} bytes")]
    KeyTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a received rotation control message was not acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationRefusal {
    /// It came over a connection that is not encrypted (v1 without TLS):
    /// key material is never believed, nor sent, in the clear.
    Cleartext,
    /// Its body did not decode.
    Malformed(RotationDecodeError),
}

impl RotationRefusal {
    /// `cleartext` or `malformed`.
    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Cleartext => "cleartext",
            Self::Malformed(_) => "malformed",
        }
    }
}

impl core::fmt::Display for RotationRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Cleartext => f.write_str("rotation over a connection that is not encrypted"),
            Self::Malformed(e) => write!(f, "malformed rotation message: {e}"),
        }
    }
}

/// A control message for the adapter to queue on connection `conn` with
/// [`Connection::send_control`](crate::connection::Connection::send_control).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ControlTransmit {
    /// The connection.
    pub conn: ConnId,
    /// The control kind (the frame's seq).
    pub kind: u32,
    /// The body; it may carry a key, so it is wiped when dropped.
    pub body: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for ControlTransmit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ControlTransmit")
            .field("conn", &self.conn)
            .field("kind", &self.kind)
            .field("len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// The rotation of the node's current epoch.
#[derive(Clone, Debug)]
struct Latest {
    body: KeyRotation,
    key: KeyId,
    activate_at: Instant,
    old_until: Instant,
    activated: bool,
}

/// What happened, for the node to turn into events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Learned {
        epoch: u64,
        conn: ConnId,
        activate_at: Instant,
        old_until: Instant,
    },
    Sent {
        epoch: u64,
        conn: ConnId,
    },
    Acked {
        conn: ConnId,
        ack: RotationAck,
    },
    Activated {
        epoch: u64,
        key: KeyId,
    },
    Purged {
        key: KeyId,
    },
    Refused {
        conn: ConnId,
        reason: RotationRefusal,
    },
}

/// A node's rotation state.
#[derive(Debug)]
pub(crate) struct Rotation {
    epoch: u64,
    latest: Option<Latest>,
    /// Connections whose transport the adapter marked encrypted (TLS).
    encrypted: HashSet<ConnId>,
    /// v2 PSKs of keys dropped after their grace period, newest last.
    retired: VecDeque<(KeyId, V2Key)>,
    outbox: VecDeque<ControlTransmit>,
    steps: VecDeque<Step>,
    rng: Rng,
}

/// The instant of wall-clock time `at_ms`, given that `now` is `unix_ms`;
/// a time already past is `now`.
fn instant_of(now: Instant, unix_ms: u64, at_ms: u64) -> Instant {
    after(now, Duration::from_millis(at_ms.saturating_sub(unix_ms)))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Rotation {
    pub(crate) fn new(seed: Seed) -> Self {
        Self {
            epoch: 0,
            latest: None,
            encrypted: HashSet::new(),
            retired: VecDeque::new(),
            outbox: VecDeque::new(),
            steps: VecDeque::new(),
            rng: Rng::from_seed(seed),
        }
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn mark_encrypted(&mut self, conn: ConnId) {
        self.encrypted.insert(conn);
    }

    pub(crate) fn is_marked_encrypted(&self, conn: ConnId) -> bool {
        self.encrypted.contains(&conn)
    }

    pub(crate) fn closed(&mut self, conn: ConnId) {
        self.encrypted.remove(&conn);
        self.outbox.retain(|t| t.conn != conn);
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<ControlTransmit> {
        self.outbox.pop_front()
    }

    pub(crate) fn poll_step(&mut self) -> Option<Step> {
        self.steps.pop_front()
    }

    /// Starts rotation `epoch + 1` to `key`, sent to every connection of
    /// `peers` (the encrypted, established ones).
    // Both clocks, the ring and the request's three parts: each is needed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &mut self,
        now: Instant,
        unix_ms: u64,
        keys: &mut KeyRing,
        key: ApiKey,
        activate_in: Duration,
        grace: Duration,
        peers: &[ConnId],
    ) -> Result<u64, RotationError> {
        if let Some(l) = self.latest.as_ref().filter(|l| !l.activated) {
            return Err(RotationError::InProgress {
                epoch: l.body.epoch,
            });
        }
        if let Some(id) = keys.id_of(now, &key) {
            return Err(RotationError::KeyInUse(id));
        }
        if key.len() > wire::MAX_ROTATION_KEY_LEN {
            return Err(RotationError::KeyTooLong {
                len: key.len(),
                max: wire::MAX_ROTATION_KEY_LEN,
            });
        }
        let epoch = self
            .epoch
            .checked_add(1)
            .ok_or(RotationError::EpochExhausted)?;
        let activate_unix_ms = unix_ms.saturating_add(millis(activate_in));
        let body = KeyRotation::new(epoch, activate_unix_ms, millis(grace), key);
        self.adopt(now, unix_ms, keys, body);
        self.send_to(peers);
        self.activate_due(now, keys);
        Ok(epoch)
    }

    /// Takes `body` as the current rotation (its epoch is higher).
    fn adopt(&mut self, now: Instant, unix_ms: u64, keys: &mut KeyRing, body: KeyRotation) {
        let activate_at = instant_of(now, unix_ms, body.activate_unix_ms);
        let old_until = instant_of(
            now,
            unix_ms,
            body.activate_unix_ms.saturating_add(body.grace_ms),
        );
        let (current, _) = keys.current();
        let (key, activated) = match keys.id_of(now, &body.key) {
            // Already signing with it (restarted from a rewritten key file).
            Some(id) if id == current => (id, true),
            Some(id) if Some(id) == keys.staged() => (id, false),
            _ => (keys.stage(body.key.clone()), false),
        };
        self.epoch = body.epoch;
        self.latest = Some(Latest {
            body,
            key,
            activate_at,
            old_until,
            activated,
        });
    }

    fn send_to(&mut self, peers: &[ConnId]) {
        let Some(latest) = self.latest.as_ref() else {
            return;
        };
        let epoch = latest.body.epoch;
        for &conn in peers {
            self.outbox.push_back(ControlTransmit {
                conn,
                kind: KIND_KEY_ROTATION,
                body: latest.body.encode(),
            });
            self.steps.push_back(Step::Sent { epoch, conn });
        }
    }

    /// Connection `conn` (encrypted) completed its handshake: it is sent
    /// the current rotation, which it ignores if it already has it.
    pub(crate) fn established(&mut self, conn: ConnId) {
        if self.latest.is_some() {
            self.send_to(&[conn]);
        }
    }

    /// A control message of `kind` arrived on `conn`; `encrypted` says
    /// whether the connection is v2 or TLS; `others` are the node's other
    /// encrypted established connections, for forwarding.
    // Both clocks, the ring, the connection and what arrived on it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn control(
        &mut self,
        now: Instant,
        unix_ms: u64,
        keys: &mut KeyRing,
        conn: ConnId,
        encrypted: bool,
        kind: u32,
        body: &[u8],
        others: &[ConnId],
    ) {
        if kind != KIND_KEY_ROTATION && kind != KIND_KEY_ROTATION_ACK {
            return;
        }
        if !encrypted {
            self.steps.push_back(Step::Refused {
                conn,
                reason: RotationRefusal::Cleartext,
            });
            return;
        }
        if kind == KIND_KEY_ROTATION_ACK {
            match RotationAck::decode(body) {
                Ok(ack) => self.steps.push_back(Step::Acked { conn, ack }),
                Err(e) => self.steps.push_back(Step::Refused {
                    conn,
                    reason: RotationRefusal::Malformed(e),
                }),
            }
            return;
        }
        let rotation = match KeyRotation::decode(body) {
            Ok(r) => r,
            Err(e) => {
                self.steps.push_back(Step::Refused {
                    conn,
                    reason: RotationRefusal::Malformed(e),
                });
                return;
            }
        };
        let epoch = rotation.epoch;
        let status = match epoch.cmp(&self.epoch) {
            core::cmp::Ordering::Greater => AckStatus::Adopted,
            core::cmp::Ordering::Equal => AckStatus::Known,
            core::cmp::Ordering::Less => AckStatus::Superseded,
        };
        self.outbox.push_back(ControlTransmit {
            conn,
            kind: KIND_KEY_ROTATION_ACK,
            body: Zeroizing::new(RotationAck::new(epoch, status).encode().to_vec()),
        });
        if status != AckStatus::Adopted {
            return;
        }
        self.adopt(now, unix_ms, keys, rotation);
        if let Some(l) = self.latest.as_ref() {
            self.steps.push_back(Step::Learned {
                epoch,
                conn,
                activate_at: l.activate_at,
                old_until: l.old_until,
            });
        }
        self.send_to(others);
        self.activate_due(now, keys);
        self.purge_due(now, keys);
    }

    fn activate_due(&mut self, now: Instant, keys: &mut KeyRing) {
        let Some(l) = self.latest.as_mut() else {
            return;
        };
        if l.activated || now < l.activate_at {
            return;
        }
        l.activated = true;
        if keys.staged() == Some(l.key) {
            if let Some(id) = keys.activate_staged(l.old_until) {
                l.key = id;
                self.steps.push_back(Step::Activated {
                    epoch: l.body.epoch,
                    key: id,
                });
            }
        }
    }

    /// Drops previous keys past their deadline, remembering their PSKs.
    fn purge_due(&mut self, now: Instant, keys: &mut KeyRing) {
        let due: Vec<(KeyId, V2Key)> = keys
            .expiring(now)
            .map(|(id, k)| (id, derive_psk(k)))
            .collect();
        for (id, psk) in due {
            if self.retired.len() >= RETIRED_REMEMBERED {
                self.retired.pop_front();
            }
            self.retired.push_back((id, psk));
            self.steps.push_back(Step::Purged { key: id });
        }
        keys.expire(now);
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, keys: &mut KeyRing) {
        self.activate_due(now, keys);
        self.purge_due(now, keys);
    }

    pub(crate) fn poll_timeout(&self, keys: &KeyRing) -> Option<Instant> {
        let activation = self
            .latest
            .as_ref()
            .filter(|l| !l.activated)
            .map(|l| l.activate_at);
        [activation, keys.next_expiry()].into_iter().flatten().min()
    }

    /// Whether HELLO2 `message` decrypts under a retired key's PSK.
    pub(crate) fn is_retired(&mut self, suite: Suite, message: &Message) -> bool {
        if self.retired.is_empty() {
            return false;
        }
        let mut e = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(self.rng.inner(), e.as_mut());
        self.retired
            .iter()
            .any(|(_, psk)| Responder::read_hello(suite, psk, e.clone(), message).is_ok())
    }
}
