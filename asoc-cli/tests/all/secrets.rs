//! Attacks on the key and on the dials: key files swapped, linked or shared,
//! weak keys, the key left in the environment, dials to a blackholed
//! address, and a TLS listener dialing in cleartext.

use crate::common;

use std::io::Read as _;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn private_file(dir: &std::path::Path, name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// `asoc send --api-key-file FILE -` to a closed port: exit 2 with
/// `needle` when the key file is refused.
fn send_with_key_file(file: &std::path::Path) -> std::process::Output {
    asoc()
        .args(["send", "--peer", "127.0.0.1:9", "--api-key-file"])
        .arg(file)
        .arg("-")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn attack_key_file_symlink_fifo_directory_and_shared_file_are_refused() {
    let dir = temp_dir("keyfile-attacks");
    let key = keygen();
    let good = private_file(&dir, "good", key.as_bytes(), 0o600);
    let link = dir.join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    assert_fails(&send_with_key_file(&link), 2, "symbolic link");
    let shared = private_file(&dir, "shared", key.as_bytes(), 0o644);
    assert_fails(
        &send_with_key_file(&shared),
        2,
        "accessible by group or others",
    );
    let fifo = dir.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The open must not block waiting for a writer.
    assert_fails(&send_with_key_file(&fifo), 2, "FIFO");
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_fails(&send_with_key_file(&sub), 2, "directory");
    // The same key from the file itself gets past the key checks (and then
    // fails to reach the closed port: exit 1).
    let out = send_with_key_file(&good);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // `asoc conformance` reads its key file the same way.
    let out = asoc()
        .args([
            "conformance",
            "server",
            "--target",
            "127.0.0.1:9",
            "--api-key-file",
        ])
        .arg(&link)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    let out = asoc()
        .args([
            "conformance",
            "server",
            "--target",
            "127.0.0.1:9",
            "--api-key-file",
        ])
        .arg(&shared)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("accessible by group or others"));
}

#[test]
fn attack_weak_keys_are_refused_unless_weak_key_is_given() {
    for weak in ["aaaaaaaaaaaaaaaa", "password00000000", "passwordpassword"] {
        let out = with_key(weak)
            .args(["send", "--peer", "127.0.0.1:9", "-"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_fails(&out, 2, "below 128");
        assert!(stderr(&out).contains("--weak-key"));
        let out = with_key(weak)
            .args(["listen", "--bind", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_fails(&out, 2, "below 128");
        // The explicit development escape: a warning, then on to the
        // (closed) port.
        let out = with_key(weak)
            .args(["send", "--weak-key", "--peer", "127.0.0.1:9", "-"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).starts_with("asoc: warning: --weak-key"),
            "{}",
            stderr(&out)
        );
    }
    let out = asoc()
        .env("ASOC_MASTER_KEY", "master-secret-key")
        .args(["derive-key", "--cluster", "c"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "below 128");
    // A key from `asoc keygen` passes without a word.
    let out = with_key(&keygen())
        .args(["send", "--peer", "127.0.0.1:9", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

/// What is true of `/proc/<pid>/environ` once the key is taken: it shows
/// the process's initial environment block, which removing a variable
/// does not change, so `asoc` overwrites the value there with zero bytes.
/// The name stays, followed by an empty value; the key's bytes are gone.
#[test]
fn attack_the_key_is_gone_from_proc_environ_of_a_running_listener() {
    let key = keygen();
    let listener = Listener::start(&key, "tokio", &[]);
    let environ = std::fs::read(format!("/proc/{}/environ", listener.child.id())).unwrap();
    assert!(
        !environ.windows(key.len()).any(|w| w == key.as_bytes()),
        "the key is still in /proc/PID/environ"
    );
    let entries: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(
        entries.iter().any(|e| *e == b"ASOC_API_KEY="),
        "the emptied entry is where the key was"
    );
    assert_eq!(listener.stop("TERM").code(), Some(0));
}

/// The only children `asoc` starts are `asoc conformance client`'s client
/// programs: they get the key under test as ASOC_API_KEY (their contract)
/// and nothing else secret.
#[test]
fn attack_no_secret_is_inherited_by_a_conformance_client_program() {
    let key = keygen();
    let dir = temp_dir("child-env");
    let dump = dir.join("env");
    let exec = format!("env > {}; exit 89", dump.display());
    let out = with_key(&key)
        .env("ASOC_MASTER_KEY", keygen())
        .args(["conformance", "client", "--exec", &exec, "R3-4/15"])
        .output()
        .unwrap();
    assert!(out.status.code().is_some(), "{}", stderr(&out));
    let env = std::fs::read_to_string(&dump).unwrap();
    assert!(!env.contains("ASOC_MASTER_KEY"), "{env}");
    assert!(
        env.lines().any(|l| l == format!("ASOC_API_KEY={key}")),
        "{env}"
    );
}

#[test]
fn attack_send_to_a_blackholed_address_fails_at_the_handshake_timeout_on_every_runtime() {
    let (_listener, _filler, addr) = asoc_testkit::scenarios::dials::blackhole();
    let key = keygen();
    for runtime in RUNTIMES {
        let mut child = send(&key, runtime, &addr.to_string())
            .args(["--handshake-timeout", "1s", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Without the bound the kernel would retry SYNs for about two
        // minutes; give up on the process long before that.
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("{runtime}: asoc send to a blackholed address still connecting after 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(1), "{runtime}: {err}");
        assert!(
            err.contains("TCP connect timed out after 1s"),
            "{runtime}: {err}"
        );
    }
}

/// A self-signed certificate for 127.0.0.1 in a directory of its own.
fn self_signed(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(&format!("dialtls-{name}"));
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k)
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn attack_a_tls_listener_that_dials_refuses_to_start_without_a_way_to_verify() {
    let key = keygen();
    let (cert, tls_key) = self_signed("refuse");
    let tls = ["--tls-cert", path(&cert), "--tls-key", path(&tls_key)];
    let out = with_key(&key)
        .args(["listen", "--bind", "127.0.0.1:0", "--peer", "127.0.0.1:9"])
        .args(tls)
        .output()
        .unwrap();
    assert_fails(&out, 2, "--tls-ca FILE or --tls-pin FILE");
    let out = with_key(&key)
        .args([
            "listen",
            "--bind",
            "127.0.0.1:0",
            "--discovery",
            "--community",
            "c",
        ])
        .args(["--discovery-bind", "127.0.0.1:0"])
        .args(tls)
        .output()
        .unwrap();
    assert_fails(&out, 2, "--tls-ca FILE or --tls-pin FILE");
    // --dial-cleartext: starts, with a warning.
    let mut cmd = with_key(&key);
    cmd.args([
        "listen",
        "--json",
        "--bind",
        "127.0.0.1:0",
        "--peer",
        "127.0.0.1:9",
    ])
    .args(tls)
    .arg("--dial-cleartext")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut listener = Listener::spawn(cmd);
    let mut err = listener.child.stderr.take().unwrap();
    assert_eq!(listener.stop("TERM").code(), Some(0));
    let mut text = String::new();
    err.read_to_string(&mut text).unwrap();
    assert!(
        text.contains("warning: --dial-cleartext"),
        "no warning: {text:?}"
    );
}

/// What a TLS listener sends when it dials: captured by a plain TCP
/// listener standing in for the peer, the first bytes are a TLS
/// ClientHello record, never an ASoc HELLO.
#[test]
fn attack_a_tls_listeners_dial_sends_no_cleartext_hello() {
    let key = keygen();
    let (cert, tls_key) = self_signed("capture");
    let capture = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = capture.local_addr().unwrap().to_string();
    for runtime in RUNTIMES {
        let listener = Listener::start(
            &key,
            runtime,
            &[
                "--tls-cert",
                path(&cert),
                "--tls-key",
                path(&tls_key),
                "--tls-pin",
                path(&cert),
                "--peer",
                &target,
            ],
        );
        let (mut conn, _) = capture.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut head = [0u8; 6];
        conn.read_exact(&mut head).unwrap();
        // A TLS handshake record (22), version 3.x, whose first message is
        // a ClientHello (1).
        assert_eq!(head[0], 0x16, "{runtime}: not a TLS record: {head:02x?}");
        assert_eq!(head[1], 0x03, "{runtime}: {head:02x?}");
        assert_eq!(head[5], 0x01, "{runtime}: not a ClientHello: {head:02x?}");
        drop(conn);
        assert_eq!(listener.stop("TERM").code(), Some(0), "{runtime}");
    }
}

/// Two `asoc listen` processes, both with TLS: the one with `--peer`
/// dials the other inside TLS (the other accepts nothing else), and both
/// report the peer.
#[test]
fn a_tls_listeners_dial_to_a_tls_listener_completes_over_tls() {
    let key = keygen();
    let (cert_a, key_a) = self_signed("two-a");
    let (cert_b, key_b) = self_signed("two-b");
    let mut a = Listener::start(
        &key,
        "tokio",
        &["--tls-cert", path(&cert_a), "--tls-key", path(&key_a)],
    );
    let mut b = Listener::start(
        &key,
        "mio",
        &[
            "--tls-cert",
            path(&cert_b),
            "--tls-key",
            path(&key_b),
            "--tls-pin",
            path(&cert_a),
            "--peer",
            &a.addr.clone(),
        ],
    );
    let at_b = b.event("peer_connected");
    assert_eq!(at_b["direction"], "outbound", "{at_b}");
    assert_eq!(at_b["peer"], a.node, "{at_b}");
    let at_a = a.event("peer_connected");
    assert_eq!(at_a["direction"], "inbound", "{at_a}");
    assert_eq!(at_a["peer"], b.node, "{at_a}");
    assert!(a.seen("auth_failed").is_empty());
    assert_eq!(b.stop("TERM").code(), Some(0));
    assert_eq!(a.stop("TERM").code(), Some(0));
}
