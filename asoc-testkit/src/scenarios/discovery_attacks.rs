//! Attacks on unicast discovery over real loopback UDP, from the
//! attacker's own address: a node announcing to several destinations hands
//! the attacker (one of them) a copy of every round, which the attacker
//! relays to the victim from 127.0.0.7.
//!
//! The announcing peer is a sans-IO [`Discovery`] machine on 127.0.0.2
//! whose rounds the scenario sends by hand, so that the relayed copy can be
//! put in front of the peer's own (the race a relay wins when it is first
//! on the peer's list) and after it (the relay "0.2 s before the next
//! round"). The victim is a node of the adapter under test, with v1
//! enabled. Every wait is on the victim's counters, bounded in time.

use super::*;

use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};

use asoc_proto::discovery::{Discovery, DiscoveryCounters};
use asoc_proto::v2::WireVersion;

/// The real peer's and the attacker's loopback addresses.
const PEER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const ATTACKER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));

/// Rounds of the real peer.
const ROUNDS: usize = 4;

/// The victim's discovery counters once `done` holds for them, waiting at
/// most 10 s.
async fn counted<N: Net>(
    net: &N,
    victim: &Node<N>,
    what: &str,
    done: impl Fn(&DiscoveryCounters) -> bool,
) -> DiscoveryCounters {
    within(net, Duration::from_secs(10), what, async {
        loop {
            let c = victim.counters().discovery.expect("discovery is on");
            if done(&c) {
                return c;
            }
            net.sleep_until(Instant::now() + Duration::from_millis(2))
                .await;
        }
    })
    .await
}

/// The relay attack against a victim with v1 enabled, the peer announcing
/// `version` only (a v1-only peer, as an older implementation is, or a v2
/// one): in each round after the first the attacker's relayed copy reaches
/// the victim first and is dropped as `address_sticky`, the peer's own copy
/// is accepted, and the copy relayed again before the next round is
/// `replayed`. The peer never moves, no dial ever reaches the attacker, and
/// no own copy of the peer is refused.
pub async fn relayed_announcements<N: Net>(net: N, version: WireVersion) {
    // The peer's TCP port, and the attacker listening on the same port at
    // its own address: where the victim would dial if the peer moved.
    // Other tests open sockets on 127.0.0.7 too, so the port free at the
    // peer's address may be taken at the attacker's: try a few.
    let (peer_tcp, port, trap) = (0..64)
        .find_map(|_| {
            let peer_tcp = TcpListener::bind((PEER_IP, 0)).ok()?;
            let port = peer_tcp.local_addr().ok()?.port();
            let trap = TcpListener::bind((ATTACKER_IP, port)).ok()?;
            Some((peer_tcp, port, trap))
        })
        .expect("a port free at both the peer's and the attacker's address");
    trap.set_nonblocking(true).unwrap();
    let peer_udp = UdpSocket::bind((PEER_IP, 0)).unwrap();
    let attacker = UdpSocket::bind((ATTACKER_IP, 0)).unwrap();
    attacker
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The victim announces to a sink nobody reads: unicast, never broadcast.
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let victim_udp = free_udp();
    let victim = start(
        &net,
        builder(KEY).allow_v1(true).discovery(
            victim_udp,
            DiscoveryConfig::builder(COMMUNITY)
                .allow_v1(true)
                .unicast_targets(vec![sink.local_addr().unwrap()])
                .build()
                .unwrap(),
        ),
    )
    .await;

    let keys = asoc_proto::auth::KeyRing::new(ApiKey::new(KEY).unwrap());
    let peer_id = uuid::Uuid::from_u128(0x00aa_0000_0000_0000_0000_0000_0000_0002);
    let mut peer = Discovery::new(
        DiscoveryConfig::builder(COMMUNITY)
            .allow_v1(true)
            .announce_interval(Duration::from_millis(1))
            .unicast_targets(vec![attacker.local_addr().unwrap(), victim_udp])
            .build()
            .unwrap(),
        peer_id,
        port,
        [0x5a; 32],
        Instant::now(),
    );
    let home = SocketAddr::new(PEER_IP, port);
    let mut buf = [0u8; 128];
    // The peer's own clock, one interval ahead each round: its rounds are
    // due whatever the real time between them (a fast machine would
    // otherwise ask within the 1 ms interval and get nothing).
    let peer_clock = Instant::now();
    for round in 0..ROUNDS {
        if round > 0 && version == WireVersion::V1 {
            // The victim honours one v1 announcement per second per node
            // and address; the peer announces no faster than that.
            net.sleep_until(Instant::now() + Duration::from_millis(1100))
                .await;
        }
        let now = peer_clock + Duration::from_secs(1 + round as u64);
        let unix = asoc_async::unix_ms();
        let sends: Vec<_> = std::iter::from_fn(|| peer.poll_transmit(now, unix, &keys))
            .filter(|t| t.datagram.version() == version)
            .collect();
        assert_eq!(sends.len(), 2, "one copy per destination");
        assert_eq!(sends[0].datagram, sends[1].datagram, "the same bytes");
        let before = victim.counters().discovery.expect("discovery is on");
        // The attacker, first on the peer's list, captures its copy.
        peer_udp.send_to(&sends[0].datagram, sends[0].to).unwrap();
        let (n, _) = attacker.recv_from(&mut buf).unwrap();
        let copy = buf[..n].to_vec();
        if round > 0 {
            // ... and relays it at once, ahead of the peer's own copy.
            attacker.send_to(&copy, victim_udp).unwrap();
            counted(&net, &victim, "the sticky drop", |c| {
                c.address_sticky > before.address_sticky
            })
            .await;
        }
        peer_udp.send_to(&sends[1].datagram, victim_udp).unwrap();
        let c = counted(&net, &victim, "the peer's own copy", |c| {
            c.received >= before.received + 1 + u64::from(round > 0)
        })
        .await;
        assert_eq!(
            c.accepted,
            before.accepted + 1,
            "round {round}: the peer's own copy was refused: {c:?}"
        );
        // The relay "0.2 s before the next round": a replay now.
        attacker.send_to(&copy, victim_udp).unwrap();
        counted(&net, &victim, "the replay", |c| {
            c.replayed > before.replayed
        })
        .await;
    }

    let c = victim.counters().discovery.expect("discovery is on");
    assert_eq!(c.accepted, ROUNDS as u64, "{c:?}");
    assert_eq!(c.address_sticky, ROUNDS as u64 - 1, "{c:?}");
    assert_eq!(c.replayed, ROUNDS as u64, "{c:?}");
    assert_eq!(c.node_rate_limited + c.replay_share_full, 0, "{c:?}");
    let mut found = None;
    while let Some(e) = victim.try_event() {
        match e {
            NodeEvent::PeerDiscovered { node, addr, .. } if node == peer_id => found = Some(addr),
            NodeEvent::PeerAddressChanged { node, .. } | NodeEvent::PeerExpired { node, .. }
                if node == peer_id =>
            {
                panic!("the relay moved the peer: {e:?}")
            }
            _ => {}
        }
    }
    assert_eq!(found, Some(home));
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a dial reached the attacker: {other:?}"),
    }
    drop(peer_tcp);
    victim.shutdown(Duration::from_secs(1)).await;
}

/// [`relayed_announcements`] with a peer that announces only v1.
pub async fn relayed_v1_announcements<N: Net>(net: N) {
    relayed_announcements(net, WireVersion::V1).await;
}

/// [`relayed_announcements`] with a peer that announces only v2.
pub async fn relayed_v2_announcements<N: Net>(net: N) {
    relayed_announcements(net, WireVersion::V2).await;
}
