//! The node on a mio loop of its own thread: asoc-async's node (the same
//! code as on tokio and smol) running on [`Mio`], behind blocking,
//! thread-safe methods. Every decision comes from asoc-proto.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use asoc_async::Error;
use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::dial::DialConfig;
use asoc_proto::discovery::DiscoveryConfig;
use asoc_proto::node::{ConnId, NodeCounters};
use asoc_proto::policy::PolicyConfig;
use asoc_proto::rng::Seed;
use bytes::Bytes;
use futures_lite::future::block_on;
use uuid::Uuid;

pub use asoc_async::{NodeEvent, PeerInfo, PeerRef};

use crate::blocking::{MioConfig, RecvStream};
use crate::rt::Mio;
use crate::tls::TlsConfig;

/// Builder methods handing their arguments to asoc-async's builder.
macro_rules! builder {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub fn $name(self, $($arg: $ty),*) -> Self {
            self.map(|b| b.$name($($arg),*))
        }
    )*};
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

impl From<asoc_async::IncomingStream> for IncomingStream {
    fn from(i: asoc_async::IncomingStream) -> Self {
        Self {
            conn: i.conn,
            peer_node: i.peer_node,
            addr: i.addr,
            stream: RecvStream(i.stream),
        }
    }
}

/// How a node is set up. Defaults follow WIRE.md §6: TCP on 0.0.0.0:9000,
/// no discovery, no static peers, 1 MiB chunks.
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    inner: asoc_async::NodeBuilder,
    config: MioConfig,
}

impl NodeBuilder {
    /// A node of `community` authenticating with `key`.
    #[must_use]
    pub fn new(community: impl Into<String>, key: ApiKey) -> Self {
        let config = MioConfig::default();
        let inner = asoc_async::NodeBuilder::new(community, key).driver(config);
        Self { inner, config }
    }

    fn map(mut self, f: impl FnOnce(asoc_async::NodeBuilder) -> asoc_async::NodeBuilder) -> Self {
        self.inner = f(self.inner);
        self
    }

    builder! {
        /// Uses a key ring (current key plus previous keys still accepted).
        keys(keys: KeyRing);
        /// The node id (default: random v4).
        node_id(id: Uuid);
        /// TCP listen address (default 0.0.0.0:9000; port 0 picks a free one).
        bind(addr: SocketAddr);
        /// Enables discovery on UDP `bind` (usually port 9999, bound with
        /// broadcast allowed) with `config` (built from the same community:
        /// broadcast address, unicast targets, rates).
        discovery(bind: SocketAddr, config: DiscoveryConfig);
        /// Adds a static peer, `host:port`; names are resolved when dialing,
        /// on a helper thread so that a slow resolver never stalls the loop.
        static_peer(target: impl Into<String>);
        /// Adds a static peer dialed with v1, for peers that speak only v1.
        static_peer_v1(target: impl Into<String>);
        /// Also speak v1: accept v1 HELLOs and, with discovery, send and
        /// accept v1 announcements (WIRE-v2.md §6). Off by default.
        allow_v1(yes: bool);
        /// Admission policy (caps, throttle, attempt rate).
        policy(config: PolicyConfig);
        /// Reconnect schedule.
        dial(config: DialConfig);
        /// Chunk size for [`Node::send_tensor`] (default 1 MiB).
        chunk_size(bytes: usize);
        /// Runs accepted connections (`tls.server`) and dialed ones
        /// (`tls.client`) inside TLS (RFC-0002 §9.2; build the configurations
        /// with [`tls::server_config`](crate::tls::server_config) and
        /// [`tls::client_config`](crate::tls::client_config)). A dialed peer is
        /// verified for the host of its `host:port` target, or for its IP
        /// address when connected by address. The TLS handshake runs within the
        /// ASoc handshake timeout. Default: no TLS.
        tls(tls: TlsConfig);
        /// A fixed seed for the protocol's randomness (tests); by default one
        /// is drawn from the OS.
        seed(seed: Seed);
        /// Events kept while the application is not reading them; more are
        /// dropped and counted (default 65,536).
        max_events(n: usize);
        /// How long accepted HELLO (node, challenge) pairs are remembered (at
        /// least 60 s; default 10 min) and how many at most (default
        /// 1,000,000; when full, new HELLOs are refused).
        hello_replay(retention: Duration, capacity: usize);
        /// Starts with the handshake replay memory an earlier process saved
        /// ([`Node::auth_replay_state`]), so a HELLO recorded before a
        /// restart is refused after it.
        restore_replay_state(state: asoc_proto::persist::AuthReplayState);
        /// Starts discovery with the replay memory an earlier process saved
        /// ([`Node::discovery_replay_state`]).
        restore_discovery_state(state: asoc_proto::discovery::DiscoveryReplayState);
    }

    /// Connection limits and timers, and the receive bound per connection.
    #[must_use]
    pub fn connection(mut self, config: MioConfig) -> Self {
        self.config = config;
        self.map(|b| b.driver(config))
    }

    getters! {
        /// The community string.
        fn community(&self) -> &str = self.inner.community();
    }

    /// Binds the sockets and starts the node on a mio loop of its own
    /// thread.
    pub fn start(self) -> Result<Node, Error> {
        let (seed, id) = (asoc_async::os_seed()?, asoc_async::os_node_id()?);
        let linger = self.config.connection().send_stall_timeout();
        let rt = Mio::new("asoc-mio-node", linger)?;
        let node = block_on(self.inner.start(rt.clone(), seed, id))?;
        Ok(Node {
            inner: Arc::new(Handle { node, rt }),
        })
    }
}

/// Dropping it drops the asoc-async node's last handle, which shuts the
/// node down gracefully on the loop (as on every runtime); the loop's
/// thread ends once its connections are closed.
#[derive(Debug)]
struct Handle {
    node: asoc_async::Node<Mio>,
    rt: Mio,
}

/// A running node: a mio loop on its own thread behind blocking,
/// thread-safe methods. Clones share the node; dropping the last one shuts
/// it down gracefully, as [`shutdown`](Self::shutdown) with
/// [`DROP_GRACE`](asoc_async::DROP_GRACE) does: the listener closes, no
/// more dials go out, and every connection closes cleanly once the sends
/// in flight are done.
#[derive(Clone, Debug)]
pub struct Node {
    inner: Arc<Handle>,
}

impl Node {
    fn node(&self) -> &asoc_async::Node<Mio> {
        &self.inner.node
    }

    getters! {
        /// This node's id.
        fn node_id(&self) -> Uuid = self.node().node_id();
        /// The chunk size [`send_tensor`](Self::send_tensor) uses.
        fn chunk_size(&self) -> usize = self.node().chunk_size();
        /// The bound TCP address.
        fn local_addr(&self) -> SocketAddr = self.node().local_addr();
        /// The bound UDP discovery address, when discovery is on.
        fn discovery_addr(&self) -> Option<SocketAddr> = self.node().discovery_addr();
        /// Connections, established or still in their handshake.
        fn peers(&self) -> Vec<PeerInfo> = self.node().peers();
        /// Established connections only.
        fn connected_peers(&self) -> Vec<PeerInfo> = self.node().connected_peers();
        /// The node's counters.
        fn counters(&self) -> NodeCounters = self.node().counters();
        /// The handshake replay memory now, to save for the next process.
        fn auth_replay_state(&self) -> asoc_proto::persist::AuthReplayState = self.node().auth_replay_state();
        /// Discovery's replay memory now (`None` without discovery).
        fn discovery_replay_state(&self) -> Option<asoc_proto::discovery::DiscoveryReplayState> = self.node().discovery_replay_state();
        /// What the restore at start kept, if a state was given.
        fn restore_report(&self) -> Option<asoc_proto::persist::RestoreReport> = self.node().restore_report();
        /// Events dropped because the application did not read them.
        fn events_dropped(&self) -> u64 = self.node().events_dropped();
        /// An event if one is waiting.
        fn try_event(&self) -> Option<NodeEvent> = self.node().try_event();
        /// The epoch of the newest key rotation this node took part in.
        fn rotation_epoch(&self) -> u64 = self.node().rotation_epoch();
        /// The key this node signs with now (a copy, wiped when dropped).
        fn signing_key(&self) -> ApiKey = self.node().signing_key();
    }

    /// Starts key rotation to `key` across the cluster: see
    /// [`asoc_async::Node::start_key_rotation`].
    pub fn start_key_rotation(
        &self,
        key: ApiKey,
        activate_in: Duration,
        grace: Duration,
    ) -> Result<u64, asoc_proto::rotation::RotationError> {
        self.node().start_key_rotation(key, activate_in, grace)
    }

    /// Dials `target` once, outside the reconnect schedule (trying each
    /// address it resolves to on the calling thread until one connects),
    /// and waits for the handshake.
    pub fn connect(&self, target: impl ToSocketAddrs) -> Result<PeerInfo, Error> {
        let mut last = Error::Io(std::io::ErrorKind::NotFound.into());
        for addr in target.to_socket_addrs()? {
            match block_on(self.node().connect(addr.to_string())) {
                Err(Error::Io(e)) => last = Error::Io(e),
                done => return done,
            }
        }
        Err(last)
    }

    /// Opens a stream to `peer`.
    pub fn open_stream(&self, peer: impl Into<PeerRef>) -> Result<SendStream, Error> {
        let conn = self.node().resolve(peer.into())?;
        let inner = block_on(self.node().open_stream(PeerRef::Conn(conn)))?;
        Ok(SendStream { inner, conn })
    }

    wait! {
        /// Sends `data` to `peer` as one stream in chunks of the configured
        /// size (no copy) and finishes it, waiting while the connection's
        /// send queue is full. Returns the stream id.
        fn send_tensor(&self, peer: impl Into<PeerRef>, data: Bytes) -> Result<asoc_proto::connection::StreamId, Error> =
            self.node().send_tensor(peer, data);
        /// The next event, `None` after shutdown.
        fn next_event(&self) -> Option<NodeEvent> = self.node().next_event();
        /// Waits up to `timeout` for an established connection; returns the
        /// oldest one, or `None` when none completed its handshake in time.
        fn wait_for_peer(&self, timeout: Duration) -> Option<PeerInfo> =
            self.node().wait_for_peer(timeout);
        /// Waits until at least `n` connections are established or `timeout`
        /// passes; returns how many are.
        fn wait_for_peers(&self, n: usize, timeout: Duration) -> usize =
            self.node().wait_for_peers(n, timeout);
        /// Shuts down gracefully: stops accepting, dialing and announcing,
        /// waits up to `grace` for sends in flight to finish (every `send_tensor`
        /// not yet returned, every stream from
        /// [`open_stream`](Self::open_stream) not yet finished or dropped),
        /// then closes
        /// every connection (queued frames are still written) and waits for
        /// them to close until the deadline. Incoming streams and events
        /// already queued can still be taken; then both report `None`. The
        /// loop's thread ends once the last handle is dropped.
        fn shutdown(&self, grace: Duration) = self.node().shutdown(grace);
        /// The next incoming stream, `None` after shutdown.
        fn accept_stream(&self) -> Option<IncomingStream> = self.incoming();
        /// Like [`accept_stream`](Self::accept_stream), giving up after
        /// `timeout`.
        fn accept_stream_timeout(&self, timeout: Duration) -> Option<IncomingStream> =
            self.inner.rt.within(timeout, self.incoming());
        /// Like [`next_event`](Self::next_event), giving up after `timeout`.
        fn next_event_timeout(&self, timeout: Duration) -> Option<NodeEvent> =
            self.inner.rt.within(timeout, self.node().next_event());
    }

    async fn incoming(&self) -> Option<IncomingStream> {
        self.node().accept_stream().await.map(IncomingStream::from)
    }

    getters! {
        /// Marks a send as in flight for graceful shutdown: while the guard
        /// lives, [`shutdown`](Self::shutdown) waits for it (up to its
        /// grace). Streams from [`open_stream`](Self::open_stream) count by
        /// themselves; this covers work before a stream is opened.
        fn send_guard(&self) -> impl Drop + Send + 'static = self.node().send_guard();
    }
}

/// An outgoing stream. Chunks are queued without copying; `send` waits
/// while the connection's send queue is full. Dropping a stream without
/// [`finish`](Self::finish) never sends END: the peer sees it incomplete
/// when the connection closes.
#[derive(Debug)]
pub struct SendStream {
    inner: asoc_async::SendStream,
    conn: ConnId,
}

impl SendStream {
    getters! {
        /// The stream id.
        fn id(&self) -> asoc_proto::connection::StreamId = self.inner.id();
        /// The connection it runs on.
        fn conn(&self) -> ConnId = self.conn;
    }

    wait! {
        /// Queues one chunk as one DATA frame, waiting while the send queue
        /// is full.
        fn send(&mut self, chunk: Bytes) -> Result<(), Error> = self.inner.send(chunk);
        /// Queues `data` as DATA frames of at most `chunk_size` bytes,
        /// sharing its memory.
        fn send_chunked(&mut self, data: Bytes, chunk_size: usize) -> Result<(), Error> =
            self.inner.send_chunked(data, chunk_size);
        /// Sends END: the stream is complete. Fails, and sends no END, if
        /// any chunk of the stream was refused, so the peer never takes a
        /// partial tensor for a complete one.
        fn finish(self) -> Result<(), Error> = self.inner.finish();
    }
}
