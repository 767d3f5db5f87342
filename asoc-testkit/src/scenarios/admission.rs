//! Admission under attack from an address the legitimate peer may share:
//! junk HELLOs, connect-and-close, successful reconnects, silent
//! connections holding pre-authentication places, and the log flood their
//! refusals would cause. Every attacker is a raw socket bound to its own
//! 127.x address; the node is whatever adapter runs the scenario.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use asoc_async::{Net, Node, NodeEvent};
use asoc_proto::auth::{ApiKey, AuthFailure, KeyRing};
use asoc_proto::connection::ConnectionConfig;
use asoc_proto::handshake::{Authenticator, AuthenticatorConfig, ClientOptions};
use asoc_proto::policy::PolicyConfig;

use super::{builder, connect_from, hello2_frame, start, stream_verified, KEY};

/// The attacker's address; the legitimate peers of these scenarios dial
/// from 127.0.0.1 unless a scenario says otherwise.
const ATTACKER: [u8; 4] = [127, 0, 0, 7];

fn attacker() -> IpAddr {
    IpAddr::from(ATTACKER)
}

/// A policy whose throttle admits one handshake per 300 ms, so that the
/// scenarios wait for it briefly; every other setting is the default.
fn quick_throttle() -> PolicyConfig {
    PolicyConfig::builder()
        .throttle_interval(Duration::from_millis(300))
        .build()
        .unwrap()
}

/// A raw v2 handshake under `key` from `from`, with a node id and
/// challenges of its own (`seed`). `Some` with the established socket when
/// the node answered, `None` when it closed the connection without a byte.
pub fn handshake_from(from: IpAddr, to: SocketAddr, key: &str, seed: u8) -> Option<TcpStream> {
    let mut sock = connect_from(from, to).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let config = AuthenticatorConfig::new(
        uuid::Uuid::from_bytes([seed; 16]),
        KeyRing::new(ApiKey::new(key).unwrap()),
    );
    // The challenge comes from the seed: a distinct seed per attempt keeps
    // the node's replay cache out of the way.
    let mut auth = Authenticator::new(config, [seed; 32]);
    let now = Instant::now();
    let mut conn = auth.client(
        now,
        asoc_async::unix_ms(),
        ConnectionConfig::default(),
        ClientOptions::v2(),
    );
    conn.write_to(now, &mut sock).ok()?;
    // ACCEPT2: its 14-byte header and the 72-byte Noise message.
    let mut accept = [0u8; 86];
    sock.read_exact(&mut accept).ok()?;
    conn.handle_read(now, &accept);
    auth.drive(now, asoc_async::unix_ms(), &mut conn);
    assert!(conn.is_established(), "the node's ACCEPT2 did not verify");
    // CONFIRM: the node's handshake completes on it.
    conn.write_to(now, &mut sock).ok()?;
    Some(sock)
}

/// Runs blocking socket code on a thread of its own (the node under test
/// may share the runtime's only thread) and waits for it without blocking.
async fn blocking<N: Net, T: Send + 'static>(net: &N, f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = std::thread::spawn(f);
    while !handle.is_finished() {
        net.sleep_until(Instant::now() + Duration::from_millis(10))
            .await;
    }
    handle.join().expect("blocking part panicked")
}

/// Sends `bytes` from `from` and reads until the node closes: the node
/// must close without answering a byte.
fn junk_from(from: IpAddr, to: SocketAddr, bytes: &[u8]) {
    let Ok(mut s) = connect_from(from, to) else {
        return;
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "the node answered junk with {} bytes",
        got.len()
    );
}

/// Retries a correct handshake from `from` until the node lets it in
/// (bounded: 100 tries over at most about 20 s).
async fn correct_hello_gets_in<N: Net>(net: &N, from: IpAddr, to: SocketAddr) -> usize {
    for attempt in 0..100u8 {
        let seed = 0x80 | (attempt & 0x7f);
        let got = blocking(net, move || handshake_from(from, to, KEY, seed)).await;
        if got.is_some() {
            return usize::from(attempt);
        }
        net.sleep_until(Instant::now() + Duration::from_millis(100))
            .await;
    }
    panic!("a correct HELLO from {from} was never accepted");
}

/// Waits (bounded) until `done` holds for the node's counters.
async fn counters_reach<N: Net>(
    net: &N,
    node: &Node<N>,
    what: &str,
    done: impl Fn(&asoc_proto::node::NodeCounters) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&node.counters()) {
        assert!(
            Instant::now() < deadline,
            "{what}: counters stuck at {:?}",
            node.counters().policy
        );
        net.sleep_until(Instant::now() + Duration::from_millis(20))
            .await;
    }
}

fn drain_events<N: Net>(node: &Node<N>) -> Vec<NodeEvent> {
    std::iter::from_fn(|| node.try_event()).collect()
}

fn throttled_events(events: &[NodeEvent], ip: IpAddr) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, NodeEvent::Throttled { ip: i, .. } if *i == ip))
        .count()
}

/// Five HELLOs under a wrong key from one address throttle it, and a
/// correct HELLO from that address is still accepted (at the throttled
/// rate), not locked out.
pub async fn junk_hellos_then_a_correct_one<N: Net>(net: N) {
    let b = start(&net, builder(KEY).policy(quick_throttle())).await;
    let to = b.local_addr();
    let junk = hello2_frame("wrong-key-0123456789abcdef", 0x66);
    blocking(&net, move || {
        for _ in 0..5 {
            junk_from(attacker(), to, &junk);
        }
    })
    .await;
    counters_reach(&net, &b, "five bad MACs", |c| c.policy.throttles >= 1).await;
    assert_eq!(b.counters().auth.bad_mac, 5);
    correct_hello_gets_in(&net, attacker(), to).await;
    counters_reach(&net, &b, "the correct handshake", |c| {
        c.policy.established >= 1
    })
    .await;
    let events = drain_events(&b);
    assert_eq!(throttled_events(&events, attacker()), 1, "{events:?}");
}

/// A hundred connect-and-close from one address throttle it (each is a
/// light failure), and a correct HELLO from it is still accepted.
pub async fn connect_and_close_then_a_correct_one<N: Net>(net: N) {
    let b = start(&net, builder(KEY).policy(quick_throttle())).await;
    let to = b.local_addr();
    blocking(&net, move || {
        for _ in 0..100 {
            // Close, then wait for the node's close, so that each is judged
            // before the next (at once they would meet the share of 8).
            if let Ok(mut s) = connect_from(attacker(), to) {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got);
                assert!(got.is_empty(), "the node answered a close");
            }
        }
    })
    .await;
    counters_reach(&net, &b, "a hundred connect-and-close", |c| {
        c.policy.abandoned + c.policy.refused.total() >= 100
    })
    .await;
    let p = b.counters().policy;
    assert!(p.abandoned >= 20, "light failures: {}", p.abandoned);
    assert_eq!(p.abandoned + p.refused.total(), 100, "{p:?}");
    assert!(p.throttles >= 1);
    correct_hello_gets_in(&net, attacker(), to).await;
    counters_reach(&net, &b, "the correct handshake", |c| {
        c.policy.established >= 1
    })
    .await;
}

/// 101 successful handshakes from one address are all accepted: successes
/// never count as attempts.
pub async fn a_hundred_and_one_successes<N: Net>(net: N) {
    let b = start(&net, builder(KEY)).await;
    let to = b.local_addr();
    let accepted = blocking(&net, move || {
        (0..101u8)
            .filter(|seed| handshake_from(attacker(), to, KEY, *seed).is_some())
            .count()
    })
    .await;
    assert_eq!(accepted, 101, "every handshake was answered");
    counters_reach(&net, &b, "101 established", |c| c.policy.established >= 101).await;
    let p = b.counters().policy;
    assert_eq!((p.throttles, p.refused.total()), (0, 0), "{p:?}");
}

/// What the silent flood measured.
#[derive(Clone, Copy, Debug)]
pub struct SilentFloodReport {
    /// Connections the attacker opened.
    pub opened: usize,
    /// Of those, how many the node still held open (its share of places).
    pub held: usize,
    /// The legitimate peer's throughput before the flood, bytes per second
    /// (0 when not measured).
    pub unloaded: f64,
    /// Its throughput during the flood, bytes per second.
    pub loaded: f64,
}

/// `count` silent connections from 127.0.0.7 while a legitimate peer on
/// 127.0.0.1 connects and streams `bytes`: the attacker holds at most its
/// share (8) of the 64 pre-authentication places, every other connection of
/// its is refused at once, the peer gets in and its tensor arrives intact,
/// and the counters and events say so. With `measure`, the peer first
/// streams `bytes` unloaded, and the attacker keeps reopening its
/// connections for the whole loaded transfer; both rates are returned.
pub async fn silent_flood<N: Net>(
    net: N,
    count: usize,
    bytes: u64,
    measure: bool,
) -> SilentFloodReport {
    // Without `measure`, a long first-byte deadline keeps the admitted
    // silent connections open through the whole check, so that the held
    // count is exact; with it, the defaults (2 s) apply and the attacker
    // reopens what the node closes.
    let connection = if measure {
        ConnectionConfig::default()
    } else {
        ConnectionConfig::builder()
            .handshake_timeout(Duration::from_secs(60))
            .first_byte_timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    };
    let driver = asoc_async::DriverConfig::builder()
        .connection(connection)
        .build()
        .unwrap();
    let policy = PolicyConfig::builder()
        .report_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    let b = start(&net, builder(KEY).driver(driver).policy(policy)).await;
    let to = b.local_addr();
    let unloaded = if measure {
        let a = start(&net, builder(KEY).static_peer(to.to_string())).await;
        assert_eq!(a.wait_for_peers(1, Duration::from_secs(20)).await, 1);
        let t = Instant::now();
        stream_verified(&a, &b, &net, bytes).await;
        let rate = bytes as f64 / t.elapsed().as_secs_f64();
        // The peer connects again during the flood: its dial must get a
        // place then.
        a.shutdown(Duration::from_secs(5)).await;
        rate
    } else {
        0.0
    };
    let _ = drain_events(&b);
    let flood_start = Instant::now();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut socks: Vec<TcpStream> = (0..count)
                .filter_map(|_| connect_from(attacker(), to).ok())
                .collect();
            let opened = socks.len();
            // Refused ones are closed by the node at once; wait (bounded)
            // until only the admitted remain open.
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut open = socks.len();
            while Instant::now() < deadline {
                socks.retain(still_open);
                open = socks.len();
                if open <= 8 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Under `measure`, keep `count` connections open or attempted
            // while the transfer runs: every 20 ms, reopen what the node
            // closed (at most `count` per round, bounded in total).
            let mut reopened = 0usize;
            while measure
                && !stop.load(std::sync::atomic::Ordering::Relaxed)
                && reopened < 10_000_000
            {
                socks.retain(still_open);
                for _ in socks.len()..count {
                    reopened += 1;
                    match connect_from(attacker(), to) {
                        Ok(s) => socks.push(s),
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (opened, open, socks)
        })
    };
    // Wait until the node has seen the first wave.
    counters_reach(&net, &b, "the silent connections", |c| {
        c.policy.refused.too_many_handshakes_from_ip >= (count - 8) as u64 / 2
    })
    .await;
    let a = start(&net, builder(KEY).static_peer(to.to_string())).await;
    assert_eq!(
        a.wait_for_peers(1, Duration::from_secs(20)).await,
        1,
        "the legitimate peer got in during the flood"
    );
    let t = Instant::now();
    stream_verified(&a, &b, &net, bytes).await;
    let loaded = bytes as f64 / t.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (opened, held, socks) = flood.join().unwrap();
    let p = b.counters().policy;
    assert!(
        opened >= count / 2,
        "only {opened} of {count} connects succeeded"
    );
    assert!(
        held <= 8,
        "the attacker holds {held} places, more than its share"
    );
    assert!(
        p.refused.too_many_handshakes_from_ip >= (opened - 8) as u64,
        "{p:?}"
    );
    assert_eq!(
        p.refused.too_many_handshakes, 0,
        "the node-wide cap was never reached"
    );
    // Their refusals were reported as one auth_failed and aggregated events.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reported = 0u64;
    let mut lines = 0usize;
    while reported < p.refused.too_many_handshakes_from_ip && Instant::now() < deadline {
        for e in drain_events(&b) {
            match e {
                NodeEvent::AuthFailed { addr, .. } if addr.ip() == attacker() => {
                    reported += 1;
                    lines += 1;
                }
                NodeEvent::AuthFailuresAggregated {
                    ip: Some(ip),
                    count,
                    reasons,
                    ..
                } if ip == attacker() => {
                    assert_eq!(
                        reasons.capacity + reasons.timeout + reasons.throttled,
                        count
                    );
                    reported += count;
                    lines += 1;
                }
                _ => {}
            }
        }
        net.sleep_until(Instant::now() + Duration::from_millis(50))
            .await;
    }
    assert!(
        reported >= p.refused.too_many_handshakes_from_ip,
        "{reported} refusals reported, {} counted",
        p.refused.too_many_handshakes_from_ip
    );
    // At most two lines per report interval of the flood (and one more
    // interval for the last report to come due).
    let intervals = (flood_start.elapsed().as_secs_f64() / 0.5).ceil() as usize + 1;
    assert!(
        lines <= 2 * intervals,
        "{lines} event lines for {reported} refusals: not aggregated"
    );
    drop(socks);
    let report = SilentFloodReport {
        opened,
        held,
        unloaded,
        loaded,
    };
    println!(
        "silent flood: {opened} connections from {}, {held} held (share 8), {} refused for the share, {lines} event lines; legitimate {:.0} MiB/s unloaded, {:.0} MiB/s during the flood",
        attacker(),
        p.refused.too_many_handshakes_from_ip,
        unloaded / 1_048_576.0,
        loaded / 1_048_576.0,
    );
    report
}

/// Whether the node still holds `s` open (nothing to read, no EOF).
fn still_open(s: &TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 1];
    let open = matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    let _ = s.set_nonblocking(false);
    open
}

/// `n` junk connections from one address produce a bounded number of
/// events whose counts add up to `n`: one `AuthFailed`, then aggregated
/// events per report interval.
pub async fn refusals_are_aggregated<N: Net>(net: N, n: usize) {
    let interval = Duration::from_millis(500);
    let policy = PolicyConfig::builder()
        .report_interval(interval)
        .throttle_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let b = start(&net, builder(KEY).policy(policy)).await;
    let to = b.local_addr();
    let junk = hello2_frame("wrong-key-0123456789abcdef", 0x67);
    let started = Instant::now();
    blocking(&net, move || {
        for _ in 0..n {
            junk_from(attacker(), to, &junk);
        }
    })
    .await;
    let flood_time = started.elapsed();
    let mut total = 0u64;
    let mut events = 0usize;
    let mut reasons = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while total < n as u64 {
        assert!(Instant::now() < deadline, "{total} of {n} reported");
        for e in drain_events(&b) {
            match e {
                NodeEvent::AuthFailed { addr, reason, .. } if addr.ip() == attacker() => {
                    assert!(
                        matches!(reason, AuthFailure::BadMac | AuthFailure::Throttled),
                        "{reason}"
                    );
                    total += 1;
                    reasons += 1;
                    events += 1;
                }
                NodeEvent::AuthFailuresAggregated {
                    ip: Some(ip),
                    count,
                    first,
                    last,
                    reasons: by,
                } if ip == attacker() => {
                    assert!(count > 0 && first <= last);
                    assert!(last.duration_since(first) < interval);
                    total += count;
                    reasons += by.bad_mac + by.throttled;
                    events += 1;
                }
                _ => {}
            }
        }
        net.sleep_until(Instant::now() + Duration::from_millis(50))
            .await;
    }
    assert_eq!(
        total, n as u64,
        "each junk connection reported exactly once"
    );
    assert_eq!(reasons, total);
    let c = b.counters().policy;
    assert_eq!(
        c.auth_failures.bad_mac + c.refused.throttled,
        n as u64,
        "{c:?}"
    );
    // At most two events per report interval the flood lasted.
    let intervals = (flood_time.as_secs_f64() / interval.as_secs_f64()).ceil() as usize + 1;
    assert!(
        events <= 2 * intervals,
        "{events} events for {n} refusals over {flood_time:?}"
    );
    println!("refusal flood: {n} junk connections in {flood_time:?} reported in {events} events");
}
