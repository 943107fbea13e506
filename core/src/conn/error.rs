//! Why a connection closed, and why a send was refused.

use bytes::Bytes;

use super::nodeinfo::NodeInfoError;
use crate::ids::ChannelId;
use crate::secret::{FrameError, HandshakeError};
use crate::wire::codec::CodecError;

/// Which deadline expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// The SecretConnection handshake did not finish in time.
    SecretHandshake,
    /// The peer's NodeInfo did not arrive in time.
    NodeInfo,
    /// No Pong came back within the pong timeout.
    Pong,
}

impl std::fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutKind::SecretHandshake => "secret connection handshake timed out",
            TimeoutKind::NodeInfo => "node info exchange timed out",
            TimeoutKind::Pong => "pong timeout",
        })
    }
}

/// Something the peer sent that the protocol does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// A PacketMsg for a channel we did not register (or outside 0..=255).
    #[error("unknown channel {0}")]
    UnknownChannel(i32),
    /// A Packet length prefix above the limit (1034 bytes at the default payload), refused
    /// before the body arrives.
    #[error("packet of {len} bytes exceeds the maximum of {max} bytes")]
    OversizedPacket {
        /// The claimed length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A reassembled message above the channel's `recv_message_capacity`.
    #[error("message on channel {channel} reached {size} bytes, above the maximum of {max}")]
    OversizedMessage {
        /// The channel.
        channel: ChannelId,
        /// The size the message would have reached.
        size: usize,
        /// The channel's capacity.
        max: usize,
    },
    /// A Packet that is not valid protobuf (or a length prefix that is not a uvarint).
    #[error("undecodable packet: {0}")]
    Undecodable(CodecError),
    /// A Packet with no ping, pong or message in it.
    #[error("empty packet (unknown message type)")]
    EmptyPacket,
    /// The peer sent MConnection packets where its NodeInfo belongs.
    #[error("application data before the node info handshake completed")]
    DataBeforeHandshake,
    /// The peer's NodeInfo was not a decodable NodeInfo (or exceeded 10240 bytes).
    #[error("undecodable node info: {0}")]
    UndecodableNodeInfo(CodecError),
    /// A second NodeInfo arrived where only Packets may follow the first.
    #[error("a second node info after the handshake")]
    SecondNodeInfo,
}

/// Why a connection closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The SecretConnection handshake failed.
    #[error("secret connection handshake failed: {0}")]
    Handshake(HandshakeError),
    /// A SecretConnection frame could not be opened or sealed.
    #[error("secret connection: {0}")]
    Frame(FrameError),
    /// A deadline expired.
    #[error("{0}")]
    Timeout(TimeoutKind),
    /// The peer broke the MConnection or NodeInfo protocol.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolViolation),
    /// The peer's NodeInfo was invalid, incompatible or named the wrong id.
    #[error("node info rejected: {0}")]
    NodeInfo(#[from] NodeInfoError),
    /// The peer sent faster than the receive rate limit while the adapter kept reading.
    #[error("receive backlog above {limit} bytes")]
    RecvBacklog {
        /// The configured backlog bound.
        limit: usize,
    },
    /// The peer closed the stream (at a frame boundary, after the handshake).
    #[error("connection closed by the peer")]
    RemoteClosed,
    /// Closed by our side.
    #[error("closed locally")]
    Local,
}

/// Why [`super::PeerConnection::send`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The channel's queue is full; the message is handed back.
    #[error("send queue is full")]
    Full(Bytes),
    /// We did not register this channel.
    #[error("channel {0} is not registered")]
    UnknownChannel(ChannelId),
    /// The handshake has not completed.
    #[error("connection is not established yet")]
    NotEstablished,
    /// The peer did not list this channel in its NodeInfo.
    #[error("peer did not advertise channel {0}")]
    NotAdvertisedByPeer(ChannelId),
    /// The connection is closed or closing.
    #[error("connection is closed")]
    Closed,
}
