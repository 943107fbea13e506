//! The NodeInfo each side sends after the SecretConnection handshake (spec 3.4), its validation
//! (3.5) and the compatibility check (3.6).

use smallvec::SmallVec;

use crate::ids::{ChannelId, NodeId};
use crate::wire::limits::MAX_NODE_INFO_CHANNELS;
use crate::wire::proto;

/// The p2p protocol version CometBFT v0.34–v0.40 announce (v1.0 announces 9, with the same p2p
/// wire; neither side compares it).
pub const P2P_PROTOCOL: u64 = 8;
/// The block protocol version; the only version number compared (3.6).
pub const BLOCK_PROTOCOL: u64 = 11;

/// The three protocol versions of a NodeInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolVersion {
    /// The p2p protocol (8); not compared.
    pub p2p: u64,
    /// The block protocol (11); must be equal on both sides.
    pub block: u64,
    /// The application version; not compared.
    pub app: u64,
}

impl Default for ProtocolVersion {
    fn default() -> Self {
        ProtocolVersion {
            p2p: P2P_PROTOCOL,
            block: BLOCK_PROTOCOL,
            app: 0,
        }
    }
}

/// What a node says about itself (`DefaultNodeInfo`), in typed form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Protocol versions.
    pub protocol: ProtocolVersion,
    /// The node id (must equal the id of the authenticated key).
    pub id: NodeId,
    /// The advertised listen address, e.g. `tcp://0.0.0.0:26656`.
    pub listen_addr: String,
    /// The chain id.
    pub network: String,
    /// The software version.
    pub version: String,
    /// The channels the node accepts, in its order.
    pub channels: SmallVec<[ChannelId; 16]>,
    /// A human-readable name.
    pub moniker: String,
    /// `"on"`, `"off"` or `""`.
    pub tx_index: String,
    /// The RPC listen address.
    pub rpc_address: String,
}

/// Why a NodeInfo is rejected (decoding, 3.5, 3.6 and the identity checks of 3.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeInfoError {
    /// `default_node_id` is not 40 hex characters.
    #[error("node info id {0:?} is not a valid node id")]
    InvalidId(String),
    /// `listen_addr` is not `[scheme://]host:port` with a 16-bit port.
    #[error("node info listen address {0:?} is not host:port")]
    InvalidListenAddr(String),
    /// `version` is not empty or printable ASCII.
    #[error("node info version {0:?} is not printable ascii")]
    InvalidVersion(String),
    /// More than 16 channels.
    #[error("node info lists {0} channels, at most 16 allowed")]
    TooManyChannels(usize),
    /// A channel is listed twice.
    #[error("node info lists channel {0} twice")]
    DuplicateChannel(ChannelId),
    /// `moniker` is empty or not printable ASCII.
    #[error("node info moniker {0:?} is empty or not printable ascii")]
    InvalidMoniker(String),
    /// `tx_index` is not `""`, `"on"` or `"off"`.
    #[error("node info tx_index {0:?} is not \"on\", \"off\" or empty")]
    InvalidTxIndex(String),
    /// `rpc_address` is not empty or printable ASCII.
    #[error("node info rpc address {0:?} is not printable ascii")]
    InvalidRpcAddress(String),
    /// The block protocol versions differ.
    #[error("incompatible block protocol: ours {ours}, theirs {theirs}")]
    IncompatibleBlockVersion {
        /// Our block protocol.
        ours: u64,
        /// Theirs.
        theirs: u64,
    },
    /// The chain ids differ.
    #[error("incompatible network: ours {ours:?}, theirs {theirs:?}")]
    IncompatibleNetwork {
        /// Our chain id.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// The two channel lists share no channel.
    #[error("no common channel with the peer")]
    NoCommonChannel,
    /// The NodeInfo id is not the id of the key the peer authenticated with.
    #[error("node info id {claimed} does not match the authenticated key's id {authenticated}")]
    IdMismatch {
        /// The id in the NodeInfo.
        claimed: NodeId,
        /// The id of the authenticated key.
        authenticated: NodeId,
    },
    /// We dialled one id and authenticated another.
    #[error("dialled {dialled} but the peer authenticated as {authenticated}")]
    DialedIdMismatch {
        /// The id in the address we dialled.
        dialled: NodeId,
        /// The id of the authenticated key.
        authenticated: NodeId,
    },
    /// The peer is ourselves.
    #[error("connected to ourselves")]
    SelfConnection,
}

impl NodeInfo {
    /// Our NodeInfo from configuration: protocol 8/11/0, `tx_index` "off", empty RPC address and
    /// the given channels (usually the ids of the registered channel descriptors).
    #[must_use]
    pub fn new(
        id: NodeId,
        network: impl Into<String>,
        listen_addr: impl Into<String>,
        moniker: impl Into<String>,
        channels: impl IntoIterator<Item = ChannelId>,
    ) -> Self {
        NodeInfo {
            protocol: ProtocolVersion::default(),
            id,
            listen_addr: listen_addr.into(),
            network: network.into(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            channels: channels.into_iter().collect(),
            moniker: moniker.into(),
            tx_index: "off".to_owned(),
            rpc_address: String::new(),
        }
    }

    /// The protobuf form (fields 1 and 8 always present).
    #[must_use]
    pub fn to_proto(&self) -> proto::DefaultNodeInfo {
        proto::DefaultNodeInfo {
            protocol_version: Some(proto::ProtocolVersion {
                p2p: self.protocol.p2p,
                block: self.protocol.block,
                app: self.protocol.app,
            }),
            default_node_id: self.id.to_string(),
            listen_addr: self.listen_addr.clone(),
            network: self.network.clone(),
            version: self.version.clone(),
            channels: self.channels.iter().map(|c| c.0).collect(),
            moniker: self.moniker.clone(),
            other: Some(proto::DefaultNodeInfoOther {
                tx_index: self.tx_index.clone(),
                rpc_address: self.rpc_address.clone(),
            }),
        }
    }

    /// Converts a received protobuf NodeInfo. Only the id and the channel count are checked
    /// here (more than [`MAX_NODE_INFO_CHANNELS`] is [`NodeInfoError::TooManyChannels`], so the
    /// inline channel list never spills to the heap); the other rules are [`Self::validate`]'s.
    pub fn from_proto(p: proto::DefaultNodeInfo) -> Result<Self, NodeInfoError> {
        let id = p
            .default_node_id
            .parse::<NodeId>()
            .map_err(|_| NodeInfoError::InvalidId(p.default_node_id.clone()))?;
        let pv = p.protocol_version.unwrap_or_default();
        let other = p.other.unwrap_or_default();
        if p.channels.len() > MAX_NODE_INFO_CHANNELS {
            return Err(NodeInfoError::TooManyChannels(p.channels.len()));
        }
        Ok(NodeInfo {
            protocol: ProtocolVersion {
                p2p: pv.p2p,
                block: pv.block,
                app: pv.app,
            },
            id,
            listen_addr: p.listen_addr,
            network: p.network,
            version: p.version,
            channels: p.channels.into_iter().map(ChannelId).collect(),
            moniker: p.moniker,
            tx_index: other.tx_index,
            rpc_address: other.rpc_address,
        })
    }

    /// `Validate()` of spec 3.5.
    ///
    /// The listen address is checked syntactically (`[scheme://]host:port`); a hostname is
    /// accepted without the DNS lookup Go performs, since the core does no IO.
    pub fn validate(&self) -> Result<(), NodeInfoError> {
        if !is_host_port(&self.listen_addr) {
            return Err(NodeInfoError::InvalidListenAddr(self.listen_addr.clone()));
        }
        if !self.version.is_empty() && !is_printable(&self.version) {
            return Err(NodeInfoError::InvalidVersion(self.version.clone()));
        }
        if self.channels.len() > MAX_NODE_INFO_CHANNELS {
            return Err(NodeInfoError::TooManyChannels(self.channels.len()));
        }
        let mut seen = [false; 256];
        for &ch in &self.channels {
            let slot = &mut seen[usize::from(ch.0)];
            if *slot {
                return Err(NodeInfoError::DuplicateChannel(ch));
            }
            *slot = true;
        }
        if !is_printable(&self.moniker) {
            return Err(NodeInfoError::InvalidMoniker(self.moniker.clone()));
        }
        if !matches!(self.tx_index.as_str(), "" | "on" | "off") {
            return Err(NodeInfoError::InvalidTxIndex(self.tx_index.clone()));
        }
        if !self.rpc_address.is_empty() && !is_printable(&self.rpc_address) {
            return Err(NodeInfoError::InvalidRpcAddress(self.rpc_address.clone()));
        }
        Ok(())
    }

    /// `CompatibleWith(self, other)` of spec 3.6: same block protocol, same network and, if we
    /// list channels, at least one in common.
    pub fn compatible_with(&self, other: &NodeInfo) -> Result<(), NodeInfoError> {
        if self.protocol.block != other.protocol.block {
            return Err(NodeInfoError::IncompatibleBlockVersion {
                ours: self.protocol.block,
                theirs: other.protocol.block,
            });
        }
        if self.network != other.network {
            return Err(NodeInfoError::IncompatibleNetwork {
                ours: self.network.clone(),
                theirs: other.network.clone(),
            });
        }
        if !self.channels.is_empty() && !self.channels.iter().any(|c| other.channels.contains(c)) {
            return Err(NodeInfoError::NoCommonChannel);
        }
        Ok(())
    }

    /// Whether the node listed `channel`.
    #[must_use]
    pub fn has_channel(&self, channel: ChannelId) -> bool {
        self.channels.contains(&channel)
    }
}

/// Non-empty printable ASCII (32–126) that is not only spaces.
fn is_printable(s: &str) -> bool {
    !s.trim_matches(' ').is_empty() && s.bytes().all(|b| (32..=126).contains(&b))
}

/// `[scheme://]host:port` with a non-empty host and a 16-bit port; IPv6 hosts in brackets.
fn is_host_port(addr: &str) -> bool {
    let rest = match addr.split_once("://") {
        Some((_, rest)) => rest,
        None => addr,
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return false;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    !host.is_empty()
        && !host.contains(['/', '@', ' '])
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> NodeInfo {
        NodeInfo::new(
            NodeId([7; 20]),
            "chain-1",
            "tcp://0.0.0.0:26656",
            "node",
            [ChannelId(0x00), ChannelId(0x20)],
        )
    }

    #[test]
    fn round_trips_through_proto_and_validates() {
        let i = info();
        assert_eq!(NodeInfo::from_proto(i.to_proto()).unwrap(), i);
        i.validate().unwrap();
        i.compatible_with(&i).unwrap();
    }

    #[test]
    fn protocol_version_encodes_as_in_the_spec() {
        use prost::Message as _;
        let bytes = info().to_proto().encode_to_vec();
        assert_eq!(&bytes[..6], &[0x0a, 0x04, 0x08, 0x08, 0x10, 0x0b]);
        // Field 8 (`other`) is always emitted, even when empty.
        let mut empty = info();
        empty.tx_index.clear();
        assert!(empty.to_proto().encode_to_vec().ends_with(&[0x42, 0x00]));
    }

    #[test]
    fn listen_addresses() {
        for ok in [
            "tcp://0.0.0.0:26656",
            "1.2.3.4:1",
            "[::1]:26656",
            "host.example:65535",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "", "tcp://", "1.2.3.4", "1.2.3.4:", ":80", "h:65536", "h:-1", "h:+1",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }

    #[test]
    fn validation_failures_are_typed() {
        let mut i = info();
        i.moniker = "   ".into();
        assert!(matches!(
            i.validate(),
            Err(NodeInfoError::InvalidMoniker(_))
        ));
        let mut i = info();
        i.version = "v\u{7f}".into();
        assert!(matches!(
            i.validate(),
            Err(NodeInfoError::InvalidVersion(_))
        ));
        let mut i = info();
        i.channels.push(ChannelId(0x20));
        assert_eq!(
            i.validate(),
            Err(NodeInfoError::DuplicateChannel(ChannelId(0x20)))
        );
        let mut i = info();
        i.channels = (0..17).map(ChannelId).collect();
        assert_eq!(i.validate(), Err(NodeInfoError::TooManyChannels(17)));
        let mut i = info();
        i.tx_index = "yes".into();
        assert!(matches!(
            i.validate(),
            Err(NodeInfoError::InvalidTxIndex(_))
        ));
        let mut i = info();
        i.rpc_address = "\t".into();
        assert!(matches!(
            i.validate(),
            Err(NodeInfoError::InvalidRpcAddress(_))
        ));
        let mut i = info();
        i.listen_addr = "nowhere".into();
        assert!(matches!(
            i.validate(),
            Err(NodeInfoError::InvalidListenAddr(_))
        ));
        let mut p = info().to_proto();
        p.default_node_id = "xyz".into();
        assert!(matches!(
            NodeInfo::from_proto(p),
            Err(NodeInfoError::InvalidId(_))
        ));
    }

    #[test]
    fn compatibility_failures_are_typed() {
        let ours = info();
        let mut theirs = info();
        theirs.network = "other".into();
        assert!(matches!(
            ours.compatible_with(&theirs),
            Err(NodeInfoError::IncompatibleNetwork { .. })
        ));
        let mut theirs = info();
        theirs.protocol.block = 10;
        assert!(matches!(
            ours.compatible_with(&theirs),
            Err(NodeInfoError::IncompatibleBlockVersion { .. })
        ));
        let mut theirs = info();
        theirs.protocol.p2p = 9;
        theirs.protocol.app = 3;
        ours.compatible_with(&theirs).unwrap();
        theirs.channels = [ChannelId(0x30)].into_iter().collect();
        assert_eq!(
            ours.compatible_with(&theirs),
            Err(NodeInfoError::NoCommonChannel)
        );
    }
}
