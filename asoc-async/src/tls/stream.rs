//! rustls over a non-blocking `Read + Write` byte stream: the one TLS
//! state machine every adapter runs, whether its socket is a mio source
//! read synchronously or an async [`Transport`](crate::Transport) seen
//! through [`TlsTransport`](super::TlsTransport).

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::sync::Arc;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

/// A rustls session over a non-blocking byte stream `S` that reads and
/// writes plaintext.
///
/// - [`Read`] (and [`read_into`](Self::read_into)) drains decrypted bytes,
///   and when there are none reads TLS records from `S` (answering
///   handshake messages at once) until the caller's buffer is full or `S`
///   would block. A peer's `close_notify` reads as end of file; a TCP end
///   without it, or a TLS alert or protocol error, is an error.
/// - [`Write`] (vectored writes included) first pushes records still
///   buffered from earlier writes; while they do not all fit into `S` it
///   returns `WouldBlock` without taking anything, so rustls never holds
///   more than one write's worth of records (about 64 KiB) and backpressure
///   reaches the writer unchanged. Plaintext written during the handshake is
///   sent once the handshake completes.
/// - [`flush`](Write::flush) pushes buffered records and returns
///   `WouldBlock` while some remain ([`wants_write`](Self::wants_write)).
///
/// Dropping the stream sends `close_notify` as far as `S` takes it without
/// blocking, unless [`close`](Self::close) sent it already.
#[derive(Debug)]
pub struct TlsStream<S: Write> {
    io: S,
    tls: Connection,
    /// A TLS error already seen; every later read or write reports it.
    failed: Option<rustls::Error>,
}

impl<S: Write> TlsStream<S> {
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
}

impl<S: Read + Write> TlsStream<S> {
    /// The client side over a connected `io`, verifying the server as
    /// `config` says for `name` (see [`server_name`](super::server_name)).
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

    /// Advances the TLS handshake as far as `S` allows without blocking:
    /// `Ok(())` once it completed and its records are written, `WouldBlock`
    /// while it waits for the peer or for room in `S`.
    pub fn complete_handshake(&mut self) -> io::Result<()> {
        self.check()?;
        self.push_records()?;
        while self.tls.is_handshaking() {
            if !self.read_records()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.push_records()?;
        }
        Ok(())
    }

    /// Sends `close_notify` (once) and pushes every buffered record:
    /// `WouldBlock` while some remain. Nothing may be written after it.
    pub fn close(&mut self) -> io::Result<()> {
        self.check()?;
        self.tls.send_close_notify();
        self.push_records()?;
        self.io.flush()
    }

    /// Appends at most `max` (at least one) decrypted bytes to `buf`, like
    /// [`Read::read`] but into the buffer's spare capacity, which need not
    /// be zeroed first.
    pub fn read_into(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        self.read_plaintext(max.max(1), |_, chunk| buf.extend_from_slice(chunk))
    }

    /// Hands at most `max` decrypted bytes to `put` (with how many it got
    /// before), reading records from `S` while none are decrypted and `S`
    /// has some; returns how many it handed over.
    fn read_plaintext(
        &mut self,
        max: usize,
        mut put: impl FnMut(usize, &[u8]),
    ) -> io::Result<usize> {
        self.check()?;
        let mut filled = 0;
        loop {
            if filled == max {
                return Ok(filled);
            }
            match self.tls.reader().fill_buf() {
                // `close_notify` received and everything before it taken.
                Ok([]) => return Ok(filled),
                Ok(chunk) => {
                    let n = chunk.len().min(max - filled);
                    put(filled, chunk.get(..n).unwrap_or_default());
                    self.tls.reader().consume(n);
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

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(e) => Err(Self::tls_error(e)),
            None => Ok(()),
        }
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
        self.read_plaintext(buf.len(), |at, chunk| {
            if let Some(dst) = buf.get_mut(at..at + chunk.len()) {
                dst.copy_from_slice(chunk);
            }
        })
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.check()?;
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
        self.check()?;
        self.push_records()?;
        self.io.flush()
    }
}

impl<S: Write> Drop for TlsStream<S> {
    fn drop(&mut self) {
        if self.failed.is_none() {
            // Once only: `close` may have sent it already.
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
