//! The suite's own ASoc v2 peer (WIRE-v2.md): the NNpsk0 handshake through
//! `snow`, sealed transport frames through `ring`, and 52-byte discovery
//! announcements through `hmac`/`sha2`/`hkdf`.
//!
//! It shares no v2 code with asoc-proto on purpose: a misreading of the
//! spec in one must show up as a failing case against the other, not hide
//! in a helper both use. Randomness is an argument (the ephemeral private
//! key is drawn by the caller and handed to snow through a resolver whose
//! RNG returns exactly those bytes), so the vectors of `asoc-v2.json`
//! reproduce byte for byte.

use std::sync::Mutex;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use uuid::Uuid;

pub mod link;

/// The Noise prologue (WIRE-v2.md §1).
pub const PROLOGUE: &[u8] = b"asoc/2";
/// Version byte of every v2 frame.
pub const VERSION: u8 = 2;
/// Length of a Noise handshake message (both HELLO2 and ACCEPT2).
pub const HANDSHAKE_LEN: usize = 72;
/// Length of a HELLO2 or ACCEPT2 frame on the wire.
pub const HANDSHAKE_FRAME_LEN: usize = 14 + HANDSHAKE_LEN;
/// AEAD tag length of transport frames.
pub const TAG_LEN: usize = 16;
/// Length of a v2 discovery announcement.
pub const ANNOUNCEMENT_LEN: usize = 52;

/// The two cipher suites, numbered as in the `seq` field of the handshake
/// frames (WIRE-v2.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Suite {
    /// 1: `Noise_NNpsk0_25519_AESGCM_SHA256` (the default).
    AesGcm,
    /// 2: `Noise_NNpsk0_25519_ChaChaPoly_SHA256`.
    ChaChaPoly,
}

impl Suite {
    /// Both suites, default first.
    pub const ALL: [Self; 2] = [Self::AesGcm, Self::ChaChaPoly];

    /// The number in the handshake frames' `seq` field.
    #[must_use]
    pub const fn number(self) -> u32 {
        match self {
            Self::AesGcm => 1,
            Self::ChaChaPoly => 2,
        }
    }

    /// The suite numbered `n`, if any.
    #[must_use]
    pub const fn from_number(n: u32) -> Option<Self> {
        match n {
            1 => Some(Self::AesGcm),
            2 => Some(Self::ChaChaPoly),
            _ => None,
        }
    }

    /// The Noise protocol name.
    #[must_use]
    pub const fn protocol_name(self) -> &'static str {
        match self {
            Self::AesGcm => "Noise_NNpsk0_25519_AESGCM_SHA256",
            Self::ChaChaPoly => "Noise_NNpsk0_25519_ChaChaPoly_SHA256",
        }
    }

    /// The suite's transport nonce for frame counter `n`: four zero bytes,
    /// then `n` big-endian (AES-GCM) or little-endian (ChaChaPoly).
    #[must_use]
    pub fn nonce(self, n: u64) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[4..].copy_from_slice(&match self {
            Self::AesGcm => n.to_be_bytes(),
            Self::ChaChaPoly => n.to_le_bytes(),
        });
        b
    }

    fn aead(self) -> &'static aead::Algorithm {
        match self {
            Self::AesGcm => &aead::AES_256_GCM,
            Self::ChaChaPoly => &aead::CHACHA20_POLY1305,
        }
    }
}

/// Why the v2 peer refused something.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A handshake frame's 14-byte header is not the one the rule names.
    #[error("handshake header {got} is not {want}")]
    Header {
        /// The expected header, hex.
        want: String,
        /// The header received, hex.
        got: String,
    },
    /// A handshake frame is not 86 bytes.
    #[error("handshake frame of {0} bytes (86 expected)")]
    Length(usize),
    /// Noise `ReadMessage` failed: wrong key, altered or foreign message.
    #[error("handshake message does not decrypt (bad_mac): {0}")]
    BadMac(String),
    /// A handshake message decrypted to a payload of the wrong size.
    #[error("handshake payload of {0} bytes (24 expected)")]
    Payload(usize),
    /// A transport frame's tag does not verify under the expected nonce.
    #[error("transport frame tag does not verify (bad_frame_mac)")]
    BadFrameMac,
    /// A transport frame body is shorter than its tag.
    #[error("transport frame body of {0} bytes is shorter than the tag")]
    Short(usize),
    /// snow refused to set a handshake up (a broken build, not input).
    #[error("noise set-up: {0}")]
    Setup(String),
}

/// HKDF-SHA256 of the API key with an absent salt and `info`, 32 bytes.
#[must_use]
pub fn derive(api_key: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit.
    if Hkdf::<Sha256>::new(None, api_key)
        .expand(info, &mut out)
        .is_err()
    {
        out = [0; 32];
    }
    out
}

/// The Noise PSK of an API key (`info = "asoc/2 psk"`).
#[must_use]
pub fn psk(api_key: &[u8]) -> [u8; 32] {
    derive(api_key, b"asoc/2 psk")
}

/// The discovery MAC key of an API key (`info = "asoc/2 discovery"`).
#[must_use]
pub fn discovery_key(api_key: &[u8]) -> [u8; 32] {
    derive(api_key, b"asoc/2 discovery")
}

/// A v2 frame header.
#[must_use]
pub fn header(ty: u8, stream: u32, seq: u32, len: u32) -> [u8; 14] {
    crate::wire::header(VERSION, ty, stream, seq, len)
}

/// The exact header of a HELLO2 (`ty` 4) or ACCEPT2 (`ty` 5) of `suite`.
#[must_use]
pub fn handshake_header(ty: u8, suite: Suite) -> [u8; 14] {
    header(ty, 0, suite.number(), HANDSHAKE_LEN as u32)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// snow's RNG for one handshake: it hands out the 32 bytes the caller drew
/// (the ephemeral private key) once, and refuses any further request, so
/// that no byte of randomness comes from anywhere else.
struct Feed(Option<[u8; 32]>);

impl Random for Feed {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        match self.0.take() {
            Some(b) if dest.len() == 32 => {
                dest.copy_from_slice(&b);
                Ok(())
            }
            _ => Err(snow::Error::Rng),
        }
    }
}

/// snow's default primitives with [`Feed`] as the RNG.
struct FeedResolver {
    ephemeral: Mutex<Option<[u8; 32]>>,
}

impl CryptoResolver for FeedResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        let e = self.ephemeral.lock().ok()?.take();
        Some(Box::new(Feed(e)))
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

fn noise(
    psk: &[u8; 32],
    suite: Suite,
    ephemeral: [u8; 32],
    initiator: bool,
) -> Result<snow::HandshakeState, Error> {
    let setup = |e: snow::Error| Error::Setup(e.to_string());
    let params: NoiseParams = suite.protocol_name().parse().map_err(setup)?;
    let resolver = FeedResolver {
        ephemeral: Mutex::new(Some(ephemeral)),
    };
    let b = snow::Builder::with_resolver(params, Box::new(resolver))
        .prologue(PROLOGUE)
        .map_err(setup)?
        .psk(0, psk)
        .map_err(setup)?;
    if initiator {
        b.build_initiator().map_err(setup)
    } else {
        b.build_responder().map_err(setup)
    }
}

/// The client's handshake payload: node id and unix milliseconds.
#[must_use]
pub fn hello_payload(node: &Uuid, unix_ms: u64) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[..16].copy_from_slice(node.as_bytes());
    p[16..].copy_from_slice(&unix_ms.to_be_bytes());
    p
}

/// The client side of one handshake, after its HELLO2 was written.
pub struct Initiator {
    hs: snow::HandshakeState,
    suite: Suite,
    hello: Vec<u8>,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Writes a HELLO2 of `suite` under the Noise PSK `psk` with the
    /// ephemeral private key `ephemeral` and an arbitrary payload.
    pub fn with_payload(
        psk: &[u8; 32],
        suite: Suite,
        ephemeral: [u8; 32],
        payload: &[u8],
    ) -> Result<Self, Error> {
        let mut hs = noise(psk, suite, ephemeral, true)?;
        let mut msg = vec![0u8; 1024];
        let n = hs
            .write_message(payload, &mut msg)
            .map_err(|e| Error::Setup(e.to_string()))?;
        msg.truncate(n);
        let mut hello = header(
            crate::wire::ty::HELLO,
            0,
            suite.number(),
            u32::try_from(n).unwrap_or(u32::MAX),
        )
        .to_vec();
        hello.extend_from_slice(&msg);
        Ok(Self { hs, suite, hello })
    }

    /// Writes a valid HELLO2.
    pub fn new(
        api_key: &[u8],
        suite: Suite,
        ephemeral: [u8; 32],
        node: &Uuid,
        unix_ms: u64,
    ) -> Result<Self, Error> {
        Self::with_payload(
            &psk(api_key),
            suite,
            ephemeral,
            &hello_payload(node, unix_ms),
        )
    }

    /// The HELLO2 frame (header and Noise message 1).
    #[must_use]
    pub fn hello(&self) -> &[u8] {
        &self.hello
    }

    /// The client ephemeral public key, bytes 14..46 of the HELLO2.
    #[must_use]
    pub fn ephemeral_public(&self) -> [u8; 32] {
        self.hello[14..46].try_into().unwrap_or([0; 32])
    }

    /// Judges an ACCEPT2 frame (header and body) as WIRE-v2.md §3.4 says:
    /// the exact header for this suite, then `ReadMessage`.
    pub fn accept(mut self, frame: &[u8]) -> Result<Accepted, Error> {
        let want = handshake_header(crate::wire::ty::ACCEPT, self.suite);
        if frame.len() < 14 || frame[..14] != want {
            return Err(Error::Header {
                want: hex(&want),
                got: hex(&frame[..frame.len().min(14)]),
            });
        }
        if frame.len() != HANDSHAKE_FRAME_LEN {
            return Err(Error::Length(frame.len()));
        }
        let mut payload = [0u8; 64];
        let n = self
            .hs
            .read_message(&frame[14..], &mut payload)
            .map_err(|e| Error::BadMac(e.to_string()))?;
        if n != 24 {
            return Err(Error::Payload(n));
        }
        let server_node = Uuid::from_bytes(payload[..16].try_into().unwrap_or([0; 16]));
        let session_id = payload[16..24].try_into().unwrap_or([0; 8]);
        let session = Session::split(&mut self.hs, self.suite, true);
        Ok(Accepted {
            server_node,
            session_id,
            session,
        })
    }
}

/// A verified ACCEPT2: what it said and the session it opened.
#[derive(Debug)]
#[non_exhaustive]
pub struct Accepted {
    /// The server's node id from payload 2.
    pub server_node: Uuid,
    /// The session id from payload 2.
    pub session_id: [u8; 8],
    /// The transport keys and handshake hash.
    pub session: Session,
}

/// A HELLO2 the responder decrypted, not yet answered.
pub struct Hello {
    hs: snow::HandshakeState,
    suite: Suite,
    /// The client's node id.
    pub node: Uuid,
    /// The client's wall-clock time, unix milliseconds.
    pub unix_ms: u64,
    /// The client's ephemeral public key.
    pub ephemeral: [u8; 32],
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("suite", &self.suite)
            .field("node", &self.node)
            .field("unix_ms", &self.unix_ms)
            .finish_non_exhaustive()
    }
}

impl Hello {
    /// Reads a HELLO2 frame as a server accepting `suites` would: the exact
    /// header, 72 bytes, then `ReadMessage` under the key. `ephemeral` is
    /// the server's private key for the ACCEPT2.
    pub fn read(
        api_key: &[u8],
        suites: &[Suite],
        ephemeral: [u8; 32],
        frame: &[u8],
    ) -> Result<Self, Error> {
        let suite = frame
            .get(6..10)
            .and_then(|s| Suite::from_number(u32::from_be_bytes(s.try_into().unwrap_or([0; 4]))))
            .filter(|s| suites.contains(s));
        let want = handshake_header(crate::wire::ty::HELLO, suite.unwrap_or(suites[0]));
        let Some(suite) = suite.filter(|_| frame.len() >= 14 && frame[..14] == want) else {
            return Err(Error::Header {
                want: hex(&want),
                got: hex(&frame[..frame.len().min(14)]),
            });
        };
        if frame.len() != HANDSHAKE_FRAME_LEN {
            return Err(Error::Length(frame.len()));
        }
        let mut hs = noise(&psk(api_key), suite, ephemeral, false)?;
        let mut payload = [0u8; 64];
        let n = hs
            .read_message(&frame[14..], &mut payload)
            .map_err(|e| Error::BadMac(e.to_string()))?;
        if n != 24 {
            return Err(Error::Payload(n));
        }
        Ok(Self {
            hs,
            suite,
            node: Uuid::from_bytes(payload[..16].try_into().unwrap_or([0; 16])),
            unix_ms: u64::from_be_bytes(payload[16..24].try_into().unwrap_or([0; 8])),
            ephemeral: frame[14..46].try_into().unwrap_or([0; 32]),
        })
    }

    /// The suite the HELLO2 named.
    #[must_use]
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Writes the ACCEPT2 frame for `server_node` and `session_id`; returns
    /// it with the server's session.
    pub fn accept(
        mut self,
        server_node: &Uuid,
        session_id: [u8; 8],
    ) -> Result<(Vec<u8>, Session), Error> {
        let mut payload = [0u8; 24];
        payload[..16].copy_from_slice(server_node.as_bytes());
        payload[16..].copy_from_slice(&session_id);
        let mut msg = [0u8; 128];
        let n = self
            .hs
            .write_message(&payload, &mut msg)
            .map_err(|e| Error::Setup(e.to_string()))?;
        let mut frame = handshake_header(crate::wire::ty::ACCEPT, self.suite).to_vec();
        frame.extend_from_slice(&msg[..n]);
        let session = Session::split(&mut self.hs, self.suite, false);
        Ok((frame, session))
    }
}

/// The keys of one established v2 connection, from this side's view.
#[derive(Debug)]
#[non_exhaustive]
pub struct Session {
    /// Seals what this side sends.
    pub tx: Sealer,
    /// Opens what this side receives.
    pub rx: Opener,
    /// The handshake hash `h`.
    pub hash: [u8; 32],
    /// The raw split keys: client → server, server → client.
    pub keys: ([u8; 32], [u8; 32]),
}

impl Session {
    fn split(hs: &mut snow::HandshakeState, suite: Suite, initiator: bool) -> Self {
        let hash = hs.get_handshake_hash().try_into().unwrap_or([0; 32]);
        let (c2s, s2c) = hs.dangerously_get_raw_split();
        let (tx, rx) = if initiator { (c2s, s2c) } else { (s2c, c2s) };
        Self {
            tx: Sealer(Direction::new(suite, &tx)),
            rx: Opener(Direction::new(suite, &rx)),
            hash,
            keys: (c2s, s2c),
        }
    }

    /// A session from raw keys (`tx` seals, `rx` opens), both counters 0.
    #[must_use]
    pub fn from_keys(suite: Suite, tx: &[u8; 32], rx: &[u8; 32]) -> Self {
        Self {
            tx: Sealer(Direction::new(suite, tx)),
            rx: Opener(Direction::new(suite, rx)),
            hash: [0; 32],
            keys: (*tx, *rx),
        }
    }
}

struct Direction {
    key: LessSafeKey,
    suite: Suite,
    n: u64,
}

impl std::fmt::Debug for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direction")
            .field("suite", &self.suite)
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl Direction {
    fn new(suite: Suite, key: &[u8; 32]) -> Self {
        // Both AEADs take 32-byte keys; `UnboundKey::new` fails only on a
        // wrong length.
        let unbound = UnboundKey::new(suite.aead(), key)
            .unwrap_or_else(|_| unreachable!("32-byte key for a 256-bit AEAD"));
        Self {
            key: LessSafeKey::new(unbound),
            suite,
            n: 0,
        }
    }

    fn nonce(&self, n: u64) -> Nonce {
        Nonce::assume_unique_for_key(self.suite.nonce(n))
    }
}

/// Seals this side's transport frames, counting nonces from 0.
#[derive(Debug)]
pub struct Sealer(Direction);

impl Sealer {
    /// The nonce counter of the next frame.
    #[must_use]
    pub fn next_nonce(&self) -> u64 {
        self.0.n
    }

    /// Seals `plaintext` under `header` exactly as given (its length field
    /// is not touched: a case may lie in it) with the next nonce.
    #[must_use]
    pub fn seal_raw(&mut self, header: [u8; 14], plaintext: &[u8]) -> Vec<u8> {
        let n = self.0.n;
        self.0.n += 1;
        self.seal_at(n, header, plaintext)
    }

    /// Seals with nonce `n`, leaving the counter alone.
    #[must_use]
    pub fn seal_at(&self, n: u64, header: [u8; 14], plaintext: &[u8]) -> Vec<u8> {
        let mut body = plaintext.to_vec();
        let tag = self
            .0
            .key
            .seal_in_place_separate_tag(self.0.nonce(n), Aad::from(header), &mut body)
            .map_or([0u8; 16], |t| t.as_ref().try_into().unwrap_or([0; 16]));
        let mut f = header.to_vec();
        f.extend_from_slice(&body);
        f.extend_from_slice(&tag);
        f
    }

    /// Seals a frame of type `ty` with the true length.
    #[must_use]
    pub fn seal(&mut self, ty: u8, stream: u32, seq: u32, plaintext: &[u8]) -> Vec<u8> {
        let len = u32::try_from(plaintext.len() + TAG_LEN).unwrap_or(u32::MAX);
        self.seal_raw(header(ty, stream, seq, len), plaintext)
    }

    /// A whole sealed stream: DATA seq 0.. then END with seq = count.
    #[must_use]
    pub fn stream(&mut self, stream: u32, chunks: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            v.extend(self.seal(crate::wire::ty::DATA, stream, i as u32, c));
        }
        v.extend(self.seal(crate::wire::ty::END, stream, chunks.len() as u32, &[]));
        v
    }

    /// The CONFIRM frame (CONTROL, stream 0, seq 0, empty plaintext).
    #[must_use]
    pub fn confirm(&mut self) -> Vec<u8> {
        self.seal(crate::wire::ty::CONTROL, 0, 0, &[])
    }
}

/// Opens the peer's transport frames, counting nonces from 0.
#[derive(Debug)]
pub struct Opener(Direction);

impl Opener {
    /// The nonce counter the next frame must have been sealed with.
    #[must_use]
    pub fn next_nonce(&self) -> u64 {
        self.0.n
    }

    /// Moves the counter past one frame without opening it: what a flawed
    /// receiver does, for the suite's self-check fakes.
    pub fn skip(&mut self) {
        self.0.n += 1;
    }

    /// Opens a frame body (ciphertext and tag) under its header with the
    /// next nonce; the counter moves only when the tag verifies.
    pub fn open(&mut self, header: &[u8; 14], body: &[u8]) -> Result<Vec<u8>, Error> {
        if body.len() < TAG_LEN {
            return Err(Error::Short(body.len()));
        }
        let mut buf = body.to_vec();
        let n = self
            .0
            .key
            .open_in_place(self.0.nonce(self.0.n), Aad::from(*header), &mut buf)
            .map_err(|_| Error::BadFrameMac)?
            .len();
        buf.truncate(n);
        self.0.n += 1;
        Ok(buf)
    }
}

/// `SHA-256(community)[0..8]`.
#[must_use]
pub fn community_hash(community: &str) -> [u8; 8] {
    let d = Sha256::digest(community.as_bytes());
    d[..8].try_into().unwrap_or([0; 8])
}

/// The fields of a v2 discovery announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Announcement {
    /// Community hash.
    pub hash: [u8; 8],
    /// Node id.
    pub node: Uuid,
    /// TCP port.
    pub port: u16,
    /// Unix milliseconds.
    pub unix_ms: u64,
    /// Flags (bit 0: also accepts v1).
    pub flags: u8,
}

impl Announcement {
    /// An announcement of `node` at `port` for `community` at `unix_ms`.
    #[must_use]
    pub fn new(community: &str, node: Uuid, port: u16, unix_ms: u64) -> Self {
        Self {
            hash: community_hash(community),
            node,
            port,
            unix_ms,
            flags: 0,
        }
    }

    /// The 36 bytes the MAC covers.
    #[must_use]
    pub fn signed(&self) -> [u8; 36] {
        let mut b = [0u8; 36];
        b[0] = VERSION;
        b[1..9].copy_from_slice(&self.hash);
        b[9..25].copy_from_slice(self.node.as_bytes());
        b[25..27].copy_from_slice(&self.port.to_be_bytes());
        b[27..35].copy_from_slice(&self.unix_ms.to_be_bytes());
        b[35] = self.flags;
        b
    }

    /// The 52-byte datagram, MAC keyed with `discovery_key`.
    #[must_use]
    pub fn encode(&self, discovery_key: &[u8; 32]) -> [u8; 52] {
        let signed = self.signed();
        let mut d = [0u8; 52];
        d[..36].copy_from_slice(&signed);
        d[36..].copy_from_slice(&announcement_mac(discovery_key, &signed));
        d
    }

    /// Parses a datagram and checks its MAC under `discovery_key`; `None`
    /// unless it is 52 bytes, starts with 2 and verifies.
    #[must_use]
    pub fn decode(discovery_key: &[u8; 32], d: &[u8]) -> Option<Self> {
        if d.len() != ANNOUNCEMENT_LEN || d[0] != VERSION {
            return None;
        }
        let mut m = Hmac::<Sha256>::new_from_slice(discovery_key).ok()?;
        m.update(&d[..36]);
        m.verify_truncated_left(&d[36..]).ok()?;
        Some(Self {
            hash: d[1..9].try_into().ok()?,
            node: Uuid::from_bytes(d[9..25].try_into().ok()?),
            port: u16::from_be_bytes([d[25], d[26]]),
            unix_ms: u64::from_be_bytes(d[27..35].try_into().ok()?),
            flags: d[35],
        })
    }
}

/// `HMAC-SHA256(key, bytes)[0..16]`.
#[must_use]
pub fn announcement_mac(key: &[u8], bytes: &[u8]) -> [u8; 16] {
    let mut m = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 16],
    };
    m.update(bytes);
    m.finalize().into_bytes()[..16]
        .try_into()
        .unwrap_or([0; 16])
}

/// Current unix time in milliseconds.
#[must_use]
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
