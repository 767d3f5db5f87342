//! # asoc-tokio
//!
//! ASoc on tokio. The protocol lives in [`asoc_proto`]; the drive loop in
//! [`asoc_async`]; this crate only supplies tokio's spawn, timer and I/O.
#![forbid(unsafe_code)]

mod io;

pub use asoc_async::{
    Connection, DriverConfig, Error, RecvStream, SendStream, Session, SharedAuthenticator,
    StreamError,
};
pub use asoc_proto;
pub use io::{Tokio, TokioIo};

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
