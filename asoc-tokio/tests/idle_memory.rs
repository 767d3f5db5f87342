//! Issue 6, target 7: what idle authenticated connections cost in process
//! memory. Both ends of every connection live in this process, so each
//! connection is counted twice over (client and server socket, task,
//! protocol state and handles). Ignored in the default run because it
//! opens 20,000 sockets; run it alone:
//!
//! ```sh
//! cargo test --release -p asoc-tokio --test idle_memory -- --ignored --nocapture
//! ```
//!
//! `ASOC_IDLE_CONNECTIONS=N` changes the count (default 10,000). The
//! file-descriptor limit is raised in-process (the hard limit too, which
//! needs root or CAP_SYS_RESOURCE when it is below 2 N + 256).

use std::alloc::System;
use std::net::SocketAddr;
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
             the limit failed ({e}): run it as root, raise `ulimit -n`, or set \
             ASOC_IDLE_CONNECTIONS lower"
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
        assert!(Instant::now() < deadline, "server side never reached {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
#[ignore = "opens 20,000 sockets; run it alone with the command in the file's header"]
fn ten_thousand_idle_connections_fit_in_16_kib_each() {
    let n: usize = std::env::var("ASOC_IDLE_CONNECTIONS")
        .ok()
        .map(|v| v.parse().expect("ASOC_IDLE_CONNECTIONS is a count"))
        .unwrap_or(10_000);
    const WARM: usize = 256;
    raise_fd_limit(2 * (n + WARM) as u64 + 256);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Several destination addresses, so that ephemeral ports (and
        // TIME_WAIT left by earlier runs) never run short.
        let mut targets = Vec::new();
        let server_kept = Arc::new(Mutex::new(Vec::with_capacity(n + WARM)));
        let established = Arc::new(AtomicUsize::new(0));
        let server_auth = authenticator(2, 3);
        for host in 1..=4u8 {
            let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, host], 0)))
                .await
                .unwrap();
            targets.push(listener.local_addr().unwrap());
            serve(
                listener,
                server_auth.clone(),
                server_kept.clone(),
                established.clone(),
            );
        }
        let client_auth = authenticator(1, 4);
        let mut client_kept = Vec::with_capacity(n + WARM);

        // Warm-up: the runtime's worker threads, timer wheel, I/O slabs and
        // the allocator's arenas are in use before measuring.
        open(WARM, &targets, &client_auth, &mut client_kept).await;
        wait_for(&established, WARM).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (rss0, heap0) = (rss(), heap_live());

        open(n, &targets, &client_auth, &mut client_kept).await;
        wait_for(&established, WARM + n).await;
        // Let every task settle into its idle wait.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss1, heap1) = (rss(), heap_live());

        let per = |d: i64| d as f64 / n as f64;
        let (rss_per, heap_per) = (per(rss1 - rss0), per(heap1 - heap0));
        println!(
            "{n} idle authenticated connections, both ends in this process: \
             RSS +{:.1} MiB = {rss_per:.0} bytes per connection ({:.0} per end); \
             heap +{:.1} MiB = {heap_per:.0} bytes per connection ({:.0} per end)",
            (rss1 - rss0) as f64 / 1048576.0,
            rss_per / 2.0,
            (heap1 - heap0) as f64 / 1048576.0,
            heap_per / 2.0,
        );
        assert_eq!(client_kept.len(), n + WARM);
        assert!(client_kept.iter().all(|c| c.close_reason().is_none()));
        assert!(
            rss_per <= 16.0 * 1024.0,
            "{rss_per:.0} bytes of RSS per idle connection (both ends), over 16 KiB"
        );
    });
}
