//! # asoc-tokio
//!
//! ASoc on tokio. The protocol lives in [`asoc_proto`] and the drive loop in
//! [`asoc_async`]; this crate supplies tokio's spawn, timer, sockets and I/O,
//! and draws seeds and node ids from the OS.
//!
//! ```no_run
//! use asoc_tokio::{asoc_proto::auth::ApiKey, NodeBuilder};
//! # async fn run() -> Result<(), asoc_tokio::Error> {
//! let key = ApiKey::new(&std::env::var("ASOC_API_KEY").unwrap()).unwrap();
//! let node = asoc_tokio::start(
//!     NodeBuilder::new("my-cluster", key)
//!         .bind("0.0.0.0:9000".parse().unwrap())
//!         .static_peer("10.0.0.2:9000"),
//! )
//! .await?;
//! if let Some(peer) = node.wait_for_peer(std::time::Duration::from_secs(10)).await {
//!     node.send_tensor(peer.id, bytes::Bytes::from(vec![0u8; 1 << 20])).await?;
//! }
//! while let Some(incoming) = node.accept_stream().await {
//!     let data = incoming.stream.read_to_end().await;
//!     println!("{} bytes from {}", data.map(|d| d.len()).unwrap_or(0), incoming.addr);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
// Public types that may grow are `#[non_exhaustive]`; the rest say why not.
#![warn(clippy::exhaustive_structs, clippy::exhaustive_enums)]

mod io;
mod stream_io;

pub use asoc_async::shared_authenticator;
pub use asoc_async::tls;
pub use asoc_async::{
    Connection, DriverConfig, DriverConfigBuilder, Error, IncomingStream, NodeBuilder, NodeEvent,
    PeerDirection, PeerInfo, PeerRef, RecvStream, SendStream, Session, SharedAuthenticator,
    StreamError,
};
pub use asoc_proto;
pub use io::{Tokio, TokioIo};
pub use stream_io::{copy_into, send_reader, StreamReader};

/// A node running on tokio.
pub type Node = asoc_async::Node<Tokio>;

/// Starts a node on the current tokio runtime, with an OS-drawn seed and
/// (unless the builder set one) a random v4 node id.
pub async fn start(builder: NodeBuilder) -> Result<Node, Error> {
    let (seed, node_id) = (asoc_async::os_seed()?, asoc_async::os_node_id()?);
    builder.start(Tokio::current(), seed, node_id).await
}

/// Opens the client side of an ASoc connection over any tokio transport
/// (TCP, Unix socket, TLS stream, ...).
pub async fn connect<T>(
    io: T,
    auth: &SharedAuthenticator,
    config: DriverConfig,
) -> Result<Connection, Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    Connection::connect(&Tokio::current(), TokioIo(io), auth, config).await
}

/// Takes the server side of an ASoc connection over any tokio transport.
pub async fn accept<T>(
    io: T,
    auth: &SharedAuthenticator,
    config: DriverConfig,
) -> Result<Connection, Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    Connection::accept(&Tokio::current(), TokioIo(io), auth, config).await
}
