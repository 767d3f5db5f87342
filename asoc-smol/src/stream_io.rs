//! Tensors from and to futures-io readers: asoc-async's copy loop and
//! stream reader behind futures-io's `AsyncRead`.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use asoc_async::{Error, PeerRef, ReadInto, RecvStream, SendStream, StreamBytes};
use bytes::BytesMut;
use futures_io::AsyncRead;

use crate::Node;

/// The least a read zeroes and offers.
const MIN_WINDOW: usize = 16 * 1024;

/// A futures-io reader for [`asoc_async::copy_into`]. Its reads take
/// initialised memory, so each zeroes what it offers first; the offer
/// follows what the reader returns (doubling while reads fill it), so
/// that a reader returning small pieces does not have a whole chunk zeroed
/// for each.
struct Chunked<R> {
    reader: R,
    window: usize,
}

impl<R: AsyncRead + Unpin> ReadInto for Chunked<R> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let room = max.clamp(1, self.window);
        let reader = &mut self.reader;
        let n = ready!(asoc_async::read_zeroed(buf, room, |spare| {
            Pin::new(reader).poll_read(cx, spare)
        }))?;
        self.window = if n >= room {
            room.saturating_mul(2)
        } else {
            n.saturating_mul(2).max(MIN_WINDOW)
        };
        Poll::Ready(Ok(n))
    }
}

fn chunked<R>(reader: R) -> Chunked<R> {
    Chunked {
        reader,
        window: MIN_WINDOW,
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
    asoc_async::send_reader(node, peer, chunked(reader), len).await
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
    asoc_async::copy_into(stream, chunked(reader), chunk_size, len).await
}

/// An incoming stream as a futures-io reader. Reading past a cut-off stream
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
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().0.poll_read(cx, buf)
    }
}
