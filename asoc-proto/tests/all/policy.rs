//! Admission policy rules (WIRE.md §6, RFC-0002 §10.2) on a virtual clock:
//! `t0` is the epoch and time only moves by adding durations.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use asoc_proto::auth::AuthFailure;
use asoc_proto::policy::{Policy, PolicyConfig, PolicyEvent, Refusal, SlotId};
use proptest::prelude::*;

const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
}

fn drain(p: &mut Policy) -> Vec<PolicyEvent> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

/// Admits a connection from `addr` and fails its handshake with `why`.
fn fail_once(p: &mut Policy, now: Instant, addr: IpAddr, why: AuthFailure) -> Option<SlotId> {
    let slot = p.admit(now, addr).ok()?;
    let lock = p.auth_failed(now, slot, why);
    p.release(slot);
    lock.map(|_| slot)
}

#[test]
fn fifth_counted_failure_locks_out_for_the_lockout_time() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let a = ip(1);
    for i in 0..4 {
        assert!(
            fail_once(&mut p, t0, a, AuthFailure::BadMac).is_none(),
            "failure {i}"
        );
        assert!(!p.is_locked_out(t0, a));
    }
    let slot = p.admit(t0, a).unwrap();
    let lock = p.auth_failed(t0 + SEC, slot, AuthFailure::Replay).unwrap();
    assert_eq!(lock.ip, a);
    assert_eq!(lock.until, t0 + SEC + 10 * MIN);
    p.release(slot);
    assert_eq!(p.counters().lockouts, 1);
    assert_eq!(p.counters().auth_failures.bad_mac, 4);
    assert_eq!(p.counters().auth_failures.replay, 1);
    assert_eq!(p.counters().auth_failures.total(), 5);
    assert_eq!(
        drain(&mut p),
        vec![PolicyEvent::LockedOut {
            ip: a,
            until: lock.until
        }]
    );

    // Locked: refused with the end time, counted, reported; other IPs are fine.
    let just_before = lock.until - Duration::from_nanos(1);
    assert!(p.is_locked_out(just_before, a));
    assert_eq!(
        p.admit(just_before, a),
        Err(Refusal::LockedOut { until: lock.until })
    );
    assert_eq!(p.counters().refused.locked_out, 1);
    assert_eq!(
        drain(&mut p),
        vec![PolicyEvent::Refused {
            ip: a,
            reason: Refusal::LockedOut { until: lock.until }
        }]
    );
    assert!(p.admit(just_before, ip(2)).is_ok());

    // Released exactly at `until`, with a fresh failure budget.
    assert!(!p.is_locked_out(lock.until, a));
    for _ in 0..4 {
        assert!(fail_once(&mut p, lock.until, a, AuthFailure::Malformed).is_none());
    }
    assert!(fail_once(&mut p, lock.until, a, AuthFailure::Timeout).is_some());
    assert_eq!(p.counters().lockouts, 2);
}

#[test]
fn success_resets_the_failure_count() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let a = ip(1);
    for _ in 0..4 {
        fail_once(&mut p, t0, a, AuthFailure::BadMac);
    }
    let ok = p.admit(t0, a).unwrap();
    p.established(t0, ok);
    p.release(ok);
    assert_eq!(p.counters().established, 1);
    for _ in 0..4 {
        assert!(fail_once(&mut p, t0, a, AuthFailure::BadMac).is_none());
    }
    assert!(!p.is_locked_out(t0, a));
    assert!(fail_once(&mut p, t0, a, AuthFailure::BadMac).is_some());
}

#[test]
fn refusals_the_node_made_itself_do_not_lock() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let a = ip(1);
    for why in [
        AuthFailure::LockedOut,
        AuthFailure::RateLimited,
        AuthFailure::Capacity,
    ] {
        for _ in 0..10 {
            assert!(fail_once(&mut p, t0, a, why).is_none());
        }
    }
    assert!(!p.is_locked_out(t0, a));
    assert_eq!(p.counters().lockouts, 0);
    assert_eq!(p.counters().auth_failures.capacity, 10);
    assert_eq!(p.counters().auth_failures.get(AuthFailure::RateLimited), 10);
    // And they did not add to the count either: four real failures still
    // leave the address one short of a lockout.
    for _ in 0..4 {
        assert!(fail_once(&mut p, t0, a, AuthFailure::BadMac).is_none());
    }
    assert!(!p.is_locked_out(t0, a));
}

#[test]
fn only_the_first_failure_of_a_slot_counts() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let a = ip(1);
    let s = p.admit(t0, a).unwrap();
    for _ in 0..10 {
        assert!(p.auth_failed(t0, s, AuthFailure::BadMac).is_none());
    }
    assert_eq!(p.counters().auth_failures.bad_mac, 1);
    // A failed slot cannot become established, and still holds its place.
    p.established(t0, s);
    assert_eq!(p.counters().established, 0);
    assert_eq!(p.handshaking(), 1);
    p.release(s);
    assert_eq!(p.handshaking(), 0);
    assert!(p.auth_failed(t0, s, AuthFailure::BadMac).is_none());
}

#[test]
fn outbound_failures_are_counted_but_lock_nobody() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    for _ in 0..10 {
        let s = p.admit_outbound().unwrap();
        assert!(p.auth_failed(t0, s, AuthFailure::BadMac).is_none());
        p.release(s);
    }
    assert_eq!(p.counters().auth_failures.bad_mac, 10);
    assert_eq!(p.counters().outbound, 10);
    assert_eq!(p.counters().lockouts, 0);
}

#[test]
fn hundred_attempts_per_hour_then_refused_until_the_window_ends() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let a = ip(1);
    for i in 0..100u32 {
        let now = t0 + SEC * i;
        let s = p
            .admit(now, a)
            .unwrap_or_else(|e| panic!("attempt {i}: {e}"));
        p.established(now, s);
        p.release(s);
    }
    assert_eq!(p.admit(t0 + 100 * SEC, a), Err(Refusal::RateLimited));
    assert_eq!(p.admit(t0 + HOUR - SEC, a), Err(Refusal::RateLimited));
    assert_eq!(p.counters().refused.rate_limited, 2);
    assert_eq!(p.counters().attempts, 102);
    assert_eq!(p.counters().admitted, 100);
    // Another address has its own budget.
    assert!(p.admit(t0 + 100 * SEC, ip(2)).is_ok());
    // A new window opens once the hour since the first attempt is over.
    assert!(p.admit(t0 + HOUR, a).is_ok());
    assert_eq!(p.admit(t0 + HOUR, ip(1)).map(|_| ()), Ok(()));
}

#[test]
fn default_caps_are_64_handshaking_and_1024_connections() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let mut slots = Vec::new();
    // Distinct addresses, so that no per-IP rule is what refuses.
    for i in 0..64 {
        slots.push(p.admit(t0, ip(i)).unwrap_or_else(|e| panic!("{i}: {e}")));
    }
    assert_eq!(p.handshaking(), 64);
    assert_eq!(
        p.admit(t0, ip(64)),
        Err(Refusal::TooManyHandshakes { max: 64 })
    );
    for s in slots.drain(..) {
        p.established(t0, s);
    }
    for i in 64..1024 {
        let s = p.admit(t0, ip(i)).unwrap_or_else(|e| panic!("{i}: {e}"));
        p.established(t0, s);
    }
    assert_eq!((p.connections(), p.handshaking()), (1024, 0));
    assert_eq!(
        p.admit(t0, ip(1024)),
        Err(Refusal::TooManyConnections { max: 1024 })
    );
    assert_eq!(
        p.admit_outbound(),
        Err(Refusal::TooManyConnections { max: 1024 })
    );
}

#[test]
fn connection_cap_counts_inbound_and_outbound() {
    let t0 = Instant::now();
    let config = PolicyConfig::builder()
        .max_connections(3)
        .max_handshaking(3)
        .build()
        .unwrap();
    let mut p = Policy::new(config);
    let a = p.admit(t0, ip(1)).unwrap();
    p.established(t0, a);
    let _b = p.admit_outbound().unwrap();
    let _c = p.admit(t0, ip(2)).unwrap();
    assert_eq!(p.connections(), 3);
    assert_eq!(
        p.admit(t0, ip(3)),
        Err(Refusal::TooManyConnections { max: 3 })
    );
    assert_eq!(
        p.admit_outbound(),
        Err(Refusal::TooManyConnections { max: 3 })
    );
    assert_eq!(p.counters().refused.too_many_connections, 2);
    assert_eq!(
        Refusal::TooManyConnections { max: 3 }.as_auth_failure(),
        AuthFailure::Capacity
    );
    p.release(a);
    assert!(p.admit(t0, ip(3)).is_ok());
}

#[test]
fn handshake_cap_is_separate_and_freed_by_established() {
    let t0 = Instant::now();
    let config = PolicyConfig::builder()
        .max_connections(10)
        .max_handshaking(2)
        .build()
        .unwrap();
    let mut p = Policy::new(config);
    let a = p.admit(t0, ip(1)).unwrap();
    let _b = p.admit(t0, ip(2)).unwrap();
    // Our own dials do not use pre-auth places.
    let o = p.admit_outbound().unwrap();
    assert_eq!(p.handshaking(), 2);
    assert_eq!(
        p.admit(t0, ip(3)),
        Err(Refusal::TooManyHandshakes { max: 2 })
    );
    assert_eq!(p.counters().refused.too_many_handshakes, 1);
    p.established(t0, a);
    assert_eq!(p.handshaking(), 1);
    let c = p.admit(t0, ip(3)).unwrap();
    assert_eq!(p.connections(), 4);
    // A failed handshake keeps its place until released.
    p.auth_failed(t0, c, AuthFailure::Timeout);
    assert_eq!(
        p.admit(t0, ip(4)),
        Err(Refusal::TooManyHandshakes { max: 2 })
    );
    p.release(c);
    p.release(o);
    assert!(p.admit(t0, ip(4)).is_ok());
}

#[test]
fn full_tracking_table_fails_closed_until_entries_expire() {
    let t0 = Instant::now();
    let config = PolicyConfig::builder().max_tracked_ips(3).build().unwrap();
    let mut p = Policy::new(config);
    for n in 1..=3 {
        let s = p.admit(t0, ip(n)).unwrap();
        p.release(s);
    }
    assert_eq!(p.admit(t0 + MIN, ip(4)), Err(Refusal::TrackingFull));
    assert_eq!(p.counters().refused.tracking_full, 1);
    assert_eq!(
        Refusal::TrackingFull.as_auth_failure(),
        AuthFailure::Capacity
    );
    // Tracked addresses are still served.
    assert!(p.admit(t0 + MIN, ip(1)).is_ok());
    assert_eq!(p.tracked_ips(), 3);
    // ip(2), ip(3) are idle for a whole window: forgotten, making room.
    assert_eq!(p.poll_timeout(), Some(t0 + HOUR));
    p.handle_timeout(t0 + HOUR);
    assert_eq!(p.tracked_ips(), 1, "ip(1) holds a connection");
    assert!(p.admit(t0 + HOUR, ip(4)).is_ok());
}

#[test]
fn entries_with_a_lockout_or_a_connection_are_not_forgotten() {
    let t0 = Instant::now();
    let config = PolicyConfig::builder().lockout(2 * HOUR).build().unwrap();
    let mut p = Policy::new(config);
    let locked = ip(1);
    for _ in 0..5 {
        fail_once(&mut p, t0, locked, AuthFailure::BadMac);
    }
    let held = p.admit(t0, ip(2)).unwrap();
    p.handle_timeout(t0 + HOUR + MIN);
    assert_eq!(p.tracked_ips(), 2);
    assert!(p.is_locked_out(t0 + HOUR + MIN, locked));
    p.handle_timeout(t0 + 2 * HOUR);
    assert_eq!(p.tracked_ips(), 1, "lockout over: forgotten");
    p.release(held);
    let mut now = t0 + 2 * HOUR;
    while let Some(at) = p.poll_timeout() {
        assert!(at > now, "timer must move forward");
        now = at;
        p.handle_timeout(now);
    }
    assert_eq!(p.tracked_ips(), 0);
    assert!(now <= t0 + 4 * HOUR);
}

#[test]
fn release_is_idempotent_and_ignores_unknown_slots() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let a = p.admit(t0, ip(1)).unwrap();
    let b = p.admit(t0, ip(1)).unwrap();
    p.release(a);
    p.release(a);
    p.release(a);
    assert_eq!(p.connections(), 1);
    assert_eq!(p.handshaking(), 1);
    p.release(b);
    p.release(b);
    assert_eq!(p.connections(), 0);
    assert_eq!(p.handshaking(), 0);
    // Calls on released slots change nothing.
    p.established(t0, a);
    assert!(p.auth_failed(t0, b, AuthFailure::BadMac).is_none());
    assert_eq!(p.counters().established, 0);
    assert_eq!(p.counters().auth_failures.total(), 0);
}

#[test]
fn ipv6_hosts_in_one_prefix_share_limits() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    for n in 0..5u16 {
        let addr = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, n, 0, 0, 1));
        fail_once(&mut p, t0, addr, AuthFailure::BadMac);
    }
    let other_host: IpAddr = "2001:db8:0:1:ffff::9".parse().unwrap();
    let other_net: IpAddr = "2001:db8:0:2::1".parse().unwrap();
    assert!(p.is_locked_out(t0, other_host));
    assert!(!p.is_locked_out(t0, other_net));
    // Dual-stack sockets report IPv4 peers as mapped addresses.
    let v4 = ip(7);
    for _ in 0..5 {
        fail_once(&mut p, t0, v4, AuthFailure::BadMac);
    }
    let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
    assert!(p.is_locked_out(t0, mapped));
}

#[test]
fn event_queue_is_bounded() {
    let t0 = Instant::now();
    let config = PolicyConfig::builder()
        .max_attempts_per_window(1)
        .max_pending_events(3)
        .build()
        .unwrap();
    let mut p = Policy::new(config);
    let _ = p.admit(t0, ip(1));
    for _ in 0..10 {
        assert_eq!(p.admit(t0, ip(1)), Err(Refusal::RateLimited));
    }
    assert_eq!(drain(&mut p).len(), 3);
    assert_eq!(p.counters().events_dropped, 7);
    assert_eq!(p.counters().refused.rate_limited, 10);
}

#[derive(Clone, Debug)]
enum Op {
    Admit(u8),
    Outbound,
    Established(usize),
    AuthFailed(usize, u8),
    Release(usize),
    Advance(u16),
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12).prop_map(Op::Admit),
        1 => Just(Op::Outbound),
        2 => any::<usize>().prop_map(Op::Established),
        3 => (any::<usize>(), 0u8..8).prop_map(|(s, r)| Op::AuthFailed(s, r)),
        3 => any::<usize>().prop_map(Op::Release),
        1 => any::<u16>().prop_map(Op::Advance),
        1 => Just(Op::Timeout),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hs {
    Running,
    Done,
    Failed,
}

const REASONS: [AuthFailure; 8] = [
    AuthFailure::BadMac,
    AuthFailure::Replay,
    AuthFailure::Malformed,
    AuthFailure::Timeout,
    AuthFailure::LockedOut,
    AuthFailure::RateLimited,
    AuthFailure::Reflection,
    AuthFailure::Capacity,
];

proptest! {
    #[test]
    fn random_operations_keep_counts_consistent(ops in proptest::collection::vec(op(), 0..300)) {
        let t0 = Instant::now();
        let config = PolicyConfig::builder()
            .max_connections(6)
            .max_handshaking(3)
            .max_auth_failures(2)
            .lockout(30 * SEC)
            .max_attempts_per_window(5)
            .attempt_window(MIN)
            .max_tracked_ips(8)
            .max_pending_events(16)
            .build()
            .unwrap();
        let mut p = Policy::new(config);
        let mut now = t0;
        // Our own model of what is open: (slot, inbound, handshake state).
        let mut open: Vec<(SlotId, bool, Hs)> = Vec::new();
        let mut released: Vec<SlotId> = Vec::new();
        let mut outbound_refused = 0u64;
        let mut outbound_ok = 0u64;
        let pick = |open: &Vec<(SlotId, bool, Hs)>, released: &Vec<SlotId>, i: usize| {
            // Mostly live slots, sometimes stale ones.
            if i.is_multiple_of(4) && !released.is_empty() {
                released.get(i / 4 % released.len()).copied()
            } else {
                open.get(i % open.len().max(1)).map(|s| s.0)
            }
        };
        for op in ops {
            match op {
                Op::Admit(n) => {
                    if let Ok(s) = p.admit(now, ip(u32::from(n))) {
                        open.push((s, true, Hs::Running));
                    }
                }
                Op::Outbound => match p.admit_outbound() {
                    Ok(s) => {
                        outbound_ok += 1;
                        open.push((s, false, Hs::Running));
                    }
                    Err(_) => outbound_refused += 1,
                },
                Op::Established(i) => {
                    if let Some(s) = pick(&open, &released, i) {
                        p.established(now, s);
                        if let Some(e) = open.iter_mut().find(|e| e.0 == s && e.2 == Hs::Running) {
                            e.2 = Hs::Done;
                        }
                    }
                }
                Op::AuthFailed(i, r) => {
                    if let Some(s) = pick(&open, &released, i) {
                        let reason = REASONS[usize::from(r) % REASONS.len()];
                        if let Some(e) = open.iter_mut().find(|e| e.0 == s && e.2 == Hs::Running) {
                            e.2 = Hs::Failed;
                        }
                        if let Some(lock) = p.auth_failed(now, s, reason) {
                            prop_assert!(reason.counts_toward_lockout());
                            prop_assert!(p.is_locked_out(now, lock.ip));
                        }
                    }
                }
                Op::Release(i) => {
                    if let Some(s) = pick(&open, &released, i) {
                        p.release(s);
                        if open.iter().any(|e| e.0 == s) {
                            open.retain(|e| e.0 != s);
                            released.push(s);
                        }
                    }
                }
                Op::Advance(ms) => now += Duration::from_millis(u64::from(ms)) * 10,
                Op::Timeout => p.handle_timeout(now),
            }
            let _ = drain(&mut p);
            prop_assert_eq!(p.connections(), open.len());
            prop_assert!(p.connections() <= 6);
            prop_assert!(p.handshaking() <= 3);
            prop_assert_eq!(
                p.handshaking(),
                open.iter().filter(|e| e.1 && e.2 != Hs::Done).count()
            );
            prop_assert!(p.tracked_ips() <= 8);
            let c = p.counters();
            prop_assert_eq!(c.attempts, c.admitted + c.refused.total() - outbound_refused);
            prop_assert_eq!(c.outbound, outbound_ok);
            prop_assert!(c.established <= c.admitted + c.outbound);
        }
        // Releasing everything empties both gauges and, a while later, the table.
        for (s, _, _) in open.drain(..) {
            p.release(s);
        }
        prop_assert_eq!(p.connections(), 0);
        prop_assert_eq!(p.handshaking(), 0);
        let mut guard = 0;
        while let Some(at) = p.poll_timeout() {
            prop_assert!(at > now || guard == 0);
            now = now.max(at);
            p.handle_timeout(now);
            guard += 1;
            prop_assert!(guard < 100);
        }
        prop_assert_eq!(p.tracked_ips(), 0);
    }
}
