//! Tensors from and to tokio readers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use asoc_async::{check_declared_len, Error, PeerRef, RecvStream, SendStream};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::Node;

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
    let _guard = node.send_guard();
    let stream = node.open_stream(peer).await?;
    let id = stream.id();
    copy_into(stream, reader, node.chunk_size(), len).await?;
    Ok(id)
}

/// Copies `reader` into `stream` in `chunk_size` pieces and finishes it
/// (see [`send_reader`] for `len`).
pub async fn copy_into<R>(
    mut stream: SendStream,
    mut reader: R,
    chunk_size: usize,
    len: Option<u64>,
) -> Result<u64, Error>
where
    R: AsyncRead + Unpin,
{
    let chunk_size = chunk_size.max(1);
    let mut sent = 0u64;
    let mut buf = BytesMut::with_capacity(chunk_size);
    loop {
        buf.reserve(chunk_size.saturating_sub(buf.capacity()));
        while buf.len() < chunk_size {
            let limit = chunk_size - buf.len();
            let n = (&mut reader).take(limit as u64).read_buf(&mut buf).await?;
            if n == 0 {
                break;
            }
        }
        if buf.is_empty() {
            break;
        }
        let chunk = buf.split().freeze();
        sent += chunk.len() as u64;
        check_declared_len(sent, len, false)?;
        stream.send(chunk).await?;
    }
    check_declared_len(sent, len, true)?;
    stream.finish().await?;
    Ok(sent)
}

/// An incoming stream as a tokio reader. Reading past a cut-off stream
/// fails with `UnexpectedEof`, never a clean end.
#[derive(Debug)]
pub struct StreamReader {
    stream: RecvStream,
    current: Bytes,
}

impl StreamReader {
    /// Wraps `stream`.
    #[must_use]
    pub fn new(stream: RecvStream) -> Self {
        Self {
            stream,
            current: Bytes::new(),
        }
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.current.is_empty() {
            match this.stream.poll_chunk(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Some(chunk))) => this.current = chunk,
                Poll::Ready(Ok(None)) => return Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, e)));
                }
            }
        }
        let n = this.current.len().min(buf.remaining());
        buf.put_slice(this.current.get(..n).unwrap_or(&[]));
        this.current.advance(n);
        Poll::Ready(Ok(()))
    }
}
