//! `--state-dir DIR`: the replay memory kept across restarts.
//!
//! A node that restarts forgets which HELLOs and announcements it
//! accepted, and a v1 HELLO carries no timestamp: one recorded before the
//! restart would open the node again after it, and a recorded announcement
//! would be taken again inside its window. With a state directory the
//! listener loads the saved memory (`hello-replay.bin`, and with discovery
//! `discovery-replay.bin`) before it accepts anything, saves it again once
//! a second while it changes, and a last time at shutdown. A node killed
//! without a chance to shut down loses at most the last second's entries.
//!
//! The directory is created with mode 0700 when missing and refused when
//! it is a symlink, another user's, or group or others may access it; the
//! same holds for each file, which is opened without following symlinks. Files are written
//! to a randomly named temporary file (`O_EXCL`, mode 0600) in the same
//! directory, synced, then renamed over the old one, so a crash leaves
//! either the old state or the new one, never a torn file. They hold no
//! key material: challenges and ephemeral public keys travel in the clear.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use asoc_async::{Net, Node};
use asoc_proto::discovery::{DiscoveryConfig, DiscoveryReplayState};
use asoc_proto::persist::AuthReplayState;

use serde_json::json;

use crate::error::{CliError, CliResult};
use crate::output::Out;

use super::replace::replace_private;

/// The handshake replay memory's file in the state directory.
const AUTH_FILE: &str = "hello-replay.bin";

/// Discovery's replay memory's file in the state directory.
const DISCOVERY_FILE: &str = "discovery-replay.bin";

/// How often a changed memory is saved.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// A checked state directory.
#[derive(Clone, Debug)]
pub(crate) struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Creates `dir` (mode 0700) when missing; refuses a symlink, a
    /// non-directory, or one that group or others may access.
    pub(crate) fn open(dir: &Path) -> CliResult<Self> {
        let shown = dir.display();
        let refuse =
            |why: String| CliError::usage(format!("cannot use --state-dir {shown}: {why}"));
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_private_dir(dir).map_err(|e| refuse(e.to_string()))?;
            }
            Err(e) => return Err(refuse(e.to_string())),
            Ok(_) => {}
        }
        let meta = std::fs::symlink_metadata(dir).map_err(|e| refuse(e.to_string()))?;
        if meta.file_type().is_symlink() {
            return Err(refuse("it is a symlink".into()));
        }
        if !meta.is_dir() {
            return Err(refuse("not a directory".into()));
        }
        check_private_mode(&meta).map_err(|mode| {
            refuse(format!(
                "group or others may access it (mode {mode:03o}); run `chmod 700 {shown}`"
            ))
        })?;
        check_owner(&meta)
            .map_err(|owner| refuse(format!("owned by uid {owner}, not by this user")))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub(crate) fn auth_path(&self) -> PathBuf {
        self.dir.join(AUTH_FILE)
    }

    pub(crate) fn discovery_path(&self) -> PathBuf {
        self.dir.join(DISCOVERY_FILE)
    }

    /// The saved handshake replay memory, `None` when there is none yet.
    /// More than `max_entries` entries, a damaged file, or one that is not
    /// a private regular file is an error: starting without the memory
    /// would silently reopen the replay it exists to stop.
    pub(crate) fn load_auth(&self, max_entries: usize) -> CliResult<Option<AuthReplayState>> {
        let path = self.auth_path();
        // The largest state max_entries can make, so a huge file is refused
        // before it is read into memory.
        let limit = 16 + (max_entries as u64).saturating_mul(40);
        let Some(bytes) = read_private(&path, limit)? else {
            return Ok(None);
        };
        AuthReplayState::from_bytes(&bytes, max_entries)
            .map(Some)
            .map_err(|e| cannot_restore(&path, &e.to_string()))
    }

    /// The saved discovery replay memory, checked against `config`'s
    /// bounds, `None` when there is none yet.
    pub(crate) fn load_discovery(
        &self,
        config: &DiscoveryConfig,
    ) -> CliResult<Option<DiscoveryReplayState>> {
        let path = self.discovery_path();
        // Twice max_peers v2 timestamps of 24 bytes and the v1 pairs of 28,
        // with room for the header: far above any real state, far below
        // what would hurt.
        let limit = 64
            + (config.max_peers() as u64).saturating_mul(48)
            + (config.replay_capacity() as u64).saturating_mul(28);
        let Some(bytes) = read_private(&path, limit)? else {
            return Ok(None);
        };
        DiscoveryReplayState::from_bytes(&bytes, config)
            .map(Some)
            .map_err(|e| cannot_restore(&path, &e.to_string()))
    }

    /// Replaces `path` (a file of this directory) with `bytes`,
    /// atomically.
    fn save(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        replace_private(path, &[bytes])
    }
}

fn cannot_restore(path: &Path, why: &str) -> CliError {
    CliError::usage(format!(
        "cannot restore {}: {why}; move it away to start without the saved replay memory",
        path.display()
    ))
}

/// The whole of `path`, `None` when it does not exist; refused when it is
/// a symlink (not followed), not a regular file, accessible by group or
/// others, or longer than `limit`.
fn read_private(path: &Path, limit: u64) -> CliResult<Option<Vec<u8>>> {
    let refuse = |why: String| cannot_restore(path, &why);
    let mut file = match open_no_follow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refuse(e.to_string())),
    };
    let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    check_private_mode(&meta)
        .map_err(|mode| refuse(format!("group or others may access it (mode {mode:03o})")))?;
    check_owner(&meta)
        .map_err(|owner| refuse(format!("owned by uid {owner}, not by this user")))?;
    if meta.len() > limit {
        return Err(refuse(format!(
            "{} bytes is more than a state of this node's limits can take",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    Read::by_ref(&mut file)
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(e.to_string()))?;
    Ok(Some(bytes))
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(not(unix))]
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// `Err(mode)` when group or others have any access.
#[cfg(unix)]
fn check_private_mode(meta: &std::fs::Metadata) -> Result<(), u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        Ok(())
    } else {
        Err(mode)
    }
}

/// `Err(owner)` when the effective user does not own it: another user's
/// file could be swapped for one that forgets the replays.
#[cfg(unix)]
fn check_owner(meta: &std::fs::Metadata) -> Result<(), u32> {
    use std::os::unix::fs::MetadataExt;
    if meta.uid() == rustix::process::geteuid().as_raw() {
        Ok(())
    } else {
        Err(meta.uid())
    }
}

#[cfg(not(unix))]
fn check_owner(_meta: &std::fs::Metadata) -> Result<(), u32> {
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_meta: &std::fs::Metadata) -> Result<(), u32> {
    Ok(())
}

/// Saves a node's replay memory while it runs: on its own thread, so that
/// file writes never stall the node's event loop.
pub(crate) struct Saver {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Saver {
    /// Starts saving `node`'s memory into `dir` every second it changed.
    pub(crate) fn start<N: Net>(dir: StateDir, node: Node<N>, out: Out) -> Self {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut saved = Saved::default();
            loop {
                let done = match stopped.recv_timeout(SAVE_EVERY) {
                    Err(RecvTimeoutError::Timeout) => false,
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
                };
                saved.save_changes(&dir, &node, out);
                if done {
                    return;
                }
            }
        });
        Self { stop, thread }
    }

    /// Saves a last time and waits for the thread.
    pub(crate) fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// The counters that moved with each file's last successful save.
#[derive(Default)]
struct Saved {
    auth: Option<u64>,
    discovery: Option<u64>,
}

impl Saved {
    fn save_changes<N: Net>(&mut self, dir: &StateDir, node: &Node<N>, out: Out) {
        // Counters are read before the states: what is recorded in between
        // is saved now or on the next round, never skipped.
        let counters = node.counters();
        let recorded = counters.auth.replay_recorded;
        if self.auth != Some(recorded) {
            let bytes = node.auth_replay_state().to_bytes();
            if save_reported(dir, &dir.auth_path(), &bytes, out) {
                self.auth = Some(recorded);
            }
        }
        let accepted = counters.discovery.map(|d| d.accepted);
        if accepted.is_some() && self.discovery != accepted {
            if let Some(state) = node.discovery_replay_state() {
                if save_reported(dir, &dir.discovery_path(), &state.to_bytes(), out) {
                    self.discovery = accepted;
                }
            }
        }
    }
}

/// Saves, reporting a failure; whether it worked.
fn save_reported(dir: &StateDir, path: &Path, bytes: &[u8], out: Out) -> bool {
    match dir.save(path, bytes) {
        Ok(()) => true,
        // Kept running: refusing service over a full disk would hand an
        // attacker a way to stop the node. The next round tries again.
        Err(e) => {
            out.emit(
                json!({"event": "state_save_failed", "path": path.display().to_string(),
                       "error": e.to_string()}),
                || {
                    format!(
                        "warning: cannot save replay memory to {}: {e}",
                        path.display()
                    )
                },
            );
            false
        }
    }
}
