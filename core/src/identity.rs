//! The node key (Ed25519) and CometBFT's `node_key.json` (spec 1.2).

use ed25519_dalek::{Signer, SigningKey};

use crate::ids::NodeId;

/// A node's long-term Ed25519 key; its public half determines the [`NodeId`].
#[derive(Clone)]
pub struct NodeKey {
    signing: SigningKey,
}

impl NodeKey {
    /// Builds the key from its 32-byte Ed25519 seed (the first half of Go's 64-byte private key).
    #[must_use]
    pub fn from_seed(seed: [u8; 32]) -> Self {
        NodeKey {
            signing: SigningKey::from_bytes(&seed),
        }
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
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.node_id())
    }
}
