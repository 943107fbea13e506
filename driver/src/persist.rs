//! Address-book persistence: atomic writes, and a corrupt file moved aside.
//!
//! Blocking `std::fs` calls, run through [`Runtime::spawn_blocking`](crate::Runtime).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// `path` with `suffix` appended to its file name (`addrbook.bin` → `addrbook.bin.tmp`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.file_name().map(OsString::from).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The anchors file kept beside the address book at `book` (`<book>.anchors`, G12).
#[must_use]
pub fn anchors_path(book: &Path) -> PathBuf {
    with_suffix(book, ".anchors")
}

/// Removes the file at `path` (and syncs its directory); a missing file is fine.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent_dir(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads at most `limit + 1` bytes of the file at `path` (so a caller sees that a file is
/// larger than `limit` without reading it all); `None` if it does not exist.
pub fn read_if_exists(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    f.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Renames `path` to `<path>.corrupt` (replacing an older one) and returns the new name.
pub fn move_aside(path: &Path) -> io::Result<PathBuf> {
    let aside = with_suffix(path, ".corrupt");
    fs::rename(path, &aside)?;
    sync_dir(parent_dir(path))?;
    Ok(aside)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written and
/// fsynced, renamed over `path`, and the directory is fsynced. A crash at any point leaves
/// either the old file or the new one, never a partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    fs::create_dir_all(dir)?;
    let tmp = with_suffix(path, ".tmp");
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Directories cannot be opened for fsync here; the rename is still atomic.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cometmesh-persist-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = scratch("atomic");
        let p = dir.join("book.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!with_suffix(&p, ".tmp").exists());
        assert_eq!(read_if_exists(&dir.join("none"), 10).unwrap(), None);
        assert_eq!(read_if_exists(&p, 10).unwrap().unwrap(), b"two");
        assert_eq!(
            read_if_exists(&p, 1).unwrap().unwrap(),
            b"tw",
            "limit + 1 bytes at most"
        );
        let aside = move_aside(&p).unwrap();
        assert_eq!(fs::read(aside).unwrap(), b"two");
        assert!(!p.exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = scratch("failed");
        let p = dir.join("book.bin");
        write_atomic(&p, b"saved").unwrap();
        // A directory where the temporary file should go makes the write fail.
        fs::create_dir_all(with_suffix(&p, ".tmp")).unwrap();
        assert!(write_atomic(&p, b"partial").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"saved");
        let _ = fs::remove_dir_all(&dir);
    }
}
