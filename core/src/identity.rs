//! The node key (Ed25519) and CometBFT's `node_key.json` (spec 1.2).
