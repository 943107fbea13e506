//! Typed, checked node settings: the config file's strings turned into socket addresses, peer
//! addresses and node ids, after the command-line overrides. Every error names the key and the
//! value at fault.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::str::FromStr as _;

use cometmesh_core::NodeId;
use cometmesh_core::addr::PeerAddr;

use crate::config::Config;

/// Why a configured value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// An `id@host:port` entry does not parse or resolve; `reason` names the entry.
    #[error("{key}: {reason}")]
    PeerAddress {
        /// The dotted key or flag, e.g. `p2p.seeds`.
        key: String,
        /// The entry at fault.
        value: String,
        /// Why.
        reason: String,
    },
    /// A node id entry is not 40 hex characters.
    #[error("{key}: {value:?} is not a node id: {reason}")]
    NodeId {
        /// The dotted key.
        key: String,
        /// The entry at fault.
        value: String,
        /// Why.
        reason: String,
    },
    /// A `host:port` address does not parse or resolve.
    #[error("{key}: cannot use address {value:?}: {reason}")]
    Address {
        /// The dotted key.
        key: String,
        /// The value at fault.
        value: String,
        /// Why.
        reason: String,
    },
}

/// Where metrics are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// The socket to listen on.
    pub listen: SocketAddr,
    /// Simultaneous connections (0: unlimited).
    pub max_open_connections: u32,
    /// Prefix of the CometBFT metric names.
    pub namespace: String,
}

/// Everything a node needs from its home, checked and resolved.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// The chain (network) id sent in NodeInfo.
    pub chain_id: String,
    /// The moniker sent in NodeInfo.
    pub moniker: String,
    /// The node key file.
    pub node_key_path: PathBuf,
    /// The address-book file.
    pub addr_book_path: PathBuf,
    /// The TCP listen address.
    pub listen: SocketAddr,
    /// The address advertised to peers, if set.
    pub external: Option<SocketAddr>,
    /// Seed nodes; a DNS name is kept, and resolved whenever the seed is dialled.
    pub seeds: Vec<PeerAddr>,
    /// Persistent peers; a DNS name is kept, and resolved at every (re)dial.
    pub persistent_peers: Vec<PeerAddr>,
    /// Ids exempt from the limits.
    pub unconditional_peer_ids: Vec<NodeId>,
    /// Ids never stored or gossiped.
    pub private_peer_ids: Vec<NodeId>,
    /// Metrics endpoint, when `prometheus = true`.
    pub metrics: Option<MetricsSettings>,
    /// The whole config after overrides, for the remaining scalar settings.
    pub config: Config,
}

impl NodeSettings {
    /// Checks and resolves `config` (after overrides) for the home at `home`.
    pub fn resolve(
        home: &crate::home::Home,
        config: Config,
        chain_id: String,
    ) -> Result<Self, SettingsError> {
        let p2p = &config.p2p;
        let listen = parse_socket_addr("p2p.laddr", &p2p.laddr)?;
        let external = if p2p.external_address.trim().is_empty() {
            None
        } else {
            Some(parse_socket_addr(
                "p2p.external_address",
                &p2p.external_address,
            )?)
        };
        let seeds = parse_peer_list("p2p.seeds", &p2p.seeds)?;
        let persistent_peers = parse_peer_list("p2p.persistent_peers", &p2p.persistent_peers)?;
        let unconditional_peer_ids =
            parse_id_list("p2p.unconditional_peer_ids", &p2p.unconditional_peer_ids)?;
        let private_peer_ids = parse_id_list("p2p.private_peer_ids", &p2p.private_peer_ids)?;
        let ins = &config.instrumentation;
        let metrics = if ins.prometheus {
            Some(MetricsSettings {
                listen: parse_socket_addr(
                    "instrumentation.prometheus_listen_addr",
                    &ins.prometheus_listen_addr,
                )?,
                max_open_connections: ins.max_open_connections,
                namespace: ins.namespace.clone(),
            })
        } else {
            None
        };
        Ok(NodeSettings {
            chain_id,
            moniker: config.moniker.clone(),
            node_key_path: home.resolve(&config.node_key_file),
            addr_book_path: home.resolve(&config.p2p.addr_book_file),
            listen,
            external,
            seeds,
            persistent_peers,
            unconditional_peer_ids,
            private_peer_ids,
            metrics,
            config,
        })
    }
}

/// Splits a comma-separated list as CometBFT does: trims spaces, drops empty entries.
#[must_use]
pub fn split_list(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Parses `[scheme://]host:port` (`:port` alone means every interface), resolving a DNS name.
pub fn parse_socket_addr(key: &str, value: &str) -> Result<SocketAddr, SettingsError> {
    let err = |reason: String| SettingsError::Address {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    };
    let stripped = strip_scheme(value.trim());
    let (host, port) = split_host_port(stripped).map_err(err)?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    resolve(host, port).map_err(err)
}

/// Parses one `[scheme://]id@host:port` (the core's [`PeerAddr`] syntax). A DNS name is kept
/// as a name: the node resolves it whenever it dials that peer (CometBFT resolves it once, at
/// start), so a peer that moves is found at its new address.
pub fn parse_peer(key: &str, value: &str) -> Result<PeerAddr, SettingsError> {
    PeerAddr::from_str(value.trim()).map_err(|e| SettingsError::PeerAddress {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// Parses a comma-separated list of peer addresses.
pub fn parse_peer_list(key: &str, value: &str) -> Result<Vec<PeerAddr>, SettingsError> {
    split_list(value)
        .into_iter()
        .map(|entry| parse_peer(key, entry))
        .collect()
}

/// Parses a comma-separated list of node ids.
pub fn parse_id_list(key: &str, value: &str) -> Result<Vec<NodeId>, SettingsError> {
    split_list(value)
        .into_iter()
        .map(|entry| {
            NodeId::from_str(entry).map_err(|e| SettingsError::NodeId {
                key: key.to_owned(),
                value: entry.to_owned(),
                reason: e.to_string(),
            })
        })
        .collect()
}

fn strip_scheme(s: &str) -> &str {
    s.split_once("://").map_or(s, |(_, rest)| rest)
}

/// Splits `host:port` or `[v6]:port`.
fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "missing ']' after an IPv6 host".to_owned())?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| "missing port".to_owned())?;
        (host, port)
    } else {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| "missing port (expected host:port)".to_owned())?;
        if host.contains(':') {
            return Err("an IPv6 host needs brackets, e.g. [::1]:26656".to_owned());
        }
        (host, port)
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
    Ok((host, port))
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?} ({e})"))?;
    addrs
        .next()
        .ok_or_else(|| format!("host {host:?} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "7627de929814c7484dc6bf94f60166ab3115b316";

    #[test]
    fn socket_addresses() {
        let p = |s| parse_socket_addr("k", s);
        assert_eq!(
            p("tcp://0.0.0.0:26656").unwrap(),
            "0.0.0.0:26656".parse().unwrap()
        );
        assert_eq!(p(":26660").unwrap(), "0.0.0.0:26660".parse().unwrap());
        assert_eq!(p("[::1]:5").unwrap(), "[::1]:5".parse().unwrap());
        assert_eq!(p("127.0.0.1:0").unwrap(), "127.0.0.1:0".parse().unwrap());
        assert!(p("localhost:1").unwrap().ip().is_loopback());
        for bad in ["127.0.0.1", "1.2.3.4:70000", "::1:5", "[::1:5", "h:x"] {
            let err = p(bad).unwrap_err().to_string();
            assert!(err.starts_with("k: cannot use address"), "{err}");
        }
    }

    #[test]
    fn peer_lists() {
        let list = format!(" tcp://{ID}@127.0.0.1:26656 , ,{ID}@[::1]:1,");
        let peers = parse_peer_list("p2p.seeds", &list).unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].to_string(), format!("{ID}@127.0.0.1:26656"));
        assert_eq!(peers[1].to_string(), format!("{ID}@[::1]:1"));
        assert!(parse_peer_list("p2p.seeds", "").unwrap().is_empty());
        // A DNS name is kept, not resolved (the node resolves it at every dial).
        let named = parse_peer_list("p2p.seeds", &format!("{ID}@Seed.Example.test:26656")).unwrap();
        assert_eq!(
            named[0].to_string(),
            format!("{ID}@seed.example.test:26656")
        );
        assert!(named[0].resolved().is_none());
    }

    #[test]
    fn bad_peers_name_key_and_value() {
        for bad in [
            "127.0.0.1:26656".to_owned(),
            format!("{ID}@127.0.0.1"),
            format!("{ID}@:26656"),
            "abc@127.0.0.1:26656".to_owned(),
            format!("{ID}@a@b:1"),
        ] {
            let err = parse_peer_list("p2p.persistent_peers", &bad)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("p2p.persistent_peers: ") && err.contains(&format!("{bad:?}")),
                "{err}"
            );
        }
    }

    #[test]
    fn id_lists() {
        assert_eq!(parse_id_list("k", &format!("{ID}, {ID}")).unwrap().len(), 2);
        let err = parse_id_list("p2p.private_peer_ids", "zz")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("p2p.private_peer_ids: \"zz\" is not a node id"),
            "{err}"
        );
    }
}
