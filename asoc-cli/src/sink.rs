//! Where an incoming stream's bytes go: SHA-256 computed as chunks arrive
//! and, with `--out`, a file written under a temporary name and renamed
//! only once the stream is complete. The work runs on a thread of its own
//! so that hashing and disk writes never stall the runtime's tasks.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread;

use bytes::Bytes;
use sha2::{Digest, Sha256};

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
    worker: Option<Worker>,
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
        let file = match &target {
            Some(path) => {
                let temp = temp_name(path);
                Some((File::create(&temp)?, temp))
            }
            None => None,
        };
        let (chunks_tx, chunks_rx) = async_channel::bounded(8);
        let (result_tx, result_rx) = async_channel::bounded(1);
        thread::Builder::new()
            .name("asoc-sink".into())
            .spawn(move || {
                let result = work(&chunks_rx, digest, file, target);
                let _ = result_tx.send_blocking(result);
            })?;
        Ok(Self {
            worker: Some(Worker {
                chunks: chunks_tx,
                result: result_rx,
            }),
        })
    }

    /// A sink that does nothing.
    pub(crate) fn none() -> Self {
        Self { worker: None }
    }

    /// Hands one chunk over; waits while the worker is behind. An error
    /// means the worker stopped (see [`finish`](Self::finish) for why).
    pub(crate) async fn write(&self, chunk: Bytes) -> Result<(), ()> {
        match &self.worker {
            Some(w) => w.chunks.send(Msg::Chunk(chunk)).await.map_err(|_| ()),
            None => Ok(()),
        }
    }

    /// The stream is complete: the file is renamed into place.
    pub(crate) async fn finish(self) -> io::Result<Finished> {
        let Some(w) = self.worker else {
            return Ok(Finished {
                sha256: None,
                file: None,
            });
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
        if let Some(w) = self.worker {
            w.chunks.close();
            let _ = w.result.recv().await;
        }
    }
}

fn work(
    chunks: &async_channel::Receiver<Msg>,
    digest: bool,
    mut file: Option<(File, PathBuf)>,
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
                    if let Some((f, _)) = file.as_mut() {
                        f.write_all(&c)?;
                    }
                }
                Ok(Msg::End) => break,
                Err(_) => return Err(io::Error::other("stream incomplete")),
            }
        }
        if let Some((f, temp)) = file.as_mut() {
            f.sync_all()?;
            if let Some(target) = &target {
                std::fs::rename(&*temp, target)?;
            }
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        if let Some((f, temp)) = file.take() {
            drop(f);
            let _ = std::fs::remove_file(temp);
        }
        chunks.close();
        return Err(e);
    }
    Ok(Finished {
        sha256: hasher.map(|h| h.finalize().into()),
        file: target,
    })
}

/// `DIR/.NAME.PID.part`: hidden, and never the name of a complete stream.
fn temp_name(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{}.part", std::process::id()))
}
