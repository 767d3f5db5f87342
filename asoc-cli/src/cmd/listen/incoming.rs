//! Incoming streams of `asoc listen`: each is hashed (and, with `--out`,
//! written) as its chunks arrive, reported complete or incomplete, and
//! with `--echo` sent back to its sender.

use asoc_proto::connection::StreamId;
use asoc_proto::node::ConnId;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use asoc_async::{IncomingStream, Net, Node, PeerRef, StreamError};
use bytes::Bytes;
use serde_json::json;
use uuid::Uuid;

use crate::events::{peer, shown};
use crate::output::{hex, Out};
use crate::sink::{Finished, Sink};

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
    ) -> Arc<Self> {
        let report = Report::new(out, settings, node.node_id());
        Arc::new(Self {
            node,
            net,
            report,
            cut,
        })
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
        let mut kept: Vec<Bytes> = Vec::new();
        let mut sink_failed = false;
        let cut = loop {
            match stream.chunk().await {
                Ok(Some(chunk)) => {
                    if report.settings.echo {
                        kept.push(chunk.clone());
                    }
                    // A failed sink still lets the stream drain; finish()
                    // says why it failed.
                    if !sink_failed && sink.write(chunk).await.is_err() {
                        sink_failed = true;
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        let (bytes, frames) = (stream.bytes(), stream.frames());
        if let Some(e) = cut {
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
        if saved && report.settings.echo {
            self.echo(conn, addr, kept).await;
        }
    }

    async fn echo(&self, conn: ConnId, addr: SocketAddr, chunks: Vec<Bytes>) {
        let _guard = self.node.send_guard();
        let result = async {
            let mut s = self.node.open_stream(PeerRef::Conn(conn)).await?;
            let id = s.id();
            for chunk in chunks {
                s.send(chunk).await?;
            }
            s.finish().await?;
            Ok::<_, asoc_async::Error>(id)
        }
        .await;
        self.report.echoed(addr, result.map_err(|e| e.to_string()));
    }
}

impl Report {
    pub(super) fn new(out: Out, settings: Settings, node: Uuid) -> Self {
        let run = node.simple().to_string()[..8].to_string();
        Self { out, settings, run }
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
    /// name. A sink that cannot start makes the stream `write_failed`.
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
        Sink::start(self.settings.digest, target).unwrap_or_else(Sink::failed)
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
