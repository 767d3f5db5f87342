// A test binary of its own: it measures the whole process's memory and
// file descriptors, and runs a copy of itself as the server side.
//! The idle-connection memory budget: what idle authenticated connections cost in process
//! memory. This process holds the client ends of 10,000 connections and a
//! copy of itself, started as a child, the server ends: each process then
//! needs only 10,000 descriptors (a common hard limit is 20,000, too few
//! for both ends in one), and each side's cost is measured on its own.
//! Both are reported per connection, with their sum. Ignored in the default
//! run because it opens 20,000 sockets; run it alone:
//!
//! ```sh
//! cargo test --release -p asoc-tokio --test idle_memory -- --ignored --nocapture
//! ```
//!
//! `ASOC_IDLE_CONNECTIONS=N` changes the count (default 10,000). The
//! soft file-descriptor limit is raised in-process.

use std::alloc::System;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asoc_tokio::asoc_proto::auth::{ApiKey, KeyRing};
use asoc_tokio::asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
use asoc_tokio::{Connection, DriverConfig, SharedAuthenticator};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes currently allocated by the whole process.
fn heap_live() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64
}

/// Resident set size, from /proc/self/status.
fn rss() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

fn raise_fd_limit(needed: u64) {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
    if soft >= needed {
        return;
    }
    let hard = hard.max(needed);
    rlimit::setrlimit(rlimit::Resource::NOFILE, needed, hard).unwrap_or_else(|e| {
        panic!(
            "this benchmark needs {needed} file descriptors (soft limit {soft}); raising \
             the limit failed ({e}): raise `ulimit -Hn` or set ASOC_IDLE_CONNECTIONS lower"
        )
    });
}

fn authenticator(node: u8, seed: u8) -> SharedAuthenticator {
    let key = ApiKey::new("idle-memory-key-0123456789abcdef").unwrap();
    let config = AuthenticatorConfig::new(uuid::Uuid::from_bytes([node; 16]), KeyRing::new(key));
    Arc::new(Mutex::new(Authenticator::new(config, [seed; 32])))
}

/// Accepts and authenticates every connection to `listener`, keeping the
/// handles in `kept`.
fn serve(
    listener: TcpListener,
    auth: SharedAuthenticator,
    kept: Arc<Mutex<Vec<Connection>>>,
    established: Arc<AtomicUsize>,
) {
    tokio::spawn(async move {
        loop {
            let Ok((io, _)) = listener.accept().await else {
                continue;
            };
            let (auth, kept, established) = (auth.clone(), kept.clone(), established.clone());
            tokio::spawn(async move {
                let conn = asoc_tokio::accept(io, &auth, DriverConfig::default())
                    .await
                    .expect("server handshake");
                kept.lock().unwrap().push(conn);
                established.fetch_add(1, Ordering::Release);
            });
        }
    });
}

/// Opens `n` connections spread over `targets`, 256 handshakes at a time.
async fn open(
    n: usize,
    targets: &[SocketAddr],
    auth: &SharedAuthenticator,
    kept: &mut Vec<Connection>,
) {
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(256);
        let mut tasks = tokio::task::JoinSet::new();
        for i in done..done + batch {
            let (addr, auth) = (targets[i % targets.len()], auth.clone());
            tasks.spawn(async move {
                let io = TcpStream::connect(addr).await.expect("connect");
                asoc_tokio::connect(io, &auth, DriverConfig::default())
                    .await
                    .expect("client handshake")
            });
        }
        while let Some(conn) = tasks.join_next().await {
            kept.push(conn.expect("connect task"));
        }
        done += batch;
    }
}

async fn wait_for(established: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while established.load(Ordering::Acquire) < n {
        assert!(
            Instant::now() < deadline,
            "server side never reached {n} (at {})",
            established.load(Ordering::Acquire)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Connections opened and dropped from measurement first, so that the
/// runtime's worker threads, timer wheel, I/O slabs and the allocator's
/// arenas are in use before measuring.
const WARM: usize = 256;
const TEST: &str = "ten_thousand_idle_connections_fit_in_16_kib_each";
const ROLE: &str = "ASOC_IDLE_ROLE";

fn count() -> usize {
    std::env::var("ASOC_IDLE_CONNECTIONS")
        .ok()
        .map(|v| v.parse().expect("ASOC_IDLE_CONNECTIONS is a count"))
        .unwrap_or(10_000)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// What one side's `n` connections added: RSS and heap, bytes.
#[derive(Clone, Copy, Debug)]
struct Cost {
    rss: i64,
    heap: i64,
}

impl Cost {
    fn between(before: (i64, i64), after: (i64, i64)) -> Self {
        Self {
            rss: after.0 - before.0,
            heap: after.1 - before.1,
        }
    }
}

fn snapshot() -> (i64, i64) {
    (rss(), heap_live())
}

/// The child: the server ends. Talks to the parent in `IDLE ...` lines on
/// standard output and exits when its standard input closes.
fn server_side(n: usize) {
    raise_fd_limit((n + WARM) as u64 + 256);
    let rt = runtime();
    rt.block_on(async {
        let mut targets = Vec::new();
        let kept = Arc::new(Mutex::new(Vec::with_capacity(n + WARM)));
        let established = Arc::new(AtomicUsize::new(0));
        let auth = authenticator(2, 3);
        // Several destination addresses, so that ephemeral ports (and
        // TIME_WAIT left by earlier runs) never run short.
        for host in 1..=4u8 {
            let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, host], 0)))
                .await
                .unwrap();
            targets.push(listener.local_addr().unwrap().to_string());
            serve(listener, auth.clone(), kept.clone(), established.clone());
        }
        println!("IDLE listening {}", targets.join(" "));
        wait_for(&established, WARM).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = snapshot();
        println!("IDLE warm");
        wait_for(&established, WARM + n).await;
        // Let every task settle into its idle wait.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cost = Cost::between(before, snapshot());
        let open = kept
            .lock()
            .unwrap()
            .iter()
            .filter(|c: &&Connection| c.close_reason().is_none())
            .count();
        println!("IDLE cost {} {} {open}", cost.rss, cost.heap);
    });
    // Hold every connection until the parent is done.
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
}

/// Reads the child's next `IDLE` line.
fn next_line(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> String {
    lines
        .filter_map(Result::ok)
        // libtest may print the test's name on the same line first.
        .find_map(|l| l.split_once("IDLE ").map(|(_, rest)| rest.to_owned()))
        .expect("the server process ended early")
}

#[test]
#[ignore = "opens 20,000 sockets; run it alone with the command in the file's header"]
fn ten_thousand_idle_connections_fit_in_16_kib_each() {
    let n = count();
    if std::env::var_os(ROLE).is_some() {
        return server_side(n);
    }
    raise_fd_limit((n + WARM) as u64 + 256);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--ignored", "--nocapture"])
        .env(ROLE, "server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server process");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let targets: Vec<SocketAddr> = next_line(&mut lines)
        .strip_prefix("listening ")
        .expect("listening line")
        .split(' ')
        .map(|a| a.parse().unwrap())
        .collect();

    let rt = runtime();
    let (client, server, kept) = rt.block_on(async {
        let auth = authenticator(1, 4);
        let mut kept = Vec::with_capacity(n + WARM);
        open(WARM, &targets, &auth, &mut kept).await;
        assert_eq!(next_line(&mut lines), "warm");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = snapshot();
        open(n, &targets, &auth, &mut kept).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let client = Cost::between(before, snapshot());
        let line = next_line(&mut lines);
        let mut f = line
            .strip_prefix("cost ")
            .expect("cost line")
            .split(' ')
            .map(|v| v.parse::<i64>().unwrap());
        let server = Cost {
            rss: f.next().unwrap(),
            heap: f.next().unwrap(),
        };
        let server_open = f.next().unwrap() as usize;
        assert_eq!(server_open, n + WARM, "server connections still open");
        (client, server, kept)
    });
    assert_eq!(kept.len(), n + WARM);
    assert!(kept.iter().all(|c| c.close_reason().is_none()));
    drop(child.stdin.take());
    let _ = child.wait();

    let per = |d: i64| d as f64 / n as f64;
    for (side, c) in [("client", client), ("server", server)] {
        println!(
            "{n} idle authenticated connections, {side} ends (one process): \
             RSS +{:.1} MiB = {:.0} B per connection; heap +{:.1} MiB = {:.0} B per connection",
            c.rss as f64 / 1048576.0,
            per(c.rss),
            c.heap as f64 / 1048576.0,
            per(c.heap),
        );
    }
    let both = per(client.rss + server.rss);
    println!(
        "both ends: {both:.0} B of RSS per connection ({:.0} B of heap)",
        per(client.heap + server.heap)
    );
    assert!(
        both <= 16.0 * 1024.0,
        "{both:.0} bytes of RSS per idle connection (both ends), over 16 KiB"
    );
}
