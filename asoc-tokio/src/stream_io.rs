//! Tensors from and to tokio readers: asoc-async's copy loop and stream
//! reader behind tokio's `AsyncRead`.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use asoc_async::{Error, PeerRef, ReadInto, RecvStream, SendStream, StreamBytes};
use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

use crate::{Node, TokioIo};

impl<T: AsyncRead + Unpin> ReadInto for TokioIo<T> {
    /// Reads into uninitialised spare capacity: no zeroing, no copy.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        if buf.capacity() == buf.len() {
            buf.reserve(max.clamp(1, 64 * 1024));
        }
        let mut limited = bytes::BufMut::limit(buf, max.max(1));
        tokio_util::io::poll_read_buf(Pin::new(&mut self.0), cx, &mut limited)
    }
}

/// Sends everything `reader` yields to `peer` as one stream, in chunks of
/// the node's chunk size. With `len`, the reader must yield exactly that
/// many bytes: if it ends early or has more, the stream is left unfinished
/// (the receiver never sees it as complete) and an error is returned.
pub async fn send_reader<R>(
    node: &Node,
    peer: PeerRef,
    reader: R,
    len: Option<u64>,
) -> Result<asoc_proto::connection::StreamId, Error>
where
    R: AsyncRead + Unpin,
{
    asoc_async::send_reader(node, peer, TokioIo(reader), len).await
}

/// Copies `reader` into `stream` in `chunk_size` pieces and finishes it
/// (see [`send_reader`] for `len`).
pub async fn copy_into<R>(
    stream: SendStream,
    reader: R,
    chunk_size: usize,
    len: Option<u64>,
) -> Result<u64, Error>
where
    R: AsyncRead + Unpin,
{
    asoc_async::copy_into(stream, TokioIo(reader), chunk_size, len).await
}

/// An incoming stream as a tokio reader. Reading past a cut-off stream
/// fails with `UnexpectedEof`, never a clean end.
#[derive(Debug)]
pub struct StreamReader(StreamBytes);

impl StreamReader {
    /// Wraps `stream`.
    #[must_use]
    pub fn new(stream: RecvStream) -> Self {
        Self(StreamBytes::new(stream))
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut self.get_mut().0;
        let available = ready!(this.poll_fill_buf(cx))?;
        let n = available.len().min(buf.remaining());
        buf.put_slice(available.get(..n).unwrap_or_default());
        this.consume(n);
        Poll::Ready(Ok(()))
    }
}
