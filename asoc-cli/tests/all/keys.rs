//! keygen, derive-key and where keys may come from.

use crate::common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::Value;

#[test]
fn keygen_prints_64_lower_hex_characters_and_a_newline_each_time_different() {
    let keys: Vec<String> = (0..3)
        .map(|_| {
            let out = asoc().arg("keygen").output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        })
        .collect();
    for k in &keys {
        assert_eq!(k.len(), 65, "{k:?}");
        assert!(k.ends_with('\n'));
        assert!(
            k[..64]
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{k:?}"
        );
    }
    assert_ne!(keys[0], keys[1]);
    assert_ne!(keys[1], keys[2]);
    // 96 random bytes: every hex digit value shows up somewhere.
    let all: String = keys.concat();
    assert!("0123456789abcdef".chars().all(|c| all.contains(c)));
}

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/asoc-v1.json"
    );
    let text = std::fs::read_to_string(path).expect("../shared/vectors/asoc-v1.json");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["pbkdf2_cluster_key"].as_array().unwrap().clone()
}

fn private_file(name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
    let dir = temp_dir(name);
    let path = dir.join("key");
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn derive_key_matches_the_vectors_from_the_environment_and_from_a_file() {
    let vectors = vectors();
    assert!(vectors.len() >= 2);
    let mut from_env = 0;
    for (i, v) in vectors.iter().enumerate() {
        let master = hex::decode(v["master_key"].as_str().unwrap()).unwrap();
        let cluster = v["cluster"].as_str().unwrap();
        let expected = format!("{}\n", v["key"].as_str().unwrap());
        // The master key as raw bytes in the environment (it need not be
        // UTF-8), when it can be there at all (no NUL byte).
        if !master.contains(&0) {
            // --weak-key: the vectors include a word-like master key
            // ("master-secret-key"), refused without it.
            let out = asoc()
                .env("ASOC_MASTER_KEY", std::ffi::OsStr::from_bytes(&master))
                .args(["derive-key", "--weak-key", "--cluster", cluster])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(stdout(&out), expected, "vector {i} from the environment");
            from_env += 1;
        }
        // The same bytes in a key file with a trailing newline.
        let mut content = master.clone();
        content.push(b'\n');
        let file = private_file(&format!("master{i}"), &content, 0o600);
        let out = asoc()
            .args(["derive-key", "--weak-key", "--cluster", cluster])
            .arg("--master-key-file")
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), expected, "vector {i} from a file");
    }
    assert!(
        from_env > 0,
        "at least one vector checked through the environment"
    );
}

#[test]
fn derive_key_needs_a_master_key_and_a_cluster() {
    let out = asoc()
        .args(["derive-key", "--cluster", "c"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "ASOC_MASTER_KEY");
    let out = asoc()
        .env("ASOC_MASTER_KEY", "short")
        .args(["derive-key", "--cluster", "c"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "at least 16 bytes");
    let out = asoc()
        .env("ASOC_MASTER_KEY", "x".repeat(32))
        .arg("derive-key")
        .output()
        .unwrap();
    assert_fails(&out, 2, "--cluster");
}

#[test]
fn a_key_file_readable_by_group_or_others_is_refused() {
    let key = keygen();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        let file = private_file(&format!("perm{mode:o}"), key.as_bytes(), mode);
        let out = asoc()
            .args(["send", "--peer", "127.0.0.1:9", "--api-key-file"])
            .arg(&file)
            .arg("-")
            .output()
            .unwrap();
        assert_fails(&out, 2, "accessible by group or others");
        assert!(stderr(&out).contains("chmod 600"));
    }
    let file = private_file("mastperm", key.as_bytes(), 0o644);
    let out = asoc()
        .args(["derive-key", "--cluster", "c", "--master-key-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_fails(&out, 2, "accessible by group or others");
}

#[test]
fn a_key_file_with_a_trailing_newline_authenticates_like_the_same_key_in_the_environment() {
    let key = keygen();
    let file = private_file("newline", format!("{key}\n").as_bytes(), 0o600);
    let mut listener = Listener::start(&key, "tokio", &[]);
    let input = temp_dir("newline-in").join("t.bin");
    std::fs::write(&input, pattern(1000, 1)).unwrap();
    let out = asoc()
        .args(["send", "--peer", &listener.addr, "--api-key-file"])
        .arg(&file)
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let done = listener.event("stream_complete");
    assert_eq!(done["sha256"], sha256(&pattern(1000, 1)));
}

#[test]
fn the_key_is_never_taken_from_the_command_line() {
    let out = asoc()
        .args([
            "send",
            "--peer",
            "127.0.0.1:9",
            "--api-key",
            "0123456789abcdef0123",
            "-",
        ])
        .output()
        .unwrap();
    assert_fails(&out, 2, "--api-key");
}
