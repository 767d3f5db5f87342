//! Where an incoming stream's bytes go: SHA-256 computed as chunks arrive
//! and, with `--out`, a file written under a temporary name and moved to
//! its final name only once the stream is complete. The work runs on a
//! thread of its own so that hashing and disk writes never stall the
//! runtime's tasks.
//!
//! Whoever else can write to the directory must not be able to redirect
//! or replace what is saved: the temporary file is created exclusively
//! under a random name, never through a symlink, readable by its owner
//! only, and the final move never replaces an existing name.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tempfile::{NamedTempFile, TempPath};

/// How many final names are tried (`NAME.bin`, `NAME-2.bin`, …) before a
/// complete stream is given up as unsaved.
const FINAL_NAMES: u32 = 16;

/// What a completed stream left behind.
#[derive(Debug)]
pub(crate) struct Finished {
    /// SHA-256 of the payload, unless digests are off.
    pub(crate) sha256: Option<[u8; 32]>,
    /// The complete file, with `--out`.
    pub(crate) file: Option<PathBuf>,
}

enum Msg {
    Chunk(Bytes),
    End,
}

/// A stream's sink; without digest and file it does nothing.
pub(crate) struct Sink {
    state: State,
}

enum State {
    /// Nothing to compute or write.
    Idle,
    /// Hashing and writing on a thread.
    Working(Worker),
    /// The sink could not start: the stream drains and is then reported
    /// as not saved, with this error.
    Failed(io::Error),
}

struct Worker {
    chunks: async_channel::Sender<Msg>,
    result: async_channel::Receiver<io::Result<Finished>>,
}

impl Sink {
    /// Starts a sink hashing when `digest` and writing `target` when given
    /// (the temporary file is created now, so a bad directory fails early).
    pub(crate) fn start(digest: bool, target: Option<PathBuf>) -> io::Result<Self> {
        if !digest && target.is_none() {
            return Ok(Self::none());
        }
        let file = target.as_deref().map(create_temp).transpose()?;
        let (chunks_tx, chunks_rx) = async_channel::bounded(8);
        let (result_tx, result_rx) = async_channel::bounded(1);
        thread::Builder::new()
            .name("asoc-sink".into())
            .spawn(move || {
                let result = work(&chunks_rx, digest, file, target);
                let _ = result_tx.send_blocking(result);
            })?;
        Ok(Self {
            state: State::Working(Worker {
                chunks: chunks_tx,
                result: result_rx,
            }),
        })
    }

    /// A sink that does nothing.
    pub(crate) fn none() -> Self {
        Self { state: State::Idle }
    }

    /// A sink that could not start: it takes no chunk, and
    /// [`finish`](Self::finish) returns `error`.
    pub(crate) fn failed(error: io::Error) -> Self {
        Self {
            state: State::Failed(error),
        }
    }

    /// Hands one chunk over; waits while the worker is behind. An error
    /// means the worker stopped (see [`finish`](Self::finish) for why).
    pub(crate) async fn write(&self, chunk: Bytes) -> Result<(), ()> {
        match &self.state {
            State::Working(w) => w.chunks.send(Msg::Chunk(chunk)).await.map_err(|_| ()),
            State::Idle => Ok(()),
            State::Failed(_) => Err(()),
        }
    }

    /// The stream is complete: the file is moved to its final name.
    pub(crate) async fn finish(self) -> io::Result<Finished> {
        let w = match self.state {
            State::Working(w) => w,
            State::Idle => {
                return Ok(Finished {
                    sha256: None,
                    file: None,
                })
            }
            State::Failed(e) => return Err(e),
        };
        let _ = w.chunks.send(Msg::End).await;
        w.chunks.close();
        w.result
            .recv()
            .await
            .unwrap_or_else(|_| Err(io::Error::other("sink thread ended")))
    }

    /// The stream was cut off: the temporary file is removed.
    pub(crate) async fn abort(self) {
        if let State::Working(w) = self.state {
            w.chunks.close();
            let _ = w.result.recv().await;
        }
    }
}

fn work(
    chunks: &async_channel::Receiver<Msg>,
    digest: bool,
    mut file: Option<NamedTempFile>,
    target: Option<PathBuf>,
) -> io::Result<Finished> {
    let mut hasher = digest.then(Sha256::new);
    let outcome = (|| {
        loop {
            match chunks.recv_blocking() {
                Ok(Msg::Chunk(c)) => {
                    if let Some(h) = hasher.as_mut() {
                        h.update(&c);
                    }
                    if let Some(f) = file.as_mut() {
                        f.as_file_mut().write_all(&c).map_err(|e| {
                            io::Error::new(
                                e.kind(),
                                format!("cannot write {}: {e}", f.path().display()),
                            )
                        })?;
                    }
                }
                Ok(Msg::End) => break,
                Err(_) => return Err(io::Error::other("stream incomplete")),
            }
        }
        match (file.take(), &target) {
            (Some(f), Some(target)) => {
                f.as_file().sync_all()?;
                let (f, temp) = f.into_parts();
                drop(f);
                place(temp, target).map(Some)
            }
            _ => Ok(None),
        }
    })();
    // On error the temporary file, if still there, is removed as `file`
    // (or the `TempPath` inside `place`) is dropped.
    match outcome {
        Ok(saved) => Ok(Finished {
            sha256: hasher.map(|h| h.finalize().into()),
            file: saved,
        }),
        Err(e) => {
            chunks.close();
            Err(e)
        }
    }
}

/// `DIR/.NAME.RANDOM.part`, hidden and never the name of a complete
/// stream: created with `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0600, so
/// a file or symlink planted at that name makes it pick another random
/// name rather than write through it.
fn create_temp(target: &Path) -> io::Result<NamedTempFile> {
    let dir = target
        .parent()
        .ok_or_else(|| io::Error::other("the target has no directory"))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".part")
        .rand_bytes(12)
        .make_in(dir, |path| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
        })
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create a temporary file in {}: {e}", dir.display()),
            )
        })
}

/// Moves the complete temporary file to `target`, or to `target` with
/// `-2`, `-3`, … before its extension when that name exists: the move
/// (`renameat2` with `RENAME_NOREPLACE`, or link then unlink where the
/// file system lacks it) never replaces an existing file or symlink.
fn place(mut temp: TempPath, target: &Path) -> io::Result<PathBuf> {
    for n in 1..=FINAL_NAMES {
        let candidate = numbered(target, n);
        match temp.persist_noclobber(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => temp = e.path,
            Err(e) => {
                return Err(io::Error::new(
                    e.error.kind(),
                    format!("cannot move into {}: {}", candidate.display(), e.error),
                ))
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} and {} numbered variants already exist",
            target.display(),
            FINAL_NAMES - 1
        ),
    ))
}

/// `target` itself for 1, else `STEM-n.EXT`.
fn numbered(target: &Path, n: u32) -> PathBuf {
    if n == 1 {
        return target.to_path_buf();
    }
    let stem = target
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match target.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    target.with_file_name(name)
}
