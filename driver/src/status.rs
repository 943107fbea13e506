//! What the node reports about itself and its peers: shared by the driver task, which fills
//! it in, and the `Handle`, which returns it.

use cometmesh_core::conn::ConnStats;
use cometmesh_core::engine::{Counters, HeldStats, PeerInfo};

/// Traffic of one connection, counted by the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// Bytes read from the socket.
    pub bytes_received: u64,
    /// Bytes flushed to the socket.
    pub bytes_sent: u64,
    /// Application messages received.
    pub messages_received: u64,
    /// Application messages queued with `send` or `broadcast`.
    pub messages_sent: u64,
}

/// A connected peer: what the engine knows (NodeInfo, direction, origin) and its traffic.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PeerStatus {
    /// The engine's record, with the peer's NodeInfo.
    pub info: PeerInfo,
    /// Traffic counters of the driver.
    pub stats: PeerStats,
    /// The connection's own counters: per channel (bytes, queued messages) and on the wire.
    pub conn: ConnStats,
}

/// A summary of the node.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct NodeStatus {
    /// Peers up, inbound.
    pub inbound: usize,
    /// Peers up, outbound.
    pub outbound: usize,
    /// Open connections, peers or not.
    pub connections: usize,
    /// Addresses in the address book.
    pub book_len: usize,
    /// The engine's counters.
    pub counters: Counters,
    /// Messages of channels whose inbox was dropped, discarded.
    pub inbox_discarded: u64,
    /// What the engine holds for peers stalled by full inboxes.
    pub held: HeldStats,
}
