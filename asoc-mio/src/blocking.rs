//! One connection on a ready-made loop: asoc-async's connection task on a
//! [`Mio`] loop of its own thread, behind a blocking, thread-safe handle.

use std::io::{self, Read, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::time::Duration;

use asoc_async::{
    Connection, DriverConfig, DriverConfigBuilder, Error, Runtime, Session, StreamError,
};
use asoc_proto::connection::{CloseReason, StreamId};
use bytes::Bytes;
use futures_lite::future::block_on;
use mio::event::Source;

use crate::driver::SharedAuthenticator;
use crate::rt::{Mio, MioIo};

/// Settings of a [`MioConnection`] or of a [`Node`](crate::Node)'s
/// connections, the same as on tokio and smol: protocol limits and timers,
/// and the received bytes not yet taken by the application above which the
/// loop stops reading from the socket (default 16 MiB; it resumes as the
/// application takes chunks, so a slow consumer pushes back on the sender
/// through TCP instead of growing memory).
pub type MioConfig = DriverConfig;

/// Builds a [`MioConfig`] ([`MioConfig::builder`]).
pub type MioConfigBuilder = DriverConfigBuilder;

/// An authenticated ASoc connection driven by a mio loop on its own thread.
/// Every method blocks the calling thread, never the loop; the handle is
/// `Sync`, so several threads may send on different streams at once.
///
/// Dropping the handle closes the connection gracefully (queued output is
/// still written); receive streams already taken keep working until then.
#[derive(Debug)]
pub struct MioConnection {
    conn: Connection,
    rt: Mio,
}

impl MioConnection {
    /// Connects over TCP to `addr` and runs the client handshake; returns
    /// once the server's ACCEPT verified.
    pub fn connect<A: ToSocketAddrs>(
        addr: A,
        auth: &SharedAuthenticator,
        config: MioConfig,
    ) -> Result<Self, Error> {
        Self::client(tcp(std::net::TcpStream::connect(addr)?)?, auth, config)
    }

    /// Accepts one TCP connection from a blocking `listener` and runs the
    /// server handshake; returns once the client's HELLO verified.
    pub fn accept(
        listener: &TcpListener,
        auth: &SharedAuthenticator,
        config: MioConfig,
    ) -> Result<Self, Error> {
        Self::server(tcp(listener.accept()?.0)?, auth, config)
    }

    /// The client side over any connected, non-blocking mio source (a
    /// [`TlsStream`](crate::TlsStream) for TLS over any source).
    pub fn client<S>(io: S, auth: &SharedAuthenticator, config: MioConfig) -> Result<Self, Error>
    where
        S: Source + Read + Write + Send + 'static,
    {
        Self::start(io, auth, config, false)
    }

    /// The server side over any connected, non-blocking mio source (a
    /// [`TlsStream`](crate::TlsStream) for TLS over any source).
    pub fn server<S>(io: S, auth: &SharedAuthenticator, config: MioConfig) -> Result<Self, Error>
    where
        S: Source + Read + Write + Send + 'static,
    {
        Self::start(io, auth, config, true)
    }

    fn start<S>(
        io: S,
        auth: &SharedAuthenticator,
        config: MioConfig,
        server: bool,
    ) -> Result<Self, Error>
    where
        S: Source + Read + Write + Send + 'static,
    {
        let rt = Mio::new("asoc-mio", config.connection().send_stall_timeout())?;
        let io = MioIo::new(&rt, io)?;
        let conn = block_on(async {
            match server {
                true => Connection::accept(&rt, io, auth, config).await,
                false => Connection::connect(&rt, io, auth, config).await,
            }
        })?;
        Ok(Self { conn, rt })
    }

    getters! {
        /// What the handshake established.
        fn session(&self) -> Session = self.conn.session();
        /// Why the connection closed, if it has.
        fn close_reason(&self) -> Option<CloseReason> = self.conn.close_reason();
    }

    wait! {
        /// Queues `chunk` (not copied) as one DATA frame of `stream`. Blocks
        /// while the connection's send queue is full, so a fast producer
        /// waits for the socket instead of buffering a tensor whole. A
        /// refused chunk poisons its stream: nothing more of it is sent, and
        /// `finish` fails, as does every send once the refusal is known,
        /// with the protocol's `SendError::Poisoned`.
        fn send(&self, stream: StreamId, chunk: Bytes) -> Result<(), Error> =
            self.conn.stream(stream).send(chunk);
        /// Queues the END frame of `stream` behind its chunks: the stream is
        /// complete. Fails, and sends no END, if one of its chunks was
        /// refused.
        fn finish(&self, stream: StreamId) -> Result<(), Error> = self.conn.stream(stream).finish();
    }

    wait! {
        /// Opens an outgoing stream and returns its id.
        fn open_stream(&self) -> Result<StreamId, Error> = async { Ok(self.conn.open_stream().await?.id()) };
        /// Sends `data` as one stream of frames of at most `chunk_size`
        /// bytes (sharing its memory) and finishes it; returns the stream id.
        fn send_tensor(&self, data: Bytes, chunk_size: usize) -> Result<StreamId, Error> =
            self.conn.send_tensor(data, chunk_size);
        /// Closes gracefully: what is queued is still written, then the
        /// connection closes with [`CloseReason::Local`]. Returns once the
        /// close is queued; see [`closed`](Self::closed).
        fn close(&self) = self.conn.close();
        /// Waits until the connection closed and says why.
        fn closed(&self) -> CloseReason = self.conn.closed();
        /// The next incoming stream, in the order they started; `None` once
        /// the connection closed and every stream was handed out.
        fn accept_stream(&self) -> Option<RecvStream> = self.incoming();
        /// Like [`accept_stream`](Self::accept_stream), giving up after `timeout`.
        fn accept_stream_timeout(&self, timeout: Duration) -> Option<RecvStream> =
            self.rt.within(timeout, self.incoming());
    }

    async fn incoming(&self) -> Option<RecvStream> {
        self.conn.accept_stream().await.map(RecvStream)
    }
}

impl Drop for MioConnection {
    fn drop(&mut self) {
        let conn = self.conn.clone();
        self.rt.spawn(Box::pin(async move { conn.close().await }));
    }
}

/// A connected std socket as a non-blocking mio one.
pub(crate) fn tcp(stream: std::net::TcpStream) -> io::Result<mio::net::TcpStream> {
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(mio::net::TcpStream::from_std(stream))
}

/// An incoming stream: its chunks in order, then its end, or an error if
/// the connection closed first.
#[derive(Debug)]
pub struct RecvStream(pub(crate) asoc_async::RecvStream);

impl RecvStream {
    getters! {
        /// The stream id (chosen by the sender).
        fn id(&self) -> StreamId = self.0.id();
        /// Payload bytes received so far.
        fn bytes(&self) -> u64 = self.0.bytes();
        /// DATA frames received so far.
        fn frames(&self) -> u32 = self.0.frames();
        /// A chunk if one is already there, without waiting.
        fn try_chunk(&mut self) -> Option<Result<Option<Bytes>, StreamError>> = self.0.try_chunk();
    }

    wait! {
        /// The next chunk, waiting for it; `Ok(None)` once the stream ended
        /// with its END; `Err` if the connection closed before.
        fn chunk(&mut self) -> Result<Option<Bytes>, StreamError> = self.0.chunk();
        /// Collects the whole stream into one buffer.
        fn read_to_end(self) -> Result<Vec<u8>, StreamError> = self.0.read_to_end();
    }
}
