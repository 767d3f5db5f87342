//! `asoc listen --audit-log PATH`: the security events as JSON lines with
//! the time and the node ids, reopened on SIGHUP, never holding the key.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// The audit lines once one named `name` (matching `pred`) is there: the
/// writer runs on its own thread, after the event reached stdout.
fn wait_line(path: &Path, name: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = lines(path);
        if v.iter().any(|l| l["event"] == name && pred(l)) {
            return v;
        }
        assert!(Instant::now() < deadline, "no {name} line in {v:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn good_send(key: &str, to: &str, bytes: &[u8]) -> String {
    let dir = temp_dir("audit-send");
    let file = dir.join("data.bin");
    std::fs::write(&file, bytes).unwrap();
    let out = send(key, "tokio", to)
        .arg("--json")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let done: Value = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["event"] == "connected")
        .unwrap_or_else(|| panic!("no connected line: {}", stdout(&out)));
    done["node"].as_str().unwrap().to_string()
}

fn wrong_key_send(to: &str) {
    let out = send(&keygen(), "tokio", to)
        .arg("-")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn auth_failures_and_successes_are_audited_without_key_material() {
    let key = keygen();
    let dir = temp_dir("audit");
    let path = dir.join("audit.jsonl");
    let mut listener = Listener::start(&key, "tokio", &["--audit-log", path.to_str().unwrap()]);
    wrong_key_send(&listener.addr);
    let sender = good_send(&key, &listener.addr, &pattern(10_000, 1));
    listener.event("stream_complete");
    let all = wait_line(&path, "peer_connected", |_| true);
    let node = listener.node.clone();
    assert_eq!(listener.stop("INT").code(), Some(0));

    assert_eq!(all[0]["event"], "audit_started", "{all:?}");
    let failed = all
        .iter()
        .find(|v| v["event"] == "auth_failed")
        .expect("auth_failed");
    assert_eq!(failed["reason"], "bad_mac", "{failed}");
    assert!(
        failed["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{failed}"
    );
    let ok = all.iter().find(|v| v["event"] == "peer_connected").unwrap();
    assert_eq!(ok["peer"], sender.as_str(), "{ok}");
    assert!(
        ok["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{ok}"
    );
    for line in &all {
        assert_eq!(line["node"], node.as_str(), "{line}");
        assert!(
            line["unix_ms"].as_u64().unwrap() > 1_600_000_000_000,
            "{line}"
        );
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
    }
    assert!(
        !all.iter().any(|v| v["event"] == "stream_complete"),
        "data events are not audited: {all:?}"
    );
    // No form of the key: as given, nor its bytes in hex.
    let text = std::fs::read_to_string(&path).unwrap();
    for needle in [key.clone(), hex::encode(key.as_bytes())] {
        assert!(!text.contains(&needle), "the key is in the audit log");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

#[test]
fn sighup_reopens_the_audit_log_after_a_rename() {
    let key = keygen();
    let dir = temp_dir("audit-hup");
    let path = dir.join("audit.jsonl");
    let rotated = dir.join("audit.jsonl.1");
    let mut listener = Listener::start(&key, "mio", &["--audit-log", path.to_str().unwrap()]);
    wrong_key_send(&listener.addr);
    wait_line(&path, "auth_failed", |_| true);
    std::fs::rename(&path, &rotated).unwrap();
    signal(&listener.child, "HUP");
    wait_line(&path, "audit_reopened", |_| true);
    let sender = good_send(&key, &listener.addr, &pattern(1000, 2));
    let new = wait_line(&path, "peer_connected", |v| v["peer"] == sender.as_str());
    let old = lines(&rotated);
    assert!(old.iter().any(|v| v["event"] == "auth_failed"), "{old:?}");
    assert!(
        !old.iter().any(|v| v["event"] == "peer_connected"),
        "{old:?}"
    );
    assert!(!new.iter().any(|v| v["event"] == "auth_failed"), "{new:?}");
    listener.event("stream_complete");
    assert_eq!(
        listener.stop("INT").code(),
        Some(0),
        "SIGHUP did not end it"
    );
}
