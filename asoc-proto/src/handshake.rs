//! The authenticating side of the handshake: builds HELLOs and HELLO2s,
//! verifies HELLO, ACCEPT, HELLO2 and ACCEPT2 messages, issues session
//! tokens and session ids, applies the version policy (WIRE-v2.md §6), and
//! remembers what it has seen (replay) and sent (reflection).
//!
//! A [`Connection`] never holds a key. When it has received a handshake
//! message it waits for a verdict; [`Authenticator::drive`] gives it. A
//! [`Node`](crate::node::Node) wraps an `Authenticator` and adds per-IP
//! policy; a program that handles a single connection can use an
//! `Authenticator` directly.

use core::time::Duration;
use std::time::Instant;

use rand_core::RngCore;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::auth::{ct_eq, truncated_mac};
use crate::auth::{sign_hello, verify_hello, AuthFailure, KeyId, KeyRing, SessionToken};
use crate::connection::{ConfigError, Connection, ConnectionConfig, HandshakeMessage, SessionInfo};
use crate::persist::{AuthReplayState, RestoreReport, SeenEphemeral, SeenHello};
use crate::replay::{ReplayCache, ReplayError};
use crate::rng::{Rng, Seed};
use crate::time::after;
use crate::v2::noise::{ephemeral_of, AcceptPayload, HelloPayload, Initiator, Message, Responder};
use crate::v2::{derive_psk, Suite, WireVersion};
use crate::wire::{Accept, Hello};

/// How a client connection is opened: the version it speaks and, for v2,
/// the node id the server must prove.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The version of the HELLO sent.
    pub version: WireVersion,
    /// v2: the server must prove this node id, else the connection closes
    /// with [`AuthFailure::UnexpectedPeer`].
    pub expected_peer: Option<Uuid>,
}

impl ClientOptions {
    /// A v2 dial that accepts any key-holding server (the default).
    #[must_use]
    pub fn v2() -> Self {
        Self::default()
    }

    /// A v1 dial (RFC-0001): only for peers known to speak only v1.
    #[must_use]
    pub fn v1() -> Self {
        Self {
            version: WireVersion::V1,
            expected_peer: None,
        }
    }

    /// Options for `version`.
    #[must_use]
    pub fn version(version: WireVersion) -> Self {
        Self {
            version,
            expected_peer: None,
        }
    }

    /// Requires the server to prove `node` (v2 only; v1 servers prove no
    /// id).
    #[must_use]
    pub fn expect_peer(mut self, node: Option<Uuid>) -> Self {
        self.expected_peer = node;
        self
    }
}

/// Settings of an [`Authenticator`].
#[derive(Clone, Debug)]
pub struct AuthenticatorConfig {
    node_id: Uuid,
    keys: KeyRing,
    hello_retention: Duration,
    hello_replay_capacity: usize,
    reflection_capacity: usize,
    reflection_retention: Duration,
    pub(crate) allow_v1: bool,
    v2_window: Duration,
    v2_replay_capacity: usize,
}

impl AuthenticatorConfig {
    /// Settings for `node_id` holding `keys`, with the defaults: v2 only
    /// (v1 HELLOs refused with [`AuthFailure::V1Disabled`]); HELLO2
    /// timestamps within 60 s, their ephemeral keys remembered until the
    /// timestamp + 61 s, up to 262,144 of them; v1 HELLO pairs remembered
    /// 10 minutes, up to 1,000,000; the challenges and ephemeral keys this
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
            allow_v1: false,
            v2_window: Duration::from_secs(60),
            v2_replay_capacity: 262_144,
        }
    }

    /// Whether v1 HELLOs are accepted (WIRE-v2.md §6).
    #[must_use]
    pub fn allow_v1(&self) -> bool {
        self.allow_v1
    }

    /// How far a HELLO2 timestamp may be from this node's wall clock.
    #[must_use]
    pub fn v2_window(&self) -> Duration {
        self.v2_window
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

    /// How many HELLO2 ephemeral keys are remembered at most.
    #[must_use]
    pub fn v2_replay_capacity(&self) -> usize {
        self.v2_replay_capacity
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

    /// Accepts v1 HELLOs too (all of WIRE.md's rules), for the Python
    /// implementation and other v1 peers. Off by default.
    pub fn allow_v1(mut self, yes: bool) -> Self {
        self.0.allow_v1 = yes;
        self
    }

    /// How far a HELLO2 timestamp may be from this node's wall clock, in
    /// either direction (default 60 s); ephemeral keys are remembered for
    /// this window plus 1 s.
    pub fn v2_window(mut self, window: Duration) -> Self {
        self.0.v2_window = window;
        self
    }

    /// How many HELLO2 ephemeral keys may be remembered at once. When full,
    /// new HELLO2s are refused (fail closed) until old ones expire.
    pub fn v2_replay_capacity(mut self, capacity: usize) -> Self {
        self.0.v2_replay_capacity = capacity;
        self
    }

    /// The settings, or why they are refused: a HELLO retention below 60 s
    /// would let a recorded HELLO be replayed inside its timestamp window.
    pub fn build(self) -> Result<AuthenticatorConfig, ConfigError> {
        if self.0.v2_window.is_zero() {
            return Err(ConfigError::ZeroDuration { field: "v2_window" });
        }
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
        /// The peer's node id: the client's on a server, the server's on a
        /// v2 client.
        peer_node: Option<Uuid>,
        /// The version, suite, session id and channel binding.
        session: SessionInfo,
    },
    /// v2 server: HELLO2 verified and ACCEPT2 queued; the connection is
    /// established only once the client's CONFIRM decrypts (a later
    /// verdict reports `Accepted`).
    AwaitingConfirm,
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
    /// Entries recorded in the replay caches (v1 HELLO pairs and HELLO2
    /// ephemeral keys): when it moves, [`Authenticator::replay_state`]
    /// has something new to save.
    pub replay_recorded: u64,
    /// Challenges not remembered for the reflection guard because its
    /// table was full (the own-node-id check still applies).
    pub reflection_table_full: u64,
    /// v2 handshakes completed (server: CONFIRM decrypted; client: ACCEPT2
    /// verified).
    pub v2_established: u64,
    /// HELLO2s refused for a timestamp outside the window.
    pub stale: u64,
    /// v1 HELLOs refused because v1 is disabled.
    pub v1_disabled: u64,
    /// v1 HELLOs refused because their node id speaks v2.
    pub downgrades: u64,
    /// ACCEPT2s that proved another node id than the dial expected.
    pub unexpected_peer: u64,
}

/// Verifies handshakes for one node. See the [module docs](self).
#[derive(Debug)]
pub struct Authenticator {
    config: AuthenticatorConfig,
    rng: Rng,
    seen_hellos: ReplayCache<Instant>,
    sent_challenges: ReplayCache<Instant>,
    /// HELLO2 ephemeral keys seen, each until its timestamp + window + 1 s
    /// (unix milliseconds).
    seen_ephemerals: ReplayCache<u64, [u8; 32]>,
    /// Ephemeral keys this node sent in HELLO2s, for the reflection guard.
    sent_ephemerals: ReplayCache<Instant, [u8; 32]>,
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
            seen_ephemerals: ReplayCache::new(config.v2_replay_capacity),
            sent_ephemerals: ReplayCache::new(config.reflection_capacity),
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

    /// Whether v1 HELLOs are accepted.
    #[must_use]
    pub fn allow_v1(&self) -> bool {
        self.config.allow_v1
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

    /// How full the fail-closed replay caches are, as `(entries,
    /// capacity)`: the v1 HELLO cache, then the HELLO2 ephemeral-key cache.
    /// A full cache refuses handshakes (`replay_cache_full`).
    #[must_use]
    pub fn replay_fill(&self) -> [(usize, usize); 2] {
        [
            (self.seen_hellos.len(), self.seen_hellos.capacity()),
            (self.seen_ephemerals.len(), self.seen_ephemerals.capacity()),
        ]
    }

    /// What replay protection remembers at `now`, whose wall-clock time
    /// is `unix_ms`: the v1 HELLO pairs and HELLO2 ephemeral keys not yet
    /// expired, each with its expiry in unix milliseconds. A later process
    /// gives it to [`restore_replay_state`](Self::restore_replay_state), so
    /// a restart does not reopen the door to a recorded HELLO.
    #[must_use]
    pub fn replay_state(&self, now: Instant, unix_ms: u64) -> AuthReplayState {
        let hellos = self
            .seen_hellos
            .entries()
            .filter(|(_, until)| *until > now)
            .map(|((node, challenge), until)| {
                let left = until.saturating_duration_since(now);
                let left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
                // Rounded up: an entry must never come back shorter-lived.
                let left_ms =
                    left_ms.saturating_add(u64::from(left.subsec_nanos() % 1_000_000 != 0));
                SeenHello::new(node, challenge, unix_ms.saturating_add(left_ms))
            })
            .collect();
        let ephemerals = self
            .seen_ephemerals
            .entries()
            .filter(|(_, until)| *until > unix_ms)
            .map(|(key, until)| SeenEphemeral::new(key, until))
            .collect();
        AuthReplayState { hellos, ephemerals }
    }

    /// Remembers again what [`replay_state`](Self::replay_state) took in an
    /// earlier process. Entries already expired at `unix_ms` are dropped.
    /// No entry is kept longer than this node's own settings would keep a
    /// fresh one (the HELLO retention; the HELLO2 window on both sides plus
    /// 1 s), so a damaged state cannot pin the caches full. The wall clocks
    /// of the two processes are trusted to agree: a clock set back between
    /// them lengthens the memory, one set forward shortens it.
    pub fn restore_replay_state(
        &mut self,
        now: Instant,
        unix_ms: u64,
        state: &AuthReplayState,
    ) -> RestoreReport {
        let mut report = RestoreReport::default();
        let tally = |report: &mut RestoreReport, result: Result<(), ReplayError>| match result {
            Ok(()) => report.restored += 1,
            Err(ReplayError::Replayed) => report.duplicate += 1,
            Err(_) => report.over_capacity += 1,
        };
        let retention_ms =
            u64::try_from(self.config.hello_retention.as_millis()).unwrap_or(u64::MAX);
        for h in &state.hellos {
            if h.expires_unix_ms <= unix_ms {
                report.expired += 1;
                continue;
            }
            let left_ms = (h.expires_unix_ms - unix_ms).min(retention_ms);
            let until = after(now, Duration::from_millis(left_ms));
            let result = self
                .seen_hellos
                .insert(now, (h.node_id, h.challenge), until);
            tally(&mut report, result);
        }
        let window = u64::try_from(self.config.v2_window.as_millis()).unwrap_or(u64::MAX);
        let latest = unix_ms
            .saturating_add(window.saturating_mul(2))
            .saturating_add(1_000);
        for e in &state.ephemerals {
            if e.expires_unix_ms <= unix_ms {
                report.expired += 1;
                continue;
            }
            let result = self
                .seen_ephemerals
                .insert(unix_ms, e.key, e.expires_unix_ms.min(latest));
            tally(&mut report, result);
        }
        report
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

    /// A client connection whose first frame is a fresh HELLO2 (or, with
    /// [`ClientOptions::v1`], a v1 HELLO), signed with the current key.
    /// `unix_ms` is this node's wall-clock time, which HELLO2 carries.
    pub fn client(
        &mut self,
        now: Instant,
        unix_ms: u64,
        config: ConnectionConfig,
        options: ClientOptions,
    ) -> Connection {
        match options.version {
            WireVersion::V1 => {
                let hello = self.make_hello(now);
                Connection::client(config, now, &hello)
            }
            WireVersion::V2 => {
                let (id, key) = self.config.keys.current();
                let psk = derive_psk(key);
                let payload = HelloPayload {
                    node_id: self.config.node_id,
                    unix_ms,
                };
                let ephemeral = self.draw_ephemeral();
                match Initiator::start(config.suite(), &psk, ephemeral, &payload) {
                    Ok((initiator, hello)) => {
                        let until = after(now, self.config.reflection_retention);
                        if self
                            .sent_ephemerals
                            .insert(now, initiator.ephemeral_public(), until)
                            .is_err()
                        {
                            self.counters.reflection_table_full += 1;
                        }
                        Connection::client_v2(
                            config,
                            now,
                            &hello,
                            initiator,
                            id,
                            options.expected_peer,
                        )
                    }
                    // snow refuses only its own misuse; a connection closed
                    // at once reports it rather than panic.
                    Err(_) => {
                        let mut conn = Connection::client(config, now, &self.make_hello(now));
                        conn.reject_handshake(now, AuthFailure::Malformed);
                        conn
                    }
                }
            }
        }
    }

    fn draw_ephemeral(&mut self) -> Zeroizing<[u8; 32]> {
        let mut e = Zeroizing::new([0u8; 32]);
        self.rng.inner().fill_bytes(e.as_mut());
        e
    }

    /// Checks a HELLO2 in the order of WIRE-v2.md §3: decryption under
    /// every accepted key, current first (`bad_mac`); the timestamp against
    /// `unix_ms` (`stale`); the ephemeral key against those seen
    /// (`replay`, recorded only after the decrypt, failing closed when
    /// full); this node's own id or ephemeral keys (`reflection`).
    pub fn verify_hello2(
        &mut self,
        now: Instant,
        unix_ms: u64,
        suite: Suite,
        message: &Message,
    ) -> Result<(KeyId, Responder, HelloPayload), AuthFailure> {
        let ephemeral = self.draw_ephemeral();
        let found = self.config.keys.accepted(now).find_map(|(id, key)| {
            Responder::read_hello(suite, &derive_psk(key), ephemeral.clone(), message)
                .ok()
                .map(|(r, p)| (id, r, p))
        });
        let Some((key, responder, hello)) = found else {
            self.counters.bad_mac += 1;
            return Err(AuthFailure::BadMac);
        };
        let window = u64::try_from(self.config.v2_window.as_millis()).unwrap_or(u64::MAX);
        if hello.unix_ms.abs_diff(unix_ms) > window {
            self.counters.stale += 1;
            return Err(AuthFailure::Stale);
        }
        let e = ephemeral_of(message);
        let expires = hello.unix_ms.saturating_add(window).saturating_add(1_000);
        match self.seen_ephemerals.insert(unix_ms, e, expires) {
            Ok(()) => self.counters.replay_recorded += 1,
            Err(ReplayError::Replayed) => {
                self.counters.replays += 1;
                return Err(AuthFailure::Replay);
            }
            Err(_) => {
                self.counters.replay_cache_full += 1;
                return Err(AuthFailure::Capacity);
            }
        }
        if ct_eq(hello.node_id.as_bytes(), self.config.node_id.as_bytes())
            || self.sent_ephemerals.contains(now, &e)
        {
            self.counters.reflections += 1;
            return Err(AuthFailure::Reflection);
        }
        Ok((key, responder, hello))
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
        let verified = self.check_hello(now, hello)?;
        self.counters.hellos_accepted += 1;
        Ok(verified)
    }

    /// [`verify_hello`](Self::verify_hello) without counting the HELLO as
    /// accepted: the version policy may still refuse it.
    fn check_hello(
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
            Ok(()) => self.counters.replay_recorded += 1,
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
    /// was. Call after every input while the connection is handshaking;
    /// `unix_ms` is this node's wall-clock time.
    pub fn drive(
        &mut self,
        now: Instant,
        unix_ms: u64,
        conn: &mut Connection,
    ) -> Option<HandshakeOutcome> {
        self.drive_with(now, unix_ms, conn, |_| false)
    }

    /// [`drive`](Self::drive), refusing a v1 HELLO whose node id
    /// `speaks_v2` says is known to speak v2 ([`AuthFailure::Downgrade`],
    /// judged after its MAC verified). A [`Node`](crate::node::Node) passes
    /// what its discovery learned.
    pub fn drive_with(
        &mut self,
        now: Instant,
        unix_ms: u64,
        conn: &mut Connection,
        speaks_v2: impl Fn(&Uuid) -> bool,
    ) -> Option<HandshakeOutcome> {
        let verdict = match conn.poll_handshake()? {
            HandshakeMessage::Hello(hello) => self.judge_hello(now, &hello, speaks_v2),
            HandshakeMessage::Accept(accept) => {
                self.verify_accept(now, &accept).map(|key| (key, None))
            }
            HandshakeMessage::Hello2 { suite, message } => {
                match self.verify_hello2(now, unix_ms, suite, &message) {
                    Ok((key, responder, hello)) => {
                        let mut session_id = [0u8; 8];
                        self.rng.inner().fill_bytes(&mut session_id);
                        let reply = AcceptPayload {
                            node_id: self.config.node_id,
                            session_id,
                        };
                        match responder.reply(&reply) {
                            Ok((accept, session)) => {
                                conn.accept_hello2(
                                    now,
                                    key,
                                    hello.node_id,
                                    &accept,
                                    &session,
                                    session_id,
                                )
                                .ok()?;
                                return Some(HandshakeOutcome::AwaitingConfirm);
                            }
                            Err(_) => Err(AuthFailure::Malformed),
                        }
                    }
                    Err(f) => Err(f),
                }
            }
            HandshakeMessage::Accept2 { .. } => match conn.complete_accept2(now) {
                Ok((key, peer, session)) => {
                    self.counters.accepts_verified += 1;
                    self.counters.v2_established += 1;
                    return Some(HandshakeOutcome::Accepted {
                        key,
                        peer_node: Some(peer),
                        session,
                    });
                }
                Err(f) => {
                    match f {
                        AuthFailure::UnexpectedPeer { .. } => self.counters.unexpected_peer += 1,
                        _ => self.counters.bad_mac += 1,
                    }
                    Err(f)
                }
            },
            HandshakeMessage::Confirmed => {
                let (key, peer, session) = conn.establish_confirmed(now).ok()?;
                self.counters.v2_established += 1;
                self.counters.hellos_accepted += 1;
                return Some(HandshakeOutcome::Accepted {
                    key,
                    peer_node: Some(peer),
                    session,
                });
            }
        };
        let outcome = match verdict {
            Ok((key, session)) => {
                let (peer_node, session) = match session {
                    Some((peer, token)) => {
                        conn.accept_hello(now, key, token).ok()?;
                        (Some(peer), SessionInfo::v1(token))
                    }
                    None => {
                        conn.confirm_accept(now, key).ok()?;
                        (None, conn.session()?)
                    }
                };
                HandshakeOutcome::Accepted {
                    key,
                    peer_node,
                    session,
                }
            }
            Err(f) => {
                conn.reject_handshake(now, f);
                HandshakeOutcome::Rejected(f)
            }
        };
        Some(outcome)
    }

    /// A v1 HELLO under the version policy: refused outright while v1 is
    /// disabled; otherwise verified, then refused as a downgrade when its
    /// node id speaks v2.
    fn judge_hello(
        &mut self,
        now: Instant,
        hello: &Hello,
        speaks_v2: impl Fn(&Uuid) -> bool,
    ) -> Result<(KeyId, Option<(Uuid, SessionToken)>), AuthFailure> {
        if !self.config.allow_v1 {
            self.counters.v1_disabled += 1;
            return Err(AuthFailure::V1Disabled);
        }
        let (key, token) = self.check_hello(now, hello)?;
        if speaks_v2(&hello.node_id) {
            self.counters.downgrades += 1;
            return Err(AuthFailure::Downgrade);
        }
        self.counters.hellos_accepted += 1;
        Ok((key, Some((hello.node_id, token))))
    }
}
