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
    /// Reads into the spare capacity of `buf`, appending; `Ok(0)` is EOF.
    /// Implementations reserve room themselves when `buf` has none.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
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
