//! The node key (Ed25519) and CometBFT's `node_key.json` (spec 1.2).
//!
//! # `node_key.json`, byte for byte
//!
//! CometBFT writes the file with `cmtjson.Marshal(nodeKey)` and `os.WriteFile` (`p2p/key.go`):
//! compact JSON, no spaces, no trailing newline, the amino type envelope around the key, and the
//! key as Go's standard padded base64 of the 64-byte Go private key `seed || public key`:
//!
//! ```text
//! {"priv_key":{"type":"tendermint/PrivKeyEd25519","value":"<88 base64 characters>"}}
//! ```
//!
//! [`NodeKey::to_json`] produces exactly that. [`NodeKey::from_json`] accepts any JSON
//! layout (whitespace, key order, unknown fields, as Go's decoder does) but, unlike Go, also
//! checks that the stored public half is the one the seed derives.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, SigningKey};

use crate::ids::NodeId;

/// The amino type name of an Ed25519 private key in CometBFT's JSON.
pub const PRIV_KEY_ED25519_TYPE: &str = "tendermint/PrivKeyEd25519";

/// A node's long-term Ed25519 key; its public half determines the [`NodeId`].
#[derive(Clone)]
pub struct NodeKey {
    signing: SigningKey,
}

/// Why bytes are not a usable `node_key.json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeKeyError {
    /// The bytes are not JSON at all.
    #[error("node key file is not valid json: {0}")]
    NotJson(String),
    /// Valid JSON, but not shaped like `{"priv_key":{"type":…,"value":…}}`.
    #[error(
        "node key file does not have the form {{\"priv_key\":{{\"type\":...,\"value\":...}}}}: {0}"
    )]
    BadShape(String),
    /// The key type is not Ed25519.
    #[error("node key type {0:?} is not supported (expected \"tendermint/PrivKeyEd25519\")")]
    WrongKeyType(String),
    /// The key value is not standard base64.
    #[error("node key value is not valid base64: {0}")]
    BadBase64(String),
    /// The key value decodes to the wrong number of bytes.
    #[error("node key value has {0} bytes, expected 64 (seed and public key)")]
    WrongLength(usize),
    /// The public half does not belong to the seed.
    #[error("node key is corrupt: its public key does not match its private key")]
    PublicKeyMismatch,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct NodeKeyFile {
    priv_key: TypedValue,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TypedValue {
    #[serde(rename = "type")]
    key_type: String,
    value: String,
}

impl NodeKey {
    /// Builds the key from its 32-byte Ed25519 seed (the first half of Go's 64-byte private key).
    #[must_use]
    pub fn from_seed(seed: [u8; 32]) -> Self {
        NodeKey {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Generates a fresh key from the caller's RNG (use a cryptographically secure one for a
    /// real node; a seeded one in tests).
    #[must_use]
    pub fn generate(rng: &mut impl rand_core::RngCore) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        NodeKey::from_seed(seed)
    }

    /// The 32-byte seed.
    #[must_use]
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The 32-byte Ed25519 public key.
    #[must_use]
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Go's 64-byte private key layout: `seed || public key`.
    #[must_use]
    pub fn to_keypair_bytes(&self) -> [u8; 64] {
        self.signing.to_keypair_bytes()
    }

    /// The node id derived from the public key.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.public_key())
    }

    /// Signs `message` with plain Ed25519 (RFC 8032, not prehashed).
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The contents of `node_key.json` exactly as CometBFT writes them (compact, no newline).
    #[must_use]
    pub fn to_json(&self) -> String {
        let file = NodeKeyFile {
            priv_key: TypedValue {
                key_type: PRIV_KEY_ED25519_TYPE.to_owned(),
                value: BASE64.encode(self.to_keypair_bytes()),
            },
        };
        // Two string fields of known content: serialization cannot fail.
        serde_json::to_string(&file).unwrap_or_default()
    }

    /// Reads the contents of a `node_key.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, NodeKeyError> {
        let file: NodeKeyFile = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => NodeKeyError::BadShape(e.to_string()),
            _ => NodeKeyError::NotJson(e.to_string()),
        })?;
        if file.priv_key.key_type != PRIV_KEY_ED25519_TYPE {
            return Err(NodeKeyError::WrongKeyType(file.priv_key.key_type));
        }
        let raw = BASE64
            .decode(file.priv_key.value.as_bytes())
            .map_err(|e| NodeKeyError::BadBase64(e.to_string()))?;
        let pair: [u8; 64] = raw
            .as_slice()
            .try_into()
            .map_err(|_| NodeKeyError::WrongLength(raw.len()))?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&pair[..32]);
        let key = NodeKey::from_seed(seed);
        if key.public_key()[..] != pair[32..] {
            return Err(NodeKeyError::PublicKeyMismatch);
        }
        Ok(key)
    }
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.node_id())
    }
}
