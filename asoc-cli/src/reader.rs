//! What `asoc send` reads: files and standard input, opened before any
//! connection is made and read in chunks on a thread of their own, so a
//! slow disk or pipe never stalls the runtime.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use crate::error::{CliError, CliResult};

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

    /// Starts reading on a thread: chunks of `chunk_size` bytes (the last
    /// may be shorter), then the SHA-256 of everything read.
    pub(crate) fn chunks(self, chunk_size: usize) -> async_channel::Receiver<Item> {
        let (tx, rx) = async_channel::bounded(4);
        let mut input = self.input;
        let reader = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("asoc-reader".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                let last = loop {
                    match read_chunk(&mut input, chunk_size) {
                        Ok(Some(chunk)) => {
                            hasher.update(&chunk);
                            if reader.send_blocking(Item::Chunk(chunk)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => break Item::End(hasher.finalize().into()),
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
    /// The next chunk.
    Chunk(Bytes),
    /// The end, with the SHA-256 of the whole input.
    End([u8; 32]),
    /// Reading failed.
    Failed(io::Error),
}

/// Reads up to `size` bytes; `None` at the end.
fn read_chunk(input: &mut dyn Read, size: usize) -> io::Result<Option<Bytes>> {
    let mut buf = BytesMut::zeroed(size);
    let mut filled = 0;
    while filled < size {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if filled == 0 {
        return Ok(None);
    }
    buf.truncate(filled);
    Ok(Some(buf.freeze()))
}
