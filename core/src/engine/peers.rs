//! The peer table's public view: [`PeerInfo`], [`PeerState`], [`Origin`], [`Counters`]. Bans
//! live in the address book (one persisted list, see `addrbook/bans.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::conn::{Direction, NodeInfo};
use crate::ids::{ConnId, NodeId};

/// Where a peer is in its life cycle (issue 5, item 2).
///
/// ```text
/// candidate ──▶ dialing ──▶ handshaking ──▶ connected ──▶ reconnecting (persistent) ─▶ dialing …
///                  │             │              └──────▶ gone (forgotten)
///                  └─────────────┴─ failure ──▶ reconnecting (persistent) or gone
/// banned: a provable protocol violation; refused until the ban expires (24 h)
/// ```
///
/// "Gone" peers are not tracked at all: [`Engine::peer_state`](super::Engine::peer_state) returns
/// `None` for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PeerState {
    /// A persistent peer not yet dialled.
    Candidate,
    /// A TCP dial is in progress.
    Dialing,
    /// TCP is up; the SecretConnection/NodeInfo handshake is running.
    Handshaking,
    /// The peer is up.
    Connected,
    /// A persistent peer waits for its next redial.
    Reconnecting,
    /// The peer is banned.
    Banned,
}

/// Why a connection exists: who asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// The remote dialled us.
    Inbound,
    /// The ensure-peers pass picked the address from the book (counts for G7).
    Auto,
    /// A configured persistent peer.
    Persistent,
    /// A configured seed.
    Seed,
    /// The seed-mode crawler.
    Crawl,
    /// The application called [`Engine::dial`](super::Engine::dial).
    App,
    /// A feeler: one short test connection, closed once the handshake is done (G11, see
    /// [`feeler`](super::feeler)); it never becomes a peer.
    Feeler,
}

/// A connected peer.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer's node id.
    pub id: NodeId,
    /// The connection carrying it.
    pub conn: ConnId,
    /// Who dialled.
    pub direction: Direction,
    /// Why the connection was made.
    pub origin: Origin,
    /// The NodeInfo it sent (one copy per peer, shared with its connection and events).
    pub info: Arc<NodeInfo>,
    /// The remote socket address of the connection.
    pub remote: SocketAddr,
    /// Listed in `persistent_peers`.
    pub persistent: bool,
    /// Listed in `unconditional_peer_ids` (not counted against the limits).
    pub unconditional: bool,
    /// When the peer came up.
    pub since: Instant,
}

impl PeerInfo {
    /// Whether the peer counts against `max_num_inbound_peers`.
    #[must_use]
    pub fn counts_inbound(&self) -> bool {
        self.direction == Direction::Inbound && !self.unconditional
    }

    /// Whether the peer counts against `max_num_outbound_peers`.
    #[must_use]
    pub fn counts_outbound(&self) -> bool {
        self.direction == Direction::Outbound && !self.unconditional
    }
}

/// Monotonic counters of what the engine did, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Dials started.
    pub dials: u64,
    /// Dials that failed before the peer came up.
    pub dial_failures: u64,
    /// Inbound connections admitted.
    pub accepted: u64,
    /// Inbound connections refused at admission.
    pub refused: u64,
    /// Admitted inbound connections that failed before their peer came up.
    pub inbound_failures: u64,
    /// Peers that came up.
    pub peers_up: u64,
    /// Peers that went down.
    pub peers_down: u64,
    /// Duplicate connections closed.
    pub duplicates: u64,
    /// Bans imposed.
    pub bans: u64,
    /// PEX requests sent.
    pub pex_requests_sent: u64,
    /// PEX requests answered.
    pub pex_requests_answered: u64,
    /// PEX replies received and accepted.
    pub pex_addrs_received: u64,
    /// Application messages received.
    pub messages: u64,
    /// Feeler connections started (G11).
    pub feelers: u64,
    /// Feelers whose handshake completed (the address was marked good).
    pub feelers_reached: u64,
    /// Received application messages discarded because their peer was disconnected while
    /// they waited for room in a flow-controlled channel.
    pub messages_discarded: u64,
}
