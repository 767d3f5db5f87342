//! Receive memory kept for reuse. Payloads leave the driver as `Bytes`
//! views into the receive buffer, so every busy read used to need fresh
//! memory: an allocation the kernel backed page by page (a page fault and
//! a zeroed page per 4 KiB) and gave back when the application dropped the
//! payloads. A buffer whose payloads were all dropped is whole again
//! (`BytesMut::try_reclaim`), so the driver parks the buffers it leaves
//! and reads into one of them once it is free, without copying or
//! allocating. The pool empties itself after a quiet second, so an idle
//! connection holds no more than before.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;

/// Reads needing less room than this grow the buffer as before; the pool
/// is for the large reads of a busy connection.
const POOLED: usize = 64 * 1024;
/// How long the pool keeps its buffers without being used.
const KEEP: Duration = Duration::from_secs(1);

/// Buffers the driver left, with the size of their allocations.
#[derive(Debug, Default)]
pub(crate) struct RxPool {
    spare: VecDeque<(BytesMut, usize)>,
    /// Bytes allocated by the parked buffers.
    held: usize,
    /// Allocation size of the buffer the driver reads into, when it came
    /// from this pool (0 otherwise: it is then not parked when left).
    current: usize,
    last_use: Option<Instant>,
    /// When the pool checks whether it was used in the last [`KEEP`]; kept
    /// stable while in use so the driver's timer is not re-armed per read.
    check_at: Option<Instant>,
}

impl RxPool {
    /// Makes room in `rx` for `need` more bytes. Large requests the buffer
    /// cannot hold move to a parked buffer that is free again, or to a new
    /// one of at least `slab` bytes; the bytes in `rx` (part of a frame)
    /// move with them. `limit` bounds the bytes parked.
    pub(crate) fn make_room(
        &mut self,
        rx: &mut BytesMut,
        need: usize,
        slab: usize,
        limit: usize,
        now: Instant,
    ) {
        if rx.capacity() - rx.len() >= need || rx.try_reclaim(need) {
            return;
        }
        let total = rx.len() + need;
        if total < POOLED {
            rx.reserve(need);
            self.current = 0;
            return;
        }
        self.last_use = Some(now);
        if self.check_at.is_none() {
            self.check_at = Some(now + KEEP);
        }
        // Newest first: a recently used buffer is likelier to be in the CPU
        // cache than one unused for a while, and a consumer that keeps up
        // then cycles through two or three buffers, not the whole pool.
        let free = self
            .spare
            .iter_mut()
            .rposition(|(b, _)| b.try_reclaim(total));
        let (mut next, size) = match free.and_then(|i| self.spare.remove(i)) {
            Some((b, size)) => {
                self.held -= size;
                (b, size)
            }
            None => {
                let size = total.max(slab);
                (BytesMut::with_capacity(size), size)
            }
        };
        next.extend_from_slice(rx);
        let mut old = std::mem::replace(rx, next);
        let old_size = std::mem::replace(&mut self.current, size);
        if old_size > 0 {
            old.clear();
            self.held += old_size;
            self.spare.push_back((old, old_size));
            while self.held > limit {
                match self.spare.pop_front() {
                    Some((_, s)) => self.held -= s,
                    None => break,
                }
            }
        }
    }

    /// When [`expire`](Self::expire) is due, if anything is held.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.check_at
    }

    /// Lets the buffers go once unused for [`KEEP`], and `rx` too when it
    /// is empty; otherwise schedules the next check. Returns whether the
    /// pool let go.
    pub(crate) fn expire(&mut self, now: Instant, rx: &mut BytesMut) -> bool {
        let Some(at) = self.check_at else {
            return false;
        };
        if now < at {
            return false;
        }
        let quiet_since = self.last_use.map_or(now, |t| t + KEEP);
        if now < quiet_since {
            self.check_at = Some(quiet_since);
            return false;
        }
        self.release();
        if rx.is_empty() {
            *rx = BytesMut::new();
            self.current = 0;
        }
        true
    }

    /// Lets every parked buffer go.
    pub(crate) fn release(&mut self) {
        self.spare.clear();
        self.held = 0;
        self.check_at = None;
        self.last_use = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLAB: usize = 256 * 1024;

    #[test]
    fn a_buffer_is_reused_once_its_payloads_are_dropped() {
        let mut pool = RxPool::default();
        let mut rx = BytesMut::new();
        let now = Instant::now();
        pool.make_room(&mut rx, SLAB, SLAB, 1 << 20, now);
        rx.resize(SLAB, 7);
        let first = rx.as_ptr();
        let payload = rx.split_to(SLAB).freeze();
        // The payload still uses the first buffer: a second one is needed.
        pool.make_room(&mut rx, SLAB, SLAB, 1 << 20, now);
        assert!(rx.capacity() >= SLAB);
        assert_ne!(rx.as_ptr(), first);
        rx.resize(SLAB, 8);
        let second = rx.split_to(SLAB).freeze();
        drop(payload);
        // The first buffer is free again and comes back, not a new one.
        pool.make_room(&mut rx, SLAB, SLAB, 1 << 20, now);
        assert_eq!(rx.as_ptr(), first);
        assert_eq!(second.len(), SLAB);
    }

    #[test]
    fn bytes_of_a_partial_frame_move_to_the_next_buffer() {
        let mut pool = RxPool::default();
        let mut rx = BytesMut::new();
        let now = Instant::now();
        pool.make_room(&mut rx, SLAB, SLAB, 1 << 20, now);
        rx.resize(SLAB, 1);
        let held = rx.split_to(SLAB - 3).freeze();
        pool.make_room(&mut rx, SLAB, SLAB, 1 << 20, now);
        assert_eq!(&rx[..], &[1, 1, 1]);
        assert!(rx.capacity() - rx.len() >= SLAB);
        assert_eq!(held.len(), SLAB - 3);
    }

    #[test]
    fn parked_bytes_stay_under_the_limit() {
        let mut pool = RxPool::default();
        let mut rx = BytesMut::new();
        let now = Instant::now();
        let mut payloads = Vec::new();
        for _ in 0..10 {
            pool.make_room(&mut rx, SLAB, SLAB, 3 * SLAB, now);
            rx.resize(SLAB, 0);
            payloads.push(rx.split_to(SLAB).freeze());
        }
        assert!(pool.held <= 3 * SLAB);
        assert_eq!(pool.spare.len(), 3);
    }

    #[test]
    fn the_pool_lets_go_after_a_quiet_period_only() {
        let mut pool = RxPool::default();
        let mut rx = BytesMut::new();
        let t0 = Instant::now();
        let mut payloads = Vec::new();
        for _ in 0..3 {
            pool.make_room(&mut rx, SLAB, SLAB, 1 << 20, t0);
            rx.resize(SLAB, 0);
            payloads.push(rx.split_to(SLAB).freeze());
        }
        assert_eq!(pool.spare.len(), 2);
        drop(payloads);
        let at = pool.deadline().expect("armed");
        // Used again just before the check: the check moves on.
        pool.make_room(
            &mut rx,
            2 * SLAB,
            SLAB,
            1 << 20,
            at - Duration::from_millis(1),
        );
        assert!(!pool.expire(at, &mut rx));
        let later = pool.deadline().expect("re-armed");
        assert!(later > at);
        assert!(pool.expire(later, &mut rx));
        assert!(pool.spare.is_empty());
        assert_eq!(pool.deadline(), None);
        assert_eq!(rx.capacity(), 0);
    }
}
