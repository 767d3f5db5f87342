//! Runs the real `asoc` binary.

use std::process::Command;

fn asoc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_asoc"))
}

#[test]
fn demo_streams_and_verifies_a_tensor_over_loopback() {
    let out = asoc()
        .args(["demo", "--size-mib", "8", "--chunk-kib", "256"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verification: OK"), "{stdout}");
    assert!(
        stdout.contains("8388608 bytes in 32 DATA frames"),
        "{stdout}"
    );
    assert!(stdout.contains("= 80 B on the wire"), "{stdout}");
}

#[test]
fn keygen_prints_64_lower_hex_characters_and_a_newline_each_time_different() {
    let run = || {
        let out = asoc().arg("keygen").output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let (a, b) = (run(), run());
    for k in [&a, &b] {
        assert_eq!(k.len(), 65, "{k:?}");
        assert!(k.ends_with('\n'));
        assert!(k
            .trim_end()
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    }
    assert_ne!(a, b);
}

#[test]
fn bad_chunk_size_is_a_clear_error() {
    let out = asoc().args(["demo", "--chunk-kib", "0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--chunk-kib must be between"));
}
