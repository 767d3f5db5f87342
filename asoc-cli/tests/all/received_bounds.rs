//! What incoming streams may cost `asoc listen`, attacked from outside:
//! thousands of streams held open, a low descriptor limit, more streams
//! than the node allows over two connections, and a large stream echoed
//! back. Each test reads the listener's threads, descriptors or memory
//! from `/proc`.

use crate::common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asoc_tokio::asoc_proto::auth::ApiKey;
use asoc_tokio::{Node, NodeBuilder, PeerRef, SendStream};
use bytes::Bytes;
use common::*;
use serde_json::Value;
use sha2::Digest;

/// A library node on tokio bound to `ip`.
async fn node(key: &str, ip: &str) -> Node {
    asoc_tokio::start(
        NodeBuilder::new("bounds-test", ApiKey::new(key).unwrap())
            .bind(format!("{ip}:0").parse().unwrap()),
    )
    .await
    .unwrap()
}

/// Sent on a connection after the streams under test: the listener reads
/// a connection in order, so once this is reported every earlier stream's
/// first chunk has reached its handler.
async fn marker(node: &Node, conn: PeerRef, tag: &str) -> Vec<u8> {
    let data = format!("marker {tag} {:?}", Instant::now()).into_bytes();
    node.send_tensor(conn, Bytes::from(data.clone()))
        .await
        .unwrap();
    data
}

fn completed(listener: &mut Listener, data: &[u8]) -> Value {
    let sha = sha256(data);
    listener.wait_for("stream_complete", |v| {
        v["event"] == "stream_complete" && v["sha256"] == sha.as_str()
    })
}

fn proc_entries(pid: u32, what: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{what}"))
        .unwrap()
        .count()
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The largest of a few readings of `read` over a quarter second: a
/// listener still starting threads or opening files shows it.
fn peak(read: impl Fn() -> usize) -> usize {
    (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            read()
        })
        .max()
        .unwrap_or(0)
}

/// `asoc listen --json --bind 127.0.0.1:0 --runtime tokio ARGS` under a
/// shell that first runs `limit` (a `ulimit` command).
fn listener_with_limit(key: &str, limit: &str, args: &[&str]) -> Listener {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("{limit}; exec \"$0\" \"$@\"")])
        .arg(env!("CARGO_BIN_EXE_asoc"))
        .args([
            "listen",
            "--json",
            "--bind",
            "127.0.0.1:0",
            "--runtime",
            "tokio",
        ])
        .args(args)
        .env("ASOC_API_KEY", key)
        .env_remove("ASOC_MASTER_KEY")
        .env_remove("ASOC_COMMUNITY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Listener::spawn(cmd)
}

/// 2,000 streams held open with one byte each used to cost the listener
/// a thread each (2,004 threads): they are hashed on a small pool, and
/// every one is reported once it ends.
#[test]
fn two_thousand_open_streams_do_not_cost_a_thread_each() {
    const STREAMS: usize = 2000;
    let key = keygen();
    let mut listener = Listener::start(&key, "mio", &[]);
    let pid = listener.child.id();
    let before = proc_entries(pid, "task");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sender, open, mark) = rt.block_on(async {
        let node = node(&key, "127.0.0.1").await;
        let link = node.connect(listener.addr.clone()).await.unwrap();
        let mut open = Vec::with_capacity(STREAMS);
        for i in 0..STREAMS {
            let mut s = node.open_stream(PeerRef::Conn(link.id)).await.unwrap();
            s.send(Bytes::from(vec![i as u8])).await.unwrap();
            open.push(s);
        }
        let mark = marker(&node, PeerRef::Conn(link.id), "threads").await;
        (node, open, mark)
    });
    completed(&mut listener, &mark);
    let threads = peak(|| proc_entries(pid, "task"));
    assert!(
        threads <= before + 16,
        "{threads} threads with {STREAMS} streams open (started with {before})"
    );
    rt.block_on(async {
        for s in open {
            s.finish().await.unwrap();
        }
        sender.shutdown(Duration::from_secs(5)).await;
    });
    let mut ids = HashSet::new();
    for _ in 0..STREAMS {
        let done = listener.next("stream_complete");
        assert_eq!(done["bytes"], 1, "{done}");
        // Stream ids of a connection's client side: 1, 3, 5, ...
        let id = done["stream"].as_u64().unwrap();
        let byte = ((id - 1) / 2) as u8;
        assert_eq!(done["sha256"], sha256(&[byte]).as_str(), "{done}");
        ids.insert(id);
    }
    assert_eq!(ids.len(), STREAMS, "every stream reported once");
}

/// Under a 512-descriptor limit, 600 streams held open with `--out` used
/// to take every descriptor (a file each), so another peer could not
/// connect. Files are opened lazily and only a bounded number at once:
/// a legitimate sender still connects and saves, and the 600 streams,
/// written again after their files were closed, are all saved whole.
#[test]
fn under_a_512_descriptor_limit_600_open_streams_leave_room_for_another_peer() {
    const STREAMS: usize = 600;
    let key = keygen();
    let dir = temp_dir("received-fds");
    let mut listener =
        listener_with_limit(&key, "ulimit -n 512", &["--out", dir.to_str().unwrap()]);
    let pid = listener.child.id();
    let first = |i: usize| pattern(4096, 1000 + i as u64);
    let second = |i: usize| pattern(3000, 5000 + i as u64);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sender, open, mark) = rt.block_on(async {
        let node = node(&key, "127.0.0.2").await;
        let link = node.connect(listener.addr.clone()).await.unwrap();
        let mut open: Vec<SendStream> = Vec::with_capacity(STREAMS);
        for i in 0..STREAMS {
            let mut s = node.open_stream(PeerRef::Conn(link.id)).await.unwrap();
            s.send(Bytes::from(first(i))).await.unwrap();
            open.push(s);
        }
        let mark = marker(&node, PeerRef::Conn(link.id), "fds").await;
        (node, open, mark)
    });
    completed(&mut listener, &mark);
    let fds = peak(|| proc_entries(pid, "fd"));
    assert!(
        fds < 256,
        "{fds} descriptors open with {STREAMS} streams open"
    );

    // Another peer, from another address, connects and saves a file.
    let legit = pattern(200_000, 77);
    let file = dir.with_extension("legit.bin");
    std::fs::write(&file, &legit).unwrap();
    let out = send(&key, "tokio", &listener.addr)
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "send failed: {}", stderr(&out));
    let done = completed(&mut listener, &legit);
    let saved = done["file"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read(&saved).unwrap(), legit);

    rt.block_on(async {
        for (i, mut s) in open.into_iter().enumerate() {
            s.send(Bytes::from(second(i))).await.unwrap();
            s.finish().await.unwrap();
        }
        sender.shutdown(Duration::from_secs(5)).await;
    });
    let mut saved = HashSet::new();
    for _ in 0..STREAMS {
        let done = listener.next("stream_complete");
        let path = done["file"].as_str().unwrap_or_else(|| panic!("{done}"));
        let bytes = std::fs::read(path).unwrap();
        // Stream ids of one connection's client side: 1, 3, 5, ...
        let i = (done["stream"].as_u64().unwrap() as usize - 1) / 2;
        let mut whole = first(i);
        whole.extend_from_slice(&second(i));
        assert!(bytes == whole, "{path} holds the wrong bytes");
        assert_eq!(done["sha256"], sha256(&whole).as_str(), "{done}");
        saved.insert(path.to_string());
    }
    assert_eq!(saved.len(), STREAMS);
    assert_eq!(
        files(&dir).len(),
        STREAMS + 2,
        "every stream saved, the marker and the other peer's file too, no temporary file left"
    );
}

/// With `--max-node-streams 4`, two connections from two addresses hold
/// four streams open between them; the fifth, opened on the second
/// connection, is refused: the listener reports `stream_refused` and
/// closes that connection (its streams end `stream_limit`), while the
/// first connection's streams complete.
#[test]
fn the_node_stream_cap_refuses_one_stream_more_across_two_connections() {
    let key = keygen();
    let mut listener = Listener::start(&key, "smol", &["--max-node-streams", "4"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let chunk = |seed| Bytes::from(pattern(1000, seed));
    // First connection: two streams open (a third, the marker, comes and
    // goes).
    let (a, a_streams, mark) = rt.block_on(async {
        let a = node(&key, "127.0.0.2").await;
        let link = a.connect(listener.addr.clone()).await.unwrap();
        let mut streams = Vec::new();
        for seed in [81, 82] {
            let mut s = a.open_stream(PeerRef::Conn(link.id)).await.unwrap();
            s.send(chunk(seed)).await.unwrap();
            streams.push(s);
        }
        let mark = marker(&a, PeerRef::Conn(link.id), "a").await;
        (a, streams, mark)
    });
    completed(&mut listener, &mark);
    // Second connection: one stream open, then the fourth (the cap) and
    // the fifth, one over it.
    let (b, b_streams, mark) = rt.block_on(async {
        let b = node(&key, "127.0.0.3").await;
        let link = b.connect(listener.addr.clone()).await.unwrap();
        let mut first = b.open_stream(PeerRef::Conn(link.id)).await.unwrap();
        first.send(chunk(83)).await.unwrap();
        let mark = marker(&b, PeerRef::Conn(link.id), "b").await;
        (b, (link, first), mark)
    });
    completed(&mut listener, &mark);
    let (link, first) = b_streams;
    let (fourth, fifth) = rt.block_on(async {
        let mut fourth = b.open_stream(PeerRef::Conn(link.id)).await.unwrap();
        fourth.send(chunk(84)).await.unwrap();
        let mut fifth = b.open_stream(PeerRef::Conn(link.id)).await.unwrap();
        fifth.send(chunk(85)).await.unwrap();
        (fourth, fifth)
    });
    let refused = listener.event("stream_refused");
    assert_eq!(refused["max"], 4, "{refused}");
    assert_eq!(refused["stream"], fifth.id().get(), "{refused}");
    assert_eq!(
        refused["peer"],
        b.node_id().to_string().as_str(),
        "{refused}"
    );
    let gone = listener.wait_for("peer_disconnected of the second peer", |v| {
        v["event"] == "peer_disconnected" && v["addr"] == refused["addr"]
    });
    assert_eq!(gone["reason"], "stream_limit", "{gone}");
    let cut: Vec<Value> = listener
        .seen("stream_incomplete")
        .into_iter()
        .filter(|v| v["addr"] == refused["addr"])
        .collect();
    let cut_ids: HashSet<u64> = cut.iter().map(|v| v["stream"].as_u64().unwrap()).collect();
    for s in [first.id(), fourth.id(), fifth.id()] {
        assert!(cut_ids.contains(&u64::from(s.get())), "{cut:?}");
    }
    assert!(cut.iter().all(|v| v["reason"] == "stream_limit"), "{cut:?}");
    // The first connection was not touched: its streams complete.
    rt.block_on(async {
        for s in a_streams {
            s.finish().await.unwrap();
        }
        a.shutdown(Duration::from_secs(5)).await;
        drop((first, fourth, fifth));
        b.shutdown(Duration::from_secs(1)).await;
    });
    for seed in [81, 82] {
        completed(&mut listener, &pattern(1000, seed));
    }
}

/// `--echo` of 300 MiB on one stream used to hold the whole stream
/// (the listener grew from 5 to 307 MiB): it is echoed chunk by chunk,
/// the stream read no faster than its echo leaves, so the listener stays
/// within a bounded size, and the echo is byte-exact.
#[test]
fn echo_of_300_mib_keeps_the_listener_small_and_is_byte_exact() {
    echo_bounded(300);
}

fn echo_bounded(mib: usize) {
    const CHUNK: usize = 1 << 20;
    let key = keygen();
    let mut listener = Listener::start(&key, "tokio", &["--echo"]);
    let pid = listener.child.id();
    let base = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut most, deadline) = (0, Instant::now() + Duration::from_secs(300));
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                most = most.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            most
        })
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sent, echoed, echoed_len) = rt.block_on(async {
        let node = node(&key, "127.0.0.1").await;
        let link = node.connect(listener.addr.clone()).await.unwrap();
        let receiver = node.clone();
        let reader = tokio::spawn(async move {
            let mut echo = receiver.accept_stream().await.unwrap().stream;
            let (mut hash, mut len) = (sha2::Sha256::new(), 0usize);
            while let Some(c) = echo.chunk().await.unwrap() {
                hash.update(&c);
                len += c.len();
            }
            (hex::encode(hash.finalize()), len)
        });
        let mut s = node.open_stream(PeerRef::Conn(link.id)).await.unwrap();
        let mut hash = sha2::Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        for i in 0..mib {
            // Distinct bytes in every chunk: a reordered or repeated chunk
            // changes the digest.
            buf[..8].copy_from_slice(&(i as u64).to_le_bytes());
            buf[CHUNK - 8..].copy_from_slice(&(!(i as u64)).to_le_bytes());
            buf[CHUNK / 2] = i as u8;
            hash.update(&buf);
            s.send(Bytes::copy_from_slice(&buf)).await.unwrap();
        }
        s.finish().await.unwrap();
        let (echoed, len) = tokio::time::timeout(Duration::from_secs(120), reader)
            .await
            .expect("no complete echo")
            .unwrap();
        node.shutdown(Duration::from_secs(5)).await;
        (hex::encode(hash.finalize()), echoed, len)
    });
    stop.store(true, Ordering::Relaxed);
    let most = sampler.join().unwrap();
    assert_eq!(echoed_len, mib * CHUNK);
    assert_eq!(echoed, sent, "the echo is byte-exact");
    let done = listener.event("stream_complete");
    assert_eq!(done["sha256"], sent.as_str(), "{done}");
    let grew = most.saturating_sub(base);
    assert!(
        grew < 64 * 1024,
        "the listener grew by {grew} KiB (from {base} KiB) echoing {mib} MiB"
    );
}

/// `--max-incoming-streams 2`: a connection that opens a third stream is
/// closed as a protocol error, its streams cut.
#[test]
fn the_connection_stream_cap_is_configurable() {
    let key = keygen();
    let mut listener = Listener::start(&key, "tokio", &["--max-incoming-streams", "2"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sender, open) = rt.block_on(async {
        let node = node(&key, "127.0.0.1").await;
        let link = node.connect(listener.addr.clone()).await.unwrap();
        let mut open = Vec::new();
        for seed in [91, 92, 93] {
            let mut s = node.open_stream(PeerRef::Conn(link.id)).await.unwrap();
            s.send(Bytes::from(pattern(500, seed))).await.unwrap();
            open.push(s);
        }
        (node, open)
    });
    let error = listener.event("protocol_error");
    assert!(
        error["reason"].as_str().unwrap().contains("more than 2"),
        "{error}"
    );
    let gone = listener.event("peer_disconnected");
    assert_eq!(gone["reason"], "protocol_error", "{gone}");
    let cut = listener.seen("stream_incomplete");
    assert_eq!(cut.len(), 2, "{cut:?}");
    assert!(listener.seen("stream_complete").is_empty());
    drop(open);
    rt.block_on(sender.shutdown(Duration::from_secs(1)));
}

#[test]
fn zero_stream_caps_are_refused_at_start() {
    for flag in ["--max-incoming-streams", "--max-node-streams"] {
        let out = with_key(&keygen())
            .args(["listen", "--bind", "127.0.0.1:0", flag, "0"])
            .output()
            .unwrap();
        assert_fails(&out, 2, flag);
    }
}
