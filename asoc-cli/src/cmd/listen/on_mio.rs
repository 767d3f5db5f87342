//! `asoc listen --runtime mio`: the same node, events and stream handling
//! over asoc-mio's blocking node. Events are printed by a thread of their
//! own and every incoming stream is handled on a thread of its own.

use std::net::SocketAddr;
use std::time::Instant;

use asoc_mio::{IncomingStream, MioConfig, Node, NodeBuilder, PeerRef, StreamError};
use asoc_proto::node::ConnId;
use bytes::Bytes;
use futures_lite::future::block_on;

use super::incoming::Report;
use super::{Listen, GRACE};
use crate::error::{CliError, CliResult};
use crate::mio_rt::{self, Alive};
use crate::{events, os, signals};

/// Runs the node until SIGINT or SIGTERM, then shuts down gracefully.
pub(super) fn run(listen: Listen) -> CliResult {
    // Installed before binding: a signal right after "listening" is never
    // lost.
    let stop = signals::termination()?;
    let node = start(&listen)?;
    listen.listening(node.local_addr(), node.discovery_addr(), node.node_id());
    let alive = Alive::new();
    let thread_failed =
        |e: std::io::Error| CliError::runtime(format!("cannot start a thread: {e}"));
    mio_rt::spawn("asoc-events", alive.token(), {
        let (node, out) = (node.clone(), listen.out);
        move || {
            while let Some(event) = node.next_event() {
                events::print(out, &event);
            }
        }
    })
    .map_err(thread_failed)?;
    let report = Report::new(listen.out, listen.streams.clone());
    mio_rt::spawn("asoc-accept", alive.token(), {
        let node = node.clone();
        let token = alive.token();
        move || {
            while let Some(incoming) = node.accept_stream() {
                let (node, report) = (node.clone(), report.clone());
                let addr = incoming.addr;
                let handler = move || handle(&node, &report, incoming);
                if let Err(e) = mio_rt::spawn("asoc-stream", token.clone(), handler) {
                    eprintln!("asoc: cannot handle a stream from {addr}: {e}");
                }
            }
        }
    })
    .map_err(thread_failed)?;
    let _ = stop.recv_blocking();
    listen.out.note(|| "shutting down".into());
    node.shutdown(GRACE);
    // Streams cut by the shutdown report themselves; give them a moment.
    alive.wait(Instant::now() + GRACE);
    Ok(())
}

fn start(listen: &Listen) -> CliResult<Node> {
    let seed = os::seed().map_err(|e| CliError::runtime(format!("no OS randomness: {e}")))?;
    let id = os::node_id().map_err(|e| CliError::runtime(format!("no OS randomness: {e}")))?;
    let mut b = NodeBuilder::new(listen.community.clone(), listen.key.clone())
        .bind(listen.bind)
        .connection(MioConfig {
            connection: listen.driver.connection,
            ..MioConfig::default()
        })
        .policy(listen.policy.clone())
        .seed(seed)
        .node_id(id)
        .tls(listen.tls.clone());
    if let Some((bind, config)) = &listen.discovery {
        b = b.discovery(*bind, config.clone());
    }
    for peer in &listen.peers {
        b = b.static_peer(peer.clone());
    }
    b.start().map_err(|e| match e {
        asoc_mio::Error::Io(io) => listen.bind_failed(&io),
        other => CliError::runtime(format!("cannot start the node: {other}")),
    })
}

/// One incoming stream: hashed (and written) as it arrives, reported, and
/// with `--echo` sent back.
fn handle(node: &Node, report: &Report, incoming: IncomingStream) {
    let IncomingStream {
        conn,
        peer_node,
        addr,
        mut stream,
        ..
    } = incoming;
    let id = stream.id();
    let sink = report.sink(peer_node, addr, id);
    let mut kept: Vec<Bytes> = Vec::new();
    let mut sink_failed = false;
    let cut = loop {
        match stream.chunk() {
            Ok(Some(chunk)) => {
                if report.settings.echo {
                    kept.push(chunk.clone());
                }
                // A failed sink still lets the stream drain; finish() says
                // why it failed.
                if !sink_failed && block_on(sink.write(chunk)).is_err() {
                    sink_failed = true;
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    let (bytes, frames) = (stream.bytes(), stream.frames());
    if let Some(e) = cut {
        block_on(sink.abort());
        let reason = match &e {
            StreamError::Incomplete { reason, .. } => reason.as_str().to_string(),
            other => other.to_string(),
        };
        report.incomplete(peer_node, addr, id, bytes, &reason);
        return;
    }
    let saved = report.complete(
        peer_node,
        addr,
        id,
        (bytes, frames),
        block_on(sink.finish()),
    );
    if saved && report.settings.echo {
        echo(node, report, conn, addr, kept);
    }
}

fn echo(node: &Node, report: &Report, conn: ConnId, addr: SocketAddr, chunks: Vec<Bytes>) {
    let _guard = node.send_guard();
    let result = (|| {
        let mut s = node.open_stream(PeerRef::Conn(conn))?;
        let id = s.id();
        for chunk in chunks {
            s.send(chunk)?;
        }
        s.finish()?;
        Ok::<_, asoc_mio::Error>(id)
    })();
    report.echoed(addr, result.map_err(|e| e.to_string()));
}
