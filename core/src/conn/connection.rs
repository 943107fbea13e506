//! [`PeerConnection`]: SecretConnection handshake → NodeInfo exchange → MConnection, as one
//! sans-IO state machine (spec 2, 3.2–3.4, 4).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use prost::Message as _;

use super::channel::ChannelDescriptor;
use super::config::ConnectionConfig;
use super::error::{CloseReason, ProtocolViolation, SendError, TimeoutKind};
use super::mconn::{ConnStats, FLUSH_THRESHOLD, MConnection};
use super::nodeinfo::{NodeInfo, NodeInfoError};
use crate::identity::NodeKey;
use crate::ids::{ChannelId, NodeId};
use crate::secret::{Handshake, Opener, Sealer};
use crate::wire::codec::{CodecError, encode_delimited, read_length_prefix};
use crate::wire::limits::MAX_NODE_INFO_SIZE;
use crate::wire::proto;

/// Which side opened the TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The peer dialled us.
    Inbound,
    /// We dialled the peer.
    Outbound,
}

/// What a connection reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// The handshake completed: the peer is authenticated and its NodeInfo is valid and
    /// compatible. Sending is possible from now on.
    Established {
        /// The peer's NodeInfo, shared with the connection (behind a pointer: the much more
        /// frequent `Message` events then move 40 bytes through the queues instead of a
        /// NodeInfo's 216).
        remote: Arc<NodeInfo>,
    },
    /// A complete message arrived on a channel.
    Message {
        /// The channel.
        channel: ChannelId,
        /// The message bytes (the reactor's protobuf encoding).
        payload: Bytes,
    },
    /// The connection is closed; nothing more will be sent or delivered. Always the last event.
    Closed(CloseReason),
}

// `Established` is the long-lived state; boxing it would only add an indirection per call.
#[allow(clippy::large_enum_variant)]
enum Phase {
    /// Running the SecretConnection handshake.
    Secret(Box<Handshake>),
    /// Authenticated; waiting for the peer's NodeInfo in `plain`.
    NodeInfo {
        sealer: Sealer,
        opener: Box<Opener>,
        plain: BytesMut,
    },
    /// The MConnection runs.
    Established {
        sealer: Sealer,
        opener: Box<Opener>,
        mconn: MConnection,
    },
    /// Nothing more happens.
    Closed,
}

/// One peer connection: TCP bytes in, TCP bytes, events and deadlines out.
///
/// Drive it like every sans-IO machine here: after each `handle_*` call, drain
/// [`Self::poll_transmit`] (write the bytes, then report them with [`Self::handle_sent`]) and
/// [`Self::poll_event`], then sleep until [`Self::poll_timeout`] and call
/// [`Self::handle_timeout`].
pub struct PeerConnection {
    config: Arc<ConnectionConfig>,
    channels: Arc<[ChannelDescriptor]>,
    local: Arc<NodeInfo>,
    direction: Direction,
    expected_peer: Option<NodeId>,
    phase: Phase,
    deadline: Instant,
    remote_id: Option<NodeId>,
    /// The peer's NodeInfo passed every check (`remote_info` is then `received_info`).
    established: bool,
    received_info: Option<Arc<NodeInfo>>,
    adopt_network: bool,
    out: BytesMut,
    in_flight: usize,
    closing: bool,
    closed: bool,
    events: VecDeque<ConnEvent>,
    wire_sent: u64,
    wire_received: u64,
}

impl std::fmt::Debug for PeerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnection")
            .field("direction", &self.direction)
            .field("remote_id", &self.remote_id)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl PeerConnection {
    /// Starts a connection. `ephemeral_secret` is 32 bytes from the caller's seeded RNG;
    /// `expected_peer` is the id we dialled (outbound), checked against the authenticated key.
    #[allow(clippy::too_many_arguments)]
    #[must_use]
    pub fn new(
        now: Instant,
        config: Arc<ConnectionConfig>,
        channels: Arc<[ChannelDescriptor]>,
        local: Arc<NodeInfo>,
        key: &NodeKey,
        ephemeral_secret: [u8; 32],
        direction: Direction,
        expected_peer: Option<NodeId>,
    ) -> PeerConnection {
        PeerConnection {
            deadline: now + config.handshake_timeout,
            phase: Phase::Secret(Box::new(Handshake::new(key, ephemeral_secret))),
            config,
            channels,
            local,
            direction,
            expected_peer,
            remote_id: None,
            established: false,
            received_info: None,
            adopt_network: false,
            out: BytesMut::new(),
            in_flight: 0,
            closing: false,
            closed: false,
            events: VecDeque::new(),
            wire_sent: 0,
            wire_received: 0,
        }
    }

    /// Continues an inbound connection that an [`Acceptor`](super::acceptor::Acceptor) of a
    /// shared port authenticated and routed here: the peer's NodeInfo is checked against
    /// `local` (this chain's), ours is sent, and the MConnection starts, exactly as for a
    /// connection that ran its handshake here.
    #[must_use]
    pub fn from_routed(
        now: Instant,
        config: Arc<ConnectionConfig>,
        channels: Arc<[ChannelDescriptor]>,
        local: Arc<NodeInfo>,
        routed: super::acceptor::Routed,
    ) -> PeerConnection {
        let super::acceptor::Routed {
            mut sealer,
            opener,
            plain,
            remote_id,
            wire_received,
            wire_sent,
            ..
        } = routed;
        let mut out = BytesMut::new();
        let mut ours = BytesMut::new();
        encode_delimited(&local.to_proto(), &mut ours);
        let sealed = sealer.seal(&ours, &mut out);
        let mut pc = PeerConnection {
            deadline: now + config.handshake_timeout,
            phase: Phase::NodeInfo {
                sealer,
                opener,
                plain,
            },
            config,
            channels,
            local,
            direction: Direction::Inbound,
            expected_peer: None,
            remote_id: Some(remote_id),
            established: false,
            received_info: None,
            adopt_network: false,
            out,
            in_flight: 0,
            closing: false,
            closed: false,
            events: VecDeque::new(),
            wire_sent,
            wire_received,
        };
        match sealed {
            Ok(()) => pc.advance(now),
            Err(e) => pc.close(CloseReason::Frame(e)),
        }
        pc
    }

    /// Observer mode for a crawler that does not know the chain id yet (call it before the
    /// first input): our NodeInfo is sent only once the peer's has arrived, with the peer's
    /// `network` in it. CometBFT writes its NodeInfo without waiting for ours, so this costs
    /// no round trip; the peer never sees a chain id it would refuse.
    pub fn adopt_peer_network(&mut self) {
        self.adopt_network = true;
    }

    /// The NodeInfo the peer sent, once decoded, even if it was then rejected (another
    /// chain, an invalid field, a wrong id). A crawler records it either way.
    #[must_use]
    pub fn received_node_info(&self) -> Option<&NodeInfo> {
        self.received_info.as_deref()
    }

    /// Which side dialled.
    #[must_use]
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Bytes read from the socket, in any chunking.
    pub fn handle_received(&mut self, now: Instant, bytes: &[u8]) {
        if self.closed {
            return;
        }
        self.wire_received += bytes.len() as u64;
        let result = match &mut self.phase {
            Phase::Secret(hs) => hs.handle_received(bytes).map_err(CloseReason::Handshake),
            Phase::NodeInfo { opener, plain, .. } => {
                opener.open(bytes, plain).map_err(CloseReason::Frame)
            }
            Phase::Established { opener, mconn, .. } => {
                match opener.open(bytes, mconn.recv_buf_mut()) {
                    Ok(()) => {
                        let r = mconn.handle_plaintext(now, &[]);
                        self.drain_messages();
                        if let Err(reason) = r {
                            self.close(reason);
                        }
                        Ok(())
                    }
                    Err(e) => Err(CloseReason::Frame(e)),
                }
            }
            Phase::Closed => Ok(()),
        };
        if let Err(e) = result {
            self.close(e);
            return;
        }
        self.advance(now);
    }

    /// The socket reached end of stream: closes with [`CloseReason::RemoteClosed`], or with the
    /// SecretConnection error if the stream ended inside the handshake or inside a frame.
    /// Messages already complete are delivered before the `Closed` event.
    pub fn handle_eof(&mut self, _now: Instant) {
        let reason = match &mut self.phase {
            Phase::Secret(hs) => match hs.handle_eof() {
                Err(e) => CloseReason::Handshake(e),
                Ok(()) => CloseReason::RemoteClosed,
            },
            Phase::NodeInfo { opener, .. } | Phase::Established { opener, .. } => {
                match opener.finish() {
                    Err(e) => CloseReason::Frame(e),
                    Ok(()) => CloseReason::RemoteClosed,
                }
            }
            Phase::Closed => return,
        };
        self.close(reason);
    }

    /// The socket took `len` of the bytes handed out by [`Self::poll_transmit`].
    pub fn handle_sent(&mut self, _now: Instant, len: usize) {
        self.in_flight = self.in_flight.saturating_sub(len);
        self.check_flushed();
    }

    /// A deadline from [`Self::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Secret(_) if now >= self.deadline => {
                self.close(CloseReason::Timeout(TimeoutKind::SecretHandshake));
            }
            Phase::NodeInfo { .. } if now >= self.deadline => {
                self.close(CloseReason::Timeout(TimeoutKind::NodeInfo));
            }
            Phase::Established { mconn, .. } => {
                let r = mconn.handle_timeout(now);
                self.drain_messages();
                if let Err(reason) = r {
                    self.close(reason);
                }
            }
            _ => {}
        }
    }

    /// Bytes to write to the socket, within the unflushed-bytes budget.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        if self.closed {
            return None;
        }
        if let Phase::Secret(hs) = &mut self.phase {
            while let Some(b) = hs.poll_transmit() {
                self.out.extend_from_slice(&b);
            }
            self.advance(now);
        }
        if let Phase::Established { sealer, mconn, .. } = &mut self.phase {
            let used = self.in_flight + self.out.len();
            let room = self.config.send_budget.saturating_sub(used);
            // The ping also trims the connection's empty queues; the event queue is ours.
            if mconn.ping_due(now) && self.events.is_empty() {
                self.events = VecDeque::new();
            }
            let plain = if self.closing {
                mconn.poll_plaintext_now(now, room)
            } else {
                mconn.poll_plaintext(now, room)
            };
            if let Some(plain) = plain
                && let Err(e) = sealer.seal(&plain, &mut self.out)
            {
                self.close(CloseReason::Frame(e));
                return None;
            }
        }
        if self.closed || self.out.is_empty() {
            self.check_flushed();
            return None;
        }
        let bytes = std::mem::take(&mut self.out).freeze();
        self.in_flight += bytes.len();
        self.wire_sent += bytes.len() as u64;
        Some(bytes)
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] (and then [`Self::poll_transmit`]) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Secret(_) | Phase::NodeInfo { .. } => Some(self.deadline),
            Phase::Established { mconn, .. } => mconn.poll_timeout(),
            Phase::Closed => None,
        }
    }

    /// Queues `msg` on `channel`.
    pub fn send(&mut self, _now: Instant, channel: ChannelId, msg: Bytes) -> Result<(), SendError> {
        if self.closed || self.closing {
            return Err(SendError::Closed);
        }
        if !self.channels.iter().any(|d| d.id == channel) {
            return Err(SendError::UnknownChannel(channel));
        }
        match &mut self.phase {
            Phase::Established { mconn, .. } => mconn.send(channel, msg),
            _ => Err(SendError::NotEstablished),
        }
    }

    /// Whether [`Self::send`] on `channel` would be accepted now.
    #[must_use]
    pub fn can_send(&self, channel: ChannelId) -> bool {
        match &self.phase {
            Phase::Established { mconn, .. } if !self.closing => mconn.can_send(channel),
            _ => false,
        }
    }

    /// Closes at once: nothing more is sent; the last event is `Closed(reason)`.
    pub fn close(&mut self, reason: CloseReason) {
        if self.closed {
            return;
        }
        self.drain_messages();
        self.closed = true;
        self.phase = Phase::Closed;
        self.out = BytesMut::new();
        self.events.push_back(ConnEvent::Closed(reason));
    }

    /// Closes gracefully: stops accepting sends, sends what is queued (without waiting for the
    /// flush throttle), and reports `Closed(Local)` once the socket has taken every byte.
    pub fn close_after_flush(&mut self) {
        if self.closed {
            return;
        }
        if !matches!(self.phase, Phase::Established { .. }) {
            self.close(CloseReason::Local);
            return;
        }
        self.closing = true;
        self.check_flushed();
    }

    /// Whether the connection is closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The peer's NodeInfo once established.
    #[must_use]
    pub fn remote_info(&self) -> Option<&NodeInfo> {
        self.received_info.as_deref().filter(|_| self.established)
    }

    /// The peer's authenticated id once the SecretConnection handshake is done.
    #[must_use]
    pub fn remote_id(&self) -> Option<NodeId> {
        self.remote_id
    }

    /// Whether the adapter should keep reading: false while received data waits for the
    /// receive rate limit (read again after the next timeout).
    #[must_use]
    pub fn wants_read(&self) -> bool {
        match &self.phase {
            Phase::Established { mconn, .. } => mconn.recv_backlog() < FLUSH_THRESHOLD,
            Phase::Closed => false,
            _ => true,
        }
    }

    /// Traffic counters.
    #[must_use]
    pub fn stats(&self) -> ConnStats {
        ConnStats {
            channels: match &self.phase {
                Phase::Established { mconn, .. } => mconn.channel_stats(),
                _ => Vec::new(),
            },
            wire_bytes_sent: self.wire_sent,
            wire_bytes_flushed: self.wire_sent.saturating_sub(self.in_flight as u64),
            wire_bytes_received: self.wire_received,
            unflushed_bytes: self.in_flight + self.out.len(),
        }
    }

    fn drain_messages(&mut self) {
        if let Phase::Established { mconn, .. } = &mut self.phase {
            while let Some((channel, payload)) = mconn.poll_message() {
                self.events
                    .push_back(ConnEvent::Message { channel, payload });
            }
        }
    }

    fn check_flushed(&mut self) {
        if !self.closing || self.closed {
            return;
        }
        if let Phase::Established { mconn, .. } = &self.phase
            && !mconn.has_pending_send()
            && self.out.is_empty()
            && self.in_flight == 0
        {
            self.close(CloseReason::Local);
        }
    }

    /// Moves through the phases as far as the data at hand allows.
    fn advance(&mut self, now: Instant) {
        if let Phase::Secret(hs) = &self.phase {
            if !hs.is_complete() {
                return;
            }
            let Phase::Secret(hs) = std::mem::replace(&mut self.phase, Phase::Closed) else {
                return;
            };
            let session = match hs.into_session() {
                Ok(s) => s,
                Err(e) => return self.close(CloseReason::Handshake(e)),
            };
            let authenticated = NodeId::from_public_key(&session.remote_public_key);
            self.remote_id = Some(authenticated);
            if let Some(dialled) = self.expected_peer
                && dialled != authenticated
            {
                return self.close(
                    NodeInfoError::DialedIdMismatch {
                        dialled,
                        authenticated,
                    }
                    .into(),
                );
            }
            let mut sealer = session.sealer;
            let mut opener = Box::new(session.opener);
            if !self.adopt_network {
                let mut ours = BytesMut::new();
                encode_delimited(&self.local.to_proto(), &mut ours);
                if let Err(e) = sealer.seal(&ours, &mut self.out) {
                    return self.close(CloseReason::Frame(e));
                }
            }
            let mut plain = BytesMut::new();
            // Flush what arrived after the peer's AuthSig into `plain`.
            if let Err(e) = opener.open(&[], &mut plain) {
                return self.close(CloseReason::Frame(e));
            }
            self.deadline = now + self.config.handshake_timeout;
            self.phase = Phase::NodeInfo {
                sealer,
                opener,
                plain,
            };
        }
        let local = self.local.clone();
        let authenticated = self.remote_id;
        if let Phase::NodeInfo { plain, .. } = &mut self.phase {
            let (body_len, prefix_len) = match read_length_prefix(plain, MAX_NODE_INFO_SIZE) {
                Ok(Some(v)) => v,
                Ok(None) => return,
                Err(e) => return self.close(ProtocolViolation::UndecodableNodeInfo(e).into()),
            };
            if plain.len() < prefix_len + body_len {
                return;
            }
            let frame = plain.split_to(prefix_len + body_len);
            let rest = std::mem::take(plain);
            let body = &frame[prefix_len..];
            let remote = match classify_node_info(body) {
                Ok(p) => p,
                Err(reason) => return self.close(reason),
            };
            let remote = Arc::new(remote);
            self.received_info = Some(remote.clone());
            let local = if self.adopt_network {
                let mut adopted = (*local).clone();
                adopted.network.clone_from(&remote.network);
                let adopted = Arc::new(adopted);
                self.local = adopted.clone();
                let mut ours = BytesMut::new();
                encode_delimited(&adopted.to_proto(), &mut ours);
                let Phase::NodeInfo { sealer, .. } = &mut self.phase else {
                    return;
                };
                if let Err(e) = sealer.seal(&ours, &mut self.out) {
                    return self.close(CloseReason::Frame(e));
                }
                adopted
            } else {
                local
            };
            if let Err(e) = check_remote(&local, authenticated, &remote) {
                return self.close(e.into());
            }
            let Phase::NodeInfo { sealer, opener, .. } =
                std::mem::replace(&mut self.phase, Phase::Closed)
            else {
                return;
            };
            let mut mconn = MConnection::new(
                now,
                self.config.clone(),
                self.channels.clone(),
                &remote.channels,
            );
            self.established = true;
            self.events.push_back(ConnEvent::Established { remote });
            let r = mconn.handle_plaintext(now, &rest);
            self.phase = Phase::Established {
                sealer,
                opener,
                mconn,
            };
            self.drain_messages();
            if let Err(reason) = r {
                self.close(reason);
            }
        }
    }
}

/// Spec 3.2 steps 6–9: validate, NodeInfo id = authenticated id, not ourselves, compatible.
fn check_remote(
    local: &NodeInfo,
    authenticated: Option<NodeId>,
    remote: &NodeInfo,
) -> Result<(), NodeInfoError> {
    {
        remote.validate()?;
        if let Some(authenticated) = authenticated
            && remote.id != authenticated
        {
            return Err(NodeInfoError::IdMismatch {
                claimed: remote.id,
                authenticated,
            });
        }
        if remote.id == local.id {
            return Err(NodeInfoError::SelfConnection);
        }
        local.compatible_with(remote)
    }
}

/// Decodes the first message after the SecretConnection handshake as a NodeInfo, telling apart
/// a peer that skipped its NodeInfo and started sending MConnection packets.
pub(crate) fn classify_node_info(body: &[u8]) -> Result<NodeInfo, CloseReason> {
    let is_packet = || proto::Packet::decode(body).is_ok_and(|p| p.sum.is_some());
    match proto::DefaultNodeInfo::decode(body) {
        Ok(p) if p.default_node_id.is_empty() && is_packet() => {
            Err(ProtocolViolation::DataBeforeHandshake.into())
        }
        Ok(p) => NodeInfo::from_proto(p).map_err(CloseReason::from),
        Err(_) if is_packet() => Err(ProtocolViolation::DataBeforeHandshake.into()),
        Err(e) => Err(ProtocolViolation::UndecodableNodeInfo(CodecError::Decode(e)).into()),
    }
}
