//! The attacks a key-less attacker on the LAN can run against v1
//! (WIRE-v2.md, introduction), performed from outside the nodes over
//! loopback: a TCP relay in the middle that records and rewrites frames, an
//! impostor listener, and raw sockets from their own 127.x.y.z addresses.
//!
//! Each attack runs twice: against v2 nodes, where it must fail with the
//! reason and counter the spec names and nothing may be accepted (no peer
//! for the attacker, no stream delivered, no altered tensor complete); and
//! against nodes with v1 enabled, where the test asserts what v1 still lets
//! through, so that the difference between the two stays visible and a
//! change to either is noticed.

use super::*;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream};

use asoc_proto::connection::CloseReason;
use asoc_proto::handshake::ClientOptions;
use asoc_proto::v2::WireVersion;
use asoc_proto::wire::{FrameType, Header};

/// How long any socket of the attacker, relay or impostor waits for a byte
/// before giving up, so that no thread outlives a failed scenario for long.
const PATIENCE: Duration = Duration::from_secs(5);

/// The largest frame body the relay and impostor read: the default maximum
/// payload plus the v2 tag.
const MAX_BODY: usize = (16 << 20) + 16;

/// The handshake deadline of the attacked v2 nodes: short, because one
/// outcome of an attack is the handshake timing out after ACCEPT2.
const DEADLINE: Duration = Duration::from_secs(1);

/// Chunk size of the senders whose frames the relay rewrites, so that a
/// tensor spans several DATA frames and the first one opens the stream.
const CHUNK: usize = 64 << 10;

/// The attacker's (or the relay's) own loopback address `127.0.a.b`.
fn ip(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, a, b))
}

/// A node of the attacked cluster: v2 only, or also accepting v1 HELLOs.
fn cluster_node(allow_v1: bool) -> NodeBuilder {
    builder(KEY)
        .driver(handshake_deadline(DEADLINE))
        .allow_v1(allow_v1)
        .chunk_size(CHUNK)
}

/// The dial options for the wire under attack.
fn dial(version: WireVersion) -> ClientOptions {
    ClientOptions::version(version)
}

/// One frame off `sock`: `None` at a clean end of stream, an error if the
/// socket failed, timed out or the frame is larger than any node sends.
fn read_frame(sock: &mut TcpStream) -> std::io::Result<Option<(Header, Vec<u8>)>> {
    let mut head = [0u8; asoc_proto::wire::HEADER_LEN];
    match sock.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let header = Header::decode(&head);
    let len = header.length as usize;
    if len > MAX_BODY {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut body = vec![0u8; len];
    sock.read_exact(&mut body)?;
    Ok(Some((header, body)))
}

/// `header` and `body` as one frame on the wire.
fn frame(header: Header, body: &[u8]) -> Vec<u8> {
    let mut out = header.encode().to_vec();
    out.extend_from_slice(body);
    out
}

/// The first connection accepted on `listener` within [`PATIENCE`] times
/// four, made blocking with [`PATIENCE`] on reads.
fn accept_one(listener: &TcpListener) -> Option<TcpStream> {
    listener.set_nonblocking(true).ok()?;
    let until = Instant::now() + 4 * PATIENCE;
    while Instant::now() < until {
        match listener.accept() {
            Ok((sock, _)) => {
                sock.set_nonblocking(false).ok()?;
                sock.set_read_timeout(Some(PATIENCE)).ok()?;
                return Some(sock);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return None,
        }
    }
    None
}

/// A TCP relay between one client and `upstream`, as an on-path attacker
/// runs it: it forwards frame by frame, hands over the first frame of each
/// direction (what an eavesdropper records), and, if told to, flips one
/// byte in the body of the `flip`-th DATA frame from the client.
struct Relay {
    /// Where the client dials.
    addr: SocketAddr,
    /// The client's first frame (HELLO or HELLO2).
    first_up: async_channel::Receiver<Vec<u8>>,
    /// The server's first frame (ACCEPT or ACCEPT2).
    first_down: async_channel::Receiver<Vec<u8>>,
    /// The body length of the DATA frame that was altered.
    flipped: async_channel::Receiver<usize>,
}

impl Relay {
    /// Relays one connection to `upstream`, dialed from address `from`.
    fn start(upstream: SocketAddr, from: IpAddr, flip: Option<u32>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (up_tx, first_up) = async_channel::bounded(1);
        let (down_tx, first_down) = async_channel::bounded(1);
        let (flip_tx, flipped) = async_channel::bounded(1);
        std::thread::spawn(move || {
            let Some(client) = accept_one(&listener) else {
                return;
            };
            let Ok(server) = connect_from(from, upstream) else {
                return;
            };
            let _ = server.set_read_timeout(Some(4 * PATIENCE));
            let _ = client.set_read_timeout(Some(4 * PATIENCE));
            let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            let (spare, _) = async_channel::bounded(1);
            let down = std::thread::spawn(move || pump(server2, client2, &down_tx, None, &spare));
            pump(client, server, &up_tx, flip, &flip_tx);
            let _ = down.join();
        });
        Self {
            addr,
            first_up,
            first_down,
            flipped,
        }
    }
}

/// Forwards frames from `from` to `to` until either side ends, then closes
/// both. The first frame goes to `first`; the `flip`-th DATA frame has one
/// byte of its body inverted, reported on `flipped`.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    first: &async_channel::Sender<Vec<u8>>,
    flip: Option<u32>,
    flipped: &async_channel::Sender<usize>,
) {
    let mut data_frames = 0u32;
    let mut recorded = false;
    while let Ok(Some((header, mut body))) = read_frame(&mut from) {
        if header.frame_type == FrameType::Data {
            data_frames += 1;
            if Some(data_frames) == flip && !body.is_empty() {
                let at = body.len() / 2;
                body[at] ^= 0x5a;
                let _ = flipped.try_send(body.len());
            }
        }
        let bytes = frame(header, &body);
        if !recorded {
            recorded = true;
            let _ = first.try_send(bytes.clone());
        }
        if to.write_all(&bytes).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// What an impostor listener saw.
#[derive(Debug)]
struct ImpostorLog {
    /// The client's first frame, answered with the recorded ACCEPT.
    hello: Vec<u8>,
    /// Every frame the client sent after it, up to an END, the end of the
    /// connection or [`PATIENCE`] of silence.
    after: Vec<(Header, Vec<u8>)>,
}

impl ImpostorLog {
    /// The payload of the DATA frames received, in order.
    fn data(&self) -> Vec<u8> {
        self.after
            .iter()
            .filter(|(h, _)| h.frame_type == FrameType::Data)
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }
}

/// An impostor that answers the first client's HELLO with `accept`,
/// recorded from a real server on an earlier connection.
fn impostor(accept: Vec<u8>) -> (SocketAddr, async_channel::Receiver<ImpostorLog>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = async_channel::bounded(1);
    std::thread::spawn(move || {
        let Some(mut sock) = accept_one(&listener) else {
            return;
        };
        let Ok(Some((h, b))) = read_frame(&mut sock) else {
            return;
        };
        let hello = frame(h, &b);
        let mut after = Vec::new();
        if sock.write_all(&accept).is_ok() {
            while let Ok(Some((h, b))) = read_frame(&mut sock) {
                let end = h.frame_type == FrameType::End;
                after.push((h, b));
                if end {
                    break;
                }
            }
        }
        let _ = tx.try_send(ImpostorLog { hello, after });
    });
    (addr, rx)
}

/// The attacker's raw connection from `from` to `to`.
fn attacker(from: IpAddr, to: SocketAddr) -> TcpStream {
    let sock = connect_from(from, to).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    sock
}

/// What the victim answered a replayed handshake message with: its first
/// frame, or `None` if it closed without a byte.
fn answer(sock: &mut TcpStream) -> Option<(Header, Vec<u8>)> {
    read_frame(sock).expect("the victim neither answered nor closed")
}

/// Bytes the victim sends until it closes; a timeout fails the scenario
/// (the victim must close a connection it did not establish).
fn until_closed(sock: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return total,
            Err(e) => panic!("the victim kept an unestablished connection open: {e}"),
        }
    }
}

/// A DATA frame and its END as a key-less attacker writes them: in the
/// clear for v1; for v2 with the right header and a made-up tag, since it
/// has no session key to seal with.
fn forged_stream(version: WireVersion, payload: &[u8]) -> Vec<u8> {
    let (v, tag): (u8, &[u8]) = match version {
        WireVersion::V1 => (1, &[]),
        _ => (2, &[0xa5; 16]),
    };
    let len = u32::try_from(payload.len() + tag.len()).unwrap();
    let data = Header {
        version: v,
        ..Header::new(FrameType::Data, 1, 0, len)
    };
    let end = Header {
        version: v,
        ..Header::new(FrameType::End, 1, 1, u32::try_from(tag.len()).unwrap())
    };
    let mut out = frame(data, payload);
    out.extend_from_slice(tag);
    out.extend(frame(end, tag));
    out
}

/// The events of `node` up to and including the first that matches `pred`.
async fn events_until<N: Net>(
    net: &N,
    node: &Node<N>,
    what: &str,
    pred: impl Fn(&NodeEvent) -> bool,
) -> Vec<NodeEvent> {
    within(net, Duration::from_secs(10), what, async {
        let mut seen = Vec::new();
        loop {
            let e = node.next_event().await.expect("event channel closed");
            let done = pred(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
    })
    .await
}

/// `seen` plus every event `node` has queued now.
fn with_queued<N: Net>(node: &Node<N>, mut seen: Vec<NodeEvent>) -> Vec<NodeEvent> {
    for _ in 0..10_000 {
        match node.try_event() {
            Some(e) => seen.push(e),
            None => break,
        }
    }
    seen
}

/// The auth failure reported for a connection from `from`, if `e` is one.
fn failure_from(e: &NodeEvent, from: IpAddr) -> Option<AuthFailure> {
    match e {
        NodeEvent::AuthFailed { addr, reason, .. } if addr.ip() == from => Some(*reason),
        _ => None,
    }
}

/// Nothing in `events` admitted the attacker at `from` or completed a
/// stream, and `node` holds no connection from it.
fn admitted_nothing<N: Net>(node: &Node<N>, events: &[NodeEvent], from: IpAddr) {
    for e in events {
        assert!(
            !matches!(e, NodeEvent::PeerConnected { addr, .. } if addr.ip() == from),
            "the attacker was accepted: {e:?}"
        );
        assert!(
            !matches!(e, NodeEvent::StreamComplete { .. }),
            "a stream completed: {e:?}"
        );
    }
    assert!(
        node.connected_peers().iter().all(|p| p.addr.ip() != from),
        "a connection from the attacker is established"
    );
}

/// Whether a dial ended refused with `reason`.
fn refused_with(
    result: &Result<asoc_async::PeerInfo, asoc_async::Error>,
    reason: AuthFailure,
) -> bool {
    matches!(
        result,
        Err(asoc_async::Error::Handshake(CloseReason::AuthFailed(f))) if *f == reason
    )
}

/// `node`'s established connections that claim node id `id`.
fn claiming<N: Net>(node: &Node<N>, id: uuid::Uuid) -> usize {
    node.connected_peers()
        .iter()
        .filter(|p| p.peer_node == Some(id))
        .count()
}

/// Sends `tensor` from `from` over `conn` and checks that `to` receives it
/// whole, from node id `sender`, with its SHA-256.
async fn delivers<N: Net>(
    net: &N,
    from: &Node<N>,
    conn: PeerRef,
    to: &Node<N>,
    sender: uuid::Uuid,
    tensor: &[u8],
) {
    let reader = {
        let to = to.clone();
        spawn(net, async move {
            let incoming = to.accept_stream().await.unwrap();
            let data = incoming.stream.read_to_end().await.unwrap();
            (incoming.peer_node, data)
        })
    };
    from.send_tensor(conn, Bytes::from(tensor.to_vec()))
        .await
        .unwrap();
    let (peer_node, data) =
        within(net, Duration::from_secs(10), "the tensor arrives", reader).await;
    assert_eq!(peer_node, Some(sender));
    assert_eq!(Sha256::digest(&data), Sha256::digest(tensor));
}

/// A recorded handshake, and the real connection it came from.
struct Recorded {
    /// The client's first frame.
    hello: Vec<u8>,
    /// The server's first frame.
    accept: Vec<u8>,
    /// The client's connection through the relay.
    conn: asoc_async::PeerInfo,
    /// The relay, still carrying that connection.
    _relay: Relay,
}

/// `client` connects to `server` through a relay dialing from `relay_ip`
/// that records both first frames.
async fn record<N: Net>(
    net: &N,
    client: &Node<N>,
    server: &Node<N>,
    relay_ip: IpAddr,
    version: WireVersion,
    flip: Option<u32>,
) -> (Relay, asoc_async::PeerInfo) {
    let relay = Relay::start(server.local_addr(), relay_ip, flip);
    let conn = within(
        net,
        Duration::from_secs(10),
        "the client connects through the relay",
        client.connect_with(relay.addr.to_string(), dial(version)),
    )
    .await
    .unwrap();
    (relay, conn)
}

/// [`record`] and wait for both recorded frames.
async fn recorded<N: Net>(
    net: &N,
    client: &Node<N>,
    server: &Node<N>,
    relay_ip: IpAddr,
    version: WireVersion,
) -> Recorded {
    let (relay, conn) = record(net, client, server, relay_ip, version, None).await;
    let hello = within(
        net,
        PATIENCE,
        "the relay records the HELLO",
        relay.first_up.recv(),
    )
    .await
    .unwrap();
    let accept = within(
        net,
        PATIENCE,
        "the relay records the ACCEPT",
        relay.first_down.recv(),
    )
    .await
    .unwrap();
    let (hello_len, accept_len) = match version {
        WireVersion::V1 => (50, 30),
        _ => (86, 86),
    };
    assert_eq!((hello.len(), accept.len()), (hello_len, accept_len));
    let v = if version == WireVersion::V1 { 1 } else { 2 };
    assert_eq!((hello[0], accept[0]), (v, v), "both frames of {version:?}");
    Recorded {
        hello,
        accept,
        conn,
        _relay: relay,
    }
}

/// Attack 1 against v2: X's HELLO2 to A, recorded by a relay, replayed to
/// A itself is refused as `replay`; replayed to B (which never saw it) it
/// is answered with an ACCEPT2, but the attacker cannot produce CONFIRM:
/// forged DATA/END frames close it with `bad_frame_mac`, silence with a
/// handshake `timeout`. No node reports the attacker as a peer or delivers
/// a stream.
pub async fn replayed_hello_v2<N: Net>(net: N) {
    let a = start(&net, cluster_node(false)).await;
    let b = start(&net, cluster_node(false)).await;
    let c = start(&net, cluster_node(false)).await;
    let x = start(&net, builder(KEY)).await;
    let rec = recorded(&net, &x, &a, ip(1, 100), WireVersion::V2).await;
    assert_eq!(
        rec.conn.peer_node,
        Some(a.node_id()),
        "v2 proves the server"
    );

    // To A itself: a replay, closed without a byte.
    let (to_a, to_b, to_c) = (ip(1, 1), ip(1, 2), ip(1, 3));
    let mut sock = attacker(to_a, a.local_addr());
    sock.write_all(&rec.hello).unwrap();
    assert!(answer(&mut sock).is_none(), "A answered a replayed HELLO2");
    let seen = events_until(&net, &a, "A refuses the replay", |e| {
        failure_from(e, to_a).is_some()
    })
    .await;
    assert_eq!(
        failure_from(seen.last().unwrap(), to_a),
        Some(AuthFailure::Replay)
    );
    assert_eq!(a.counters().policy.auth_failures.replay, 1);
    assert_eq!(a.counters().auth.replays, 1);
    admitted_nothing(&a, &with_queued(&a, seen), to_a);

    // To B, followed by a forged stream: ACCEPT2, then bad_frame_mac.
    let mut sock = attacker(to_b, b.local_addr());
    sock.write_all(&rec.hello).unwrap();
    let (h, body) = answer(&mut sock).expect("B answers a fresh HELLO2");
    assert_eq!(
        (h.version, h.frame_type, body.len()),
        (2, FrameType::Accept, 72)
    );
    sock.write_all(&forged_stream(WireVersion::V2, b"injected tensor"))
        .unwrap();
    assert_eq!(until_closed(&mut sock), 0, "B sent nothing after ACCEPT2");
    let seen = events_until(&net, &b, "B refuses the forged CONFIRM", |e| {
        failure_from(e, to_b).is_some()
    })
    .await;
    assert_eq!(
        failure_from(seen.last().unwrap(), to_b),
        Some(AuthFailure::BadFrameMac)
    );
    assert_eq!(b.counters().policy.auth_failures.bad_frame_mac, 1);
    assert_eq!(b.counters().policy.established, 0);
    admitted_nothing(&b, &with_queued(&b, seen), to_b);

    // To C, then silence: ACCEPT2, then the handshake deadline.
    let mut sock = attacker(to_c, c.local_addr());
    sock.write_all(&rec.hello).unwrap();
    let (h, _) = answer(&mut sock).expect("C answers a fresh HELLO2");
    assert_eq!(h.frame_type, FrameType::Accept);
    assert_eq!(until_closed(&mut sock), 0, "C sent nothing after ACCEPT2");
    let seen = events_until(&net, &c, "C times the replay out", |e| {
        failure_from(e, to_c).is_some()
    })
    .await;
    assert_eq!(
        failure_from(seen.last().unwrap(), to_c),
        Some(AuthFailure::Timeout)
    );
    assert_eq!(c.counters().policy.auth_failures.timeout, 1);
    assert_eq!(c.counters().policy.established, 0);
    admitted_nothing(&c, &with_queued(&c, seen), to_c);
    assert!(b.peers().is_empty() && c.peers().is_empty());
}

/// Attack 1 against v1: X's v1 HELLO to A, recorded by a relay and replayed
/// to B, is accepted there, and a tensor the attacker writes in the clear
/// is reported complete under X's node id. What v2 prevents.
pub async fn replayed_hello_v1<N: Net>(net: N) {
    let a = start(&net, cluster_node(true)).await;
    let b = start(&net, cluster_node(true)).await;
    let x = start(&net, builder(KEY)).await;
    let rec = recorded(&net, &x, &a, ip(2, 100), WireVersion::V1).await;
    let from = ip(2, 1);
    let mut sock = attacker(from, b.local_addr());
    sock.write_all(&rec.hello).unwrap();
    let (h, _) = answer(&mut sock).expect("B answers the replayed v1 HELLO");
    assert_eq!((h.version, h.frame_type), (1, FrameType::Accept));
    let injected = b"an attacker's tensor under X's name";
    sock.write_all(&forged_stream(WireVersion::V1, injected))
        .unwrap();
    let incoming = within(
        &net,
        Duration::from_secs(10),
        "B delivers it",
        b.accept_stream(),
    )
    .await
    .unwrap();
    assert_eq!(incoming.peer_node, Some(x.node_id()), "reported as X's");
    assert_eq!(incoming.addr.ip(), from);
    assert_eq!(incoming.stream.read_to_end().await.unwrap(), injected);
    let seen = events_until(&net, &b, "B reports the stream complete", |e| {
        matches!(e, NodeEvent::StreamComplete { .. })
    })
    .await;
    assert!(seen.iter().any(|e| matches!(e,
        NodeEvent::PeerConnected { peer_node, addr, session, .. }
            if *peer_node == Some(x.node_id()) && addr.ip() == from
                && session.version == WireVersion::V1)));
    assert!(matches!(seen.last(),
        Some(NodeEvent::StreamComplete { peer_node, bytes, .. })
            if *peer_node == Some(x.node_id()) && *bytes == injected.len() as u64));
    assert_eq!(b.counters().policy.auth_failures.total(), 0);
}

/// Attack 2 against v2: the impostor answers X's HELLO2 with an ACCEPT2
/// recorded from the real server S: X refuses it (`bad_mac`), reports no
/// peer, and sends the impostor nothing after its HELLO2.
pub async fn recorded_accept_v2<N: Net>(net: N) {
    let s = start(&net, cluster_node(false)).await;
    let x = start(&net, builder(KEY)).await;
    let rec = recorded(&net, &x, &s, ip(3, 100), WireVersion::V2).await;
    let (addr, log) = impostor(rec.accept.clone());
    let result = within(
        &net,
        Duration::from_secs(10),
        "the dial to the impostor ends",
        x.connect_with(addr.to_string(), ClientOptions::v2()),
    )
    .await;
    assert!(refused_with(&result, AuthFailure::BadMac), "{result:?}");
    let log = within(&net, 4 * PATIENCE, "the impostor's log", log.recv())
        .await
        .unwrap();
    assert_eq!(log.hello.len(), 86);
    assert!(log.after.is_empty(), "X sent the impostor {:?}", log.after);
    let seen = events_until(
        &net,
        &x,
        "X reports the refusal",
        |e| matches!(e, NodeEvent::AuthFailed { addr: a, .. } if *a == addr),
    )
    .await;
    assert!(matches!(
        seen.last(),
        Some(NodeEvent::AuthFailed {
            reason: AuthFailure::BadMac,
            ..
        })
    ));
    assert!(seen
        .iter()
        .all(|e| !matches!(e, NodeEvent::PeerConnected { addr: a, .. } if *a == addr)));
    assert_eq!(x.counters().policy.auth_failures.bad_mac, 1);
    assert!(x.connected_peers().iter().all(|p| p.addr != addr));
    assert!(x
        .send_tensor(PeerRef::Addr(addr), Bytes::from_static(b"secret"))
        .await
        .is_err());
}

/// Attack 2 against v1: the same impostor with a recorded v1 ACCEPT makes
/// X report the handshake verified and stream its tensor to the impostor,
/// which reads it whole. What v2 prevents.
pub async fn recorded_accept_v1<N: Net>(net: N) {
    let s = start(&net, cluster_node(true)).await;
    let x = start(&net, builder(KEY).chunk_size(CHUNK)).await;
    let rec = recorded(&net, &x, &s, ip(4, 100), WireVersion::V1).await;
    let (addr, log) = impostor(rec.accept.clone());
    let conn = within(
        &net,
        Duration::from_secs(10),
        "the dial to the impostor ends",
        x.connect_with(addr.to_string(), ClientOptions::v1()),
    )
    .await
    .expect("v1 verifies a recorded ACCEPT");
    assert!(conn.established);
    let secret = tensor(200_000);
    x.send_tensor(PeerRef::Conn(conn.id), Bytes::from(secret.clone()))
        .await
        .unwrap();
    let log = within(&net, 4 * PATIENCE, "the impostor's log", log.recv())
        .await
        .unwrap();
    assert_eq!(log.hello.len(), 50);
    assert_eq!(Sha256::digest(log.data()), Sha256::digest(&secret));
    assert_eq!(
        log.after.last().map(|(h, _)| h.frame_type),
        Some(FrameType::End)
    );
    let seen = events_until(
        &net,
        &x,
        "X reports the impostor connected",
        |e| matches!(e, NodeEvent::PeerConnected { addr: a, .. } if *a == addr),
    )
    .await;
    assert!(matches!(seen.last(),
        Some(NodeEvent::PeerConnected { session, .. }) if session.version == WireVersion::V1));
}

/// Attack 3 against v2: a relay between X and S flips one byte of X's
/// second DATA frame. S closes with `bad_frame_mac`; the stream, opened by
/// the first frame, ends incomplete and is never reported complete.
pub async fn flipped_byte_v2<N: Net>(net: N) {
    let s = start(&net, cluster_node(false)).await;
    let x = start(&net, builder(KEY).chunk_size(CHUNK)).await;
    let (relay, conn) = record(&net, &x, &s, ip(5, 100), WireVersion::V2, Some(2)).await;
    let original = tensor(4 * CHUNK);
    let reader = {
        let s = s.clone();
        spawn(&net, async move {
            let incoming = s.accept_stream().await.unwrap();
            incoming.stream.read_to_end().await
        })
    };
    // The sender may or may not see the connection fail before it finishes.
    let _ = x
        .send_tensor(PeerRef::Conn(conn.id), Bytes::from(original.clone()))
        .await;
    let body = within(
        &net,
        PATIENCE,
        "the relay flips a byte",
        relay.flipped.recv(),
    )
    .await
    .unwrap();
    assert_eq!(body, CHUNK + 16, "a sealed DATA frame was altered");
    let got = within(&net, Duration::from_secs(10), "S's stream ends", reader).await;
    assert!(
        matches!(
            got,
            Err(asoc_async::StreamError::Incomplete {
                reason: CloseReason::BadFrameMac,
                ..
            })
        ),
        "{got:?}"
    );
    let seen = events_until(&net, &s, "S closes the connection", |e| {
        matches!(e, NodeEvent::PeerDisconnected { .. })
    })
    .await;
    assert!(matches!(
        seen.last(),
        Some(NodeEvent::PeerDisconnected {
            reason: CloseReason::BadFrameMac,
            ..
        })
    ));
    let seen = with_queued(&s, seen);
    assert!(seen.iter().any(|e| matches!(e,
        NodeEvent::PeerConnected { session, .. }
            if session.version == WireVersion::V2 && session.suite.is_some())));
    assert!(seen.iter().any(|e| matches!(e,
        NodeEvent::StreamIncomplete { reason: CloseReason::BadFrameMac, bytes, .. }
            if *bytes == CHUNK as u64)));
    assert!(seen
        .iter()
        .all(|e| !matches!(e, NodeEvent::StreamComplete { .. })));
    assert!(s.connected_peers().is_empty());
    assert_eq!(
        s.counters().bad_frame_mac,
        1,
        "the refused frame is counted"
    );
}

/// Attack 3 against v1: the same relay's flipped byte goes unnoticed: S
/// reports the stream complete, under X's id, with a different SHA-256.
pub async fn flipped_byte_v1<N: Net>(net: N) {
    let s = start(&net, cluster_node(true)).await;
    let x = start(&net, builder(KEY).chunk_size(CHUNK)).await;
    let (relay, conn) = record(&net, &x, &s, ip(6, 100), WireVersion::V1, Some(2)).await;
    let original = tensor(4 * CHUNK);
    let reader = {
        let s = s.clone();
        spawn(&net, async move {
            let incoming = s.accept_stream().await.unwrap();
            (incoming.peer_node, incoming.stream.read_to_end().await)
        })
    };
    x.send_tensor(PeerRef::Conn(conn.id), Bytes::from(original.clone()))
        .await
        .unwrap();
    let body = within(
        &net,
        PATIENCE,
        "the relay flips a byte",
        relay.flipped.recv(),
    )
    .await
    .unwrap();
    assert_eq!(body, CHUNK, "a cleartext DATA frame was altered");
    let (peer_node, got) = within(&net, Duration::from_secs(10), "S's stream ends", reader).await;
    let got = got.expect("v1 reports the altered tensor complete");
    assert_eq!(peer_node, Some(x.node_id()));
    assert_eq!(got.len(), original.len());
    assert_ne!(Sha256::digest(&got), Sha256::digest(&original));
    let differing = got.iter().zip(&original).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 1);
    let seen = events_until(&net, &s, "S reports the stream complete", |e| {
        matches!(e, NodeEvent::StreamComplete { .. })
    })
    .await;
    assert!(matches!(seen.last(),
        Some(NodeEvent::StreamComplete { bytes, .. }) if *bytes == original.len() as u64));
    assert!(seen.iter().any(|e| matches!(e,
        NodeEvent::PeerConnected { session, .. } if session.version == WireVersion::V1)));
}

/// Attack 3's redirection against v2: X means to reach Z and dials a relay
/// (where a relayed announcement would send it), which connects it to Y
/// instead. X's dial expects Z's id, so it fails with `unexpected_peer`
/// naming both, and Y never establishes. The same relay to Z itself
/// succeeds: the relay is transparent, the id check is what refused.
pub async fn redirected_dial_v2<N: Net>(net: N) {
    let y = start(&net, cluster_node(false)).await;
    let z = start(&net, cluster_node(false)).await;
    let x = start(&net, builder(KEY)).await;
    let relay_ip = ip(7, 100);
    let to_y = Relay::start(y.local_addr(), relay_ip, None);
    let wants_z = ClientOptions::v2().expect_peer(Some(z.node_id()));
    let result = within(
        &net,
        Duration::from_secs(10),
        "the redirected dial ends",
        x.connect_with(to_y.addr.to_string(), wants_z),
    )
    .await;
    let expected = AuthFailure::UnexpectedPeer {
        expected: z.node_id(),
        proven: y.node_id(),
    };
    assert!(refused_with(&result, expected), "{result:?}");
    let seen = events_until(
        &net,
        &x,
        "X reports the refusal",
        |e| matches!(e, NodeEvent::AuthFailed { addr, .. } if *addr == to_y.addr),
    )
    .await;
    assert!(
        matches!(seen.last(), Some(NodeEvent::AuthFailed { reason, .. }) if *reason == expected)
    );
    assert_eq!(x.counters().policy.auth_failures.unexpected_peer, 1);
    assert_eq!(x.counters().auth.unexpected_peer, 1);
    assert!(x.connected_peers().is_empty());

    let to_z = Relay::start(z.local_addr(), relay_ip, None);
    let conn = within(
        &net,
        Duration::from_secs(10),
        "the relayed dial to Z",
        x.connect_with(to_z.addr.to_string(), wants_z),
    )
    .await
    .expect("a relay to the expected node is transparent");
    assert_eq!(conn.peer_node, Some(z.node_id()));
    // X closed without CONFIRM, so Y drops its half of the handshake; a
    // peer that hangs up is not a failed authentication, so no event says
    // so, but the connection must be gone and never established.
    within(
        &net,
        Duration::from_secs(10),
        "Y drops the handshake",
        async {
            while !y.peers().is_empty() {
                net.sleep_until(Instant::now() + Duration::from_millis(10))
                    .await;
            }
        },
    )
    .await;
    let seen = with_queued(&y, Vec::new());
    admitted_nothing(&y, &with_queued(&y, seen), relay_ip);
    assert_eq!(y.counters().policy.established, 0);
}

/// Attack 3's redirection against v1: the relay to Y instead of Z goes
/// unnoticed (a v1 server proves no id), and X's tensor lands at Y.
pub async fn redirected_dial_v1<N: Net>(net: N) {
    let y = start(&net, cluster_node(true)).await;
    let x = start(&net, builder(KEY)).await;
    let to_y = Relay::start(y.local_addr(), ip(8, 100), None);
    let conn = within(
        &net,
        Duration::from_secs(10),
        "the redirected dial",
        x.connect_with(to_y.addr.to_string(), ClientOptions::v1()),
    )
    .await
    .expect("v1 cannot tell which node answered");
    assert_eq!(conn.peer_node, None, "no server id in v1");
    delivers(
        &net,
        &x,
        PeerRef::Conn(conn.id),
        &y,
        x.node_id(),
        &tensor(100_000),
    )
    .await;
}

/// Attack 4 against v2: an attacker replays X's recorded HELLO2 to claim X
/// at N, which already knows X from that very handshake (`replay`, closed
/// without a byte), and at M, which knows X from a connection of its own
/// (ACCEPT2, then the handshake deadline). Neither gains a second
/// connection claiming X, and X's real connections still carry tensors.
pub async fn squatting_v2<N: Net>(net: N) {
    let n = start(&net, cluster_node(false)).await;
    let m = start(&net, cluster_node(false)).await;
    let x = start(&net, builder(KEY)).await;
    let rec = recorded(&net, &x, &n, ip(9, 100), WireVersion::V2).await;
    let to_m = within(
        &net,
        Duration::from_secs(10),
        "X connects to M",
        x.connect(m.local_addr().to_string()),
    )
    .await
    .unwrap();
    let (at_n, at_m) = (ip(9, 1), ip(9, 2));

    let mut sock = attacker(at_n, n.local_addr());
    sock.write_all(&rec.hello).unwrap();
    assert!(answer(&mut sock).is_none(), "N answered a replayed HELLO2");
    let seen = events_until(&net, &n, "N refuses the replay", |e| {
        failure_from(e, at_n).is_some()
    })
    .await;
    assert_eq!(
        failure_from(seen.last().unwrap(), at_n),
        Some(AuthFailure::Replay)
    );
    assert_eq!(n.counters().policy.auth_failures.replay, 1);
    admitted_nothing(&n, &with_queued(&n, seen), at_n);

    let mut sock = attacker(at_m, m.local_addr());
    sock.write_all(&rec.hello).unwrap();
    let (h, _) = answer(&mut sock).expect("M answers a HELLO2 it never saw");
    assert_eq!(h.frame_type, FrameType::Accept);
    assert_eq!(until_closed(&mut sock), 0, "M sent nothing after ACCEPT2");
    let seen = events_until(&net, &m, "M times the squatter out", |e| {
        failure_from(e, at_m).is_some()
    })
    .await;
    assert_eq!(
        failure_from(seen.last().unwrap(), at_m),
        Some(AuthFailure::Timeout)
    );
    assert_eq!(m.counters().policy.auth_failures.timeout, 1);
    admitted_nothing(&m, &with_queued(&m, seen), at_m);

    assert_eq!(claiming(&n, x.node_id()), 1);
    assert_eq!(claiming(&m, x.node_id()), 1);
    delivers(
        &net,
        &x,
        PeerRef::Conn(rec.conn.id),
        &n,
        x.node_id(),
        &tensor(300_000),
    )
    .await;
    delivers(
        &net,
        &x,
        PeerRef::Conn(to_m.id),
        &m,
        x.node_id(),
        &tensor(300_000),
    )
    .await;
}

/// Attack 4 against v1: the replayed v1 HELLO is refused at N, which saw
/// it (v1 remembers HELLOs too), but M, which knows X from a connection of
/// its own, accepts it: M then holds two connections claiming X, one of
/// them the attacker's. What v2 prevents.
pub async fn squatting_v1<N: Net>(net: N) {
    let n = start(&net, cluster_node(true)).await;
    let m = start(&net, cluster_node(true)).await;
    let x = start(&net, builder(KEY)).await;
    let rec = recorded(&net, &x, &n, ip(10, 100), WireVersion::V1).await;
    within(
        &net,
        Duration::from_secs(10),
        "X connects to M",
        x.connect_with(m.local_addr().to_string(), ClientOptions::v1()),
    )
    .await
    .unwrap();
    let (at_n, at_m) = (ip(10, 1), ip(10, 2));

    let mut sock = attacker(at_n, n.local_addr());
    sock.write_all(&rec.hello).unwrap();
    assert!(answer(&mut sock).is_none(), "N answered a replayed HELLO");
    let seen = events_until(&net, &n, "N refuses the replay", |e| {
        failure_from(e, at_n).is_some()
    })
    .await;
    assert_eq!(
        failure_from(seen.last().unwrap(), at_n),
        Some(AuthFailure::Replay)
    );

    let mut squatter = attacker(at_m, m.local_addr());
    squatter.write_all(&rec.hello).unwrap();
    let (h, _) = answer(&mut squatter).expect("M accepts the replayed v1 HELLO");
    assert_eq!((h.version, h.frame_type), (1, FrameType::Accept));
    events_until(&net, &m, "M reports the squatter as X", |e| {
        matches!(e, NodeEvent::PeerConnected { peer_node, addr, .. }
            if *peer_node == Some(x.node_id()) && addr.ip() == at_m)
    })
    .await;
    assert_eq!(
        claiming(&m, x.node_id()),
        2,
        "the squatter holds X's id at M"
    );
}
