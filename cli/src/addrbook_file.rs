//! CometBFT's `addrbook.json` (spec 6.9) beside the runtime's own address-book file.
//!
//! The runtime saves the book in the core's compact binary form, at a path of its own:
//! `p2p.addr_book_file` with the extension `.cmbook` (`config/addrbook.cmbook`). The JSON file
//! CometBFT reads and writes stays CometBFT's:
//! - at start, when the JSON file is newer than the binary one (or the only one), it is
//!   imported into a binary book first, so a CometBFT home starts with the peers it knew;
//! - at a graceful stop, the binary book is exported back to the JSON file (tab-indented, as
//!   CometBFT writes it), so CometBFT started on the same home finds our peers.
//!
//! A malformed `addrbook.json` stops the start with an error, as CometBFT's loader does; it is
//! never moved or overwritten.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cometmesh_core::addrbook::{AddrBook, AddrBookConfig};

/// Why the address-book files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AddrBookFileError {
    /// The JSON file is not a CometBFT address book.
    #[error("p2p.addr_book_file {}: {reason}", path.display())]
    Import {
        /// The JSON file.
        path: PathBuf,
        /// Why it cannot be imported.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("address book {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The runtime's binary book beside the JSON one.
#[must_use]
pub fn binary_path(json_path: &Path) -> PathBuf {
    json_path.with_extension("cmbook")
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Imports `json_path` into the binary book when it is newer; returns how many addresses
/// were imported, or `None` when the binary book was kept.
pub fn import_if_newer(
    json_path: &Path,
    config: &AddrBookConfig,
) -> Result<Option<usize>, AddrBookFileError> {
    let bin_path = binary_path(json_path);
    let Some(json_time) = modified(json_path) else {
        return Ok(None);
    };
    if modified(&bin_path).is_some_and(|bin_time| bin_time >= json_time) {
        return Ok(None);
    }
    let text = std::fs::read_to_string(json_path).map_err(|source| AddrBookFileError::Io {
        path: json_path.to_owned(),
        source,
    })?;
    // A CometBFT home may hold an address book that was never written (zero bytes).
    if text.trim().is_empty() {
        return Ok(None);
    }
    let book =
        AddrBook::import_cometbft_json(&text, config.clone(), &mut rand_core::OsRng, unix_now())
            .map_err(|e| AddrBookFileError::Import {
                path: json_path.to_owned(),
                reason: e.to_string(),
            })?;
    let len = book.len();
    write_atomic(&bin_path, &book.encode(), 0o600)?;
    Ok(Some(len))
}

/// Exports the binary book to `json_path` (after a graceful stop); returns the number of
/// addresses written, or `None` when there is no binary book.
pub fn export(
    json_path: &Path,
    config: &AddrBookConfig,
) -> Result<Option<usize>, AddrBookFileError> {
    let bin_path = binary_path(json_path);
    let bytes = match std::fs::read(&bin_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AddrBookFileError::Io {
                path: bin_path,
                source,
            });
        }
    };
    let book = AddrBook::decode(&bytes, config.clone()).map_err(|e| AddrBookFileError::Io {
        path: bin_path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })?;
    write_atomic(json_path, book.export_cometbft_json().as_bytes(), 0o644)?;
    // Keep the binary book at least as new as the JSON file, so the next start uses it (it
    // holds what the JSON form cannot: placement key, bans).
    write_atomic(&bin_path, &bytes, 0o600)?;
    Ok(Some(book.len()))
}

/// Writes through a temporary file in the same directory, fsync, rename.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AddrBookFileError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| AddrBookFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cometmesh_core::NodeId;
    use cometmesh_core::addr::NetAddr;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cometmesh-book-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn json_round_trips_through_the_binary_book() {
        let d = dir("roundtrip");
        let json = d.join("addrbook.json");
        let config = AddrBookConfig::default();
        let mut book = AddrBook::new(config.clone(), &mut rand_core::OsRng);
        let a = NetAddr::new(NodeId([7; 20]), "8.8.4.4:26656".parse().unwrap());
        book.add(
            a,
            "1.1.1.1".parse().unwrap(),
            unix_now(),
            &mut rand_core::OsRng,
        )
        .unwrap();
        std::fs::write(&json, book.export_cometbft_json()).unwrap();

        assert_eq!(import_if_newer(&json, &config).unwrap(), Some(1));
        assert!(binary_path(&json).exists());
        // The binary book is now the newer one: nothing to import.
        assert_eq!(import_if_newer(&json, &config).unwrap(), None);
        std::fs::remove_file(&json).unwrap();
        assert_eq!(export(&json, &config).unwrap(), Some(1));
        let text = std::fs::read_to_string(&json).unwrap();
        assert!(text.contains("\"8.8.4.4\""), "{text}");
        assert_eq!(import_if_newer(&json, &config).unwrap(), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn malformed_json_is_an_error_and_left_alone() {
        let d = dir("bad");
        let json = d.join("addrbook.json");
        std::fs::write(&json, "{\"key\": \"00\", \"addrs\": 5}").unwrap();
        let err = import_if_newer(&json, &AddrBookConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p2p.addr_book_file "), "{err}");
        assert!(std::fs::read_to_string(&json).unwrap().contains("addrs"));
        std::fs::write(&json, "").unwrap();
        assert_eq!(
            import_if_newer(&json, &AddrBookConfig::default()).unwrap(),
            None
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
