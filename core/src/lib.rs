//! # cometmesh-core
//!
//! The pure, sans-IO heart of cometmesh: a CometBFT-compatible (v0.34 through v0.40, p2p
//! protocol 8; v1.0, protocol 9, the same wire) peer-to-peer layer that turns inputs (bytes
//! received, timers, dial results, application commands) into outputs (bytes to send, dials,
//! disconnects, events). It owns no sockets, reads no clock and draws no OS randomness: time is
//! passed in as `now`, randomness comes from a caller-supplied seed, so the same inputs always
//! give the same outputs.
//!
//! Layers, bottom up:
//! - [`ids`], [`identity`] and [`addr`]: node ids, node keys and `id@host:port` addresses;
//! - [`wire`]: protobuf messages and the length-delimited codec with the spec's size limits;
//! - [`secret`]: the SecretConnection handshake and its 1044-byte encrypted frames;
//! - [`conn`]: one peer connection: NodeInfo exchange and MConnection channels;
//! - [`addrbook`]: the eclipse-resistant address book;
//! - [`engine`]: the switch, peer life cycle and PEX reactor as one state machine;
//! - [`crawl`]: the network crawler, fed by the same inputs as the engine.

#![forbid(unsafe_code)]

pub mod addr;
pub mod addrbook;
pub mod conn;
pub mod crawl;
pub(crate) mod crypto;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod identity;
pub mod ids;
pub mod secret;
pub mod wire;

pub use ids::{ChannelId, ConnId, NodeId};
pub mod engine;
#[cfg(any(feature = "sim", feature = "fuzzing"))]
pub mod sim;
