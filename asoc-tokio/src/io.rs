//! tokio's spawn, timer and I/O behind `asoc_async`'s two traits.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use std::net::SocketAddr;

use asoc_async::{BoxFuture, BoxFutureRef, Runtime, Transport};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

/// The tokio runtime a node or connection runs on.
#[derive(Clone, Debug)]
pub struct Tokio(tokio::runtime::Handle);

impl Tokio {
    /// The runtime of the calling task. Panics outside a tokio runtime, as
    /// `tokio::spawn` does.
    #[must_use]
    pub fn current() -> Self {
        Self(tokio::runtime::Handle::current())
    }

    /// A specific runtime.
    #[must_use]
    pub fn from_handle(handle: tokio::runtime::Handle) -> Self {
        Self(handle)
    }
}

impl Tokio {
    /// Runs `fut` (which creates tokio sockets) on this runtime, so that it
    /// works when awaited from another executor.
    fn in_runtime<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = io::Result<T>> + Send + 'static,
    ) -> BoxFuture<io::Result<T>> {
        let task = self.0.spawn(fut);
        Box::pin(async move { task.await.map_err(io::Error::other)? })
    }
}

impl Runtime for Tokio {
    fn spawn(&self, task: BoxFuture<()>) {
        drop(self.0.spawn(task));
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        // Entering the runtime lets callers on other executors hold a tokio
        // timer (the cross-runtime case).
        let _context = self.0.enter();
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

/// Any tokio byte stream as an ASoc transport.
#[derive(Debug)]
#[allow(clippy::exhaustive_structs)] // a newtype: the wrapped stream is all it is
pub struct TokioIo<T>(pub T);

impl<T> Transport for TokioIo<T>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        asoc_async::ReadInto::poll_read_into(self, cx, buf, max)
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
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl asoc_async::Net for Tokio {
    type Stream = TokioIo<tokio::net::TcpStream>;
    type Listener = tokio::net::TcpListener;
    type Udp = tokio::net::UdpSocket;

    fn bind_tcp(&self, addr: SocketAddr) -> BoxFuture<io::Result<Self::Listener>> {
        self.in_runtime(tokio::net::TcpListener::bind(addr))
    }

    fn tcp_local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn accept(
        listener: &Self::Listener,
    ) -> BoxFutureRef<'_, io::Result<(Self::Stream, SocketAddr)>> {
        Box::pin(async move {
            let (stream, addr) = listener.accept().await?;
            stream.set_nodelay(true)?;
            Ok((TokioIo(stream), addr))
        })
    }

    fn connect(&self, target: String) -> BoxFuture<io::Result<(Self::Stream, SocketAddr)>> {
        self.in_runtime(async move {
            let stream = tokio::net::TcpStream::connect(target.as_str()).await?;
            stream.set_nodelay(true)?;
            let addr = stream.peer_addr()?;
            Ok((TokioIo(stream), addr))
        })
    }

    fn bind_udp(&self, addr: SocketAddr) -> BoxFuture<io::Result<Self::Udp>> {
        self.in_runtime(async move {
            let socket = tokio::net::UdpSocket::bind(addr).await?;
            socket.set_broadcast(true)?;
            Ok(socket)
        })
    }

    fn udp_local_addr(udp: &Self::Udp) -> io::Result<SocketAddr> {
        udp.local_addr()
    }

    fn recv_from<'a>(
        udp: &'a Self::Udp,
        buf: &'a mut [u8],
    ) -> BoxFutureRef<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(udp.recv_from(buf))
    }

    fn send_to<'a>(
        udp: &'a Self::Udp,
        data: &'a [u8],
        to: SocketAddr,
    ) -> BoxFutureRef<'a, io::Result<usize>> {
        Box::pin(udp.send_to(data, to))
    }
}
