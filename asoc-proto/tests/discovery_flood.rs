// A test binary of its own: its counting allocator measures the whole
// process's heap, which other tests would allocate into.
//! A hostile datagram flood into one [`Discovery`]
//! (WIRE.md §5–§7), on a virtual clock.
//!
//! Three legitimate peers announce every 3 s from their own addresses while
//! an attacker without the key sends, from many (spoofed) source addresses,
//! a mix of datagrams of the wrong length, other communities' announcements,
//! wrongly signed ones (random MAC, another key, a captured announcement with
//! one bit flipped), correctly signed stale and future-dated ones (old
//! captures, broken clocks), replays of captured legitimate announcements
//! (fresh ones are replays, ones older than the ±60 s window are stale) and
//! reflections of the node's own announcements. The flood runs at 10,000
//! datagrams per virtual second.
//!
//! Checked after every datagram:
//! - the event it caused is exactly `Dropped { src, reason }` with the reason
//!   the test predicted from WIRE.md §7 alone, and the legitimate
//!   announcements cause no event at all: no peer is discovered, moved or
//!   expired by the flood;
//! - every table stays within its configured limit, and in fact holds only
//!   what the legitimate peers put there (3 peers, at most 3 tracked sources,
//!   at most one replay entry per legitimate announcement in the window);
//!
//! and at the end, the counters equal the predicted count for every reason
//! (and zero for the reasons the flood cannot reach) and the heap the whole
//! process holds grew by less than 1 MiB over the flood (a counting global
//! allocator; the flood's datagrams alone are 50 MB).
//!
//! The default run sends 1,000,000 datagrams (about 2 s here in the default
//! test profile); `ASOC_FLOOD_DATAGRAMS=N` changes the count.

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use asoc_proto::auth::{community_hash, ApiKey, KeyRing};
use asoc_proto::discovery::{
    Discovery, DiscoveryConfig, DiscoveryCounters, DiscoveryEvent, DropReason,
};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use uuid::Uuid;

// The generator of hostile datagrams, shared with the real-socket floods of
// every adapter (asoc_testkit::scenarios::discovery_flood). asoc-proto cannot
// depend on asoc-async, so the file is included by path.
#[path = "../../asoc-testkit/src/scenarios/hostile.rs"]
#[allow(dead_code)]
mod hostile;
use hostile::{signed, Attacker, Capture, Rng, WINDOW};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const COMMUNITY: &str = "flood-cluster";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const ATTACKER_KEY: &str = "fedcba9876543210fedcba9876543210";
const UNIX0: u64 = 1_800_000_000;
const ME: Uuid = Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0001);
/// Time between two flood datagrams: 10,000 per second.
const STEP: Duration = Duration::from_micros(100);
const ANNOUNCE: Duration = Duration::from_secs(3);
const LEGIT_PEERS: usize = 3;
const HEAP_GROWTH_LIMIT: isize = 1 << 20;

fn key(s: &str) -> ApiKey {
    ApiKey::new(s).unwrap()
}

/// A legitimate peer: its id, address and every announcement it sent.
struct Peer {
    node: Uuid,
    src: SocketAddr,
    next: Instant,
    sent: u32,
}

/// What the test predicts for each reason, from WIRE.md §7 alone.
#[derive(Default, Debug)]
struct Expected {
    wrong_length: u64,
    other_community: u64,
    bad_mac: u64,
    own_node: u64,
    stale: u64,
    future_dated: u64,
    replayed: u64,
    accepted: u64,
}

impl Expected {
    fn count(&mut self, reason: DropReason) {
        let c = match reason {
            DropReason::WrongLength => &mut self.wrong_length,
            DropReason::OtherCommunity => &mut self.other_community,
            DropReason::BadMac => &mut self.bad_mac,
            DropReason::OwnNode => &mut self.own_node,
            DropReason::Stale => &mut self.stale,
            DropReason::FutureDated => &mut self.future_dated,
            DropReason::Replayed => &mut self.replayed,
            other => panic!("the flood never predicts {other}"),
        };
        *c += 1;
    }

    fn check(&self, c: &DiscoveryCounters, flood: u64) {
        let pairs = [
            ("wrong_length", self.wrong_length, c.wrong_length),
            ("other_community", self.other_community, c.other_community),
            ("bad_mac", self.bad_mac, c.bad_mac),
            ("own_node", self.own_node, c.own_node),
            ("stale", self.stale, c.stale),
            ("future_dated", self.future_dated, c.future_dated),
            ("replayed", self.replayed, c.replayed),
            ("accepted", self.accepted, c.accepted),
            // Nothing in the flood gets far enough to reach these.
            ("replay_cache_full", 0, c.replay_cache_full),
            ("source_rate_limited", 0, c.source_rate_limited),
            ("source_table_full", 0, c.source_table_full),
            ("node_rate_limited", 0, c.node_rate_limited),
            ("peer_table_full", 0, c.peer_table_full),
            ("expired", 0, c.expired),
            ("events_lost", 0, c.events_lost),
        ];
        for (name, want, got) in pairs {
            assert_eq!(got, want, "counter {name}: {c:?}");
        }
        assert_eq!(c.dropped_total(), flood, "{c:?}");
        assert_eq!(c.received, flood + self.accepted, "{c:?}");
        // Every kind of hostile datagram actually occurred.
        for (name, want, _) in &pairs[..7] {
            assert!(*want > 0, "the flood produced no {name}");
        }
    }
}

fn attacker_src(rng: &mut Rng, peers: &[Peer]) -> SocketAddr {
    let port = 1024 + rng.below(60_000) as u16;
    let ip = match rng.below(10) {
        // Spoofing a legitimate peer's own address.
        0 => peers[rng.below(peers.len() as u64) as usize].src.ip(),
        // IPv4-mapped IPv6, as a dual-stack socket reports IPv4 senders.
        1 => IpAddr::V6(Ipv4Addr::from(rng.next() as u32).to_ipv6_mapped()),
        2 => IpAddr::V6(Ipv6Addr::from(u128::from(rng.next()) << 64 | 1)),
        _ => IpAddr::V4(Ipv4Addr::from(
            0xac10_0000 | (rng.next() as u32 & 0x000f_ffff),
        )),
    };
    SocketAddr::new(ip, port)
}

fn flood(datagrams: u64) {
    let keys = KeyRing::new(key(KEY));
    let real_key = key(KEY);
    let attacker_key = key(ATTACKER_KEY);
    let ours = community_hash(COMMUNITY);
    let theirs = community_hash("some-other-cluster");
    // The defaults of WIRE.md §6, spelled out: these are the limits checked.
    // The flood is of v1 announcements, so v1 is enabled.
    let config = DiscoveryConfig::builder(COMMUNITY)
        .allow_v1(true)
        .replay_capacity(65_536)
        .max_peers(1024)
        .max_tracked_sources(65_536)
        .max_queued_events(4096)
        .per_ip_rate(10)
        .per_node_rate(1)
        .peer_expiry(Duration::from_secs(15))
        .build()
        .unwrap();
    let limits = (
        config.max_peers(),
        config.max_tracked_sources(),
        config.replay_capacity(),
        config.max_queued_events(),
    );
    let t0 = Instant::now();
    let mut d = Discovery::new(config, ME, 9000, [7; 32], t0);
    let mut attacker = Attacker {
        rng: Rng(0x0a50c_f100d),
        ours,
        theirs,
        victim: ME,
        real_key: real_key.clone(),
        attacker_key,
        skew: 0,
    };
    let mut peers: Vec<Peer> = (0..LEGIT_PEERS)
        .map(|i| Peer {
            node: Uuid::from_u128(0xbeef_0000 + i as u128),
            src: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + i as u8)), 9999),
            // Staggered so that announcements do not coincide.
            next: t0 + Duration::from_millis(1000 * i as u64 + 7),
            sent: 0,
        })
        .collect();
    let mut captures: Vec<Capture> = Vec::new();
    let mut own_echo = None;
    let mut expected = Expected::default();
    let unix_at = |now: Instant| UNIX0 + now.duration_since(t0).as_secs();

    // Warm-up: each legitimate peer announces once and is discovered; our
    // own first announcement is captured for reflection.
    let mut now = t0;
    let max_replay = LEGIT_PEERS * (WINDOW as usize / ANNOUNCE.as_secs() as usize + 2);
    let mut peak = (0usize, 0usize, 0usize, 0usize);
    let legit_step =
        |d: &mut Discovery, now: Instant, peers: &mut [Peer], captures: &mut Vec<Capture>| {
            let mut announced = 0u64;
            for p in peers.iter_mut() {
                while p.next <= now {
                    let unix = unix_at(now);
                    // Sequential challenges: never a collision by chance.
                    let bytes = signed(&real_key, ours, p.node, 9000, unix, p.sent);
                    p.sent += 1;
                    p.next += ANNOUNCE;
                    d.handle_datagram(now, unix * 1000, p.src, &bytes, &keys);
                    captures.push(Capture {
                        bytes,
                        timestamp: unix,
                    });
                    announced += 1;
                    let first = p.sent == 1;
                    match (d.poll_event(), first) {
                        (Some(DiscoveryEvent::Discovered { node, addr, .. }), true) => {
                            assert_eq!((node, addr), (p.node, SocketAddr::new(p.src.ip(), 9000)));
                        }
                        (None, false) => {}
                        (event, _) => panic!(
                            "legitimate announcement {} of {}: {event:?}",
                            p.sent, p.node
                        ),
                    }
                    assert_eq!(d.poll_event(), None);
                }
            }
            announced
        };
    while peers.iter().any(|p| p.sent == 0) {
        expected.accepted += legit_step(&mut d, now, &mut peers, &mut captures);
        if own_echo.is_none() {
            // The v1 announcement of the round, which follows the v2 one.
            own_echo = std::iter::from_fn(|| d.poll_transmit(now, unix_at(now) * 1000, &keys))
                .find_map(|t| <[u8; 50]>::try_from(&t.datagram[..]).ok());
        }
        now += STEP;
    }
    let own_echo = own_echo.expect("the node announced itself");
    assert_eq!(d.peers().count(), LEGIT_PEERS);

    // The flood.
    let region = Region::new(GLOBAL);
    let mut buf = Vec::with_capacity(2048);
    let started = Instant::now();
    for _ in 0..datagrams {
        now += STEP;
        let unix = unix_at(now);
        expected.accepted += legit_step(&mut d, now, &mut peers, &mut captures);
        // The node keeps announcing (and may be reflected) and firing timers
        // as an adapter would.
        if d.poll_timeout().is_some_and(|t| t <= now) {
            d.handle_timeout(now);
            while d.poll_transmit(now, unix * 1000, &keys).is_some() {}
        }
        let src = attacker_src(&mut attacker.rng, &peers);
        let reason = attacker.datagram(&mut buf, unix, &captures, &own_echo);
        expected.count(reason);
        d.handle_datagram(now, unix * 1000, src, &buf, &keys);
        // Measured before the adapter drains the event queue.
        let o = d.occupancy();
        let event = d.poll_event();
        assert_eq!(
            event,
            Some(DiscoveryEvent::Dropped { src, reason }),
            "datagram {buf:02x?} from {src} at unix {unix}"
        );
        assert_eq!(d.poll_event(), None);
        assert!(
            o.peers <= limits.0 && o.tracked_sources <= limits.1,
            "{o:?}"
        );
        assert!(
            o.replay_entries <= limits.2 && o.queued_events <= limits.3,
            "{o:?}"
        );
        // Tighter: only the legitimate peers left any state.
        assert_eq!(o.peers, LEGIT_PEERS, "{o:?}");
        assert!(o.tracked_sources <= LEGIT_PEERS, "{o:?}");
        assert!(o.replay_entries <= max_replay, "{o:?}");
        peak = (
            peak.0.max(o.peers),
            peak.1.max(o.tracked_sources),
            peak.2.max(o.replay_entries),
            peak.3.max(o.queued_events),
        );
    }
    let elapsed = started.elapsed();
    let stats = region.change();
    let grown =
        stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated;
    // `captures` is the eavesdropper's memory, not the node's.
    let captures_bytes = (captures.capacity() * size_of::<Capture>()) as isize;

    let c = d.counters().clone();
    println!(
        "{datagrams} flood datagrams over {:.1} virtual s in {:.2?} ({:.0} per s); \
         legitimate announcements accepted: {}; dropped: wrong_length {}, \
         other_community {}, bad_mac {}, own_node {}, stale {}, future_dated {}, \
         replayed {}; peak occupancy: peers {}/{}, tracked sources {}/{}, replay \
         entries {}/{}, queued events {}/{}; heap growth over the flood {} bytes \
         (of which the test's capture list {})",
        now.duration_since(t0).as_secs_f64(),
        elapsed,
        datagrams as f64 / elapsed.as_secs_f64(),
        c.accepted,
        c.wrong_length,
        c.other_community,
        c.bad_mac,
        c.own_node,
        c.stale,
        c.future_dated,
        c.replayed,
        peak.0,
        limits.0,
        peak.1,
        limits.1,
        peak.2,
        limits.2,
        peak.3,
        limits.3,
        grown,
        captures_bytes,
    );
    expected.check(&c, datagrams);
    assert!(
        grown - captures_bytes < HEAP_GROWTH_LIMIT,
        "heap grew by {grown} bytes over the flood"
    );
    // The legitimate peers are still there, at their own addresses.
    for p in &peers {
        let known = d.peer(&p.node).expect("legitimate peer forgotten");
        assert_eq!(known.addr, SocketAddr::new(p.src.ip(), 9000));
    }
}

#[test]
fn a_million_hostile_discovery_datagrams_leave_no_trace_and_are_counted_by_reason() {
    let n = std::env::var("ASOC_FLOOD_DATAGRAMS")
        .ok()
        .map_or(1_000_000, |s| {
            s.parse().expect("ASOC_FLOOD_DATAGRAMS: a count")
        });
    flood(n);
}
