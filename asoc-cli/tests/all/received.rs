//! What `asoc listen --out DIR` writes, attacked from outside: streams that
//! share a node and stream id (a second connection, a restart, two at
//! once), files and symlinks planted at names the listener could pick,
//! file and directory modes, and a directory that vanishes under it.

use crate::common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use asoc_tokio::asoc_proto::auth::ApiKey;
use asoc_tokio::{Node, NodeBuilder, PeerRef};
use bytes::Bytes;
use common::*;
use serde_json::Value;
use uuid::Uuid;

/// A library node on tokio with the given node id, bound to `ip`.
async fn node(key: &str, id: Uuid, ip: &str) -> Node {
    asoc_tokio::start(
        NodeBuilder::new("received-test", ApiKey::new(key).unwrap())
            .bind(format!("{ip}:0").parse().unwrap())
            .node_id(id),
    )
    .await
    .unwrap()
}

/// Connects a node with id `id` to `addr`, sends `data` as one tensor and
/// shuts the node down.
fn send_as(key: &str, id: Uuid, addr: &str, data: &[u8]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let node = node(key, id, "127.0.0.1").await;
        let link = node.connect(addr.to_string()).await.unwrap();
        node.send_tensor(PeerRef::Conn(link.id), Bytes::copy_from_slice(data))
            .await
            .unwrap();
        node.shutdown(Duration::from_secs(2)).await;
    });
}

/// The `stream_complete` event of the stream whose SHA-256 is `data`'s.
fn completed(listener: &mut Listener, data: &[u8]) -> Value {
    let sha = sha256(data);
    listener.wait_for("stream_complete", |v| {
        v["event"] == "stream_complete" && v["sha256"] == sha.as_str()
    })
}

/// The saved file an event names, checked to be a regular file directly
/// in `dir` holding `data`, with mode 0600.
fn saved(done: &Value, dir: &Path, data: &[u8]) -> PathBuf {
    let file = PathBuf::from(done["file"].as_str().unwrap_or_else(|| panic!("{done}")));
    assert_eq!(file.parent(), Some(dir), "{done}");
    let meta = std::fs::symlink_metadata(&file).unwrap();
    assert!(meta.file_type().is_file(), "{}", file.display());
    assert!(std::fs::read(&file).unwrap() == data, "{}", file.display());
    assert_eq!(meta.mode() & 0o777, 0o600, "{}", file.display());
    file
}

#[test]
fn a_second_connection_or_a_restart_never_replaces_a_saved_stream() {
    let key = keygen();
    let dir = temp_dir("received-again");
    let out = ["--out", dir.to_str().unwrap()];
    let id = Uuid::from_u128(0x5eed_0000_0000_0001);
    let (first, second, third) = (
        pattern(200_000, 21),
        pattern(150_000, 22),
        pattern(100_000, 23),
    );
    let mut listener = Listener::start(&key, "tokio", &out);
    send_as(&key, id, &listener.addr, &first);
    let a = completed(&mut listener, &first);
    send_as(&key, id, &listener.addr, &second);
    let b = completed(&mut listener, &second);
    // Same sender, same stream id: only the connection differs.
    assert_eq!(a["peer"], b["peer"]);
    assert_eq!(a["stream"], b["stream"]);
    assert_eq!(listener.stop("TERM").code(), Some(0));

    let mut listener = Listener::start(&key, "tokio", &out);
    send_as(&key, id, &listener.addr, &third);
    let c = completed(&mut listener, &third);
    assert_eq!(a["stream"], c["stream"]);
    let files_saved = [
        saved(&a, &dir, &first),
        saved(&b, &dir, &second),
        saved(&c, &dir, &third),
    ];
    assert_ne!(files_saved[0], files_saved[1]);
    assert_ne!(files_saved[1], files_saved[2]);
    assert_ne!(files_saved[0], files_saved[2]);
    assert_eq!(files(&dir).len(), 3, "no temporary file left");
}

#[test]
fn two_concurrent_streams_with_the_same_node_and_stream_id_each_get_their_own_file() {
    let key = keygen();
    let dir = temp_dir("received-concurrent");
    let mut listener = Listener::start(&key, "tokio", &["--out", dir.to_str().unwrap()]);
    let id = Uuid::from_u128(0x5eed_0000_0000_0002);
    let halves = |seed| {
        let data = pattern(600_000, seed);
        let (a, b) = data.split_at(250_000);
        (
            data.clone(),
            Bytes::copy_from_slice(a),
            Bytes::copy_from_slice(b),
        )
    };
    let (one, one_a, one_b) = halves(31);
    let (two, two_a, two_b) = halves(32);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Each connection carries data before the next one opens, so the
        // listener keeps both; their chunks then interleave.
        let x = node(&key, id, "127.0.0.2").await;
        let lx = x.connect(listener.addr.clone()).await.unwrap();
        let mut sx = x.open_stream(PeerRef::Conn(lx.id)).await.unwrap();
        sx.send(one_a).await.unwrap();
        let y = node(&key, id, "127.0.0.3").await;
        let ly = y.connect(listener.addr.clone()).await.unwrap();
        let mut sy = y.open_stream(PeerRef::Conn(ly.id)).await.unwrap();
        assert_eq!(sx.id(), sy.id(), "the same stream id on both");
        sy.send(two_a).await.unwrap();
        sx.send(one_b).await.unwrap();
        sy.send(two_b).await.unwrap();
        sx.finish().await.unwrap();
        sy.finish().await.unwrap();
        x.shutdown(Duration::from_secs(2)).await;
        y.shutdown(Duration::from_secs(2)).await;
    });
    let a = completed(&mut listener, &one);
    let b = completed(&mut listener, &two);
    assert_eq!(a["peer"], b["peer"]);
    assert_eq!(a["stream"], b["stream"]);
    let (fa, fb) = (saved(&a, &dir, &one), saved(&b, &dir, &two));
    assert_ne!(fa, fb);
    assert_eq!(files(&dir).len(), 2, "no temporary file left");
}

#[test]
fn planted_symlinks_and_files_are_never_written_through_or_replaced() {
    let key = keygen();
    let base = temp_dir("received-planted");
    let (dir, outside) = (base.join("out"), base.join("outside"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let victim = outside.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let mut listener = Listener::start(&key, "tokio", &["--out", dir.to_str().unwrap()]);
    let id = Uuid::from_u128(0x5eed_0000_0000_0003);
    // Every name the listener could predictably use for this sender's
    // first stream: the earlier temporary and final names (the pid is
    // public), and the final names of the first connections of this run
    // (the listener's node id is public too).
    let pid = listener.child.id();
    let mut links = vec![
        dir.join(format!(".{id}-1.bin.{pid}.part")),
        dir.join(format!("{id}-1.bin")),
    ];
    let run = &listener.node[..8];
    let planted: Vec<PathBuf> = (0..16)
        .map(|conn| dir.join(format!("{id}-{run}-{conn}-1.bin")))
        .collect();
    for (i, file) in planted.iter().enumerate() {
        if i % 2 == 0 {
            std::fs::write(file, b"an earlier tensor").unwrap();
        } else {
            links.push(file.clone());
        }
    }
    for link in &links {
        std::os::unix::fs::symlink(&victim, link).unwrap();
    }
    let data = pattern(300_000, 41);
    send_as(&key, id, &listener.addr, &data);
    let done = completed(&mut listener, &data);
    saved(&done, &dir, &data);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(files(&outside), ["victim"], "nothing written outside DIR");
    for link in &links {
        let meta = std::fs::symlink_metadata(link).unwrap();
        assert!(meta.file_type().is_symlink(), "{} replaced", link.display());
    }
    for (i, file) in planted.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(std::fs::read(file).unwrap(), b"an earlier tensor");
        }
    }
    assert_eq!(
        files(&dir).len(),
        links.len() + planted.len() / 2 + 1,
        "one file added, no temporary file left"
    );
}

/// `asoc send --runtime tokio -` of `data` to `listener`, which must
/// succeed: the listener's verdict is not the sender's to see.
fn send_stdin(key: &str, listener: &Listener, data: &[u8]) {
    let mut send = send(key, "tokio", &listener.addr)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    send.stdin.take().unwrap().write_all(data).unwrap();
    let out = send.wait_with_output().unwrap();
    assert!(out.status.success(), "send failed: {}", stderr(&out));
}

#[test]
fn a_missing_out_dir_is_created_0700_and_saved_files_are_0600() {
    let key = keygen();
    let base = temp_dir("received-modes");
    let dir = base.join("new").join("received");
    let mut listener = Listener::start(&key, "mio", &["--out", dir.to_str().unwrap()]);
    for d in [&dir, &base.join("new")] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    let data = pattern(10_000, 51);
    send_stdin(&key, &listener, &data);
    let done = completed(&mut listener, &data);
    saved(&done, &dir, &data);
}

#[test]
fn a_stream_that_cannot_be_saved_is_reported_incomplete_with_write_failed() {
    let key = keygen();
    let dir = temp_dir("received-vanished");
    let mut listener = Listener::start(&key, "smol", &["--out", dir.to_str().unwrap()]);
    // The directory goes away after the start (as root, a read-only mode
    // would not stop the listener): no temporary file can be created.
    std::fs::remove_dir(&dir).unwrap();
    let data = pattern(20_000, 61);
    send_stdin(&key, &listener, &data);
    let cut = listener.event("stream_incomplete");
    assert_eq!(cut["reason"], "write_failed", "{cut}");
    assert_eq!(cut["bytes"], data.len() as u64, "{cut}");
    listener.event("peer_disconnected");
    assert!(
        listener.seen("stream_complete").is_empty(),
        "{:?}",
        listener.seen_all()
    );
    assert!(!dir.exists(), "nothing recreated");
}

#[test]
fn a_stream_whose_file_cannot_be_written_is_reported_incomplete_with_write_failed() {
    file_size_limited(false);
}

/// The same limit also breaks the listener's stderr (a file already past
/// it): the listener's warnings must fail quietly, not panic the handler
/// before it reports the stream.
#[test]
fn a_failing_stderr_does_not_cost_the_stream_its_report() {
    file_size_limited(true);
}

fn file_size_limited(stderr_past_the_limit: bool) {
    let key = keygen();
    let dir = temp_dir(if stderr_past_the_limit {
        "received-fsize-stderr"
    } else {
        "received-fsize"
    });
    let stderr = if stderr_past_the_limit {
        let log = dir.with_extension("stderr.log");
        std::fs::write(&log, vec![b'.'; 64 << 10]).unwrap();
        Stdio::from(std::fs::OpenOptions::new().append(true).open(&log).unwrap())
    } else {
        Stdio::null()
    };
    // A file size limit of a few KiB makes the writes fail with EFBIG;
    // SIGXFSZ is ignored so that the listener sees the error instead of
    // dying of the signal.
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "trap '' XFSZ; ulimit -f 8; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_asoc"))
        .args([
            "listen",
            "--json",
            "--bind",
            "127.0.0.1:0",
            "--runtime",
            "mio",
        ])
        .arg("--out")
        .arg(&dir)
        .env("ASOC_API_KEY", &key)
        .env_remove("ASOC_MASTER_KEY")
        .env_remove("ASOC_COMMUNITY")
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut listener = Listener::spawn(cmd);
    let data = pattern(1 << 20, 71);
    send_stdin(&key, &listener, &data);
    let cut = listener.event("stream_incomplete");
    assert_eq!(cut["reason"], "write_failed", "{cut}");
    listener.event("peer_disconnected");
    assert!(
        listener.seen("stream_complete").is_empty(),
        "{:?}",
        listener.seen_all()
    );
    assert_eq!(files(&dir), Vec::<String>::new(), "no temporary file left");
}
