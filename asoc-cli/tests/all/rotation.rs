//! Key rotation end to end with `asoc listen` processes on every runtime:
//! `asoc rotate-key` talks to one node's control socket, the rotation
//! floods a chain of three nodes, each switches and rewrites its key file,
//! no connection drops, a node that was down learns the key when it comes
//! back within the grace period, and after it a node still holding the old
//! key is refused as `retired_key`; the audit log records every step.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{asoc, keygen, stderr, stdout, temp_dir, Listener, RUNTIMES};

fn write_key(path: &Path, key: &str) {
    std::fs::write(path, format!("{key}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn listen(runtime: &str, key_file: &Path, args: &[&str]) -> Listener {
    let mut cmd = asoc();
    cmd.args([
        "listen",
        "--json",
        "--bind",
        "127.0.0.1:0",
        "--runtime",
        runtime,
    ])
    .arg("--api-key-file")
    .arg(key_file)
    .args(args)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::inherit());
    Listener::spawn(cmd)
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_three_node_chain_rotates_through_the_control_socket_on_every_runtime() {
    for runtime in RUNTIMES {
        let dir = temp_dir(&format!("rotation-{runtime}"));
        let (old, new) = (keygen(), keygen());
        let files: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| dir.join(format!("{n}.key")))
            .collect();
        for f in &files {
            write_key(f, &old);
        }
        let control = dir.join("ctl");
        let control_arg = control.to_str().unwrap();
        let audit = dir.join("audit.log");
        let mut a = listen(
            runtime,
            &files[0],
            &[
                "--control",
                control_arg,
                "--audit-log",
                audit.to_str().unwrap(),
            ],
        );
        a.event("control_listening");
        assert_eq!(mode(&control), 0o600, "{runtime}: the control socket");
        let mut b = listen(runtime, &files[1], &["--peer", &a.addr.clone()]);
        let mut c = listen(runtime, &files[2], &["--peer", &b.addr.clone()]);
        a.event("peer_connected");
        c.event("peer_connected");
        b.event("peer_connected");
        if b.seen("peer_connected").len() < 2 {
            b.next("peer_connected");
        }

        let new_file = dir.join("new.key");
        write_key(&new_file, &new);
        let out = asoc()
            .args(["rotate-key", "--json", "--control", control_arg])
            .arg("--new-key-file")
            .arg(&new_file)
            .args(["--activate-in", "1s", "--grace", "8s"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{runtime}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("\"rotation_started\""),
            "{}",
            stdout(&out)
        );
        assert!(!stdout(&out).contains(&new) && !stderr(&out).contains(&new));

        for (name, node, file) in [
            ("a", &mut a, &files[0]),
            ("b", &mut b, &files[1]),
            ("c", &mut c, &files[2]),
        ] {
            node.event("key_rotation_activated");
            node.event("rotation_key_file_rewritten");
            assert_eq!(
                std::fs::read_to_string(file).unwrap().trim_end(),
                new,
                "{runtime}: node {name}'s key file"
            );
            assert_eq!(mode(file), 0o600, "{runtime}: node {name}'s key file");
        }
        let learned = b.event("key_rotation_learned");
        assert_eq!(learned["epoch"], 1, "{learned}");
        assert_eq!(learned["peer"], a.node.as_str(), "{learned}");
        c.event("key_rotation_learned");
        let acked = a.event("key_rotation_acked");
        assert_eq!(acked["status"], "adopted", "{acked}");

        // A node that was down comes back within the grace period with the
        // old key: it gets in, learns the new key, switches at once (the
        // activation is past) and keeps it in its key file.
        let d_file = dir.join("d.key");
        write_key(&d_file, &old);
        let mut d = listen(runtime, &d_file, &["--peer", &a.addr.clone()]);
        d.event("peer_connected");
        d.event("key_rotation_learned");
        d.event("key_rotation_activated");
        d.event("rotation_key_file_rewritten");
        assert_eq!(
            std::fs::read_to_string(&d_file).unwrap().trim_end(),
            new,
            "{runtime}: the late node's key file"
        );

        // After the grace period the old key is refused, and why is said.
        a.event("key_rotation_old_key_purged");
        let old_file = dir.join("old.key");
        write_key(&old_file, &old);
        let _late = listen(runtime, &old_file, &["--peer", &a.addr.clone()]);
        let refused = a.wait_for("auth_failed retired_key", |v| {
            v["event"] == "auth_failed" && v["reason"] == "retired_key"
        });
        assert_eq!(refused["reason"], "retired_key", "{runtime}");

        // No connection of the chain dropped across the switch.
        for (name, node) in [("a", &a), ("b", &b), ("c", &c), ("d", &d)] {
            assert!(
                node.seen("peer_disconnected").is_empty(),
                "{runtime}: node {name}: {:?}",
                node.seen_all()
            );
            for e in node.seen_all() {
                let line = e.to_string();
                assert!(
                    !line.contains(&new) && !line.contains(&old),
                    "{runtime}: a key in {line}"
                );
            }
        }
        drop((b, c, d));
        assert!(a.stop("TERM").success());
        assert!(
            !control.exists(),
            "{runtime}: the socket is removed at exit"
        );
        // The audit log has every step the node took, and no key.
        let log = std::fs::read_to_string(&audit).unwrap();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for step in [
            "key_rotation_started",
            "key_rotation_sent",
            "key_rotation_acked",
            "key_rotation_activated",
            "key_rotation_old_key_purged",
        ] {
            assert!(
                lines.iter().any(|v| v["event"] == step),
                "{runtime}: no {step} in the audit log:\n{log}"
            );
        }
        assert!(
            lines
                .iter()
                .any(|v| v["event"] == "auth_failed" && v["reason"] == "retired_key"),
            "{runtime}: no retired_key refusal in the audit log:\n{log}"
        );
        assert!(
            !log.contains(&new) && !log.contains(&old),
            "{runtime}: a key in the audit log"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
