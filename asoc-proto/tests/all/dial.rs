//! Reconnect schedule and discovery dialing (WIRE.md §6, RFC-0001 §9.4) on a
//! virtual clock: `t0` is the epoch and time only moves by adding durations.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use asoc_proto::dial::{Dial, DialConfig, DialEvent, DialTarget, Dialer, PeerId, PeerState};
use asoc_proto::rng::Seed;
use proptest::prelude::*;
use uuid::Uuid;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn seed(n: u8) -> Seed {
    let mut s = [0u8; 32];
    s[0] = n;
    s[31] = n.wrapping_mul(7);
    s
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

fn node(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

fn due(d: &Dialer, peer: PeerId) -> Instant {
    match d.state(peer) {
        Some(PeerState::Waiting { due }) => due,
        other => panic!("{peer} is not waiting: {other:?}"),
    }
}

/// Dials `peer` at `now` (it must be due) and reports a failure.
fn dial_and_fail(d: &mut Dialer, now: Instant, peer: PeerId) {
    let dial = d.poll_dial(now).expect("a dial is due");
    assert_eq!(dial.peer, peer);
    d.dial_failed(now, peer);
}

#[test]
fn static_peer_is_dialed_at_once() {
    let t0 = Instant::now();
    let mut d = Dialer::new(DialConfig::default(), seed(1));
    let target = DialTarget::Name("node-a.example:9000".into());
    let p = d.add_static(t0, target.clone());
    assert_eq!(d.poll_timeout(), Some(t0));
    let dial = d.poll_dial(t0).unwrap();
    assert_eq!((dial.peer, dial.target), (p, target));
    assert_eq!(d.state(p), Some(PeerState::Dialing));
    assert_eq!(d.poll_dial(t0), None, "one dial at a time per peer");
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn first_delay_is_within_one_to_five_seconds_across_seeds() {
    let t0 = Instant::now();
    let mut min = Duration::MAX;
    let mut max = Duration::ZERO;
    for s in 0..=255u8 {
        let mut d = Dialer::new(DialConfig::default(), seed(s));
        let p = d.add_static(t0, DialTarget::Addr(addr(9000)));
        dial_and_fail(&mut d, t0, p);
        let wait = due(&d, p) - t0;
        assert!(
            (SEC..=5 * SEC).contains(&wait),
            "seed {s}: first delay {wait:?}"
        );
        min = min.min(wait);
        max = max.max(wait);

        // After a dropped connection too.
        let now = due(&d, p);
        assert!(d.poll_dial(now).is_some());
        d.connected(p);
        d.disconnected(now, p);
        let wait = due(&d, p) - now;
        assert!(
            (SEC..=5 * SEC).contains(&wait),
            "seed {s}: reconnect delay {wait:?}"
        );
    }
    // Uniform over [1, 5] s: 256 draws spread over most of the range.
    assert!(min < 1500 * MS && max > 4500 * MS, "{min:?}..{max:?}");
}

/// The waits between consecutive failed dials of `p`, starting at `now`.
fn waits(d: &mut Dialer, mut now: Instant, p: PeerId, n: usize) -> Vec<Duration> {
    let mut out = Vec::new();
    for _ in 0..n {
        dial_and_fail(d, now, p);
        let next = due(d, p);
        out.push(next - now);
        now = next;
    }
    out
}

#[test]
fn backoff_doubles_and_caps_at_sixty_seconds_and_static_peers_never_give_up() {
    let t0 = Instant::now();
    let mut d = Dialer::new(DialConfig::default(), seed(3));
    let p = d.add_static(t0, DialTarget::Addr(addr(9000)));
    let w = waits(&mut d, t0, p, 200);
    let jitter = *w.first().unwrap();
    assert!((SEC..=5 * SEC).contains(&jitter));
    for (k, wait) in w.iter().enumerate() {
        let expect = (jitter * (1u32 << k.min(10))).min(60 * SEC);
        assert_eq!(*wait, expect, "failure {}", k + 1);
    }
    assert_eq!(*w.last().unwrap(), 60 * SEC);
    assert!(w.iter().all(|wait| *wait <= 60 * SEC));
    assert_eq!(d.poll_event(), None, "static peers are never given up");
    assert!(matches!(d.state(p), Some(PeerState::Waiting { .. })));
}

#[test]
fn connected_resets_the_backoff_and_a_drop_waits_a_fresh_jitter() {
    let t0 = Instant::now();
    let config = DialConfig::default();
    let mut d = Dialer::new(config.clone(), seed(4));
    let p = d.add_static(t0, DialTarget::Addr(addr(9000)));
    let w = waits(&mut d, t0, p, 6);
    assert_eq!(*w.last().unwrap(), 60 * SEC);
    let now = due(&d, p);
    assert!(d.poll_dial(now).is_some());
    d.connected(p);
    assert_eq!(d.state(p), Some(PeerState::Connected));
    assert_eq!(d.poll_timeout(), None);

    d.disconnected(now, p);
    let first = due(&d, p) - now;
    assert!((SEC..=5 * SEC).contains(&first));
    // The streak continues from the drop: 2d, 4d, ...
    let w = waits(&mut d, now + first, p, 3);
    assert_eq!(
        w,
        vec![
            config.retry_delay(first, 2),
            config.retry_delay(first, 3),
            config.retry_delay(first, 4)
        ]
    );
    assert_eq!(w.first().copied(), Some((first * 2).min(60 * SEC)));
}

#[test]
fn discovered_peer_is_given_up_after_three_consecutive_failures() {
    let t0 = Instant::now();
    let mut d = Dialer::new(DialConfig::default(), seed(5));
    let p = d.discovered(t0, node(1), addr(9000)).unwrap();
    assert_eq!(d.peer_of(node(1)), Some(p));
    let mut now = t0;
    for k in 1..=2 {
        dial_and_fail(&mut d, now, p);
        assert_eq!(d.poll_event(), None, "failure {k}");
        now = due(&d, p);
    }
    dial_and_fail(&mut d, now, p);
    assert_eq!(
        d.poll_event(),
        Some(DialEvent::GaveUp {
            peer: p,
            node: node(1),
            failures: 3
        })
    );
    assert!(matches!(d.state(p), Some(PeerState::GaveUp { .. })));
    assert_eq!(d.poll_timeout(), None);
    assert_eq!(d.poll_dial(now + 3600 * SEC), None);

    // Re-announcing the same address does not bring it back during the
    // cool-down, even if announcements pour in.
    for i in 0..100u32 {
        assert_eq!(
            d.discovered(now + i * 10 * MS, node(1), addr(9000)),
            Some(p)
        );
        assert_eq!(d.poll_dial(now + i * 10 * MS), None);
    }
    // After the cool-down, an announcement makes it due again, with a fresh
    // failure budget.
    let later = now + 60 * SEC;
    d.discovered(later, node(1), addr(9000));
    assert_eq!(d.state(p), Some(PeerState::Waiting { due: later }));
    dial_and_fail(&mut d, later, p);
    assert_eq!(d.poll_event(), None);
}

#[test]
fn success_between_failures_resets_the_give_up_count() {
    let t0 = Instant::now();
    let mut d = Dialer::new(DialConfig::default(), seed(6));
    let p = d.discovered(t0, node(1), addr(9000)).unwrap();
    let mut now = t0;
    for _ in 0..2 {
        dial_and_fail(&mut d, now, p);
        now = due(&d, p);
    }
    assert!(d.poll_dial(now).is_some());
    d.connected(p);
    d.disconnected(now, p);
    for _ in 0..2 {
        now = due(&d, p);
        dial_and_fail(&mut d, now, p);
    }
    assert_eq!(d.poll_event(), None);
    now = due(&d, p);
    dial_and_fail(&mut d, now, p);
    assert!(matches!(
        d.poll_event(),
        Some(DialEvent::GaveUp { failures: 3, .. })
    ));
}

#[test]
fn announcement_flood_never_dials_a_target_more_than_once_per_second() {
    let t0 = Instant::now();
    let mut d = Dialer::new(DialConfig::default(), seed(7));
    let mut dials: Vec<(Instant, PeerId)> = Vec::new();
    // 5 nodes announce every millisecond for 30 s, flipping between two
    // addresses; every dial fails at once or connects and drops at once.
    for ms in 0..30_000u32 {
        let now = t0 + ms * MS;
        for n in 0..5u8 {
            let port = 9000 + u16::from(n) * 2 + u16::from(ms % 7 == 0);
            d.discovered(now, node(n), addr(port));
        }
        while let Some(Dial { peer, .. }) = d.poll_dial(now) {
            dials.push((now, peer));
            if ms % 3 == 0 {
                d.dial_failed(now, peer);
            } else {
                d.connected(peer);
                d.disconnected(now, peer);
            }
        }
        while d.poll_event().is_some() {}
    }
    assert!(dials.len() >= 5, "peers were dialed at all");
    for n in 0..5u8 {
        let Some(p) = d.peer_of(node(n)) else {
            continue;
        };
        let times: Vec<Instant> = dials
            .iter()
            .filter(|(_, peer)| *peer == p)
            .map(|(t, _)| *t)
            .collect();
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= SEC,
                "node {n} dialed twice within {:?}",
                pair[1] - pair[0]
            );
        }
        // At most one per second over 30 s.
        assert!(times.len() <= 31, "node {n}: {} dials", times.len());
    }
}

#[test]
fn address_change_dials_the_new_address_but_respects_the_redial_interval() {
    let t0 = Instant::now();
    let mut d = Dialer::new(DialConfig::default(), seed(8));
    let p = d.discovered(t0, node(1), addr(9000)).unwrap();
    dial_and_fail(&mut d, t0, p);
    let backoff_due = due(&d, p);
    assert!(backoff_due >= t0 + SEC);
    // Same address: the backoff stands.
    assert_eq!(d.discovered(t0 + 100 * MS, node(1), addr(9000)), Some(p));
    assert_eq!(due(&d, p), backoff_due);
    // New address: due again, but not before a second after the last dial.
    assert_eq!(d.discovered(t0 + 100 * MS, node(1), addr(9001)), Some(p));
    assert_eq!(due(&d, p), t0 + SEC);
    let dial = d.poll_dial(t0 + SEC).unwrap();
    assert_eq!(dial.target, DialTarget::Addr(addr(9001)));

    // While dialing or connected an address change waits for the next dial.
    d.connected(p);
    d.discovered(t0 + 2 * SEC, node(1), addr(9002));
    assert_eq!(d.state(p), Some(PeerState::Connected));
    d.disconnected(t0 + 3 * SEC, p);
    let now = due(&d, p);
    assert_eq!(
        d.poll_dial(now).unwrap().target,
        DialTarget::Addr(addr(9002))
    );
}

#[test]
fn discovered_peers_are_capped_and_forgotten() {
    let t0 = Instant::now();
    let config = DialConfig::builder().max_discovered(2).build().unwrap();
    let mut d = Dialer::new(config, seed(9));
    let a = d.discovered(t0, node(1), addr(1)).unwrap();
    let _b = d.discovered(t0, node(2), addr(2)).unwrap();
    assert_eq!(d.discovered(t0, node(3), addr(3)), None);
    // Static peers are configuration, not limited.
    d.add_static(t0, DialTarget::Addr(addr(4)));
    assert_eq!(d.len(), 3);
    d.forget_discovered(node(1));
    assert_eq!(d.state(a), None);
    assert_eq!(d.peer_of(node(1)), None);
    d.forget_discovered(node(1));
    let c = d.discovered(t0, node(3), addr(3)).unwrap();
    assert_ne!(c, a, "ids are never reused");
    d.remove(c);
    d.remove(c);
    assert_eq!(d.peer_of(node(3)), None);
    assert_eq!(d.len(), 2);
}

#[test]
fn outcomes_for_peers_in_the_wrong_state_are_ignored() {
    let t0 = Instant::now();
    let mut d = Dialer::new(DialConfig::default(), seed(10));
    let p = d.add_static(t0, DialTarget::Addr(addr(1)));
    // Not dialing yet: a failure report changes nothing.
    d.dial_failed(t0, p);
    assert_eq!(d.state(p), Some(PeerState::Waiting { due: t0 }));
    // Not connected: a disconnect report changes nothing.
    d.disconnected(t0, p);
    assert_eq!(d.state(p), Some(PeerState::Waiting { due: t0 }));
    d.remove(p);
    d.dial_failed(t0, p);
    d.connected(p);
    d.disconnected(t0, p);
    assert!(d.is_empty());
}

fn schedule(t0: Instant, s: Seed) -> Vec<(Instant, PeerId)> {
    let mut d = Dialer::new(DialConfig::default(), s);
    d.add_static(t0, DialTarget::Addr(addr(1)));
    d.discovered(t0, node(1), addr(2));
    d.discovered(t0, node(2), addr(3));
    let mut out = Vec::new();
    let mut now = t0;
    while now < t0 + 600 * SEC {
        while let Some(dial) = d.poll_dial(now) {
            out.push((now, dial.peer));
            d.dial_failed(now, dial.peer);
        }
        match d.poll_timeout() {
            Some(at) => now = at,
            None => break,
        }
    }
    out
}

#[test]
fn a_fixed_seed_gives_the_same_schedule() {
    let t0 = Instant::now();
    let a = schedule(t0, seed(42));
    assert_eq!(a, schedule(t0, seed(42)));
    assert_ne!(a, schedule(t0, seed(43)));
    assert!(a.len() > 10);
}

#[derive(Clone, Debug)]
enum Op {
    Static,
    Discovered(u8, u8),
    Forget(u8),
    Poll,
    Failed(usize),
    Connected(usize),
    Disconnected(usize),
    Remove(usize),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Static),
        4 => (0u8..6, 0u8..3).prop_map(|(n, a)| Op::Discovered(n, a)),
        1 => (0u8..6).prop_map(Op::Forget),
        4 => Just(Op::Poll),
        3 => any::<usize>().prop_map(Op::Failed),
        2 => any::<usize>().prop_map(Op::Connected),
        2 => any::<usize>().prop_map(Op::Disconnected),
        1 => any::<usize>().prop_map(Op::Remove),
        3 => any::<u16>().prop_map(Op::Advance),
    ]
}

proptest! {
    #[test]
    fn random_operations_never_panic_and_respect_the_rules(
        ops in proptest::collection::vec(op(), 0..300),
        s in any::<u8>(),
    ) {
        let t0 = Instant::now();
        let config = DialConfig::builder().max_discovered(4).build().unwrap();
        let mut d = Dialer::new(config, seed(s));
        let mut now = t0;
        let mut ids: Vec<PeerId> = Vec::new();
        let mut statics = 0usize;
        let mut last_dial: std::collections::BTreeMap<PeerId, Instant> = Default::default();
        for op in ops {
            match op {
                Op::Static => {
                    ids.push(d.add_static(now, DialTarget::Addr(addr(1))));
                    statics += 1;
                }
                Op::Discovered(n, a) => {
                    if let Some(p) = d.discovered(now, node(n), addr(u16::from(a))) {
                        ids.push(p);
                    }
                }
                Op::Forget(n) => d.forget_discovered(node(n)),
                Op::Poll => {
                    while let Some(dial) = d.poll_dial(now) {
                        if let Some(prev) = last_dial.insert(dial.peer, now) {
                            prop_assert!(now - prev >= SEC);
                        }
                    }
                }
                Op::Failed(i) => if let Some(p) = ids.get(i % ids.len().max(1)) {
                    d.dial_failed(now, *p);
                },
                Op::Connected(i) => if let Some(p) = ids.get(i % ids.len().max(1)) {
                    d.connected(*p);
                },
                Op::Disconnected(i) => if let Some(p) = ids.get(i % ids.len().max(1)) {
                    d.disconnected(now, *p);
                },
                Op::Remove(i) => if let Some(p) = ids.get(i % ids.len().max(1)) {
                    d.remove(*p);
                },
                Op::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
            }
            while let Some(DialEvent::GaveUp { failures, .. }) = d.poll_event() {
                prop_assert_eq!(failures, 3);
            }
            // Static peers ever added, plus at most 4 discovered ones.
            prop_assert!(d.len() <= statics + 4);
            // No wait is longer than the 60 s cap, and the timer is the
            // earliest due time.
            let mut earliest: Option<Instant> = None;
            for p in &ids {
                if let Some(PeerState::Waiting { due }) = d.state(*p) {
                    prop_assert!(due <= now + 60 * SEC, "{} due {:?} after now", p, due - now);
                    earliest = Some(earliest.map_or(due, |e| e.min(due)));
                }
            }
            prop_assert_eq!(d.poll_timeout(), earliest);
        }
    }
}
