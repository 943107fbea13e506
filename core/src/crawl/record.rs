//! What the crawl records per node and per address; these types are also the `nodes` of the
//! JSON report (schema in `docs/crawl-schema.md`).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::conn::NodeInfo;
use crate::ids::NodeId;

/// Whether a node answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Announced but not dialled (yet, or never: the crawl ended first).
    Unknown,
    /// It completed the handshake and is on the crawled chain.
    Reachable,
    /// Every dial failed; `failure` says how the last one did.
    Unreachable,
}

/// Where a dial stopped when it timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// TCP did not connect.
    Dial,
    /// SecretConnection or NodeInfo did not complete.
    Handshake,
}

/// Why a node (or one of its addresses) did not answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Failure {
    /// TCP connection refused.
    #[error("connection refused")]
    Refused,
    /// No answer within the per-node timeout.
    #[error("timed out ({stage:?})")]
    Timeout {
        /// How far the dial got.
        stage: Stage,
    },
    /// No route to the host, or another socket error.
    #[error("unreachable: {detail}")]
    Unreachable {
        /// The error.
        detail: String,
    },
    /// SecretConnection or NodeInfo failed: garbage, a bad signature, an invalid NodeInfo, a
    /// hang-up during the handshake.
    #[error("handshake error: {detail}")]
    Handshake {
        /// What went wrong.
        detail: String,
    },
    /// Another node answered at this address.
    #[error("wrong id: {answered_by} answered")]
    WrongId {
        /// The id that authenticated.
        answered_by: NodeId,
    },
    /// The node is on another chain (its NodeInfo is kept).
    #[error("other chain {network:?}")]
    OtherChain {
        /// Its chain id.
        network: String,
    },
    /// Same chain, but the NodeInfo is incompatible (block protocol).
    #[error("incompatible: {detail}")]
    Incompatible {
        /// The incompatibility.
        detail: String,
    },
}

impl Failure {
    /// The `kind` tag, as in the JSON.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Timeout { .. } => "timeout",
            Failure::Unreachable { .. } => "unreachable",
            Failure::Handshake { .. } => "handshake",
            Failure::WrongId { .. } => "wrong_id",
            Failure::OtherChain { .. } => "other_chain",
            Failure::Incompatible { .. } => "incompatible",
        }
    }
}

/// A node's NodeInfo, as received (every field of `DefaultNodeInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoRecord {
    /// p2p protocol version.
    pub p2p_version: u64,
    /// Block protocol version.
    pub block_version: u64,
    /// App version.
    pub app_version: u64,
    /// The announced listen address.
    pub listen_addr: String,
    /// The chain id.
    pub network: String,
    /// The software version.
    pub version: String,
    /// The channels, in the node's order.
    pub channels: Vec<u8>,
    /// The moniker.
    pub moniker: String,
    /// `tx_index`.
    pub tx_index: String,
    /// `rpc_address`.
    pub rpc_address: String,
}

impl From<&NodeInfo> for InfoRecord {
    fn from(i: &NodeInfo) -> Self {
        InfoRecord {
            p2p_version: i.protocol.p2p,
            block_version: i.protocol.block,
            app_version: i.protocol.app,
            listen_addr: i.listen_addr.clone(),
            network: i.network.clone(),
            version: i.version.clone(),
            channels: i.channels.iter().map(|c| c.0).collect(),
            moniker: i.moniker.clone(),
            tx_index: i.tx_index.clone(),
            rpc_address: i.rpc_address.clone(),
        }
    }
}

/// One address a node was announced at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrRecord {
    /// IP and port.
    pub addr: SocketAddr,
    /// The nodes whose PEX replies carried it.
    pub announced_by: BTreeSet<NodeId>,
    /// Given as a seed (on the command line or by a resumed crawl's seeds).
    #[serde(default)]
    pub seed: bool,
    /// Learned from a handshake: another id was dialled here and this one answered.
    #[serde(default)]
    pub from_handshake: bool,
    /// Completed dials to it (0: never dialled; a resumed crawl dials it).
    pub dials: u32,
    /// Whether the node answered here.
    #[serde(default)]
    pub answered: bool,
    /// How the last failed dial failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    /// Queued or in flight now (not serialized).
    #[serde(skip)]
    pub(crate) pending: bool,
}

impl AddrRecord {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        AddrRecord {
            addr,
            announced_by: BTreeSet::new(),
            seed: false,
            from_handshake: false,
            dials: 0,
            answered: false,
            last_failure: None,
            pending: false,
        }
    }
}

/// Everything learned about one node id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node id.
    pub id: NodeId,
    /// Reachable, unreachable or never dialled.
    pub status: Status,
    /// Why it is unreachable (the last failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The address that answered.
    #[serde(default)]
    pub answered_at: Option<SocketAddr>,
    /// Every address it was announced at, sorted.
    pub addresses: Vec<AddrRecord>,
    /// Its NodeInfo (also kept for nodes of another chain).
    #[serde(default)]
    pub info: Option<InfoRecord>,
    /// TCP connect time (about one round trip), milliseconds.
    #[serde(default)]
    pub connect_ms: Option<f64>,
    /// SecretConnection + NodeInfo exchange, from TCP up to its NodeInfo, milliseconds.
    #[serde(default)]
    pub handshake_ms: Option<f64>,
    /// How many addresses its PEX reply carried (`None`: no reply).
    #[serde(default)]
    pub addrs_given: Option<u32>,
    /// A PEX protocol error it made (an oversized or malformed reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pex_error: Option<String>,
    /// Unix time we first heard of it.
    pub first_seen: u64,
    /// Unix time of the last announcement of it or answer from it.
    pub last_seen: u64,
    /// The revisit round in which it last answered (0 for the first).
    #[serde(default)]
    pub round: u32,
}

impl NodeRecord {
    pub(crate) fn new(id: NodeId, unix: u64) -> Self {
        NodeRecord {
            id,
            status: Status::Unknown,
            failure: None,
            answered_at: None,
            addresses: Vec::new(),
            info: None,
            connect_ms: None,
            handshake_ms: None,
            addrs_given: None,
            pex_error: None,
            first_seen: unix,
            last_seen: unix,
            round: 0,
        }
    }

    /// The record of `addr`, created if new.
    pub(crate) fn addr_mut(&mut self, addr: SocketAddr) -> &mut AddrRecord {
        let i = match self.addresses.binary_search_by(|a| a.addr.cmp(&addr)) {
            Ok(i) => i,
            Err(i) => {
                self.addresses.insert(i, AddrRecord::new(addr));
                i
            }
        };
        &mut self.addresses[i]
    }

    /// The address that best represents the node: where it answered, else its first one.
    #[must_use]
    pub fn main_addr(&self) -> Option<SocketAddr> {
        self.answered_at
            .or_else(|| self.addresses.first().map(|a| a.addr))
    }
}
