//! `asoc demo --runtime mio`: the same two nodes, handshake and verified
//! tensor over asoc-mio's blocking nodes; the receiver reads on a thread of
//! its own.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use asoc_mio::{Node, NodeBuilder, PeerRef};
use asoc_proto::node::ConnId;
use sha2::{Digest, Sha256};

use super::{Demo, Received, Tensor, COMMUNITY};
use crate::error::{CliError, CliResult};
use crate::os;

/// Runs the demo and prints its report.
pub(super) fn run(demo: Demo) -> CliResult {
    let key = Demo::key()?;
    let receiver = start(NodeBuilder::new(COMMUNITY, key.clone()))?;
    let sender = start(NodeBuilder::new(COMMUNITY, key).chunk_size(demo.chunk))?;
    demo.intro(receiver.local_addr());
    let link = sender
        .connect(receiver.local_addr())
        .map_err(|e| CliError::auth(format!("demo handshake failed: {e}")))?;
    // The dialer's counters as of the handshake's verdict: the HELLO it
    // wrote and the ACCEPT it read.
    let handshake_bytes = link.stats.bytes_in + link.stats.bytes_out;
    let receiving = std::thread::Builder::new()
        .name("asoc-demo-receiver".into())
        .spawn({
            let receiver = receiver.clone();
            move || receive(&receiver)
        })
        .map_err(|e| CliError::runtime(format!("cannot start the receiving thread: {e}")))?;
    let started = Instant::now();
    let sent = send(&sender, link.id, demo.size, demo.chunk)?;
    let got = receiving
        .join()
        .map_err(|_| CliError::runtime("the receiving thread ended"))??;
    let secs = started.elapsed().as_secs_f64();
    sender.shutdown(Duration::from_secs(5));
    receiver.shutdown(Duration::from_secs(5));
    demo.report(handshake_bytes, &sent, &got, secs)
}

fn start(builder: NodeBuilder) -> CliResult<Node> {
    let seed = os::seed().map_err(|e| CliError::runtime(format!("no OS randomness: {e}")))?;
    let id = os::node_id().map_err(|e| CliError::runtime(format!("no OS randomness: {e}")))?;
    builder
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .seed(seed)
        .node_id(id)
        .start()
        .map_err(|e| CliError::runtime(format!("cannot start a node on 127.0.0.1: {e}")))
}

/// Streams the tensor over `link`, hashing as it goes.
fn send(node: &Node, link: ConnId, size: u64, chunk: usize) -> CliResult<[u8; 32]> {
    let failed = |e: asoc_mio::Error| CliError::runtime(format!("sending failed: {e}"));
    let _guard = node.send_guard();
    let mut stream = node.open_stream(PeerRef::Conn(link)).map_err(failed)?;
    let mut tensor = Tensor::new(size, chunk);
    for block in tensor.by_ref() {
        stream.send(block).map_err(failed)?;
    }
    stream.finish().map_err(failed)?;
    Ok(tensor.finish())
}

fn receive(node: &Node) -> CliResult<Received> {
    let mut stream = node
        .accept_stream()
        .ok_or_else(|| CliError::runtime("the receiver shut down before the stream came"))?
        .stream;
    let mut hasher = Sha256::new();
    loop {
        match stream.chunk() {
            Ok(Some(chunk)) => hasher.update(&chunk),
            Ok(None) => break,
            Err(e) => return Err(CliError::runtime(format!("receiver: {e}"))),
        }
    }
    Ok(Received {
        bytes: stream.bytes(),
        frames: stream.frames(),
        digest: hasher.finalize().into(),
    })
}
