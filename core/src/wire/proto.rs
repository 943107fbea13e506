//! Hand-written prost messages for every protobuf message of the p2p layer (spec 2.2, 3.4, 4.1,
//! 5.1). Field numbers and types follow the `tendermint.p2p` / `tendermint.crypto` protos; the
//! non-nullable embedded messages that gogoproto always emits are `Option`s that our encoders
//! always fill (prost emits `Some` messages even when empty).

/// `google.protobuf.BytesValue`: the cleartext ephemeral-key message of the handshake.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct BytesValue {
    /// The X25519 public key (32 bytes from honest peers).
    #[prost(bytes = "vec", tag = "1")]
    pub value: Vec<u8>,
}

/// `tendermint.crypto.PublicKey`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PublicKey {
    /// Which kind of key.
    #[prost(oneof = "public_key::Sum", tags = "1, 2")]
    pub sum: Option<public_key::Sum>,
}

/// The oneof of [`PublicKey`].
pub mod public_key {
    /// The key bytes, by kind.
    #[derive(Clone, PartialEq, Eq, prost::Oneof)]
    pub enum Sum {
        /// An Ed25519 key: the only kind the p2p layer accepts.
        #[prost(bytes, tag = "1")]
        Ed25519(Vec<u8>),
        /// A secp256k1 key: decoded, then rejected.
        #[prost(bytes, tag = "2")]
        Secp256k1(Vec<u8>),
    }
}

/// `tendermint.p2p.AuthSigMessage`: the static key and the signature over the challenge.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AuthSigMessage {
    /// The signer's static public key (always emitted).
    #[prost(message, optional, tag = "1")]
    pub pub_key: Option<PublicKey>,
    /// The Ed25519 signature over the merlin challenge.
    #[prost(bytes = "vec", tag = "2")]
    pub sig: Vec<u8>,
}

/// `tendermint.p2p.ProtocolVersion`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ProtocolVersion {
    /// The p2p protocol version (8).
    #[prost(uint64, tag = "1")]
    pub p2p: u64,
    /// The block protocol version (11); the only one compared.
    #[prost(uint64, tag = "2")]
    pub block: u64,
    /// The application version; not checked.
    #[prost(uint64, tag = "3")]
    pub app: u64,
}

/// `tendermint.p2p.DefaultNodeInfoOther`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DefaultNodeInfoOther {
    /// `"on"`, `"off"` or `""`.
    #[prost(string, tag = "1")]
    pub tx_index: String,
    /// The RPC listen address, e.g. `tcp://127.0.0.1:26657`.
    #[prost(string, tag = "2")]
    pub rpc_address: String,
}

/// `tendermint.p2p.DefaultNodeInfo`: what each side says about itself after the handshake.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DefaultNodeInfo {
    /// Protocol versions (always emitted).
    #[prost(message, optional, tag = "1")]
    pub protocol_version: Option<ProtocolVersion>,
    /// The node id, 40 hex characters.
    #[prost(string, tag = "2")]
    pub default_node_id: String,
    /// The advertised listen address.
    #[prost(string, tag = "3")]
    pub listen_addr: String,
    /// The chain id.
    #[prost(string, tag = "4")]
    pub network: String,
    /// The software version.
    #[prost(string, tag = "5")]
    pub version: String,
    /// One byte per channel id the node accepts.
    #[prost(bytes = "vec", tag = "6")]
    pub channels: Vec<u8>,
    /// A human-readable name.
    #[prost(string, tag = "7")]
    pub moniker: String,
    /// Extra fields (always emitted).
    #[prost(message, optional, tag = "8")]
    pub other: Option<DefaultNodeInfoOther>,
}

/// `tendermint.p2p.PacketPing`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct PacketPing {}

/// `tendermint.p2p.PacketPong`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct PacketPong {}

/// `tendermint.p2p.PacketMsg`: one chunk of a channel message.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PacketMsg {
    /// The channel (0..=255 in practice).
    #[prost(int32, tag = "1")]
    pub channel_id: i32,
    /// True on the last chunk of a message.
    #[prost(bool, tag = "2")]
    pub eof: bool,
    /// The chunk, at most `max_packet_msg_payload_size` (1024) bytes.
    #[prost(bytes = "bytes", tag = "3")]
    pub data: bytes::Bytes,
}

/// `tendermint.p2p.Packet`: the unit of the MConnection stream.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Packet {
    /// Ping, pong or a message chunk; an empty packet is a protocol error.
    #[prost(oneof = "packet::Sum", tags = "1, 2, 3")]
    pub sum: Option<packet::Sum>,
}

/// The oneof of [`Packet`].
pub mod packet {
    /// The packet kinds.
    #[derive(Clone, PartialEq, Eq, prost::Oneof)]
    pub enum Sum {
        /// Keep-alive request.
        #[prost(message, tag = "1")]
        PacketPing(super::PacketPing),
        /// Keep-alive answer.
        #[prost(message, tag = "2")]
        PacketPong(super::PacketPong),
        /// A chunk of a channel message.
        #[prost(message, tag = "3")]
        PacketMsg(super::PacketMsg),
    }
}

/// `tendermint.p2p.NetAddress`: an address as PEX carries it (textual IP, no hostnames).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct NetAddress {
    /// The node id, 40 hex characters.
    #[prost(string, tag = "1")]
    pub id: String,
    /// A textual IPv4 or IPv6 address.
    #[prost(string, tag = "2")]
    pub ip: String,
    /// The TCP port; values above 65535 are a protocol violation.
    #[prost(uint32, tag = "3")]
    pub port: u32,
}

/// `tendermint.p2p.PexRequest`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct PexRequest {}

/// `tendermint.p2p.PexAddrs`: the reply to a request, at most 250 addresses.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PexAddrs {
    /// The addresses.
    #[prost(message, repeated, tag = "1")]
    pub addrs: Vec<NetAddress>,
}

/// `tendermint.p2p.Message`: the PEX channel's wrapper.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PexMessage {
    /// Request or reply; an empty wrapper is a protocol error.
    #[prost(oneof = "pex_message::Sum", tags = "1, 2")]
    pub sum: Option<pex_message::Sum>,
}

/// The oneof of [`PexMessage`].
pub mod pex_message {
    /// The PEX message kinds.
    #[derive(Clone, PartialEq, Eq, prost::Oneof)]
    pub enum Sum {
        /// "Send me addresses."
        #[prost(message, tag = "1")]
        PexRequest(super::PexRequest),
        /// "Here are addresses."
        #[prost(message, tag = "2")]
        PexAddrs(super::PexAddrs),
    }
}
