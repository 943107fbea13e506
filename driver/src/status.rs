//! What the node reports about itself and its peers: shared by the driver task, which fills
//! it in, and the `Handle`, which returns it.

use cometmesh_core::ChannelId;
use cometmesh_core::conn::ConnStats;
use cometmesh_core::engine::{Counters, HeldStats, PeerInfo};

/// Traffic of one connection in the application's terms, derived from the connection's own
/// counters ([`ConnStats`]: the one source of these figures) by [`PeerStats::from_conn`].
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

impl PeerStats {
    /// The figures of a connection: bytes read and flushed on the wire, messages on the
    /// application's channels (PEX, the engine's own, excluded).
    #[must_use]
    pub fn from_conn(conn: &ConnStats) -> PeerStats {
        let app = conn.channels.iter().filter(|c| c.id != ChannelId::PEX);
        let (sent, received) = app.fold((0, 0), |(s, r), c| {
            (s + c.messages_sent, r + c.messages_received)
        });
        PeerStats {
            bytes_received: conn.wire_bytes_received,
            bytes_sent: conn.wire_bytes_flushed,
            messages_received: received,
            messages_sent: sent,
        }
    }
}

/// A connected peer: what the engine knows (NodeInfo, direction, origin) and its traffic.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PeerStatus {
    /// The engine's record, with the peer's NodeInfo.
    pub info: PeerInfo,
    /// Traffic in the application's terms (derived from `conn`).
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

#[cfg(test)]
mod tests {
    use super::*;
    use cometmesh_core::conn::ChannelStats;

    fn channel(id: u8, sent: u64, received: u64) -> ChannelStats {
        ChannelStats {
            id: ChannelId(id),
            bytes_sent: 0,
            bytes_received: 0,
            messages_sent: sent,
            messages_received: received,
            queued_messages: 0,
            pending_bytes: 0,
        }
    }

    /// A peer's figures are the connection's: flushed and read wire bytes, and messages of the
    /// application's channels summed, PEX's left out.
    #[test]
    fn peer_stats_derive_from_the_connection_without_pex() {
        let conn = ConnStats {
            channels: vec![
                channel(0x20, 3, 4),
                channel(0x30, 5, 6),
                channel(0x00, 70, 80),
            ],
            wire_bytes_sent: 1000,
            wire_bytes_flushed: 900,
            wire_bytes_received: 1200,
            unflushed_bytes: 100,
        };
        let s = PeerStats::from_conn(&conn);
        assert_eq!(
            (
                s.bytes_sent,
                s.bytes_received,
                s.messages_sent,
                s.messages_received
            ),
            (900, 1200, 8, 10)
        );
        assert_eq!(
            PeerStats::from_conn(&ConnStats::default()),
            PeerStats::default()
        );
    }
}
