//! Runs the real `asoc` binary: commands, a listening node whose JSON
//! events are followed line by line, and loopback ports.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The runtimes the command supports.
pub(crate) const RUNTIMES: [&str; 4] = ["tokio", "smol", "async-std", "mio"];

/// `asoc` with no ASoc variables inherited from the environment.
pub(crate) fn asoc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_asoc"));
    for var in ["ASOC_API_KEY", "ASOC_MASTER_KEY", "ASOC_COMMUNITY"] {
        c.env_remove(var);
    }
    c
}

/// `asoc` with `ASOC_API_KEY` set to `key`.
pub(crate) fn with_key(key: &str) -> Command {
    let mut c = asoc();
    c.env("ASOC_API_KEY", key);
    c
}

/// `asoc send --runtime runtime --peer peer` with `ASOC_API_KEY` set to
/// `key`; the caller adds the other options and the inputs.
pub(crate) fn send(key: &str, runtime: &str, peer: &str) -> Command {
    let mut c = with_key(key);
    c.args(["send", "--runtime", runtime, "--peer", peer]);
    c
}

/// A fresh key from `asoc keygen`.
pub(crate) fn keygen() -> String {
    let out = asoc().arg("keygen").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

/// Standard error as text.
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Standard output as text.
pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a failure with `code` and exactly one stderr line containing
/// `needle`.
pub(crate) fn assert_fails(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(err.starts_with("asoc: "), "{err:?}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_udp() -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().to_string()
}

/// Sends a signal to a child with the shell's built-in kill.
pub(crate) fn signal(child: &Child, sig: &str) {
    let ok = Command::new("sh")
        .args([
            "-c",
            "kill -s \"$1\" \"$2\"",
            "sh",
            sig,
            &child.id().to_string(),
        ])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// `asoc listen --json ...` with its events followed.
pub(crate) struct Listener {
    pub child: Child,
    events: Receiver<Value>,
    seen: Vec<Value>,
    /// `tcp` of the listening event.
    pub addr: String,
    /// `node` of the listening event.
    pub node: String,
    /// The listening event.
    pub listening: Value,
}

impl Listener {
    /// Starts `asoc listen --json --bind 127.0.0.1:0 --runtime RT ARGS` with
    /// `key` and waits for its `listening` event.
    pub(crate) fn start(key: &str, runtime: &str, args: &[&str]) -> Self {
        let mut cmd = with_key(key);
        cmd.args([
            "listen",
            "--json",
            "--bind",
            "127.0.0.1:0",
            "--runtime",
            runtime,
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        Self::spawn(cmd)
    }

    /// Runs a prepared command and waits for `listening`.
    pub(crate) fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not one JSON object per line: {line:?}: {e}"));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let mut l = Self {
            child,
            events: rx,
            seen: Vec::new(),
            addr: String::new(),
            node: String::new(),
            listening: Value::Null,
        };
        let first = l
            .events
            .recv_timeout(Duration::from_secs(20))
            .expect("no listening event");
        assert_eq!(first["event"], "listening", "{first}");
        l.addr = first["tcp"].as_str().unwrap().to_string();
        l.node = first["node"].as_str().unwrap().to_string();
        l.listening = first;
        l
    }

    /// The first event (seen before or arriving within 20 s) matching `pred`.
    pub(crate) fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!("no {what} event; saw {:?}", self.seen),
            }
        }
    }

    /// The next event named `name` that arrives from now on (within 20 s).
    pub(crate) fn next(&mut self, name: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["event"] == name {
                        return v;
                    }
                }
                Err(_) => panic!("no new {name} event; saw {:?}", self.seen),
            }
        }
    }

    /// Every event seen so far, in order.
    pub(crate) fn seen_all(&self) -> &[Value] {
        &self.seen
    }

    /// The first event named `name`.
    pub(crate) fn event(&mut self, name: &str) -> Value {
        self.wait_for(name, |v| v["event"] == name)
    }

    /// Events named `name` seen so far (after waiting for others).
    pub(crate) fn seen(&self, name: &str) -> Vec<Value> {
        self.seen
            .iter()
            .filter(|v| v["event"] == name)
            .cloned()
            .collect()
    }

    /// Sends `sig` and waits for the exit (at most 20 s).
    pub(crate) fn stop(mut self, sig: &str) -> ExitStatus {
        signal(&self.child, sig);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "listener did not exit after SIG{sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic bytes: the testkit's chunk 0 of stream `seed`.
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    asoc_testkit::scenarios::chunk(seed, 0, len)
}

/// SHA-256 hex of `data`.
pub(crate) fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Files in `dir` (names), sorted.
pub(crate) fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A fresh empty directory under the target dir.
pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("asoc-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `ip ARGS`, failing with its standard error.
pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process may create network namespaces (root and `ip`), or
/// why not.
pub(crate) fn can_make_namespaces() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot tell the user id: {e}"))?;
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("?");
    if uid != "0" {
        return Err(format!("needs root (running as uid {uid})"));
    }
    ip(&["-V"])
}
