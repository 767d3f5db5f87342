//! Discovery over loopback with unicast announce targets (never broadcast).

use crate::common;

use common::*;

fn two_listeners(rt_a: &str, rt_b: &str) {
    let key = keygen();
    let (ua, ub) = (free_udp(), free_udp());
    let args = |bind: &str, to: &str| {
        vec![
            "--discovery".to_string(),
            "--community".into(),
            "lab".into(),
            "--discovery-bind".into(),
            bind.into(),
            "--announce-to".into(),
            to.into(),
        ]
    };
    let a_args = args(&ua, &ub);
    let b_args = args(&ub, &ua);
    let mut a = Listener::start(&key, rt_a, &refs(&a_args));
    let mut b = Listener::start(&key, rt_b, &refs(&b_args));
    assert_eq!(a.listening["udp"], ua.as_str());
    let found = a.wait_for("peer_discovered", |v| {
        v["event"] == "peer_discovered" && v["peer"] == b.node.as_str()
    });
    assert_eq!(found["addr"], b.addr.as_str());
    let found = b.wait_for("peer_discovered", |v| {
        v["event"] == "peer_discovered" && v["peer"] == a.node.as_str()
    });
    assert_eq!(found["addr"], a.addr.as_str());
    a.event("peer_connected");
    b.event("peer_connected");
    assert_eq!(a.stop("INT").code(), Some(0));
    assert_eq!(b.stop("INT").code(), Some(0));
}

#[test]
fn two_listeners_announcing_to_each_other_discover_and_connect() {
    two_listeners("smol", "async-std");
}

#[test]
fn a_mio_listener_and_a_tokio_listener_discover_and_connect() {
    two_listeners("mio", "tokio");
}

#[test]
fn discover_lists_the_peers_that_announce_with_the_same_key_and_community() {
    let key = keygen();
    let listen_udp = free_udp();
    let discover_udp = free_udp();
    let listener = Listener::start(
        &key,
        "tokio",
        &[
            "--discovery",
            "--community",
            "lab",
            "--discovery-bind",
            &listen_udp,
            "--announce-to",
            &discover_udp,
        ],
    );
    let run = |key: &str, community: &str, runtime: &str| {
        with_key(key)
            .env("ASOC_COMMUNITY", community)
            .args([
                "discover",
                "--json",
                "--for",
                "4s",
                "--runtime",
                runtime,
                "--bind",
            ])
            .arg(&discover_udp)
            .output()
            .unwrap()
    };
    for runtime in ["smol", "mio"] {
        let out = run(&key, "lab", runtime);
        assert!(out.status.success(), "{runtime}: {}", stderr(&out));
        let lines: Vec<serde_json::Value> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["event"], "peer_discovered", "{runtime}: {lines:?}");
        assert_eq!(lines[0]["peer"], listener.node.as_str());
        assert_eq!(lines[0]["addr"], listener.addr.as_str());
        let last = lines.last().unwrap();
        assert_eq!(last["event"], "peers");
        assert_eq!(last["peers"][0]["peer"], listener.node.as_str());
    }

    // Another key or another community sees nobody.
    for (k, c, runtime) in [
        (keygen(), "lab".to_string(), "tokio"),
        (key.clone(), "other".to_string(), "mio"),
    ] {
        let out = run(&k, &c, runtime);
        assert!(out.status.success(), "{}", stderr(&out));
        let last: serde_json::Value =
            serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
        assert_eq!(last["peers"].as_array().unwrap().len(), 0, "{last}");
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
