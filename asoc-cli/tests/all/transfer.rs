//! listen + send over loopback on every runtime: SHA-256 checked from the
//! JSON events and the `--out` files; refusals, cut-off senders, limits,
//! echo, static peers and TLS.

use crate::common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::*;

fn listen_and_send(runtime: &str) {
    let key = keygen();
    let out_dir = temp_dir(&format!("out-{runtime}"));
    let in_dir = temp_dir(&format!("in-{runtime}"));
    let mut listener = Listener::start(&key, runtime, &["--out", out_dir.to_str().unwrap()]);
    assert_eq!(listener.listening["runtime"], runtime);
    assert!(listener.listening["udp"].is_null());

    let big = pattern(3 * 1024 * 1024 + 123, 7);
    let small = pattern(1000, 8);
    std::fs::write(in_dir.join("big.bin"), &big).unwrap();
    std::fs::write(in_dir.join("empty.bin"), b"").unwrap();
    let mut send = send(&key, runtime, &listener.addr)
        .args(["--json", "--chunk-size", "256KiB"])
        .arg(in_dir.join("big.bin"))
        .arg(in_dir.join("empty.bin"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    send.stdin.take().unwrap().write_all(&small).unwrap();
    let out = send.wait_with_output().unwrap();
    assert!(out.status.success(), "send failed: {}", stderr(&out));
    let sent: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sent.first().unwrap()["event"], "connected");
    assert_eq!(sent.last().unwrap()["event"], "closed");
    let sender_node = sent[0]["node"].as_str().unwrap().to_string();

    let expected = [(&big, 13u64), (&Vec::new(), 0), (&small, 1)];
    for (i, (data, frames)) in expected.iter().enumerate() {
        let stream = 1 + 2 * i as u64;
        let done = listener.wait_for("stream_complete", |v| {
            v["event"] == "stream_complete" && v["stream"] == stream
        });
        assert_eq!(done["sha256"], sha256(data), "{done}");
        assert_eq!(done["bytes"], data.len() as u64);
        assert_eq!(done["frames"], *frames);
        assert_eq!(done["peer"], sender_node.as_str());
        assert_eq!(sent[1 + i]["sha256"], sha256(data));
        let file = std::path::PathBuf::from(done["file"].as_str().unwrap());
        assert_eq!(file.parent(), Some(out_dir.as_path()), "{done}");
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&format!("{sender_node}-")), "{name}");
        assert!(name.ends_with(&format!("-{stream}.bin")), "{name}");
        assert_eq!(&std::fs::read(&file).unwrap(), *data, "{}", file.display());
    }
    let connected = listener.event("peer_connected");
    assert_eq!(connected["direction"], "inbound");
    assert_eq!(connected["peer"], sender_node.as_str());
    let gone = listener.event("peer_disconnected");
    assert_eq!(gone["reason"], "peer_closed");
    assert_eq!(files(&out_dir).len(), 3, "no temporary file left");

    let status = listener.stop("INT");
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
}

#[test]
fn listen_and_send_verified_on_tokio() {
    listen_and_send("tokio");
}

#[test]
fn listen_and_send_verified_on_smol() {
    listen_and_send("smol");
}

#[test]
fn listen_and_send_verified_on_async_std() {
    listen_and_send("async-std");
}

#[test]
fn listen_and_send_verified_on_mio() {
    listen_and_send("mio");
}

fn wrong_key(runtime: &str) {
    let mut listener = Listener::start(&keygen(), runtime, &[]);
    let out = send(&keygen(), runtime, &listener.addr)
        .arg("-")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_fails(&out, 3, "closed the connection during the v2 handshake");
    assert!(stderr(&out).contains("API key"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refused: a different key, throttling or capacity"),
        "{}",
        stderr(&out)
    );
    let failed = listener.event("auth_failed");
    assert_eq!(failed["reason"], "bad_mac");
    assert!(failed["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(listener.seen("peer_connected").is_empty());
    assert_eq!(listener.stop("TERM").code(), Some(0));
}

#[test]
fn a_wrong_key_gives_exit_3_and_an_auth_failed_event_on_every_runtime() {
    for runtime in RUNTIMES {
        wrong_key(runtime);
    }
}

/// A flood of junk connections from one address prints one `auth_failed`
/// line and then aggregated lines whose counts add up to the rest, not one
/// line per connection (the printing is the same on every runtime).
#[test]
fn junk_connections_from_one_address_print_one_line_and_an_aggregate() {
    use std::io::Read;
    let mut listener = Listener::start(&keygen(), "tokio", &[]);
    let junk = 20u64;
    for _ in 0..junk {
        let mut s = std::net::TcpStream::connect(&listener.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(&[0xff; 20]);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(got.is_empty(), "the listener answered junk");
    }
    let first = listener.event("auth_failed");
    assert_eq!(first["reason"], "malformed");
    // The 20 connections take far less than the 10 s report interval: the
    // 19 after the first are one line when it ends.
    let v = listener.event("auth_failed_aggregated");
    assert_eq!(v["ip"], "127.0.0.1", "{v}");
    assert!(
        v["first_unix_ms"].as_u64() <= v["last_unix_ms"].as_u64(),
        "{v}"
    );
    let by_reason: u64 = v["reasons"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(by_reason, v["count"].as_u64().unwrap(), "{v}");
    let aggregated = v["count"].as_u64().unwrap();
    assert_eq!(aggregated, junk - 1);
    assert_eq!(
        listener.seen("auth_failed").len(),
        1,
        "one line, then aggregates"
    );
    assert_eq!(listener.stop("TERM").code(), Some(0));
}

fn interrupted(runtime: &str) {
    let key = keygen();
    let out_dir = temp_dir(&format!("cut-{runtime}"));
    let mut listener = Listener::start(&key, runtime, &["--out", out_dir.to_str().unwrap()]);
    let mut send = send(&key, runtime, &listener.addr)
        .args(["--chunk-size", "64KiB", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = send.stdin.take().unwrap();
    stdin.write_all(&pattern(512 * 1024, 3)).unwrap();
    stdin.flush().unwrap();
    // Wait until the data is on its way, then cut the sender off.
    listener.event("peer_connected");
    std::thread::sleep(Duration::from_millis(300));
    send.kill().unwrap();
    send.wait().unwrap();
    let cut = listener.event("stream_incomplete");
    assert_eq!(cut["stream"], 1);
    assert!(cut["bytes"].as_u64().unwrap() > 0, "{cut}");
    assert!(listener.seen("stream_complete").is_empty());
    assert_eq!(
        files(&out_dir),
        Vec::<String>::new(),
        "no final or temporary file"
    );
    drop(stdin);
    assert_eq!(listener.stop("INT").code(), Some(0));
}

#[test]
fn an_interrupted_sender_gives_stream_incomplete_and_no_file_on_every_runtime() {
    for runtime in RUNTIMES {
        interrupted(runtime);
    }
}

fn no_digest(runtime: &str) {
    let key = keygen();
    let out_dir = temp_dir(&format!("nodigest-{runtime}"));
    let mut listener = Listener::start(
        &key,
        runtime,
        &["--no-digest", "--out", out_dir.to_str().unwrap()],
    );
    let mut send = send(&key, runtime, &listener.addr)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    send.stdin
        .take()
        .unwrap()
        .write_all(b"tensor bytes")
        .unwrap();
    assert!(send.wait().unwrap().success());
    let done = listener.event("stream_complete");
    assert!(done["sha256"].is_null(), "{done}");
    assert_eq!(done["bytes"], 12);
    let file = std::path::PathBuf::from(done["file"].as_str().unwrap());
    assert_eq!(file.parent(), Some(out_dir.as_path()), "{done}");
    assert_eq!(std::fs::read(file).unwrap(), b"tensor bytes");
}

/// The JSON lines of a finished `asoc send --json`.
fn sent_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "send failed: {}", stderr(out));
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `asoc send --no-digest` computes no SHA-256 (null in JSON, said so in
/// text) and still sends every byte: the listener's own digest of a
/// multi-chunk file and of multi-chunk standard input equals the local one.
#[test]
fn send_no_digest_reports_none_and_sends_byte_exact() {
    let key = keygen();
    let in_dir = temp_dir("send-nodigest-in");
    let mut listener = Listener::start(&key, "tokio", &[]);
    let file = pattern(5 * 64 * 1024 + 17, 21);
    let piped = pattern(3 * 64 * 1024 + 5, 22);
    std::fs::write(in_dir.join("f.bin"), &file).unwrap();
    let mut child = send(&key, "tokio", &listener.addr)
        .args(["--json", "--no-digest", "--chunk-size", "64KiB"])
        .arg(in_dir.join("f.bin"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&piped).unwrap();
    let sent = sent_lines(&child.wait_with_output().unwrap());
    for (i, (data, frames)) in [(&file, 6u64), (&piped, 4)].iter().enumerate() {
        let stream = 1 + 2 * i as u64;
        assert_eq!(sent[1 + i]["event"], "stream_sent");
        assert!(sent[1 + i]["sha256"].is_null(), "{}", sent[1 + i]);
        assert_eq!(sent[1 + i]["bytes"], data.len() as u64);
        assert_eq!(sent[1 + i]["frames"], *frames);
        let done = listener.wait_for("stream_complete", |v| {
            v["event"] == "stream_complete" && v["stream"] == stream
        });
        assert_eq!(done["sha256"], sha256(data), "{done}");
    }

    let out = send(&key, "tokio", &listener.addr)
        .args(["--no-digest"])
        .arg(in_dir.join("f.bin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("no digest"), "{text}");
    assert!(!text.contains("sha256"), "{text}");
    assert_eq!(listener.stop("INT").code(), Some(0));
}

/// With digests on, the SHA-256 the sender reports (computed beside the
/// reader, over recycled buffers) is that of the whole input, for a file
/// and for standard input of many chunks whose last one is short, read
/// from a pipe that delivers short reads.
#[test]
fn send_reports_the_sha256_of_multi_chunk_files_and_stdin() {
    let key = keygen();
    let in_dir = temp_dir("send-digest-in");
    let mut listener = Listener::start(&key, "mio", &[]);
    let file = pattern(9 * 4096 + 1, 31);
    let piped = pattern(300 * 1024 + 3, 32);
    std::fs::write(in_dir.join("f.bin"), &file).unwrap();
    let mut child = send(&key, "mio", &listener.addr)
        .args(["--json", "--chunk-size", "4KiB"])
        .arg(in_dir.join("f.bin"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = piped.clone();
    let writer = std::thread::spawn(move || {
        for part in feed.chunks(1000) {
            stdin.write_all(part).unwrap();
        }
    });
    let sent = sent_lines(&child.wait_with_output().unwrap());
    writer.join().unwrap();
    for (i, (data, frames)) in [(&file, 10u64), (&piped, 76)].iter().enumerate() {
        assert_eq!(sent[1 + i]["sha256"], sha256(data), "{}", sent[1 + i]);
        assert_eq!(sent[1 + i]["frames"], *frames);
        let stream = 1 + 2 * i as u64;
        let done = listener.wait_for("stream_complete", |v| {
            v["event"] == "stream_complete" && v["stream"] == stream
        });
        assert_eq!(done["sha256"], sha256(data), "{done}");
    }
    assert_eq!(listener.stop("INT").code(), Some(0));
}

#[test]
fn no_digest_reports_null_and_still_writes_the_file() {
    no_digest("smol");
}

#[test]
fn no_digest_on_mio() {
    no_digest("mio");
}

fn max_frame(runtime: &str) {
    let key = keygen();
    let mut listener = Listener::start(&key, runtime, &["--max-frame", "64KiB"]);
    let input = temp_dir(&format!("maxframe-{runtime}")).join("t.bin");
    // Far more than socket buffers hold: the sender is still writing when
    // the listener closes, so it always sees the connection fail.
    std::fs::write(&input, pattern(32 << 20, 9)).unwrap();
    let out = send(&key, runtime, &listener.addr)
        .args(["--chunk-size", "1MiB"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = listener.event("protocol_error");
    assert!(err["reason"].as_str().unwrap().contains("65536"), "{err}");
    let gone = listener.event("peer_disconnected");
    assert_eq!(gone["reason"], "protocol_error");
    assert!(listener.seen("stream_complete").is_empty());
}

#[test]
fn a_frame_over_max_frame_is_a_protocol_error_and_the_sender_fails() {
    max_frame("tokio");
}

#[test]
fn a_frame_over_max_frame_is_a_protocol_error_on_mio() {
    max_frame("mio");
}

fn echo(runtime: &str) {
    use asoc_tokio::asoc_proto::auth::ApiKey;
    use asoc_tokio::{NodeBuilder, PeerRef};
    let key = keygen();
    let mut listener = Listener::start(&key, runtime, &["--echo"]);
    let data = bytes::Bytes::from(pattern(2 << 20, 11));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let echoed = rt.block_on(async {
        let node = asoc_tokio::start(
            NodeBuilder::new("echo-test", ApiKey::new(&key).unwrap())
                .bind("127.0.0.1:0".parse().unwrap()),
        )
        .await
        .unwrap();
        let link = node.connect(listener.addr.clone()).await.unwrap();
        node.send_tensor(PeerRef::Conn(link.id), data.clone())
            .await
            .unwrap();
        let incoming = tokio::time::timeout(Duration::from_secs(20), node.accept_stream())
            .await
            .unwrap()
            .unwrap();
        let got = incoming.stream.read_to_end().await.unwrap();
        node.shutdown(Duration::from_secs(2)).await;
        got
    });
    assert!(echoed == data, "the echo differs from what was sent");
    let done = listener.event("stream_complete");
    assert_eq!(done["sha256"], sha256(&data));
}

#[test]
fn echo_sends_every_complete_stream_back_to_its_sender() {
    echo("async-std");
}

#[test]
fn echo_on_mio() {
    echo("mio");
}

fn static_peer(dialed: &str, dialer: &str) {
    let key = keygen();
    let mut b = Listener::start(&key, dialed, &[]);
    let mut a = Listener::start(&key, dialer, &["--peer", &b.addr.clone()]);
    let out = a.event("peer_connected");
    assert_eq!(out["direction"], "outbound");
    assert_eq!(out["addr"], b.addr.as_str());
    let inbound = b.event("peer_connected");
    assert_eq!(inbound["direction"], "inbound");
    assert_eq!(inbound["peer"], a.node.as_str());
    assert_eq!(a.stop("TERM").code(), Some(0));
    let gone = b.event("peer_disconnected");
    assert_eq!(gone["peer"], inbound["peer"]);
}

#[test]
fn a_static_peer_is_dialed_outbound_and_seen_inbound_by_the_other_side() {
    static_peer("tokio", "smol");
}

#[test]
fn static_peers_between_mio_and_tokio_listeners() {
    static_peer("mio", "tokio");
    static_peer("tokio", "mio");
}

fn silent_client(runtime: &str) {
    let mut listener = Listener::start(&keygen(), runtime, &["--handshake-timeout", "300ms"]);
    let silent = std::net::TcpStream::connect(&listener.addr).unwrap();
    let failed = listener.event("auth_failed");
    assert_eq!(failed["reason"], "timeout", "{runtime}: {failed}");
    assert_eq!(failed["addr"], silent.local_addr().unwrap().to_string());
    assert_eq!(listener.stop("TERM").code(), Some(0));
}

#[test]
fn a_silent_client_fails_after_handshake_timeout_on_every_runtime() {
    for runtime in RUNTIMES {
        silent_client(runtime);
    }
}

/// A self-signed certificate for 127.0.0.1 in a directory of its own.
fn self_signed(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(&format!("tls-{name}"));
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k)
}

fn tls_listen(listener_runtime: &str) {
    let key = keygen();
    let (cert, tls_key) = self_signed(listener_runtime);
    let mut listener = Listener::start(
        &key,
        listener_runtime,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            tls_key.to_str().unwrap(),
        ],
    );
    for runtime in RUNTIMES {
        let mut send = send(&key, runtime, &listener.addr)
            .args(["--json", "--tls-pin"])
            .arg(&cert)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let payload = format!("{runtime} into {listener_runtime}");
        send.stdin
            .take()
            .unwrap()
            .write_all(payload.as_bytes())
            .unwrap();
        let out = send.wait_with_output().unwrap();
        assert!(out.status.success(), "{runtime}: {}", stderr(&out));
        let done = listener.wait_for("stream_complete", |v| {
            v["event"] == "stream_complete" && v["sha256"] == sha256(payload.as_bytes())
        });
        assert_eq!(done["bytes"], payload.len());
    }
    for runtime in RUNTIMES {
        // Without TLS the listener never sees a HELLO: a handshake failure.
        let out = send(&key, runtime, &listener.addr)
            .arg("-")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_fails(&out, 3, "handshake");
        // A pin of another certificate: the TLS handshake fails.
        let (other, _) = self_signed(&format!("{listener_runtime}-other-{runtime}"));
        let out = send(&key, runtime, &listener.addr)
            .arg("--tls-pin")
            .arg(&other)
            .arg("-")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_fails(&out, 3, "TLS handshake");
    }
    assert_eq!(listener.stop("TERM").code(), Some(0));
}

#[test]
fn tls_listen_with_a_pinned_certificate_on_tokio_every_sender_runtime_and_plain_refused() {
    tls_listen("tokio");
}

#[test]
fn tls_listen_with_a_pinned_certificate_on_mio_every_sender_runtime_and_plain_refused() {
    tls_listen("mio");
}
