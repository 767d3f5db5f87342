//! `asoc conformance` against our own binaries and the Python shim.
//!
//! - Live server mode against `asoc listen --echo --json --handshake-timeout
//!   1s --stall-timeout 1s --max-connections 32` with discovery on
//!   loopback, for tokio, smol, async-std and mio. The default run leaves
//!   out the slowest cases ([`SLOW`]: three discovery cases that wait out
//!   announce intervals and rate windows, ~20 s together per runtime, the
//!   30 s receive idle timeout, the 15 s discovered-peer expiry and the
//!   reconnect backoff and give-up, which wait out the default schedule);
//!   the `*_full` test, run with `--ignored`, runs every case.
//! - Live client mode against `conformance/shims/asoc_client.py` (skipped
//!   with a message when `python3` is absent) and against `asoc send` on
//!   each runtime through `conformance/shims/asoc-send.sh`.
//!
//! Every run writes a JSON report and the tests judge it case by case, not
//! only the exit code.

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use common::{free_udp, keygen, stderr, stdout, with_key, Listener, RUNTIMES};

const COMMUNITY: &str = "conformance-cli";

/// The slow cases the default server-mode run leaves out: three discovery
/// cases that wait out announce intervals and rate windows; the receive
/// idle timeout, which `asoc listen` keeps at its 30 s default; the
/// discovered-peer expiry (15 s and a re-dial watch); the second retry
/// (up to 15 s) and the give-up (up to 15 s, then a 61 s watch past the
/// 60 s backoff cap) of the default reconnect schedule.
const SLOW: [&str; 7] = [
    "R1-4.3/2",
    "R1-4.4/3",
    "R1-10.4/7",
    "R1-9.3/6",
    "R1-4.4/8",
    "R1-9.4/3",
    "R1-9.4/4",
];

/// The connection cap `asoc listen` runs with, and the suite is told: small
/// enough for R1-10.4/9 to reach, above what any other case holds at once.
const MAX_CONNECTIONS: &str = "32";

fn repo_file(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

fn report_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("asoc-cli-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.json"))
}

/// `asoc conformance --wire v1 ARGS --format json --output REPORT`: the
/// output and the report's cases, for the v1 cases (WIRE.md).
fn conformance(key: &str, name: &str, args: &[&str]) -> (Output, Vec<Value>) {
    conformance_on("v1", key, name, args)
}

/// [`conformance`] for the cases of `wire`.
fn conformance_on(wire: &str, key: &str, name: &str, args: &[&str]) -> (Output, Vec<Value>) {
    let report = report_path(name);
    let _ = std::fs::remove_file(&report);
    let out = with_key(key)
        .arg("conformance")
        .args(["--wire", wire])
        .args(args)
        .args(["--format", "json", "--output"])
        .arg(&report)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); exit {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            stdout(&out),
            stderr(&out)
        )
    });
    let _ = std::fs::remove_file(&report);
    let v: Value = serde_json::from_str(&text).unwrap();
    (out, v.as_array().unwrap().clone())
}

/// The ids `asoc conformance --wire WIRE --list MODE SELECTION…` selects.
fn listed_on(wire: &str, args: &[&str]) -> Vec<String> {
    let out = with_key("unused")
        .arg("conformance")
        .args(["--wire", wire])
        .args(args)
        .arg("--list")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// Lines that say what went wrong, for assertion messages.
fn describe(cases: &[Value]) -> String {
    cases
        .iter()
        .map(|c| {
            format!(
                "{} {}: expected {} / actual {}",
                c["id"], c["outcome"], c["expected"], c["actual"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn outcome<'a>(cases: &'a [Value], id: &str) -> &'a Value {
    let c = cases
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in the report"));
    &c["outcome"]
}

/// Runs server mode against `asoc listen` on `runtime` and requires every
/// selected case to have run and to pass (or be informational, or be a
/// deviation listed in `conformance/expectations/asoc-listen.txt`).
fn server_mode(runtime: &str, full: bool) {
    server_mode_on("v1", runtime, full);
}

/// [`server_mode`] for the cases of `wire`: v1 runs `asoc listen
/// --allow-v1` (and tells the suite so); v2 runs it as it comes, and the
/// v2 cases that cannot observe their rule from outside are skipped.
fn server_mode_on(wire: &str, runtime: &str, full: bool) {
    let key = keygen();
    let announce = free_udp();
    // A second destination: the v2 rule that every destination of one
    // round gets the same bytes needs two.
    let copies = free_udp();
    let v1: &[&str] = if wire == "v1" { &["--allow-v1"] } else { &[] };
    let mut l = Listener::start(
        &key,
        runtime,
        &[
            v1,
            &[
                "--echo",
                "--handshake-timeout",
                "1s",
                "--stall-timeout",
                "1s",
                "--max-connections",
                MAX_CONNECTIONS,
                "--discovery",
                "--discovery-bind",
                "127.0.0.1:0",
                "--announce-to",
                &announce,
                "--announce-to",
                &copies,
                "--community",
                COMMUNITY,
            ],
        ]
        .concat(),
    );
    let udp = l.listening["udp"].as_str().unwrap().to_string();
    let (target, node) = (l.addr.clone(), l.node.clone());
    let expectations = repo_file("conformance/expectations/asoc-listen.txt");
    let mut args = vec![
        "server",
        "--target",
        &target,
        "--udp-target",
        &udp,
        "--node-id",
        &node,
        "--announce-listen",
        &announce,
        "--announce-listen",
        &copies,
        "--community",
        COMMUNITY,
        "--echo",
        "--handshake-timeout",
        "1",
        "--stall-timeout",
        "1",
        "--max-connections",
        MAX_CONNECTIONS,
        "--expectations",
        &expectations,
    ];
    args.extend_from_slice(v1);
    if !full {
        for id in SLOW {
            args.extend(["--exclude", id]);
        }
    }
    let (out, cases) = conformance_on(
        wire,
        &key,
        &format!("server-{wire}-{runtime}-{full}"),
        &args,
    );
    // The listener is still alive after the whole suite.
    assert!(l.child.try_wait().unwrap().is_none(), "asoc listen exited");

    let mut want = listed_on(wire, &["server"]);
    if !full {
        want.retain(|id| !SLOW.contains(&id.as_str()));
    }
    let got: Vec<String> = cases
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want, "every selected server-mode case is reported");
    // With discovery and echo on, nothing may be skipped or unsupported
    // (on v2, only the cases whose rule is not observable from outside or
    // needs another set-up skip, each saying why).
    let bad: Vec<Value> = cases
        .iter()
        .filter(|c| {
            let ok = match c["outcome"].as_str() {
                Some("pass" | "info") => true,
                Some("skip") => wire == "v2",
                _ => false,
            };
            !ok && c["known_deviation"].is_null()
        })
        .cloned()
        .collect();
    assert!(bad.is_empty(), "{runtime}:\n{}", describe(&bad));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{runtime}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let summary = if wire == "v1" {
        " passed, 0 failed, 0 skipped"
    } else {
        " passed, 0 failed, "
    };
    assert!(stdout(&out).contains(summary), "{}", stdout(&out));
}

#[test]
fn server_mode_tokio() {
    server_mode("tokio", false);
}

#[test]
fn server_mode_smol() {
    server_mode("smol", false);
}

#[test]
fn server_mode_async_std() {
    server_mode("async-std", false);
}

#[test]
fn server_mode_mio() {
    server_mode("mio", false);
}

#[test]
fn server_mode_v2_tokio() {
    server_mode_on("v2", "tokio", false);
}

#[test]
fn server_mode_v2_smol() {
    server_mode_on("v2", "smol", false);
}

#[test]
fn server_mode_v2_async_std() {
    server_mode_on("v2", "async-std", false);
}

#[test]
fn server_mode_v2_mio() {
    server_mode_on("v2", "mio", false);
}

#[test]
#[ignore = "slow: every case, including the discovery cases that wait out announce intervals"]
fn server_mode_full_all_runtimes() {
    for rt in RUNTIMES {
        server_mode(rt, true);
    }
}

fn python3() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: python3 not found; client mode against the Python shim not run");
    }
    ok
}

fn shim() -> String {
    format!(
        "python3 '{}'",
        repo_file("conformance/shims/asoc_client.py")
    )
}

/// Requires every client-mode case to pass except those in `unsupported`,
/// which must be reported `unsupported`.
fn all_pass_except(cases: &[Value], unsupported: &[&str]) {
    all_pass_except_on("v1", cases, unsupported);
}

fn all_pass_except_on(wire: &str, cases: &[Value], unsupported: &[&str]) {
    assert_eq!(
        cases.len(),
        listed_on(wire, &["client"]).len(),
        "every client-mode case is reported"
    );
    let bad: Vec<Value> = cases
        .iter()
        .filter(|c| {
            let id = c["id"].as_str().unwrap();
            let want = if unsupported.contains(&id) {
                "unsupported"
            } else {
                "pass"
            };
            c["outcome"] != want
        })
        .cloned()
        .collect();
    assert!(bad.is_empty(), "\n{}", describe(&bad));
}

#[test]
fn client_mode_python_shim() {
    if !python3() {
        return;
    }
    let key = keygen();
    let (out, cases) = conformance(&key, "client-python", &["client", "--exec", &shim()]);
    // R1-6.3/5 needs echo, which client mode is not told the client has.
    all_pass_except(&cases, &["R1-6.3/5"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn client_mode_exit_89_is_unsupported_and_a_bad_client_fails() {
    if !python3() {
        return;
    }
    let key = keygen();
    // Told that the client echoes, R1-6.3/5 runs; the shim answers 89.
    let (out, cases) = conformance(
        &key,
        "client-89",
        &["client", "--echo", "--exec", &shim(), "R1-6.3/5"],
    );
    assert_eq!(outcome(&cases, "R1-6.3/5"), "unsupported");
    assert!(
        cases[0]["actual"].as_str().unwrap().contains("exit 89"),
        "{}",
        describe(&cases)
    );
    assert_eq!(out.status.code(), Some(0));

    // The same shim with another key: its HELLO does not verify.
    let wrong = format!("ASOC_API_KEY=not-the-suites-key-0123456789 {}", shim());
    let (out, cases) = conformance(
        &key,
        "client-wrong-key",
        &["client", "--exec", &wrong, "R1-5.2/3"],
    );
    assert_eq!(outcome(&cases, "R1-5.2/3"), "fail", "{}", describe(&cases));
    assert_eq!(out.status.code(), Some(1));

    // The shim does everything right on the wire, then the program exits 1:
    // the exit status is judged where the suite played a valid server.
    let exits_1 = format!("{}; exit 1", shim());
    let (out, cases) = conformance(
        &key,
        "client-exit-1",
        &["client", "--exec", &exits_1, "R1-5.4/2"],
    );
    assert_eq!(outcome(&cases, "R1-5.4/2"), "fail", "{}", describe(&cases));
    assert!(
        cases[0]["actual"]
            .as_str()
            .unwrap()
            .contains("exit status: 1"),
        "{}",
        describe(&cases)
    );
    assert_eq!(out.status.code(), Some(1));
}

/// `asoc send` on `runtime` through `conformance/shims/asoc-send.sh`.
fn client_mode_asoc_send(runtime: &str) {
    client_mode_asoc_send_on("v1", runtime);
}

fn client_mode_asoc_send_on(wire: &str, runtime: &str) {
    let key = keygen();
    let exec = format!(
        "ASOC_BIN='{}' ASOC_RUNTIME={runtime} sh '{}'",
        env!("CARGO_BIN_EXE_asoc"),
        repo_file("conformance/shims/asoc-send.sh")
    );
    let (out, cases) = conformance_on(
        wire,
        &key,
        &format!("client-send-{wire}-{runtime}"),
        &["client", "--exec", &exec],
    );
    // What the wrapper answers 89 for: `asoc send` closes right after its
    // stream and never echoes.
    let unsupported: &[&str] = if wire == "v1" {
        &[
            "R1-6.3/5",
            "R1-8.1/3",
            "R1-8.1/4",
            "R1-9.2/14",
            "R1-9.2/15",
            "R1-9.2/16",
            "R1-10.4/8",
        ]
    } else {
        &["R3-4/15", "R3-4/16", "R3-4/17"]
    };
    all_pass_except_on(wire, &cases, unsupported);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn client_mode_asoc_send_tokio() {
    client_mode_asoc_send("tokio");
}

#[test]
fn client_mode_asoc_send_smol() {
    client_mode_asoc_send("smol");
}

#[test]
fn client_mode_asoc_send_async_std() {
    client_mode_asoc_send("async-std");
}

#[test]
fn client_mode_asoc_send_mio() {
    client_mode_asoc_send("mio");
}

#[test]
fn client_mode_v2_asoc_send_tokio() {
    client_mode_asoc_send_on("v2", "tokio");
}

#[test]
fn client_mode_v2_asoc_send_mio() {
    client_mode_asoc_send_on("v2", "mio");
}

#[test]
fn usage_errors_and_an_unreachable_target_exit_2() {
    let out = with_key("unused")
        .args(["conformance", "server", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("asoc conformance: unknown option `--bogus`"),
        "{}",
        stderr(&out)
    );
    // Nothing listens on port 1.
    let out = with_key("0123456789abcdef0123456789abcdef")
        .args(["conformance", "server", "--target", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = with_key("unused")
        .args(["conformance", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("asoc conformance client --exec"));
    assert!(stdout(&out).contains("--wire v1|v2"));
}
