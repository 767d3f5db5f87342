//! Replay caches at their boundaries (WIRE.md §5): expiry is exclusive,
//! a full cache fails closed and never forgets early.

use std::time::{Duration, Instant};

use asoc_proto::replay::{ReplayCache, ReplayError, ReplayKey};
use uuid::Uuid;

/// HELLO pairs are remembered at least this long (RFC-0002 §4.3).
const HELLO_MEMORY: Duration = Duration::from_secs(60);

fn pair(node: u8, challenge: u32) -> ReplayKey {
    (Uuid::from_bytes([node; 16]), challenge)
}

#[test]
fn hello_pair_is_a_replay_until_60s_and_forgotten_at_60s() {
    let t0 = Instant::now();
    let mut c = ReplayCache::<Instant>::new(16);
    let p = pair(1, 0x1234_5678);
    assert!(!c.contains(t0, &p));
    assert_eq!(c.insert(t0, p, t0 + HELLO_MEMORY), Ok(()));

    let almost = t0 + Duration::from_millis(59_999);
    assert!(c.contains(t0, &p));
    assert!(c.contains(almost, &p));
    assert_eq!(
        c.insert(almost, p, almost + HELLO_MEMORY),
        Err(ReplayError::Replayed),
        "59.999 s later the pair is still a replay"
    );
    assert!(c.contains(t0 + HELLO_MEMORY - Duration::from_nanos(1), &p));
    // The refused insert did not extend the pair's life: it goes at 60 s.
    assert!(!c.contains(t0 + HELLO_MEMORY, &p));
    assert_eq!(c.len(), 0);
    assert_eq!(
        c.insert(t0 + HELLO_MEMORY, p, t0 + 2 * HELLO_MEMORY),
        Ok(()),
        "at 60 s the pair is forgotten and may be used again"
    );
    assert_eq!(c.len(), 1);
}

#[test]
fn hello_insert_at_exactly_the_expiry_is_accepted() {
    // No contains() first: insert itself purges at its `now`.
    let t0 = Instant::now();
    let mut c = ReplayCache::<Instant>::new(1);
    let p = pair(2, 2);
    c.insert(t0, p, t0 + HELLO_MEMORY).unwrap();
    assert_eq!(
        c.insert(
            t0 + HELLO_MEMORY - Duration::from_nanos(1),
            p,
            t0 + 2 * HELLO_MEMORY
        ),
        Err(ReplayError::Replayed)
    );
    assert_eq!(
        c.insert(t0 + HELLO_MEMORY, p, t0 + 2 * HELLO_MEMORY),
        Ok(())
    );
}

#[test]
fn node_and_challenge_both_identify_a_pair() {
    let t0 = Instant::now();
    let mut c = ReplayCache::<Instant>::new(8);
    let exp = t0 + HELLO_MEMORY;
    c.insert(t0, pair(1, 1), exp).unwrap();
    assert_eq!(
        c.insert(t0, pair(1, 2), exp),
        Ok(()),
        "same node, new challenge"
    );
    assert_eq!(
        c.insert(t0, pair(2, 1), exp),
        Ok(()),
        "same challenge, new node"
    );
    for p in [pair(1, 1), pair(1, 2), pair(2, 1)] {
        assert_eq!(c.insert(t0, p, exp), Err(ReplayError::Replayed));
    }
    assert_eq!(c.len(), 3);
}

#[test]
fn unix_second_expiry_boundaries() {
    let mut c = ReplayCache::<u64>::new(4);
    let p = pair(5, 99);
    c.insert(1_700_000_000, p, 1_700_000_060).unwrap();
    assert!(c.contains(1_700_000_059, &p));
    assert_eq!(
        c.insert(1_700_000_059, p, 1_700_000_119),
        Err(ReplayError::Replayed)
    );
    assert!(!c.contains(1_700_000_060, &p));
    assert_eq!(c.insert(1_700_000_060, p, 1_700_000_120), Ok(()));

    // The extremes of the clock.
    let mut c = ReplayCache::<u64>::new(2);
    c.insert(0, pair(1, 0), 1).unwrap();
    assert!(c.contains(0, &pair(1, 0)));
    assert!(!c.contains(1, &pair(1, 0)));
    c.insert(0, pair(2, 0), u64::MAX).unwrap();
    assert!(c.contains(u64::MAX - 1, &pair(2, 0)));
    assert!(!c.contains(u64::MAX, &pair(2, 0)));
}

#[test]
fn an_already_expired_pair_is_not_kept() {
    let mut c = ReplayCache::<u64>::new(1);
    // Expiry at or before `now`: nothing to remember (whether the insert
    // reports Ok is not the point), and it takes no room afterwards.
    let _ = c.insert(100, pair(1, 1), 100);
    assert!(!c.contains(100, &pair(1, 1)));
    assert_eq!(c.insert(100, pair(1, 2), 160), Ok(()));
}

#[test]
fn pairs_expire_in_expiry_order_not_insertion_order() {
    let mut c = ReplayCache::<u64>::new(8);
    c.insert(0, pair(1, 1), 300).unwrap();
    c.insert(0, pair(1, 2), 100).unwrap();
    c.insert(0, pair(1, 3), 200).unwrap();
    c.purge(100);
    assert_eq!(c.len(), 2);
    assert!(c.contains(100, &pair(1, 1)));
    assert!(!c.contains(100, &pair(1, 2)));
    assert!(c.contains(199, &pair(1, 3)));
    assert!(!c.contains(200, &pair(1, 3)));
    assert!(c.contains(299, &pair(1, 1)));
    c.purge(300);
    assert!(c.is_empty());
}

#[test]
fn full_cache_fails_closed_and_never_evicts_early() {
    let t0 = Instant::now();
    let s = |n: u64| t0 + Duration::from_secs(n);
    let mut c = ReplayCache::<Instant>::new(3);
    assert_eq!(c.capacity(), 3);
    c.insert(s(0), pair(1, 1), s(100)).unwrap();
    c.insert(s(0), pair(1, 2), s(200)).unwrap();
    c.insert(s(0), pair(1, 3), s(300)).unwrap();

    // Many refused newcomers, right up to the first expiry.
    for (i, now) in [s(1), s(50), s(99), s(100) - Duration::from_nanos(1)]
        .into_iter()
        .enumerate()
    {
        let newcomer = pair(2, u32::try_from(i).unwrap());
        assert_eq!(
            c.insert(now, newcomer, now + HELLO_MEMORY),
            Err(ReplayError::Full { capacity: 3 })
        );
        assert_eq!(c.len(), 3);
        // Every remembered pair is still a replay: nothing was evicted, and
        // a replay is reported as such even when the cache is full.
        for p in [pair(1, 1), pair(1, 2), pair(1, 3)] {
            assert!(c.contains(now, &p));
            assert_eq!(
                c.insert(now, p, now + HELLO_MEMORY),
                Err(ReplayError::Replayed)
            );
        }
        // The refused newcomer was not recorded.
        assert!(!c.contains(now, &newcomer));
    }

    // At the first expiry there is room for exactly one.
    assert_eq!(c.insert(s(100), pair(2, 0), s(400)), Ok(()));
    assert_eq!(
        c.insert(s(100), pair(2, 1), s(400)),
        Err(ReplayError::Full { capacity: 3 })
    );
    assert!(!c.contains(s(100), &pair(1, 1)));
    assert!(c.contains(s(100), &pair(1, 2)));
    assert!(c.contains(s(100), &pair(1, 3)));
    assert!(c.contains(s(100), &pair(2, 0)));
}

#[test]
fn full_unix_cache_fails_closed() {
    let mut c = ReplayCache::<u64>::new(2);
    c.insert(1000, pair(1, 1), 1060).unwrap();
    c.insert(1030, pair(1, 2), 1090).unwrap();
    assert_eq!(
        c.insert(1059, pair(1, 3), 1119),
        Err(ReplayError::Full { capacity: 2 })
    );
    assert_eq!(c.insert(1059, pair(1, 1), 1119), Err(ReplayError::Replayed));
    assert_eq!(c.insert(1060, pair(1, 3), 1120), Ok(()));
    assert_eq!(c.insert(1060, pair(1, 2), 1120), Err(ReplayError::Replayed));
    assert_eq!(
        c.insert(1089, pair(1, 4), 1149),
        Err(ReplayError::Full { capacity: 2 })
    );
}

#[test]
fn zero_capacity_refuses_everything() {
    let t0 = Instant::now();
    let mut c = ReplayCache::<Instant>::new(0);
    assert_eq!(c.capacity(), 0);
    assert!(c.is_empty());
    for secs in [0u64, 60, 3600] {
        let now = t0 + Duration::from_secs(secs);
        assert_eq!(
            c.insert(now, pair(1, 1), now + HELLO_MEMORY),
            Err(ReplayError::Full { capacity: 0 })
        );
        assert!(!c.contains(now, &pair(1, 1)));
        assert_eq!(c.len(), 0);
    }

    let mut c = ReplayCache::<u64>::new(0);
    assert_eq!(
        c.insert(0, pair(1, 1), u64::MAX),
        Err(ReplayError::Full { capacity: 0 })
    );
    assert_eq!(
        c.insert(u64::MAX, pair(1, 1), u64::MAX),
        Err(ReplayError::Full { capacity: 0 })
    );
    assert!(c.is_empty());
}

#[test]
fn errors_say_what_happened() {
    assert!(ReplayError::Replayed.to_string().contains("replay"));
    let full = ReplayError::Full { capacity: 7 }.to_string();
    assert!(full.contains('7') && full.contains("full"), "{full}");
}
