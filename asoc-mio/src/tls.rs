//! The TLS wrapper of RFC-0002 §9.2 for mio: [`TlsStream`] runs rustls
//! over any non-blocking mio source and is itself a source that reads and
//! writes, so a [`Driver`](crate::Driver) or a [`MioConnection`] runs over
//! it unchanged. The ASoc bytes inside TLS are exactly those of a plain
//! connection. It is `asoc_async::tls::TlsStream`, the session every
//! adapter runs (a node on [`Mio`](crate::Mio) runs it as
//! `asoc_async::tls::TlsTransport`), made a mio source.
//!
//! The configurations come from PEM files through the functions re-exported
//! here from `asoc_async::tls` (shared with the tokio and smol adapters):
//! [`server_config`] (certificate chain and key, optionally a client CA for
//! mutual TLS), [`client_config`] (a CA file or a pinned self-signed
//! certificate, optionally a client identity), and [`server_name`] for a
//! dial target.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

pub use asoc_async::tls::{
    client_config, load_certs, load_key, server_config, server_name, ServerTrust, TlsConfig,
    TlsError,
};
use asoc_async::Error;
use mio::event::Source;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, Connection, ServerConfig};

use crate::blocking::tcp;
use crate::{MioConfig, MioConnection, SharedAuthenticator};

/// A configuration error as the blocking API's error.
fn blocking<T>(e: impl std::fmt::Display) -> Result<T, Error> {
    Err(Error::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        e.to_string(),
    )))
}

impl MioConnection {
    /// Connects over TCP to `target` (`host:port`) inside TLS with `tls`
    /// (see [`tls::client_config`](crate::tls::client_config); the server is
    /// verified for `host`), then runs the client handshake; returns once
    /// the server's ACCEPT verified. A failed TLS handshake ends as
    /// [`Error::Handshake`] with a transport failure.
    pub fn connect_tls(
        target: &str,
        tls: Arc<ClientConfig>,
        auth: &SharedAuthenticator,
        config: MioConfig,
    ) -> Result<Self, Error> {
        let name = server_name(target).or_else(blocking)?;
        let io = tcp(std::net::TcpStream::connect(target)?)?;
        let io = TlsStream::client(io, tls, name).or_else(blocking)?;
        Self::client(io, auth, config)
    }

    /// Accepts one TCP connection from a blocking `listener`, runs TLS
    /// with `tls` (see [`tls::server_config`](crate::tls::server_config))
    /// and then the server handshake; returns once the client's HELLO
    /// verified.
    pub fn accept_tls(
        listener: &TcpListener,
        tls: Arc<ServerConfig>,
        auth: &SharedAuthenticator,
        config: MioConfig,
    ) -> Result<Self, Error> {
        let io = tcp(listener.accept()?.0)?;
        let io = TlsStream::server(io, tls).or_else(blocking)?;
        Self::server(io, auth, config)
    }
}

/// A rustls session over a non-blocking mio source `S` (usually a
/// `mio::net::TcpStream`): a [`Source`] that reads and writes plaintext.
///
/// Reads, writes and flushes are those of `asoc_async::tls::TlsStream`:
///
/// - [`Read`] drains decrypted bytes, and when there are none reads TLS
///   records from `S` (answering handshake messages at once) until the
///   caller's buffer is full or `S` would block. A peer's `close_notify`
///   reads as end of file; a TCP end without it, or a TLS alert or protocol
///   error, is an error.
/// - [`Write`] (vectored writes included) first pushes records still
///   buffered from earlier writes; while they do not all fit into `S` it
///   returns `WouldBlock` without taking anything, so rustls never holds
///   more than one write's worth of records (about 64 KiB) and backpressure
///   reaches the writer unchanged. Plaintext written during the handshake is
///   sent once the handshake completes.
/// - [`flush`](Write::flush) pushes buffered records and returns
///   `WouldBlock` while some remain ([`wants_write`](Self::wants_write)).
///   The [`Driver`](crate::Driver) flushes after every write and keeps
///   WRITABLE interest while a flush would block, and after a graceful close
///   holds back its `Closed` event until the records are out.
///
/// Dropping the stream sends `close_notify` as far as `S` takes it without
/// blocking.
#[derive(Debug)]
pub struct TlsStream<S: Write>(asoc_async::tls::TlsStream<S>);

impl<S: Read + Write> TlsStream<S> {
    /// The client side over a connected `io`, verifying the server as
    /// `config` says for `name` (see [`server_name`]).
    pub fn client(
        io: S,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Self, rustls::Error> {
        asoc_async::tls::TlsStream::client(io, config, name).map(Self)
    }

    /// The server side over a freshly accepted `io`.
    pub fn server(io: S, config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        asoc_async::tls::TlsStream::server(io, config).map(Self)
    }

    /// Runs an already set up rustls connection over `io`.
    pub fn from_connection(io: S, tls: Connection) -> Self {
        Self(asoc_async::tls::TlsStream::from_connection(io, tls))
    }

    /// Whether TLS records are buffered that `S` has not taken yet (a
    /// [`flush`](Write::flush) would block).
    #[must_use]
    pub fn wants_write(&self) -> bool {
        self.0.wants_write()
    }

    /// Whether the TLS handshake is still running.
    #[must_use]
    pub fn is_handshaking(&self) -> bool {
        self.0.is_handshaking()
    }

    /// The rustls session (peer certificates, negotiated version, ...).
    #[must_use]
    pub fn session(&self) -> &Connection {
        self.0.session()
    }

    /// The transport.
    #[must_use]
    pub fn get_ref(&self) -> &S {
        self.0.get_ref()
    }

    /// The transport, mutably (reading or writing it directly corrupts the
    /// session).
    pub fn get_mut(&mut self) -> &mut S {
        self.0.get_mut()
    }

    /// Advances the TLS handshake as far as `S` allows without blocking:
    /// `Ok(())` once it completed and its records are written, `WouldBlock`
    /// while it waits for the peer or for room in `S`.
    pub fn complete_handshake(&mut self) -> io::Result<()> {
        self.0.complete_handshake()
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<S: Source + Write> Source for TlsStream<S> {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.0.get_mut().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.0.get_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.0.get_mut().deregister(registry)
    }
}
