//! A node on a mio loop of its own thread: listens, dials static and
//! discovered peers, runs discovery, and hands the application streams to
//! and from peers through blocking, thread-safe methods. Every decision
//! comes from [`asoc_proto::node::Node`]; the loop only moves bytes,
//! datagrams and verdicts between it and the sockets.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::connection::{CloseReason, Connection, Event};
use asoc_proto::dial::{Dial, DialConfig, DialTarget};
use asoc_proto::discovery::DiscoveryConfig;
use asoc_proto::node::{
    ConnId, ConnectionInfo, Node as ProtoNode, NodeConfig, NodeCounters, NodeEvent as ProtoEvent,
};
use asoc_proto::policy::PolicyConfig;
use asoc_proto::rng::Seed;
use bytes::Bytes;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use uuid::Uuid;

use crate::blocking::{Cmd, Error, Link, MioConfig, RecvStream, Shared};
use crate::driver::{Driver, Judge};
use crate::tls::{server_name, TlsConfig, TlsStream};

const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
const UDP: Token = Token(2);

fn token(id: ConnId) -> Token {
    Token(3 + id.as_u64() as usize)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Something that happened on a node, for the application (the same shape
/// as the async adapters' `NodeEvent`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A decision of the protocol core: peer connected or disconnected,
    /// authentication failed, lockout, peer discovered or expired, ...
    Node(ProtoEvent),
    /// An incoming stream ended with its END: it is complete.
    StreamComplete {
        /// The connection.
        conn: ConnId,
        /// The peer's node id when known.
        peer_node: Option<Uuid>,
        /// The peer's address.
        addr: SocketAddr,
        /// Stream id.
        stream: u32,
        /// DATA frames.
        frames: u32,
        /// Payload bytes.
        bytes: u64,
    },
    /// An incoming stream was cut off by its connection closing.
    StreamIncomplete {
        /// The connection.
        conn: ConnId,
        /// The peer's node id when known.
        peer_node: Option<Uuid>,
        /// The peer's address.
        addr: SocketAddr,
        /// Stream id.
        stream: u32,
        /// Payload bytes received before the cut.
        bytes: u64,
        /// Why the connection closed.
        reason: CloseReason,
    },
}

/// A new incoming stream and who sent it.
#[derive(Debug)]
#[non_exhaustive]
pub struct IncomingStream {
    /// The connection it arrived on.
    pub conn: ConnId,
    /// The sender's node id when known (inbound connections carry it).
    pub peer_node: Option<Uuid>,
    /// The sender's address.
    pub addr: SocketAddr,
    /// The stream.
    pub stream: RecvStream,
}

/// Which peer to send to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRef {
    /// A connection by id.
    Conn(ConnId),
    /// Any established connection to this node id.
    Node(Uuid),
    /// Any established connection to this address.
    Addr(SocketAddr),
}

/// What a node knows of a connected peer.
pub type PeerInfo = ConnectionInfo;

/// How a node is set up. Defaults follow WIRE.md §6: TCP on 0.0.0.0:9000,
/// no discovery, no static peers, 1 MiB chunks.
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    community: String,
    keys: KeyRing,
    node_id: Option<Uuid>,
    bind: SocketAddr,
    discovery: Option<(SocketAddr, DiscoveryConfig)>,
    static_peers: Vec<String>,
    config: MioConfig,
    policy: Option<PolicyConfig>,
    dial: Option<DialConfig>,
    chunk_size: usize,
    seed: Option<Seed>,
    max_events: usize,
    tls: TlsConfig,
}

impl NodeBuilder {
    /// A node of `community` authenticating with `key`.
    #[must_use]
    pub fn new(community: impl Into<String>, key: ApiKey) -> Self {
        Self {
            community: community.into(),
            keys: KeyRing::new(key),
            node_id: None,
            bind: SocketAddr::from(([0, 0, 0, 0], 9000)),
            discovery: None,
            static_peers: Vec::new(),
            config: MioConfig::default(),
            policy: None,
            dial: None,
            chunk_size: 1 << 20,
            seed: None,
            max_events: 65_536,
            tls: TlsConfig::default(),
        }
    }

    /// Uses a key ring (current key plus previous keys still accepted).
    #[must_use]
    pub fn keys(mut self, keys: KeyRing) -> Self {
        self.keys = keys;
        self
    }

    /// The node id (default: random v4).
    #[must_use]
    pub fn node_id(mut self, id: Uuid) -> Self {
        self.node_id = Some(id);
        self
    }

    /// TCP listen address (default 0.0.0.0:9000; port 0 picks a free one).
    #[must_use]
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Enables discovery on UDP `bind` (usually port 9999, bound with
    /// broadcast allowed) with `config` (built from the same community:
    /// broadcast address, unicast targets, rates).
    #[must_use]
    pub fn discovery(mut self, bind: SocketAddr, config: DiscoveryConfig) -> Self {
        self.discovery = Some((bind, config));
        self
    }

    /// Adds a static peer, `host:port`; names are resolved when dialing.
    #[must_use]
    pub fn static_peer(mut self, target: impl Into<String>) -> Self {
        self.static_peers.push(target.into());
        self
    }

    /// Connection limits and timers, and the loop's receive bound and read
    /// limit per connection.
    #[must_use]
    pub fn connection(mut self, config: MioConfig) -> Self {
        self.config = config;
        self
    }

    /// Admission policy (caps, lockout, attempt rate).
    #[must_use]
    pub fn policy(mut self, config: PolicyConfig) -> Self {
        self.policy = Some(config);
        self
    }

    /// Reconnect schedule.
    #[must_use]
    pub fn dial(mut self, config: DialConfig) -> Self {
        self.dial = Some(config);
        self
    }

    /// Chunk size for [`Node::send`] (default 1 MiB).
    #[must_use]
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes.max(1);
        self
    }

    /// A fixed seed for the protocol's randomness (tests); by default one is
    /// drawn from the OS.
    #[must_use]
    pub fn seed(mut self, seed: Seed) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Events kept while the application is not reading them; more are
    /// dropped and counted (default 65,536).
    #[must_use]
    pub fn max_events(mut self, n: usize) -> Self {
        self.max_events = n.max(1);
        self
    }

    /// Runs accepted connections (`tls.server`) and dialed ones
    /// (`tls.client`) inside TLS (RFC-0002 §9.2; build the configurations
    /// with [`tls::server_config`](crate::tls::server_config) and
    /// [`tls::client_config`](crate::tls::client_config)). A dialed peer is
    /// verified for the host of its `host:port` target, or for its IP
    /// address when connected by address. The TLS handshake runs within the
    /// ASoc handshake timeout; a failed one closes the connection as a
    /// transport failure. Default: no TLS.
    #[must_use]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// The community string.
    #[must_use]
    pub fn community(&self) -> &str {
        &self.community
    }

    /// Binds the sockets and starts the node's loop on a thread of its own.
    pub fn start(self) -> Result<Node, Error> {
        let seed = match self.seed {
            Some(seed) => seed,
            None => crate::os_seed()?,
        };
        let node_id = match self.node_id {
            Some(id) => id,
            None => {
                let b = crate::os_seed()?;
                let mut id = [0u8; 16];
                id.copy_from_slice(&b[..16]);
                uuid::Builder::from_random_bytes(id).into_uuid()
            }
        };
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listener = TcpListener::bind(self.bind)?;
        let tcp_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut config = NodeConfig::new(node_id, self.keys)
            .connection(self.config.connection)
            .tcp_port(tcp_addr.port());
        let (udp, udp_addr) = match self.discovery {
            Some((bind, discovery)) => {
                let mut udp = UdpSocket::bind(bind)?;
                udp.set_broadcast(true)?;
                poll.registry()
                    .register(&mut udp, UDP, Interest::READABLE)?;
                let addr = udp.local_addr()?;
                config = config.discovery(discovery);
                (Some(udp), Some(addr))
            }
            None => (None, None),
        };
        if let Some(p) = self.policy {
            config = config.policy(p);
        }
        if let Some(d) = self.dial {
            config = config.dial(d);
        }
        for peer in self.static_peers {
            config = config.static_peer(DialTarget::Name(peer));
        }
        let proto = Arc::new(Mutex::new(ProtoNode::new(config, seed, Instant::now())));
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let events = Arc::new(Queue::new(self.max_events));
        let incoming = Arc::new(Queue::new(usize::MAX));
        let links = Arc::new(Mutex::new(HashMap::new()));
        let event_loop = Loop {
            poll,
            proto: proto.clone(),
            listener: Some(listener),
            udp,
            peers: HashMap::new(),
            links: links.clone(),
            cmds: cmd_rx,
            cmd_tx: cmd_tx.clone(),
            waker: waker.clone(),
            events: events.clone(),
            incoming: incoming.clone(),
            config: self.config,
            tls: self.tls,
            stopping: false,
            closing: None,
            retry_accept: None,
        };
        let thread = std::thread::Builder::new()
            .name("asoc-mio-node".into())
            .spawn(move || event_loop.run())?;
        Ok(Node {
            inner: Arc::new(Inner {
                proto,
                links,
                cmds: cmd_tx,
                waker,
                events,
                incoming,
                tcp_addr,
                udp_addr,
                chunk_size: self.chunk_size,
                sends: Mutex::new(0),
                sends_done: Condvar::new(),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }
}

/// A FIFO between the loop and the application; closed when the loop ends.
#[derive(Debug)]
struct Queue<T> {
    state: Mutex<(VecDeque<T>, bool)>,
    ready: Condvar,
    cap: usize,
    dropped: AtomicU64,
}

impl<T> Queue<T> {
    fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new((VecDeque::new(), false)),
            ready: Condvar::new(),
            cap,
            dropped: AtomicU64::new(0),
        }
    }

    fn push(&self, item: T) {
        let mut st = lock(&self.state);
        if st.1 || st.0.len() >= self.cap {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        st.0.push_back(item);
        self.ready.notify_one();
    }

    fn close(&self) {
        lock(&self.state).1 = true;
        self.ready.notify_all();
    }

    /// The next item, waiting until `deadline` (forever if `None`); `None`
    /// once closed and empty.
    fn pop(&self, deadline: Option<Instant>) -> Option<T> {
        let mut st = lock(&self.state);
        loop {
            if let Some(item) = st.0.pop_front() {
                return Some(item);
            }
            if st.1 {
                return None;
            }
            st = match deadline {
                None => self.ready.wait(st).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.ready
                        .wait_timeout(st, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    fn try_pop(&self) -> Option<T> {
        lock(&self.state).0.pop_front()
    }
}

/// Commands from handles and helper threads to the loop.
enum NodeCmd {
    Connect(
        std::net::TcpStream,
        mpsc::SyncSender<Result<PeerInfo, Error>>,
    ),
    /// A dial by name, connected (or not) on a helper thread.
    Dialed(Dial, io::Result<std::net::TcpStream>),
    Conn(ConnId, Cmd),
    /// Stop accepting, dialing and announcing.
    Stop,
    /// Close every connection gracefully and end once all closed (or at the
    /// deadline, if any).
    CloseAll(Option<Instant>),
}

/// Shared by the handles (the loop holds what it needs separately, so the
/// last handle dropping ends the loop).
struct Inner {
    proto: Arc<Mutex<ProtoNode>>,
    links: Arc<Mutex<HashMap<ConnId, Arc<Shared>>>>,
    cmds: mpsc::Sender<NodeCmd>,
    waker: Arc<Waker>,
    events: Arc<Queue<NodeEvent>>,
    incoming: Arc<Queue<IncomingStream>>,
    tcp_addr: SocketAddr,
    udp_addr: Option<SocketAddr>,
    chunk_size: usize,
    sends: Mutex<usize>,
    sends_done: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn command(&self, cmd: NodeCmd) -> Result<(), Error> {
        self.cmds.send(cmd).map_err(|_| Error::Gone)?;
        self.waker.wake().map_err(Error::Io)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every handle is gone: close gracefully (the protocol's own timers
        // bound how long that takes) and let the thread end.
        let _ = self.command(NodeCmd::CloseAll(None));
    }
}

/// A running node: a mio loop on its own thread behind blocking,
/// thread-safe methods. Clones share the node; dropping the last one closes
/// every connection gracefully.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.node_id())
            .field("tcp", &self.inner.tcp_addr)
            .field("udp", &self.inner.udp_addr)
            .finish()
    }
}

impl Node {
    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> Uuid {
        lock(&self.inner.proto).node_id()
    }

    /// The chunk size [`send`](Self::send) uses.
    #[must_use]
    pub fn chunk_size(&self) -> usize {
        self.inner.chunk_size
    }

    /// The bound TCP address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.tcp_addr
    }

    /// The bound UDP discovery address, when discovery is on.
    #[must_use]
    pub fn discovery_addr(&self) -> Option<SocketAddr> {
        self.inner.udp_addr
    }

    /// Connections, established or still in their handshake.
    #[must_use]
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = lock(&self.inner.proto).connections().collect();
        v.sort_by_key(|p| p.id);
        v
    }

    /// Established connections only.
    #[must_use]
    pub fn connected_peers(&self) -> Vec<PeerInfo> {
        self.peers().into_iter().filter(|p| p.established).collect()
    }

    /// The node's counters.
    #[must_use]
    pub fn counters(&self) -> NodeCounters {
        lock(&self.inner.proto).counters()
    }

    /// Events dropped because the application did not read them.
    #[must_use]
    pub fn events_dropped(&self) -> u64 {
        self.inner.events.dropped.load(Ordering::Relaxed)
    }

    /// Dials `target` once, outside the reconnect schedule (connecting on
    /// the calling thread, trying each address `target` resolves to), and
    /// waits for the handshake.
    pub fn connect(&self, target: impl ToSocketAddrs) -> Result<PeerInfo, Error> {
        let stream = std::net::TcpStream::connect(target)?;
        let (tx, rx) = mpsc::sync_channel(1);
        self.inner.command(NodeCmd::Connect(stream, tx))?;
        rx.recv().map_err(|_| Error::Gone)?
    }

    fn resolve(&self, peer: PeerRef) -> Result<ConnId, Error> {
        let found = lock(&self.inner.proto)
            .connections()
            .filter(|c| c.established)
            .filter(|c| match peer {
                PeerRef::Conn(id) => c.id == id,
                PeerRef::Node(node) => c.peer_node == Some(node),
                PeerRef::Addr(addr) => c.addr == addr,
            })
            .map(|c| c.id)
            .min();
        found.ok_or_else(|| Error::UnknownPeer(format!("{peer:?}")))
    }

    /// Opens a stream to `peer`.
    pub fn open_stream(&self, peer: PeerRef) -> Result<SendStream, Error> {
        let conn = self.resolve(peer)?;
        let shared = lock(&self.inner.links)
            .get(&conn)
            .cloned()
            .ok_or_else(|| Error::UnknownPeer(format!("{peer:?}")))?;
        let mut stream = SendStream {
            id: 0,
            conn,
            shared,
            cmds: self.inner.cmds.clone(),
            waker: self.inner.waker.clone(),
        };
        let (tx, rx) = mpsc::sync_channel(1);
        stream.command(Cmd::Open(tx))?;
        stream.id = rx.recv().map_err(|_| stream.gone())??;
        Ok(stream)
    }

    /// Sends `data` to `peer` as one stream in chunks of the configured size
    /// (no copy) and finishes it, waiting while the connection's send queue
    /// is full. Returns the stream id.
    pub fn send(&self, peer: PeerRef, data: Bytes) -> Result<u32, Error> {
        let _guard = self.send_guard();
        let mut s = self.open_stream(peer)?;
        let id = s.id();
        s.send_chunked(data, self.inner.chunk_size)?;
        s.finish()?;
        Ok(id)
    }

    /// Marks a send as in flight for graceful shutdown; keep the guard while
    /// sending through a stream from [`open_stream`](Self::open_stream).
    pub fn send_guard(&self) -> SendGuard {
        *lock(&self.inner.sends) += 1;
        SendGuard(self.inner.clone())
    }

    /// The next incoming stream, `None` after shutdown.
    pub fn accept_stream(&self) -> Option<IncomingStream> {
        self.inner.incoming.pop(None)
    }

    /// Like [`accept_stream`](Self::accept_stream), giving up after
    /// `timeout`.
    pub fn accept_stream_timeout(&self, timeout: Duration) -> Option<IncomingStream> {
        self.inner.incoming.pop(Some(Instant::now() + timeout))
    }

    /// The next event, `None` after shutdown.
    pub fn next_event(&self) -> Option<NodeEvent> {
        self.inner.events.pop(None)
    }

    /// An event if one is waiting.
    pub fn try_event(&self) -> Option<NodeEvent> {
        self.inner.events.try_pop()
    }

    /// The next event, giving up after `timeout`.
    pub fn event_timeout(&self, timeout: Duration) -> Option<NodeEvent> {
        self.inner.events.pop(Some(Instant::now() + timeout))
    }

    /// Waits until at least `n` connections are established or `timeout`
    /// passes; returns how many are.
    pub fn wait_for_peers(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self.connected_peers().len();
            if count >= n || Instant::now() >= deadline {
                return count;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Shuts down gracefully: stops accepting, dialing and announcing, waits
    /// up to `grace` for sends in flight to finish, then closes every
    /// connection (queued frames are still written), waits for them to close
    /// until the deadline, and joins the loop's thread. Incoming streams and
    /// events already queued can still be taken; then both report `None`.
    pub fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let _ = self.inner.command(NodeCmd::Stop);
        let mut sends = lock(&self.inner.sends);
        while *sends > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sends = self
                .inner
                .sends_done
                .wait_timeout(sends, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(sends);
        let _ = self.inner.command(NodeCmd::CloseAll(Some(deadline)));
        let thread = lock(&self.inner.thread).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Keeps [`Node::shutdown`] waiting (up to its grace) while alive.
#[must_use]
pub struct SendGuard(Arc<Inner>);

impl std::fmt::Debug for SendGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendGuard")
    }
}

impl Drop for SendGuard {
    fn drop(&mut self) {
        let mut n = lock(&self.0.sends);
        *n -= 1;
        if *n == 0 {
            self.0.sends_done.notify_all();
        }
    }
}

/// An outgoing stream. Chunks are queued without copying; `send` waits
/// while the connection's send queue is above its high-water mark. Dropping
/// a stream without [`finish`](Self::finish) never sends END: the peer sees
/// it incomplete when the connection closes.
#[derive(Debug)]
pub struct SendStream {
    id: u32,
    conn: ConnId,
    shared: Arc<Shared>,
    cmds: mpsc::Sender<NodeCmd>,
    waker: Arc<Waker>,
}

impl std::fmt::Debug for NodeCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCmd")
    }
}

impl SendStream {
    /// The stream id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The connection it runs on.
    #[must_use]
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    fn command(&self, cmd: Cmd) -> Result<(), Error> {
        self.cmds
            .send(NodeCmd::Conn(self.conn, cmd))
            .map_err(|_| self.gone())?;
        self.waker.wake().map_err(Error::Io)
    }

    fn gone(&self) -> Error {
        self.shared.reason().map_or(Error::Gone, Error::Closed)
    }

    /// Queues one chunk as one DATA frame, waiting while the send queue is
    /// full.
    pub fn send(&mut self, chunk: Bytes) -> Result<(), Error> {
        self.shared.reserve(self.id, chunk.len())?;
        self.command(Cmd::Data {
            stream: self.id,
            chunk,
        })
    }

    /// Queues `data` as DATA frames of at most `chunk_size` bytes, sharing
    /// its memory.
    pub fn send_chunked(&mut self, data: Bytes, chunk_size: usize) -> Result<(), Error> {
        let chunk_size = chunk_size.max(1);
        let mut off = 0;
        while off < data.len() {
            let end = data.len().min(off + chunk_size);
            self.send(data.slice(off..end))?;
            off = end;
        }
        Ok(())
    }

    /// Sends END: the stream is complete. Fails, and sends no END, if any
    /// chunk of the stream was refused, so the peer never takes a partial
    /// tensor for a complete one.
    pub fn finish(self) -> Result<(), Error> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.command(Cmd::Finish(self.id, tx))?;
        rx.recv().map_err(|_| self.gone())??;
        Ok(())
    }
}

/// Hands a connection's handshake messages to the node for its verdict.
struct NodeJudge {
    proto: Arc<Mutex<ProtoNode>>,
    id: ConnId,
}

impl Judge for NodeJudge {
    fn judge(&mut self, now: Instant, conn: &mut Connection) {
        // Once established the node has nothing to decide per input.
        if conn.is_handshaking() {
            lock(&self.proto).drive(now, self.id, conn);
        }
    }
}

struct Peer {
    id: ConnId,
    addr: SocketAddr,
    link: Link<NodeIo, NodeJudge>,
    /// An application `connect` waiting for the handshake.
    waiter: Option<mpsc::SyncSender<Result<PeerInfo, Error>>>,
}

/// Who asked for an outbound connection.
enum Opener {
    Dial(Dial),
    App(mpsc::SyncSender<Result<PeerInfo, Error>>),
}

/// A connected std socket for the loop, with its peer's address.
fn from_std(stream: std::net::TcpStream) -> io::Result<(TcpStream, SocketAddr)> {
    stream.set_nonblocking(true)?;
    let addr = stream.peer_addr()?;
    Ok((TcpStream::from_std(stream), addr))
}

/// Moves the protocol node's events to the application.
fn pump(proto: &mut ProtoNode, events: &Queue<NodeEvent>) {
    while let Some(e) = proto.poll_event() {
        events.push(NodeEvent::Node(e));
    }
}

/// The loop's thread.
struct Loop {
    poll: Poll,
    proto: Arc<Mutex<ProtoNode>>,
    listener: Option<TcpListener>,
    udp: Option<UdpSocket>,
    peers: HashMap<Token, Peer>,
    links: Arc<Mutex<HashMap<ConnId, Arc<Shared>>>>,
    cmds: mpsc::Receiver<NodeCmd>,
    cmd_tx: mpsc::Sender<NodeCmd>,
    waker: Arc<Waker>,
    events: Arc<Queue<NodeEvent>>,
    incoming: Arc<Queue<IncomingStream>>,
    config: MioConfig,
    tls: TlsConfig,
    stopping: bool,
    closing: Option<Option<Instant>>,
    /// Accepting failed (out of descriptors, ...): try again then.
    retry_accept: Option<Instant>,
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            while let Ok(cmd) = self.cmds.try_recv() {
                self.command(now, cmd);
            }
            self.step_peers(now);
            if let Some(deadline) = self.closing {
                if self.peers.is_empty() || deadline.is_some_and(|d| now >= d) {
                    break;
                }
            }
            self.step_node(now);
            let timeout = self.timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            let now = Instant::now();
            if self.retry_accept.is_some_and(|t| now >= t) {
                self.accept(now);
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept(now),
                    UDP => self.receive_datagrams(now),
                    t => {
                        if let Some(peer) = self.peers.get_mut(&t) {
                            peer.link.on_ready(now, ev);
                        }
                    }
                }
            }
            for peer in self.peers.values_mut() {
                peer.link.on_deadline(now);
            }
        }
        let now = Instant::now();
        let left: Vec<Token> = self.peers.keys().copied().collect();
        for t in left {
            self.remove(now, t, &CloseReason::Local);
        }
        self.events.close();
        self.incoming.close();
    }

    fn command(&mut self, now: Instant, cmd: NodeCmd) {
        match cmd {
            NodeCmd::Conn(id, cmd) => {
                // A connection already gone drops the command; its handle
                // hears why from the shared state.
                if let Some(peer) = self.peers.get_mut(&token(id)) {
                    peer.link.push(cmd);
                }
            }
            NodeCmd::Connect(stream, reply) if !self.stopping => {
                self.open(now, Opener::App(reply), from_std(stream));
            }
            NodeCmd::Connect(_, reply) => {
                let _ = reply.send(Err(Error::Gone));
            }
            NodeCmd::Dialed(dial, Ok(stream)) if !self.stopping => {
                self.open(now, Opener::Dial(dial), from_std(stream));
            }
            NodeCmd::Dialed(dial, _) => {
                let mut proto = lock(&self.proto);
                proto.dial_failed(now, &dial);
                pump(&mut proto, &self.events);
            }
            NodeCmd::Stop => self.stop(),
            NodeCmd::CloseAll(deadline) => {
                self.stop();
                self.closing = Some(deadline);
                for peer in self.peers.values_mut() {
                    peer.link.close();
                }
            }
        }
    }

    fn stop(&mut self) {
        self.stopping = true;
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        if let Some(mut u) = self.udp.take() {
            let _ = self.poll.registry().deregister(&mut u);
        }
    }

    /// Commands, reads and events of every connection.
    fn step_peers(&mut self, now: Instant) {
        let (proto, events, incoming) = (&self.proto, &*self.events, &self.incoming);
        let peer_node = |id: ConnId| lock(proto).connection(id).and_then(|i| i.peer_node);
        let emit = |e: NodeEvent| {
            // The protocol's events first (a peer connects before its
            // streams complete).
            pump(&mut lock(proto), events);
            events.push(e);
        };
        let mut closed = Vec::new();
        for (t, peer) in &mut self.peers {
            peer.link.step(now);
            let (conn, addr) = (peer.id, peer.addr);
            let mut deliver = |stream: RecvStream| {
                incoming.push(IncomingStream {
                    conn,
                    peer_node: peer_node(conn),
                    addr,
                    stream,
                });
            };
            while let Some(event) = peer.link.next_event(&mut deliver) {
                match event {
                    Event::Established { .. } => {
                        if let Some(waiter) = peer.waiter.take() {
                            let info = lock(proto).connection(conn);
                            let _ = waiter.send(info.ok_or(Error::Gone));
                        }
                    }
                    Event::StreamEnd {
                        stream,
                        frames,
                        bytes,
                    } => emit(NodeEvent::StreamComplete {
                        conn,
                        peer_node: peer_node(conn),
                        addr,
                        stream,
                        frames,
                        bytes,
                    }),
                    Event::StreamIncomplete {
                        stream,
                        bytes,
                        reason,
                        ..
                    } => emit(NodeEvent::StreamIncomplete {
                        conn,
                        peer_node: peer_node(conn),
                        addr,
                        stream,
                        bytes,
                        reason,
                    }),
                    Event::Closed { reason } => {
                        closed.push((*t, reason));
                        break;
                    }
                    _ => {}
                }
            }
            peer.link.publish();
        }
        for (t, reason) in closed {
            self.remove(now, t, &reason);
        }
        pump(&mut lock(&self.proto), &self.events);
    }

    /// A connection closed: the node learns of it, then its handles.
    fn remove(&mut self, now: Instant, t: Token, reason: &CloseReason) {
        let Some(mut peer) = self.peers.remove(&t) else {
            return;
        };
        {
            let mut proto = lock(&self.proto);
            let stats = peer.link.driver.connection().stats();
            proto.closed(now, peer.id, reason, stats);
            pump(&mut proto, &self.events);
        }
        lock(&self.links).remove(&peer.id);
        if let Some(waiter) = peer.waiter.take() {
            let _ = waiter.send(Err(Error::Handshake(reason.clone())));
        }
        peer.link.finish(reason);
        // Dropping the driver closes the socket.
    }

    /// The node's timers, dials and announcements.
    fn step_node(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        let mut proto = lock(&self.proto);
        if proto.poll_timeout().is_some_and(|t| t <= now) {
            proto.handle_timeout(now);
        }
        let mut dials = Vec::new();
        while let Some(d) = proto.poll_dial(now) {
            dials.push(d);
        }
        let mut aborted = false;
        while let Some(order) = proto.poll_close() {
            if let Some(peer) = self.peers.get_mut(&token(order.conn)) {
                peer.link.driver.abort(now, order.reason);
                aborted = true;
            }
        }
        while let Some(t) = proto.poll_datagram(now, unix_now()) {
            if let Some(udp) = self.udp.as_ref() {
                // A failed send is like a lost datagram: the next
                // announcement follows.
                let _ = udp.send_to(&t.datagram, t.to);
            }
        }
        pump(&mut proto, &self.events);
        drop(proto);
        if aborted {
            // Their `Closed` events are waiting: report them before the
            // loop sleeps.
            self.step_peers(now);
        }
        for dial in dials {
            self.dial(now, dial);
        }
    }

    /// An address is connected without blocking: the connection's
    /// handshake timer bounds the connect, and a failed connect closes it as
    /// a transport failure. A name is resolved and connected on a helper
    /// thread (each address in turn, each within the handshake timeout), so
    /// a slow resolver never stalls the loop.
    fn dial(&mut self, now: Instant, dial: Dial) {
        let target = dial.target.to_string();
        if let Ok(addr) = target.parse::<SocketAddr>() {
            let stream = TcpStream::connect(addr).map(|s| (s, addr));
            return self.open(now, Opener::Dial(dial), stream);
        }
        let (tx, waker) = (self.cmd_tx.clone(), self.waker.clone());
        let timeout = self.config.connection.handshake_timeout();
        let helper = dial.clone();
        let spawned = std::thread::Builder::new()
            .name("asoc-mio-dial".into())
            .spawn(move || {
                let mut result = Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
                for addr in target.to_socket_addrs().into_iter().flatten() {
                    result = std::net::TcpStream::connect_timeout(&addr, timeout);
                    if result.is_ok() {
                        break;
                    }
                }
                let _ = tx.send(NodeCmd::Dialed(helper, result));
                let _ = waker.wake();
            });
        if spawned.is_err() {
            self.command(now, NodeCmd::Dialed(dial, Err(io::ErrorKind::Other.into())));
        }
    }

    fn open(&mut self, now: Instant, opener: Opener, stream: io::Result<(TcpStream, SocketAddr)>) {
        let stream = stream.and_then(|(s, addr)| {
            let target = match &opener {
                Opener::Dial(dial) => dial.target.to_string(),
                Opener::App(_) => addr.to_string(),
            };
            Ok((self.client_io(s, &target)?, addr))
        });
        let mut proto = lock(&self.proto);
        let opened = match (opener, stream) {
            (Opener::Dial(dial), Err(_)) => {
                proto.dial_failed(now, &dial);
                None
            }
            (Opener::App(reply), Err(e)) => {
                let _ = reply.send(Err(Error::Io(e)));
                None
            }
            (Opener::Dial(dial), Ok((s, addr))) => proto
                .connect(now, &dial, addr)
                .ok()
                .map(|c| (s, addr, c, None)),
            (Opener::App(reply), Ok((s, addr))) => match proto.connect_to(now, addr) {
                Ok(c) => Some((s, addr, c, Some(reply))),
                Err(refusal) => {
                    let _ = reply.send(Err(Error::Refused(refusal)));
                    None
                }
            },
        };
        pump(&mut proto, &self.events);
        drop(proto);
        if let Some((s, addr, (id, conn), waiter)) = opened {
            self.add(now, s, id, conn, addr, waiter);
        }
    }

    /// A dialed socket, inside TLS when the node has a client configuration.
    fn client_io(&self, stream: TcpStream, target: &str) -> io::Result<NodeIo> {
        let _ = stream.set_nodelay(true);
        let Some(config) = self.tls.client.clone() else {
            return Ok(NodeIo::Plain(stream));
        };
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        let name = server_name(target).map_err(|e| invalid(e.to_string()))?;
        let tls = TlsStream::client(stream, config, name).map_err(|e| invalid(e.to_string()))?;
        Ok(NodeIo::Tls(Box::new(tls)))
    }

    fn add(
        &mut self,
        now: Instant,
        stream: NodeIo,
        id: ConnId,
        conn: Connection,
        addr: SocketAddr,
        waiter: Option<mpsc::SyncSender<Result<PeerInfo, Error>>>,
    ) {
        let judge = NodeJudge {
            proto: self.proto.clone(),
            id,
        };
        let driver = Driver::from_connection(stream, conn, judge);
        let mut link = Link::new(driver, &self.config, self.waker.clone());
        if self.closing.is_some() {
            link.close();
        }
        let registered = link.driver.register(self.poll.registry(), token(id));
        lock(&self.links).insert(id, link.shared.clone());
        self.peers.insert(
            token(id),
            Peer {
                id,
                addr,
                link,
                waiter,
            },
        );
        if registered.is_err() {
            self.remove(now, token(id), &CloseReason::Transport);
        }
    }

    fn accept(&mut self, now: Instant) {
        self.retry_accept = None;
        while let Some(listener) = self.listener.as_ref() {
            match listener.accept() {
                Ok((stream, addr)) => {
                    let admitted = {
                        let mut proto = lock(&self.proto);
                        let r = proto.accept(now, addr);
                        pump(&mut proto, &self.events);
                        r
                    };
                    // Refused: dropping the socket closes it without a byte.
                    if let Ok((id, conn)) = admitted {
                        let _ = stream.set_nodelay(true);
                        let io = match self.tls.server.clone() {
                            None => Ok(NodeIo::Plain(stream)),
                            Some(config) => TlsStream::server(stream, config)
                                .map(|tls| NodeIo::Tls(Box::new(tls))),
                        };
                        match io {
                            Ok(io) => self.add(now, io, id, conn, addr, None),
                            Err(_) => {
                                let mut proto = lock(&self.proto);
                                proto.closed(now, id, &CloseReason::Transport, conn.stats());
                                pump(&mut proto, &self.events);
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(_) => {
                    // Out of descriptors and the like: give the system a
                    // moment (readiness will not be reported again).
                    self.retry_accept = Some(now + Duration::from_millis(10));
                    return;
                }
            }
        }
    }

    fn receive_datagrams(&mut self, now: Instant) {
        let mut buf = [0u8; 2048];
        while let Some(udp) = self.udp.as_ref() {
            match udp.recv_from(&mut buf) {
                Ok((n, src)) => {
                    let mut proto = lock(&self.proto);
                    proto.handle_datagram(now, unix_now(), src, buf.get(..n).unwrap_or(&[]));
                    pump(&mut proto, &self.events);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP errors of earlier sends and interruptions are one-offs.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(_) => return,
            }
        }
    }

    /// How long the loop may sleep: not at all while a connection has bytes
    /// to read, else until the first timer of the node or a connection.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        if self.peers.values().any(|p| p.link.busy()) {
            return Some(Duration::ZERO);
        }
        let node = if self.stopping {
            None
        } else {
            lock(&self.proto).poll_timeout()
        };
        self.peers
            .values()
            .filter_map(|p| p.link.driver.next_deadline())
            .chain(node)
            .chain(self.closing.flatten())
            .chain(self.retry_accept)
            .min()
            .map(|d| d.saturating_duration_since(now))
    }
}

/// A node's connection socket: plain TCP, or TCP inside TLS.
#[derive(Debug)]
enum NodeIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl io::Read for NodeIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl io::Write for NodeIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write_vectored(bufs),
            Self::Tls(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

impl mio::event::Source for NodeIo {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.register(registry, token, interests),
            Self::Tls(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.reregister(registry, token, interests),
            Self::Tls(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.deregister(registry),
            Self::Tls(s) => s.deregister(registry),
        }
    }
}
