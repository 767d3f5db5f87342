//! Any futures-io byte stream behind `asoc_async::Transport`.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use asoc_async::Transport;
use bytes::BytesMut;
use futures_io::{AsyncRead, AsyncWrite};

/// At most this much spare capacity is zeroed and offered per read.
const READ_WINDOW: usize = 256 * 1024;

/// Any futures-io byte stream (smol or async-std TCP, Unix sockets,
/// `futures-rustls` TLS, ...) as an ASoc transport.
#[derive(Debug)]
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
        // futures-io reads into initialised memory.
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
