//! # asoc-proto
//!
//! The ASoc protocol, v2 (WIRE-v2.md: Noise `NNpsk0` and AEAD on every
//! frame, the default) and v1 (RFC-0001, behind an explicit switch), and
//! its security model (RFC-0002), as sans-IO state machines: bytes and time go in, frames, events and timer
//! deadlines come out. Nothing in this crate reads a clock, touches a socket,
//! asks the OS for randomness, spawns, sleeps or locks, so every behaviour is
//! reproducible with a virtual clock and a fixed seed, and every runtime
//! adapter (`asoc-tokio`, `asoc-smol`, `asoc-mio`) behaves the same.
//!
//! ## Pieces
//!
//! | module | owns |
//! | --- | --- |
//! | [`wire`] | the 14-byte header, HELLO/ACCEPT codecs, the v1 (50-byte) and v2 (52-byte) announcement codecs, the zero-copy incremental decoder |
//! | [`auth`] | API keys, the key ring for rotation, truncated HMACs, community hash, session tokens, PBKDF2 cluster keys |
//! | [`replay`] | bounded replay caches that fail closed |
//! | [`connection`] | one TCP connection: handshake, streams, timers, backpressure |
//! | [`handshake`] | the [`Authenticator`] that judges HELLO and ACCEPT |
//! | [`discovery`] | UDP announcements, v2 by default and v1 with `allow_v1`: one round with the same bytes to every destination, the validation order of WIRE-v2.md §5 and WIRE.md §7, per-node timestamps, rate limits, the peer table with expiry, sticky addresses and each peer's version |
//! | [`policy`] | per-IP admission shared by a node's connections: caps, lockout, attempt rate |
//! | [`dial`] | static and discovered peers turned into dial decisions on the reconnect schedule |
//! | [`node`] | one node: the pieces above together, with events and counters for every decision |
//! | [`rng`] | the seeded ChaCha20 CSPRNG |
//! | [`rotation`] | key rotation without a restart: the KEY_ROTATION control message, flooded by epoch over encrypted connections |
//! | [`v2`] | v2's suites, HKDF keys, the Noise handshake (`snow`) and frame sealing (`ring`) |
//!
//! ## The drive loop
//!
//! A [`Connection`] never blocks and never holds a
//! key. The program that owns the transport feeds it input, gives it
//! handshake verdicts through an [`Authenticator`],
//! writes what it wants written, takes its events and arms its timer. This
//! complete example runs a client and a server in memory, with a byte vector
//! standing in for each direction of a TCP connection:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use asoc_proto::auth::{ApiKey, KeyRing};
//! use asoc_proto::connection::{Connection, ConnectionConfig, Event, StreamId};
//! use asoc_proto::handshake::{Authenticator, AuthenticatorConfig, ClientOptions};
//! use bytes::{Bytes, BytesMut};
//! use uuid::Uuid;
//!
//! let key = ApiKey::new("a3f5b8c9e2d4f7a1b6c8e9f0d3a5b7c9").unwrap();
//! let auth = |id: u8, seed: u8| {
//!     let config = AuthenticatorConfig::new(Uuid::from_bytes([id; 16]), KeyRing::new(key.clone()));
//!     // Adapters seed from the OS; a fixed seed makes this example reproducible.
//!     Authenticator::new(config, [seed; 32])
//! };
//! let (mut client_auth, mut server_auth) = (auth(1, 1), auth(2, 2));
//!
//! let mut now = Instant::now(); // the adapter's clock; the crate only compares instants
//! let unix_ms = 1_767_000_000_000; // the adapter's wall clock, which HELLO2 carries
//! // v2 by default: Noise NNpsk0, every frame sealed.
//! let mut client = client_auth.client(now, unix_ms, ConnectionConfig::default(), ClientOptions::v2());
//! let mut server = Connection::server(ConnectionConfig::default(), now);
//!
//! // One step of the loop for one side: give a pending handshake message its
//! // verdict, then write everything it has to the peer's receive buffer.
//! fn step(conn: &mut Connection, auth: &mut Authenticator, now: Instant, peer_rx: &mut BytesMut) {
//!     auth.drive(now, 1_767_000_000_000, conn);
//!     let mut wire = Vec::new();
//!     conn.write_to(now, &mut wire).unwrap(); // vectored; payloads are not copied
//!     peer_rx.extend_from_slice(&wire);
//! }
//! let (mut client_rx, mut server_rx) = (BytesMut::new(), BytesMut::new());
//! let mut received = Vec::new();
//! let mut stream = None;
//! for _ in 0..8 {
//!     step(&mut client, &mut client_auth, now, &mut server_rx);
//!     server.handle_input(now, &mut server_rx);
//!     step(&mut server, &mut server_auth, now, &mut client_rx);
//!     client.handle_input(now, &mut client_rx);
//!     step(&mut client, &mut client_auth, now, &mut server_rx);
//!
//!     while let Some(event) = client.poll_event() {
//!         if let Event::Established { .. } = event {
//!             // Send a 3-chunk tensor once the handshake is done.
//!             let s = client.open_stream().unwrap();
//!             for chunk in [&b"tensor "[..], b"bytes ", b"here"] {
//!                 client.send(now, s, Bytes::from_static(chunk)).unwrap();
//!             }
//!             client.finish(now, s).unwrap();
//!         }
//!     }
//!     while let Some(event) = server.poll_event() {
//!         match event {
//!             Event::Data { payload, .. } => received.extend_from_slice(&payload),
//!             Event::StreamEnd { stream: s, frames, .. } => stream = Some((s, frames)),
//!             _ => {}
//!         }
//!     }
//!     // Timers: sleep until the earliest deadline, then report it.
//!     if let Some(deadline) = [client.poll_timeout(), server.poll_timeout()].into_iter().flatten().min() {
//!         assert!(deadline > now);
//!     }
//!     now += Duration::from_millis(1);
//! }
//! assert_eq!(received, b"tensor bytes here");
//! // Client streams are odd; END's seq counts 3 DATA frames.
//! assert_eq!(stream, Some((StreamId::new(1), 3)));
//! ```
//!
//! The rules: `handle_*` methods are inputs and never fail (protocol failures
//! become a [`Closed`](connection::Event::Closed) event with a precise
//! reason); `poll_*` methods are outputs, drained after every input; commands
//! (`open_stream`, `send`, `finish`, `close`) return synchronous errors for
//! misuse only.
//!
//! ## Security posture
//!
//! Cheap checks come first and nothing is allocated before authentication:
//! the first frame's header must be byte-for-byte the HELLO (or ACCEPT)
//! header and fails on its first wrong byte; payload limits are enforced from
//! the header before a payload byte is buffered; MACs and hashes are compared
//! in constant time; replay caches record a pair only after its MAC verified
//! and fail closed when full; on every authentication failure the server
//! closes without sending a byte.
#![forbid(unsafe_code)]
// Public types that may grow are `#[non_exhaustive]`; the rest say why not.
#![warn(clippy::exhaustive_structs, clippy::exhaustive_enums)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod auth;
pub mod connection;
pub mod dial;
pub mod discovery;
pub mod handshake;
pub mod node;
pub mod persist;
pub mod policy;
pub mod replay;
pub mod rng;
pub mod rotation;
mod time;
pub mod v2;
pub mod wire;

pub use auth::{ApiKey, AuthFailure, KeyError, KeyId, KeyRing};
pub use connection::{
    CloseReason, ConfigError, Connection, ConnectionConfig, ConnectionConfigBuilder,
    ConnectionStats, Event, HandshakeMessage, HandshakeStateError, ProtocolError, Role, SendError,
    StreamId,
};
pub use dial::{DialConfig, DialTarget};
pub use discovery::DiscoveryConfig;
pub use handshake::{Authenticator, AuthenticatorConfig, AuthenticatorConfigBuilder};
pub use node::{ConnId, Node, NodeConfig, NodeConfigBuilder, NodeEvent, PeerRef};
pub use policy::PolicyConfig;
pub use rng::Seed;
pub use wire::{Frame, FrameDecoder, FrameError, FrameType, Header};
