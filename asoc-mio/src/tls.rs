//! The TLS wrapper of RFC-0002 §9.2 for mio: [`TlsStream`] runs rustls
//! over any non-blocking mio source and is itself a source that reads and
//! writes, so a [`Driver`](crate::Driver), a [`MioConnection`]
//! or a [`Node`](crate::Node) runs over it unchanged. The ASoc bytes inside
//! TLS are exactly those of a plain connection.
//!
//! The configurations come from PEM files through the functions re-exported
//! here from `asoc_async::tls` (shared with the tokio and smol adapters):
//! [`server_config`] (certificate chain and key, optionally a client CA for
//! mutual TLS), [`client_config`] (a CA file or a pinned self-signed
//! certificate, optionally a client identity), and [`server_name`] for a
//! dial target.

use std::future::poll_fn;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

pub use asoc_async::tls::{
    client_config, load_certs, load_key, server_config, server_name, ServerTrust, TlsConfig,
    TlsError,
};
use asoc_async::{Error, Transport};
use mio::event::Source;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use crate::blocking::tcp;
use crate::rt::{poll_ready, MioIo};
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
        tls: Arc<rustls::ClientConfig>,
        auth: &SharedAuthenticator,
        config: MioConfig,
    ) -> Result<Self, Error> {
        let name = crate::tls::server_name(target).or_else(blocking)?;
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
        tls: Arc<rustls::ServerConfig>,
        auth: &SharedAuthenticator,
        config: MioConfig,
    ) -> Result<Self, Error> {
        let io = tcp(listener.accept()?.0)?;
        let io = TlsStream::server(io, tls).or_else(blocking)?;
        Self::server(io, auth, config)
    }
}

impl MioIo<mio::net::TcpStream> {
    /// The same registration with the stream inside TLS, once the TLS
    /// handshake completed.
    pub(crate) async fn into_tls(
        self,
        wrap: impl FnOnce(mio::net::TcpStream) -> Result<TlsStream<mio::net::TcpStream>, rustls::Error>,
    ) -> io::Result<Box<dyn Transport>> {
        let MioIo { io, reg, linger } = self;
        let io = wrap(io).map_err(io::Error::other)?;
        let mut tls = MioIo { io, reg, linger };
        poll_fn(|cx| {
            tls.reg.state.write.register(cx.waker());
            let io = &mut tls.io;
            poll_ready(&tls.reg.state.read, cx, || io.complete_handshake())
        })
        .await?;
        Ok(Box::new(tls))
    }
}

/// A rustls session over a non-blocking mio source `S` (usually a
/// `mio::net::TcpStream`): a [`Source`] that reads and writes plaintext.
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
pub struct TlsStream<S: Write> {
    io: S,
    tls: Connection,
    /// A TLS error already seen; every later read or write reports it.
    failed: Option<rustls::Error>,
}

impl<S: Read + Write> TlsStream<S> {
    /// The client side over a connected `io`, verifying the server as
    /// `config` says for `name` (see [`server_name`]).
    pub fn client(
        io: S,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Self, rustls::Error> {
        let tls = ClientConnection::new(config, name)?;
        Ok(Self::from_connection(io, tls.into()))
    }

    /// The server side over a freshly accepted `io`.
    pub fn server(io: S, config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let tls = ServerConnection::new(config)?;
        Ok(Self::from_connection(io, tls.into()))
    }

    /// Runs an already set up rustls connection over `io`.
    pub fn from_connection(io: S, tls: Connection) -> Self {
        Self {
            io,
            tls,
            failed: None,
        }
    }

    /// Whether TLS records are buffered that `S` has not taken yet (a
    /// [`flush`](Write::flush) would block).
    #[must_use]
    pub fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// Whether the TLS handshake is still running.
    #[must_use]
    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// The rustls session (peer certificates, negotiated version, ...).
    #[must_use]
    pub fn session(&self) -> &Connection {
        &self.tls
    }

    /// The transport.
    #[must_use]
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The transport, mutably (reading or writing it directly corrupts the
    /// session).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Advances the TLS handshake as far as `S` allows without blocking:
    /// `Ok(())` once it completed and its records are written, `WouldBlock`
    /// while it waits for the peer or for room in `S`.
    pub fn complete_handshake(&mut self) -> io::Result<()> {
        if let Some(e) = &self.failed {
            return Err(Self::tls_error(e));
        }
        self.push_records()?;
        while self.tls.is_handshaking() {
            if !self.read_records()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.push_records()?;
        }
        Ok(())
    }

    fn tls_error(e: &rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e.clone())
    }

    /// Writes buffered records until none are left or `S` would block.
    fn push_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.io) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Like [`push_records`](Self::push_records), a `WouldBlock` being no
    /// failure (the records stay buffered; `wants_write` says so).
    fn push_records_nonblocking(&mut self) -> io::Result<()> {
        match self.push_records() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// Reads TLS records from `S` once and processes them. `Ok(false)` when
    /// `S` is at its end.
    fn read_records(&mut self) -> io::Result<bool> {
        let n = loop {
            match self.tls.read_tls(&mut self.io) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if let Err(e) = self.tls.process_new_packets() {
            // Tell the peer why (the alert is queued), as far as it goes.
            let _ = self.push_records();
            let err = Self::tls_error(&e);
            self.failed = Some(e);
            return Err(err);
        }
        // Handshake answers, key updates, session tickets.
        self.push_records_nonblocking()?;
        Ok(n > 0)
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(Self::tls_error(e));
        }
        let mut filled = 0;
        loop {
            let rest = buf.get_mut(filled..).unwrap_or(&mut []);
            if rest.is_empty() {
                return Ok(filled);
            }
            match self.tls.reader().read(rest) {
                // `close_notify` received and everything before it taken.
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if filled > 0 && e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(filled)
                }
                Err(e) => return Err(e),
            }
            match self.read_records() {
                Ok(_) => {}
                // Hand out what was decrypted; the error comes again next
                // time (a failed session remembers it, a socket repeats it).
                Err(_) if filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
        }
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(Self::tls_error(e));
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        // Records of earlier writes first; nothing new is taken while they
        // do not fit, so what rustls buffers stays bounded.
        self.push_records()?;
        let n = self.tls.writer().write_vectored(bufs)?;
        if n == 0 {
            // Plaintext held for the handshake reached rustls' limit.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.push_records_nonblocking()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = &self.failed {
            return Err(Self::tls_error(e));
        }
        self.push_records()?;
        self.io.flush()
    }
}

impl<S: Source + Write> Source for TlsStream<S> {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.io.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.io.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.io.deregister(registry)
    }
}

impl<S: Write> Drop for TlsStream<S> {
    fn drop(&mut self) {
        if self.failed.is_none() {
            self.tls.send_close_notify();
            while self.tls.wants_write() {
                match self.tls.write_tls(&mut self.io) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
    }
}
