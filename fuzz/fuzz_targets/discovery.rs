//! Discovery with v1 enabled fed arbitrary datagrams from a few sources at
//! varying times: no panic, tables within their limits. (`discovery_v2`
//! covers the default, v2-only machine.)
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::discovery::{Discovery, DiscoveryConfig};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let keys = KeyRing::new(ApiKey::new_insecure(b"test-secret-key").expect("key"));
    let config = DiscoveryConfig::builder("test-cluster")
        .allow_v1(true)
        .max_peers(8)
        .max_tracked_sources(8)
        .replay_capacity(16)
        .max_queued_events(32)
        .build()
        .expect("config");
    let mut d = Discovery::new(config, Uuid::from_bytes([9; 16]), 9000, [3; 32], t0);
    // Records: [src byte][time offset byte][len byte][datagram...]
    let mut rest = data;
    let mut now = t0;
    let base_unix: u64 = 1_842_958_961;
    while let [src, dt, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(*dt) * 100);
        let unix_ms = (base_unix + (now - t0).as_secs()) * 1000;
        let from = SocketAddr::from(([127, 0, 0, *src % 4], 9999));
        d.handle_datagram(now, unix_ms, from, datagram, &keys);
        while d.poll_event().is_some() {}
        while d.poll_transmit(now, unix_ms, &keys).is_some() {}
        d.handle_timeout(now);
        let o = d.occupancy();
        assert!(
            o.peers <= 8
                && o.tracked_sources <= 8
                && o.replay_entries <= 16
                && o.queued_events <= 32
        );
    }
});
