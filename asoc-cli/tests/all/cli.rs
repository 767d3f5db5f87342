//! The command's conventions: --help everywhere, one-line errors with the
//! documented exit codes for every bad input, and the demo.

use crate::common;

use std::net::TcpListener;
use std::process::Stdio;

use common::*;

#[test]
fn every_command_has_help() {
    for cmd in [
        &[][..],
        &["keygen"],
        &["derive-key"],
        &["listen"],
        &["send"],
        &["discover"],
        &["demo"],
    ] {
        let out = asoc().args(cmd).arg("--help").output().unwrap();
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            stdout(&out).contains("Usage: asoc"),
            "{cmd:?}: {}",
            stdout(&out)
        );
    }
    let out = asoc().args(["listen", "--help"]).output().unwrap();
    for flag in [
        "--runtime",
        "--api-key-file",
        "--discovery-bind",
        "--announce-to",
        "--max-frame",
        "--stall-timeout",
        "--max-connections",
    ] {
        assert!(stdout(&out).contains(flag), "{flag}");
    }
}

#[test]
fn a_missing_or_weak_key_is_a_usage_error() {
    let out = asoc()
        .args(["listen", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "set ASOC_API_KEY or pass --api-key-file");
    let out = with_key("too-short")
        .args(["listen", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "at least 16 bytes");
    let out = with_key("")
        .args(["send", "--peer", "127.0.0.1:9", "-"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "empty");
}

#[test]
fn unreadable_files_are_usage_errors() {
    let key = keygen();
    let out = with_key(&key)
        .args(["send", "--peer", "127.0.0.1:9", "/nonexistent/tensor.bin"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "cannot read /nonexistent/tensor.bin");
    let out = asoc()
        .args([
            "send",
            "--peer",
            "127.0.0.1:9",
            "--api-key-file",
            "/nonexistent/key",
            "-",
        ])
        .output()
        .unwrap();
    assert_fails(&out, 2, "cannot read key file /nonexistent/key");
}

#[test]
fn bad_addresses_sizes_durations_and_runtimes_are_usage_errors() {
    let key = keygen();
    let cases: &[(&[&str], &str)] = &[
        (
            &["send", "--peer", "no-port-here", "-"],
            "expected HOST:PORT",
        ),
        (&["send", "--peer", "host:99999", "-"], "expected HOST:PORT"),
        (&["listen", "--peer", "nonsense"], "expected HOST:PORT"),
        (&["listen", "--bind", "300.1.1.1:9000"], "--bind"),
        (
            &["send", "--peer", "127.0.0.1:9", "--chunk-size", "1XB", "-"],
            "unknown size unit",
        ),
        (
            &[
                "send",
                "--peer",
                "127.0.0.1:9",
                "--chunk-size",
                "32MiB",
                "-",
            ],
            "--chunk-size",
        ),
        (&["listen", "--handshake-timeout", "soon"], "not a duration"),
        (&["listen", "--stall-timeout", "0s"], "--stall-timeout"),
        (
            &["listen", "--bind", "127.0.0.1:0", "--max-connections", "0"],
            "--max-connections",
        ),
        (&["listen", "--runtime", "glommio"], "glommio"),
        (
            &["listen", "--bind", "127.0.0.1:0", "--discovery"],
            "community",
        ),
        (&["discover", "--for", "1s"], "community"),
        (&["send", "-"], "--peer"),
        (&["listen", "--tls-cert", "x.pem"], "--tls-key"),
    ];
    for (args, needle) in cases {
        let out = with_key(&key).args(*args).output().unwrap();
        assert_fails(&out, 2, needle);
    }
}

#[test]
fn unreadable_tls_files_fail_alike_on_every_runtime() {
    for runtime in RUNTIMES {
        let cases: &[(&[&str], &str)] = &[
            (
                &[
                    "listen",
                    "--bind",
                    "127.0.0.1:0",
                    "--tls-cert",
                    "/nonexistent/c.pem",
                    "--tls-key",
                    "/nonexistent/k.pem",
                ],
                "/nonexistent/c.pem",
            ),
            (
                &[
                    "send",
                    "--peer",
                    "127.0.0.1:9",
                    "--tls-ca",
                    "/nonexistent/ca.pem",
                    "-",
                ],
                "/nonexistent/ca.pem",
            ),
        ];
        for (args, needle) in cases {
            let out = with_key(&keygen())
                .args(*args)
                .args(["--runtime", runtime])
                .output()
                .unwrap();
            assert_fails(&out, 2, needle);
        }
    }
}

#[test]
fn a_port_in_use_is_a_runtime_failure() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for runtime in RUNTIMES {
        let out = with_key(&keygen())
            .args(["listen", "--runtime", runtime, "--bind", &addr])
            .output()
            .unwrap();
        assert_fails(&out, 1, "address already in use");
    }
}

#[test]
fn an_unreachable_peer_is_a_runtime_failure() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    for runtime in RUNTIMES {
        let out = send(&keygen(), runtime, &addr)
            .arg("-")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_fails(&out, 1, "is `asoc listen` running");
    }
}

#[test]
fn demo_streams_and_verifies_a_tensor_on_every_runtime() {
    for runtime in RUNTIMES {
        let out = asoc()
            .args([
                "demo",
                "--size",
                "8MiB",
                "--chunk-size",
                "256KiB",
                "--runtime",
                runtime,
            ])
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(out.status.success(), "{runtime}: {text}\n{}", stderr(&out));
        assert!(text.contains(&format!("({runtime} runtime)")), "{text}");
        assert!(text.contains("verification: OK"), "{text}");
        assert!(text.contains("8388608 bytes in 32 DATA frames"), "{text}");
        assert!(
            text.contains("HELLO2 86 B + ACCEPT2 86 B + CONFIRM 30 B, Noise NNpsk0 with aesgcm"),
            "{text}"
        );
        assert!(text.contains("the receiver proved node id "), "{text}");
    }
}

#[test]
fn demo_rejects_a_bad_chunk_size() {
    let out = asoc().args(["demo", "--chunk-size", "0"]).output().unwrap();
    assert_fails(&out, 2, "--chunk-size must be between");
}
