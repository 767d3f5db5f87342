//! The suite must be able to fail: a sloppy server that accepts every HELLO
//! (no MAC check, no replay cache) and never closes on a protocol error is
//! caught by the cases that say so, while the handshake itself passes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use conformance::case::Finding;
use conformance::run::{run_case, Outcome};
use conformance::target::{Endpoint, Implementation, Sources, TargetConfig};
use conformance::wire::accept_frame;

const KEY: &str = "0123456789abcdef0123456789abcdef";

struct Sloppy(SocketAddr);

impl Implementation for Sloppy {
    fn serve(&mut self) -> Result<Endpoint, Finding> {
        Ok(Endpoint {
            tcp: self.0,
            udp: None,
            node_id: None,
        })
    }
    fn dial(&mut self, _: SocketAddr, _: Option<&[u8]>) -> Result<(), Finding> {
        Err(Finding::Unsupported("server only".into()))
    }
    fn announcements(&mut self) -> Option<&UdpSocket> {
        None
    }
}

fn sloppy_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut hello = [0u8; 50];
                if s.read_exact(&mut hello).is_ok() {
                    let _ = s.write_all(&accept_frame(KEY.as_bytes()));
                }
                let mut sink = [0u8; 4096];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

fn outcome(id: &str) -> Outcome {
    let addr = sloppy_server();
    let mut cfg = TargetConfig::new(KEY, "self-check");
    cfg.timeout = Duration::from_millis(500);
    cfg.quiet = Duration::from_millis(200);
    cfg.idle_timeout = Duration::from_millis(600);
    let case = conformance::cases::all()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap();
    run_case(&case, &cfg, &mut Sloppy(addr), &Sources::new()).outcome
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
