//! Hostile discovery datagrams for the flood tests, each with the reason
//! WIRE.md §7 says a receiver drops it for.
//!
//! Shared by asoc-proto's sans-IO flood (`asoc-proto/tests/discovery_flood.rs`,
//! which includes this file by path because asoc-proto cannot depend on
//! asoc-async) and the real-socket flood of [`super::discovery_flood`]: so it
//! uses nothing but `asoc_proto`, `uuid` and `std`.

use asoc_proto::auth::{sign_announcement, ApiKey};
use asoc_proto::discovery::DropReason;
use asoc_proto::wire::Announcement;
use uuid::Uuid;

/// The discovery window of WIRE.md §5: ±60 s.
pub(crate) const WINDOW: u64 = 60;

/// SplitMix64: deterministic, dependency-free randomness.
#[derive(Clone, Debug)]
pub(crate) struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Fills `buf` with random bytes.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

/// An announcement signed with `key`.
pub(crate) fn signed(
    key: &ApiKey,
    community: [u8; 8],
    node: Uuid,
    port: u16,
    timestamp: u64,
    challenge: u32,
) -> [u8; 50] {
    let unsigned = Announcement {
        community_hash: community,
        node_id: node,
        port,
        timestamp: u32::try_from(timestamp).unwrap(),
        challenge,
        mac: [0; 16],
    };
    sign_announcement(key, unsigned).encode()
}

/// A captured legitimate announcement, as an eavesdropper would keep it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Capture {
    /// The datagram.
    pub bytes: [u8; 50],
    /// Its timestamp field.
    pub timestamp: u64,
}

impl Capture {
    /// A captured datagram, if it is an announcement (50 bytes).
    pub(crate) fn of(datagram: &[u8]) -> Option<Self> {
        let bytes: [u8; 50] = datagram.try_into().ok()?;
        let ts: [u8; 4] = bytes[26..30].try_into().ok()?;
        Some(Self {
            bytes,
            timestamp: u64::from(u32::from_be_bytes(ts)),
        })
    }

    /// The node id it announces.
    pub(crate) fn node(&self) -> Uuid {
        Uuid::from_slice(&self.bytes[8..24]).unwrap()
    }
}

/// An attacker without the key (who knows the community and may have
/// captured legitimate announcements) making up discovery datagrams.
pub(crate) struct Attacker {
    /// Its randomness.
    pub rng: Rng,
    /// The victim's community hash.
    pub ours: [u8; 8],
    /// Another community's hash.
    pub theirs: [u8; 8],
    /// The victim's node id (random node ids never equal it).
    pub victim: Uuid,
    /// The real key: the attacker cannot use it, but the test plays old
    /// captures and broken clocks (correctly signed stale and future-dated
    /// announcements) and other communities sharing the key with it.
    pub real_key: ApiKey,
    /// The attacker's own key.
    pub attacker_key: ApiKey,
    /// Extra seconds beyond the window for stale and future-dated
    /// timestamps: 0 on a virtual clock, a few over real sockets, where the
    /// receiver reads its clock a little after the attacker.
    pub skew: u64,
}

impl Attacker {
    fn random_node(&mut self) -> Uuid {
        let id = Uuid::from_u128(u128::from(self.rng.next()) << 64 | u128::from(self.rng.next()));
        assert_ne!(id, self.victim);
        id
    }

    /// Writes one hostile datagram into `buf` for a receiver whose clock
    /// reads `unix`, and returns the reason WIRE.md §7 says it is dropped
    /// for. `captures` (at least one) are legitimate announcements the
    /// receiver has already accepted; `own_echo` is one of the receiver's
    /// own announcements.
    pub(crate) fn datagram(
        &mut self,
        buf: &mut Vec<u8>,
        unix: u64,
        captures: &[Capture],
        own_echo: &[u8; 50],
    ) -> DropReason {
        buf.clear();
        let rng = &mut self.rng;
        match rng.below(100) {
            // Neither 50 bytes nor a 52-byte v2 announcement: empty,
            // truncated, padded, jumbo.
            0..=14 => {
                let len = match rng.below(4) {
                    0 => rng.below(50) as usize,
                    1 => 51 + rng.below(50) as usize,
                    2 => 49 + 2 * rng.below(2) as usize,
                    _ => 100 + rng.below(1373) as usize,
                };
                buf.resize(len, 0);
                rng.fill(buf);
                // 52 bytes starting with 2 would be a v2 announcement.
                if let (52, Some(first @ 2)) = (buf.len(), buf.first_mut()) {
                    *first = 3;
                }
                DropReason::WrongLength
            }
            // Another community, correctly signed (it shares the key) or not.
            15..=29 => {
                let bytes = if rng.below(2) == 0 {
                    let node = self.random_node();
                    let challenge = self.rng.next() as u32;
                    signed(&self.real_key, self.theirs, node, 9000, unix, challenge)
                } else {
                    let mut b = [0u8; 50];
                    rng.fill(&mut b);
                    if b[..8] == self.ours {
                        b[0] ^= 1;
                    }
                    b
                };
                buf.extend_from_slice(&bytes);
                DropReason::OtherCommunity
            }
            // Our community, wrongly signed: random MAC, the attacker's key,
            // or a captured announcement with one bit flipped after the hash.
            30..=49 => {
                let bytes = match rng.below(3) {
                    0 => {
                        let mut b = [0u8; 50];
                        rng.fill(&mut b);
                        b[..8].copy_from_slice(&self.ours);
                        b
                    }
                    1 => {
                        let node = self.random_node();
                        let challenge = self.rng.next() as u32;
                        signed(&self.attacker_key, self.ours, node, 9000, unix, challenge)
                    }
                    _ => {
                        let mut b = captures[rng.below(captures.len() as u64) as usize].bytes;
                        let bit = 64 + rng.below(42 * 8) as usize;
                        b[bit / 8] ^= 1 << (bit % 8);
                        b
                    }
                };
                buf.extend_from_slice(&bytes);
                DropReason::BadMac
            }
            // Correctly signed, more than 60 s old (an old capture, a slow
            // clock).
            50..=61 => {
                let ts = unix - WINDOW - 1 - self.skew - rng.below(1_000_000);
                let node = self.random_node();
                let challenge = self.rng.next() as u32;
                let bytes = signed(&self.real_key, self.ours, node, 9000, ts, challenge);
                buf.extend_from_slice(&bytes);
                DropReason::Stale
            }
            // Correctly signed, more than 60 s ahead (a fast clock, a
            // pre-play).
            62..=73 => {
                let ts = unix + WINDOW + 1 + self.skew + rng.below(1_000_000);
                let node = self.random_node();
                let challenge = self.rng.next() as u32;
                let bytes = signed(&self.real_key, self.ours, node, 9000, ts, challenge);
                buf.extend_from_slice(&bytes);
                DropReason::FutureDated
            }
            // A captured legitimate announcement, replayed verbatim: a replay
            // while it is fresh, stale once it left the window.
            74..=93 => {
                let c = captures[rng.below(captures.len() as u64) as usize];
                buf.extend_from_slice(&c.bytes);
                if unix - c.timestamp > WINDOW {
                    DropReason::Stale
                } else {
                    DropReason::Replayed
                }
            }
            // The receiver's own announcement reflected back at it.
            _ => {
                buf.extend_from_slice(own_echo);
                DropReason::OwnNode
            }
        }
    }
}
