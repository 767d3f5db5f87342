//! # asoc-mio
//!
//! ASoc on [mio](https://docs.rs/mio): the sans-IO protocol of
//! [`asoc_proto`] driven by readiness events. Three ways to use it:
//!
//! - **A node**: [`NodeBuilder`] starts a [`Node`], one `mio::Poll` on its
//!   own thread owning the TCP listener, the optional UDP discovery socket
//!   and every connection, with the same API as the tokio and smol nodes as
//!   blocking methods: static and discovered peers dialed and redialed,
//!   [`connect`](Node::connect), [`send_tensor`](Node::send_tensor) /
//!   [`open_stream`](Node::open_stream) (waiting while the send queue is
//!   full), [`accept_stream`](Node::accept_stream), [`next_event`](Node::next_event),
//!   [`wait_for_peers`](Node::wait_for_peers), [`shutdown`](Node::shutdown).
//!   Admission, handshake verdicts, the dial schedule, discovery and timers
//!   all come from [`asoc_proto::node::Node`].
//! - **One connection on a ready-made loop**: [`MioConnection`] runs a `mio::Poll` on its own
//!   thread and gives a blocking, thread-safe handle: [`connect`](MioConnection::connect)
//!   or [`accept`](MioConnection::accept), [`open_stream`](MioConnection::open_stream),
//!   [`send`](MioConnection::send) (blocks while the send queue is full),
//!   [`finish`](MioConnection::finish),
//!   [`accept_stream`](MioConnection::accept_stream) then
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
//! - **TLS** (RFC-0002 §9.2, rustls): [`TlsStream`] wraps any non-blocking
//!   source and is a source itself, so every piece above runs over it
//!   unchanged; [`NodeBuilder::tls`], [`MioConnection::connect_tls`] and
//!   [`MioConnection::accept_tls`] set it up from the configurations that
//!   [`tls::server_config`] and [`tls::client_config`] build from PEM files
//!   (a CA file or a pinned self-signed certificate; client certificates
//!   for mutual TLS). The ASoc bytes inside TLS are unchanged.
//!
//! The node and [`MioConnection`] are asoc-async's node and connection, the
//! very code the tokio and smol adapters run, on [`Mio`]: a small executor
//! and reactor over one `mio::Poll` on its own thread, which implements
//! asoc-async's `Runtime` and `Net` ([`MioIo`] is its `Transport` over any
//! mio source). The blocking methods wait on the calling thread, never on
//! the loop.
//!
//! Nothing here makes a protocol decision: who may connect, what is valid,
//! timeouts, reconnects and close reasons all come from `asoc-proto`,
//! exactly as in the tokio and smol adapters. Handshake verdicts come from
//! a [`Judge`]: an [`Authenticator`] shared as `Rc<RefCell<_>>` or
//! `Arc<Mutex<_>>` (see [`AuthHandle`]) so that one replay cache covers
//! every connection, or, in a [`Node`], the protocol's node.
//!
//! ## Example: two nodes
//!
//! A node with the other as its static peer; a 3 MiB tensor each way.
//!
//! ```
//! use std::time::Duration;
//! use asoc_mio::{NodeBuilder, PeerRef};
//! use asoc_proto::auth::ApiKey;
//! use bytes::Bytes;
//!
//! // In real use the key comes from ASOC_API_KEY or a key file.
//! let key = || ApiKey::new("0123456789abcdef0123456789abcdef").unwrap();
//! let loopback = "127.0.0.1:0".parse().unwrap();
//! let b = NodeBuilder::new("my-cluster", key()).bind(loopback).start().unwrap();
//! let a = NodeBuilder::new("my-cluster", key())
//!     .bind(loopback)
//!     .static_peer(b.local_addr().to_string())
//!     .start()
//!     .unwrap();
//! assert_eq!(a.wait_for_peers(1, Duration::from_secs(10)), 1);
//! assert_eq!(b.wait_for_peers(1, Duration::from_secs(10)), 1);
//!
//! let tensor = Bytes::from((0..3u32 << 20).map(|i| i as u8).collect::<Vec<u8>>());
//! // a dialed b's address; b learns a's node id from its HELLO.
//! a.send_tensor(PeerRef::Addr(b.local_addr()), tensor.clone()).unwrap(); // 1 MiB chunks
//! let incoming = b.accept_stream().unwrap();
//! assert_eq!(incoming.peer_node, Some(a.node_id()));
//! assert_eq!(incoming.stream.read_to_end().unwrap(), tensor); // Err if cut off
//!
//! b.send_tensor(PeerRef::Node(a.node_id()), tensor.clone()).unwrap();
//! assert_eq!(a.accept_stream().unwrap().stream.read_to_end().unwrap(), tensor);
//! a.shutdown(Duration::from_secs(5));
//! b.shutdown(Duration::from_secs(5));
//! ```
//!
//! ## Example: one connection
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
//!     let stream = conn.accept_stream().unwrap();
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
//!
//! ## Example: TLS
//!
//! Mutual TLS between two nodes, from PEM files:
//!
//! ```no_run
//! use std::path::Path;
//! use asoc_mio::tls::{client_config, server_config, ServerTrust, TlsConfig};
//! use asoc_mio::NodeBuilder;
//! use asoc_proto::auth::ApiKey;
//!
//! let key = || ApiKey::new("0123456789abcdef0123456789abcdef").unwrap();
//! let tls = TlsConfig {
//!     // Accepted connections show this certificate and require a client
//!     // certificate signed by the CA.
//!     server: Some(server_config(
//!         Path::new("node.pem"),
//!         Path::new("node.key"),
//!         Some(Path::new("ca.pem")),
//!     )?),
//!     // Dialed peers must show a certificate from the CA for the dialed
//!     // name; this node shows its own. `ServerTrust::Pinned("peer.pem")`
//!     // trusts one self-signed certificate instead.
//!     client: Some(client_config(
//!         &ServerTrust::CaFile("ca.pem".into()),
//!         Some((Path::new("node.pem"), Path::new("node.key"))),
//!     )?),
//! };
//! let _node = NodeBuilder::new("my-cluster", key())
//!     .tls(tls)
//!     .static_peer("peer.example:9000")
//!     .start()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
// Public types that may grow are `#[non_exhaustive]`; the rest say why not.
#![warn(clippy::exhaustive_structs, clippy::exhaustive_enums)]

/// Methods answered at once by an expression: `fn name(params) -> T = expr;`.
macro_rules! getters {
    ($($(#[$doc:meta])* fn $name:ident($($params:tt)*) -> $ret:ty = $call:expr;)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub fn $name($($params)*) -> $ret {
            $call
        }
    )*};
}

/// Methods that wait for a future on the calling thread (never on the
/// loop): `fn name(params) -> T = future;`.
macro_rules! wait {
    ($($(#[$doc:meta])* fn $name:ident($($params:tt)*) $(-> $ret:ty)? = $call:expr;)*) => {$(
        $(#[$doc])*
        pub fn $name($($params)*) $(-> $ret)? {
            futures_lite::future::block_on($call)
        }
    )*};
}

mod blocking;
mod driver;
mod node;
mod rt;
pub mod tls;

pub use asoc_async::{os_seed, shared_authenticator, Error, Session, StreamError, StreamId};
pub use asoc_proto;
#[cfg(doc)]
use asoc_proto::handshake::Authenticator;
pub use blocking::{MioConfig, MioConfigBuilder, MioConnection, RecvStream};
pub use driver::{AuthHandle, Driver, Judge, SharedAuthenticator, DEFAULT_READ_LIMIT};
pub use node::{IncomingStream, Node, NodeBuilder, NodeEvent, PeerInfo, PeerRef, SendStream};
pub use rt::{Mio, MioIo};
pub use tls::TlsStream;
