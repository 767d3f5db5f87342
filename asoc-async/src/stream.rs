//! Stream handles given to the application.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use std::pin::Pin;
use std::task::{Context, Poll};

use asoc_proto::connection::StreamId;
use atomic_waker::AtomicWaker;
use bytes::Bytes;
use futures_core::Stream;

use crate::driver::Cmd;
use crate::error::{Error, StreamError};

/// Bytes delivered to receive streams and not yet taken by the application.
/// Above the limit the driver stops reading, so a slow consumer pushes back
/// on the sender through TCP instead of growing memory.
#[derive(Debug)]
pub(crate) struct RecvBudget {
    pub(crate) buffered: AtomicUsize,
    pub(crate) limit: usize,
    pub(crate) driver: AtomicWaker,
}

impl RecvBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            buffered: AtomicUsize::new(0),
            limit,
            driver: AtomicWaker::new(),
        })
    }

    pub(crate) fn is_full(&self) -> bool {
        self.buffered.load(Ordering::Acquire) >= self.limit
    }

    fn consumed(&self, n: usize) {
        let before = self.buffered.fetch_sub(n, Ordering::AcqRel);
        if before >= self.limit && before - n < self.limit {
            self.driver.wake();
        }
    }
}

/// What the driver delivers to a receive stream.
#[derive(Debug)]
pub(crate) enum Item {
    Data(Bytes),
    End,
    Cut(StreamError),
}

/// An outgoing stream. Chunks are queued without copying; `send` waits
/// while the connection's send queue is full. Dropping a stream without
/// [`finish`](Self::finish) never sends END: the peer will see it as
/// incomplete when the connection closes.
#[derive(Debug)]
pub struct SendStream {
    pub(crate) id: StreamId,
    pub(crate) cmds: async_channel::Sender<Cmd>,
    pub(crate) shared: Arc<crate::driver::Shared>,
    /// Counts the stream as a send in flight of the node it was opened
    /// through, until it is finished or dropped; held only to be dropped.
    #[allow(dead_code)]
    pub(crate) in_flight: Option<crate::node::InFlight>,
}

impl SendStream {
    /// The stream id.
    #[must_use]
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Queues one chunk as one DATA frame. The connection's task hands it
    /// to the protocol later, so a refused chunk (too large, say) shows at
    /// the stream's next command: a chunk refused by the protocol poisons
    /// its stream, and once the task saw that, `send` and
    /// [`finish`](Self::finish) fail with the protocol's
    /// [`SendError::Poisoned`](asoc_proto::connection::SendError::Poisoned);
    /// nothing more of the stream is sent and it never completes.
    pub async fn send(&mut self, chunk: Bytes) -> Result<(), Error> {
        if let Some(e) = self.shared.refusal(self.id) {
            return Err(Error::Send(e));
        }
        self.cmds
            .send(Cmd::Data {
                stream: self.id,
                chunk,
            })
            .await
            .map_err(|_| self.gone())
    }

    /// Why sends fail once the connection's task has ended.
    fn gone(&self) -> Error {
        self.shared.reason().map_or(Error::Gone, Error::Closed)
    }

    /// Queues `data` as DATA frames of at most `chunk_size` bytes, sharing
    /// its memory.
    pub async fn send_chunked(&mut self, data: Bytes, chunk_size: usize) -> Result<(), Error> {
        let chunk_size = chunk_size.max(1);
        let mut off = 0;
        while off < data.len() {
            let end = data.len().min(off + chunk_size);
            self.send(data.slice(off..end)).await?;
            off = end;
        }
        Ok(())
    }

    /// Sends END: the stream is complete. Fails, and sends no END, if any
    /// chunk of the stream was refused (the protocol's
    /// [`SendError::Poisoned`](asoc_proto::connection::SendError::Poisoned)),
    /// so the peer never takes a partial tensor for a complete one.
    pub async fn finish(self) -> Result<(), Error> {
        let (reply, answer) = async_channel::bounded(1);
        self.cmds
            .send(Cmd::Finish {
                stream: self.id,
                reply,
            })
            .await
            .map_err(|_| self.gone())?;
        match answer.recv().await {
            Ok(result) => result.map_err(Error::Send),
            Err(_) => Err(self.gone()),
        }
    }
}

/// An incoming stream: its chunks in order, then the end, or an error if
/// the connection closed first.
#[derive(Debug)]
pub struct RecvStream {
    pub(crate) id: StreamId,
    pub(crate) items: Pin<Box<async_channel::Receiver<Item>>>,
    pub(crate) budget: Arc<RecvBudget>,
    pub(crate) bytes: u64,
    pub(crate) frames: u32,
    pub(crate) done: bool,
}

impl RecvStream {
    /// The stream id (chosen by the sender).
    #[must_use]
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Payload bytes received so far.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// DATA frames received so far.
    #[must_use]
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// The next chunk; `Ok(None)` once the stream ended completely;
    /// `Err` if the connection closed before END.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, StreamError> {
        if self.done {
            return Ok(None);
        }
        let item = match self.items.recv().await {
            Ok(item) => item,
            // The driver always sends End or Cut before dropping a stream;
            // losing it means the task died, which is a cut.
            Err(_) => Item::Cut(StreamError::Incomplete {
                bytes: self.bytes,
                reason: asoc_proto::connection::CloseReason::Transport,
            }),
        };
        self.take(item)
    }

    /// Poll form of [`chunk`](Self::chunk), for building readers.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>> {
        if self.done {
            return Poll::Ready(Ok(None));
        }
        let item = match self.items.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(item)) => item,
            Poll::Ready(None) => Item::Cut(StreamError::Incomplete {
                bytes: self.bytes,
                reason: asoc_proto::connection::CloseReason::Transport,
            }),
        };
        Poll::Ready(self.take(item))
    }

    /// A chunk if one is already there, without waiting.
    pub fn try_chunk(&mut self) -> Option<Result<Option<Bytes>, StreamError>> {
        if self.done {
            return Some(Ok(None));
        }
        let item = self.items.try_recv().ok()?;
        Some(self.take(item))
    }

    fn take(&mut self, item: Item) -> Result<Option<Bytes>, StreamError> {
        match item {
            Item::Data(chunk) => {
                self.budget.consumed(chunk.len());
                self.bytes += chunk.len() as u64;
                self.frames += 1;
                Ok(Some(chunk))
            }
            Item::End => {
                self.done = true;
                Ok(None)
            }
            Item::Cut(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    /// Collects the whole stream into one buffer.
    pub async fn read_to_end(mut self) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        // Release the budget held by chunks nobody will read.
        while let Ok(item) = self.items.try_recv() {
            if let Item::Data(chunk) = item {
                self.budget.consumed(chunk.len());
            }
        }
    }
}

/// Checks a reader against the length declared for it: `sent` bytes so far,
/// `ended` once the reader returned end of file. Used by the adapters'
/// `send_reader`, so a short or long reader never finishes its stream.
pub fn check_declared_len(sent: u64, declared: Option<u64>, ended: bool) -> Result<(), Error> {
    match declared {
        Some(l) if sent > l => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("reader yielded more than the declared {l} bytes"),
        ))),
        Some(l) if ended && sent != l => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("reader ended after {sent} of the declared {l} bytes"),
        ))),
        _ => Ok(()),
    }
}
