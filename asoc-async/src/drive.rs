//! The part of every drive loop that does not depend on how it waits: one
//! [`Core`] per connection owns the receive buffer and how much each read
//! asks for, turns the connection's pending output into vectored writes,
//! keeps track of what the transport still has to flush, bounds the close
//! linger, and says when the loop's timer must fire next.
//!
//! asoc-async's connection task (an async loop over [`Transport`]'s poll
//! functions) and asoc-mio's readiness `Driver` (synchronous `Read` and
//! `Write` on a mio source) both run this core; each gives it its
//! transport's operations as closures that answer `Poll::Pending` where the
//! transport would block. So a change to read sizing, writing or the linger
//! lands in one place for every runtime. Like the adapters, the core makes
//! no protocol decision: it only carries bytes between
//! [`Connection`] and the transport.
//!
//! [`Transport`]: crate::Transport

use std::io::{self, IoSlice};
use std::task::Poll;
use std::time::Instant;

use asoc_proto::connection::Connection;
use asoc_proto::wire::HEADER_LEN;
use bytes::BytesMut;

use crate::rxpool::RxPool;

/// Smallest read window: what an idle connection holds.
const MIN_READ: usize = 4 * 1024;
/// Read size while the core holds no read window: a small allocation
/// (glibc serves it from its small bins without consolidating them), kept
/// while waiting.
const FIRST_READ: usize = 256;
/// Remaining frame bytes from which a read stops at the frame's end.
const LARGE_FRAME: usize = 64 * 1024;
/// Largest read window the core grows to while reads keep filling it.
const MAX_READ: usize = 1024 * 1024;
/// Smallest buffer the pool allocates: one read of the largest window, or
/// a frame of that size with its header and the header of the next.
const SLAB: usize = MAX_READ + 4 * HEADER_LEN;
/// Slices handed to one vectored write.
const SLICES: usize = 64;

/// What a [`Core::read`] fed to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Received {
    /// `n` bytes went to the connection: a handshake message may now wait
    /// for its verdict.
    Input(usize),
    /// The peer closed its side; the connection heard it.
    Eof,
    /// The transport failed; the connection closed.
    Failed,
}

/// The runtime-free core of one connection's drive loop; see the
/// [module docs](self).
#[derive(Debug)]
pub struct Core {
    rx: BytesMut,
    read_window: usize,
    /// Large frames have been arriving: reads stop at their ends.
    large_frames: bool,
    eof: bool,
    /// Receive buffers kept for reuse while the connection is busy.
    pool: RxPool,
    /// Bytes the pool may park.
    pool_limit: usize,
    /// Bytes went to the transport (written, or answers a read made it
    /// queue) that it may still hold (a TLS layer buffers records);
    /// flushing is retried until it completes, even when nothing new is
    /// written, or the last records of a stream would sit in the buffer
    /// until the peer's idle timer gives up.
    unflushed: bool,
    /// Until when a closed connection waits for the transport to flush
    /// or shut down.
    linger: Option<Instant>,
}

impl Core {
    /// A core for a fresh connection. `receive_buffer` bounds the receive
    /// memory kept for reuse (buffers whose payloads the application still
    /// holds are not counted).
    #[must_use]
    pub fn new(receive_buffer: usize) -> Self {
        Self {
            rx: BytesMut::new(),
            read_window: MIN_READ,
            large_frames: false,
            eof: false,
            pool: RxPool::default(),
            pool_limit: receive_buffer,
            unflushed: false,
            linger: None,
        }
    }

    /// Whether the transport reported its end.
    #[must_use]
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// Whether bytes went to the transport that it did not report flushed.
    #[must_use]
    pub fn unflushed(&self) -> bool {
        self.unflushed
    }

    /// Reads once with `read` and feeds what arrived to `conn`. `read`
    /// appends at most `max` bytes to the buffer it is given (which has
    /// room for them) and answers `Poll::Pending` where the transport
    /// would block; `Ok(0)` is the end of the stream.
    ///
    /// How much a read asks for follows the traffic: the window grows
    /// while reads fill it and shrinks back when they do not, so a busy
    /// connection reads in large batches and an idle one holds a few
    /// hundred bytes; inside a large frame a read stops exactly at its
    /// end, so the buffer splits cleanly and the next buffer starts with
    /// the next frame, not a copied tail of this one.
    pub fn read(
        &mut self,
        conn: &mut Connection,
        now: Instant,
        read: impl FnOnce(&mut BytesMut, usize) -> Poll<io::Result<usize>>,
    ) -> Poll<Received> {
        let frame_rest = conn.bytes_needed(&self.rx);
        // The frame's whole size decides, so the last few KiB of a large
        // frame are not read with a full window either.
        let large = frame_rest > 0 && self.rx.len() + frame_rest >= LARGE_FRAME;
        let max = if large {
            frame_rest + HEADER_LEN
        } else if self.large_frames && self.rx.is_empty() {
            // Large frames have been arriving: read the next header alone,
            // then its payload exactly.
            HEADER_LEN
        } else if self.rx.is_empty()
            && self.rx.capacity() <= FIRST_READ
            && self.read_window == MIN_READ
        {
            // Holding no window (quiet, or a handshake): read into a few
            // hundred bytes first. A busy connection (its window grown)
            // never does. Most such reads find nothing, or one small frame,
            // and a 4 KiB allocation for each cost more than the set-up's
            // handshake: glibc consolidates its free lists before every
            // allocation of 1 KiB or more. A burst that fills this read
            // goes on with the full window.
            FIRST_READ
        } else {
            self.read_window
        };
        self.pool
            .make_room(&mut self.rx, max, SLAB, self.pool_limit, now);
        let result = read(&mut self.rx, max);
        // A small first read says nothing about the window the traffic
        // needs.
        let probe = !large && max == FIRST_READ;
        if let (Poll::Ready(Ok(n)), false) = (&result, probe) {
            if large {
                self.large_frames = true;
            } else if max == self.read_window {
                self.large_frames = false;
            }
            self.read_window = if *n >= max {
                (self.read_window * 2).min(MAX_READ)
            } else {
                (self.read_window / 2).max(MIN_READ)
            };
        }
        match result {
            Poll::Ready(Ok(0)) => {
                self.eof = true;
                conn.handle_eof(now);
                Poll::Ready(Received::Eof)
            }
            Poll::Ready(Ok(n)) => {
                conn.handle_input(now, &mut self.rx);
                // A TLS layer may have queued answers of its own
                // (handshake messages, key updates) that a flush sends.
                self.unflushed = true;
                if self.rx.is_empty()
                    && self.rx.capacity() > 4 * MIN_READ
                    && self.read_window == MIN_READ
                {
                    // Gone quiet: give the large buffers back.
                    self.rx = BytesMut::new();
                    self.pool.release();
                }
                Poll::Ready(Received::Input(n))
            }
            Poll::Ready(Err(_)) => {
                conn.handle_transport_error(now);
                Poll::Ready(Received::Failed)
            }
            Poll::Pending => {
                if self.rx.is_empty()
                    && self.rx.capacity() > FIRST_READ
                    && self.read_window == MIN_READ
                    && !self.large_frames
                {
                    // Quiet and nothing half-read: hold no read window
                    // while waiting (an idle connection's 4 KiB window was
                    // half its memory). The next read takes a small buffer
                    // first.
                    self.rx = BytesMut::new();
                }
                Poll::Pending
            }
        }
    }

    /// Writes `conn`'s pending output with `write` (vectored, payloads not
    /// copied) until all of it is written or `write` answers
    /// `Poll::Pending`. A write of 0 bytes or an error closes the
    /// connection as a transport failure. Returns whether anything changed.
    pub fn write(
        &mut self,
        conn: &mut Connection,
        now: Instant,
        mut write: impl FnMut(&[IoSlice<'_>]) -> Poll<io::Result<usize>>,
    ) -> bool {
        let mut progressed = false;
        while conn.pending_output() > 0 {
            let mut slots = [IoSlice::new(&[]); SLICES];
            let n = conn.transmit_slices(&mut slots);
            let filled = slots.get(..n).unwrap_or(&[]);
            match write(filled) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    conn.handle_transport_error(now);
                    return true;
                }
                Poll::Ready(Ok(written)) => {
                    conn.handle_written(now, written);
                    progressed = true;
                }
                Poll::Pending => break,
            }
        }
        self.unflushed |= progressed;
        progressed
    }

    /// The transport may hold output of its own that only a flush sends
    /// (a TLS layer's answers to a read, say) though nothing was written
    /// through this core: the next [`flush`](Self::flush) is due. For
    /// transports that give no other sign of it, such as a plain `Write`.
    pub fn expect_flush(&mut self) {
        self.unflushed = true;
    }

    /// Flushes the transport with `flush` while it may hold output (see
    /// [`unflushed`](Self::unflushed)); `Poll::Pending` keeps the flush due.
    /// A failed flush closes the connection as a transport failure.
    /// Returns whether the connection changed.
    pub fn flush(
        &mut self,
        conn: &mut Connection,
        now: Instant,
        flush: impl FnOnce() -> Poll<io::Result<()>>,
    ) -> bool {
        if !self.unflushed {
            return false;
        }
        match flush() {
            Poll::Ready(Ok(())) => {
                self.unflushed = false;
                false
            }
            Poll::Ready(Err(_)) => {
                self.unflushed = false;
                conn.handle_transport_error(now);
                true
            }
            Poll::Pending => false,
        }
    }

    /// The connection closed: from now on the loop waits for the
    /// transport's own output (TLS records, a shutdown) no longer than the
    /// send-stall timeout, the time pending output may go without progress.
    /// Calling it again keeps the first deadline.
    pub fn start_linger(&mut self, conn: &Connection, now: Instant) {
        if self.linger.is_none() {
            let stall = conn.config().send_stall_timeout();
            self.linger = Some(now.checked_add(stall).unwrap_or(now));
        }
    }

    /// Whether a linger started and its deadline has not passed.
    #[must_use]
    pub fn lingering(&self, now: Instant) -> bool {
        self.linger.is_some_and(|until| now < until)
    }

    /// The linger's deadline, once one started (see
    /// [`start_linger`](Self::start_linger)).
    #[must_use]
    pub fn linger_deadline(&self) -> Option<Instant> {
        self.linger
    }

    /// Ends the linger.
    pub fn end_linger(&mut self) {
        self.linger = None;
    }

    /// When the loop must call [`on_timeout`](Self::on_timeout) next, if
    /// ever: the connection's own deadline, the linger's, or, while the
    /// connection is open, the pool's check for receive memory to give
    /// back (a closed connection's memory goes with its driver).
    #[must_use]
    pub fn deadline(&self, conn: &Connection) -> Option<Instant> {
        let pool = self.pool.deadline().filter(|_| !conn.is_closed());
        [conn.poll_timeout(), pool, self.linger]
            .into_iter()
            .flatten()
            .min()
    }

    /// The loop's timer fired (early is harmless): the connection handles
    /// its deadlines once they passed, and the receive memory kept for
    /// reuse goes once unused for a while.
    pub fn on_timeout(&mut self, conn: &mut Connection, now: Instant) {
        if conn.poll_timeout().is_some_and(|at| at <= now) {
            conn.handle_timeout(now);
        }
        self.pool.expire(now, &mut self.rx);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use asoc_proto::auth::{ApiKey, KeyRing};
    use asoc_proto::connection::{CloseReason, ConnectionConfig, Event};
    use asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
    use uuid::Uuid;

    use super::*;

    /// A client connection with its HELLO queued.
    fn client(now: Instant) -> Connection {
        let keys = KeyRing::new(ApiKey::new("0123456789abcdef0123456789abcdef").unwrap());
        let config = AuthenticatorConfig::new(Uuid::from_bytes([1; 16]), keys);
        Authenticator::new(config, [1; 32]).client(
            now,
            0,
            ConnectionConfig::default(),
            asoc_proto::handshake::ClientOptions::v1(),
        )
    }

    fn closed_reason(conn: &mut Connection) -> Option<CloseReason> {
        std::iter::from_fn(|| conn.poll_event()).find_map(|e| match e {
            Event::Closed { reason } => Some(reason),
            _ => None,
        })
    }

    #[test]
    fn writes_consume_what_the_transport_took_and_stop_where_it_would_block() {
        let now = Instant::now();
        let mut conn = client(now);
        let mut core = Core::new(1 << 20);
        let queued = conn.pending_output();
        assert!(queued > 10);
        let mut calls = 0;
        let progressed = core.write(&mut conn, now, |bufs| {
            calls += 1;
            assert!(bufs.iter().map(|b| b.len()).sum::<usize>() >= 10);
            match calls {
                1 => Poll::Ready(Ok(10)),
                _ => Poll::Pending,
            }
        });
        assert!(progressed);
        assert_eq!(calls, 2);
        assert_eq!(conn.pending_output(), queued - 10);
        // Written bytes wait for a flush until one completes.
        assert!(core.unflushed());
        assert!(!core.flush(&mut conn, now, || Poll::Pending));
        assert!(core.unflushed());
        assert!(!core.flush(&mut conn, now, || Poll::Ready(Ok(()))));
        assert!(!core.unflushed());
        let mut flushes = 0;
        core.flush(&mut conn, now, || {
            flushes += 1;
            Poll::Ready(Ok(()))
        });
        assert_eq!(flushes, 0, "nothing to flush");
    }

    #[test]
    fn a_write_of_zero_bytes_or_a_failed_flush_is_a_transport_failure() {
        let now = Instant::now();
        let mut conn = client(now);
        let mut core = Core::new(1 << 20);
        assert!(core.write(&mut conn, now, |_| Poll::Ready(Ok(0))));
        assert_eq!(closed_reason(&mut conn), Some(CloseReason::Transport));

        let mut conn = client(now);
        let mut core = Core::new(1 << 20);
        core.write(&mut conn, now, |bufs| {
            Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
        });
        assert_eq!(conn.pending_output(), 0);
        let failed = core.flush(&mut conn, now, || {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        });
        assert!(failed);
        assert_eq!(closed_reason(&mut conn), Some(CloseReason::Transport));
    }

    #[test]
    fn an_idle_connection_reads_small_and_hears_the_end() {
        let now = Instant::now();
        let mut conn = Connection::server(ConnectionConfig::default(), now);
        let mut core = Core::new(1 << 20);
        let mut asked = 0;
        let pending = core.read(&mut conn, now, |buf, max| {
            asked = max;
            assert!(buf.capacity() - buf.len() >= max);
            Poll::Pending
        });
        assert!(pending.is_pending());
        assert_eq!(asked, FIRST_READ);
        assert_eq!(
            core.read(&mut conn, now, |_, _| Poll::Ready(Ok(0))),
            Poll::Ready(Received::Eof)
        );
        assert!(core.at_eof());
        assert_eq!(closed_reason(&mut conn), Some(CloseReason::PeerClosed));
    }

    #[test]
    fn the_linger_lasts_the_send_stall_timeout_and_keeps_its_first_deadline() {
        let now = Instant::now();
        let config = ConnectionConfig::builder()
            .send_stall_timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let mut conn = Connection::server(config, now);
        conn.abort(now, CloseReason::Local);
        let mut core = Core::new(1 << 20);
        assert_eq!(core.deadline(&conn), None);
        core.start_linger(&conn, now);
        let until = now + Duration::from_secs(3);
        core.start_linger(&conn, now + Duration::from_secs(1));
        assert_eq!(core.linger_deadline(), Some(until));
        assert_eq!(core.deadline(&conn), Some(until));
        assert!(core.lingering(now));
        assert!(!core.lingering(until));
        core.end_linger();
        assert_eq!(core.deadline(&conn), None);
    }
}
