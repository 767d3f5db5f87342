//! TLS as a layer: a [`Transport`] inside TLS over any other [`Transport`],
//! on every runtime alike.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, Connection, ServerConfig};

use super::TlsStream;
use crate::runtime::{BoxFuture, Runtime, Transport};

/// Ciphertext read from the transport at once: a little more than one
/// full TLS record (16 KiB of plaintext and its overhead), where rustls
/// asks for 4 KiB per read.
const CIPHER_WINDOW: usize = 17 * 1024;

/// At most this much spare capacity is offered per plaintext read.
const PLAIN_WINDOW: usize = 256 * 1024;

/// A transport seen as a non-blocking `Read + Write`, for rustls: the
/// waker of the task's latest poll stands in for the context, and
/// `Pending` reads as `WouldBlock`.
struct Polled<T> {
    io: T,
    waker: Waker,
    /// Ciphertext read but not yet taken by rustls.
    rx: BytesMut,
}

impl<T: Transport> Polled<T> {
    fn poll<R>(
        &mut self,
        op: impl FnOnce(&mut T, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> io::Result<R> {
        match op(&mut self.io, &mut Context::from_waker(&self.waker)) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<T: Transport> Read for Polled<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rx.is_empty() {
            let mut rx = std::mem::take(&mut self.rx);
            // Empty and ours alone: reserving reuses the whole allocation.
            rx.reserve(CIPHER_WINDOW);
            let read = self.poll(|io, cx| io.poll_read_into(cx, &mut rx, CIPHER_WINDOW));
            // A connection waiting for its peer keeps no buffer.
            if !rx.is_empty() {
                self.rx = rx;
            }
            if read? == 0 {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.rx.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), self.rx.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.rx.advance(n);
        Ok(n)
    }
}

impl<T: Transport> Write for Polled<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.poll(|io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.poll(|io, cx| io.poll_flush(cx))
    }
}

/// Starts the timer that bounds a graceful shutdown.
type Sleeper = Box<dyn Fn(Instant) -> BoxFuture<()> + Send + Sync>;

/// How long a shutdown waits for the peer to take buffered records.
struct Linger {
    after: Duration,
    sleep: Sleeper,
    timer: Option<BoxFuture<()>>,
}

/// A [`Transport`] inside TLS (RFC-0002 §9.2) over another transport `T`:
/// the ASoc bytes run inside unchanged. [`accept`] and [`connect`] build
/// one and run its handshake; a node given a
/// [`TlsConfig`](super::TlsConfig) does so for each connection.
///
/// Reads, writes and flushes behave as [`TlsStream`]'s: rustls holds at
/// most one write's worth of records, and flushing completes once they
/// are all in `T`. Shutting down sends `close_notify`, waits until every
/// record is in `T` (within the linger time, when one is set) and shuts
/// `T` down.
pub struct TlsTransport<T: Transport> {
    tls: TlsStream<Polled<T>>,
    linger: Option<Linger>,
    /// `close_notify` and every record before it are in `T`.
    closed: bool,
}

impl<T: Transport> std::fmt::Debug for TlsTransport<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport")
            .field("session", self.tls.session())
            .finish_non_exhaustive()
    }
}

impl<T: Transport> TlsTransport<T> {
    /// Runs an already set up rustls connection over `io`; its handshake
    /// runs in [`handshake`](Self::handshake), or inside the first reads and
    /// writes.
    pub fn new(io: T, tls: Connection) -> Self {
        let io = Polled {
            io,
            waker: Waker::noop().clone(),
            rx: BytesMut::new(),
        };
        Self {
            tls: TlsStream::from_connection(io, tls),
            linger: None,
            closed: false,
        }
    }

    /// Bounds how long [`poll_shutdown`](Transport::poll_shutdown) waits
    /// for the peer to take the last records: after `linger` on `rt`'s
    /// clock it gives up, and dropping the transport closes it.
    #[must_use]
    pub fn with_linger<R: Runtime>(mut self, rt: &R, linger: Duration) -> Self {
        let rt = rt.clone();
        self.linger = Some(Linger {
            after: linger,
            sleep: Box::new(move |deadline| rt.sleep_until(deadline)),
            timer: None,
        });
        self
    }

    /// The rustls session (peer certificates, negotiated version, ...).
    #[must_use]
    pub fn session(&self) -> &Connection {
        self.tls.session()
    }

    /// The transport inside.
    #[must_use]
    pub fn get_ref(&self) -> &T {
        &self.tls.get_ref().io
    }

    /// Advances the handshake: ready once it completed and its records
    /// are in `T`.
    pub fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.enter(cx);
        pending(self.tls.complete_handshake())
    }

    /// Runs the whole handshake.
    pub async fn handshake(mut self) -> io::Result<Self> {
        std::future::poll_fn(|cx| self.poll_handshake(cx)).await?;
        Ok(self)
    }

    /// Lets the reads and writes of this poll wake `cx`'s task.
    fn enter(&mut self, cx: &Context<'_>) {
        let io = self.tls.get_mut();
        if !io.waker.will_wake(cx.waker()) {
            io.waker = cx.waker().clone();
        }
    }
}

/// `WouldBlock` came from a transport that returned `Pending` (and so
/// will wake the task): pending again.
fn pending<R>(result: io::Result<R>) -> Poll<io::Result<R>> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

impl<T: Transport> Transport for TlsTransport<T> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        self.enter(cx);
        pending(self.tls.read_into(buf, max.min(PLAIN_WINDOW)))
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.tls.is_handshaking() {
            // rustls takes only so much plaintext before the handshake is
            // done; finish it here so that the task waits on the socket.
            std::task::ready!(self.poll_handshake(cx))?;
        }
        self.enter(cx);
        pending(self.tls.write_vectored(bufs))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.enter(cx);
        pending(self.tls.flush())
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.enter(cx);
        if !self.closed {
            match pending(self.tls.close()) {
                Poll::Ready(Ok(())) => self.closed = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let Some(linger) = self.linger.as_mut() else {
                        return Poll::Pending;
                    };
                    let (sleep, after) = (&linger.sleep, linger.after);
                    let timer = linger
                        .timer
                        .get_or_insert_with(|| sleep(Instant::now() + after));
                    // Given up: dropping the transport closes it.
                    return Pin::new(timer).poll(cx).map(Ok);
                }
            }
        }
        self.tls.get_mut().io.poll_shutdown(cx)
    }
}

/// Runs the server side of a TLS handshake over `io` with `config`; the
/// transport's shutdown waits at most `linger` on `rt` for the peer to take
/// the last records.
pub async fn accept<R: Runtime, T: Transport>(
    rt: &R,
    io: T,
    config: Arc<ServerConfig>,
    linger: Duration,
) -> io::Result<TlsTransport<T>> {
    let tls = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    TlsTransport::new(io, tls.into())
        .with_linger(rt, linger)
        .handshake()
        .await
}

/// Runs the client side of a TLS handshake over `io` with `config`,
/// verifying the server for `name` (see [`server_name`](super::server_name));
/// `linger` as for [`accept`].
pub async fn connect<R: Runtime, T: Transport>(
    rt: &R,
    io: T,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    linger: Duration,
) -> io::Result<TlsTransport<T>> {
    let tls = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    TlsTransport::new(io, tls.into())
        .with_linger(rt, linger)
        .handshake()
        .await
}
