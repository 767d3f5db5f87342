//! # asoc-secrets
//!
//! Where ASoc keys come from, for every program of this workspace that
//! reads one (`asoc` and the conformance suite alike):
//!
//! - [`read_private_file`]: a key file, opened once without following a
//!   symbolic link, checked on the open descriptor (a regular file owned by
//!   the effective user that neither group nor others may access) and read
//!   from that same descriptor, so that nothing can be swapped in between
//!   the check and the read.
//! - [`take_from_environment`] and [`env_secret`]: a key taken out of the
//!   process environment as the program starts, so that it is neither
//!   inherited by child processes nor left readable in
//!   `/proc/<pid>/environ` for the life of the process.
//!
//! Not published: the conformance suite depends on no part of the
//! implementation it tests, so what both need lives here rather than in the
//! `asoc` command.

use std::io;
use std::path::Path;
use std::sync::Mutex;

use zeroize::Zeroizing;

/// The largest key file read; a key is a line of text, and anything larger
/// is the wrong file.
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFileError {
    /// The file could not be opened.
    #[error("cannot read key file {path}: {source}")]
    Open {
        /// The file, as given.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The path names a symbolic link, which could be pointed elsewhere
    /// between two reads.
    #[error("refusing key file {path}: it is a symbolic link (name the file itself)")]
    Symlink {
        /// The file, as given.
        path: String,
    },
    /// The path names a directory, FIFO, socket or device.
    #[error("refusing key file {path}: it is a {kind}, not a regular file")]
    NotRegular {
        /// The file, as given.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// Another user owns the file, and so could change it or its mode.
    #[error(
        "refusing key file {path}: it is owned by uid {owner}, not by this process's \
         effective user (uid {euid})"
    )]
    NotOwned {
        /// The file, as given.
        path: String,
        /// The file's owner.
        owner: u32,
        /// The effective user id of this process.
        euid: u32,
    },
    /// Group or others may read or write the file.
    #[error(
        "refusing key file {path}: it is accessible by group or others (mode {mode:03o}); \
         run `chmod 600 {path}`"
    )]
    Accessible {
        /// The file, as given.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is larger than [`MAX_KEY_FILE`].
    #[error("refusing key file {path}: larger than {MAX_KEY_FILE} bytes, so not a key")]
    TooLarge {
        /// The file, as given.
        path: String,
    },
    /// Reading the open file failed.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file, as given.
        path: String,
        /// Why.
        source: io::Error,
    },
}

/// Reads a key file that only its owner can access, stripping one trailing
/// newline (`\n` or `\r\n`).
///
/// On Unix the file is opened once with `O_NOFOLLOW | O_CLOEXEC |
/// O_NONBLOCK | O_NOCTTY` (a symbolic link is refused rather than followed,
/// a FIFO cannot block the open), the open descriptor is checked with
/// `fstat` (a regular file, owned by the effective user, no group or other
/// permission bits), and the bytes are read from that descriptor. Whatever
/// happens to the path meanwhile, the bytes read are those of the file that
/// passed the check. `O_NOFOLLOW` concerns the last component only: a
/// directory on the path that another user can write to can still redirect
/// it, as for any file.
///
/// On other systems the file is read as it is, without these checks.
pub fn read_private_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    let shown = path.display().to_string();
    let file = open_checked(path, &shown)?;
    let mut bytes = read_all(file, &shown)?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    Ok(bytes)
}

#[cfg(unix)]
fn open_checked(path: &Path, shown: &str) -> Result<std::fs::File, SecretFileError> {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let flags = flags | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| {
        if e == rustix::io::Errno::LOOP {
            SecretFileError::Symlink {
                path: shown.to_string(),
            }
        } else {
            SecretFileError::Open {
                path: shown.to_string(),
                source: e.into(),
            }
        }
    })?;
    let file = std::fs::File::from(fd);
    // fstat(2) of the descriptor just opened: the file that will be read.
    let meta = file.metadata().map_err(|e| SecretFileError::Open {
        path: shown.to_string(),
        source: e,
    })?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let kind = if kind.is_dir() {
            "directory"
        } else if kind.is_fifo() {
            "FIFO"
        } else if kind.is_socket() {
            "socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "device"
        } else {
            "special file"
        };
        return Err(SecretFileError::NotRegular {
            path: shown.to_string(),
            kind,
        });
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(SecretFileError::NotOwned {
            path: shown.to_string(),
            owner: meta.uid(),
            euid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Accessible {
            path: shown.to_string(),
            mode,
        });
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(SecretFileError::TooLarge {
            path: shown.to_string(),
        });
    }
    Ok(file)
}

#[cfg(not(unix))]
fn open_checked(path: &Path, shown: &str) -> Result<std::fs::File, SecretFileError> {
    std::fs::File::open(path).map_err(|e| SecretFileError::Open {
        path: shown.to_string(),
        source: e,
    })
}

fn read_all(file: std::fs::File, shown: &str) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    use std::io::Read as _;
    // Room for the whole file up front: a vector that grew would leave
    // copies of the key in the memory it gave back.
    let mut bytes = Zeroizing::new(Vec::with_capacity(
        usize::try_from(MAX_KEY_FILE + 1).unwrap_or(usize::MAX),
    ));
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SecretFileError::Read {
            path: shown.to_string(),
            source: e,
        })?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(SecretFileError::TooLarge {
            path: shown.to_string(),
        });
    }
    Ok(bytes)
}

/// A variable taken out of the environment: its name, and its value
/// (`None` when it was not set).
type Taken = (String, Option<Zeroizing<Vec<u8>>>);

/// Secrets taken out of the environment by [`take_from_environment`].
static TAKEN: Mutex<Vec<Taken>> = Mutex::new(Vec::new());

/// Moves the variables `names` out of the process environment into this
/// crate's keeping, where [`env_secret`] finds them.
///
/// Each value is first overwritten with zero bytes where the C library
/// keeps it, then the variable is removed. Removal alone keeps the value
/// from child processes and from `std::env`; the overwrite also clears it
/// from the process's initial environment block, which is what
/// `/proc/<pid>/environ` shows (Linux). That block still shows the name,
/// followed by an empty value.
///
/// # Safety
///
/// No other thread may exist, or read or write the environment, while
/// this runs: the C library's environment is not synchronised, and both
/// the in-place overwrite and the removal would race with a concurrent
/// `getenv`. Call it first thing in `main`, before any runtime, signal
/// thread or logger starts.
#[allow(unsafe_code)]
pub unsafe fn take_from_environment(names: &[&str]) {
    let mut taken = TAKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for name in names {
        let value = std::env::var_os(name).map(|v| Zeroizing::new(os_bytes(v)));
        if value.is_some() {
            // SAFETY: the caller guarantees that no other thread touches
            // the environment while this runs.
            unsafe { wipe_in_place(name) };
            std::env::remove_var(name);
        }
        taken.retain(|(n, _)| n != name);
        taken.push(((*name).to_string(), value));
    }
}

/// Overwrites the value of `name` with zero bytes where the C library
/// keeps it (for variables inherited at start, the process's initial
/// environment block).
///
/// # Safety
///
/// No other thread may read or write the environment meanwhile.
#[cfg(unix)]
#[allow(unsafe_code)]
unsafe fn wipe_in_place(name: &str) {
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: `c_name` is a NUL-terminated string. getenv returns null or
    // a pointer to the NUL-terminated value inside the environment entry
    // `NAME=value`, memory the process owns and may write (the initial
    // block is on the writable stack; setenv's copies are on the heap).
    // strlen stays inside the value, and writing that many zero bytes
    // leaves the entry a valid C string `NAME=` until it is removed. No
    // other thread reads the environment (the caller's guarantee).
    unsafe {
        let value = libc::getenv(c_name.as_ptr());
        if !value.is_null() {
            let len = libc::strlen(value);
            std::ptr::write_bytes(value, 0, len);
        }
    }
}

#[cfg(not(unix))]
#[allow(unsafe_code)]
unsafe fn wipe_in_place(_name: &str) {}

/// The secret in the environment variable `name`: the value
/// [`take_from_environment`] took when it took `name`, else the variable
/// as it is now.
#[must_use]
pub fn env_secret(name: &str) -> Option<Zeroizing<Vec<u8>>> {
    let taken = TAKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, value)) = taken.iter().find(|(n, _)| n == name) {
        return value.clone();
    }
    drop(taken);
    std::env::var_os(name).map(|v| Zeroizing::new(os_bytes(v)))
}

#[cfg(unix)]
fn os_bytes(value: std::ffi::OsString) -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    value.into_vec()
}

#[cfg(not(unix))]
fn os_bytes(value: std::ffi::OsString) -> Vec<u8> {
    value.to_string_lossy().into_owned().into_bytes()
}
