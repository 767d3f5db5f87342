//! Bounded replay caches (WIRE.md §5).
//!
//! A cache remembers `(node id, challenge)` pairs until their own expiry.
//! Memory is bounded by a fixed capacity; when the cache is full of pairs
//! that have not expired it fails closed, rejecting what it cannot record,
//! and never forgets a pair early to make room. Callers insert a pair only
//! after its MAC verified, so unauthenticated traffic cannot fill it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::hash::Hash;

use uuid::Uuid;

/// A `(node id, challenge)` pair.
pub type ReplayKey = (Uuid, u32);

/// Why a pair was not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The pair was seen before and has not expired: a replay.
    #[error("(node, challenge) pair was already used: replay")]
    Replayed,
    /// The cache holds `capacity` unexpired pairs and refuses new ones rather
    /// than forget one early.
    #[error("replay cache is full ({capacity} unexpired entries); failing closed")]
    Full {
        /// The configured capacity.
        capacity: usize,
    },
}

/// A bounded set of keys `K` (by default `(node id, challenge)` pairs; v2
/// keeps HELLO2 ephemeral public keys), each kept until its own expiry time
/// `T` (an `Instant` for HELLO, unix time for discovery and HELLO2).
#[derive(Clone, Debug)]
pub struct ReplayCache<T: Ord + Copy, K: Hash + Eq + Ord + Copy = ReplayKey> {
    capacity: usize,
    seen: HashSet<K>,
    by_expiry: BinaryHeap<Reverse<(T, K)>>,
}

impl<T: Ord + Copy, K: Hash + Eq + Ord + Copy> ReplayCache<T, K> {
    /// An empty cache that holds at most `capacity` unexpired pairs.
    /// Nothing is allocated until the first insert.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: HashSet::new(),
            by_expiry: BinaryHeap::new(),
        }
    }

    /// The configured capacity.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Pairs currently remembered (expired ones may linger until the next
    /// [`purge`](Self::purge)).
    #[must_use]
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Forgets every pair whose expiry is at or before `now`.
    pub fn purge(&mut self, now: T) {
        while let Some(Reverse((expiry, key))) = self.by_expiry.peek().copied() {
            if expiry > now {
                break;
            }
            self.by_expiry.pop();
            self.seen.remove(&key);
        }
    }

    /// Whether `key` is remembered and unexpired at `now`.
    #[must_use]
    pub fn contains(&mut self, now: T, key: &K) -> bool {
        self.purge(now);
        self.seen.contains(key)
    }

    /// Every remembered key with its expiry, expired ones included until
    /// the next [`purge`](Self::purge), in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (K, T)> + '_ {
        self.by_expiry.iter().map(|Reverse((t, k))| (*k, *t))
    }

    /// Records `key` until `expires` (exclusive: at `expires` it is
    /// forgotten). Fails if it is already there or the cache is full.
    pub fn insert(&mut self, now: T, key: K, expires: T) -> Result<(), ReplayError> {
        self.purge(now);
        if self.seen.contains(&key) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(ReplayError::Full {
                capacity: self.capacity,
            });
        }
        self.seen.insert(key);
        self.by_expiry.push(Reverse((expires, key)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8, challenge: u32) -> ReplayKey {
        (Uuid::from_bytes([n; 16]), challenge)
    }

    #[test]
    fn replay_is_rejected_until_expiry_then_forgotten() {
        let mut c = ReplayCache::<u64>::new(4);
        c.insert(100, key(1, 7), 160).unwrap();
        assert_eq!(c.insert(159, key(1, 7), 219), Err(ReplayError::Replayed));
        assert!(c.insert(160, key(1, 7), 220).is_ok());
    }

    #[test]
    fn full_cache_fails_closed_and_keeps_every_entry() {
        let mut c = ReplayCache::<u64>::new(2);
        c.insert(0, key(1, 1), 100).unwrap();
        c.insert(0, key(1, 2), 100).unwrap();
        assert_eq!(
            c.insert(1, key(1, 3), 100),
            Err(ReplayError::Full { capacity: 2 })
        );
        // Nothing was evicted to make room: both old pairs are still replays.
        assert_eq!(c.insert(99, key(1, 1), 200), Err(ReplayError::Replayed));
        assert_eq!(c.insert(99, key(1, 2), 200), Err(ReplayError::Replayed));
        // Once they expire there is room again.
        assert!(c.insert(100, key(1, 3), 200).is_ok());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn zero_capacity_refuses_everything() {
        let mut c = ReplayCache::<u64>::new(0);
        assert_eq!(
            c.insert(0, key(1, 1), 1),
            Err(ReplayError::Full { capacity: 0 })
        );
    }
}
