//! `asoc listen --peers-from`: static peers from DNS (through the hosts
//! file: `localhost`) and from a SLURM job's node list (expanded by the
//! listener, as where scontrol is not installed).

use crate::common;

use common::*;

#[test]
fn dns_records_become_static_peers_that_are_dialed() {
    let key = keygen();
    let mut target = Listener::start(&key, "tokio", &[]);
    let port = target.addr.rsplit_once(':').unwrap().1.to_string();
    let source = format!("dns:localhost:{port}");
    let mut dialer = Listener::start(
        &key,
        "mio",
        &["--peers-from", &source, "--peers-refresh", "1s"],
    );
    let resolved = dialer.event("peers_resolved");
    assert_eq!(resolved["source"], source.as_str(), "{resolved}");
    let added: Vec<&str> = resolved["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        added.contains(&target.addr.as_str()),
        "localhost's A record {} among {added:?}",
        target.addr
    );
    let connected = dialer.wait_for("outbound peer_connected", |v| {
        v["event"] == "peer_connected" && v["direction"] == "outbound"
    });
    assert_eq!(connected["addr"], target.addr.as_str(), "{connected}");
    assert_eq!(connected["peer"], target.node.as_str(), "{connected}");
    let inbound = target.event("peer_connected");
    assert_eq!(inbound["peer"], dialer.node.as_str(), "{inbound}");
    assert_eq!(dialer.stop("INT").code(), Some(0));
    assert_eq!(target.stop("INT").code(), Some(0));
}

#[test]
fn a_slurm_node_list_becomes_static_peers() {
    let key = keygen();
    let mut target = Listener::start(&key, "smol", &[]);
    let port = target.addr.rsplit_once(':').unwrap().1.to_string();
    let mut cmd = with_key(&key);
    cmd.env("SLURM_JOB_NODELIST", "localhost")
        // No scontrol: the listener expands the list itself.
        .env("PATH", "/nonexistent")
        .args([
            "listen",
            "--json",
            "--bind",
            "127.0.0.1:0",
            "--runtime",
            "tokio",
        ])
        .args(["--peers-from", &format!("slurm:{port}")])
        .stdout(std::process::Stdio::piped());
    let mut dialer = Listener::spawn(cmd);
    let connected = dialer.wait_for("outbound peer_connected", |v| {
        v["event"] == "peer_connected" && v["direction"] == "outbound"
    });
    assert_eq!(connected["peer"], target.node.as_str(), "{connected}");
    assert_eq!(target.event("peer_connected")["peer"], dialer.node.as_str());
    assert_eq!(dialer.stop("INT").code(), Some(0));
    assert_eq!(target.stop("INT").code(), Some(0));
}

#[test]
fn peers_from_refuses_what_it_cannot_use() {
    let key = keygen();
    let run = |env: Option<&str>, source: &str| {
        let mut c = with_key(&key);
        c.env_remove("SLURM_JOB_NODELIST")
            .env_remove("SLURM_NODELIST");
        if let Some(list) = env {
            c.env("SLURM_JOB_NODELIST", list)
                .env("PATH", "/nonexistent");
        }
        c.args(["listen", "--bind", "127.0.0.1:0", "--peers-from", source])
            .output()
            .unwrap()
    };
    assert_fails(&run(None, "slurm:9000"), 2, "SLURM_JOB_NODELIST is not set");
    assert_fails(&run(Some("n[1-"), "slurm:9000"), 2, "unbalanced brackets");
    assert_fails(&run(Some("n1"), "slurm"), 2, "--peers-from slurm:PORT");
    let out = run(None, "dns:nameonly");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("dns:NAME:PORT"), "{}", stderr(&out));
}
