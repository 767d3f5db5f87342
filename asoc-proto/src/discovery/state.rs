//! The replay-protection state of discovery: the v1 `(node, challenge)`
//! cache with a bounded share per node id, the last accepted v2 timestamps
//! of nodes no longer in the peer table, and the export of both across a
//! restart ([`DiscoveryReplayState`]).

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::DropReason;

/// The v1 replay cache. Like [`crate::replay::ReplayCache`] it fails closed
/// and never forgets a pair before its expiry, but it also counts pairs per
/// node id: a node whose share is full has its own announcements refused
/// while every other node still has room, so the supply of one node's
/// copies (relayed or not) cannot make the victim drop everyone else's.
#[derive(Clone, Debug)]
pub(super) struct V1Replay {
    capacity: usize,
    share: usize,
    /// Pair -> expiry in unix seconds (exclusive).
    seen: BTreeMap<(Uuid, u32), u64>,
    by_expiry: BTreeSet<(u64, Uuid, u32)>,
    per_node: BTreeMap<Uuid, usize>,
}

impl V1Replay {
    pub(super) fn new(capacity: usize, share: usize) -> Self {
        Self {
            capacity,
            share: share.min(capacity),
            seen: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            per_node: BTreeMap::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }

    /// Pairs of `node` remembered now (expired ones may linger until the
    /// next purge).
    pub(super) fn node_entries(&self, node: &Uuid) -> usize {
        self.per_node.get(node).copied().unwrap_or(0)
    }

    pub(super) fn purge(&mut self, unix_secs: u64) {
        while let Some((expiry, node, challenge)) = self.by_expiry.first().copied() {
            if expiry > unix_secs {
                break;
            }
            self.by_expiry.remove(&(expiry, node, challenge));
            self.seen.remove(&(node, challenge));
            if let Some(n) = self.per_node.get_mut(&node) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_node.remove(&node);
                }
            }
        }
    }

    pub(super) fn contains(&mut self, unix_secs: u64, key: &(Uuid, u32)) -> bool {
        self.purge(unix_secs);
        self.seen.contains_key(key)
    }

    /// Records `key` until `expires` (exclusive), or says why not: a
    /// replay, the whole cache full, or the node's share full.
    pub(super) fn insert(
        &mut self,
        unix_secs: u64,
        key: (Uuid, u32),
        expires: u64,
    ) -> Result<(), DropReason> {
        self.purge(unix_secs);
        if self.seen.contains_key(&key) {
            return Err(DropReason::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(DropReason::ReplayCacheFull);
        }
        let mine = self.node_entries(&key.0);
        if mine >= self.share {
            return Err(DropReason::ReplayShareFull);
        }
        self.seen.insert(key, expires);
        self.by_expiry.insert((expires, key.0, key.1));
        self.per_node.insert(key.0, mine.saturating_add(1));
        Ok(())
    }

    /// Every pair with its expiry in unix seconds.
    pub(super) fn entries(&self) -> impl Iterator<Item = (Uuid, u32, u64)> + '_ {
        self.seen.iter().map(|((node, ch), exp)| (*node, *ch, *exp))
    }
}

/// The last accepted v2 `unix_ms` of nodes that are not in the peer table
/// (expired, or restored from a [`DiscoveryReplayState`]). Without it, a
/// node's last announcement replayed after the node expired (15 s) but
/// inside the timestamp window (60 s) would be new again. A floor is
/// forgotten once every message at or below it is stale. Bounded: when
/// full, the lowest floor (the next to go stale) gives way to a higher one.
#[derive(Clone, Debug)]
pub(super) struct V2Floors {
    capacity: usize,
    by_node: BTreeMap<Uuid, u64>,
    by_ts: BTreeSet<(u64, Uuid)>,
}

impl V2Floors {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            by_node: BTreeMap::new(),
            by_ts: BTreeSet::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.by_node.len()
    }

    pub(super) fn get(&self, node: &Uuid) -> Option<u64> {
        self.by_node.get(node).copied()
    }

    pub(super) fn remove(&mut self, node: &Uuid) {
        if let Some(ts) = self.by_node.remove(node) {
            self.by_ts.remove(&(ts, *node));
        }
    }

    /// Makes `node`'s floor at least `ts`.
    pub(super) fn raise(&mut self, node: Uuid, ts: u64) {
        match self.by_node.get(&node).copied() {
            Some(old) if old >= ts => return,
            Some(_) => self.remove(&node),
            None => {
                if self.by_node.len() >= self.capacity {
                    match self.by_ts.first().copied() {
                        Some((lowest, victim)) if lowest < ts => self.remove(&victim),
                        _ => return,
                    }
                }
            }
        }
        self.by_node.insert(node, ts);
        self.by_ts.insert((ts, node));
    }

    /// Forgets floors below which every message is stale at `unix_ms`.
    pub(super) fn purge(&mut self, unix_ms: u64, window_ms: u64) {
        while let Some((ts, node)) = self.by_ts.first().copied() {
            if ts.saturating_add(window_ms) >= unix_ms {
                break;
            }
            self.remove(&node);
        }
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = (Uuid, u64)> + '_ {
        self.by_node.iter().map(|(n, ts)| (*n, *ts))
    }
}

/// One remembered v1 `(node, challenge)` pair, as exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub struct V1ReplayEntry {
    /// The announcing node.
    pub node: Uuid,
    /// The announcement's challenge.
    pub challenge: u32,
    /// Wall-clock unix milliseconds from which the pair is forgotten: until
    /// then a message carrying it still passes the timestamp window.
    pub expires_unix_ms: u64,
}

impl V1ReplayEntry {
    /// A pair remembered until `expires_unix_ms` (exclusive).
    #[must_use]
    pub fn new(node: Uuid, challenge: u32, expires_unix_ms: u64) -> Self {
        Self {
            node,
            challenge,
            expires_unix_ms,
        }
    }
}

/// What discovery's replay protection needs to survive a restart, in
/// wall-clock terms (an `Instant` does not outlive the process): the last
/// accepted v2 `unix_ms` per node and the v1 pairs still inside their
/// window. Taken with [`Discovery::replay_state`](super::Discovery::replay_state),
/// put back with
/// [`Discovery::restore_replay_state`](super::Discovery::restore_replay_state),
/// and written to a file with [`to_bytes`](Self::to_bytes) /
/// [`from_bytes`](Self::from_bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryReplayState {
    /// `(node, unix_ms of its last accepted v2 announcement)`, one per node,
    /// ordered by node id.
    pub v2_last_unix_ms: Vec<(Uuid, u64)>,
    /// The v1 pairs still remembered, ordered by node and challenge.
    pub v1_seen: Vec<V1ReplayEntry>,
}

/// Why [`DiscoveryReplayState::from_bytes`] refused its input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryStateError {
    /// The input ends before the data its header announces.
    #[error("discovery replay state is truncated: {needed} bytes needed, {got} present")]
    Truncated {
        /// Bytes the header and counts call for (at least).
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The first four bytes are not the format's magic.
    #[error("not a discovery replay state (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("discovery replay state version {version} is not supported (expected {expected})")]
    UnsupportedVersion {
        /// The version in the input.
        version: u8,
        /// The version this build writes and reads.
        expected: u8,
    },
    /// More entries than the configuration could ever have produced.
    #[error("discovery replay state holds {count} {which} entries; at most {max} are allowed")]
    TooManyEntries {
        /// `"v2 timestamp"` or `"v1 replay"`.
        which: &'static str,
        /// The count in the input.
        count: u32,
        /// The bound the configuration gives.
        max: usize,
    },
    /// Bytes left after the last entry.
    #[error("discovery replay state has {extra} trailing bytes")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

const MAGIC: [u8; 4] = *b"ASDR";
const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1;
const V2_ENTRY_LEN: usize = 16 + 8;
const V1_ENTRY_LEN: usize = 16 + 4 + 8;

/// A cursor over untrusted bytes that never panics.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DiscoveryStateError> {
        let end = self.pos.saturating_add(N);
        let chunk = self
            .bytes
            .get(self.pos..end)
            .ok_or(DiscoveryStateError::Truncated {
                needed: end,
                got: self.bytes.len(),
            })?;
        let mut out = [0u8; N];
        out.copy_from_slice(chunk);
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, DiscoveryStateError> {
        self.take::<4>().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, DiscoveryStateError> {
        self.take::<8>().map(u64::from_be_bytes)
    }

    fn uuid(&mut self) -> Result<Uuid, DiscoveryStateError> {
        self.take::<16>().map(Uuid::from_bytes)
    }

    /// Checks `count` entries of `len` bytes fit in what is left before
    /// anything is allocated for them.
    fn expect(&self, count: u32, len: usize) -> Result<(), DiscoveryStateError> {
        let want = usize::try_from(count)
            .unwrap_or(usize::MAX)
            .saturating_mul(len);
        let needed = self.pos.saturating_add(want);
        if needed > self.bytes.len() {
            return Err(DiscoveryStateError::Truncated {
                needed,
                got: self.bytes.len(),
            });
        }
        Ok(())
    }
}

fn bounded(which: &'static str, count: u32, max: usize) -> Result<(), DiscoveryStateError> {
    if usize::try_from(count).map_or(true, |c| c > max) {
        return Err(DiscoveryStateError::TooManyEntries { which, count, max });
    }
    Ok(())
}

impl DiscoveryReplayState {
    /// The most v2 timestamps a state taken under `config` holds: one per
    /// recorded peer plus one per remembered floor.
    fn max_v2(config: &super::DiscoveryConfig) -> usize {
        config.max_peers().saturating_mul(2)
    }

    /// The compact, versioned encoding: the magic `ASDR`, format version 1,
    /// then a big-endian `u32` count of v2 entries (16-byte node id, `u64`
    /// unix ms each) and a `u32` count of v1 entries (16-byte node id,
    /// `u32` challenge, `u64` expiry in unix ms each).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let v2 = u32::try_from(self.v2_last_unix_ms.len()).unwrap_or(u32::MAX);
        let v1 = u32::try_from(self.v1_seen.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(
            HEADER_LEN
                .saturating_add(8)
                .saturating_add(self.v2_last_unix_ms.len().saturating_mul(V2_ENTRY_LEN))
                .saturating_add(self.v1_seen.len().saturating_mul(V1_ENTRY_LEN)),
        );
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&v2.to_be_bytes());
        for (node, ms) in self.v2_last_unix_ms.iter().take(v2 as usize) {
            out.extend_from_slice(node.as_bytes());
            out.extend_from_slice(&ms.to_be_bytes());
        }
        out.extend_from_slice(&v1.to_be_bytes());
        for e in self.v1_seen.iter().take(v1 as usize) {
            out.extend_from_slice(e.node.as_bytes());
            out.extend_from_slice(&e.challenge.to_be_bytes());
            out.extend_from_slice(&e.expires_unix_ms.to_be_bytes());
        }
        out
    }

    /// Decodes [`to_bytes`](Self::to_bytes)'s output. Never panics; refuses
    /// truncated input, another magic or version, trailing bytes, and more
    /// entries than `config` could have produced (twice
    /// [`max_peers`](super::DiscoveryConfig::max_peers) v2 timestamps,
    /// [`replay_capacity`](super::DiscoveryConfig::replay_capacity) v1
    /// pairs), checked before anything is allocated for them.
    pub fn from_bytes(
        bytes: &[u8],
        config: &super::DiscoveryConfig,
    ) -> Result<Self, DiscoveryStateError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take::<4>()? != MAGIC {
            return Err(DiscoveryStateError::BadMagic);
        }
        let [version] = r.take::<1>()?;
        if version != FORMAT_VERSION {
            return Err(DiscoveryStateError::UnsupportedVersion {
                version,
                expected: FORMAT_VERSION,
            });
        }
        let v2_count = r.u32()?;
        bounded("v2 timestamp", v2_count, Self::max_v2(config))?;
        r.expect(v2_count, V2_ENTRY_LEN)?;
        let mut v2_last_unix_ms = Vec::with_capacity(v2_count as usize);
        for _ in 0..v2_count {
            let node = r.uuid()?;
            v2_last_unix_ms.push((node, r.u64()?));
        }
        let v1_count = r.u32()?;
        bounded("v1 replay", v1_count, config.replay_capacity())?;
        r.expect(v1_count, V1_ENTRY_LEN)?;
        let mut v1_seen = Vec::with_capacity(v1_count as usize);
        for _ in 0..v1_count {
            let node = r.uuid()?;
            let challenge = r.u32()?;
            v1_seen.push(V1ReplayEntry::new(node, challenge, r.u64()?));
        }
        let extra = bytes.len().saturating_sub(r.pos);
        if extra != 0 {
            return Err(DiscoveryStateError::TrailingBytes { extra });
        }
        Ok(Self {
            v2_last_unix_ms,
            v1_seen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u128) -> Uuid {
        Uuid::from_u128(i)
    }

    #[test]
    fn the_share_of_one_node_is_bounded_and_others_keep_room() {
        let mut c = V1Replay::new(10, 3);
        for ch in 0..3 {
            c.insert(0, (n(1), ch), 100).unwrap();
        }
        assert_eq!(
            c.insert(0, (n(1), 3), 100),
            Err(DropReason::ReplayShareFull)
        );
        assert_eq!(c.insert(0, (n(1), 0), 100), Err(DropReason::Replayed));
        c.insert(0, (n(2), 0), 100).unwrap();
        // Once one of node 1's pairs expires it has room again.
        c.insert(0, (n(1), 9), 50).unwrap_err();
        assert_eq!(c.node_entries(&n(1)), 3);
        c.purge(100);
        assert_eq!((c.len(), c.node_entries(&n(1))), (0, 0));
        c.insert(100, (n(1), 3), 200).unwrap();
    }

    #[test]
    fn floors_keep_the_highest_and_give_way_from_the_lowest() {
        let mut f = V2Floors::new(2);
        f.raise(n(1), 10);
        f.raise(n(1), 5);
        assert_eq!(f.get(&n(1)), Some(10));
        f.raise(n(2), 20);
        f.raise(n(3), 1);
        assert_eq!(f.get(&n(3)), None, "lower than every floor held");
        f.raise(n(3), 30);
        assert_eq!((f.get(&n(1)), f.get(&n(3))), (None, Some(30)));
        f.purge(30 + 60_000, 60_000);
        assert_eq!(f.len(), 1);
        f.purge(30 + 60_001, 60_000);
        assert_eq!(f.len(), 0);
    }
}
