//! Tensors from and to byte readers, written once: each adapter wraps its
//! runtime's reader trait around [`ReadInto`] and [`StreamBytes`].

use std::future::poll_fn;
use std::io;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};

use crate::error::Error;
use crate::node::{Node, PeerRef};
use crate::runtime::Net;
use crate::stream::{check_declared_len, RecvStream, SendStream};

/// A byte source read in pieces, appending to a buffer: what an adapter
/// makes of its runtime's reader.
pub trait ReadInto {
    /// Reads at most `max` bytes (at least one) into `buf`, appending;
    /// `Ok(0)` is the end. `buf` has room for `max` bytes.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>>;
}

/// Sends everything `reader` yields to `peer` as one stream, in chunks of
/// the node's chunk size. With `len`, the reader must yield exactly that
/// many bytes: if it ends early or has more, the stream is left unfinished
/// (the receiver never sees it as complete) and an error is returned.
pub async fn send_reader<N: Net, R: ReadInto>(
    node: &Node<N>,
    peer: PeerRef,
    reader: R,
    len: Option<u64>,
) -> Result<asoc_proto::connection::StreamId, Error> {
    let _guard = node.send_guard();
    let stream = node.open_stream(peer).await?;
    let id = stream.id();
    copy_into(stream, reader, node.chunk_size(), len).await?;
    Ok(id)
}

/// Copies `reader` into `stream` in `chunk_size` pieces and finishes it
/// (see [`send_reader`] for `len`). Each chunk is a buffer of its own,
/// sent without a copy.
pub async fn copy_into<R: ReadInto>(
    mut stream: SendStream,
    mut reader: R,
    chunk_size: usize,
    len: Option<u64>,
) -> Result<u64, Error> {
    let chunk_size = chunk_size.max(1);
    let mut sent = 0u64;
    let mut ended = false;
    while !ended {
        let mut buf = BytesMut::with_capacity(chunk_size);
        while buf.len() < chunk_size {
            let want = chunk_size - buf.len();
            if poll_fn(|cx| reader.poll_read_into(cx, &mut buf, want)).await? == 0 {
                ended = true;
                break;
            }
        }
        if buf.is_empty() {
            break;
        }
        sent += buf.len() as u64;
        check_declared_len(sent, len, false)?;
        stream.send(buf.freeze()).await?;
    }
    check_declared_len(sent, len, true)?;
    stream.finish().await?;
    Ok(sent)
}

/// An incoming stream as bytes to read in pieces, what each adapter's
/// `StreamReader` implements its runtime's reader trait with. Reading past
/// a cut-off stream fails with `UnexpectedEof`, never a clean end.
#[derive(Debug)]
pub struct StreamBytes {
    stream: RecvStream,
    current: Bytes,
}

impl StreamBytes {
    /// Wraps `stream`.
    #[must_use]
    pub fn new(stream: RecvStream) -> Self {
        Self {
            stream,
            current: Bytes::new(),
        }
    }

    /// The bytes available now, waiting for the next chunk when none are;
    /// empty at the stream's end. Take them with [`consume`](Self::consume).
    pub fn poll_fill_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        while self.current.is_empty() {
            match ready!(self.stream.poll_chunk(cx)) {
                Ok(Some(chunk)) => self.current = chunk,
                Ok(None) => break,
                Err(e) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, e))),
            }
        }
        Poll::Ready(Ok(&self.current))
    }

    /// Marks `n` bytes of [`poll_fill_buf`](Self::poll_fill_buf) as read.
    pub fn consume(&mut self, n: usize) {
        self.current.advance(n.min(self.current.len()));
    }

    /// Copies available bytes into `buf`, as a reader does: how many, `0`
    /// at the end.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let available = ready!(self.poll_fill_buf(cx))?;
        let n = available.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), available.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}
