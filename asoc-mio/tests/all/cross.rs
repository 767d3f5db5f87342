//! Cross-adapter: mio nodes and tokio / smol nodes, with static peers in
//! each direction, stream SHA-256-verified tensors both ways on loopback.

use std::future::Future;
use std::thread;
use std::time::Duration;

use asoc_async::{Net, Node as AsyncNode, NodeBuilder as AsyncBuilder};
use asoc_mio::{Node as MioNode, NodeBuilder as MioBuilder, PeerRef};
use asoc_proto::auth::ApiKey;
use asoc_proto::node::ConnId;
use asoc_testkit::scenarios::{chunk, chunks_digest};

use crate::common::hashed;
use bytes::Bytes;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const COMMUNITY: &str = "cross-cluster";
const LIMIT: Duration = Duration::from_secs(60);
const TOTAL: u64 = 40 << 20;
const CHUNK: usize = 1 << 20;

/// Runs a future of the other adapter to completion on the calling thread.
trait Exec: Clone + Send + 'static {
    fn block_on<F: Future>(&self, f: F) -> F::Output;
}

#[derive(Clone)]
struct TokioExec(tokio::runtime::Handle);

impl Exec for TokioExec {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.0.block_on(f)
    }
}

#[derive(Clone)]
struct SmolExec;

impl Exec for SmolExec {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        smol::block_on(f)
    }
}

fn key() -> ApiKey {
    ApiKey::new(KEY).unwrap()
}

fn mio_builder() -> MioBuilder {
    MioBuilder::new(COMMUNITY, key()).bind("127.0.0.1:0".parse().unwrap())
}

fn async_builder() -> AsyncBuilder {
    AsyncBuilder::new(COMMUNITY, key()).bind("127.0.0.1:0".parse().unwrap())
}

fn expected_digest(seed: u64) -> Vec<u8> {
    chunks_digest(seed, TOTAL / CHUNK as u64, CHUNK)
}

/// Both nodes connected; the connection ids on each side.
fn connected<N: Net, E: Exec>(mio: &MioNode, other: &AsyncNode<N>, exec: &E) -> (ConnId, ConnId) {
    assert_eq!(mio.wait_for_peers(1, LIMIT), 1, "mio connected");
    assert_eq!(
        exec.block_on(other.wait_for_peers(1, LIMIT)),
        1,
        "other connected"
    );
    let on_mio = mio
        .connected_peers()
        .into_iter()
        .find(|p| p.peer_node == Some(other.node_id()) || p.addr == other.local_addr())
        .expect("mio's connection")
        .id;
    let on_other = other
        .connected_peers()
        .into_iter()
        .find(|p| p.peer_node == Some(mio.node_id()) || p.addr == mio.local_addr())
        .expect("the other node's connection")
        .id;
    (on_mio, on_other)
}

/// A verified tensor from mio to the other node, then one back.
fn both_ways<N: Net, E: Exec>(mio: &MioNode, other: &AsyncNode<N>, exec: &E) {
    let (on_mio, on_other) = connected(mio, other, exec);

    // mio -> other
    let receiver = {
        let (other, exec) = (other.clone(), exec.clone());
        thread::spawn(move || {
            exec.block_on(async move {
                let mut incoming = other.accept_stream().await.unwrap();
                asoc_testkit::scenarios::hashed(&mut incoming.stream).await
            })
        })
    };
    let mut s = mio.open_stream(PeerRef::Conn(on_mio)).unwrap();
    for i in 0..TOTAL / CHUNK as u64 {
        s.send(Bytes::from(chunk(1, i, CHUNK))).unwrap();
    }
    s.finish().unwrap();
    assert_eq!(receiver.join().unwrap(), (TOTAL, expected_digest(1)));

    // other -> mio
    let sender = {
        let (other, exec) = (other.clone(), exec.clone());
        thread::spawn(move || {
            exec.block_on(async move {
                let mut s = other.open_stream(PeerRef::Conn(on_other)).await.unwrap();
                for i in 0..TOTAL / CHUNK as u64 {
                    s.send(Bytes::from(chunk(2, i, CHUNK))).await.unwrap();
                }
                s.finish().await.unwrap();
            })
        })
    };
    let mut incoming = mio.accept_stream_timeout(LIMIT).unwrap();
    let received = hashed(&mut incoming.stream);
    sender.join().unwrap();
    assert_eq!(received, (TOTAL, expected_digest(2)));
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn mio_dials_tokio_and_tensors_flow_both_ways() {
    let rt = tokio_runtime();
    let exec = TokioExec(rt.handle().clone());
    let tokio_node = rt.block_on(asoc_tokio::start(async_builder())).unwrap();
    let mio = mio_builder()
        .static_peer(tokio_node.local_addr().to_string())
        .start()
        .unwrap();
    both_ways(&mio, &tokio_node, &exec);
    mio.shutdown(Duration::from_secs(5));
    rt.block_on(tokio_node.shutdown(Duration::from_secs(5)));
}

#[test]
fn tokio_dials_mio_and_tensors_flow_both_ways() {
    let rt = tokio_runtime();
    let exec = TokioExec(rt.handle().clone());
    let mio = mio_builder().start().unwrap();
    let tokio_node = rt
        .block_on(asoc_tokio::start(
            async_builder().static_peer(mio.local_addr().to_string()),
        ))
        .unwrap();
    both_ways(&mio, &tokio_node, &exec);
    rt.block_on(tokio_node.shutdown(Duration::from_secs(5)));
    mio.shutdown(Duration::from_secs(5));
}

#[test]
fn mio_dials_smol_and_tensors_flow_both_ways() {
    let smol_node = smol::block_on(asoc_smol::start(async_builder())).unwrap();
    let mio = mio_builder()
        .static_peer(smol_node.local_addr().to_string())
        .start()
        .unwrap();
    both_ways(&mio, &smol_node, &SmolExec);
    mio.shutdown(Duration::from_secs(5));
    smol::block_on(smol_node.shutdown(Duration::from_secs(5)));
}

#[test]
fn smol_dials_mio_and_tensors_flow_both_ways() {
    let mio = mio_builder().start().unwrap();
    let smol_node = smol::block_on(asoc_smol::start(
        async_builder().static_peer(mio.local_addr().to_string()),
    ))
    .unwrap();
    both_ways(&mio, &smol_node, &SmolExec);
    smol::block_on(smol_node.shutdown(Duration::from_secs(5)));
    mio.shutdown(Duration::from_secs(5));
}
