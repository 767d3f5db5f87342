//! The suite must be able to fail: a sloppy server that accepts every HELLO
//! (no MAC check, no replay cache, no connection cap) and never closes on a
//! protocol error is caught by the cases that say so, while the handshake
//! itself passes. A patient echo that never gives up on a stalled send and
//! an eager redialer that dials an announced port again 50 ms after every
//! close, forever, are caught by the send-stall, reconnect and expiry cases.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::case::Finding;
use conformance::run::{run_case, Outcome};
use conformance::target::{Endpoint, Implementation, Sources, TargetConfig};
use conformance::wire::{challenge, frame, hello_frame, ty, uuid_v4};

use crate::sloppy::{accepting_server, sloppy_server, KEY};

pub(crate) struct Sloppy(pub(crate) SocketAddr);

impl Implementation for Sloppy {
    fn serve(&mut self) -> Result<Endpoint, Finding> {
        Ok(Endpoint::new(self.0))
    }
    fn dial(&mut self, _: SocketAddr, _: Option<&[u8]>) -> Result<(), Finding> {
        Err(Finding::Unsupported("server only".into()))
    }
    fn announcements(&mut self) -> Option<&UdpSocket> {
        None
    }
}

pub(crate) fn config() -> TargetConfig {
    let mut cfg = TargetConfig::new(KEY, "self-check");
    cfg.timeout = Duration::from_millis(500);
    cfg.quiet = Duration::from_millis(200);
    cfg.idle_timeout = Duration::from_millis(600);
    cfg
}

pub(crate) fn run(id: &str, cfg: &TargetConfig, imp: &mut dyn Implementation) -> Outcome {
    let case = conformance::cases::all()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap();
    let r = run_case(&case, cfg, imp, &Sources::new());
    eprintln!("{id}: {} ({:?})", r.outcome.as_str(), r.actual);
    r.outcome
}

fn outcome(id: &str) -> Outcome {
    run(id, &config(), &mut Sloppy(sloppy_server()))
}

#[test]
fn a_valid_handshake_passes() {
    assert_eq!(outcome("R1-5.2/1"), Outcome::Pass);
}

#[test]
fn a_missing_mac_check_fails() {
    assert_eq!(outcome("R1-9.1/1"), Outcome::Fail);
    assert_eq!(outcome("R2-6.2.1/1"), Outcome::Fail);
}

#[test]
fn a_missing_replay_cache_fails() {
    assert_eq!(outcome("R2-4.3/1"), Outcome::Fail);
}

#[test]
fn ignoring_protocol_errors_fails_must_and_should_differently() {
    assert_eq!(outcome("R1-9.2/11"), Outcome::Fail);
    assert_eq!(outcome("R1-9.2/8"), Outcome::NonStrict);
    assert_eq!(outcome("R1-7.4/3"), Outcome::NonStrict);
}

#[test]
fn a_missing_receive_idle_timeout_is_caught() {
    assert_eq!(outcome("R1-9.3/6"), Outcome::NonStrict);
}

#[test]
fn echo_cases_are_unsupported_without_echo() {
    assert_eq!(outcome("R1-6.2/1"), Outcome::Unsupported);
}

#[test]
fn udp_cases_are_unsupported_without_a_udp_target() {
    assert_eq!(outcome("R1-4.4/1"), Outcome::Unsupported);
}

#[test]
fn a_missing_connection_cap_fails() {
    let mut cfg = config();
    // Told of no cap, the case cannot run.
    assert_eq!(
        run("R1-10.4/9", &cfg, &mut Sloppy(sloppy_server())),
        Outcome::Skip
    );
    cfg.max_connections = Some(3);
    assert_eq!(
        run("R1-10.4/9", &cfg, &mut Sloppy(sloppy_server())),
        Outcome::Fail
    );
}

/// Reads one frame: header fields and payload.
fn read_frame(s: &mut TcpStream) -> Option<(u8, u32, Vec<u8>)> {
    let mut h = [0u8; 14];
    s.read_exact(&mut h).ok()?;
    let len = u32::from_be_bytes([h[10], h[11], h[12], h[13]]) as usize;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).ok()?;
    Some((h[1], u32::from_be_bytes([h[2], h[3], h[4], h[5]]), p))
}

/// Accepts every HELLO and echoes every completed stream with blocking
/// writes that wait for ever: no send stall timeout.
fn patient_echo_server() -> SocketAddr {
    accepting_server(|mut s| {
        let mut data = Vec::new();
        while let Some((t, _, p)) = read_frame(&mut s) {
            if t == ty::DATA {
                data.extend_from_slice(&p);
            } else if t == ty::END {
                let mut seq = 0;
                for c in data.chunks(1 << 20) {
                    if s.write_all(&frame(ty::DATA, 2, seq, c)).is_err() {
                        return;
                    }
                    seq += 1;
                }
                if s.write_all(&frame(ty::END, 2, seq, &[])).is_err() {
                    return;
                }
                data.clear();
            }
        }
    })
}

#[test]
fn a_missing_send_stall_timeout_is_caught() {
    let mut cfg = config();
    cfg.echo = true;
    cfg.stall_timeout = Duration::from_millis(500);
    assert_eq!(
        run("R1-9.3/7", &cfg, &mut Sloppy(patient_echo_server())),
        Outcome::NonStrict
    );
}

/// Dials the port of every 50-byte datagram, at its source address, again
/// a fixed `delay` after each close, for ever (until dropped): no backoff,
/// no give-up, no expiry, and with a short delay no first-retry delay.
pub(crate) struct EagerRedialer {
    udp: UdpSocket,
    stop: Arc<AtomicBool>,
}

impl EagerRedialer {
    pub(crate) fn start(delay: Duration) -> Self {
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
                let flag = Arc::clone(&flag);
                std::thread::spawn(move || redial(to, delay, &flag));
            }
        });
        Self { udp, stop }
    }
}

fn redial(to: SocketAddr, delay: Duration, stop: &AtomicBool) {
    let end = Instant::now() + Duration::from_secs(15);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        if let Ok(mut s) = TcpStream::connect(to) {
            let _ = s.write_all(&hello_frame(KEY.as_bytes(), &uuid_v4(), challenge()));
            let mut sink = [0u8; 4096];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        }
        std::thread::sleep(delay);
    }
}

impl Drop for EagerRedialer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Implementation for EagerRedialer {
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

pub(crate) fn reconnect_config() -> TargetConfig {
    let mut cfg = config();
    cfg.retry_min = Duration::from_millis(300);
    cfg.retry_max = Duration::from_millis(600);
    cfg.max_backoff = Duration::from_secs(1);
    cfg.peer_expiry = Duration::from_secs(1);
    cfg
}

#[test]
fn redialing_at_once_is_caught_by_every_reconnect_case() {
    let cfg = reconnect_config();
    for id in ["R1-9.4/1", "R1-9.4/2", "R1-9.4/3", "R1-9.4/4", "R1-4.4/8"] {
        let mut imp = EagerRedialer::start(Duration::from_millis(50));
        assert_eq!(run(id, &cfg, &mut imp), Outcome::NonStrict, "{id}");
    }
}

#[test]
fn a_steady_retry_passes_the_first_delay_but_not_backoff_give_up_or_expiry() {
    let cfg = reconnect_config();
    // 400 ms is a fine first retry for a 300–600 ms range; the same again
    // is no backoff, and it never stops.
    let delay = Duration::from_millis(400);
    for (id, want) in [
        ("R1-9.4/1", Outcome::Pass),
        ("R1-9.4/2", Outcome::Pass),
        ("R1-9.4/3", Outcome::NonStrict),
        ("R1-9.4/4", Outcome::NonStrict),
        ("R1-4.4/8", Outcome::NonStrict),
    ] {
        let mut imp = EagerRedialer::start(delay);
        assert_eq!(run(id, &cfg, &mut imp), want, "{id}");
    }
}
