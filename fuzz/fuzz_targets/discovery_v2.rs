//! The default, v2-only discovery machine fed arbitrary datagrams from a few
//! sources at varying times: no panic, tables within their limits, and a
//! datagram is accepted only if it is a v2 announcement whose MAC verifies
//! under the key's discovery key.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use asoc_proto::auth::{verify_announcement_v2, ApiKey, KeyRing};
use asoc_proto::discovery::{Discovery, DiscoveryConfig};
use asoc_proto::v2::derive_discovery_key;
use asoc_proto::wire::AnnouncementV2;
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    // Input: [wall clock at start, unix ms, u64 big-endian] then records
    // [src byte][time offset byte][len byte][datagram...]. The seeds put a
    // vector's own timestamp first, so their announcements are fresh.
    let Some((clock, mut rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let base_ms = u64::from_be_bytes(*clock);
    let key = ApiKey::new_insecure(b"test-secret-key-0").expect("key");
    let discovery_key = derive_discovery_key(&key);
    let keys = KeyRing::new(key);
    let config = DiscoveryConfig::builder("test-cluster")
        .max_peers(8)
        .max_tracked_sources(8)
        .max_queued_events(32)
        .build()
        .expect("config");
    let t0 = Instant::now();
    let mut d = Discovery::new(config, Uuid::from_bytes([9; 16]), 9000, [3; 32], t0);
    let mut now = t0;
    while let [src, dt, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(*dt) * 100);
        let elapsed = u64::try_from((now - t0).as_millis()).unwrap_or(u64::MAX);
        let unix_ms = base_ms.saturating_add(elapsed);
        let from = SocketAddr::from(([127, 0, 0, *src % 4], 9999));
        let accepted = d.counters().accepted;
        d.handle_datagram(now, unix_ms, from, datagram, &keys);
        if d.counters().accepted > accepted {
            let msg = AnnouncementV2::decode(datagram).expect("only v2 announcements are accepted");
            assert!(verify_announcement_v2(&discovery_key, &msg));
            let peer = d.peer(&msg.node_id).expect("an accepted node is recorded");
            assert_eq!(peer.addr, SocketAddr::new(from.ip(), msg.tcp_port));
        }
        while d.poll_event().is_some() {}
        while d.poll_transmit(now, unix_ms, &keys).is_some() {}
        d.handle_timeout(now);
        let o = d.occupancy();
        assert!(o.peers <= 8 && o.tracked_sources <= 8 && o.queued_events <= 32);
        assert_eq!(o.replay_entries, 0, "v2 keeps no per-message cache");
    }
});
