//! `node_key.json` on disk (spec 1.2), byte for byte as CometBFT writes it, mode 0600.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use cometmesh_core::identity::NodeKey;

/// Why a node key file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NodeKeyError {
    /// No file at the path.
    #[error("no node key at {} (run `cometmesh init` first)", path.display())]
    Missing {
        /// The expected file.
        path: PathBuf,
    },
    /// The file exists and `init` will not replace it.
    #[error("node key {} already exists; refusing to overwrite it (move it away to make a new one)", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("node key {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a CometBFT Ed25519 node key.
    #[error("node key {} is malformed: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The file's contents: `{"priv_key":{"type":...,"value":base64(seed||pub)}}`, compact and
/// without a final newline, as CometBFT writes it.
#[must_use]
pub fn encode(key: &NodeKey) -> String {
    key.to_json()
}

/// Decodes CometBFT's `node_key.json` text; the error says what is wrong.
pub fn decode(text: &str) -> Result<NodeKey, String> {
    NodeKey::from_json(text.as_bytes()).map_err(|e| e.to_string())
}

/// Reads a node key file.
pub fn load(path: &Path) -> Result<NodeKey, NodeKeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            NodeKeyError::Missing {
                path: path.to_owned(),
            }
        } else {
            NodeKeyError::Io {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    decode(&text).map_err(|reason| NodeKeyError::Malformed {
        path: path.to_owned(),
        reason,
    })
}

/// Writes a new node key file with mode 0600; never replaces an existing file.
pub fn create(path: &Path, key: &NodeKey) -> Result<(), NodeKeyError> {
    let io = |source| NodeKeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                NodeKeyError::Exists {
                    path: path.to_owned(),
                }
            } else {
                io(source)
            }
        })?;
    file.write_all(encode(key).as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Draws a new key from the operating system's random generator.
pub fn generate() -> Result<NodeKey, std::io::Error> {
    use rand_core::RngCore as _;
    // Probe the OS generator first: `NodeKey::generate` cannot report its failure.
    let mut probe = [0u8; 1];
    rand_core::OsRng
        .try_fill_bytes(&mut probe)
        .map_err(std::io::Error::other)?;
    Ok(NodeKey::generate(&mut rand_core::OsRng))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Party A of the derived handshake vector (core/tests/data), as Python wrote it.
    const KAT_A_JSON: &str = "{\"priv_key\": {\"type\": \"tendermint/PrivKeyEd25519\", \"value\": \"pi11ZlpK3g/zW5+WAfJS9Bvlof1uH7vZIhhlqcn/ROaNVI1BYtGoF5JNE4gNiv5gdRlm+Cnt50Dhmy17JPiI3w==\"}}";
    const KAT_A_ID: &str = "7627de929814c7484dc6bf94f60166ab3115b316";

    #[test]
    fn reads_the_known_answer_key_and_writes_cometbft_bytes() {
        let key = decode(KAT_A_JSON).unwrap();
        assert_eq!(key.node_id().to_string(), KAT_A_ID);
        assert_eq!(
            encode(&key),
            r#"{"priv_key":{"type":"tendermint/PrivKeyEd25519","value":"pi11ZlpK3g/zW5+WAfJS9Bvlof1uH7vZIhhlqcn/ROaNVI1BYtGoF5JNE4gNiv5gdRlm+Cnt50Dhmy17JPiI3w=="}}"#
        );
    }

    #[test]
    fn encode_decode_round_trip_and_layout() {
        let key = generate().unwrap();
        let text = encode(&key);
        assert!(text.starts_with(r#"{"priv_key":{"type":"tendermint/PrivKeyEd25519","value":""#));
        assert!(text.ends_with("\"}}"));
        let back = decode(&text).unwrap();
        assert_eq!(back.node_id(), key.node_id());
    }

    #[test]
    fn decode_reports_what_is_wrong() {
        assert!(decode("nope").unwrap_err().contains("not valid json"));
        assert!(decode("{}").unwrap_err().contains("priv_key"));
        let secp = r#"{"priv_key":{"type":"tendermint/PrivKeySecp256k1","value":"AA=="}}"#;
        assert!(decode(secp).unwrap_err().contains("Ed25519"));
        let short = r#"{"priv_key":{"type":"tendermint/PrivKeyEd25519","value":"AAAA"}}"#;
        assert!(decode(short).unwrap_err().contains("expected 64"));
        let zeros = format!(
            r#"{{"priv_key":{{"type":"tendermint/PrivKeyEd25519","value":"{}"}}}}"#,
            "A".repeat(86) + "=="
        );
        assert!(decode(&zeros).unwrap_err().contains("does not match"));
    }

    #[test]
    fn create_refuses_to_overwrite_and_sets_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("cometmesh-nodekey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node_key.json");
        let _ = std::fs::remove_file(&path);
        let key = generate().unwrap();
        create(&path, &key).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap().node_id(), key.node_id());
        assert!(matches!(
            create(&path, &key),
            Err(NodeKeyError::Exists { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(load(&path), Err(NodeKeyError::Missing { .. })));
    }
}
