//! Admission policy rules (WIRE.md §6, RFC-0002 §10.2) on a virtual clock:
//! `t0` is the epoch and time only moves by adding durations.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use asoc_proto::auth::AuthFailure;
use asoc_proto::policy::{
    FailureSummary, Policy, PolicyConfig, PolicyEvent, Refusal, SlotId, ThrottleCause,
};
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
fn fifth_counted_failure_throttles_to_one_handshake_per_interval() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let a = ip(1);
    for i in 0..4 {
        assert!(
            fail_once(&mut p, t0, a, AuthFailure::BadMac).is_none(),
            "failure {i}"
        );
        assert!(!p.is_throttled(t0, a));
    }
    let slot = p.admit(t0, a).unwrap();
    let t1 = t0 + SEC;
    let throttle = p.auth_failed(t1, slot, AuthFailure::Replay).unwrap();
    assert_eq!(throttle.ip, a);
    assert_eq!(throttle.until, t1 + 10 * MIN);
    assert_eq!(throttle.interval, 5 * SEC);
    assert_eq!(throttle.cause, ThrottleCause::Failures);
    p.release(slot);
    assert_eq!(p.counters().throttles, 1);
    assert_eq!(p.counters().auth_failures.bad_mac, 4);
    assert_eq!(p.counters().auth_failures.replay, 1);
    assert_eq!(p.counters().auth_failures.total(), 5);
    assert_eq!(drain(&mut p), vec![PolicyEvent::Throttled(throttle)]);

    // Throttled: refused until the next interval, counted, reported; other
    // addresses are fine.
    let next = t1 + 5 * SEC;
    let just_before = next - Duration::from_nanos(1);
    assert!(p.is_throttled(just_before, a));
    let refusal = Refusal::Throttled {
        next,
        until: throttle.until,
    };
    assert_eq!(p.admit(just_before, a), Err(refusal));
    assert_eq!(refusal.as_auth_failure(), AuthFailure::Throttled);
    assert_eq!(p.counters().refused.throttled, 1);
    assert_eq!(
        drain(&mut p),
        vec![PolicyEvent::Refused {
            ip: a,
            reason: refusal
        }]
    );
    assert!(p.admit(just_before, ip(2)).is_ok());

    // One handshake per interval is still verified; failing it keeps the
    // address throttled at the same rate.
    let s = p.admit(next, a).unwrap();
    assert!(p.auth_failed(next, s, AuthFailure::BadMac).is_none());
    p.release(s);
    assert_eq!(
        p.admit(next + SEC, a),
        Err(Refusal::Throttled {
            next: next + 5 * SEC,
            until: throttle.until
        })
    );
    // A correct HELLO in the next interval is accepted, and lifts the throttle.
    let ok = p.admit(next + 5 * SEC, a).unwrap();
    p.established(next + 5 * SEC, ok);
    assert!(!p.is_throttled(next + 5 * SEC, a));
    assert!(p.admit(next + 5 * SEC, a).is_ok());
    assert_eq!(p.counters().throttles, 1);
}

#[test]
fn a_throttle_ends_at_its_time_with_a_fresh_budget() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let a = ip(1);
    for _ in 0..5 {
        fail_once(&mut p, t0, a, AuthFailure::BadMac);
    }
    let until = t0 + 10 * MIN;
    assert!(p.is_throttled(until - SEC, a));
    assert!(!p.is_throttled(until, a));
    for _ in 0..4 {
        assert!(fail_once(&mut p, until, a, AuthFailure::Malformed).is_none());
    }
    assert!(fail_once(&mut p, until, a, AuthFailure::Timeout).is_some());
    assert_eq!(p.counters().throttles, 2);
}

#[test]
fn success_resets_the_failure_budget() {
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
    assert!(!p.is_throttled(t0, a));
    assert!(fail_once(&mut p, t0, a, AuthFailure::BadMac).is_some());
}

#[test]
fn refusals_the_node_made_itself_do_not_throttle() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let a = ip(1);
    for why in [
        AuthFailure::Throttled,
        AuthFailure::Capacity,
        AuthFailure::V1Disabled,
    ] {
        for _ in 0..10 {
            assert!(fail_once(&mut p, t0, a, why).is_none());
        }
    }
    assert!(!p.is_throttled(t0, a));
    assert_eq!(p.counters().throttles, 0);
    assert_eq!(p.counters().auth_failures.capacity, 10);
    assert_eq!(p.counters().auth_failures.get(AuthFailure::Throttled), 10);
    // And they did not spend the budget either: four real failures still
    // leave the address one short of a throttle.
    for _ in 0..4 {
        assert!(fail_once(&mut p, t0, a, AuthFailure::BadMac).is_none());
    }
    assert!(!p.is_throttled(t0, a));
}

#[test]
fn a_connection_closed_before_its_hello_is_a_quarter_of_a_failure() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let a = ip(1);
    let abandon = |p: &mut Policy, why: Option<AuthFailure>| {
        let s = p.admit(t0, a).unwrap();
        let t = p.abandoned(t0, s, why);
        p.release(s);
        t
    };
    for i in 0..19 {
        let why = (i % 2 == 0).then_some(AuthFailure::Timeout);
        assert!(abandon(&mut p, why).is_none(), "light failure {i}");
    }
    assert!(!p.is_throttled(t0, a));
    let t = abandon(&mut p, None).expect("the 20th light failure throttles");
    assert_eq!(t.cause, ThrottleCause::Failures);
    assert_eq!(p.counters().abandoned, 20);
    assert_eq!(p.counters().auth_failures.timeout, 10);
    // Light and full failures share the budget: 3 full + 8 light = 5 full.
    let b = ip(2);
    for _ in 0..3 {
        fail_once(&mut p, t0, b, AuthFailure::BadMac);
    }
    for i in 0..8 {
        let s = p.admit(t0, b).unwrap();
        let t = p.abandoned(t0, s, None);
        p.release(s);
        assert_eq!(t.is_some(), i == 7, "light failure {i}");
    }
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
    assert_eq!(p.counters().throttles, 0);
}

#[test]
fn successful_handshakes_never_count_as_attempts() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let a = ip(1);
    for i in 0..1000u32 {
        let now = t0 + SEC * i;
        let s = p
            .admit(now, a)
            .unwrap_or_else(|e| panic!("attempt {i}: {e}"));
        p.established(now, s);
        p.release(s);
    }
    assert_eq!(p.counters().admitted, 1000);
    assert!(!p.is_throttled(t0 + 1000 * SEC, a));
}

#[test]
fn a_hundred_unsuccessful_attempts_throttle_until_the_window_ends() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let a = ip(1);
    // Failures that spend no budget (a v1 peer knocking on a v2-only node):
    // only the attempt rate limits them.
    for i in 0..100u32 {
        let now = t0 + SEC * i;
        let s = p
            .admit(now, a)
            .unwrap_or_else(|e| panic!("attempt {i}: {e}"));
        p.auth_failed(now, s, AuthFailure::V1Disabled);
        p.release(s);
    }
    let t100 = t0 + 99 * SEC;
    let throttled = drain(&mut p)
        .into_iter()
        .filter_map(|e| match e {
            PolicyEvent::Throttled(t) => Some(t),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(throttled.len(), 1);
    assert_eq!(throttled[0].cause, ThrottleCause::Attempts);
    assert_eq!(throttled[0].until, t0 + HOUR);
    assert_eq!(
        p.admit(t100 + SEC, a),
        Err(Refusal::Throttled {
            next: t100 + 5 * SEC,
            until: t0 + HOUR
        })
    );
    assert_eq!(p.counters().refused.throttled, 1);
    // Another address has its own budget.
    assert!(p.admit(t100 + SEC, ip(2)).is_ok());
    // The low rate still admits one per interval, and a success among them
    // lifts the throttle.
    let s = p.admit(t100 + 5 * SEC, a).unwrap();
    p.established(t100 + 5 * SEC, s);
    p.release(s);
    assert!(!p.is_throttled(t100 + 5 * SEC, a));
    // Once the window is over, a new one opens.
    assert!(p.admit(t0 + HOUR, a).is_ok());
}

#[test]
fn capacity_refusals_never_count_as_attempts() {
    let t0 = Instant::now();
    let config = PolicyConfig::builder()
        .max_connections(10)
        .max_handshaking(1)
        .max_attempts_per_window(2)
        .build()
        .unwrap();
    let mut p = Policy::new(config);
    let held = p.admit(t0, ip(1)).unwrap();
    for _ in 0..50 {
        assert_eq!(
            p.admit(t0, ip(2)),
            Err(Refusal::TooManyHandshakes { max: 1 })
        );
    }
    p.release(held);
    assert!(p.admit(t0, ip(2)).is_ok());
    assert!(!p.is_throttled(t0, ip(2)), "one attempt of two");
}

#[test]
fn one_address_gets_at_most_its_share_of_the_handshake_cap() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let attacker = ip(7);
    let held: Vec<SlotId> = (0..8).map(|_| p.admit(t0, attacker).unwrap()).collect();
    for _ in 0..192 {
        assert_eq!(
            p.admit(t0, attacker),
            Err(Refusal::TooManyHandshakesFromIp { max: 8 })
        );
    }
    assert_eq!(p.handshaking_from(attacker), 8);
    assert_eq!(p.counters().refused.too_many_handshakes_from_ip, 192);
    assert_eq!(
        Refusal::TooManyHandshakesFromIp { max: 8 }.as_auth_failure(),
        AuthFailure::Capacity
    );
    // Others still get in.
    let peer = p.admit(t0, ip(1)).unwrap();
    p.established(t0, peer);
    // An established connection leaves the share; a released one too.
    p.established(t0, held[0]);
    assert!(p.admit(t0, attacker).is_ok());
    p.release(held[1]);
    assert!(p.admit(t0, attacker).is_ok());
    assert_eq!(p.handshaking_from(attacker), 8);
    assert!(
        !p.is_throttled(t0, attacker),
        "share refusals are no attempts"
    );
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
fn entries_with_a_throttle_or_a_connection_are_not_forgotten() {
    let t0 = Instant::now();
    let config = PolicyConfig::builder()
        .throttle_duration(2 * HOUR)
        .build()
        .unwrap();
    let mut p = Policy::new(config);
    let locked = ip(1);
    for _ in 0..5 {
        fail_once(&mut p, t0, locked, AuthFailure::BadMac);
    }
    let held = p.admit(t0, ip(2)).unwrap();
    p.handle_timeout(t0 + HOUR + MIN);
    assert_eq!(p.tracked_ips(), 2);
    assert!(p.is_throttled(t0 + HOUR + MIN, locked));
    p.handle_timeout(t0 + 2 * HOUR);
    assert_eq!(p.tracked_ips(), 1, "throttle over: forgotten");
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
    assert!(p.is_throttled(t0, other_host));
    assert!(!p.is_throttled(t0, other_net));
    // Their share of the handshake cap is shared too.
    for n in 0..8u16 {
        let host = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 3, n, 0, 0, 1));
        assert!(p.admit(t0, host).is_ok());
    }
    let neighbour: IpAddr = "2001:db8:0:3:abcd::2".parse().unwrap();
    assert_eq!(
        p.admit(t0, neighbour),
        Err(Refusal::TooManyHandshakesFromIp { max: 8 })
    );
    assert!(p.admit(t0, "2001:db8:0:4::1".parse().unwrap()).is_ok());
    // And their reports.
    let _ = p.admit(t0, other_net);
    assert!(p.report_failure(t0, other_net, AuthFailure::BadMac));
    assert!(!p.report_failure(t0, "2001:db8:0:2::77".parse().unwrap(), AuthFailure::BadMac));
    // Dual-stack sockets report IPv4 peers as mapped addresses.
    let v4 = ip(7);
    for _ in 0..5 {
        fail_once(&mut p, t0, v4, AuthFailure::BadMac);
    }
    let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
    assert!(p.is_throttled(t0, mapped));
}

#[test]
fn failures_of_one_address_are_reported_once_then_aggregated_per_interval() {
    let t0 = Instant::now();
    let mut p = Policy::new(PolicyConfig::default());
    let a = ip(1);
    let _ = p.admit(t0, a);
    assert!(
        p.report_failure(t0, a, AuthFailure::BadMac),
        "the first is reported"
    );
    for i in 1..=50u32 {
        let why = if i % 2 == 0 {
            AuthFailure::Capacity
        } else {
            AuthFailure::BadMac
        };
        assert!(!p.report_failure(t0 + SEC / 10 * i, a, why));
    }
    // Another address has its own report.
    let _ = p.admit(t0, ip(2));
    assert!(p.report_failure(t0, ip(2), AuthFailure::Replay));
    drain(&mut p);
    assert_eq!(p.counters().aggregated, 50);
    assert_eq!(p.poll_timeout(), Some(t0 + 10 * SEC));
    p.handle_timeout(t0 + 10 * SEC - Duration::from_nanos(1));
    assert_eq!(drain(&mut p), vec![]);
    p.handle_timeout(t0 + 10 * SEC);
    let events = drain(&mut p);
    assert_eq!(
        events.len(),
        1,
        "ip(2) had nothing to aggregate: {events:?}"
    );
    let PolicyEvent::FailuresAggregated(FailureSummary {
        ip: Some(got),
        count,
        first,
        last,
        reasons,
        ..
    }) = events[0]
    else {
        panic!("{events:?}");
    };
    assert_eq!((got, count), (a, 50));
    assert_eq!((first, last), (t0 + SEC / 10, t0 + 5 * SEC));
    assert_eq!((reasons.bad_mac, reasons.capacity), (25, 25));
    assert_eq!(reasons.total(), 50);
    // The next interval starts with a report of its own.
    assert!(p.report_failure(t0 + 11 * SEC, a, AuthFailure::BadMac));
}

#[test]
fn failures_of_untracked_addresses_share_one_report() {
    let t0 = Instant::now();
    let config = PolicyConfig::builder().max_tracked_ips(1).build().unwrap();
    let mut p = Policy::new(config);
    let _ = p.admit(t0, ip(1));
    for n in 2..20 {
        assert_eq!(p.admit(t0, ip(n)), Err(Refusal::TrackingFull));
        assert_eq!(p.report_failure(t0, ip(n), AuthFailure::Capacity), n == 2);
    }
    drain(&mut p);
    p.handle_timeout(t0 + 10 * SEC);
    assert!(matches!(
        drain(&mut p).as_slice(),
        [PolicyEvent::FailuresAggregated(FailureSummary {
            ip: None,
            count: 17,
            ..
        })]
    ));
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
        assert!(matches!(p.admit(t0, ip(1)), Err(Refusal::Throttled { .. })));
    }
    // The throttle and the first two refusals.
    assert_eq!(drain(&mut p).len(), 3);
    assert_eq!(p.counters().events_dropped, 8);
    assert_eq!(p.counters().refused.throttled, 10);
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
    AuthFailure::Throttled,
    AuthFailure::V1Disabled,
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
            .throttle_duration(30 * SEC)
            .throttle_interval(2 * SEC)
            .max_handshaking_per_ip(2)
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
                        let throttle = if r % 3 == 0 {
                            p.abandoned(now, s, Some(reason).filter(|_| r % 2 == 0))
                        } else {
                            let t = p.auth_failed(now, s, reason);
                            if t.is_some() {
                                prop_assert!(reason.counts_toward_throttle());
                            }
                            t
                        };
                        if let Some(t) = throttle {
                            prop_assert!(p.is_throttled(now, t.ip));
                        }
                        let _ = p.report_failure(now, ip(u32::from(r)), reason);
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
            for n in 0..12 {
                prop_assert!(p.handshaking_from(ip(n)) <= 2);
            }
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
