//! Rate limits: a GCRA limiter and the bounded per-source-IP table.

use core::cmp::Reverse;
use core::net::IpAddr;
use core::time::Duration;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Instant;

use super::DropReason;

/// A generic cell rate algorithm limiter: `rate` messages per second with
/// bursts of up to `rate`. Its whole state per key is one "theoretical
/// arrival time"; a key whose time is not after `now` is indistinguishable
/// from a fresh one, which is what lets tables forget it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Gcra {
    /// Time one message uses up.
    emission: Duration,
    /// How far ahead of `now` the arrival time may run: the burst.
    tolerance: Duration,
}

impl Gcra {
    pub(super) fn per_second(rate: u32) -> Self {
        let emission = Duration::from_secs(1) / rate.max(1);
        Self {
            emission,
            tolerance: emission
                .checked_mul(rate.saturating_sub(1))
                .unwrap_or(Duration::from_secs(1)),
        }
    }

    /// The key's next arrival time if a message at `now` conforms, `None` if
    /// it must be refused.
    pub(super) fn admit(&self, now: Instant, tat: Option<Instant>) -> Option<Instant> {
        let start = tat.map_or(now, |t| t.max(now));
        if start.saturating_duration_since(now) > self.tolerance {
            return None;
        }
        // An unrepresentable instant cannot happen in practice; refusing is
        // the fail-closed answer if it ever did.
        start.checked_add(self.emission)
    }
}

/// Per-source-IP rate state, bounded to `capacity` addresses.
#[derive(Clone, Debug)]
pub(super) struct SourceLimiter {
    gcra: Gcra,
    capacity: usize,
    pub(super) tat: BTreeMap<IpAddr, Instant>,
    /// One entry per key, holding a lower bound of its arrival time (times
    /// only grow), so the minimum says which keys may be forgettable.
    by_tat: BinaryHeap<Reverse<(Instant, IpAddr)>>,
}

impl SourceLimiter {
    pub(super) fn new(rate: u32, capacity: usize) -> Self {
        Self {
            gcra: Gcra::per_second(rate),
            capacity,
            tat: BTreeMap::new(),
            by_tat: BinaryHeap::new(),
        }
    }

    /// Forgets sources whose limiter is back to a full burst.
    pub(super) fn purge(&mut self, now: Instant) {
        while let Some(Reverse((due, ip))) = self.by_tat.peek().copied() {
            if due > now {
                break;
            }
            self.by_tat.pop();
            match self.tat.get(&ip).copied() {
                Some(actual) if actual > now => self.by_tat.push(Reverse((actual, ip))),
                _ => {
                    self.tat.remove(&ip);
                }
            }
        }
    }

    pub(super) fn check(&mut self, now: Instant, ip: IpAddr) -> Result<(), DropReason> {
        self.purge(now);
        let known = self.tat.get(&ip).copied();
        if known.is_none() && self.tat.len() >= self.capacity {
            return Err(DropReason::SourceTableFull);
        }
        let next = self
            .gcra
            .admit(now, known)
            .ok_or(DropReason::SourceRateLimited)?;
        self.tat.insert(ip, next);
        if known.is_none() {
            self.by_tat.push(Reverse((next, ip)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_a_burst_of_rate_then_one_per_emission() {
        let g = Gcra::per_second(10);
        assert_eq!(g.emission, Duration::from_millis(100));
        assert_eq!(g.tolerance, Duration::from_millis(900));
        let g1 = Gcra::per_second(1);
        assert_eq!(g1.tolerance, Duration::ZERO);
    }
}
