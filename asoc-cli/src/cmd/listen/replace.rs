//! Replacing a private file of the node (its saved replay state, its key
//! file) so that a crash leaves either the old contents or the new, never a
//! mix, and no other user can read either.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Writes `parts` to a fresh file beside `path` (created exclusively, mode
/// 0600, so never through a planted name), syncs it, renames it over
/// `path`, then syncs the directory, since the rename is durable only once
/// the directory is.
pub(super) fn replace_private(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    for part in parts {
        tmp.write_all(part)?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}
