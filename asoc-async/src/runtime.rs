//! What the driver needs from a runtime and a transport. An adapter crate
//! implements these two traits and nothing else decides anything.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Spawning and timers of one async runtime.
pub trait Runtime: Clone + Send + Sync + Unpin + 'static {
    /// Runs `task` in the background.
    fn spawn(&self, task: BoxFuture<()>);
    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()>;
}

/// A byte stream the driver reads and writes with poll functions, so that
/// one task can wait on reading, writing, commands and a timer at once.
pub trait Transport: Send + Unpin + 'static {
    /// Reads at most `max` bytes into the spare capacity of `buf`,
    /// appending; `Ok(0)` is EOF. Implementations reserve room themselves
    /// when `buf` has none. The limit lets the driver stop a read at the end
    /// of a large frame, so the bytes of the next frame are never copied
    /// when the buffer is split.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>>;
    /// Writes some of `bufs`, in order.
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;
    /// Flushes buffered output (TLS records).
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Shuts the write side down.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// How many bytes one read into `buf` may take, for transports that read
/// into initialised memory: at most `window` and at most `max` (at least
/// one), within `buf`'s spare capacity, after reserving `window` bytes when
/// there is no spare capacity at all.
pub fn read_room(buf: &mut BytesMut, max: usize, window: usize) -> usize {
    let start = buf.len();
    if buf.capacity() == start {
        buf.reserve(window);
    }
    (buf.capacity() - start).min(window).min(max.max(1))
}

/// Reads once with `read` into the first `room` bytes past the end of
/// `buf`, zeroed first because `read` takes initialised memory, and keeps
/// only what was read (`room` from [`read_room`]).
pub fn read_zeroed(
    buf: &mut BytesMut,
    room: usize,
    read: impl FnOnce(&mut [u8]) -> Poll<io::Result<usize>>,
) -> Poll<io::Result<usize>> {
    let start = buf.len();
    buf.resize(start + room, 0);
    let result = read(buf.get_mut(start..).unwrap_or_default());
    let n = match &result {
        Poll::Ready(Ok(n)) => (*n).min(room),
        _ => 0,
    };
    buf.truncate(start + n);
    result.map_ok(|_| n)
}

/// A socket [`recv_spare`] can read from: a TCP stream of any runtime
/// (anything with a file descriptor, or a Windows socket).
#[cfg(unix)]
pub trait RawSocket: std::os::fd::AsFd {}
#[cfg(unix)]
impl<T: std::os::fd::AsFd> RawSocket for T {}
/// A socket [`recv_spare`] can read from: a TCP stream of any runtime
/// (anything with a file descriptor, or a Windows socket).
#[cfg(windows)]
pub trait RawSocket: std::os::windows::io::AsSocket {}
#[cfg(windows)]
impl<T: std::os::windows::io::AsSocket> RawSocket for T {}

/// Receives once from a non-blocking `socket` straight into the first
/// `room` bytes of `buf`'s spare capacity (`room` from [`read_room`]) and
/// keeps what arrived: no zeroing first, unlike [`read_zeroed`], which on
/// a receiving node cost as much CPU as a copy of every byte.
/// `WouldBlock` comes back as an error, for the caller's readiness logic.
#[allow(unsafe_code)]
pub fn recv_spare<S: RawSocket>(socket: &S, buf: &mut BytesMut, room: usize) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let room = room.min(spare.len());
    let n = socket2::SockRef::from(socket)
        .recv(spare.get_mut(..room).unwrap_or_default())?
        .min(room);
    // SAFETY: `recv` initialised the first `n` bytes of the spare capacity
    // (it returns how many the kernel wrote, at most the slice's length,
    // and `n` is clamped to that length again).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// A boxed, sendable future borrowing for `'a`.
pub type BoxFutureRef<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sockets of one runtime, for nodes: TCP listen/accept/connect and UDP.
/// TLS is no part of it: it is a layer over any [`Transport`]
/// ([`tls`](crate::tls)).
pub trait Net: Runtime {
    /// A connected TCP stream.
    type Stream: Transport;
    /// A bound TCP listener.
    type Listener: Send + Sync + 'static;
    /// A bound UDP socket.
    type Udp: Send + Sync + 'static;

    /// Binds a TCP listener.
    fn bind_tcp(&self, addr: std::net::SocketAddr) -> BoxFuture<io::Result<Self::Listener>>;
    /// The listener's local address.
    fn tcp_local_addr(listener: &Self::Listener) -> io::Result<std::net::SocketAddr>;
    /// Accepts one connection.
    fn accept(
        listener: &Self::Listener,
    ) -> BoxFutureRef<'_, io::Result<(Self::Stream, std::net::SocketAddr)>>;
    /// Resolves `host:port` (or parses an address) and connects to the
    /// first address that answers; returns the stream and that address.
    fn connect(
        &self,
        target: String,
    ) -> BoxFuture<io::Result<(Self::Stream, std::net::SocketAddr)>>;
    /// Binds a UDP socket with broadcast enabled.
    fn bind_udp(&self, addr: std::net::SocketAddr) -> BoxFuture<io::Result<Self::Udp>>;
    /// The UDP socket's local address.
    fn udp_local_addr(udp: &Self::Udp) -> io::Result<std::net::SocketAddr>;
    /// Receives one datagram into `buf`.
    fn recv_from<'a>(
        udp: &'a Self::Udp,
        buf: &'a mut [u8],
    ) -> BoxFutureRef<'a, io::Result<(usize, std::net::SocketAddr)>>;
    /// Sends one datagram.
    fn send_to<'a>(
        udp: &'a Self::Udp,
        data: &'a [u8],
        to: std::net::SocketAddr,
    ) -> BoxFutureRef<'a, io::Result<usize>>;
}

impl Transport for Box<dyn Transport> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        (**self).poll_read_into(cx, buf, max)
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        (**self).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_shutdown(cx)
    }
}

/// `a`'s output, or `None` when `b` completes first (`a` is polled first).
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Option<A::Output> {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(|cx: &mut Context<'_>| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        b.as_mut().poll(cx).map(|_| None)
    })
    .await
}
