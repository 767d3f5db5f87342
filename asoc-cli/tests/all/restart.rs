//! `asoc listen --state-dir`: a HELLO recorded before a restart is refused
//! after it. Each test records a genuine v1 HELLO on the wire, restarts the
//! listener and replays the recorded bytes from outside.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use asoc_proto::auth::{sign_hello, ApiKey};
use uuid::Uuid;

use crate::common::{keygen, temp_dir, with_key, Listener};

/// The client node the recorded HELLO claims.
const CLIENT: Uuid = Uuid::from_bytes([0x5e; 16]);

fn recorded_hello(key: &str, challenge: u32) -> Vec<u8> {
    sign_hello(&ApiKey::new(key).unwrap(), CLIENT, challenge)
        .encode_frame()
        .to_vec()
}

/// Writes `hello` to `addr` and returns what came back before the server
/// closed or 3 s passed.
fn offer(addr: &str, hello: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(hello).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(3);
    // An ACCEPT is 30 bytes; once it is here the server has answered.
    while Instant::now() < deadline && got.len() < 30 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

fn listen(key: &str, runtime: &str, state: Option<&Path>) -> Listener {
    let mut args = vec!["--allow-v1".to_string()];
    if let Some(dir) = state {
        args.push("--state-dir".into());
        args.push(dir.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Listener::start(key, runtime, &args)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn replay_after_restart(runtime: &str, stop: &str) {
    let key = keygen();
    let base = temp_dir(&format!("state-{runtime}-{stop}"));
    let state = base.join("state");
    let hello = recorded_hello(&key, 0x0bad_cafe);

    let mut first = listen(&key, runtime, Some(&state));
    assert!(
        !offer(&first.addr, &hello).is_empty(),
        "the genuine HELLO is answered"
    );
    first.event("peer_connected");
    let file = state.join("hello-replay.bin");
    if stop == "KILL" {
        // No shutdown to save at: the periodic save must have it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&file).map_or(0, |m| m.len()) <= 16 {
            assert!(Instant::now() < deadline, "state never saved");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    first.stop(stop);
    assert_eq!(mode(&state), 0o700, "state directory mode");
    assert_eq!(mode(&file), 0o600, "state file mode");

    let mut second = listen(&key, runtime, Some(&state));
    let restored = second.event("state_restored");
    assert_eq!(restored["restored"], 1, "{restored}");
    let answer = offer(&second.addr, &hello);
    assert!(
        answer.is_empty(),
        "the replay got {} bytes back",
        answer.len()
    );
    let refused = second.event("auth_failed");
    assert_eq!(refused["reason"], "replay", "{refused}");
    assert!(second.seen("peer_connected").is_empty());
    drop(second);

    // The control: a restarted node without the memory takes the replay,
    // which is the attack the state directory stops.
    let mut forgetful = listen(&key, runtime, None);
    assert!(
        !offer(&forgetful.addr, &hello).is_empty(),
        "without --state-dir the replayed HELLO is answered"
    );
    forgetful.event("peer_connected");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_hello_replayed_after_a_graceful_restart_is_refused_on_tokio() {
    replay_after_restart("tokio", "TERM");
}

#[test]
fn a_hello_replayed_after_a_graceful_restart_is_refused_on_mio() {
    replay_after_restart("mio", "TERM");
}

#[test]
fn a_hello_replayed_after_a_kill_is_refused_once_the_periodic_save_ran() {
    replay_after_restart("smol", "KILL");
}

fn refused_start(key: &str, args: &[&str], needle: &str) {
    let out = with_key(key)
        .args(["listen", "--bind", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    crate::common::assert_fails(&out, 2, needle);
}

#[test]
fn unsafe_state_directories_and_damaged_state_are_refused_at_start() {
    let key = keygen();
    let base = temp_dir("state-refused");
    let open = base.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    refused_start(&key, &["--state-dir", open.to_str().unwrap()], "chmod 700");

    let private = base.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = base.join("link");
    std::os::unix::fs::symlink(&private, &link).unwrap();
    refused_start(&key, &["--state-dir", link.to_str().unwrap()], "symlink");

    // A planted symlink in place of the state file is not followed.
    let elsewhere = base.join("elsewhere.bin");
    std::fs::write(&elsewhere, b"not a state").unwrap();
    let file = private.join("hello-replay.bin");
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    refused_start(
        &key,
        &["--state-dir", private.to_str().unwrap()],
        "cannot restore",
    );

    // A damaged state is an error, not a silent fresh start.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, b"ASOCRPL1\0\0\0\x01\0\0\0\0short").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused_start(
        &key,
        &["--state-dir", private.to_str().unwrap()],
        "announces",
    );

    // A retention shorter than a HELLO's freshness window is refused.
    refused_start(&key, &["--hello-retention", "30s"], "--hello-retention");
    let _ = std::fs::remove_dir_all(&base);
}

/// A `--discovery` listener on `udp` that announces only to `to` (never a
/// broadcast), with `--state-dir` when given.
fn discovery_node(key: &str, udp: &str, to: &str, state: Option<&Path>) -> Listener {
    let mut args: Vec<String> = [
        "--discovery",
        "--community",
        "restart-test",
        "--discovery-bind",
        udp,
        "--announce-to",
        to,
    ]
    .map(String::from)
    .to_vec();
    if let Some(dir) = state {
        args.push("--state-dir".into());
        args.push(dir.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Listener::start(key, "tokio", &args)
}

/// Discovery's drop and accept counters, asked for with SIGUSR1.
fn counters(l: &mut Listener) -> serde_json::Value {
    crate::common::signal(&l.child, "USR1");
    l.event("discovery_counters")["counters"].clone()
}

/// A recorded announcement replayed to a node after it restarted: the
/// node that kept discovery's memory drops it as a replay, one that did
/// not takes the peer from it.
#[test]
fn an_announcement_replayed_after_a_restart_is_dropped_with_state_dir() {
    let key = keygen();
    let base = temp_dir("state-discovery");
    let state = base.join("state");
    let recorder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    recorder
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let tap = recorder.local_addr().unwrap().to_string();
    // Announcements of the node under test go to a port nobody reads.
    let nowhere = crate::common::free_udp();
    let a_udp = crate::common::free_udp();

    let mut a = discovery_node(&key, &a_udp, &nowhere, Some(&state));
    let peer_udp = crate::common::free_udp();
    let peer = Listener::start(
        &key,
        "tokio",
        &[
            "--discovery",
            "--community",
            "restart-test",
            "--discovery-bind",
            &peer_udp,
            "--announce-to",
            &a_udp,
            "--announce-to",
            &tap,
        ],
    );
    let mut buf = [0u8; 128];
    let (n, _) = recorder.recv_from(&mut buf).expect("the peer announces");
    let recorded = buf[..n].to_vec();
    a.wait_for("peer_discovered", |v| {
        v["event"] == "peer_discovered" && v["peer"] == peer.node.as_str()
    });
    drop(peer);
    a.stop("TERM");

    let mut restarted = discovery_node(&key, &a_udp, &nowhere, Some(&state));
    let restored = restarted.event("state_restored");
    assert!(
        restored["discovery_entries"].as_u64().unwrap_or(0) >= 1,
        "{restored}"
    );
    recorder.send_to(&recorded, &a_udp).unwrap();
    let c = counters(&mut restarted);
    assert!(c["replayed"].as_u64().unwrap_or(0) >= 1, "{c}");
    assert_eq!(c["accepted"], 0, "{c}");
    assert!(restarted.seen("peer_discovered").is_empty());
    drop(restarted);

    let mut forgetful = discovery_node(&key, &a_udp, &nowhere, None);
    recorder.send_to(&recorded, &a_udp).unwrap();
    let found = forgetful.event("peer_discovered");
    assert_eq!(found["version"], 2, "{found}");
    let _ = std::fs::remove_dir_all(&base);
}
