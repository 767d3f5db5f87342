//! The authenticating side of the handshake: builds HELLOs, verifies HELLO
//! and ACCEPT messages, issues session tokens, and remembers what it has
//! seen (replay) and sent (reflection).
//!
//! A [`Connection`] never holds a key. When it has received a handshake
//! message it waits for a verdict; [`Authenticator::drive`] gives it. A
//! [`Node`](crate::node::Node) wraps an `Authenticator` and adds per-IP
//! policy; a program that handles a single connection can use an
//! `Authenticator` directly.

use core::time::Duration;
use std::time::Instant;

use uuid::Uuid;

use crate::auth::{ct_eq, truncated_mac};
use crate::auth::{sign_hello, verify_hello, AuthFailure, KeyId, KeyRing, SessionToken};
use crate::connection::{ConfigError, Connection, ConnectionConfig, HandshakeMessage};
use crate::replay::{ReplayCache, ReplayError};
use crate::rng::{Rng, Seed};
use crate::time::after;
use crate::wire::{Accept, Hello};

/// Settings of an [`Authenticator`].
#[derive(Clone, Debug)]
pub struct AuthenticatorConfig {
    node_id: Uuid,
    keys: KeyRing,
    hello_retention: Duration,
    hello_replay_capacity: usize,
    reflection_capacity: usize,
    reflection_retention: Duration,
}

impl AuthenticatorConfig {
    /// Settings for `node_id` holding `keys`, with the defaults: HELLO pairs
    /// remembered 10 minutes, up to 1,000,000 of them; the challenges this
    /// node sent as a client remembered 60 s, up to 65,536.
    #[must_use]
    pub fn new(node_id: Uuid, keys: KeyRing) -> Self {
        Self {
            node_id,
            keys,
            hello_retention: Duration::from_secs(600),
            hello_replay_capacity: 1_000_000,
            reflection_capacity: 65_536,
            reflection_retention: Duration::from_secs(60),
        }
    }

    /// A builder starting from the defaults of [`new`](Self::new); its
    /// [`build`](AuthenticatorConfigBuilder::build) checks the settings.
    pub fn builder(node_id: Uuid, keys: KeyRing) -> AuthenticatorConfigBuilder {
        AuthenticatorConfigBuilder(Self::new(node_id, keys))
    }

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> Uuid {
        self.node_id
    }

    /// How long an accepted HELLO's (node, challenge) is remembered.
    #[must_use]
    pub fn hello_retention(&self) -> Duration {
        self.hello_retention
    }

    /// How many HELLO pairs may be remembered at once.
    #[must_use]
    pub fn hello_replay_capacity(&self) -> usize {
        self.hello_replay_capacity
    }
}

/// Builds an [`AuthenticatorConfig`]; every setter takes any value and
/// [`build`](Self::build) refuses the ones the protocol forbids.
#[derive(Clone, Debug)]
#[must_use]
pub struct AuthenticatorConfigBuilder(AuthenticatorConfig);

impl AuthenticatorConfigBuilder {
    /// How long an accepted HELLO's (node, challenge) is remembered; at
    /// least 60 s (RFC-0002 §4.3), checked by [`build`](Self::build).
    pub fn hello_retention(mut self, retention: Duration) -> Self {
        self.0.hello_retention = retention;
        self
    }

    /// How many HELLO pairs may be remembered at once. When full, new HELLOs
    /// are refused (fail closed) until old pairs expire.
    pub fn hello_replay_capacity(mut self, capacity: usize) -> Self {
        self.0.hello_replay_capacity = capacity;
        self
    }

    /// How many challenges sent as a client are remembered for the
    /// reflection guard, and for how long.
    pub fn reflection_guard(mut self, capacity: usize, retention: Duration) -> Self {
        self.0.reflection_capacity = capacity;
        self.0.reflection_retention = retention;
        self
    }

    /// The settings, or why they are refused: a HELLO retention below 60 s
    /// would let a recorded HELLO be replayed inside its timestamp window.
    pub fn build(self) -> Result<AuthenticatorConfig, ConfigError> {
        if self.0.hello_retention < Duration::from_secs(60) {
            return Err(ConfigError::ReplayRetentionTooShort {
                secs: self.0.hello_retention.as_secs(),
            });
        }
        Ok(self.0)
    }
}

/// What a verdict on a connection's handshake message was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeOutcome {
    /// Verified under this key; the connection is established.
    Accepted {
        /// The key that matched.
        key: KeyId,
        /// The client's node id (server side only).
        peer_node: Option<Uuid>,
    },
    /// Refused; the connection closed without sending anything.
    Rejected(AuthFailure),
}

/// Counters of an [`Authenticator`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthCounters {
    /// HELLOs verified and accepted.
    pub hellos_accepted: u64,
    /// ACCEPTs verified.
    pub accepts_verified: u64,
    /// Refused for a bad MAC.
    pub bad_mac: u64,
    /// Refused as replays.
    pub replays: u64,
    /// Refused as reflections of this node's own messages.
    pub reflections: u64,
    /// Refused because the replay cache was full (fail closed).
    pub replay_cache_full: u64,
    /// Challenges not remembered for the reflection guard because its
    /// table was full (the own-node-id check still applies).
    pub reflection_table_full: u64,
}

/// Verifies handshakes for one node. See the [module docs](self).
#[derive(Debug)]
pub struct Authenticator {
    config: AuthenticatorConfig,
    rng: Rng,
    seen_hellos: ReplayCache<Instant>,
    sent_challenges: ReplayCache<Instant>,
    counters: AuthCounters,
}

impl Authenticator {
    /// An authenticator whose randomness (challenges, tokens) is expanded
    /// from `seed`.
    #[must_use]
    pub fn new(config: AuthenticatorConfig, seed: Seed) -> Self {
        Self {
            seen_hellos: ReplayCache::new(config.hello_replay_capacity),
            sent_challenges: ReplayCache::new(config.reflection_capacity),
            config,
            rng: Rng::from_seed(seed),
            counters: AuthCounters::default(),
        }
    }

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> Uuid {
        self.config.node_id
    }

    /// The key ring (for rotation).
    pub fn keys_mut(&mut self) -> &mut KeyRing {
        &mut self.config.keys
    }

    /// The key ring.
    #[must_use]
    pub fn keys(&self) -> &KeyRing {
        &self.config.keys
    }

    /// Counters.
    #[must_use]
    pub fn counters(&self) -> AuthCounters {
        self.counters
    }

    /// A fresh HELLO signed with the current key. Its challenge is remembered
    /// so that a reflection of it is refused.
    pub fn make_hello(&mut self, now: Instant) -> Hello {
        let challenge = self.rng.next_u32();
        let node = self.config.node_id;
        let until = after(now, self.config.reflection_retention);
        if self
            .sent_challenges
            .insert(now, (node, challenge), until)
            .is_err()
        {
            self.counters.reflection_table_full += 1;
        }
        let (_, key) = self.config.keys.current();
        sign_hello(key, node, challenge)
    }

    /// A client connection whose first frame is a fresh HELLO.
    pub fn client(&mut self, now: Instant, config: ConnectionConfig) -> Connection {
        let hello = self.make_hello(now);
        Connection::client(config, now, &hello)
    }

    /// Checks a HELLO, in order of cost: reflection of our own node id, MAC
    /// under every accepted key, reflection of a challenge we sent, replay.
    /// The pair is recorded only after the MAC verified. On success a session
    /// token signed with the matching key is issued.
    pub fn verify_hello(
        &mut self,
        now: Instant,
        hello: &Hello,
    ) -> Result<(KeyId, SessionToken), AuthFailure> {
        if ct_eq(hello.node_id.as_bytes(), self.config.node_id.as_bytes()) {
            self.counters.reflections += 1;
            return Err(AuthFailure::Reflection);
        }
        let Some(key_id) = self.config.keys.find(now, |k| verify_hello(k, hello)) else {
            self.counters.bad_mac += 1;
            return Err(AuthFailure::BadMac);
        };
        let pair = (hello.node_id, hello.challenge);
        if self.sent_challenges.contains(now, &pair) {
            self.counters.reflections += 1;
            return Err(AuthFailure::Reflection);
        }
        match self
            .seen_hellos
            .insert(now, pair, after(now, self.config.hello_retention))
        {
            Ok(()) => {}
            Err(ReplayError::Replayed) => {
                self.counters.replays += 1;
                return Err(AuthFailure::Replay);
            }
            Err(_) => {
                self.counters.replay_cache_full += 1;
                return Err(AuthFailure::Capacity);
            }
        }
        let key = self
            .config
            .keys
            .accepted(now)
            .find(|(id, _)| *id == key_id)
            .map(|(_, k)| k)
            .ok_or(AuthFailure::BadMac)?;
        let session = SessionToken::issue(key, self.rng.inner());
        self.counters.hellos_accepted += 1;
        Ok((key_id, session))
    }

    /// Checks an ACCEPT's MAC under every accepted key.
    pub fn verify_accept(&mut self, now: Instant, accept: &Accept) -> Result<KeyId, AuthFailure> {
        let found = self.config.keys.find(now, |k| {
            let expected = truncated_mac::<8>(k.expose_secret(), &[&accept.token]);
            ct_eq(&expected, &accept.mac)
        });
        match found {
            Some(id) => {
                self.counters.accepts_verified += 1;
                Ok(id)
            }
            None => {
                self.counters.bad_mac += 1;
                Err(AuthFailure::BadMac)
            }
        }
    }

    /// Gives `conn` its verdict if it is waiting for one, and says what it
    /// was. Call after every input while the connection is handshaking.
    pub fn drive(&mut self, now: Instant, conn: &mut Connection) -> Option<HandshakeOutcome> {
        let outcome = match conn.poll_handshake()? {
            HandshakeMessage::Hello(hello) => match self.verify_hello(now, &hello) {
                Ok((key, session)) => {
                    conn.accept_hello(now, key, session).ok()?;
                    HandshakeOutcome::Accepted {
                        key,
                        peer_node: Some(hello.node_id),
                    }
                }
                Err(f) => {
                    conn.reject_handshake(now, f);
                    HandshakeOutcome::Rejected(f)
                }
            },
            HandshakeMessage::Accept(accept) => match self.verify_accept(now, &accept) {
                Ok(key) => {
                    conn.confirm_accept(now, key).ok()?;
                    HandshakeOutcome::Accepted {
                        key,
                        peer_node: None,
                    }
                }
                Err(f) => {
                    conn.reject_handshake(now, f);
                    HandshakeOutcome::Rejected(f)
                }
            },
        };
        Some(outcome)
    }
}
