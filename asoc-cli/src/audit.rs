//! `asoc listen --audit-log PATH`: every security event as one JSON object
//! per line, with the time, this node's id and the peer's id and address.
//!
//! The events are those `--json` prints (the mapping is
//! [`events::to_json`]'s), filtered to the security decisions. The node's
//! event loop only queues them: a writer thread appends them, `O_APPEND`,
//! flushing after each, so a slow or full disk never stalls the data path.
//! When the queue is full an event is counted, never lost silently: the
//! writer reports the count as an `audit_dropped` line as soon as it has
//! room. SIGHUP makes the writer reopen the path, for logrotate. No line
//! holds key material: the events carry key ids at most.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use asoc_proto::node::NodeEvent;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::{CliError, CliResult};
use crate::events;

/// The `--json` events that are security decisions. Names containing
/// `rotation` (key rotation steps) are audited too.
const AUDITED: [&str; 10] = [
    "peer_connected",
    "auth_failed",
    "auth_failed_aggregated",
    "throttled",
    "protocol_error",
    "peer_moved",
    "identity_conflict",
    "dialing_back",
    "dial_gave_up",
    "discovery_dropped",
];

/// Discovery drops worth an audit line: forged, replayed, reflected or
/// downgraded announcements (not stray traffic of other communities).
const AUDITED_DROPS: [&str; 6] = [
    "bad_mac",
    "replayed",
    "own_node",
    "v1_disabled",
    "stale",
    "future_dated",
];

/// Whether `name` is an audited event.
pub(crate) fn audited(name: &str) -> bool {
    AUDITED.contains(&name) || name.contains("rotation")
}

/// How long the writer waits for an event before it looks at the drop
/// count and the reopen flag again.
const POLL: Duration = Duration::from_millis(200);

/// What the queue carries.
enum Entry {
    Line(Value),
    /// Answered once every line queued before it is written.
    Flush(SyncSender<()>),
}

/// The audit log's queue; cloned into whoever reports events.
#[derive(Clone)]
pub(crate) struct Audit {
    tx: SyncSender<Entry>,
    dropped: Arc<AtomicU64>,
}

/// Set by SIGHUP: the writer reopens the path.
pub(crate) type Reopen = Arc<AtomicBool>;

impl Audit {
    /// Opens `path` (created with mode 0600, appended to) and starts the
    /// writer, with room for `capacity` queued events. The handle the
    /// thread needs to stop is the last `Audit` clone dropping.
    pub(crate) fn open(
        path: &Path,
        capacity: usize,
        node: Uuid,
        reopen: Reopen,
    ) -> CliResult<(Self, std::thread::JoinHandle<()>)> {
        let file = open(path).map_err(|e| {
            CliError::usage(format!("cannot open --audit-log {}: {e}", path.display()))
        })?;
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            path: path.to_path_buf(),
            file,
            node,
            dropped: dropped.clone(),
            reported: 0,
            reopen,
        };
        writer.write(json!({"event": "audit_started", "path": path.display().to_string()}));
        let thread = std::thread::Builder::new()
            .name("asoc-audit".into())
            .spawn(move || loop {
                let next = rx.recv_timeout(POLL);
                writer.maintain();
                match next {
                    Ok(Entry::Line(v)) => writer.write(v),
                    Ok(Entry::Flush(done)) => {
                        let _ = done.try_send(());
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        writer.maintain();
                        return;
                    }
                }
            })
            .map_err(|e| CliError::runtime(format!("cannot start the audit thread: {e}")))?;
        Ok((Self { tx, dropped }, thread))
    }

    /// Queues the audited lines of `e`; never blocks.
    pub(crate) fn event(&self, e: &NodeEvent) {
        let lines = match e {
            NodeEvent::DatagramDropped { src, reason } => {
                if !AUDITED_DROPS.contains(&reason.as_str()) {
                    return;
                }
                vec![
                    json!({"event": "discovery_dropped", "addr": src.to_string(),
                            "reason": reason.as_str()}),
                ]
            }
            other => events::to_json(other),
        };
        for line in lines {
            let name = line["event"].as_str().unwrap_or_default();
            if audited(name) {
                self.line(line);
            }
        }
    }

    /// Queues one line; a full queue counts it as dropped.
    pub(crate) fn line(&self, v: Value) {
        match self.tx.try_send(Entry::Line(v)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer ended with the process.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits (at most `wait`) until the lines queued so far are written:
    /// at shutdown, so that the last events are not lost with the process.
    pub(crate) fn flush(&self, wait: Duration) {
        let deadline = std::time::Instant::now() + wait;
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let mut entry = Entry::Flush(done_tx);
        loop {
            match self.tx.try_send(entry) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                    entry = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let _ = done_rx.recv_timeout(left);
    }

    /// Events dropped so far because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

struct Writer {
    path: PathBuf,
    file: File,
    node: Uuid,
    dropped: Arc<AtomicU64>,
    /// Drops already written as `audit_dropped`.
    reported: u64,
    reopen: Reopen,
}

impl Writer {
    /// Reopens on request, then reports new drops.
    fn maintain(&mut self) {
        if self.reopen.swap(false, Ordering::AcqRel) {
            match open(&self.path) {
                Ok(f) => {
                    self.file = f;
                    self.write(json!({"event": "audit_reopened",
                                      "path": self.path.display().to_string()}));
                }
                Err(e) => crate::output::warn(format_args!(
                    "asoc: cannot reopen --audit-log {}: {e} (still writing to the old file)",
                    self.path.display()
                )),
            }
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.reported {
            let count = dropped - self.reported;
            self.reported = dropped;
            self.write(json!({"event": "audit_dropped", "count": count, "total": dropped}));
        }
    }

    /// Appends `v` with the time and this node's id, flushed.
    fn write(&mut self, mut v: Value) {
        let unix_ms = asoc_async::unix_ms();
        if let Some(o) = v.as_object_mut() {
            o.insert("time".into(), json!(rfc3339(unix_ms)));
            o.insert("unix_ms".into(), json!(unix_ms));
            o.insert("node".into(), json!(self.node.to_string()));
        }
        let mut line = v.to_string();
        line.push('\n');
        // One write per line: O_APPEND keeps lines whole even when another
        // process appends to the same file.
        if let Err(e) = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
        {
            crate::output::warn(format_args!(
                "asoc: cannot write --audit-log {}: {e}",
                self.path.display()
            ));
        }
    }
}

/// `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_083_200_000), "2026-12-01T00:00:00.000Z");
    }

    #[test]
    fn security_events_are_selected_by_name() {
        for name in [
            "auth_failed",
            "throttled",
            "identity_conflict",
            "key_rotation_switched",
        ] {
            assert!(audited(name), "{name}");
        }
        for name in ["stream_complete", "peer_discovered", "listening"] {
            assert!(!audited(name), "{name}");
        }
    }

    /// A full queue counts what it drops, and the writer reports the count
    /// as an `audit_dropped` line once it runs again.
    #[test]
    fn overflow_is_counted_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (tx, rx) = mpsc::sync_channel(2);
        let audit = Audit {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        // No writer yet: the queue fills and the rest are dropped.
        for n in 0..5 {
            audit.line(json!({"event": "auth_failed", "n": n}));
        }
        assert_eq!(audit.dropped(), 3);
        let mut writer = Writer {
            path: path.clone(),
            file: open(&path).unwrap(),
            node: Uuid::nil(),
            dropped: audit.dropped.clone(),
            reported: 0,
            reopen: Arc::new(AtomicBool::new(false)),
        };
        while let Ok(Entry::Line(v)) = rx.try_recv() {
            writer.maintain();
            writer.write(v);
        }
        writer.maintain();
        let lines: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let names: Vec<&str> = lines.iter().map(|v| v["event"].as_str().unwrap()).collect();
        assert_eq!(names, ["audit_dropped", "auth_failed", "auth_failed"]);
        assert_eq!(lines[0]["count"], 3);
        assert_eq!(lines[1]["n"], 0);
        assert_eq!(lines[2]["n"], 1);
        // Reported once, not again.
        writer.maintain();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    }
}
