//! The engine's configuration: CometBFT's `[p2p]` section (spec 8) in typed form.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::addr::{Host, NetAddr, PeerAddr};
use crate::addrbook::AddrBookConfig;
use crate::conn::ConnectionConfig;
use crate::ids::{ChannelId, NodeId};

/// Engine configuration; `Default` gives CometBFT's defaults (spec 8).
///
/// The engine does no IO: the adapter parses `id@host:port` lists; a seed or persistent peer
/// given by DNS name is dialled by name and resolved by the adapter at every dial
/// ([`EngineConfig::dial_names`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EngineConfig {
    /// `laddr`: where we listen; advertised as `tcp://<laddr>` when `external_address` is unset.
    pub listen_addr: SocketAddr,
    /// `external_address`: the address advertised in our NodeInfo and recorded as ours.
    pub external_address: Option<SocketAddr>,
    /// The chain id (NodeInfo `network`); peers on another chain are refused.
    pub chain_id: String,
    /// Our moniker (NodeInfo `moniker`; must be printable ASCII).
    pub moniker: String,
    /// Software version announced in NodeInfo; empty keeps the crate version.
    pub version: String,
    /// NodeInfo `tx_index`: `"on"`, `"off"` or `""`.
    pub tx_index: String,
    /// NodeInfo `rpc_address`.
    pub rpc_address: String,
    /// `seeds`: dialled when the address book runs short (spec 5.6).
    pub seeds: Vec<NetAddr>,
    /// `persistent_peers`: dialled at start and redialled forever (spec 7.5, G18).
    pub persistent_peers: Vec<NetAddr>,
    /// Seeds and persistent peers given by DNS name (`id@host:port`), by node id: every dial
    /// of such a node goes out as [`Output::DialName`](super::Output::DialName), which the
    /// adapter resolves anew (a persistent peer at every redial, a seed whenever it is
    /// dialled). Its entry in `seeds` / `persistent_peers` holds `0.0.0.0:port` until
    /// [`Input::Resolved`](super::Input::Resolved) reports an address. Add entries with
    /// [`EngineConfig::add_seed`] and [`EngineConfig::add_persistent_peer`].
    pub dial_names: BTreeMap<NodeId, DialName>,
    /// `unconditional_peer_ids`: exempt from the inbound and outbound limits.
    pub unconditional_peer_ids: Vec<NodeId>,
    /// `private_peer_ids`: never stored in the book nor gossiped.
    pub private_peer_ids: Vec<NodeId>,
    /// `max_num_inbound_peers` (40).
    pub max_num_inbound_peers: usize,
    /// `max_num_outbound_peers` (10): the target of the ensure-peers pass.
    pub max_num_outbound_peers: usize,
    /// `seed_mode`: crawl the network, answer PEX requests once and hang up.
    pub seed_mode: bool,
    /// `pex`: run the PEX reactor on channel 0x00 (and advertise it).
    pub pex: bool,
    /// `allow_duplicate_ip`: when false, at most one connection per remote IP, and a ban covers
    /// the peer's IP as well as its node id; when true a ban covers the node id only
    /// (docs/bans.md).
    pub allow_duplicate_ip: bool,
    /// `addr_book_strict`: refuse non-routable addresses (copied into `addr_book.strict`).
    pub addr_book_strict: bool,
    /// Deadline of the SecretConnection + NodeInfo handshake (copied into `connection`).
    pub handshake_timeout: Duration,
    /// How long a dial may take before the engine gives up on it.
    pub dial_timeout: Duration,
    /// Mean period of the ensure-peers pass, 30 s; each wait is drawn from `[3p/4, 5p/4)` so
    /// that nodes started together do not stay in step (CometBFT's ticker is fixed). It also
    /// sets the least interval accepted between two PEX requests of one peer (a third of it, as
    /// CometBFT's receiver).
    pub ensure_peers_period: Duration,
    /// Seed mode: mean period of the crawl pass (CometBFT's `crawlPeerPeriod`, 30 s); each pass
    /// lands within +/- 25 % of it.
    pub crawl_period: Duration,
    /// Cap of the persistent-peer redial back-off (G18: 5 min).
    pub persistent_redial_cap: Duration,
    /// How long a seed keeps a non-persistent peer before hanging up (28 h).
    pub seed_disconnect_wait: Duration,
    /// A seed re-crawls an address at most this often (2 min).
    pub min_time_between_crawls: Duration,
    /// Seed mode: a PEX reply holds only addresses the seed itself reached (a completed
    /// handshake with a node of our chain, dialled by us) within this window, most recent
    /// first, diverse by address group (24 h). Zero selects CometBFT's policy: a random
    /// selection of the whole book, reached or not.
    pub seed_vetted_window: Duration,
    /// A node short of its outbound target runs an ensure-peers pass soon rather than at its
    /// next period: 0.5 s after a peer's PEX addresses arrive, 2, 4, 8 and 16 s after a pass
    /// that left it short, and 1–3 s after it loses an automatic outbound peer or dial once
    /// those are spent (then the period again, until the target is reached). `false` keeps
    /// CometBFT's timing: one pass per period, plus one when a seed's addresses arrive.
    pub early_ensure_passes: bool,
    /// cometmesh only: mean period of feeler connections (G11, test-before-evict; see
    /// [`feeler`](super::feeler)): 2 min, each wait drawn from `[p/2, 3p/2)`. Zero turns
    /// feelers off. Only with PEX and outside seed mode.
    pub feeler_interval: Duration,
    /// cometmesh only: inbound connection attempts allowed per remote IP and minute (a token
    /// bucket of that size; G13, see [`inbound`](super::inbound)). Non-routable remotes are
    /// not limited. 0 turns the limit off (CometBFT has none). Default 10.
    pub inbound_attempts_per_ip_per_minute: u32,
    /// cometmesh only: inbound connection attempts allowed per address group (`/16`) and
    /// minute. 0 turns the limit off. Default 60.
    pub inbound_attempts_per_group_per_minute: u32,
    /// Per-connection settings (MConnection, timeouts, budgets).
    pub connection: ConnectionConfig,
    /// Address-book settings.
    pub addr_book: AddrBookConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            listen_addr: SocketAddr::from(([0, 0, 0, 0], 26656)),
            external_address: None,
            chain_id: String::new(),
            moniker: "cometmesh".to_owned(),
            version: String::new(),
            tx_index: "off".to_owned(),
            rpc_address: String::new(),
            seeds: Vec::new(),
            persistent_peers: Vec::new(),
            dial_names: BTreeMap::new(),
            unconditional_peer_ids: Vec::new(),
            private_peer_ids: Vec::new(),
            max_num_inbound_peers: 40,
            max_num_outbound_peers: 10,
            seed_mode: false,
            pex: true,
            allow_duplicate_ip: false,
            addr_book_strict: true,
            handshake_timeout: Duration::from_secs(3),
            dial_timeout: Duration::from_secs(3),
            ensure_peers_period: Duration::from_secs(30),
            crawl_period: Duration::from_secs(30),
            persistent_redial_cap: Duration::from_secs(300),
            seed_disconnect_wait: Duration::from_secs(28 * 3600),
            min_time_between_crawls: Duration::from_secs(120),
            seed_vetted_window: Duration::from_secs(24 * 3600),
            early_ensure_passes: true,
            feeler_interval: Duration::from_secs(120),
            inbound_attempts_per_ip_per_minute: 10,
            inbound_attempts_per_group_per_minute: 60,
            connection: ConnectionConfig::default(),
            // CometBFT's `GetSelection` answers with at least min(32, book size) addresses. A
            // node following only the 23 % rule answers a small network with nothing, and its
            // CometBFT peers never meet each other through it (seen in the interop tests).
            addr_book: AddrBookConfig {
                min_selection: 32,
                ..AddrBookConfig::default()
            },
        }
    }
}

/// A configuration or set-up call the engine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The chain id is empty.
    #[error("chain id is empty")]
    EmptyChainId,
    /// A setting is out of range.
    #[error("invalid setting {name}: {why}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// A persistent peer or seed is ourselves.
    #[error("{0} is our own node id")]
    OwnId(NodeId),
    /// Channel 0x00 belongs to PEX.
    #[error("channel 0x00 is reserved for pex")]
    ReservedChannel,
    /// The channel is already registered.
    #[error("channel {0} is already registered")]
    DuplicateChannel(ChannelId),
    /// NodeInfo allows at most 16 channels.
    #[error("at most 16 channels can be registered")]
    TooManyChannels,
    /// Channels and the address book can only be set before the first connection.
    #[error("the engine already has connections")]
    AlreadyStarted,
    /// The saved address book could not be read.
    #[error("address book: {0}")]
    AddrBook(String),
}

impl EngineConfig {
    /// Checks ranges that would make the engine misbehave.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.chain_id.is_empty() {
            return Err(ConfigError::EmptyChainId);
        }
        if self.moniker.is_empty() || !self.moniker.bytes().all(|b| (32..=126).contains(&b)) {
            return Err(ConfigError::Invalid {
                name: "moniker",
                why: "must be non-empty printable ascii",
            });
        }
        if self.ensure_peers_period < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                name: "ensure_peers_period",
                why: "must be at least 100 ms",
            });
        }
        if self.crawl_period < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                name: "crawl_period",
                why: "must be at least 100 ms",
            });
        }
        if self.dial_timeout.is_zero() || self.handshake_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                name: "dial_timeout/handshake_timeout",
                why: "must be positive",
            });
        }
        if !self.feeler_interval.is_zero() && self.feeler_interval < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                name: "feeler_interval",
                why: "must be zero (off) or at least 1 s",
            });
        }
        if self.persistent_redial_cap < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                name: "persistent_redial_cap",
                why: "must be at least 1 s",
            });
        }
        Ok(())
    }

    /// The `listen_addr` string of our NodeInfo.
    pub(crate) fn advertised_addr(&self) -> String {
        format!(
            "tcp://{}",
            self.external_address.unwrap_or(self.listen_addr)
        )
    }
}

/// The DNS name and port of a seed or persistent peer (`host:port` of `id@host:port`), resolved
/// by the adapter at every dial.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DialName {
    /// The DNS name, lower case.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl fmt::Display for DialName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl EngineConfig {
    /// Adds a seed: an IP address as it is, a DNS name to be resolved whenever the seed is
    /// dialled ([`EngineConfig::dial_names`]).
    pub fn add_seed(&mut self, peer: &PeerAddr) {
        let a = self.by_name_or_ip(peer);
        self.seeds.push(a);
    }

    /// Adds a persistent peer: an IP address as it is, a DNS name to be resolved at every
    /// (re)dial ([`EngineConfig::dial_names`]).
    pub fn add_persistent_peer(&mut self, peer: &PeerAddr) {
        let a = self.by_name_or_ip(peer);
        self.persistent_peers.push(a);
    }

    /// The address to list for `peer`; a DNS name is recorded in `dial_names` and listed as
    /// `0.0.0.0:port`.
    fn by_name_or_ip(&mut self, peer: &PeerAddr) -> NetAddr {
        match &peer.host {
            Host::Ip(ip) => NetAddr::new(peer.id, SocketAddr::new(*ip, peer.port)),
            Host::Dns(name) => {
                self.dial_names.insert(
                    peer.id,
                    DialName {
                        host: name.clone(),
                        port: peer.port,
                    },
                );
                NetAddr::new(
                    peer.id,
                    SocketAddr::from((Ipv4Addr::UNSPECIFIED, peer.port)),
                )
            }
        }
    }
}
