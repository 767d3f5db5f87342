//! What `asoc send` reads: files and standard input, opened before any
//! connection is made and read in chunks on a thread of their own, so a
//! slow disk or pipe never stalls the runtime.
//!
//! Chunks are read into recycled buffers: a chunk's buffer goes back to
//! its reader once the frame is written (and hashed), so steady state
//! allocates nothing and zero-fills nothing (a buffer is zeroed once, when
//! first made). The SHA-256, when asked for,
//! runs on a third thread beside the reader and the runtime, over the same
//! buffers (a reference each, no copy), so hashing overlaps with reading
//! and sending and each byte is hashed once.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::{CliError, CliResult};

/// Blocks read ahead of the sender (and of the hasher).
const AHEAD: usize = 4;

/// Regular files are read this many bytes at a time (rounded down to whole
/// chunks) when chunks are smaller: one read and one hand-over per block
/// instead of per chunk. Standard input is read a chunk at a time, so that
/// a slow pipe's data leaves as soon as a chunk is full.
const FILE_BLOCK: usize = 256 << 10;

/// One input, opened.
pub(crate) struct Source {
    /// The name to report (`-` for standard input).
    pub(crate) name: String,
    /// Its size when known (regular files).
    pub(crate) len: Option<u64>,
    input: Box<dyn Read + Send>,
}

impl Source {
    /// Opens `path` (`-` is standard input); an unreadable file is a usage
    /// error.
    pub(crate) fn open(path: &Path) -> CliResult<Self> {
        if path == Path::new("-") {
            return Ok(Self {
                name: "-".into(),
                len: None,
                input: Box::new(io::stdin()),
            });
        }
        let shown = path.display().to_string();
        let file =
            File::open(path).map_err(|e| CliError::usage(format!("cannot read {shown}: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| CliError::usage(format!("cannot read {shown}: {e}")))?;
        if meta.is_dir() {
            return Err(CliError::usage(format!(
                "cannot read {shown}: is a directory"
            )));
        }
        Ok(Self {
            name: shown,
            len: meta.is_file().then_some(meta.len()),
            input: Box::new(file),
        })
    }

    /// Starts reading on a thread: blocks of whole `chunk_size` chunks
    /// (only the last block may end with a shorter chunk), then the
    /// SHA-256 of everything read when `digest` is set.
    pub(crate) fn chunks(self, chunk_size: usize, digest: bool) -> async_channel::Receiver<Item> {
        let block = match self.len {
            Some(_) => (FILE_BLOCK / chunk_size).max(1) * chunk_size,
            None => chunk_size,
        };
        let (tx, rx) = async_channel::bounded(AHEAD);
        let mut input = self.input;
        let reader = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("asoc-reader".into())
            .spawn(move || {
                let hasher = if digest {
                    match Hasher::start() {
                        Ok(h) => Some(h),
                        Err(e) => {
                            let _ = reader.send_blocking(Item::Failed(e));
                            return;
                        }
                    }
                } else {
                    None
                };
                let pool = Pool::new(block);
                let last = loop {
                    match pool.read(&mut *input) {
                        Ok(Some(chunk)) => {
                            if let Some(h) = &hasher {
                                if !h.feed(chunk.clone()) {
                                    break Item::Failed(io::Error::other("the hasher stopped"));
                                }
                            }
                            if reader.send_blocking(Item::Chunk(chunk)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => match hasher.map(Hasher::finish).transpose() {
                            Ok(digest) => break Item::End(digest),
                            Err(e) => break Item::Failed(e),
                        },
                        Err(e) => break Item::Failed(e),
                    }
                };
                let _ = reader.send_blocking(last);
            });
        if let Err(e) = spawned {
            let _ = tx.try_send(Item::Failed(e));
        }
        rx
    }
}

/// What the reading thread delivers.
pub(crate) enum Item {
    /// The next block: whole chunks, except that the last block of the
    /// input may end with a shorter one.
    Chunk(Bytes),
    /// The end, with the SHA-256 of the whole input unless digests are off.
    End(Option<[u8; 32]>),
    /// Reading failed.
    Failed(io::Error),
}

/// The SHA-256 of a stream, computed on a thread of its own from the
/// chunks the reader hands it.
struct Hasher {
    chunks: mpsc::SyncSender<Bytes>,
    digest: mpsc::Receiver<[u8; 32]>,
}

impl Hasher {
    fn start() -> io::Result<Self> {
        // As far ahead as the sender: the reader waits for whichever of the
        // two is slower, never for both in turn.
        let (chunks, rx) = mpsc::sync_channel::<Bytes>(AHEAD);
        let (done, digest) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("asoc-hasher".into())
            .spawn(move || {
                let mut sha = Sha256::new();
                for chunk in rx {
                    sha.update(&chunk);
                }
                let _ = done.send(sha.finalize().into());
            })?;
        Ok(Self { chunks, digest })
    }

    /// Hands `chunk` over; `false` if the hashing thread is gone.
    fn feed(&self, chunk: Bytes) -> bool {
        self.chunks.send(chunk).is_ok()
    }

    /// The digest of everything fed, once the thread has hashed it.
    fn finish(self) -> io::Result<[u8; 32]> {
        drop(self.chunks);
        self.digest
            .recv()
            .map_err(|_| io::Error::other("the hasher stopped"))
    }
}

/// Chunk buffers that come back once every [`Bytes`] of a chunk is
/// dropped (the frame written, the hash updated). A buffer is zeroed once,
/// when the pool first makes it, and then reused as it is: reads overwrite
/// it, and a chunk only ever shows the bytes its read filled.
struct Pool {
    size: usize,
    home: mpsc::Sender<Vec<u8>>,
    returned: mpsc::Receiver<Vec<u8>>,
}

/// A pooled buffer inside a [`Bytes`]: its first `len` bytes are the
/// chunk; dropping the last reference sends the buffer back to its pool.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    home: mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // The reader may be gone already (end of input): then the buffer
        // is simply freed.
        let _ = self.home.send(std::mem::take(&mut self.buf));
    }
}

impl Pool {
    fn new(size: usize) -> Self {
        let (home, returned) = mpsc::channel();
        Self {
            size,
            home,
            returned,
        }
    }

    /// Reads up to `size` bytes into a recycled buffer (as many reads as
    /// it takes to fill it, or to reach the end); `None` at the end.
    fn read(&self, input: &mut dyn Read) -> io::Result<Option<Bytes>> {
        let mut buf = match self.returned.try_recv() {
            Ok(buf) if buf.len() == self.size => buf,
            _ => vec![0; self.size],
        };
        let mut filled = 0;
        while filled < self.size {
            match input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            let _ = self.home.send(buf);
            return Ok(None);
        }
        Ok(Some(Bytes::from_owner(Pooled {
            buf,
            len: filled,
            home: self.home.clone(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per call.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.data.len().min(self.step).min(out.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn chunks_are_full_except_the_last_and_buffers_come_back() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let pool = Pool::new(4096);
        let mut input = Trickle {
            data: &data,
            step: 1000,
        };
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while let Some(chunk) = pool.read(&mut input).unwrap() {
            sizes.push(chunk.len());
            got.extend_from_slice(&chunk);
            drop(chunk);
            // Dropped before the next read: the buffer is back, reused.
            let back = pool.returned.try_recv().unwrap();
            assert_eq!(back.len(), 4096);
            pool.home.send(back).unwrap();
        }
        assert_eq!(sizes, [4096, 4096, 1808]);
        assert_eq!(got, data);
    }

    #[test]
    fn a_recycled_buffer_holds_only_the_new_chunk() {
        let pool = Pool::new(8);
        let first = pool.read(&mut &[1u8; 8][..]).unwrap().unwrap();
        let memory = first.as_ptr();
        drop(first);
        let second = pool.read(&mut &[2u8; 3][..]).unwrap().unwrap();
        assert_eq!(second.as_ptr(), memory, "the buffer was reused");
        assert_eq!(&second[..], &[2, 2, 2]);
    }

    #[test]
    fn the_hasher_digests_every_chunk_in_order() {
        let h = Hasher::start().unwrap();
        assert!(h.feed(Bytes::from_static(b"hello ")));
        assert!(h.feed(Bytes::from_static(b"world")));
        let want: [u8; 32] = Sha256::digest(b"hello world").into();
        assert_eq!(h.finish().unwrap(), want);
    }
}
