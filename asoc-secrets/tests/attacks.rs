//! Attacks on a key file while it is read: the path swapped between a
//! private file and one others can read, by symbolic link and by rename.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asoc_secrets::{read_private_file, SecretFileError};

const GOOD: &[u8] = b"the private key, mode 0600, 64 characters long...................";
const BAD: &[u8] = b"a world-readable file, mode 0644, which must never be read as key";

fn write(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Reads `key` in a loop while `swap` runs in another thread; returns how
/// many reads gave the private file and how many were refused, and fails
/// if one ever gave the world-readable file's bytes.
fn race(key: &Path, swap: impl Fn(bool) + Send + 'static) -> (u32, u32) {
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut flip = false;
            for _ in 0..200_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                swap(flip);
                flip = !flip;
            }
        }
    });
    let (mut good, mut refused) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    for _ in 0..20_000 {
        match read_private_file(key) {
            Ok(bytes) => {
                assert_ne!(&bytes[..], BAD, "the 0644 file was read as the key");
                assert_eq!(&bytes[..], GOOD);
                good += 1;
            }
            Err(_) => refused += 1,
        }
        if (good > 100 && refused > 100) || Instant::now() >= deadline {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    (good, refused)
}

/// A symbolic link flipped between a 0600 and a 0644 target: every read
/// refuses the link (O_NOFOLLOW), so neither file is ever read through it.
#[test]
fn a_symlink_swapped_between_a_private_and_a_shared_file_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("good"), dir.path().join("bad"));
    write(&good, GOOD, 0o600);
    write(&bad, BAD, 0o644);
    let key = dir.path().join("key");
    std::os::unix::fs::symlink(&good, &key).unwrap();
    let (read, refused) = race(&key, {
        let (key, dir) = (key.clone(), dir.path().to_path_buf());
        move |flip| {
            let next = dir.join("next");
            let _ = std::fs::remove_file(&next);
            let target = if flip { &good } else { &bad };
            std::os::unix::fs::symlink(target, &next).unwrap();
            std::fs::rename(&next, &key).unwrap();
        }
    });
    assert_eq!(read, 0, "a read followed the link");
    assert!(refused > 0);
    assert!(matches!(
        read_private_file(&key),
        Err(SecretFileError::Symlink { .. })
    ));
}

/// The key path renamed over, again and again, by a 0600 file and a 0644
/// file: each read checks the file it opened and reads that same file, so
/// it gives the private bytes or a refusal, never the shared bytes.
#[test]
fn a_path_renamed_between_a_private_and_a_shared_file_never_yields_the_shared_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    write(&key, GOOD, 0o600);
    let (read, refused) = race(&key, {
        let (key, dir) = (key.clone(), dir.path().to_path_buf());
        move |flip| {
            let next = dir.join("next");
            let (bytes, mode) = if flip { (GOOD, 0o600) } else { (BAD, 0o644) };
            write(&next, bytes, mode);
            std::fs::rename(&next, &key).unwrap();
        }
    });
    // Both outcomes occurred: the swap did race the reads.
    assert!(read > 0 && refused > 0, "read {read}, refused {refused}");
}

#[test]
fn shared_special_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    for mode in [0o644, 0o640, 0o604, 0o660, 0o610, 0o601] {
        write(&shared, GOOD, mode);
        assert!(
            matches!(
                read_private_file(&shared),
                Err(SecretFileError::Accessible { .. })
            ),
            "mode {mode:o}"
        );
    }
    assert!(matches!(
        read_private_file(dir.path()),
        Err(SecretFileError::NotRegular {
            kind: "directory",
            ..
        })
    ));
    // A 0600 file of another user: only root can make one to try.
    let foreign = dir.path().join("foreign");
    write(&foreign, GOOD, 0o600);
    if std::os::unix::fs::chown(&foreign, Some(65534), None).is_ok() {
        assert!(matches!(
            read_private_file(&foreign),
            Err(SecretFileError::NotOwned { owner: 65534, .. })
        ));
    }
    let private = dir.path().join("private");
    write(&private, b"key\r\n", 0o600);
    assert_eq!(&read_private_file(&private).unwrap()[..], b"key");
}
