//! Incoming streams of `asoc listen`: each is hashed (and, with `--out`,
//! written) as its chunks arrive, reported complete or incomplete, and
//! with `--echo` sent back to its sender chunk by chunk as it arrives.
//!
//! Nothing here holds a whole stream: a chunk goes to the sink's pool and
//! to the echo, each of which makes the handler wait while it is behind,
//! and a waiting handler stops taking chunks, so its connection stops
//! reading and the sender is slowed down through TCP.

use asoc_proto::connection::StreamId;
use asoc_proto::node::ConnId;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use asoc_async::{IncomingStream, Net, Node, PeerRef, SendStream, StreamError};
use bytes::Bytes;
use serde_json::json;
use uuid::Uuid;

use crate::events::{peer, shown};
use crate::output::{hex, Out};
use crate::sink::{Finished, Pool, Sink};

/// What to do with each stream.
#[derive(Clone, Debug)]
pub(super) struct Settings {
    /// Compute SHA-256 (off with `--no-digest`).
    pub(super) digest: bool,
    /// `--out DIR`.
    pub(super) out_dir: Option<Arc<PathBuf>>,
    /// `--echo`.
    pub(super) echo: bool,
}

/// How streams are stored and reported.
#[derive(Clone, Debug)]
pub(super) struct Report {
    out: Out,
    pub(super) settings: Settings,
    /// Names this run of the listener in `--out` file names: the first
    /// eight hex digits of its node id, which is new on every start.
    run: String,
    /// Hashes and writes every stream, when there is anything to do.
    pool: Option<Arc<Pool>>,
}

/// The stream handlers of one node.
pub(super) struct Streams<N: Net> {
    node: Node<N>,
    net: N,
    report: Report,
    /// Told each stream cut by its connection once its line is printed: the
    /// event printer holds the connection's `peer_disconnected` until then.
    cut: async_channel::Sender<(ConnId, StreamId)>,
}

impl<N: Net> Streams<N> {
    pub(super) fn new(
        node: Node<N>,
        net: N,
        out: Out,
        settings: Settings,
        cut: async_channel::Sender<(ConnId, StreamId)>,
    ) -> io::Result<Arc<Self>> {
        let report = Report::new(out, settings, node.node_id())?;
        Ok(Arc::new(Self {
            node,
            net,
            report,
            cut,
        }))
    }

    /// Handles every incoming stream until the node shuts down; the
    /// returned future completes once every handler has finished.
    pub(super) fn accept_all(self: Arc<Self>) -> impl Future<Output = ()> {
        // Every handler holds a sender; the receiver sees the channel close
        // when the last one is dropped.
        let (alive, all_done) = async_channel::bounded::<()>(1);
        let this = self.clone();
        self.net.spawn(Box::pin(async move {
            while let Some(incoming) = this.node.accept_stream().await {
                let (handler, alive) = (this.clone(), alive.clone());
                this.net.spawn(Box::pin(async move {
                    handler.handle(incoming).await;
                    drop(alive);
                }));
            }
            drop(alive);
        }));
        async move {
            let _ = all_done.recv().await;
        }
    }

    async fn handle(&self, incoming: IncomingStream) {
        let IncomingStream {
            conn,
            peer_node,
            addr,
            mut stream,
            ..
        } = incoming;
        let id = stream.id();
        let report = &self.report;
        let sink = report.sink(peer_node, addr, conn, id);
        let mut echo = if report.settings.echo {
            Some(Echo::open(&self.node, conn).await)
        } else {
            None
        };
        let mut sink_failed = false;
        let cut = loop {
            match stream.chunk().await {
                Ok(Some(chunk)) => {
                    let for_echo = echo.as_ref().map(|_| chunk.clone());
                    // A failed sink still lets the stream drain; finish()
                    // says why it failed.
                    if !sink_failed && sink.write(chunk).await.is_err() {
                        sink_failed = true;
                    }
                    if let (Some(echo), Some(chunk)) = (echo.as_mut(), for_echo) {
                        echo.send(chunk).await;
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        let (bytes, frames) = (stream.bytes(), stream.frames());
        if let Some(e) = cut {
            // The echo is dropped without its END: the peer never takes
            // it for a complete tensor.
            drop(echo);
            sink.abort().await;
            let reason = match &e {
                StreamError::Incomplete { reason, .. } => reason.as_str().to_string(),
                other => other.to_string(),
            };
            report.incomplete(peer_node, addr, id, bytes, &reason);
            if matches!(e, StreamError::Incomplete { .. }) {
                let _ = self.cut.try_send((conn, id));
            }
            return;
        }
        let saved = report.complete(peer_node, addr, id, (bytes, frames), sink.finish().await);
        if let Some(echo) = echo {
            let result = if saved {
                echo.finish().await
            } else {
                Err("the stream could not be saved; its echo was left unfinished".into())
            };
            report.echoed(addr, result);
        }
    }
}

/// A stream sent back to its sender as it arrives. A failure stops the
/// echo, not the incoming stream: it is kept to be reported at the end.
struct Echo {
    stream: Result<SendStream, String>,
    /// Keeps shutdown waiting for the echo in flight.
    _guard: Box<dyn Send>,
}

impl Echo {
    async fn open<N: Net>(node: &Node<N>, conn: ConnId) -> Self {
        let guard = Box::new(node.send_guard());
        let stream = node
            .open_stream(PeerRef::Conn(conn))
            .await
            .map_err(|e| e.to_string());
        Self {
            stream,
            _guard: guard,
        }
    }

    /// Waits while the connection's send queue is full, so the incoming
    /// stream is read no faster than its echo leaves.
    async fn send(&mut self, chunk: Bytes) {
        if let Ok(s) = &mut self.stream {
            if let Err(e) = s.send(chunk).await {
                self.stream = Err(e.to_string());
            }
        }
    }

    async fn finish(self) -> Result<StreamId, String> {
        let s = self.stream?;
        let id = s.id();
        s.finish().await.map_err(|e| e.to_string())?;
        Ok(id)
    }
}

impl Report {
    /// Starts the hashing and writing pool when digests or `--out` need
    /// it.
    pub(super) fn new(out: Out, settings: Settings, node: Uuid) -> io::Result<Self> {
        let run = node.simple().to_string()[..8].to_string();
        let pool = (settings.digest || settings.out_dir.is_some())
            .then(Pool::start)
            .transpose()?;
        Ok(Self {
            out,
            settings,
            run,
            pool,
        })
    }

    /// Reports a stream that ended with its END, with its bytes and frames,
    /// once its sink finished; false when it could not be saved (then it is
    /// reported incomplete).
    pub(super) fn complete(
        &self,
        peer_node: Option<Uuid>,
        addr: SocketAddr,
        id: StreamId,
        (bytes, frames): (u64, u32),
        sink: io::Result<Finished>,
    ) -> bool {
        match sink {
            Ok(done) => {
                let sha = done.sha256.map(|d| hex(&d));
                let file = done.file.map(|f| f.display().to_string());
                self.out.emit(
                    json!({"event": "stream_complete", "peer": peer(peer_node),
                           "addr": addr.to_string(), "stream": id.get(), "frames": frames,
                           "bytes": bytes, "sha256": sha, "file": file}),
                    || {
                        let mut line = format!(
                            "stream {id} from {} {addr} complete: {bytes} bytes in {frames} frames",
                            shown(peer_node)
                        );
                        if let Some(sha) = &sha {
                            line.push_str(&format!(", sha256 {sha}"));
                        }
                        if let Some(file) = &file {
                            line.push_str(&format!(", saved to {file}"));
                        }
                        line
                    },
                );
            }
            Err(e) => {
                crate::output::warn(format_args!(
                    "asoc: stream {id} from {addr} arrived but could not be saved: {e}"
                ));
                self.incomplete(peer_node, addr, id, bytes, "write_failed");
                return false;
            }
        }
        true
    }

    /// Where a new stream's bytes go: hashed and, with `--out`, written
    /// to `DIR/<peer>-<run>-<connection>-<stream>.bin`. Stream ids restart
    /// on every connection and node ids are public, so the run and the
    /// connection number keep a later stream from taking an earlier one's
    /// name. The file is created at the first chunk; one that cannot be
    /// makes the stream `write_failed`.
    pub(super) fn sink(
        &self,
        peer_node: Option<Uuid>,
        addr: SocketAddr,
        conn: ConnId,
        id: StreamId,
    ) -> Sink {
        let target = self.settings.out_dir.as_ref().map(|dir| {
            dir.join(format!(
                "{}-{}-{}-{id}.bin",
                label(peer_node, addr),
                self.run,
                conn.as_u64()
            ))
        });
        match &self.pool {
            Some(pool) => pool.sink(self.settings.digest, target),
            None => Sink::none(),
        }
    }

    /// Reports a stream cut off (or not saved) for `reason`.
    pub(super) fn incomplete(
        &self,
        peer_node: Option<Uuid>,
        addr: SocketAddr,
        id: StreamId,
        bytes: u64,
        reason: &str,
    ) {
        self.out.emit(
            json!({"event": "stream_incomplete", "peer": peer(peer_node),
                   "addr": addr.to_string(), "stream": id.get(), "bytes": bytes, "reason": reason}),
            || {
                format!(
                    "stream {id} from {} {addr} INCOMPLETE after {bytes} bytes ({reason})",
                    shown(peer_node)
                )
            },
        );
    }

    /// Reports how sending a stream back to `addr` went: our stream id, or
    /// why it failed.
    pub(super) fn echoed(&self, addr: SocketAddr, result: Result<StreamId, String>) {
        match result {
            Ok(id) => self
                .out
                .note(|| format!("echoed back to {addr} as stream {id}")),
            Err(e) => crate::output::warn(format_args!("asoc: echo to {addr} failed: {e}")),
        }
    }
}

/// The `<peer>` of the `--out` file names: the node id, or the address
/// when the peer's id is unknown.
fn label(peer_node: Option<Uuid>, addr: SocketAddr) -> String {
    match peer_node {
        Some(id) => id.to_string(),
        None => addr
            .to_string()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    }
}
