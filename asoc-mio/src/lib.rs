//! # asoc-mio
//!
//! ASoc on [mio](https://docs.rs/mio): the sans-IO protocol of
//! [`asoc_proto`] driven by readiness events. Two ways to use it:
//!
//! - **A ready-made loop**: [`MioConnection`] runs a `mio::Poll` on its own
//!   thread and gives a blocking, thread-safe handle: [`connect`](MioConnection::connect)
//!   or [`accept`](MioConnection::accept), [`open_stream`](MioConnection::open_stream),
//!   [`send`](MioConnection::send) (blocks while the send queue is above its
//!   high-water mark), [`finish`](MioConnection::finish),
//!   [`recv_stream`](MioConnection::recv_stream) then
//!   [`RecvStream::chunk`], [`close`](MioConnection::close),
//!   [`closed`](MioConnection::closed). Received bytes the application has
//!   not taken are bounded ([`MioConfig::receive_buffer`]): the loop stops
//!   reading above the bound and resumes as chunks are taken.
//! - **The pieces** for a program that owns its `mio::Poll`: [`Driver`]
//!   wraps one [`Connection`](asoc_proto::connection::Connection) and any
//!   non-blocking source (TCP, Unix sockets, ...) and is fed readiness
//!   ([`on_readable`](Driver::on_readable), [`on_writable`](Driver::on_writable))
//!   and time ([`on_timeout`](Driver::on_timeout), [`next_deadline`](Driver::next_deadline)).
//!   Its docs hold a complete loop.
//!
//! Nothing here makes a protocol decision: who may connect, what is valid,
//! timeouts and close reasons all come from `asoc-proto`, exactly as in the
//! tokio and smol adapters. Handshake verdicts come from an
//! [`Authenticator`], shared as `Rc<RefCell<_>>` or `Arc<Mutex<_>>` (see
//! [`AuthHandle`]) so that one replay cache covers every connection.
//!
//! ## Example
//!
//! A server and a client on loopback TCP; the client sends a 3 MiB tensor in
//! 1 MiB frames and the server checks it:
//!
//! ```
//! use std::net::TcpListener;
//! use asoc_mio::{MioConfig, MioConnection};
//! use asoc_proto::auth::{ApiKey, KeyRing};
//! use asoc_proto::connection::CloseReason;
//! use asoc_proto::handshake::AuthenticatorConfig;
//! use bytes::Bytes;
//! use uuid::Uuid;
//!
//! // In real use the key comes from ASOC_API_KEY or a key file.
//! let keys = KeyRing::new(ApiKey::new("0123456789abcdef0123456789abcdef").unwrap());
//! let server_auth = asoc_mio::shared_authenticator(
//!     AuthenticatorConfig::new(Uuid::from_bytes([2; 16]), keys.clone()),
//! ).unwrap();
//! let client_auth = asoc_mio::shared_authenticator(
//!     AuthenticatorConfig::new(Uuid::from_bytes([1; 16]), keys),
//! ).unwrap();
//!
//! let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = listener.local_addr().unwrap();
//! let server = std::thread::spawn(move || {
//!     let conn = MioConnection::accept(&listener, &server_auth, MioConfig::default()).unwrap();
//!     assert_eq!(conn.session().peer_node, Some(Uuid::from_bytes([1; 16])));
//!     let stream = conn.recv_stream().unwrap();
//!     let tensor = stream.read_to_end().unwrap(); // Err if the stream was cut off
//!     assert_eq!(conn.closed(), CloseReason::PeerClosed);
//!     tensor
//! });
//!
//! let conn = MioConnection::connect(addr, &client_auth, MioConfig::default()).unwrap();
//! let tensor: Vec<u8> = (0..3u32 << 20).map(|i| i as u8).collect();
//! conn.send_tensor(Bytes::from(tensor.clone()), 1 << 20).unwrap();
//! conn.close(); // graceful: everything queued is written first
//! assert_eq!(conn.closed(), CloseReason::Local);
//! assert_eq!(server.join().unwrap(), tensor);
//! ```
#![forbid(unsafe_code)]

mod blocking;
mod driver;
mod node;

use std::io;
use std::sync::{Arc, Mutex};

pub use asoc_proto;
use asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
use asoc_proto::rng::Seed;
pub use blocking::{Error, MioConfig, MioConnection, RecvStream, Session, StreamError};
pub use driver::{AuthHandle, Driver, Judge, SharedAuthenticator, DEFAULT_READ_LIMIT};
pub use node::{
    IncomingStream, Node, NodeBuilder, NodeEvent, PeerInfo, PeerRef, SendGuard, SendStream,
};

/// A 32-byte seed for an [`Authenticator`] from the operating system's
/// CSPRNG.
pub fn os_seed() -> io::Result<Seed> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(seed)
}

/// An [`Authenticator`] for `config`, seeded from the OS, ready to share
/// between connections and threads.
pub fn shared_authenticator(config: AuthenticatorConfig) -> io::Result<SharedAuthenticator> {
    Ok(Arc::new(Mutex::new(Authenticator::new(config, os_seed()?))))
}
