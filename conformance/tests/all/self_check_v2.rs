//! The v2 cases must be able to fail: each planted flaw of the reference
//! peers (`v2ref.rs`) fails the case that judges it, and the flawless
//! reference server and client pass every R3 case they can run.

use std::time::Duration;

use conformance::case::{Role, Transport, Wire};
use conformance::run::{run_case, Outcome};
use conformance::target::{Implementation, Sources, TargetConfig};

use crate::v2ref::{
    self, Client, Discovering, Flaw, Served, COMMUNITY, HANDSHAKE, KEY, MAX_PAYLOAD,
};

fn config() -> TargetConfig {
    let mut cfg = TargetConfig::new(KEY, COMMUNITY);
    cfg.announce_interval = Duration::from_millis(300);
    cfg.timeout = Duration::from_millis(800);
    cfg.quiet = Duration::from_millis(300);
    cfg.handshake_timeout = HANDSHAKE;
    cfg.max_payload = MAX_PAYLOAD;
    cfg.retry_min = Duration::from_millis(150);
    cfg.retry_max = Duration::from_millis(300);
    cfg.echo = true;
    cfg
}

fn run(id: &str, imp: &mut dyn Implementation) -> Outcome {
    let case = conformance::cases::all()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no case {id}"));
    let r = run_case(&case, &config(), imp, &Sources::new());
    eprintln!(
        "{id}: {} ({:?}; {:?})",
        r.outcome.as_str(),
        r.expected,
        r.actual
    );
    r.outcome
}

fn server_case(id: &str, flaw: Flaw) -> Outcome {
    run(id, &mut Served(v2ref::server(flaw)))
}

fn client_case(id: &str, flaw: Flaw) -> Outcome {
    run(id, &mut Client(flaw))
}

#[test]
fn a_server_that_accepts_a_replayed_hello2_fails() {
    for id in ["R3-3.2/15", "R3-3.2/16"] {
        assert_eq!(server_case(id, Flaw::AcceptsReplay), Outcome::Fail, "{id}");
        assert_eq!(server_case(id, Flaw::None), Outcome::Pass, "{id}");
    }
}

#[test]
fn a_server_that_skips_the_timestamp_check_fails() {
    for id in ["R3-3.2/12", "R3-3.2/13"] {
        assert_eq!(
            server_case(id, Flaw::NoTimestampCheck),
            Outcome::Fail,
            "{id}"
        );
        assert_eq!(server_case(id, Flaw::None), Outcome::Pass, "{id}");
    }
    // Inside the window both are accepted.
    assert_eq!(
        server_case("R3-3.2/14", Flaw::NoTimestampCheck),
        Outcome::Pass
    );
}

#[test]
fn a_server_that_judges_the_header_only_when_whole_fails() {
    for id in ["R3-3.2/1", "R3-3.2/3", "R3-3.2/20"] {
        assert_eq!(
            server_case(id, Flaw::WholeHeaderFirst),
            Outcome::Fail,
            "{id}"
        );
        assert_eq!(server_case(id, Flaw::None), Outcome::Pass, "{id}");
    }
    // A wrong last byte is refused at once either way.
    assert_eq!(
        server_case("R3-3.2/6", Flaw::WholeHeaderFirst),
        Outcome::Pass
    );
}

#[test]
fn a_server_that_accepts_an_unauthenticated_frame_fails() {
    for id in ["R3-4/1", "R3-4/2", "R3-4/3"] {
        assert_eq!(server_case(id, Flaw::AcceptsBadTag), Outcome::Fail, "{id}");
        assert_eq!(server_case(id, Flaw::None), Outcome::Pass, "{id}");
    }
}

#[test]
fn a_client_that_accepts_any_accept2_fails() {
    for id in ["R3-3.4/2", "R3-3.4/3"] {
        assert_eq!(
            client_case(id, Flaw::AcceptsAnyAccept),
            Outcome::Fail,
            "{id}"
        );
        assert_eq!(client_case(id, Flaw::None), Outcome::Pass, "{id}");
    }
}

#[test]
fn a_node_that_falls_back_to_v1_fails() {
    assert_eq!(client_case("R3-6/3", Flaw::FallsBackToV1), Outcome::Fail);
    assert_eq!(client_case("R3-6/3", Flaw::None), Outcome::Pass);
}

/// Every R3 TCP case against the flawless reference peers: nothing fails
/// and nothing errs (what needs UDP or a v1-enabled target is skipped or
/// unsupported).
#[test]
fn the_reference_peers_pass_every_tcp_case() {
    let cases: Vec<_> = conformance::cases::for_wire(Wire::V2)
        .into_iter()
        .filter(|c| c.transport == Transport::Tcp)
        .collect();
    assert!(cases.len() >= 50, "{} TCP cases", cases.len());
    let mut bad = Vec::new();
    for c in &cases {
        let o = if c.role == Role::ImplDials {
            client_case(c.id, Flaw::None)
        } else {
            server_case(c.id, Flaw::None)
        };
        if !matches!(o, Outcome::Pass | Outcome::Info | Outcome::Skip) {
            bad.push(format!("{}: {}", c.id, o.as_str()));
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}

/// Every R3 UDP case against the reference node with discovery.
#[test]
fn the_reference_node_passes_every_udp_case() {
    let cases: Vec<_> = conformance::cases::for_wire(Wire::V2)
        .into_iter()
        .filter(|c| c.transport == Transport::Udp)
        .collect();
    assert!(cases.len() >= 15, "{} UDP cases", cases.len());
    let mut bad = Vec::new();
    for c in &cases {
        let o = run(c.id, &mut Discovering::start(Flaw::None));
        if !matches!(o, Outcome::Pass | Outcome::Info | Outcome::Skip) {
            bad.push(format!("{}: {}", c.id, o.as_str()));
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn discovery_that_checks_only_the_mac_fails_window_order_and_stickiness() {
    for id in ["R3-5/12", "R3-5/13", "R3-5/14", "R3-5/17"] {
        assert_eq!(
            run(id, &mut Discovering::start(Flaw::MacOnlyDiscovery)),
            Outcome::Fail,
            "{id}"
        );
    }
    // The MAC itself is still checked.
    assert_eq!(
        run("R3-5/8", &mut Discovering::start(Flaw::MacOnlyDiscovery)),
        Outcome::Pass
    );
}

#[test]
fn announcements_made_per_destination_fail() {
    assert_eq!(
        run("R3-5/16", &mut Discovering::start(Flaw::PerDestination)),
        Outcome::Fail
    );
}
