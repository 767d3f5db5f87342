//! Where an incoming stream's bytes go: SHA-256 computed as chunks arrive
//! and, with `--out`, a file written under a temporary name and moved to
//! its final name only once the stream is complete.
//!
//! The work runs on a [`Pool`] of a few threads shared by every stream, so
//! that hashing and disk writes never stall the runtime's tasks and a
//! flood of streams costs no thread each. A stream is pinned to one lane
//! (one thread) when it starts, so its chunks are handled in order. Each
//! lane takes at most [`LANE_BYTES`] of chunks before a stream's handler
//! waits for it: the handler then stops reading, and its connection stops
//! reading from the socket, so a sender that outruns the disk or the hash
//! is slowed down instead of filling memory.
//!
//! Files are opened lazily, at a stream's first chunk (or at its end when
//! it is empty), and each lane keeps at most its share of a budget of
//! open files (see [`Pool::start`]) open: beyond that the least recently written
//! file is closed and reopened when its stream writes again, so streams
//! that stay open cannot use up the process's descriptors.
//!
//! Whoever else can write to the directory must not be able to redirect
//! or replace what is saved: the temporary file is created exclusively
//! under a random name, never through a symlink, readable by its owner
//! only; a file reopened after it was closed must be the very file (same
//! device, inode and length), and the final move never replaces an
//! existing name.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tempfile::{NamedTempFile, TempPath};

/// How many final names are tried (`NAME.bin`, `NAME-2.bin`, …) before a
/// complete stream is given up as unsaved.
const FINAL_NAMES: u32 = 16;

/// Chunk bytes one lane takes before the streams queued to it wait: a few
/// large chunks, so the disk and the hash always have work while the
/// socket is read, and a bound on memory whatever the number of streams.
const LANE_BYTES: usize = 8 << 20;

/// Most pool threads: hashing and writing a stream is one thread's work,
/// and more threads than cores only share them.
const MAX_THREADS: usize = 4;

/// Most files open at once over the whole pool, and the floor below which
/// a low descriptor limit does not push it.
const MAX_OPEN_FILES: usize = 256;
const MIN_OPEN_FILES: usize = 4;

/// What a completed stream left behind.
#[derive(Debug)]
pub(crate) struct Finished {
    /// SHA-256 of the payload, unless digests are off.
    pub(crate) sha256: Option<[u8; 32]>,
    /// The complete file, with `--out`.
    pub(crate) file: Option<PathBuf>,
}

/// The threads that hash and write every stream of a listener.
#[derive(Debug)]
pub(crate) struct Pool {
    lanes: Vec<Arc<Lane>>,
    next_lane: AtomicUsize,
    next_stream: AtomicU64,
}

/// One pool thread and its queue.
#[derive(Debug)]
struct Lane {
    jobs: mpsc::Sender<Job>,
    credit: Arc<Credit>,
}

#[derive(Debug)]
enum Job {
    Start {
        id: u64,
        digest: bool,
        target: Option<PathBuf>,
    },
    Chunk {
        id: u64,
        data: Bytes,
    },
    Finish {
        id: u64,
        reply: async_channel::Sender<io::Result<Finished>>,
    },
    Abort {
        id: u64,
        reply: Option<async_channel::Sender<()>>,
    },
}

impl Pool {
    /// Starts `min(cores, 4)` threads; each keeps its share of a file
    /// budget taken from the descriptor limit (a quarter of it, at most
    /// [`MAX_OPEN_FILES`]), so that sockets always have descriptors left.
    pub(crate) fn start() -> io::Result<Arc<Self>> {
        let threads = thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_THREADS);
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map_or(MAX_OPEN_FILES, |n| {
                usize::try_from(n / 4).unwrap_or(usize::MAX)
            });
        let max_open_files = limit.clamp(MIN_OPEN_FILES, MAX_OPEN_FILES);
        let per_lane = (max_open_files / threads).max(1);
        let mut lanes = Vec::with_capacity(threads);
        for n in 0..threads {
            let (tx, rx) = mpsc::channel();
            let credit = Arc::new(Credit::new(LANE_BYTES));
            let lane = Arc::new(Lane {
                jobs: tx,
                credit: credit.clone(),
            });
            // The thread holds no sender: it ends once the pool is dropped.
            thread::Builder::new()
                .name(format!("asoc-sink-{n}"))
                .spawn(move || Worker::new(per_lane).run(&rx, &credit))?;
            lanes.push(lane);
        }
        Ok(Arc::new(Self {
            lanes,
            next_lane: AtomicUsize::new(0),
            next_stream: AtomicU64::new(0),
        }))
    }

    /// A sink hashing when `digest` and writing `target` when given; its
    /// file is created at its first chunk.
    pub(crate) fn sink(&self, digest: bool, target: Option<PathBuf>) -> Sink {
        if !digest && target.is_none() {
            return Sink::none();
        }
        let n = self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        let lane = self.lanes[n].clone();
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        if lane.jobs.send(Job::Start { id, digest, target }).is_err() {
            return Sink { state: State::Gone };
        }
        Sink {
            state: State::Pooled { lane, id },
        }
    }
}

/// A stream's sink; without digest and file it does nothing.
#[derive(Debug)]
pub(crate) struct Sink {
    state: State,
}

#[derive(Debug)]
enum State {
    /// Nothing to compute or write.
    Idle,
    /// Hashed and written by a pool lane.
    Pooled { lane: Arc<Lane>, id: u64 },
    /// The pool's thread is gone.
    Gone,
}

fn gone() -> io::Error {
    io::Error::other("the hashing and writing thread ended")
}

impl Sink {
    /// A sink that does nothing.
    pub(crate) fn none() -> Self {
        Self { state: State::Idle }
    }

    /// Hands one chunk over, without copying it; waits while the lane has
    /// its fill of chunks. An error means the lane is gone.
    pub(crate) async fn write(&self, chunk: Bytes) -> Result<(), ()> {
        match &self.state {
            State::Pooled { lane, id } => {
                lane.credit.acquire(chunk.len()).await;
                let len = chunk.len();
                lane.jobs
                    .send(Job::Chunk {
                        id: *id,
                        data: chunk,
                    })
                    .map_err(|_| lane.credit.release(len))
            }
            State::Idle => Ok(()),
            State::Gone => Err(()),
        }
    }

    /// The stream is complete: the file is moved to its final name.
    pub(crate) async fn finish(mut self) -> io::Result<Finished> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Pooled { lane, id } => {
                let (reply, answer) = async_channel::bounded(1);
                lane.jobs
                    .send(Job::Finish { id, reply })
                    .map_err(|_| gone())?;
                answer.recv().await.unwrap_or_else(|_| Err(gone()))
            }
            State::Idle => Ok(Finished {
                sha256: None,
                file: None,
            }),
            State::Gone => Err(gone()),
        }
    }

    /// The stream was cut off: its temporary file is removed before this
    /// returns.
    pub(crate) async fn abort(mut self) {
        if let State::Pooled { lane, id } = std::mem::replace(&mut self.state, State::Idle) {
            let (reply, answer) = async_channel::bounded(1);
            if lane
                .jobs
                .send(Job::Abort {
                    id,
                    reply: Some(reply),
                })
                .is_ok()
            {
                let _ = answer.recv().await;
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // A handler dropped mid-stream (the runtime shutting down) must not
        // leave its state and temporary file behind.
        if let State::Pooled { lane, id } = &self.state {
            let _ = lane.jobs.send(Job::Abort {
                id: *id,
                reply: None,
            });
        }
    }
}

/// Bytes of chunks queued to a lane, bounded: a stream whose chunk does
/// not fit waits (one larger than the bound fits an empty lane).
#[derive(Debug)]
struct Credit {
    used: Mutex<usize>,
    limit: usize,
    freed: event_listener::Event,
}

impl Credit {
    fn new(limit: usize) -> Self {
        Self {
            used: Mutex::new(0),
            limit,
            freed: event_listener::Event::new(),
        }
    }

    fn try_acquire(&self, n: usize) -> bool {
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *used == 0 || *used + n <= self.limit {
            *used += n;
            true
        } else {
            false
        }
    }

    async fn acquire(&self, n: usize) {
        loop {
            if self.try_acquire(n) {
                return;
            }
            let listener = self.freed.listen();
            // Freed between the check and the registration: not missed.
            if self.try_acquire(n) {
                return;
            }
            listener.await;
        }
    }

    fn release(&self, n: usize) {
        {
            let mut used = self
                .used
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *used = used.saturating_sub(n);
        }
        self.freed.notify(usize::MAX);
    }
}

/// A lane's thread: the state of every stream pinned to it, and its open
/// files in the order they were last written.
struct Worker {
    streams: HashMap<u64, Stream>,
    /// Open files by the tick of their last write, oldest first.
    open: BTreeMap<u64, u64>,
    tick: u64,
    max_open: usize,
}

struct Stream {
    hasher: Option<Sha256>,
    target: Option<PathBuf>,
    file: Option<TempFile>,
    /// Bytes written to the file.
    written: u64,
    /// The first failure: the file is gone and the stream is not saved.
    error: Option<io::Error>,
}

/// A stream's temporary file, open or closed to free its descriptor.
enum TempFile {
    Open {
        file: File,
        path: TempPath,
        tick: u64,
    },
    Closed {
        path: TempPath,
        dev: u64,
        ino: u64,
    },
}

impl Worker {
    fn new(max_open: usize) -> Self {
        Self {
            streams: HashMap::new(),
            open: BTreeMap::new(),
            tick: 0,
            max_open,
        }
    }

    fn run(mut self, jobs: &mpsc::Receiver<Job>, credit: &Credit) {
        while let Ok(job) = jobs.recv() {
            match job {
                Job::Start { id, digest, target } => {
                    self.streams.insert(
                        id,
                        Stream {
                            hasher: digest.then(Sha256::new),
                            target,
                            file: None,
                            written: 0,
                            error: None,
                        },
                    );
                }
                Job::Chunk { id, data } => {
                    let len = data.len();
                    self.chunk(id, &data);
                    // The memory goes back before the credit does.
                    drop(data);
                    credit.release(len);
                }
                Job::Finish { id, reply } => {
                    let result = self.finish(id);
                    let _ = reply.send_blocking(result);
                }
                Job::Abort { id, reply } => {
                    self.forget(id);
                    if let Some(reply) = reply {
                        let _ = reply.send_blocking(());
                    }
                }
            }
        }
    }

    fn chunk(&mut self, id: u64, data: &[u8]) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        if st.error.is_some() {
            return;
        }
        if let Some(h) = st.hasher.as_mut() {
            h.update(data);
        }
        if st.target.is_none() {
            return;
        }
        if let Err(e) = self.write(id, data) {
            self.fail(id, e);
        }
    }

    /// Writes to stream `id`'s file, opening it first when needed.
    fn write(&mut self, id: u64, data: &[u8]) -> io::Result<()> {
        self.ensure_open(id)?;
        let Some(st) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if let Some(TempFile::Open { file, path, .. }) = st.file.as_mut() {
            file.write_all(data).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
            })?;
            st.written += data.len() as u64;
        }
        Ok(())
    }

    /// Makes stream `id`'s file open and most recently used: created at
    /// the first use, reopened when it was closed for another's sake.
    fn ensure_open(&mut self, id: u64) -> io::Result<()> {
        let tick = self.tick;
        self.tick += 1;
        let needs_descriptor = match self.streams.get(&id).map(|st| &st.file) {
            Some(Some(TempFile::Open { .. })) => false,
            Some(_) => true,
            None => return Ok(()),
        };
        if needs_descriptor {
            while self.open.len() >= self.max_open {
                let Some((_, victim)) = self.open.pop_first() else {
                    break;
                };
                self.close(victim);
            }
        }
        let Some(st) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        let (file, path) = match st.file.take() {
            Some(TempFile::Open { file, path, tick }) => {
                self.open.remove(&tick);
                (file, path)
            }
            Some(TempFile::Closed { path, dev, ino }) => {
                let file = reopen(&path, dev, ino, st.written)?;
                (file, path)
            }
            None => {
                let Some(target) = st.target.as_deref() else {
                    return Ok(());
                };
                create_temp(target)?.into_parts()
            }
        };
        st.file = Some(TempFile::Open { file, path, tick });
        self.open.insert(tick, id);
        Ok(())
    }

    /// Closes stream `id`'s open file, remembering which file it was.
    fn close(&mut self, id: u64) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(TempFile::Open { file, path, .. }) = st.file.take() else {
            return;
        };
        match file.metadata() {
            Ok(meta) => {
                st.file = Some(TempFile::Closed {
                    path,
                    dev: meta.dev(),
                    ino: meta.ino(),
                });
            }
            Err(e) => {
                drop(path);
                self.fail(id, e);
            }
        }
    }

    /// Stream `id` cannot be saved: its temporary file is removed now.
    fn fail(&mut self, id: u64, e: io::Error) {
        if let Some(st) = self.streams.get_mut(&id) {
            if let Some(TempFile::Open { tick, .. }) = &st.file {
                self.open.remove(tick);
            }
            st.file = None;
            st.error.get_or_insert(e);
        }
    }

    /// Stream `id` is over: its state and any temporary file go.
    fn forget(&mut self, id: u64) -> Option<Stream> {
        let st = self.streams.remove(&id)?;
        if let Some(TempFile::Open { tick, .. }) = &st.file {
            self.open.remove(tick);
        }
        Some(st)
    }

    fn finish(&mut self, id: u64) -> io::Result<Finished> {
        let saved = match self.streams.get(&id) {
            None => return Err(gone()),
            Some(st) if st.error.is_some() || st.target.is_none() => None,
            // An empty stream creates its file only now.
            Some(_) => Some(self.ensure_open(id)),
        };
        let mut st = self.forget(id).ok_or_else(gone)?;
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        let file = match (saved, st.file.take(), st.target.as_deref()) {
            (Some(Err(e)), ..) => return Err(e),
            (Some(Ok(())), Some(TempFile::Open { file, path, .. }), Some(target)) => {
                file.sync_all().map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot sync {}: {e}", path.display()))
                })?;
                drop(file);
                Some(place(path, target)?)
            }
            (None, ..) => None,
            _ => return Err(io::Error::other("the temporary file was lost")),
        };
        Ok(Finished {
            sha256: st.hasher.map(|h| h.finalize().into()),
            file,
        })
    }
}

/// Reopens a temporary file closed to free its descriptor, refusing a
/// symlink or any other file put at its name meanwhile: it must be the
/// same device and inode, with the bytes written so far.
fn reopen(path: &Path, dev: u64, ino: u64, written: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot reopen {}: {e}", path.display())))?;
    let meta = file.metadata()?;
    if meta.dev() != dev || meta.ino() != ino || meta.len() != written {
        return Err(io::Error::other(format!(
            "{} was replaced or changed while it was closed",
            path.display()
        )));
    }
    Ok(file)
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
