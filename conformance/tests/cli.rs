//! The command line: exit codes, selection, formats and expectations,
//! against a server that accepts every HELLO without checking its MAC.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

use conformance::main_with_args;
use conformance::wire::accept_frame;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn sloppy_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut hello = [0u8; 50];
                if s.read_exact(&mut hello).is_ok() {
                    let _ = s.write_all(&accept_frame(KEY.as_bytes()));
                }
                let mut sink = [0u8; 4096];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

fn tmp(name: &str, contents: &str) -> String {
    let dir = std::env::temp_dir().join(format!("conformance-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p.to_string_lossy().into_owned()
}

fn run(args: &[&str]) -> i32 {
    main_with_args(args.iter().map(|s| (*s).to_string()))
}

#[test]
fn usage_errors_and_unreachable_targets_exit_2() {
    assert_eq!(run(&["server", "--bogus"]), 2);
    assert_eq!(run(&["server", "--format", "xml"]), 2);
    let key = tmp("key1", &format!("{KEY}\n"));
    // Nothing listens on port 1.
    assert_eq!(
        run(&["server", "--target", "127.0.0.1:1", "--api-key-file", &key]),
        2
    );
    assert_eq!(run(&["--list", "R1-9.1"]), 0);
}

#[test]
fn failures_exit_1_and_known_deviations_do_not() {
    let target = sloppy_server().to_string();
    let key = tmp("key2", KEY);
    let base = [
        "server",
        "--target",
        &target,
        "--api-key-file",
        &key,
        "--timeout",
        "0.5",
    ];
    let json = tmp("out.json", "");
    let mut a = base.to_vec();
    a.extend([
        "--format", "json", "--output", &json, "R1-9.1/1", "R1-5.2/1",
    ]);
    assert_eq!(run(&a), 1);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let cases = v.as_array().unwrap();
    assert_eq!(cases.len(), 2);
    let bad = cases.iter().find(|c| c["id"] == "R1-9.1/1").unwrap();
    assert_eq!(bad["outcome"], "fail");
    assert_eq!(bad["section"], "R1-9.1");
    assert!(bad["actual"].as_str().unwrap().contains("type 5"), "{bad}");

    let exp = tmp("expect.txt", "# sloppy\nR1-9.1/* no MAC check\n");
    let junit = tmp("out.xml", "");
    let mut b = base.to_vec();
    b.extend([
        "--expectations",
        &exp,
        "--format",
        "junit",
        "--output",
        &junit,
        "R1-9.1/1",
        "R1-5.2/1",
    ]);
    assert_eq!(run(&b), 0);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), 2);
    assert!(xml.contains("name=\"R1-9.1/1 "));
    assert!(xml.contains("known deviation: no MAC check"));

    // A SHOULD failure fails only under --strict.
    let mut c = base.to_vec();
    c.push("R1-9.2/8");
    assert_eq!(run(&c), 0);
    c.push("--strict");
    assert_eq!(run(&c), 1);
}
