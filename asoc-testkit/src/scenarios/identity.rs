//! Attacks on who a node thinks it is talking to, performed from outside
//! over loopback: a key holder squatting a node id from its own address
//! before the real node is discovered, and a peer that opens a new
//! connection every interval and never uses the ones it opened (what the
//! Python implementation does when it has the smaller id).

use super::*;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr};

use asoc_proto::auth::sign_hello;
use asoc_proto::connection::CloseReason;
use asoc_proto::node::Direction;
use asoc_proto::wire::{FrameType, Header, HEADER_LEN};
use uuid::Uuid;

/// A node id unique to this process and call whose first byte is `first`:
/// ids compare by it, so a scenario picks which node has the smaller id.
fn id_with_first_byte(first: u8) -> Uuid {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut b = [0u8; 16];
    b[0] = first;
    b[1..5].copy_from_slice(&std::process::id().to_be_bytes());
    b[8..].copy_from_slice(&n.to_be_bytes());
    uuid::Builder::from_random_bytes(b).into_uuid()
}

/// Unicast discovery to `to`, announcing every `interval`.
fn announcing(to: SocketAddr, interval: Duration) -> DiscoveryConfig {
    DiscoveryConfig::builder(COMMUNITY)
        .announce_interval(interval)
        .unicast_targets(vec![to])
        .build()
        .unwrap()
}

/// Every event of `node` until `done` holds for the events seen so far
/// (within 20 s).
async fn events_until<N: Net>(
    net: &N,
    node: &Node<N>,
    what: &str,
    done: impl Fn(&[NodeEvent]) -> bool,
) -> Vec<NodeEvent> {
    within(net, Duration::from_secs(20), what, async {
        let mut seen = Vec::new();
        while !done(&seen) {
            seen.push(node.next_event().await.expect("event channel closed"));
        }
        seen
    })
    .await
}

/// Node X's id squatted: a key holder at 127.0.0.7 connects to A with a v1
/// HELLO claiming X before A hears of X. A still dials X at the address
/// discovery names, `PeerRef::Node(X)` reaches the real X (not the older
/// squatter's connection), A reports the two claims as a conflict, and the
/// squatter receives nothing after its ACCEPT.
pub async fn squatted_node_id<N: Net>(net: N) {
    let (ua, ux) = (free_udp(), free_udp());
    let interval = Duration::from_millis(200);
    let (a_id, x_id) = (id_with_first_byte(0x00), id_with_first_byte(0xff));
    let a = start(
        &net,
        builder(KEY)
            .node_id(a_id)
            .allow_v1(true)
            .discovery(ua, announcing(ux, interval)),
    )
    .await;

    let squatter_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
    let mut squatter = connect_from(squatter_ip, a.local_addr()).unwrap();
    squatter
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let key = ApiKey::new(KEY).unwrap();
    squatter
        .write_all(&sign_hello(&key, x_id, 0x5eed_0007).encode_frame())
        .unwrap();
    let mut head = [0u8; HEADER_LEN];
    squatter.read_exact(&mut head).expect("A answers the HELLO");
    let accept = Header::decode(&head);
    assert_eq!((accept.version, accept.frame_type), (1, FrameType::Accept));
    let mut body = vec![0u8; accept.length as usize];
    squatter.read_exact(&mut body).unwrap();
    events_until(&net, &a, "A takes the squatter for X", |seen| {
        seen.iter().any(|e| {
            matches!(e, NodeEvent::PeerConnected { peer_node, addr, .. }
                if *peer_node == Some(x_id) && addr.ip() == squatter_ip)
        })
    })
    .await;

    let x = start(
        &net,
        builder(KEY)
            .node_id(x_id)
            .discovery(ux, announcing(ua, interval)),
    )
    .await;
    let x_addr = x.local_addr();
    let dialed = |e: &NodeEvent| {
        matches!(e, NodeEvent::PeerConnected { peer_node, addr, direction: Direction::Outbound, .. }
            if *peer_node == Some(x_id) && *addr == x_addr)
    };
    let conflict = |e: &NodeEvent| {
        matches!(e, NodeEvent::IdentityConflict { node, addr, other_addr, .. }
            if *node == x_id && *addr == x_addr && other_addr.ip() == squatter_ip)
    };
    let seen = events_until(
        &net,
        &a,
        "A dials the real X and reports the conflict",
        |seen| seen.iter().any(dialed) && seen.iter().any(conflict),
    )
    .await;
    let real = seen
        .iter()
        .find_map(|e| match e {
            NodeEvent::PeerConnected { conn, .. } if dialed(e) => Some(*conn),
            _ => None,
        })
        .unwrap();
    assert_eq!(a.resolve(PeerRef::Node(x_id)).unwrap(), real);

    let payload = Bytes::from(chunk(13, 0, 256 << 10));
    let reader = {
        let x = x.clone();
        spawn(&net, async move {
            let incoming = x.accept_stream().await.unwrap();
            (
                incoming.peer_node,
                incoming.stream.read_to_end().await.unwrap(),
            )
        })
    };
    within(
        &net,
        Duration::from_secs(20),
        "the send to node X",
        a.send_tensor(PeerRef::Node(x_id), payload.clone()),
    )
    .await
    .unwrap();
    let (from, got) = within(&net, Duration::from_secs(20), "X receives", reader).await;
    assert_eq!(from, Some(a_id));
    assert!(got == payload, "X received the tensor meant for X");
    squatter.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    match squatter.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the squatter got something after ACCEPT: {other:?}"),
    }
}

/// A peer P with the smaller id whose stand-in Q (same node id, same
/// address, as the Python implementation's connections are) opens a new
/// authenticated connection to L every round and never uses the old ones,
/// while L waits to be dialed. L closes each idle duplicate, dials P back
/// once it sees the churn, and never holds more than two connections from
/// it; in the end it holds exactly its own connection to P and Q's newest.
pub async fn churning_peer<N: Net>(net: N) {
    let rounds = 8;
    let (ul, up) = (free_udp(), free_udp());
    let (l_id, p_id) = (id_with_first_byte(0xff), id_with_first_byte(0x00));
    // L announces to nowhere (P never learns of it, so never dials it) and
    // defers its own dial for two of its long intervals, so the churn is
    // what makes it dial.
    let nowhere = free_udp();
    let l = start(
        &net,
        builder(KEY)
            .node_id(l_id)
            .discovery(ul, announcing(nowhere, Duration::from_secs(10))),
    )
    .await;
    let p = start(
        &net,
        builder(KEY)
            .node_id(p_id)
            .discovery(up, announcing(ul, Duration::from_millis(200))),
    )
    .await;
    events_until(&net, &l, "L discovers P", |seen| {
        seen.iter()
            .any(|e| matches!(e, NodeEvent::PeerDiscovered { node, .. } if *node == p_id))
    })
    .await;
    let q = start(&net, builder(KEY).node_id(p_id)).await;
    for round in 0..rounds {
        within(
            &net,
            Duration::from_secs(10),
            "Q connects",
            q.connect(l.local_addr().to_string()),
        )
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        within(
            &net,
            Duration::from_secs(10),
            "L closes the idle duplicate",
            async {
                while l.connected_peers().len() > 2 {
                    net.sleep_until(Instant::now() + Duration::from_millis(10))
                        .await;
                }
            },
        )
        .await;
    }
    let p_addr = p.local_addr();
    let superseded = |e: &NodeEvent| {
        matches!(
            e,
            NodeEvent::PeerDisconnected {
                direction: Direction::Inbound,
                reason: CloseReason::Superseded,
                ..
            }
        )
    };
    let seen = events_until(&net, &l, "every duplicate but the newest closes", |seen| {
        seen.iter().filter(|e| superseded(e)).count() == rounds - 1
    })
    .await;
    assert!(seen
        .iter()
        .any(|e| matches!(e, NodeEvent::DialingBack { node, addr, .. }
            if *node == p_id && *addr == p_addr)));
    let live = l.connected_peers();
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(live
        .iter()
        .any(|c| c.direction == Direction::Outbound && c.addr == p_addr));
    assert!(live
        .iter()
        .all(|c| c.peer_node == Some(p_id) && c.addr.ip() == p_addr.ip()));
    // Settled: Q's closed connections are gone at Q too.
    within(
        &net,
        Duration::from_secs(10),
        "Q sees its duplicates closed",
        async {
            while q.connected_peers().len() > 1 {
                net.sleep_until(Instant::now() + Duration::from_millis(10))
                    .await;
            }
        },
    )
    .await;
}
