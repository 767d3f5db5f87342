//! Any futures-io byte stream behind `asoc_async::Transport`, and smol's
//! TCP stream with reads straight into spare capacity.

use std::io::{self, IoSlice};
use std::net::TcpStream as StdTcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use asoc_async::Transport;
use async_io::Async;
use async_net::TcpStream;
use bytes::BytesMut;
use futures_io::{AsyncRead, AsyncWrite};

/// At most this much spare capacity is offered per read (and zeroed first
/// by `FuturesIo`, whose reads take initialised memory).
const READ_WINDOW: usize = 256 * 1024;

/// Any futures-io byte stream (smol or async-std TCP, Unix sockets, a TLS
/// stream, ...) as an ASoc transport.
///
/// futures-io reads take initialised memory, so every read zeroes its
/// window first, including reads that then find nothing to read. For
/// `async_net::TcpStream` use [`TcpIo`], which zeroes nothing
/// ([`connect`](crate::connect) and [`accept`](crate::accept) pick it by
/// themselves).
#[derive(Debug)]
#[allow(clippy::exhaustive_structs)] // a newtype: the wrapped stream is all it is
pub struct FuturesIo<T>(pub T);

impl<T> Transport for FuturesIo<T>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let room = asoc_async::read_room(buf, max, READ_WINDOW);
        asoc_async::read_zeroed(buf, room, |spare| {
            Pin::new(&mut self.0).poll_read(cx, spare)
        })
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// smol's TCP stream as an ASoc transport (what nodes on [`Smol`](crate::Smol)
/// use).
///
/// Reads receive straight into the receive buffer's spare capacity
/// ([`asoc_async::recv_spare`]), where futures-io reads would zero up to
/// 256 KiB first on every attempt, also when the driver task was woken for
/// something else (18% of a receiving node's CPU). After a read that found
/// the socket empty, or took less than it was offered, the next one first
/// waits for the reactor to report the socket readable, saving a syscall
/// that would find nothing.
#[derive(Debug)]
pub struct TcpIo {
    stream: TcpStream,
    /// The same socket as `stream`, for readiness and reads of our own.
    raw: Arc<Async<StdTcpStream>>,
    /// The last read found the socket drained: wait for readiness first.
    drained: bool,
}

impl TcpIo {
    /// Wraps a connected stream.
    #[must_use]
    pub fn new(stream: TcpStream) -> Self {
        let raw = Arc::from(stream.clone());
        Self {
            stream,
            raw,
            drained: false,
        }
    }

    /// The stream, for layering (TLS) on top of it.
    #[must_use]
    pub fn into_inner(self) -> TcpStream {
        self.stream
    }

    /// The stream.
    #[must_use]
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }
}

impl From<TcpStream> for TcpIo {
    fn from(stream: TcpStream) -> Self {
        Self::new(stream)
    }
}

impl Transport for TcpIo {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            if self.drained {
                // Registers the waker when not readable; an event since
                // the last registration makes it ready at once.
                ready!(self.raw.poll_readable(cx))?;
                self.drained = false;
            }
            let room = asoc_async::read_room(buf, max, READ_WINDOW);
            let socket = self.raw.get_ref();
            match asoc_async::recv_spare(socket, buf, room) {
                Ok(n) => {
                    // A TCP read returns less than offered only when the
                    // receive queue had less: the next one would find it
                    // empty unless more arrived since.
                    self.drained = n < room;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}
