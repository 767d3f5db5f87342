//! Fakes that once misled the suite into a wrong verdict, each run against
//! the case it misled: the verdict is now the right one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::case::Finding;
use conformance::run::Outcome;
use conformance::target::{Endpoint, Implementation};
use conformance::wire::{accept_frame, challenge, hello_frame, uuid_v4};

use crate::self_check::{config, reconnect_config, run, EagerRedialer, Sloppy};
use crate::sloppy::{sloppy_server, KEY};

/// A target whose only limit is the wire maximum has no length above its
/// limit: the oversized-frame cases skip instead of failing it. The same
/// sloppy server (it never closes on a length) fails them under a real
/// limit.
#[test]
fn oversized_frame_cases_skip_at_the_wire_maximum() {
    let mut cfg = config();
    for id in ["R1-10.4/1", "R1-10.4/2", "R1-10.4/3"] {
        assert_eq!(
            run(id, &cfg, &mut Sloppy(sloppy_server())),
            Outcome::Fail,
            "{id}"
        );
    }
    cfg.max_payload = u32::MAX;
    for id in ["R1-10.4/1", "R1-10.4/2", "R1-10.4/3"] {
        assert_eq!(
            run(id, &cfg, &mut Sloppy(sloppy_server())),
            Outcome::Skip,
            "{id}"
        );
    }
}

/// Dials the port at bytes 24..26 of every datagram of at least 26 bytes,
/// valid or not, once, `delay` after it arrived: late, but within the
/// suite's `--timeout`.
struct LateDialer {
    udp: UdpSocket,
    stop: Arc<AtomicBool>,
}

impl LateDialer {
    fn start(delay: Duration) -> Self {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (sock, flag) = (udp.try_clone().unwrap(), Arc::clone(&stop));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 128];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if n < 26 {
                    continue;
                }
                let to = SocketAddr::new(from.ip(), u16::from_be_bytes([buf[24], buf[25]]));
                let flag = Arc::clone(&flag);
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    if flag.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Ok(mut s) = TcpStream::connect(to) {
                        let _ = s.write_all(&hello_frame(KEY.as_bytes(), &uuid_v4(), challenge()));
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut sink = [0u8; 4096];
                        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                    }
                });
            }
        });
        Self { udp, stop }
    }
}

impl Drop for LateDialer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Implementation for LateDialer {
    fn serve(&mut self) -> Result<Endpoint, Finding> {
        Ok(Endpoint::new(sloppy_server()).with_udp(Some(self.udp.local_addr().unwrap())))
    }
    fn dial(&mut self, _: SocketAddr, _: Option<&[u8]>) -> Result<(), Finding> {
        Err(Finding::Unsupported("server only".into()))
    }
    fn announcements(&mut self) -> Option<&UdpSocket> {
        None
    }
}

/// A dial to a bad datagram's port that comes later than `--quiet` but
/// within `--timeout` is still a dial to a bad datagram, and is not
/// credited to the control datagram sent after it.
#[test]
fn a_late_dial_to_a_bad_datagram_fails_the_negative_discovery_cases() {
    let cfg = config();
    // Later than the 200 ms quiet, well within the 500 ms timeout.
    let delay = Duration::from_millis(350);
    assert!(delay > cfg.quiet && delay < cfg.timeout);
    for id in ["R1-4.2/2", "R1-4.4/2", "R2-6.2.1/2", "R2-4.4/4"] {
        let mut imp = LateDialer::start(delay);
        assert_eq!(run(id, &cfg, &mut imp), Outcome::Fail, "{id}");
    }
    // A valid datagram dialed just as late is a pass: the fake is only
    // wrong in what it dials.
    let mut imp = LateDialer::start(delay);
    assert_eq!(run("R1-4.4/1", &cfg, &mut imp), Outcome::Pass);
}

/// A steady schedule above the backoff floor passes the first-retry cases
/// but is no backoff: the second wait must be clearly longer than the first.
#[test]
fn a_constant_schedule_above_the_floor_is_not_backoff() {
    let cfg = reconnect_config();
    // Within the 300–600 ms first-retry range and above the 480 ms floor
    // (80 % of twice the shortest first delay), the same every time.
    let delay = Duration::from_millis(550);
    let started = Instant::now();
    let mut imp = EagerRedialer::start(delay);
    assert_eq!(run("R1-9.4/2", &cfg, &mut imp), Outcome::Pass);
    let mut imp = EagerRedialer::start(delay);
    assert_eq!(run("R1-9.4/3", &cfg, &mut imp), Outcome::NonStrict);
    eprintln!("constant schedule judged in {:?}", started.elapsed());
}

/// Refuses every connection silently, but only `delay` after its first
/// bytes arrive: later than the suite's "at once", before the handshake
/// deadline plus slack.
fn slow_refuser(delay: Duration) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut first = [0u8; 1];
                if s.read(&mut first).is_ok() {
                    std::thread::sleep(delay);
                }
            });
        }
    });
    addr
}

/// Where the RFC asks only for a close without an error frame, a close
/// that comes late passes (the delay is reported); where the RFC itself
/// says "immediately" (an invalid HMAC), it still fails.
#[test]
fn a_late_silent_close_passes_unless_the_rfc_says_immediately() {
    let mut cfg = config();
    cfg.handshake_timeout = Duration::from_secs(1);
    // Past the 500 ms timeout, within the 1.5 s deadline plus slack.
    let delay = Duration::from_millis(900);
    for id in ["R1-7.1/2", "R1-9.1/3", "R1-9.1/7"] {
        assert_eq!(
            run(id, &cfg, &mut Sloppy(slow_refuser(delay))),
            Outcome::Pass,
            "{id}"
        );
    }
    for id in ["R1-9.1/1", "R1-9.1/2"] {
        assert_eq!(
            run(id, &cfg, &mut Sloppy(slow_refuser(delay))),
            Outcome::Fail,
            "{id}"
        );
    }
}

/// Checks every HELLO's MAC and refuses a bad one silently, but never
/// refuses an address for its failures: no lockout at all.
fn mac_checking_server() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut h = [0u8; 50];
                if s.read_exact(&mut h).is_err() {
                    return;
                }
                let node = uuid::Uuid::from_slice(&h[14..30]).unwrap();
                let ch = u32::from_be_bytes([h[46], h[47], h[48], h[49]]);
                if h[30..46] != conformance::wire::hello_mac(KEY.as_bytes(), &node, ch) {
                    return;
                }
                if s.write_all(&accept_frame(KEY.as_bytes())).is_ok() {
                    let mut sink = [0u8; 4096];
                    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                }
            });
        }
    });
    addr
}

/// A server without any lockout accepts the second address, as a per-address
/// lockout would, but the first address was never locked out: the case
/// says so instead of passing.
#[test]
fn a_per_address_lockout_is_not_credited_without_a_lockout() {
    let cfg = config();
    assert_eq!(
        run("R1-10.4/4", &cfg, &mut Sloppy(mac_checking_server())),
        Outcome::Fail
    );
    assert_eq!(
        run("R1-10.4/5", &cfg, &mut Sloppy(mac_checking_server())),
        Outcome::Error
    );
}

/// Dials the port of a 50-byte datagram at once and once more `again`
/// later, while the first connection is still open, then never again.
struct TwiceDialer {
    udp: UdpSocket,
    stop: Arc<AtomicBool>,
}

impl TwiceDialer {
    fn start(again: Duration) -> Self {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (sock, flag) = (udp.try_clone().unwrap(), Arc::clone(&stop));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !flag.load(Ordering::Relaxed) {
                let Ok((50, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let to = SocketAddr::new(from.ip(), u16::from_be_bytes([buf[24], buf[25]]));
                for delay in [Duration::ZERO, again] {
                    std::thread::spawn(move || {
                        std::thread::sleep(delay);
                        if let Ok(mut s) = TcpStream::connect(to) {
                            let _ =
                                s.write_all(&hello_frame(KEY.as_bytes(), &uuid_v4(), challenge()));
                            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                            let mut sink = [0u8; 4096];
                            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                        }
                    });
                }
            }
        });
        Self { udp, stop }
    }
}

impl Drop for TwiceDialer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Implementation for TwiceDialer {
    fn serve(&mut self) -> Result<Endpoint, Finding> {
        Ok(Endpoint::new(sloppy_server()).with_udp(Some(self.udp.local_addr().unwrap())))
    }
    fn dial(&mut self, _: SocketAddr, _: Option<&[u8]>) -> Result<(), Finding> {
        Err(Finding::Unsupported("server only".into()))
    }
    fn announcements(&mut self) -> Option<&UdpSocket> {
        None
    }
}

/// A second dial made while the peer was still fresh is not a dial after
/// its expiry, however long the suite held the first connection.
#[test]
fn a_dial_while_the_peer_was_fresh_is_not_a_dial_after_expiry() {
    let cfg = reconnect_config();
    // Well inside the 1 s expiry.
    let mut imp = TwiceDialer::start(Duration::from_millis(300));
    assert_eq!(run("R1-4.4/8", &cfg, &mut imp), Outcome::Pass);
}

fn case(id: &str) -> conformance::case::Case {
    conformance::cases::all()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap()
}

/// Levels and citations: the RFC's own keyword, WIRE.md-only requirements
/// marked, RFC-0002 §10 (Future Extensions) cited as no requirement.
#[test]
fn levels_and_citations_follow_the_rfcs() {
    use conformance::case::Level;
    // RFC-0001 §4.3: "Messages older than 60 seconds SHOULD be rejected".
    let old = case("R1-4.3/3");
    assert_eq!(old.level, Level::Should);
    assert!(old.requirement.contains("SHOULD be rejected"));
    assert!(!old.wire_only());
    // Future timestamps: WIRE.md §5 alone.
    assert!(case("R1-4.3/4").wire_only());
    assert_eq!(case("R1-4.3/4").level_label(), "WIRE-MUST");
    assert_eq!(case("R1-9.1/1").level_label(), "MUST");
    // RFC-0002 §10.2 is a future extension: the rate limits are WIRE.md's.
    for id in ["R2-10.2/1", "R2-10.2/2"] {
        assert!(case(id).wire_only(), "{id}");
        assert_eq!(case(id).level_label(), "WIRE-SHOULD", "{id}");
    }
    // WIRE-v2.md is its cases' standard: none of them is marked.
    assert!(conformance::cases::all()
        .iter()
        .filter(|c| c.id.starts_with("R3-"))
        .all(|c| !c.wire_only()));
}

/// The summary counts failures of RFC requirements apart from failures of
/// WIRE.md-only ones.
#[test]
fn the_summary_counts_rfc_failures_apart_from_wire_only_ones() {
    let cfg = config();
    let sources = conformance::target::Sources::new();
    let mut reports = Vec::new();
    // The sloppy server fails both: an RFC MUST and a WIRE.md-only MUST.
    for id in ["R1-9.1/1", "R1-9.2/11", "R1-5.2/1"] {
        let c = case(id);
        reports.push(conformance::run::run_case(
            &c,
            &cfg,
            &mut Sloppy(sloppy_server()),
            &sources,
        ));
    }
    assert!(!case("R1-9.1/1").wire_only() && case("R1-9.2/11").wire_only());
    let s = conformance::report::summary(&reports, false);
    assert_eq!((s.passed, s.failed), (1, 2));
    assert_eq!((s.rfc_failed, s.wire_failed), (1, 1));
    let human = conformance::report::human(&reports, false, "sloppy");
    assert!(
        human.contains("failed: 1 of RFC requirements, 1 of WIRE.md-only requirements"),
        "{human}"
    );
    assert!(human.contains("[WIRE-MUST] fail"), "{human}");
}
