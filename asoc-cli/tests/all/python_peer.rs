//! The real Python implementation of ASoc (`../shared/peers/asoc-python`,
//! unmodified) as a peer of `asoc`, over v1 (`asoc listen --allow-v1`,
//! `asoc send --wire v1`).
//!
//! Every test drives the implementation through
//! `asoc-cli/tests/python/peer.py`, which imports it, runs a `NodeReady`,
//! and wraps `Connection.recv_frame`, `Connection.close` and
//! `NodeReady._connect_peer` in its own process to report what crossed the
//! wire (each received stream's length and SHA-256, each dial and close) as
//! JSON lines; nothing of the implementation is changed. On loopback its
//! discovery is always off and it binds 127.0.0.1 (it broadcasts to
//! 255.255.255.255 whenever discovery is on); discovery runs only inside
//! network namespaces the test creates.
//!
//! - Interop on every runtime: tensors of 0 B, 1 B, 1 MiB, 64 MiB and
//!   300 MiB, Python -> us and us -> Python, each verified by SHA-256 on
//!   both sides (20 to 45 s per runtime with all four at once; their 64
//!   and 300 MiB transfers take turns, to bound memory).
//! - Discovery both ways inside two namespaces joined by a veth pair, then a
//!   tensor over the connection that results, echoed back over it.
//! - The behaviours a peer must survive, one test each (they wait 10 to
//!   30 s of the implementation's own timers and run concurrently).
//!
//! Every test prints `SKIPPED` and passes where `python3` (3.9 or later) or
//! the implementation is missing (`ASOC_REQUIRE_PYTHON=1`, which CI sets,
//! makes that a failure); the namespace test also where namespaces are
//! unavailable (`ASOC_REQUIRE_NETNS=1` makes that a failure). Run them alone with
//! `cargo test -p asoc-cli --test all python_peer:: -- --nocapture`.
//! `docs/python-interop.md` describes them and the implementation's
//! deviations.

use crate::common;
use crate::common::{can_make_namespaces, ip};

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{keygen, pattern, sha256, with_key, Listener, RUNTIMES};

const MIB: usize = 1 << 20;
const SIZES: [usize; 5] = [0, 1, MIB, 64 * MIB, 300 * MIB];
/// The transfers that hold hundreds of MiB in both processes take turns
/// across the concurrently running tests.
static BIG: Mutex<()> = Mutex::new(());
const BIG_FROM: usize = 64 * MIB;

/// A path below the workspace root.
fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// `../shared/peers/asoc-python` beside the checkout.
fn implementation() -> PathBuf {
    repo("../shared/peers/asoc-python")
}

fn script(name: &str) -> PathBuf {
    repo("asoc-cli/tests/python").join(name)
}

/// The absolute path of a `python3` of at least 3.9 (the implementation
/// uses `list[str]` annotations, the driver `random.randbytes`), or `None`
/// after a `SKIPPED` line naming `what`.
pub(crate) fn python(what: &str) -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys; print(sys.executable); print(int(sys.version_info >= (3, 9)))",
        ])
        .output();
    let skip = |why: String| {
        if std::env::var_os("ASOC_REQUIRE_PYTHON").is_some_and(|v| v == "1") {
            panic!("{what}: {why} (ASOC_REQUIRE_PYTHON=1)");
        }
        eprintln!(
            "SKIPPED {what}: {why}; the Python implementation was not run (set \
             ASOC_REQUIRE_PYTHON=1 to make this a failure)"
        );
        None
    };
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => return skip(format!("python3 failed: {}", common::stderr(&o).trim())),
        Err(e) => return skip(format!("python3 not found ({e})")),
    };
    let text = common::stdout(&out);
    let mut lines = text.lines();
    let exe = lines.next().unwrap_or_default().to_string();
    if lines.next() != Some("1") {
        return skip("python3 is older than 3.9".to_string());
    }
    if !implementation().join("asoc/node_ready.py").is_file() {
        return skip(format!(
            "the implementation is not at {}",
            implementation().display()
        ));
    }
    Some(exe)
}

// ---- the Python node ---------------------------------------------------------

/// `peer.py`: one Python node, its JSON lines followed, commands on its
/// standard input. Killed on drop.
struct Py {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
    seen: Vec<Value>,
    /// The TCP port it listens on.
    port: u16,
    /// Its node id.
    node: String,
}

impl Py {
    /// The command running `peer.py ARGS` with `key`; `prefix` runs it
    /// inside a namespace (`ip netns exec NS`).
    fn command(python: &str, key: &str, prefix: &[&str], args: &[&str]) -> Command {
        let mut c = if prefix.is_empty() {
            Command::new(python)
        } else {
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..]).arg(python);
            c
        };
        c.arg(script("peer.py"))
            .args(args)
            .env("ASOC_API_KEY", key)
            .env("ASOC_PYTHON_DIR", implementation())
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONIOENCODING", "utf-8")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        c
    }

    fn start(python: &str, key: &str, args: &[&str]) -> Self {
        Self::spawn(Self::command(python, key, &[], args))
    }

    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            // Lines not starting with `{` are the implementation's own prints.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if !line.starts_with('{') {
                    continue;
                }
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("peer.py printed {line:?}: {e}"));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let mut p = Self {
            child,
            stdin,
            events: rx,
            seen: Vec::new(),
            port: 0,
            node: String::new(),
        };
        let up = p.wait(0, "listening", Duration::from_secs(30), |v| {
            v["event"] == "listening"
        });
        p.port = u16::try_from(up["port"].as_u64().unwrap()).unwrap();
        p.node = up["node"].as_str().unwrap().to_string();
        p
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends one command line.
    fn cmd(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Takes in whatever arrived, and returns how many events there are:
    /// a mark for [`Py::wait`].
    fn mark(&mut self) -> usize {
        while let Ok(v) = self.events.try_recv() {
            self.seen.push(v);
        }
        self.seen.len()
    }

    /// The first event from index `from` on, seen or arriving within
    /// `within`, matching `pred`.
    fn wait(
        &mut self,
        from: usize,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(v) = self.seen.iter().skip(from).find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "Python node: no {what} within {within:?}; its events:\n  {}",
                    self.dump()
                ),
            }
        }
    }

    fn dump(&self) -> String {
        self.seen
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n  ")
    }

    /// `send LEN SEED CHUNK [PEER]`: its `sent` or `send_error` event.
    fn try_send_to(&mut self, len: usize, seed: u64, chunk: usize, peer: &str) -> Value {
        let from = self.mark();
        self.cmd(&format!("send {len} {seed} {chunk} {peer}"));
        self.wait(from, "sent or send_error", Duration::from_secs(180), |v| {
            v["event"] == "sent" || v["event"] == "send_error"
        })
    }

    /// [`Py::try_send`] that must succeed. The implementation drops its
    /// only connection key when an older connection to the same address
    /// closes (it keys dialed connections by address and re-dials every
    /// 10 s), so "No connection" is answered by waiting for its next dial.
    fn send(&mut self, len: usize, seed: u64, chunk: usize) -> Value {
        self.send_to(len, seed, chunk, "")
    }

    /// [`Py::try_send_to`] without a node id: a fresh one.
    fn try_send(&mut self, len: usize, seed: u64, chunk: usize) -> Value {
        self.try_send_to(len, seed, chunk, "")
    }

    /// [`Py::send`] addressed to node id `peer` (empty: a fresh id).
    fn send_to(&mut self, len: usize, seed: u64, chunk: usize, peer: &str) -> Value {
        for _ in 0..3 {
            let from = self.mark();
            let v = self.try_send_to(len, seed, chunk, peer);
            if v["event"] == "sent" {
                assert_eq!(v["bytes"], len as u64, "{v}");
                return v;
            }
            let no_connection = v["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("No connection"));
            assert!(no_connection, "sending {len} bytes failed: {v}");
            self.wait(from, "a re-dial", Duration::from_secs(25), |v| {
                v["event"] == "dialed" && v["ok"] == true
            });
        }
        panic!("no connection for three dials: {}", self.dump());
    }

    /// `peers`: its connection keys and the node ids it knows.
    fn peers(&mut self) -> Value {
        let from = self.mark();
        self.cmd("peers");
        self.wait(from, "peers", Duration::from_secs(10), |v| {
            v["event"] == "peers"
        })
    }

    /// Its `peers` once node id `node` is among the ids it knows. It files
    /// an inbound connection under the id only after its ACCEPT is written,
    /// so our side (and its own `hello` event) can be ahead of it; polled
    /// at most 100 times.
    fn knows(&mut self, node: &str) -> Value {
        let mut peers = Value::Null;
        for _ in 0..100 {
            peers = self.peers();
            if peers["ids"].as_array().unwrap().iter().any(|i| i == node) {
                return peers;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("it never filed a connection under {node}: {peers}");
    }

    /// `quit`, and the exit status (killed if it takes over 20 s).
    fn quit(mut self) -> Option<i32> {
        self.cmd("quit");
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the Python node did not exit after quit");
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- our side ------------------------------------------------------------------

/// `asoc send --wire v1 --json --runtime RT --peer PEER ARGS -` with `data`
/// on standard input; its JSON lines (the send must succeed within 3 min).
fn send_stdin(key: &str, runtime: &str, peer: &str, args: &[&str], data: &[u8]) -> Vec<Value> {
    send_stdin_cmd(
        common::send(key, runtime, peer),
        args,
        data,
        &format!("{runtime} -> {peer}"),
    )
}

fn send_stdin_cmd(mut cmd: Command, args: &[&str], data: &[u8], what: &str) -> Vec<Value> {
    let mut child = cmd
        .args(["--wire", "v1", "--json"])
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("asoc send {what} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let written = writer.join().unwrap();
    let out = reader.join().unwrap().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "asoc send {what}: {status}: {err}");
    written.unwrap();
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stream_sent(lines: &[Value]) -> &Value {
    lines
        .iter()
        .find(|v| v["event"] == "stream_sent")
        .unwrap_or_else(|| panic!("no stream_sent: {lines:?}"))
}

fn big_turn(len: usize) -> Option<std::sync::MutexGuard<'static, ()>> {
    (len >= BIG_FROM).then(|| BIG.lock().unwrap_or_else(|e| e.into_inner()))
}

// ---- interop on every runtime ------------------------------------------------------

/// Python -> us and us -> Python on `runtime`, every size, verified by
/// SHA-256 on both sides.
fn interop(runtime: &str) {
    let Some(py) = python(&format!("python_peer::interop_{runtime}")) else {
        return;
    };
    let began = Instant::now();
    let key = keygen();
    let mut l = Listener::start(&key, runtime, &["--allow-v1"]);
    let mut p = Py::start(&py, &key, &["--static-peer", &l.addr]);
    p.wait(0, "its first dial", Duration::from_secs(30), |v| {
        v["event"] == "dialed" && v["ok"] == true
    });

    // How long the largest transfer took each way, for the report.
    let mut largest = [Duration::ZERO; 2];
    // Python -> us: its stream_tensor, 1 MiB chunks (its default).
    for (i, &len) in SIZES.iter().enumerate() {
        let _turn = big_turn(len);
        let t = Instant::now();
        let sent = p.send(len, 100 + i as u64, MIB);
        let digest = sent["sha256"].as_str().unwrap().to_string();
        let done = l.wait_for("stream_complete from Python", |v| {
            v["event"] == "stream_complete" && v["sha256"] == digest.as_str()
        });
        assert_eq!(done["bytes"], len as u64, "{done}");
        assert_eq!(done["peer"], p.node.as_str(), "{done}");
        assert_eq!(done["frames"], len.div_ceil(MIB) as u64, "{done}");
        largest[0] = t.elapsed();
    }

    // us -> Python: asoc send, 1 MiB chunks (its default).
    for (i, &len) in SIZES.iter().enumerate() {
        let _turn = big_turn(len);
        let data = pattern(len, 200 + i as u64);
        let digest = sha256(&data);
        let from = p.mark();
        let t = Instant::now();
        let lines = send_stdin(&key, runtime, &p.addr(), &[], &data);
        drop(data);
        assert_eq!(stream_sent(&lines)["sha256"], digest.as_str());
        let got = p.wait(from, "the stream from us", Duration::from_secs(120), |v| {
            v["event"] == "stream" && v["sha256"] == digest.as_str()
        });
        assert_eq!(got["bytes"], len as u64, "{got}");
        // END carries the number of DATA frames (a lone END for 0 B).
        assert_eq!(got["seq"], got["frames"], "{got}");
        largest[1] = t.elapsed();
    }

    let bad: Vec<Value> = l
        .seen_all()
        .iter()
        .filter(|v| v["event"] == "protocol_error" || v["event"] == "stream_incomplete")
        .cloned()
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    assert!(l.child.try_wait().unwrap().is_none(), "asoc listen exited");
    assert_eq!(p.quit(), Some(0));
    println!(
        "python_peer::interop_{runtime}: 0 B .. 300 MiB both ways verified in {:.1?} \
         (300 MiB: Python -> us {:.1?}, us -> Python {:.1?})",
        began.elapsed(),
        largest[0],
        largest[1]
    );
}

#[test]
fn interop_tokio() {
    interop(RUNTIMES[0]);
}

#[test]
fn interop_smol() {
    interop(RUNTIMES[1]);
}

#[test]
fn interop_async_std() {
    interop(RUNTIMES[2]);
}

#[test]
fn interop_mio() {
    interop(RUNTIMES[3]);
}

// ---- the behaviours a peer must survive ------------------------------------------

/// It re-dials its static peer every 10 s while the connection it made is
/// open, so every 10 s we get one more authenticated connection from the
/// same node id, the older ones left idle (it keys dialed connections by
/// address, so only the newest is used). We accept each, keep the older
/// ones open, and a tensor sent after the re-dials arrives whole.
#[test]
fn python_redials_a_static_peer_every_10s_while_connected() {
    let Some(py) = python("python_peer::python_redials_a_static_peer_every_10s_while_connected")
    else {
        return;
    };
    let key = keygen();
    let mut l = Listener::start(&key, "tokio", &["--allow-v1"]);
    let mut p = Py::start(&py, &key, &["--static-peer", &l.addr]);
    let first = p.wait(0, "its first dial", Duration::from_secs(30), |v| {
        v["event"] == "dialed" && v["ok"] == true
    });
    // Two more dials while it holds a connection to the same address.
    let redial = p.wait(
        0,
        "a re-dial while connected",
        Duration::from_secs(30),
        |v| v["event"] == "dial" && v["already"].as_array().is_some_and(|a| !a.is_empty()),
    );
    let from = p.seen.iter().position(|v| *v == redial).unwrap() + 1;
    let second = p.wait(from, "a second re-dial", Duration::from_secs(30), |v| {
        v["event"] == "dial" && v["already"].as_array().is_some_and(|a| !a.is_empty())
    });
    let from = p.seen.iter().position(|v| *v == second).unwrap() + 1;
    p.wait(
        from,
        "the second re-dial's handshake",
        Duration::from_secs(30),
        |v| v["event"] == "dialed" && v["ok"] == true,
    );
    // We accepted three connections from its one node id; none was closed.
    for _ in 0..3 {
        l.next("peer_connected");
    }
    let connected = l.seen("peer_connected");
    assert!(connected.len() >= 3, "{connected:?}");
    assert!(
        connected.iter().all(|v| v["peer"] == p.node.as_str()),
        "{connected:?}"
    );
    assert!(l.seen("peer_disconnected").is_empty(), "{:?}", l.seen_all());
    // A tensor after the re-dials goes over the newest connection and
    // arrives whole.
    let sent = p.send(3 * MIB + 17, 7, MIB);
    let done = l.wait_for("stream_complete", |v| {
        v["event"] == "stream_complete" && v["sha256"] == sent["sha256"]
    });
    assert_eq!(done["peer"], p.node.as_str());
    assert_eq!(done["addr"], connected.last().unwrap()["addr"], "{done}");
    assert!(l.child.try_wait().unwrap().is_none(), "asoc listen exited");
    println!(
        "python_peer: re-dials at {}s and {}s after the first dial at {}s; {} connections \
         accepted from node {}",
        redial["t"],
        second["t"],
        first["t"],
        connected.len(),
        p.node
    );
}

/// It closes any connection on which no frame arrives for 30 s (its
/// `recv_frame` times out), also one with no stream open. `asoc listen
/// --peer-v1` dials it and holds the connection idle; the implementation
/// closes it, our node reconnects, and the implementation then sends a
/// tensor over the new connection (addressed by our node id, which it
/// learned from our HELLO).
#[test]
fn python_closes_a_connection_that_carries_no_frame_for_30s() {
    let Some(py) = python("python_peer::python_closes_a_connection_that_carries_no_frame_for_30s")
    else {
        return;
    };
    let key = keygen();
    let mut p = Py::start(&py, &key, &[]);
    let mut l = Listener::start(&key, "tokio", &["--allow-v1", "--peer-v1", &p.addr()]);
    let first = l.event("peer_connected");
    assert_eq!(first["direction"], "outbound", "{first}");
    let hello = p.wait(0, "our HELLO", Duration::from_secs(20), |v| {
        v["event"] == "hello"
    });
    assert_eq!(hello["node"], l.node.as_str());
    let conn = hello["conn"].clone();
    // Its 30 s receive timeout fires on the idle connection (bounded wait).
    let timeout = p.wait(0, "its receive timeout", Duration::from_secs(50), |v| {
        v["event"] == "recv_error" && v["conn"] == conn
    });
    assert_eq!(timeout["error"], "Receive timeout", "{timeout}");
    let gone = l.wait_for("peer_disconnected", |v| v["event"] == "peer_disconnected");
    assert_eq!(gone["addr"], first["addr"], "{gone}");
    assert_eq!(gone["reason"], "peer_closed", "{gone}");
    // We reconnect (a static peer is kept forever) and the new connection
    // carries a tensor from the implementation.
    let again = l.next("peer_connected");
    assert_eq!(again["direction"], "outbound", "{again}");
    let from = p.seen.iter().position(|v| *v == timeout).unwrap();
    p.wait(from, "our second HELLO", Duration::from_secs(20), |v| {
        v["event"] == "hello" && v["conn"] != conn
    });
    p.knows(&l.node);
    let sent = p.send_to(MIB + 3, 9, MIB, &l.node);
    let done = l.wait_for("stream_complete", |v| {
        v["event"] == "stream_complete" && v["sha256"] == sent["sha256"]
    });
    assert_eq!(done["addr"], again["addr"], "{done}");
    println!(
        "python_peer: the idle connection was closed by the implementation {}s after our \
         HELLO ({}); we reconnected",
        timeout["t"].as_f64().unwrap() - hello["t"].as_f64().unwrap(),
        timeout["error"]
    );
}

/// It never learns the node id of a peer it dialed: a v1 ACCEPT carries
/// none, and it files the connection under `temp_HOST:PORT`, so
/// `get_peer_ids()` leaves us out while we know its id from its HELLO. A
/// peer that dials it is known by id. Its `stream_tensor`, asked for our
/// node id, falls back to "any connection", and the tensor still reaches us.
#[test]
fn python_never_learns_the_node_id_of_a_peer_it_dialed() {
    let Some(py) = python("python_peer::python_never_learns_the_node_id_of_a_peer_it_dialed")
    else {
        return;
    };
    let key = keygen();
    let mut l = Listener::start(&key, "tokio", &["--allow-v1"]);
    let mut p = Py::start(&py, &key, &["--static-peer", &l.addr]);
    p.wait(0, "its first dial", Duration::from_secs(30), |v| {
        v["event"] == "dialed" && v["ok"] == true
    });
    let c = l.event("peer_connected");
    assert_eq!(c["peer"], p.node.as_str(), "we learn its id: {c}");
    assert_eq!(c["direction"], "inbound", "{c}");
    let peers = p.peers();
    assert_eq!(peers["ids"], serde_json::json!([]), "{peers}");
    assert_eq!(
        peers["keys"],
        serde_json::json!([format!("temp_{}", l.addr)]),
        "{peers}"
    );
    // A second node of ours dials it: that one it knows by id.
    let mut d = Listener::start(&key, "mio", &["--allow-v1", "--peer-v1", &p.addr()]);
    let dc = d.event("peer_connected");
    assert_eq!(
        dc["peer"],
        Value::Null,
        "a v1 ACCEPT carries no node id: {dc}"
    );
    p.wait(0, "its HELLO", Duration::from_secs(20), |v| {
        v["event"] == "hello" && v["node"] == d.node.as_str()
    });
    let peers = p.knows(&d.node);
    assert_eq!(peers["ids"], serde_json::json!([d.node.clone()]), "{peers}");
    // Addressed to our first node's id, which it does not know, the
    // tensor still reaches that node: it is the first connection.
    let sent = p.send_to(MIB + 1, 11, MIB, &l.node);
    let done = l.wait_for("stream_complete", |v| {
        v["event"] == "stream_complete" && v["sha256"] == sent["sha256"]
    });
    assert_eq!(done["peer"], p.node.as_str());
    assert!(d.seen("stream_complete").is_empty(), "{:?}", d.seen_all());
}

/// It sends DATA frames as large as its chunk size (`stream_tensor(...,
/// chunk_size=N)`), and reads frames of any length up to the wire maximum.
/// Our default limit is 16 MiB: a 16 MiB frame arrives, a 32 MiB frame is a
/// protocol error that closes the connection, and nothing of its stream is
/// delivered; `asoc listen --max-frame 64MiB` takes 32 MiB frames. The other
/// way, `asoc send --chunk-size 16MiB` (its largest) is read by it.
#[test]
fn python_sends_frames_as_large_as_its_chunk_size() {
    let Some(py) = python("python_peer::python_sends_frames_as_large_as_its_chunk_size") else {
        return;
    };
    let key = keygen();
    let mut l = Listener::start(&key, "tokio", &["--allow-v1"]);
    let mut raised = Listener::start(&key, "tokio", &["--allow-v1", "--max-frame", "64MiB"]);
    let mut p = Py::start(&py, &key, &["--static-peer", &l.addr]);
    let mut q = Py::start(&py, &key, &["--static-peer", &raised.addr]);
    for n in [&mut p, &mut q] {
        n.wait(0, "its first dial", Duration::from_secs(30), |v| {
            v["event"] == "dialed" && v["ok"] == true
        });
    }
    let _turn = big_turn(BIG_FROM);

    // At the limit: one 16 MiB frame and a shorter one.
    let at = p.send(20 * MIB, 21, 16 * MIB);
    let done = l.wait_for("stream_complete", |v| {
        v["event"] == "stream_complete" && v["sha256"] == at["sha256"]
    });
    assert_eq!(done["frames"], 2, "{done}");

    // Above it: the first 32 MiB frame header is a protocol error.
    let over = p.try_send(40 * MIB, 22, 32 * MIB);
    let err = l.wait_for("protocol_error", |v| v["event"] == "protocol_error");
    assert!(
        err["reason"]
            .as_str()
            .unwrap()
            .contains(&(32 * MIB).to_string()),
        "{err}"
    );
    let gone = l.wait_for("peer_disconnected", |v| v["event"] == "peer_disconnected");
    assert_eq!(gone["addr"], err["addr"], "{gone}");
    assert!(
        !l.seen_all()
            .iter()
            .any(|v| v["event"] == "stream_complete" && v["bytes"] == 40 * MIB as u64),
        "{:?}",
        l.seen_all()
    );

    // Raised limit: the same 32 MiB frames arrive whole.
    let big = q.send(40 * MIB, 22, 32 * MIB);
    let done = raised.wait_for("stream_complete", |v| {
        v["event"] == "stream_complete" && v["sha256"] == big["sha256"]
    });
    assert_eq!(done["frames"], 2, "{done}");
    assert_eq!(done["bytes"], 40 * MIB as u64, "{done}");

    // The other way: it reads our largest frames (`asoc send` chunks at
    // most 16 MiB; it enforces only the wire maximum).
    let data = pattern(40 * MIB, 23);
    let digest = sha256(&data);
    let from = p.mark();
    let lines = send_stdin(&key, "tokio", &p.addr(), &["--chunk-size", "16MiB"], &data);
    assert_eq!(stream_sent(&lines)["sha256"], digest.as_str());
    let got = p.wait(from, "the 16 MiB frames", Duration::from_secs(60), |v| {
        v["event"] == "stream" && v["sha256"] == digest.as_str()
    });
    assert_eq!(got["max_frame"], 16 * MIB as u64, "{got}");
    assert_eq!(got["frames"], 3, "{got}");
    println!(
        "python_peer: 32 MiB frames: our default limit closes the connection ({}; its send: \
         {}); with --max-frame 64MiB they arrive whole",
        err["reason"], over["event"]
    );
}

// ---- the conformance suite against it ----------------------------------------------

/// `conformance/expectations/asoc-python.txt`.
fn expectations() -> PathBuf {
    repo("conformance/expectations/asoc-python.txt")
}

/// The case ids the expectations file lists.
fn listed_deviations() -> Vec<String> {
    std::fs::read_to_string(expectations())
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// `asoc conformance --wire v1 ARGS --expectations asoc-python.txt
/// --format json`: its exit code and the report's cases.
fn suite(key: &str, name: &str, args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let dir = common::temp_dir(&format!("python-suite-{name}"));
    let report = dir.join("report.json");
    let out = with_key(key)
        .args(["conformance", "--wire", "v1"])
        .args(args)
        .arg("--expectations")
        .arg(expectations())
        .args(["--format", "json", "--output"])
        .arg(&report)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); exit {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            common::stdout(&out),
            common::stderr(&out)
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    let v: Value = serde_json::from_str(&text).unwrap();
    (out.status.code(), v.as_array().unwrap().clone())
}

/// The ids `asoc conformance --wire v1 --list MODE` selects.
fn suite_ids(mode: &str) -> Vec<String> {
    let out = with_key("unused")
        .args(["conformance", "--wire", "v1", "--list", mode])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    common::stdout(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Every case either passed, was informational, skipped or unsupported (the
/// suite says why), or is a deviation the expectations file lists; and
/// every listed case of this mode was reported as a deviation.
fn judge(mode: &str, cases: &[Value]) {
    let ids = suite_ids(mode);
    let got: Vec<&str> = cases.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids, "every {mode}-mode case is reported");
    let describe = |c: &Value| {
        format!(
            "{} {}: expected {} / actual {}",
            c["id"], c["outcome"], c["expected"], c["actual"]
        )
    };
    let unexpected: Vec<String> = cases
        .iter()
        .filter(|c| {
            let fine = matches!(
                c["outcome"].as_str(),
                Some("pass" | "info" | "skip" | "unsupported")
            );
            !fine && c["known_deviation"].is_null()
        })
        .map(describe)
        .collect();
    assert!(
        unexpected.is_empty(),
        "{mode} mode, not in asoc-python.txt:\n{}",
        unexpected.join("\n")
    );
    let listed = listed_deviations();
    let stale: Vec<String> = cases
        .iter()
        .filter(|c| listed.iter().any(|l| c["id"] == l.as_str()) && c["known_deviation"].is_null())
        .map(describe)
        .collect();
    assert!(
        stale.is_empty(),
        "{mode} mode, listed in asoc-python.txt but not a deviation:\n{}",
        stale.join("\n")
    );
    let deviations = cases
        .iter()
        .filter(|c| !c["known_deviation"].is_null())
        .count();
    println!(
        "python_peer: conformance {mode} mode against the Python implementation: {} cases, {} \
         passed, {deviations} listed deviations",
        cases.len(),
        cases.iter().filter(|c| c["outcome"] == "pass").count()
    );
}

/// `asoc conformance server` against its `NodeReady` on 127.0.0.1,
/// discovery off. It enforces no frame limit but the wire's (so
/// `--max-payload 4294967295`) and no connection cap (`--max-connections
/// 100`, the RFC's example, exposes that); its timers are the RFC's
/// defaults, which the suite assumes. About 2.5 min: the handshake and
/// idle timeouts are waited out.
#[test]
fn conformance_server_mode_against_python() {
    let Some(py) = python("python_peer::conformance_server_mode_against_python") else {
        return;
    };
    let key = keygen();
    let mut p = Py::start(&py, &key, &[]);
    let target = p.addr();
    let (code, cases) = suite(
        &key,
        "server",
        &[
            "server",
            "--target",
            &target,
            "--max-payload",
            "4294967295",
            "--max-connections",
            "100",
        ],
    );
    judge("server", &cases);
    assert_eq!(code, Some(0));
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the Python node exited"
    );
    // Every entry of the file is a case of one of the two modes.
    let all: Vec<String> = [suite_ids("server"), suite_ids("client")].concat();
    for id in listed_deviations() {
        assert!(
            all.contains(&id),
            "asoc-python.txt lists {id}, no such case"
        );
    }
}

/// `asoc conformance client --exec` of `suite_client.py`, which runs the
/// implementation's own static-peer dial and `stream_tensor` against the
/// suite's address.
#[test]
fn conformance_client_mode_against_python() {
    let Some(py) = python("python_peer::conformance_client_mode_against_python") else {
        return;
    };
    let key = keygen();
    let exec = format!(
        "ASOC_PYTHON_DIR='{}' PYTHONDONTWRITEBYTECODE=1 '{py}' '{}'",
        implementation().display(),
        script("suite_client.py").display()
    );
    let (code, cases) = suite(&key, "client", &["client", "--exec", &exec]);
    judge("client", &cases);
    assert_eq!(code, Some(0));
}

// ---- discovery both ways, in namespaces ----------------------------------------------

/// Two network namespaces joined by a veth pair, created and removed by the
/// test: `asoc-py-<pid>-1` (10.78.0.1/24, our node) and `asoc-py-<pid>-2`
/// (10.78.0.2/24, the Python node). Each routes only its /24 and the limited
/// broadcast address, so the implementation's broadcasts stay inside.
struct Lab {
    names: Vec<String>,
}

impl Lab {
    fn create() -> Result<Self, String> {
        can_make_namespaces()?;
        let base = format!("asoc-py-{}", std::process::id());
        let mut lab = Self { names: Vec::new() };
        for i in 1..=2 {
            let ns = format!("{base}-{i}");
            ip(&["netns", "add", &ns])?;
            lab.names.push(ns);
        }
        let (a, b) = (lab.names[0].clone(), lab.names[1].clone());
        ip(&[
            "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b,
        ])?;
        for (i, ns) in [&a, &b].into_iter().enumerate() {
            let addr = format!("{}/24", Self::addr(i + 1));
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                "255.255.255.255/32",
                "dev",
                "eth0",
            ])?;
        }
        Ok(lab)
    }

    fn addr(i: usize) -> String {
        format!("10.78.0.{i}")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.names.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("python_peer: cleanup: {e}");
            }
        }
    }
}

/// Our node (`asoc listen --allow-v1 --discovery --echo`) and the Python
/// node (its discovery on, no static peers: its default) in two
/// namespaces: each finds the other by broadcast, they connect, and a
/// tensor from the implementation crosses the resulting connection and is
/// echoed back over it, verified by SHA-256 on both sides.
#[test]
fn discovery_both_ways_in_namespaces_then_a_tensor_each_way() {
    let Some(py) = python("python_peer::discovery_both_ways_in_namespaces_then_a_tensor_each_way")
    else {
        return;
    };
    let lab = match Lab::create() {
        Ok(lab) => lab,
        Err(why) => {
            if std::env::var_os("ASOC_REQUIRE_NETNS").is_some_and(|v| v == "1") {
                panic!("network namespaces unavailable: {why}");
            }
            println!(
                "SKIPPED python_peer::discovery_both_ways_in_namespaces_then_a_tensor_each_way: \
                 network namespaces are unavailable here: {why} (set ASOC_REQUIRE_NETNS=1 to \
                 make this a failure)"
            );
            return;
        }
    };
    let names = lab.names.clone();
    discovery_run(&py, &lab);
    drop(lab);
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    for n in names {
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&n)),
            "namespace {n} left behind"
        );
    }
}

fn discovery_run(py: &str, lab: &Lab) {
    const COMMUNITY: &str = "asoc-python-netns";
    let key = keygen();
    let mut ours = Command::new("ip");
    ours.args(["netns", "exec", &lab.names[0], env!("CARGO_BIN_EXE_asoc")]);
    for var in ["ASOC_MASTER_KEY", "ASOC_COMMUNITY"] {
        ours.env_remove(var);
    }
    ours.env("ASOC_API_KEY", &key)
        .args([
            "listen",
            "--json",
            "--allow-v1",
            "--echo",
            "--bind",
            "0.0.0.0:9000",
            "--discovery",
            "--discovery-bind",
            "0.0.0.0:9999",
            "--community",
            COMMUNITY,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut l = Listener::spawn(ours);
    let theirs = Py::command(
        py,
        &key,
        &["ip", "netns", "exec", &lab.names[1]],
        &[
            "--discovery",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--community",
            COMMUNITY,
        ],
    );
    let mut p = Py::spawn(theirs);
    let (ours_at, theirs_at) = (
        format!("{}:9000", Lab::addr(1)),
        format!("{}:9000", Lab::addr(2)),
    );

    // We discover it: its announcement's source address and port.
    let found = l.wait_for("peer_discovered", |v| {
        v["event"] == "peer_discovered" && v["peer"] == p.node.as_str()
    });
    assert_eq!(found["addr"], theirs_at.as_str(), "{found}");
    assert_eq!(found["version"], 1, "{found}");
    // It discovers us (our v1 announcement), polled a bounded number of times.
    let mut discovered = Value::Null;
    for _ in 0..20 {
        let from = p.mark();
        p.cmd("discovered");
        discovered = p.wait(from, "discovered", Duration::from_secs(10), |v| {
            v["event"] == "discovered"
        });
        if discovered["peers"][l.node.as_str()] == ours_at.as_str() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(
        discovered["peers"][l.node.as_str()],
        ours_at.as_str(),
        "{discovered}"
    );
    // The connection that results (whoever dialed), authenticated with its
    // node id.
    let c = l.wait_for("peer_connected", |v| {
        v["event"] == "peer_connected" && v["peer"] == p.node.as_str()
    });
    assert!(
        c["addr"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", Lab::addr(2))),
        "{c}"
    );
    // A tensor from it to us over that connection, echoed back over it;
    // first it must have filed the connection (it does so after writing
    // its ACCEPT when we dialed).
    if c["direction"] == "outbound" {
        p.knows(&l.node);
    }
    let from = p.mark();
    let sent = p.send(2 * MIB + 5, 41, 256 * 1024);
    let digest = sent["sha256"].as_str().unwrap().to_string();
    let done = l.wait_for("stream_complete", |v| {
        v["event"] == "stream_complete" && v["sha256"] == digest.as_str()
    });
    assert_eq!(done["peer"], p.node.as_str(), "{done}");
    assert_eq!(done["bytes"], 2 * MIB as u64 + 5, "{done}");
    let echoed = p.wait(from, "the echo", Duration::from_secs(30), |v| {
        v["event"] == "stream" && v["sha256"] == digest.as_str()
    });
    assert_eq!(echoed["bytes"], 2 * MIB as u64 + 5, "{echoed}");
    assert!(
        echoed["addr"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", Lab::addr(1))),
        "{echoed}"
    );
    assert_eq!(p.quit(), Some(0));
    println!(
        "python_peer: discovery both ways in namespaces: we found {} at {}, it found us at {}; \
         a 2 MiB tensor crossed the {} connection and came back",
        found["peer"], found["addr"], ours_at, c["direction"]
    );
}
