//! `asoc listen --metrics ADDR`: a Prometheus scrape after a known run
//! (one good stream of a known size, one wrong-key attempt) shows them.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// One HTTP/1.1 GET; returns the status line, the headers and the body.
fn get(addr: &str, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_lowercase(), body.to_string())
}

/// Every sample: `name{labels}` (labels sorted) to its value.
fn samples(body: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let key = match series.split_once('{') {
            None => series.to_string(),
            Some((name, labels)) => {
                let mut l: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                l.sort_unstable();
                format!("{name}{{{}}}", l.join(","))
            }
        };
        out.insert(key, value.parse().unwrap());
    }
    out
}

fn at(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no {key} in {:#?}", s.keys().collect::<Vec<_>>()))
}

#[test]
fn a_scrape_counts_a_known_run() {
    const N: usize = 300_000;
    let key = keygen();
    let mut listener = Listener::start(&key, "tokio", &["--metrics", "127.0.0.1:0"]);
    let metrics = listener.listening["metrics"].as_str().unwrap().to_string();
    assert!(
        metrics.starts_with("127.0.0.1:") && !metrics.ends_with(":0"),
        "{metrics}"
    );

    let dir = temp_dir("metrics");
    let file = dir.join("data.bin");
    std::fs::write(&file, pattern(N, 7)).unwrap();
    let out = send(&key, "tokio", &listener.addr)
        .args(["--json", "--chunk-size", "64KiB"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let sender = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["event"] == "connected")
        .unwrap()["node"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(listener.event("stream_complete")["bytes"], N as u64);
    listener.event("peer_disconnected");
    let bad = send(&keygen(), "tokio", &listener.addr)
        .arg("-")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(3), "{}", stderr(&bad));
    listener.event("auth_failed");

    let (status, headers, body) = get(&metrics, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let s = samples(&body);
    assert_eq!(at(&s, r#"asoc_streams_total{result="complete"}"#), 1.0);
    assert_eq!(at(&s, r#"asoc_streams_total{result="incomplete"}"#), 0.0);
    assert_eq!(
        at(
            &s,
            r#"asoc_handshakes_total{reason="none",result="success"}"#
        ),
        1.0
    );
    assert_eq!(
        at(
            &s,
            r#"asoc_handshakes_total{reason="bad_mac",result="failure"}"#
        ),
        1.0
    );
    let peer_in = at(
        &s,
        &format!(r#"asoc_peer_bytes_total{{direction="in",peer="{sender}"}}"#),
    );
    // Whole frames: the payload plus headers, tags and the handshake.
    assert!(
        peer_in >= N as f64 && peer_in < (N + 16_384) as f64,
        "{peer_in}"
    );
    let frames_in = at(
        &s,
        &format!(r#"asoc_peer_frames_total{{direction="in",peer="{sender}"}}"#),
    );
    // Five DATA frames of 64 KiB at least, plus the stream's opening and END.
    assert!(frames_in >= 7.0, "{frames_in}");
    assert!(
        at(
            &s,
            &format!(r#"asoc_peer_bytes_total{{direction="out",peer="{sender}"}}"#)
        ) > 0.0
    );
    assert_eq!(
        at(&s, r#"asoc_peer_bytes_total{direction="in",peer="other"}"#),
        0.0
    );
    assert_eq!(
        at(&s, r#"asoc_connections{state="established",version="2"}"#),
        0.0
    );
    assert_eq!(at(&s, "asoc_peer_nodes"), 0.0);
    assert_eq!(
        at(&s, r#"asoc_discovery_dropped_total{reason="bad_mac"}"#),
        0.0
    );
    assert_eq!(at(&s, "asoc_dial_attempts_total"), 0.0);
    assert_eq!(at(&s, "asoc_audit_dropped_total"), 0.0);
    let v2_fill = at(&s, r#"asoc_replay_cache_entries{cache="hello2_ephemeral"}"#);
    assert!(
        v2_fill >= 1.0,
        "the good handshake's ephemeral key is remembered: {v2_fill}"
    );
    assert!(
        at(
            &s,
            r#"asoc_replay_cache_capacity{cache="hello2_ephemeral"}"#
        ) >= v2_fill
    );
    for name in s.keys() {
        assert!(name.starts_with("asoc_"), "{name}");
    }

    let (status, _, _) = get(&metrics, "/other");
    assert!(status.contains(" 404 "), "{status}");
    assert_eq!(listener.stop("INT").code(), Some(0));
}

#[test]
fn dials_and_their_failures_are_counted() {
    let key = keygen();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = closed.local_addr().unwrap().to_string();
    drop(closed);
    let mut listener = Listener::start(
        &key,
        "smol",
        &["--metrics", "127.0.0.1:0", "--peer", &target],
    );
    listener.event("dial_failed");
    let metrics = listener.listening["metrics"].as_str().unwrap().to_string();
    let s = samples(&get(&metrics, "/metrics").2);
    let (tried, failed) = (
        at(&s, "asoc_dial_attempts_total"),
        at(&s, "asoc_dial_failures_total"),
    );
    assert!(failed >= 1.0 && tried >= failed, "{tried} {failed}");
    assert_eq!(listener.stop("INT").code(), Some(0));
}
