//! [`Acceptor`]: the front half of an inbound connection on a port that several chains share.
//!
//! A seed serving several chains on one TCP port cannot know, when a peer connects, which chain
//! it belongs to: that is in the peer's NodeInfo, which comes after the SecretConnection
//! handshake. The acceptor runs that handshake with the port's node key (so every chain on a
//! shared port has the same node key) and reads the peer's NodeInfo **without sending ours**:
//! CometBFT writes its NodeInfo without waiting for the other side's (`p2p/transport.go`,
//! `handshake`: one goroutine writes, one reads, in v0.34, v0.38 and v0.40 alike), so this
//! costs no round trip. The result, [`Routed`], names the peer's chain; the caller hands it to
//! that chain's engine ([`Engine::accept_routed`](crate::engine::Engine::accept_routed)), which
//! checks the NodeInfo as for any inbound peer, sends its own NodeInfo and runs the
//! MConnection. A peer of a chain the port does not serve is refused with
//! [`RouteRefusal::UnknownChain`] and never sees a NodeInfo of ours.
//!
//! Sans-IO like [`PeerConnection`](super::PeerConnection): bytes in, bytes out, one deadline
//! per phase. Drive it until [`Acceptor::is_done`], writing every
//! [`Acceptor::poll_transmit`], then take the decision with [`Acceptor::take_outcome`].

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::connection::classify_node_info;
use super::error::{CloseReason, ProtocolViolation, TimeoutKind};
use super::nodeinfo::NodeInfo;
use crate::identity::NodeKey;
use crate::ids::NodeId;
use crate::secret::{Handshake, Opener, Sealer};
use crate::wire::codec::read_length_prefix;
use crate::wire::limits::MAX_NODE_INFO_SIZE;

/// An authenticated inbound connection whose peer sent its NodeInfo, ready for the engine of
/// the peer's chain. Holds the SecretConnection state and the received plaintext (the
/// NodeInfo frame and whatever followed it), untouched.
pub struct Routed {
    pub(crate) sealer: Sealer,
    pub(crate) opener: Box<Opener>,
    pub(crate) plain: BytesMut,
    pub(crate) remote_id: NodeId,
    pub(crate) info: NodeInfo,
    pub(crate) wire_received: u64,
    pub(crate) wire_sent: u64,
}

impl std::fmt::Debug for Routed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routed")
            .field("remote_id", &self.remote_id)
            .field("network", &self.info.network)
            .finish_non_exhaustive()
    }
}

impl Routed {
    /// The chain (`network`) the peer says it belongs to.
    #[must_use]
    pub fn chain_id(&self) -> &str {
        &self.info.network
    }

    /// The peer's authenticated node id.
    #[must_use]
    pub fn remote_id(&self) -> NodeId {
        self.remote_id
    }

    /// The NodeInfo the peer sent (decoded, not yet checked against a chain's NodeInfo).
    #[must_use]
    pub fn node_info(&self) -> &NodeInfo {
        &self.info
    }
}

/// Why an inbound connection on a shared port was not handed to any chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteRefusal {
    /// The handshake failed, timed out or the socket closed before the peer's NodeInfo.
    #[error("handshake: {0}")]
    Handshake(CloseReason),
    /// The peer belongs to a chain this port does not serve.
    #[error("unknown chain {chain_id:?} (peer {peer})")]
    UnknownChain {
        /// The chain id the peer sent.
        chain_id: String,
        /// The peer's authenticated id.
        peer: NodeId,
    },
}

// The NodeInfo phase is where the acceptor waits; boxing its sealer would only add an
// indirection (as `PeerConnection`'s phases).
#[allow(clippy::large_enum_variant)]
enum Phase {
    Secret(Box<Handshake>),
    NodeInfo {
        sealer: Sealer,
        opener: Box<Opener>,
        plain: BytesMut,
        remote_id: NodeId,
    },
    Done,
}

/// The front half of an inbound connection on a shared port: SecretConnection, then the
/// peer's NodeInfo, then a routing decision.
pub struct Acceptor {
    phase: Phase,
    phase_timeout: Duration,
    deadline: Instant,
    out: BytesMut,
    outcome: Option<Result<Routed, RouteRefusal>>,
    wire_received: u64,
    wire_sent: u64,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("deadline", &self.deadline)
            .field("done", &self.outcome.is_some())
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Starts the handshake with the port's `key`; `ephemeral_secret` comes from the caller's
    /// seeded RNG; each phase (SecretConnection, NodeInfo) has `phase_timeout`.
    #[must_use]
    pub fn new(
        now: Instant,
        key: &NodeKey,
        ephemeral_secret: [u8; 32],
        phase_timeout: Duration,
    ) -> Acceptor {
        Acceptor {
            phase: Phase::Secret(Box::new(Handshake::new(key, ephemeral_secret))),
            phase_timeout,
            deadline: now + phase_timeout,
            out: BytesMut::new(),
            outcome: None,
            wire_received: 0,
            wire_sent: 0,
        }
    }

    /// Bytes read from the socket, in any chunking.
    pub fn handle_received(&mut self, now: Instant, bytes: &[u8]) {
        self.wire_received += bytes.len() as u64;
        let r = match &mut self.phase {
            Phase::Secret(hs) => hs.handle_received(bytes).map_err(CloseReason::Handshake),
            Phase::NodeInfo { opener, plain, .. } => {
                opener.open(bytes, plain).map_err(CloseReason::Frame)
            }
            Phase::Done => return,
        };
        match r {
            Ok(()) => self.advance(now),
            Err(e) => self.fail(e),
        }
    }

    /// The socket reached end of stream before the outcome.
    pub fn handle_eof(&mut self, _now: Instant) {
        if !matches!(self.phase, Phase::Done) {
            self.fail(CloseReason::RemoteClosed);
        }
    }

    /// A deadline from [`Self::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let kind = match self.phase {
            Phase::Secret(_) => TimeoutKind::SecretHandshake,
            Phase::NodeInfo { .. } => TimeoutKind::NodeInfo,
            Phase::Done => return,
        };
        if now >= self.deadline {
            self.fail(CloseReason::Timeout(kind));
        }
    }

    /// Bytes to write to the socket (handshake messages only).
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        if let Phase::Secret(hs) = &mut self.phase {
            while let Some(b) = hs.poll_transmit() {
                self.out.extend_from_slice(&b);
            }
            self.advance(now);
        }
        if self.out.is_empty() {
            return None;
        }
        let b = std::mem::take(&mut self.out).freeze();
        self.wire_sent += b.len() as u64;
        Some(b)
    }

    /// When [`Self::handle_timeout`] should be called, until the outcome.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Done => None,
            _ => Some(self.deadline),
        }
    }

    /// The peer's authenticated id, once the SecretConnection handshake is done.
    #[must_use]
    pub fn remote_id(&self) -> Option<NodeId> {
        match &self.phase {
            Phase::NodeInfo { remote_id, .. } => Some(*remote_id),
            _ => self.outcome.as_ref().and_then(|o| match o {
                Ok(r) => Some(r.remote_id),
                Err(RouteRefusal::UnknownChain { peer, .. }) => Some(*peer),
                Err(_) => None,
            }),
        }
    }

    /// Whether the outcome is known.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.outcome.is_some()
    }

    /// Takes the outcome once known: the routed connection if the peer's chain is in
    /// `chains`, else why not. Transmits are all handed out by then.
    pub fn take_outcome(
        &mut self,
        chains: &BTreeSet<String>,
    ) -> Option<Result<Routed, RouteRefusal>> {
        match self.outcome.take()? {
            Ok(r) if !chains.contains(r.chain_id()) => Some(Err(RouteRefusal::UnknownChain {
                chain_id: r.info.network.clone(),
                peer: r.remote_id,
            })),
            other => Some(other),
        }
    }

    fn fail(&mut self, reason: CloseReason) {
        self.phase = Phase::Done;
        self.out = BytesMut::new();
        self.outcome = Some(Err(RouteRefusal::Handshake(reason)));
    }

    fn advance(&mut self, now: Instant) {
        if let Phase::Secret(hs) = &self.phase {
            if !hs.is_complete() {
                return;
            }
            let Phase::Secret(hs) = std::mem::replace(&mut self.phase, Phase::Done) else {
                return;
            };
            let session = match hs.into_session() {
                Ok(s) => s,
                Err(e) => return self.fail(CloseReason::Handshake(e)),
            };
            let remote_id = NodeId::from_public_key(&session.remote_public_key);
            let mut opener = Box::new(session.opener);
            let mut plain = BytesMut::new();
            // Bytes that came after the peer's AuthSig.
            if let Err(e) = opener.open(&[], &mut plain) {
                return self.fail(CloseReason::Frame(e));
            }
            self.deadline = now + self.phase_timeout;
            self.phase = Phase::NodeInfo {
                sealer: session.sealer,
                opener,
                plain,
                remote_id,
            };
        }
        if let Phase::NodeInfo { plain, .. } = &self.phase {
            let (body_len, prefix_len) = match read_length_prefix(plain, MAX_NODE_INFO_SIZE) {
                Ok(Some(v)) => v,
                Ok(None) => return,
                Err(e) => {
                    return self.fail(ProtocolViolation::UndecodableNodeInfo(e).into());
                }
            };
            if plain.len() < prefix_len + body_len {
                return;
            }
            let info = match classify_node_info(&plain[prefix_len..prefix_len + body_len]) {
                Ok(info) => info,
                Err(reason) => return self.fail(reason),
            };
            let Phase::NodeInfo {
                sealer,
                opener,
                plain,
                remote_id,
            } = std::mem::replace(&mut self.phase, Phase::Done)
            else {
                return;
            };
            self.outcome = Some(Ok(Routed {
                sealer,
                opener,
                plain,
                remote_id,
                info,
                wire_received: self.wire_received,
                wire_sent: self.wire_sent + self.out.len() as u64,
            }));
        }
    }
}
