//! # asoc-smol
//!
//! ASoc on the smol stack: `async-io`'s reactor and timers, `async-net`'s
//! sockets and any `futures-io` byte stream. The protocol lives in
//! [`asoc_proto`], the drive loop in [`asoc_async`]; this crate only
//! supplies spawning ([`Smol`]), a timer and I/O ([`FuturesIo`], and
//! [`Net`](asoc_async::Net) for [`Smol`]).
//!
//! It runs on smol's global executor ([`Smol::global`], used by
//! [`connect`] and [`accept`]), on an [`async_executor::Executor`] of your
//! own ([`Smol::from_executor`]), or under any executor that can spawn a
//! `Send` future ([`Smol::with_spawner`]), such as async-std's, which runs
//! on the same reactor.
//!
//! # Example
//!
//! A server and a client over loopback TCP; the client sends one tensor.
//!
//! ```
//! use asoc_smol::asoc_proto::auth::{ApiKey, KeyRing};
//! use asoc_smol::asoc_proto::handshake::AuthenticatorConfig;
//! use asoc_smol::{DriverConfig, Error, SharedAuthenticator};
//! use async_net::{TcpListener, TcpStream};
//! use bytes::Bytes;
//!
//! fn auth(node: u128) -> Result<SharedAuthenticator, Error> {
//!     let key = ApiKey::new("0123456789abcdef0123456789abcdef")?;
//!     let config = AuthenticatorConfig::new(uuid::Uuid::from_u128(node), KeyRing::new(key));
//!     // Seeded from the OS.
//!     Ok(asoc_smol::shared_authenticator(config)?)
//! }
//!
//! smol::block_on(async {
//!     let (server_auth, client_auth) = (auth(2)?, auth(1)?);
//!     let listener = TcpListener::bind("127.0.0.1:0").await?;
//!     let addr = listener.local_addr()?;
//!     let server = smol::spawn(async move {
//!         let (sock, _) = listener.accept().await?;
//!         let conn = asoc_smol::accept(sock, &server_auth, DriverConfig::default()).await?;
//!         let stream = conn.accept_stream().await.expect("one stream");
//!         let data = stream.read_to_end().await.expect("complete stream");
//!         Ok::<_, asoc_smol::Error>(data)
//!     });
//!
//!     let sock = TcpStream::connect(addr).await?;
//!     let conn = asoc_smol::connect(sock, &client_auth, DriverConfig::default()).await?;
//!     conn.send_tensor(Bytes::from(vec![7u8; 100_000]), 16 * 1024).await?;
//!     assert_eq!(server.await?, vec![7u8; 100_000]);
//!     conn.close().await;
//!     conn.closed().await;
//!     Ok::<_, asoc_smol::Error>(())
//! })?;
//! # Ok::<_, asoc_smol::Error>(())
//! ```
#![forbid(unsafe_code)]
// Public types that may grow are `#[non_exhaustive]`; the rest say why not.
#![warn(clippy::exhaustive_structs, clippy::exhaustive_enums)]

mod io;
mod net;
mod runtime;
mod stream_io;

pub use asoc_async::{
    shared_authenticator, tls, Connection, DriverConfig, DriverConfigBuilder, Error,
    IncomingStream, NodeBuilder, NodeEvent, PeerDirection, PeerInfo, PeerRef, RecvStream,
    SendStream, Session, SharedAuthenticator, StreamError,
};
pub use asoc_proto;
pub use io::{FuturesIo, TcpIo};
pub use runtime::Smol;
pub use stream_io::{copy_into, send_reader, StreamReader};

/// A node running on the smol stack.
pub type Node = asoc_async::Node<Smol>;

/// Starts a node whose tasks run on smol's global executor, with an
/// OS-drawn seed and (unless the builder set one) a random v4 node id.
pub async fn start(builder: NodeBuilder) -> Result<Node, Error> {
    start_on(Smol::global(), builder).await
}

/// Starts a node whose tasks run on `rt` (an executor of your own, or
/// async-std's through [`Smol::with_spawner`]).
pub async fn start_on(rt: Smol, builder: NodeBuilder) -> Result<Node, Error> {
    let (seed, node_id) = (asoc_async::os_seed()?, asoc_async::os_node_id()?);
    builder.start(rt, seed, node_id).await
}

use futures_io::{AsyncRead, AsyncWrite};

/// Opens the client side of an ASoc connection over any futures-io
/// transport (TCP, Unix socket, TLS stream, ...); its task runs on smol's
/// global executor.
pub async fn connect<T>(
    io: T,
    auth: &SharedAuthenticator,
    config: DriverConfig,
) -> Result<Connection, Error>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    connect_on(&Smol::global(), io, auth, config).await
}

/// Takes the server side of an ASoc connection over any futures-io
/// transport; its task runs on smol's global executor.
pub async fn accept<T>(
    io: T,
    auth: &SharedAuthenticator,
    config: DriverConfig,
) -> Result<Connection, Error>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    accept_on(&Smol::global(), io, auth, config).await
}

/// Like [`connect`], with the connection's task spawned by `rt`.
pub async fn connect_on<T>(
    rt: &Smol,
    io: T,
    auth: &SharedAuthenticator,
    config: DriverConfig,
) -> Result<Connection, Error>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    Connection::connect(rt, transport(io)?, auth, config).await
}

/// Like [`accept`], with the connection's task spawned by `rt`.
pub async fn accept_on<T>(
    rt: &Smol,
    io: T,
    auth: &SharedAuthenticator,
    config: DriverConfig,
) -> Result<Connection, Error>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    Connection::accept(rt, transport(io)?, auth, config).await
}

/// `io` as a transport: a [`TcpIo`] when it is smol's TCP stream, whose
/// reads need not zero their window, otherwise a [`FuturesIo`].
fn transport<T>(io: T) -> Result<Box<dyn asoc_async::Transport>, Error>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut io = Some(io);
    let tcp = (&mut io as &mut dyn std::any::Any)
        .downcast_mut::<Option<async_net::TcpStream>>()
        .and_then(Option::take);
    if let Some(tcp) = tcp {
        return Ok(Box::new(TcpIo::new(tcp)));
    }
    // `io` is only emptied when it was taken as TCP above.
    Ok(Box::new(FuturesIo(io.ok_or(Error::Gone)?)))
}
