//! HELLO2 and ACCEPT2 (WIRE-v2.md §3): Noise `NNpsk0` through `snow`.
//!
//! `snow` draws ephemeral keys from its resolver's RNG. This crate never
//! asks the OS for randomness, so the resolver here hands `snow` exactly
//! the 32 bytes the caller drew from its seeded RNG, once; a second draw
//! fails. Test vectors pass their fixed ephemeral keys the same way.

use core::fmt;

use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::HandshakeState;
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

use super::Suite;

/// The Noise prologue: the 6 ASCII bytes `asoc/2`.
pub const PROLOGUE: &[u8] = b"asoc/2";
/// Length of Noise message 1 (HELLO2's body) and message 2 (ACCEPT2's).
pub const MESSAGE_LEN: usize = 72;
/// Length of the handshake hash.
pub const HASH_LEN: usize = 32;
const PAYLOAD_LEN: usize = 24;

/// A Noise message as it travels in HELLO2 or ACCEPT2.
pub type Message = [u8; MESSAGE_LEN];

/// Why a handshake message was not produced or not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// The message did not decrypt: another key, or altered bytes.
    #[error("the Noise message did not decrypt under this key")]
    Decrypt,
    /// The message decrypted but its payload is not the 24 bytes v2 sends.
    #[error("the Noise payload is {len} bytes; v2 sends 24")]
    PayloadLength {
        /// The payload length found.
        len: usize,
    },
    /// `snow` refused an operation (a bug, or a state used twice).
    #[error("the Noise handshake state refused the operation")]
    State,
}

/// What HELLO2 carries, encrypted under the PSK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // the 24 payload bytes of WIRE-v2.md §3
pub struct HelloPayload {
    /// The client's node id.
    pub node_id: Uuid,
    /// The client's wall-clock time, unix milliseconds.
    pub unix_ms: u64,
}

/// What ACCEPT2 carries, encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // the 24 payload bytes of WIRE-v2.md §3
pub struct AcceptPayload {
    /// The server's node id.
    pub node_id: Uuid,
    /// The session id, 8 random bytes.
    pub session_id: [u8; 8],
}

/// The outcome of a completed handshake on either side.
#[non_exhaustive]
pub struct Session {
    /// The suite both sides ran.
    pub suite: Suite,
    /// The Noise handshake hash `h`: the channel binding.
    pub handshake_hash: [u8; HASH_LEN],
    /// Key of client → server frames.
    pub client_to_server: Zeroizing<[u8; 32]>,
    /// Key of server → client frames.
    pub server_to_client: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("suite", &self.suite)
            .field("handshake_hash", &self.handshake_hash)
            .finish_non_exhaustive()
    }
}

/// Hands `snow` one pre-drawn ephemeral private key.
struct OneKey(Option<Zeroizing<[u8; 32]>>);

impl Random for OneKey {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        match (self.0.take(), dest.len()) {
            (Some(key), 32) => {
                dest.copy_from_slice(key.as_ref());
                Ok(())
            }
            _ => Err(snow::Error::Rng),
        }
    }
}

struct Resolver(Option<Zeroizing<[u8; 32]>>);

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(OneKey(self.0.clone())))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

fn builder_for(
    suite: Suite,
    psk: &[u8; 32],
    ephemeral: Zeroizing<[u8; 32]>,
    initiator: bool,
) -> Result<HandshakeState, NoiseError> {
    let params: NoiseParams = suite
        .protocol_name()
        .parse()
        .map_err(|_| NoiseError::State)?;
    let builder = snow::Builder::with_resolver(params, Box::new(Resolver(Some(ephemeral))))
        .prologue(PROLOGUE)
        .and_then(|b| b.psk(0, psk))
        .map_err(|_| NoiseError::State)?;
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(|_| NoiseError::State)
}

fn finish(state: &mut HandshakeState, suite: Suite) -> Result<Session, NoiseError> {
    let handshake_hash: [u8; HASH_LEN] = state
        .get_handshake_hash()
        .try_into()
        .map_err(|_| NoiseError::State)?;
    if !state.is_handshake_finished() {
        return Err(NoiseError::State);
    }
    let (mut a, mut b) = state.dangerously_get_raw_split();
    let session = Session {
        suite,
        handshake_hash,
        client_to_server: Zeroizing::new(a),
        server_to_client: Zeroizing::new(b),
    };
    a.zeroize();
    b.zeroize();
    Ok(session)
}

/// The client's half-done handshake: HELLO2 sent, ACCEPT2 awaited.
pub struct Initiator {
    state: HandshakeState,
    suite: Suite,
    ephemeral_public: [u8; 32],
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Writes Noise message 1 for `payload` under `psk`, with the ephemeral
    /// private key `ephemeral` (32 bytes from the caller's CSPRNG).
    pub fn start(
        suite: Suite,
        psk: &[u8; 32],
        ephemeral: Zeroizing<[u8; 32]>,
        payload: &HelloPayload,
    ) -> Result<(Self, Message), NoiseError> {
        let mut state = builder_for(suite, psk, ephemeral, true)?;
        let mut plain = [0u8; PAYLOAD_LEN];
        let (id, ts) = plain.split_at_mut(16);
        id.copy_from_slice(payload.node_id.as_bytes());
        ts.copy_from_slice(&payload.unix_ms.to_be_bytes());
        let mut message = [0u8; MESSAGE_LEN];
        let n = state
            .write_message(&plain, &mut message)
            .map_err(|_| NoiseError::State)?;
        if n != MESSAGE_LEN {
            return Err(NoiseError::State);
        }
        let mut ephemeral_public = [0u8; 32];
        ephemeral_public.copy_from_slice(message.get(..32).ok_or(NoiseError::State)?);
        Ok((
            Self {
                state,
                suite,
                ephemeral_public,
            },
            message,
        ))
    }

    /// The ephemeral public key HELLO2 carried (for the reflection guard).
    #[must_use]
    pub fn ephemeral_public(&self) -> [u8; 32] {
        self.ephemeral_public
    }

    /// The suite offered.
    #[must_use]
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Reads Noise message 2 (ACCEPT2's body) and splits the transport keys.
    pub fn finish(mut self, message: &Message) -> Result<(AcceptPayload, Session), NoiseError> {
        let mut plain = [0u8; MESSAGE_LEN];
        let n = self
            .state
            .read_message(message, &mut plain)
            .map_err(|_| NoiseError::Decrypt)?;
        let payload = plain.get(..n).ok_or(NoiseError::State)?;
        let Ok(&[id @ .., s0, s1, s2, s3, s4, s5, s6, s7]) =
            <&[u8; PAYLOAD_LEN]>::try_from(payload)
        else {
            return Err(NoiseError::PayloadLength { len: n });
        };
        let node: [u8; 16] = id;
        let accepted = AcceptPayload {
            node_id: Uuid::from_bytes(node),
            session_id: [s0, s1, s2, s3, s4, s5, s6, s7],
        };
        Ok((accepted, finish(&mut self.state, self.suite)?))
    }
}

/// The server's side after HELLO2 decrypted under one key.
pub struct Responder {
    state: HandshakeState,
    suite: Suite,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Tries Noise message 1 under `psk`. No Diffie-Hellman runs before the
    /// payload decrypts (`psk, e` mixes only the PSK and the ephemeral), so
    /// a wrong key costs one short AEAD. `ephemeral` is the private key the
    /// reply will use.
    pub fn read_hello(
        suite: Suite,
        psk: &[u8; 32],
        ephemeral: Zeroizing<[u8; 32]>,
        message: &Message,
    ) -> Result<(Self, HelloPayload), NoiseError> {
        let mut state = builder_for(suite, psk, ephemeral, false)?;
        let mut plain = [0u8; MESSAGE_LEN];
        let n = state
            .read_message(message, &mut plain)
            .map_err(|_| NoiseError::Decrypt)?;
        let payload = plain.get(..n).ok_or(NoiseError::State)?;
        let Ok(&[id @ .., t0, t1, t2, t3, t4, t5, t6, t7]) =
            <&[u8; PAYLOAD_LEN]>::try_from(payload)
        else {
            return Err(NoiseError::PayloadLength { len: n });
        };
        let node: [u8; 16] = id;
        let hello = HelloPayload {
            node_id: Uuid::from_bytes(node),
            unix_ms: u64::from_be_bytes([t0, t1, t2, t3, t4, t5, t6, t7]),
        };
        Ok((Self { state, suite }, hello))
    }

    /// Writes Noise message 2 (ACCEPT2's body) and splits the transport keys.
    pub fn reply(mut self, payload: &AcceptPayload) -> Result<(Message, Session), NoiseError> {
        let mut plain = [0u8; PAYLOAD_LEN];
        let (id, sid) = plain.split_at_mut(16);
        id.copy_from_slice(payload.node_id.as_bytes());
        sid.copy_from_slice(&payload.session_id);
        let mut message = [0u8; MESSAGE_LEN];
        let n = self
            .state
            .write_message(&plain, &mut message)
            .map_err(|_| NoiseError::State)?;
        if n != MESSAGE_LEN {
            return Err(NoiseError::State);
        }
        Ok((message, finish(&mut self.state, self.suite)?))
    }
}

/// The ephemeral public key at the start of a Noise message 1.
#[must_use]
pub fn ephemeral_of(message: &Message) -> [u8; 32] {
    let mut e = [0u8; 32];
    if let Some(head) = message.get(..32) {
        e.copy_from_slice(head);
    }
    e
}
