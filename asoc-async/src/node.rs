//! A node on any runtime: listens, dials static and discovered peers,
//! runs discovery, and hands the application streams to and from peers.
//! Every decision comes from [`asoc_proto::node::Node`]; this module only
//! moves bytes, datagrams and verdicts between it and the sockets.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::connection::{
    CloseReason, ConfigError, Connection as ProtoConnection, ConnectionStats, Event, StreamId,
};
use asoc_proto::dial::{Dial, DialTarget};
use asoc_proto::discovery::{DiscoveryConfig, DiscoveryReplayState};
pub use asoc_proto::node::PeerRef;
use asoc_proto::node::{ConnId, ConnectionInfo, Direction, Node as ProtoNode, NodeConfig};
use asoc_proto::persist::{AuthReplayState, RestoreReport};
use asoc_proto::rng::Seed;
use asoc_proto::rotation::RotationError;
use bytes::Bytes;
use uuid::Uuid;

use asoc_proto::handshake::ClientOptions;

use crate::clock::unix_ms;
use crate::connection::{spawn, DriverConfig};
use crate::driver::{Cmd, Judge, Order, Shared};
use crate::error::Error;
use crate::runtime::{race, Net, Transport};
use crate::stream::{RecvStream, SendStream};
use crate::tls::{self, server_name, TlsConfig};

/// Something that happened on a node: a peer connected or disconnected,
/// authentication failed (one by one or aggregated), a throttle, a peer discovered or expired, an
/// incoming stream complete or cut off. The protocol node's own event
/// type: every adapter reports the same events with the same fields.
pub use asoc_proto::node::NodeEvent;

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

/// How a node is set up. Defaults follow WIRE.md §6: TCP on 0.0.0.0:9000,
/// no discovery, no static peers, 1 MiB chunks.
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    community: String,
    keys: KeyRing,
    node_id: Option<Uuid>,
    bind: SocketAddr,
    discovery_bind: Option<SocketAddr>,
    discovery: Option<DiscoveryConfig>,
    static_peers: Vec<String>,
    static_peers_v1: Vec<String>,
    allow_v1: bool,
    driver: DriverConfig,
    policy: Option<asoc_proto::policy::PolicyConfig>,
    dial: Option<asoc_proto::dial::DialConfig>,
    chunk_size: usize,
    seed: Option<Seed>,
    max_events: usize,
    tls: TlsConfig,
    hello_replay: Option<(Duration, usize)>,
    replay_state: Option<AuthReplayState>,
    discovery_state: Option<DiscoveryReplayState>,
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
            discovery_bind: None,
            discovery: None,
            static_peers: Vec::new(),
            static_peers_v1: Vec::new(),
            allow_v1: false,
            driver: DriverConfig::default(),
            policy: None,
            dial: None,
            chunk_size: 1 << 20,
            seed: None,
            max_events: 65_536,
            tls: TlsConfig::default(),
            hello_replay: None,
            replay_state: None,
            discovery_state: None,
        }
    }

    /// How long accepted HELLO (node, challenge) pairs are remembered (at
    /// least 60 s; default 10 min) and how many at most (default 1,000,000;
    /// when full, new HELLOs are refused rather than old pairs forgotten).
    #[must_use]
    pub fn hello_replay(mut self, retention: Duration, capacity: usize) -> Self {
        self.hello_replay = Some((retention, capacity));
        self
    }

    /// Starts with the handshake replay memory an earlier process of this
    /// node saved ([`Node::auth_replay_state`]), so that a HELLO recorded
    /// before a restart is refused after it. Restored before the listener
    /// accepts anything; [`Node::restore_report`] says what was kept.
    #[must_use]
    pub fn restore_replay_state(mut self, state: AuthReplayState) -> Self {
        self.replay_state = Some(state);
        self
    }

    /// Starts discovery with the replay memory an earlier process of this
    /// node saved ([`Node::discovery_replay_state`]), so an announcement
    /// recorded before a restart is dropped after it. Ignored without
    /// discovery.
    #[must_use]
    pub fn restore_discovery_state(mut self, state: DiscoveryReplayState) -> Self {
        self.discovery_state = Some(state);
        self
    }

    /// Runs accepted (`tls.server`) and dialed (`tls.client`) connections
    /// inside TLS (RFC-0002 §9.2). The ASoc bytes inside are unchanged.
    #[must_use]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
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

    /// Enables discovery on UDP `bind` (usually port 9999) with `config`
    /// (built from the same community: broadcast address, unicast targets,
    /// rates).
    #[must_use]
    pub fn discovery(mut self, bind: SocketAddr, config: DiscoveryConfig) -> Self {
        self.discovery_bind = Some(bind);
        self.discovery = Some(config);
        self
    }

    /// Adds a static peer, `host:port`, dialed with v2; names are resolved
    /// when dialing.
    #[must_use]
    pub fn static_peer(mut self, target: impl Into<String>) -> Self {
        self.static_peers.push(target.into());
        self
    }

    /// Adds a static peer dialed with v1, for peers that speak only v1.
    #[must_use]
    pub fn static_peer_v1(mut self, target: impl Into<String>) -> Self {
        self.static_peers_v1.push(target.into());
        self
    }

    /// Also speak v1: accept v1 HELLOs and, with discovery, send and accept
    /// v1 announcements (WIRE-v2.md §6). Off by default.
    #[must_use]
    pub fn allow_v1(mut self, yes: bool) -> Self {
        self.allow_v1 = yes;
        self
    }

    /// Connection limits, timers and buffer sizes.
    #[must_use]
    pub fn driver(mut self, config: DriverConfig) -> Self {
        self.driver = config;
        self
    }

    /// Admission policy (caps, throttle, attempt rate).
    #[must_use]
    pub fn policy(mut self, config: asoc_proto::policy::PolicyConfig) -> Self {
        self.policy = Some(config);
        self
    }

    /// Reconnect schedule.
    #[must_use]
    pub fn dial(mut self, config: asoc_proto::dial::DialConfig) -> Self {
        self.dial = Some(config);
        self
    }

    /// Chunk size for [`Node::send_tensor`] (default 1 MiB; at least 1,
    /// checked by [`start`](Self::start)).
    #[must_use]
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// A fixed seed for the protocol's randomness (tests); by default the
    /// adapter draws one from the OS.
    #[must_use]
    pub fn seed(mut self, seed: Seed) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Events kept while the application is not reading them; more are
    /// dropped and counted (default 65,536; at least 1, checked by
    /// [`start`](Self::start)).
    #[must_use]
    pub fn max_events(mut self, n: usize) -> Self {
        self.max_events = n;
        self
    }

    /// The community string.
    #[must_use]
    pub fn community(&self) -> &str {
        &self.community
    }

    /// Binds the sockets and starts the node's tasks on `net`. `seed` and
    /// `node_id` fill in what the builder left unset; adapters draw them
    /// from the OS. This is the builder's build step: a refused setting
    /// fails with [`Error::Config`] before any socket is bound.
    pub async fn start<N: Net>(self, net: N, seed: Seed, node_id: Uuid) -> Result<Node<N>, Error> {
        let keys = self.keys;
        let node_id = self.node_id.unwrap_or(node_id);
        // Every setting is checked before any socket is bound, so a refused
        // configuration leaves nothing behind.
        for (field, value) in [
            ("chunk_size", self.chunk_size),
            ("max_events", self.max_events),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit { field }.into());
            }
        }
        let mut auth = asoc_proto::handshake::AuthenticatorConfig::builder(node_id, keys.clone());
        if let Some((retention, capacity)) = self.hello_replay {
            auth = auth
                .hello_retention(retention)
                .hello_replay_capacity(capacity);
        }
        let mut config = NodeConfig::builder(node_id, keys)
            .authenticator(auth.build()?)
            .connection(self.driver.connection());
        if let Some(p) = self.policy {
            config = config.policy(p);
        }
        if let Some(d) = self.dial {
            config = config.dial(d);
        }
        if let Some(d) = self.discovery {
            config = config.discovery(d);
        }
        for peer in self.static_peers {
            config = config.static_peer(DialTarget::Name(peer));
        }
        for peer in self.static_peers_v1 {
            config = config.static_peer_v1(DialTarget::Name(peer));
        }
        // Only switched on here: a discovery configuration that enables v1
        // announcements by itself keeps them.
        if self.allow_v1 {
            config = config.allow_v1(true);
        }
        let listener = net.bind_tcp(self.bind).await?;
        let tcp_addr = N::tcp_local_addr(&listener)?;
        let config = config.tcp_port(tcp_addr.port()).build()?;
        let udp = match self.discovery_bind {
            Some(addr) => Some(net.bind_udp(addr).await?),
            None => None,
        };
        let udp_addr = match udp.as_ref() {
            Some(u) => Some(N::udp_local_addr(u)?),
            None => None,
        };
        // Unbounded channel with an explicit count: a bounded channel would
        // allocate all of its slots up front.
        let (events_tx, events_rx) = async_channel::unbounded();
        let (incoming_tx, incoming_rx) = async_channel::unbounded();
        let started = Instant::now();
        let mut proto = ProtoNode::new(config, self.seed.unwrap_or(seed), started);
        let restored = self
            .replay_state
            .map(|state| proto.restore_auth_replay_state(started, unix_ms(), &state));
        if let Some(state) = &self.discovery_state {
            proto.restore_discovery_replay_state(started, unix_ms(), state);
        }
        let inner = Arc::new(Inner {
            net: net.clone(),
            proto: Mutex::new(proto),
            restored,
            wake: event_listener::Event::new(),
            peers_changed: event_listener::Event::new(),
            peers: Mutex::new(HashMap::new()),
            events_tx,
            events_rx,
            events_queued: AtomicUsize::new(0),
            max_events: self.max_events,
            events_dropped: AtomicU64::new(0),
            incoming_tx,
            incoming_rx,
            tcp_addr,
            udp_addr,
            driver: self.driver,
            chunk_size: self.chunk_size,
            stopping: AtomicBool::new(false),
            stop: event_listener::Event::new(),
            active_sends: AtomicUsize::new(0),
            sends_done: event_listener::Event::new(),
            tasks_alive: AtomicUsize::new(0),
            tls: self.tls,
        });
        let node = Node {
            last: Arc::new(LastHandle(inner.clone())),
            inner,
        };
        node.spawn_task(accept_loop(node.inner.clone(), listener));
        if let Some(udp) = udp {
            let udp = Arc::new(udp);
            node.spawn_task(datagram_loop(node.inner.clone(), udp.clone()));
            node.spawn_task(control_loop(node.inner.clone(), Some(udp)));
        } else {
            node.spawn_task(control_loop(node.inner.clone(), None));
        }
        Ok(node)
    }
}

struct PeerHandle {
    cmds: async_channel::Sender<Cmd>,
    shared: Arc<Shared>,
    /// Carries the node's close-at-once orders to the connection's task.
    abort: async_channel::Sender<Order>,
    /// The connection's counters as its task last saw them.
    stats: Arc<Mutex<ConnectionStats>>,
}

struct Inner<N: Net> {
    net: N,
    proto: Mutex<ProtoNode>,
    /// What [`NodeBuilder::restore_replay_state`] kept.
    restored: Option<RestoreReport>,
    /// Wakes the control loop: a dial or timer may be due earlier.
    wake: event_listener::Event,
    /// Notified whenever a connection completes its handshake or closes.
    peers_changed: event_listener::Event,
    peers: Mutex<HashMap<ConnId, PeerHandle>>,
    events_tx: async_channel::Sender<NodeEvent>,
    events_rx: async_channel::Receiver<NodeEvent>,
    events_queued: AtomicUsize,
    max_events: usize,
    events_dropped: AtomicU64,
    incoming_tx: async_channel::Sender<IncomingStream>,
    incoming_rx: async_channel::Receiver<IncomingStream>,
    tcp_addr: SocketAddr,
    udp_addr: Option<SocketAddr>,
    driver: DriverConfig,
    chunk_size: usize,
    stopping: AtomicBool,
    stop: event_listener::Event,
    active_sends: AtomicUsize,
    sends_done: event_listener::Event,
    tasks_alive: AtomicUsize,
    tls: TlsConfig,
}

impl<N: Net> Inner<N> {
    fn proto(&self) -> MutexGuard<'_, ProtoNode> {
        // A panic while holding the lock cannot leave the protocol state
        // half-updated in a way later calls rely on; keep serving.
        self.proto
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn peers(&self) -> MutexGuard<'_, HashMap<ConnId, PeerHandle>> {
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands every running connection's latest counters to the protocol
    /// node, which keeps them only as fresh as it is told: it judges a
    /// connection (and so sees it) only while the connection handshakes.
    fn sync_stats(&self, proto: &mut ProtoNode) {
        for (id, peer) in self.peers().iter() {
            let stats = *peer
                .stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            proto.record_stats(*id, stats);
        }
    }

    /// The protocol node with every connection's counters current.
    fn proto_synced(&self) -> MutexGuard<'_, ProtoNode> {
        let mut proto = self.proto();
        self.sync_stats(&mut proto);
        proto
    }

    fn emit(&self, event: NodeEvent) {
        if self.events_queued.load(Ordering::Acquire) >= self.max_events {
            self.events_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.events_tx.try_send(event).is_ok() {
            self.events_queued.fetch_add(1, Ordering::AcqRel);
        } else {
            self.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Carries out the protocol node's close orders and moves its events to
    /// the application.
    fn pump(&self, proto: &mut ProtoNode) {
        while let Some(order) = proto.poll_close() {
            // A connection not running yet (TLS still handshaking) has no
            // handle; its handshake deadline ends it.
            if let Some(peer) = self.peers().get(&order.conn) {
                let _ = peer.abort.try_send(Order::Abort(order.reason));
            }
        }
        while let Some(control) = proto.poll_control() {
            // A connection that is gone needs no key any more.
            if let Some(peer) = self.peers().get(&control.conn) {
                let _ = peer.abort.try_send(Order::Control(control));
            }
        }
        let mut peers_changed = false;
        while let Some(e) = proto.poll_event() {
            peers_changed |= matches!(
                e,
                NodeEvent::PeerConnected { .. } | NodeEvent::PeerDisconnected { .. }
            );
            self.emit(e);
        }
        if peers_changed {
            self.peers_changed.notify(usize::MAX);
        }
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Starts the task of connection `id` over `io`.
    /// Starts connection `id`'s task and returns the state it shares with
    /// its handles (`None` if the node no longer knows the connection).
    fn run_connection(
        self: &Arc<Self>,
        io: Box<dyn Transport>,
        id: ConnId,
        conn: ProtoConnection,
    ) -> Option<Arc<Shared>> {
        let info = {
            let mut proto = self.proto();
            let info = proto.connection(id)?;
            // Before the task starts, so before its handshake completes: a
            // v1 session inside TLS may carry key rotations.
            let tls = match info.direction {
                Direction::Inbound => self.tls.server.is_some(),
                Direction::Outbound => self.tls.client.is_some(),
            };
            if tls {
                proto.mark_encrypted_transport(id);
            }
            info
        };
        let mut registered = None;
        let incoming = self.incoming_tx.clone();
        let inner = self.clone();
        let deliver = Box::new(move |stream: RecvStream| {
            let peer_node = inner.proto().connection(id).and_then(|i| i.peer_node);
            let _ = incoming.try_send(IncomingStream {
                conn: id,
                peer_node,
                addr: info.addr,
                stream,
            });
        });
        let stats = Arc::new(Mutex::new(conn.stats()));
        let judge = NodeJudge {
            inner: self.clone(),
            id,
            stats: stats.clone(),
        };
        // Registered before the task starts: a stream it delivers may be
        // answered at once, and the answer looks the connection up here.
        spawn(
            &self.net,
            io,
            conn,
            judge,
            self.driver,
            deliver,
            |cmds, shared, abort| {
                registered = Some(shared.clone());
                self.peers().insert(
                    id,
                    PeerHandle {
                        cmds: cmds.clone(),
                        shared: shared.clone(),
                        abort,
                        stats,
                    },
                );
            },
        );
        registered
    }
}

/// Hands a connection's handshake and close to the node.
struct NodeJudge<N: Net> {
    inner: Arc<Inner<N>>,
    id: ConnId,
    /// Shared with the node's handle of this connection, read when the
    /// application asks for counters.
    stats: Arc<Mutex<ConnectionStats>>,
}

impl<N: Net> NodeJudge<N> {
    fn record_stats(&self, conn: &ProtoConnection) {
        // This connection's own lock, not the node's: every connection
        // updates it on every poll.
        *self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = conn.stats();
    }
}

impl<N: Net> Judge for NodeJudge<N> {
    fn settled(&mut self, conn: &ProtoConnection) {
        self.record_stats(conn);
    }

    fn drive(&mut self, now: Instant, conn: &mut ProtoConnection) {
        // Once established the node has nothing to decide per input.
        if conn.is_handshaking() {
            // A completed handshake may close the peer's idle duplicates:
            // the node judges idleness by the counters it was last given.
            let mut proto = self.inner.proto_synced();
            proto.drive(now, unix_ms(), self.id, conn);
            // Before the handshake's verdict is announced: whoever then
            // reads the counters (through the node, which takes them from
            // here) sees the handshake's bytes. Afterwards the driver's
            // `settled` at the end of every poll keeps them current.
            self.record_stats(conn);
            self.inner.pump(&mut proto);
        }
    }

    fn closed(&mut self, now: Instant, conn: &ProtoConnection, reason: &CloseReason) {
        {
            let mut proto = self.inner.proto();
            proto.closed(now, self.id, reason, conn.stats());
            self.inner.pump(&mut proto);
        }
        self.inner.peers().remove(&self.id);
        // A reconnect may now be scheduled.
        self.inner.wake.notify(usize::MAX);
    }

    fn observe(&mut self, event: &Event) {
        if let Event::Control { kind, payload } = event {
            let mut proto = self.inner.proto();
            proto.handle_control(Instant::now(), unix_ms(), self.id, *kind, payload);
            self.inner.pump(&mut proto);
            // An activation or a purge may now be due earlier.
            self.inner.wake.notify(usize::MAX);
            return;
        }
        // Only a stream's first chunk (the node's stream cap) and its end
        // concern the node: skip the node's lock for the data in between.
        if matches!(
            event,
            Event::Data { seq: 0, .. } | Event::StreamEnd { .. } | Event::StreamIncomplete { .. }
        ) {
            let mut proto = self.inner.proto();
            proto.observe(self.id, event);
            self.inner.pump(&mut proto);
        }
    }
}

/// What a node knows of a connected peer.
pub type PeerInfo = ConnectionInfo;

/// How long the shutdown that dropping a node's last handle starts waits
/// for sends in flight and for connections to close (the protocol's own
/// timers end a stalled connection anyway).
pub const DROP_GRACE: Duration = Duration::from_secs(30);

/// A running node; clones share it. Dropping the last clone shuts the node
/// down gracefully, as [`shutdown`](Self::shutdown) with [`DROP_GRACE`]
/// does, in a task of the node's runtime: the listener closes, no more
/// dials or announcements go out, and every connection closes cleanly once
/// the sends in flight are done.
pub struct Node<N: Net> {
    inner: Arc<Inner<N>>,
    /// Shared by the application's handles only (the node's own tasks hold
    /// `inner`), so that its drop is the last handle's.
    last: Arc<LastHandle<N>>,
}

impl<N: Net> Clone for Node<N> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            last: self.last.clone(),
        }
    }
}

struct LastHandle<N: Net>(Arc<Inner<N>>);

impl<N: Net> Drop for LastHandle<N> {
    fn drop(&mut self) {
        // Nobody can ask for a shutdown any more; the node's tasks would
        // otherwise keep it listening and dialing for ever.
        if !self.0.is_stopping() {
            let inner = self.0.clone();
            self.0
                .net
                .spawn(Box::pin(async move { inner.shutdown(DROP_GRACE).await }));
        }
    }
}

impl<N: Net> std::fmt::Debug for Node<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.node_id())
            .field("tcp", &self.inner.tcp_addr)
            .field("udp", &self.inner.udp_addr)
            .finish()
    }
}

impl<N: Net> Node<N> {
    fn spawn_task(&self, task: impl Future<Output = ()> + Send + 'static) {
        let inner = self.inner.clone();
        inner.tasks_alive.fetch_add(1, Ordering::AcqRel);
        let done = self.inner.clone();
        self.inner.net.spawn(Box::pin(async move {
            task.await;
            done.tasks_alive.fetch_sub(1, Ordering::AcqRel);
            done.stop.notify(usize::MAX);
        }));
    }

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> Uuid {
        self.inner.proto().node_id()
    }

    /// The chunk size [`send_tensor`](Self::send_tensor) uses.
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

    /// Connections, established or still in their handshake, with their
    /// counters as of each connection task's last poll.
    #[must_use]
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self.inner.proto_synced().connections().collect();
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
    pub fn counters(&self) -> asoc_proto::node::NodeCounters {
        self.inner.proto_synced().counters()
    }

    /// How full the handshake replay caches are, as `(entries, capacity)`:
    /// v1 HELLOs, then HELLO2 ephemeral keys.
    #[must_use]
    pub fn replay_fill(&self) -> [(usize, usize); 2] {
        self.inner.proto().replay_fill()
    }

    /// Traffic totals per peer node over its connections that have closed
    /// (see [`asoc_proto::node::Node::peers_traffic`]).
    #[must_use]
    pub fn peers_traffic(&self) -> Vec<(Uuid, asoc_proto::node::PeerTraffic)> {
        self.inner.proto().peers_traffic().collect()
    }

    /// The handshake replay memory now, to save for the next process of
    /// this node ([`NodeBuilder::restore_replay_state`]). Holds no key
    /// material.
    #[must_use]
    pub fn auth_replay_state(&self) -> AuthReplayState {
        self.inner
            .proto()
            .auth_replay_state(Instant::now(), unix_ms())
    }

    /// Discovery's replay memory now, to save for the next process of this
    /// node ([`NodeBuilder::restore_discovery_state`]); `None` without
    /// discovery.
    #[must_use]
    pub fn discovery_replay_state(&self) -> Option<DiscoveryReplayState> {
        self.inner.proto().discovery_replay_state(unix_ms())
    }

    /// What the restore at start kept, if a state was given.
    #[must_use]
    pub fn restore_report(&self) -> Option<RestoreReport> {
        self.inner.restored
    }

    /// Events dropped because the application did not read them.
    #[must_use]
    pub fn events_dropped(&self) -> u64 {
        self.inner.events_dropped.load(Ordering::Relaxed)
    }

    /// Dials `target` (`host:port`) once with v2, outside the reconnect
    /// schedule, and waits for the handshake.
    pub async fn connect(&self, target: impl Into<String>) -> Result<PeerInfo, Error> {
        self.connect_with(target, ClientOptions::v2()).await
    }

    /// [`connect`](Self::connect) with `options`: the version to speak (v1
    /// only for peers that speak nothing else) and the node id a v2 server
    /// must prove.
    pub async fn connect_with(
        &self,
        target: impl Into<String>,
        options: ClientOptions,
    ) -> Result<PeerInfo, Error> {
        let (io, addr) = dial_transport(&self.inner, target.into()).await?;
        let (id, conn) = {
            let mut proto = self.inner.proto();
            let r = proto.connect_to(Instant::now(), unix_ms(), addr, options);
            self.inner.pump(&mut proto);
            r.map_err(Error::Refused)?
        };
        // The shared state is taken as the task starts, not looked up
        // later: a refused handshake may end the task, and remove it from
        // the node, before this caller runs again.
        let shared = self.inner.run_connection(io, id, conn).ok_or(Error::Gone)?;
        self.wait_established(id, &shared).await
    }

    async fn wait_established(&self, id: ConnId, shared: &Shared) -> Result<PeerInfo, Error> {
        loop {
            let listener = shared.on_change.listen();
            if shared.established.load(Ordering::Acquire) {
                if let Some(info) = self.inner.proto_synced().connection(id) {
                    return Ok(info);
                }
            }
            if let Some(reason) = shared.reason() {
                return Err(Error::Handshake(reason));
            }
            listener.await;
        }
    }

    /// The established connection `peer` names, chosen by the protocol
    /// node's rule ([`asoc_proto::node::Node::resolve`]: the oldest match,
    /// and for a node id the connections whose claim discovery or static
    /// configuration backs first).
    pub fn resolve(&self, peer: PeerRef) -> Result<ConnId, Error> {
        self.inner
            .proto()
            .resolve(peer)
            .ok_or(Error::UnknownPeer(peer))
    }

    /// Opens a stream to `peer`. Until it is finished or dropped, the
    /// stream counts as a send in flight: a graceful shutdown waits for it.
    pub async fn open_stream(&self, peer: impl Into<PeerRef>) -> Result<SendStream, Error> {
        let peer = peer.into();
        let id = self.resolve(peer)?;
        let (cmds, shared) = self
            .inner
            .peers()
            .get(&id)
            .map(|p| (p.cmds.clone(), p.shared.clone()))
            .ok_or(Error::UnknownPeer(peer))?;
        let gone = |shared: &Shared| shared.reason().map_or(Error::Gone, Error::Closed);
        let (tx, rx) = async_channel::bounded(1);
        cmds.send(Cmd::Open(tx)).await.map_err(|_| gone(&shared))?;
        let stream = rx.recv().await.map_err(|_| gone(&shared))??;
        Ok(SendStream {
            id: stream,
            cmds,
            shared,
            in_flight: Some(InFlight(Box::new(SendGuard::new(&self.inner)))),
        })
    }

    /// Sends `data` to `peer` as one stream in chunks of the configured size
    /// (no copy) and finishes it. Returns the stream id.
    pub async fn send_tensor(
        &self,
        peer: impl Into<PeerRef>,
        data: Bytes,
    ) -> Result<StreamId, Error> {
        let _guard = SendGuard::new(&self.inner);
        let mut s = self.open_stream(peer).await?;
        let id = s.id();
        s.send_chunked(data, self.inner.chunk_size).await?;
        s.finish().await?;
        Ok(id)
    }

    /// Marks a send as in flight for graceful shutdown: while the guard
    /// lives, [`shutdown`](Self::shutdown) waits for it (up to its grace).
    /// Streams from [`open_stream`](Self::open_stream) count by themselves;
    /// this covers work before a stream is opened.
    #[must_use]
    pub fn send_guard(&self) -> impl Drop + Send + 'static {
        SendGuard::new(&self.inner)
    }

    /// The next incoming stream, `None` after shutdown.
    pub async fn accept_stream(&self) -> Option<IncomingStream> {
        self.inner.incoming_rx.recv().await.ok()
    }

    /// Adds a static peer (`host:port`, dialed with v2 and redialed for
    /// ever) while the node runs, for peer lists that change: DNS records
    /// re-resolved, a scheduler's allocation. Returns its id for
    /// [`remove_static_peer`](Self::remove_static_peer).
    pub fn add_static_peer(&self, target: impl Into<String>) -> asoc_proto::dial::PeerId {
        let id = {
            let mut proto = self.inner.proto();
            let id = proto.add_static_peer(Instant::now(), DialTarget::Name(target.into()));
            self.inner.pump(&mut proto);
            id
        };
        // The dial loop sleeps until its next due dial: this one is due now.
        self.inner.wake.notify(usize::MAX);
        id
    }

    /// Stops redialing a static peer; a connection to it stays open.
    pub fn remove_static_peer(&self, peer: asoc_proto::dial::PeerId) {
        let mut proto = self.inner.proto();
        proto.remove_static_peer(peer);
        self.inner.pump(&mut proto);
    }

    /// The next event, `None` after shutdown.
    pub async fn next_event(&self) -> Option<NodeEvent> {
        let e = self.inner.events_rx.recv().await.ok()?;
        self.inner.events_queued.fetch_sub(1, Ordering::AcqRel);
        Some(e)
    }

    /// An event if one is waiting.
    pub fn try_event(&self) -> Option<NodeEvent> {
        let e = self.inner.events_rx.try_recv().ok()?;
        self.inner.events_queued.fetch_sub(1, Ordering::AcqRel);
        Some(e)
    }

    /// Starts key rotation to `key` across the cluster (see
    /// [`asoc_proto::node::Node::start_key_rotation`]): peers on v2 or TLS
    /// connections get it and flood it on; this node signs with it from
    /// `activate_in` from now and accepts the current key until `grace`
    /// after that. Returns the rotation's epoch.
    pub fn start_key_rotation(
        &self,
        key: ApiKey,
        activate_in: Duration,
        grace: Duration,
    ) -> Result<u64, RotationError> {
        let epoch = {
            let mut proto = self.inner.proto();
            let epoch =
                proto.start_key_rotation(Instant::now(), unix_ms(), key, activate_in, grace)?;
            self.inner.pump(&mut proto);
            epoch
        };
        // The timer task re-arms for the activation.
        self.inner.wake.notify(usize::MAX);
        Ok(epoch)
    }

    /// The epoch of the newest key rotation this node took part in (0:
    /// none).
    pub fn rotation_epoch(&self) -> u64 {
        self.inner.proto().rotation_epoch()
    }

    /// The key this node signs with now (a copy, wiped when dropped), for
    /// a program that keeps it in a file across restarts.
    pub fn signing_key(&self) -> ApiKey {
        self.inner.proto().keys().current().1.clone()
    }

    /// Shuts down gracefully: stops accepting, dialing and announcing,
    /// waits up to `grace` for sends in flight to finish (every
    /// [`send_tensor`](Self::send_tensor) not yet returned and every stream from
    /// [`open_stream`](Self::open_stream) not yet finished or dropped), then
    /// closes every connection (queued frames are still written) and waits
    /// for them to close until the deadline. Incoming streams and events
    /// already queued can still be taken; then both report `None`.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutdown(grace).await;
    }
}

impl<N: Net> Inner<N> {
    async fn shutdown(self: &Arc<Self>, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.stopping.store(true, Ordering::Release);
        self.stop.notify(usize::MAX);
        self.wake.notify(usize::MAX);
        while self.active_sends.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            let listener = self.sends_done.listen();
            if self.active_sends.load(Ordering::Acquire) == 0 {
                break;
            }
            race(listener, self.net.sleep_until(deadline)).await;
        }
        let handles: Vec<(async_channel::Sender<Cmd>, Arc<Shared>)> = self
            .peers()
            .values()
            .map(|p| (p.cmds.clone(), p.shared.clone()))
            .collect();
        for (cmds, _) in &handles {
            let _ = cmds.try_send(Cmd::Close);
            // A full queue: the close goes in as soon as there is room.
            if cmds.is_full() {
                let _ = race(cmds.send(Cmd::Close), self.net.sleep_until(deadline)).await;
            }
        }
        for (_, shared) in handles {
            while shared.reason().is_none() && Instant::now() < deadline {
                let listener = shared.on_change.listen();
                if shared.reason().is_some() {
                    break;
                }
                race(listener, self.net.sleep_until(deadline)).await;
            }
        }
        // The accept, datagram and control loops end on the stop signal,
        // closing the listener and the UDP socket.
        while self.tasks_alive.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            let listener = self.stop.listen();
            if self.tasks_alive.load(Ordering::Acquire) == 0 {
                break;
            }
            race(listener, self.net.sleep_until(deadline)).await;
        }
        self.incoming_tx.close();
        self.events_tx.close();
    }
}

/// Keeps a stream opened through a node counted as a send in flight, so
/// that a graceful shutdown waits for it; dropped with the stream.
pub(crate) struct InFlight(#[allow(dead_code)] Box<dyn Send + Sync>);

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}

struct SendGuard<N: Net>(Arc<Inner<N>>);

impl<N: Net> SendGuard<N> {
    fn new(inner: &Arc<Inner<N>>) -> Self {
        inner.active_sends.fetch_add(1, Ordering::AcqRel);
        Self(inner.clone())
    }
}

impl<N: Net> Drop for SendGuard<N> {
    fn drop(&mut self) {
        if self.0.active_sends.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.sends_done.notify(usize::MAX);
        }
    }
}

async fn accept_loop<N: Net>(inner: Arc<Inner<N>>, listener: N::Listener) {
    loop {
        let stop = inner.stop.listen();
        if inner.is_stopping() {
            return;
        }
        let Some(result) = race(N::accept(&listener), stop).await else {
            return;
        };
        let Ok((io, addr)) = result else {
            // Accept errors (out of descriptors, aborted handshakes) are
            // transient; give the system a moment.
            inner
                .net
                .sleep_until(Instant::now() + Duration::from_millis(10))
                .await;
            continue;
        };
        let admitted = {
            let mut proto = inner.proto();
            let r = proto.accept(Instant::now(), addr);
            inner.pump(&mut proto);
            r
        };
        match admitted {
            Ok((id, conn)) => match inner.tls.server.clone() {
                None => {
                    inner.run_connection(Box::new(io), id, conn);
                }
                Some(config) => {
                    let inner2 = inner.clone();
                    inner
                        .net
                        .spawn(Box::pin(tls_accept(inner2, io, config, id, conn)));
                }
            },
            // Refused: close at once without writing a byte. The refusal
            // may have opened a failure report whose end the timers must
            // now wait for.
            Err(_) => {
                drop(io);
                inner.wake.notify(usize::MAX);
            }
        }
    }
}

async fn datagram_loop<N: Net>(inner: Arc<Inner<N>>, udp: Arc<N::Udp>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let stop = inner.stop.listen();
        if inner.is_stopping() {
            return;
        }
        match race(N::recv_from(&udp, &mut buf), stop).await {
            None => return,
            Some(Ok((n, src))) => {
                let datagram = buf.get(..n).unwrap_or(&[]);
                let mut proto = inner.proto();
                proto.handle_datagram(Instant::now(), unix_ms(), src, datagram);
                inner.pump(&mut proto);
                drop(proto);
                inner.wake.notify(usize::MAX);
            }
            Some(Err(_)) => {
                inner
                    .net
                    .sleep_until(Instant::now() + Duration::from_millis(10))
                    .await;
            }
        }
    }
}

/// Timers, dials and announcements.
async fn control_loop<N: Net>(inner: Arc<Inner<N>>, udp: Option<Arc<N::Udp>>) {
    loop {
        let wake = inner.wake.listen();
        if inner.is_stopping() {
            return;
        }
        let now = Instant::now();
        let (dials, datagrams, deadline) = {
            let mut proto = inner.proto();
            proto.handle_timeout(now);
            let mut dials = Vec::new();
            while let Some(d) = proto.poll_dial(now) {
                dials.push(d);
            }
            let mut datagrams = Vec::new();
            while let Some(t) = proto.poll_datagram(now, unix_ms()) {
                datagrams.push(t);
            }
            inner.pump(&mut proto);
            (dials, datagrams, proto.poll_timeout())
        };
        for dial in dials {
            let inner2 = inner.clone();
            inner.net.spawn(Box::pin(dial_one(inner2, dial)));
        }
        if let Some(udp) = udp.as_ref() {
            for t in datagrams {
                // A failed send (no route, buffer full) is like a lost
                // datagram: the next announcement follows in 3 s.
                let _ = N::send_to(udp, &t.datagram, t.to).await;
            }
        }
        let sleep = inner
            .net
            .sleep_until(deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)));
        race(wake, sleep).await;
    }
}

/// The TLS handshake of an accepted connection, within the connection's
/// handshake deadline; the ASoc handshake follows inside TLS.
async fn tls_accept<N: Net>(
    inner: Arc<Inner<N>>,
    io: N::Stream,
    config: Arc<rustls::ServerConfig>,
    id: ConnId,
    conn: ProtoConnection,
) {
    let deadline = conn.poll_timeout().unwrap_or_else(Instant::now);
    let linger = inner.driver.connection().send_stall_timeout();
    let handshake = tls::accept(&inner.net, io, config, linger);
    match race(handshake, inner.net.sleep_until(deadline)).await {
        Some(Ok(tls)) => {
            inner.run_connection(Box::new(tls), id, conn);
        }
        failed => {
            let reason = if failed.is_none() {
                CloseReason::HandshakeTimeout
            } else {
                CloseReason::Transport
            };
            let mut proto = inner.proto();
            proto.closed(Instant::now(), id, &reason, conn.stats());
            inner.pump(&mut proto);
        }
    }
}

/// Connects to `target` and, when configured, runs the client side of TLS.
/// The TCP connect is bounded by the handshake timeout: a blackholed
/// address would otherwise hold the dial for the kernel's SYN retries
/// (about two minutes on Linux).
async fn dial_transport<N: Net>(
    inner: &Inner<N>,
    target: String,
) -> io::Result<(Box<dyn Transport>, SocketAddr)> {
    let timeout = inner.driver.connection().handshake_timeout();
    let connect = inner.net.connect(target.clone());
    let (io, addr) = race(connect, inner.net.sleep_until(Instant::now() + timeout))
        .await
        .unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TCP connect to {target} timed out after {timeout:?}"),
            ))
        })?;
    match inner.tls.client.clone() {
        None => Ok((Box::new(io), addr)),
        Some(config) => {
            let name =
                server_name(&target).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let deadline = Instant::now() + inner.driver.connection().handshake_timeout();
            let linger = inner.driver.connection().send_stall_timeout();
            let handshake = tls::connect(&inner.net, io, config, name, linger);
            match race(handshake, inner.net.sleep_until(deadline)).await {
                Some(r) => Ok((Box::new(r?), addr)),
                None => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )),
            }
        }
    }
}

async fn dial_one<N: Net>(inner: Arc<Inner<N>>, dial: Dial) {
    let target = match &dial.target {
        DialTarget::Name(name) => name.clone(),
        DialTarget::Addr(addr) => addr.to_string(),
        other => format!("{other}"),
    };
    let result = dial_transport(&inner, target).await;
    if inner.is_stopping() {
        return;
    }
    match result {
        Ok((io, addr)) => {
            let opened = {
                let mut proto = inner.proto();
                let r = proto.connect(Instant::now(), unix_ms(), &dial, addr);
                inner.pump(&mut proto);
                r
            };
            if let Ok((id, conn)) = opened {
                inner.run_connection(io, id, conn);
            }
        }
        Err(e) => {
            let mut proto = inner.proto();
            proto.dial_error(Instant::now(), &dial, &e.to_string());
            inner.pump(&mut proto);
        }
    }
    inner.wake.notify(usize::MAX);
}

/// Lets `Direction` be named from this crate's users without importing
/// asoc-proto.
pub type PeerDirection = Direction;

impl<N: Net> Node<N> {
    /// Waits up to `timeout` for an established connection; returns the
    /// oldest one, or `None` when none completed its handshake in time.
    pub async fn wait_for_peer(&self, timeout: Duration) -> Option<PeerInfo> {
        self.wait_for_peers(1, timeout).await;
        self.connected_peers().into_iter().next()
    }

    /// Waits until at least `n` connections are established or `timeout`
    /// passes; returns how many are. Woken by every connection that
    /// completes its handshake or closes.
    pub async fn wait_for_peers(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.inner.peers_changed.listen();
            let count = self.connected_peers().len();
            if count >= n || Instant::now() >= deadline {
                return count;
            }
            race(changed, self.inner.net.sleep_until(deadline)).await;
        }
    }
}
