//! `asoc demo`: two nodes on loopback on the chosen runtime, an
//! authenticated handshake and a SHA-256-verified tensor stream, with no
//! set-up at all (a fresh key held in memory, free ports).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use asoc_async::{Net, Node, NodeBuilder, PeerRef};
use asoc_proto::auth::ApiKey;
use asoc_proto::node::ConnId;
use asoc_proto::rng::Rng;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::cli::DemoArgs;
use crate::error::{CliError, CliResult};
use crate::os;
use crate::output::hex;
use crate::progress::Progress;
use crate::runtime::{spawn, Job, RuntimeKind};

const COMMUNITY: &str = "asoc-demo";

/// A checked `demo` command, ready to run.
pub(crate) struct Demo {
    size: u64,
    chunk: usize,
    runtime: RuntimeKind,
}

/// What the receiving node saw.
struct Received {
    bytes: u64,
    frames: u32,
    digest: [u8; 32],
}

impl Demo {
    pub(crate) fn prepare(args: &DemoArgs) -> CliResult<Self> {
        if args.chunk_size == 0 || args.chunk_size > 16 << 20 {
            return Err(CliError::usage("--chunk-size must be between 1B and 16MiB"));
        }
        Ok(Self {
            size: args.size,
            chunk: usize::try_from(args.chunk_size).unwrap_or(1 << 20),
            runtime: args.runtime.runtime,
        })
    }

    pub(crate) fn runtime(&self) -> RuntimeKind {
        self.runtime
    }

    /// A fresh key, held in memory only.
    fn key() -> CliResult<ApiKey> {
        let seed = os::seed()?;
        Ok(ApiKey::generate(Rng::from_seed(seed).inner()))
    }

    fn intro(&self, receiver: SocketAddr) {
        println!(
            "asoc demo: two nodes on loopback ({} runtime), a fresh 256-bit key held in memory",
            self.runtime.name()
        );
        println!("  receiver listening on {receiver}");
    }

    /// The report, after both nodes shut down: `secs` from the first chunk
    /// to the receiver's end.
    fn report(
        &self,
        handshake: &Handshake,
        sent: &[u8; 32],
        got: &Received,
        secs: f64,
    ) -> CliResult {
        let secs = secs.max(1e-9);
        let Handshake {
            proven: Some(proven),
            suite: Some(suite),
        } = handshake
        else {
            return Err(CliError::auth(
                "demo handshake did not run v2: no suite or no proven node id",
            ));
        };
        println!(
            "  handshake:   HELLO2 86 B + ACCEPT2 86 B + CONFIRM 30 B, Noise NNpsk0 with {suite}; \
             the receiver proved node id {proven}"
        );
        println!("  channel:     every frame encrypted and authenticated ({suite})");
        println!(
            "  transferred: {} bytes in {} DATA frames + END",
            got.bytes, got.frames
        );
        println!(
            "  throughput:  {:.1} MiB/s ({secs:.3} s)",
            got.bytes as f64 / (1024.0 * 1024.0) / secs
        );
        println!("  sha256 sent:     {}", hex(sent));
        println!("  sha256 received: {}", hex(&got.digest));
        if got.digest == *sent && got.bytes == self.size {
            println!("  verification: OK, the tensor arrived intact");
            Ok(())
        } else {
            Err(CliError::runtime(
                "verification FAILED: the received tensor differs from the one sent",
            ))
        }
    }
}

/// What the dialer's handshake established.
struct Handshake {
    proven: Option<uuid::Uuid>,
    suite: Option<asoc_proto::v2::Suite>,
}

async fn start<N: Net>(net: &N, builder: NodeBuilder) -> CliResult<Node<N>> {
    let seed = os::seed()?;
    let id = os::node_id()?;
    builder
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .start(net.clone(), seed, id)
        .await
        .map_err(|e| CliError::runtime(format!("cannot start a node on 127.0.0.1: {e}")))
}

impl Job for Demo {
    type Output = ();

    async fn run<N: Net>(self, net: N) -> CliResult {
        let key = Self::key()?;
        let receiver = start(&net, NodeBuilder::new(COMMUNITY, key.clone())).await?;
        let sender = start(
            &net,
            NodeBuilder::new(COMMUNITY, key).chunk_size(self.chunk),
        )
        .await?;
        self.intro(receiver.local_addr());
        let link = sender
            .connect(receiver.local_addr().to_string())
            .await
            .map_err(|e| CliError::auth(format!("demo handshake failed: {e}")))?;
        let handshake = Handshake {
            proven: link.peer_node,
            suite: link.session.and_then(|s| s.suite),
        };
        let receiving = spawn(&net, receive(receiver.clone()));
        let started = Instant::now();
        let sent = send(&sender, link.id, self.size, self.chunk).await?;
        let got = receiving
            .await
            .ok_or_else(|| CliError::runtime("the receiving task ended"))??;
        let secs = started.elapsed().as_secs_f64();
        sender.shutdown(Duration::from_secs(5)).await;
        receiver.shutdown(Duration::from_secs(5)).await;
        self.report(&handshake, &sent, &got, secs)
    }
}

/// Streams `size` bytes of a deterministic pattern over `link`, hashing as
/// it goes.
async fn send<N: Net>(
    node: &Node<N>,
    link: ConnId,
    size: u64,
    chunk: usize,
) -> CliResult<[u8; 32]> {
    let failed = |e: asoc_async::Error| CliError::runtime(format!("sending failed: {e}"));
    let _guard = node.send_guard();
    let mut stream = node
        .open_stream(PeerRef::Conn(link))
        .await
        .map_err(failed)?;
    let mut tensor = Tensor::new(size, chunk);
    for block in tensor.by_ref() {
        stream.send(block).await.map_err(failed)?;
    }
    stream.finish().await.map_err(failed)?;
    Ok(tensor.finish())
}

async fn receive<N: Net>(node: Node<N>) -> CliResult<Received> {
    let incoming = node
        .accept_stream()
        .await
        .ok_or_else(|| CliError::runtime("the receiver shut down before the stream came"))?;
    let mut stream = incoming.stream;
    let mut hasher = Sha256::new();
    loop {
        match stream.chunk().await {
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

/// The tensor to send, in chunks, with its SHA-256 and a progress bar.
struct Tensor {
    pattern: Pattern,
    left: u64,
    chunk: usize,
    hasher: Sha256,
    bar: Progress,
}

impl Tensor {
    fn new(size: u64, chunk: usize) -> Self {
        Self {
            pattern: Pattern(0x9e37_79b9_7f4a_7c15),
            left: size,
            chunk,
            hasher: Sha256::new(),
            bar: Progress::new("  sending", Some(size)),
        }
    }

    /// Every chunk is sent: the SHA-256 of the tensor.
    fn finish(self) -> [u8; 32] {
        self.bar.finish();
        self.hasher.finalize().into()
    }
}

/// The chunks, each counted as sent when taken.
impl Iterator for Tensor {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.left == 0 {
            return None;
        }
        let n = usize::try_from(self.left.min(self.chunk as u64)).unwrap_or(self.chunk);
        let block = self.pattern.fill(n);
        self.hasher.update(&block);
        self.left -= n as u64;
        self.bar.advance(n as u64);
        Some(block)
    }
}

/// xorshift64: cheap, deterministic tensor bytes.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, n: usize) -> Bytes {
        let mut block = vec![0u8; n];
        for word in block.chunks_mut(8) {
            let x = &mut self.0;
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
        }
        Bytes::from(block)
    }
}
