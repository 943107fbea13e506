//! `id@host:port` peer addresses (spec 1.3): parsing and printing, DNS names kept as names, and
//! the conversion to and from the wire `NetAddress` of PEX (spec 5.1).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::ids::{NodeId, NodeIdError};
use crate::wire::proto::NetAddress;

/// The longest DNS name accepted (RFC 1035 presentation form without the final dot).
pub const MAX_DNS_NAME_LEN: usize = 253;

/// Why a string or a wire `NetAddress` is not a peer address. Each message names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// The string is empty (after stripping a `scheme://` prefix).
    #[error("address is empty: expected id@host:port")]
    Empty,
    /// No `@` separates the node id from the host.
    #[error("address {0:?} has no node id: expected id@host:port")]
    MissingAt(String),
    /// More than one `@`.
    #[error("address {0:?} has more than one '@': expected id@host:port")]
    TooManyAt(String),
    /// The part before `@` is not a node id.
    #[error("address {addr:?} has a bad node id: {source}")]
    BadId {
        /// The offending input.
        addr: String,
        /// Why the id is invalid.
        source: NodeIdError,
    },
    /// No `:port` after the host.
    #[error("address {0:?} has no port: expected id@host:port")]
    MissingPort(String),
    /// The port is not a number from 0 to 65535.
    #[error("address {addr:?} has a bad port {port:?}: expected a number from 0 to 65535")]
    BadPort {
        /// The offending input.
        addr: String,
        /// The port text (or number, for a wire address).
        port: String,
    },
    /// Nothing between `@` and `:port`.
    #[error("address {0:?} has an empty host")]
    EmptyHost(String),
    /// An IPv6 address without brackets (`id@::1:26656`).
    #[error("address {0:?} has an ipv6 host without brackets: write id@[ipv6]:port")]
    UnbracketedIpv6(String),
    /// A `[` without its `]`, or brackets in the wrong place.
    #[error("address {0:?} has misplaced brackets: write id@[ipv6]:port")]
    BadBrackets(String),
    /// The host is neither an IP address nor a valid DNS name.
    #[error("address {addr:?} has an invalid host {host:?}")]
    BadHost {
        /// The offending input.
        addr: String,
        /// The host part.
        host: String,
    },
    /// A wire address whose `ip` is not a textual IP address.
    #[error("address ip {0:?} is not a valid ip address")]
    BadIp(String),
    /// The host is a DNS name where an IP address is required.
    #[error("address {0:?} has a dns name where an ip address is required")]
    NotAnIp(String),
}

/// The host of a [`PeerAddr`]: an IP address, or a DNS name kept as written (resolved by the
/// runtime, never by the core).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Host {
    /// An IP literal; IPv4-mapped IPv6 addresses are stored as IPv4, as Go prints them.
    Ip(IpAddr),
    /// A DNS name, stored in lower case.
    Dns(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Dns(name) => f.write_str(name),
        }
    }
}

/// A configured peer address `id@host:port`, as written in `persistent_peers`, `seeds` and
/// the like. Printed without a scheme, IPv6 in brackets.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PeerAddr {
    /// The node id expected at this address.
    pub id: NodeId,
    /// The host: an IP or a DNS name.
    pub host: Host,
    /// The TCP port.
    pub port: u16,
}

impl PeerAddr {
    /// The resolved address if the host is an IP literal; `None` for a DNS name.
    #[must_use]
    pub fn resolved(&self) -> Option<NetAddr> {
        match self.host {
            Host::Ip(ip) => Some(NetAddr::new(self.id, SocketAddr::new(ip, self.port))),
            Host::Dns(_) => None,
        }
    }
}

impl From<NetAddr> for PeerAddr {
    fn from(addr: NetAddr) -> Self {
        PeerAddr {
            id: addr.id,
            host: Host::Ip(addr.addr.ip()),
            port: addr.addr.port(),
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.id, self.host, self.port)
    }
}

impl FromStr for PeerAddr {
    type Err = AddrError;

    /// Parses `[scheme://]id@host:port` as Go's `NewNetAddressString` does, except that DNS
    /// names are kept rather than resolved.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let owned = || input.to_owned();
        let rest = strip_scheme(input);
        if rest.is_empty() {
            return Err(AddrError::Empty);
        }
        let (id, hostport) = rest
            .split_once('@')
            .ok_or_else(|| AddrError::MissingAt(owned()))?;
        if hostport.contains('@') {
            return Err(AddrError::TooManyAt(owned()));
        }
        let id = id.parse::<NodeId>().map_err(|source| AddrError::BadId {
            addr: owned(),
            source,
        })?;
        let (host, port) = split_host_port(hostport).map_err(|kind| kind.into_error(input))?;
        if host.is_empty() {
            return Err(AddrError::EmptyHost(owned()));
        }
        let port = parse_port(port).ok_or_else(|| AddrError::BadPort {
            addr: owned(),
            port: port.to_owned(),
        })?;
        let host = parse_host(host).ok_or_else(|| AddrError::BadHost {
            addr: owned(),
            host: host.to_owned(),
        })?;
        Ok(PeerAddr { id, host, port })
    }
}

/// Removes a `scheme://` prefix as Go's `removeProtocolIfDefined` does: if the string contains
/// `://`, the result is the part between the first and the second `://` (so
/// `tcp://id@1.2.3.4:1` gives `id@1.2.3.4:1`, and a second `://` and everything after it are
/// dropped); otherwise the string is returned unchanged.
#[must_use]
pub fn strip_scheme(input: &str) -> &str {
    input.split("://").nth(1).unwrap_or(input)
}

impl PeerAddr {
    /// The address a peer claims in its NodeInfo: Go's
    /// `NewNetAddressString(IDAddressString(id, listen_addr))`, i.e. the scheme is stripped from
    /// `listen_addr` before `id@` is put in front (spec 3.5 rule 1, 3.7 and 5.2).
    pub fn from_id_and_listen_addr(id: &str, listen_addr: &str) -> Result<Self, AddrError> {
        format!("{id}@{}", strip_scheme(listen_addr)).parse()
    }
}

/// The failures of [`split_host_port`], turned into [`AddrError`]s naming the whole input.
enum SplitError {
    MissingPort,
    Unbracketed,
    Brackets,
}

impl SplitError {
    fn into_error(self, input: &str) -> AddrError {
        let input = input.to_owned();
        match self {
            SplitError::MissingPort => AddrError::MissingPort(input),
            SplitError::Unbracketed => AddrError::UnbracketedIpv6(input),
            SplitError::Brackets => AddrError::BadBrackets(input),
        }
    }
}

/// Go's `net.SplitHostPort`: `host:port` or `[host]:port`; the port may be empty here (it is
/// reported as missing).
fn split_host_port(hostport: &str) -> Result<(&str, &str), SplitError> {
    let (host, port, after_host) = if let Some(inner) = hostport.strip_prefix('[') {
        let end = inner.find(']').ok_or(SplitError::Brackets)?;
        let host = inner.get(..end).unwrap_or_default();
        let after = inner.get(end + 1..).unwrap_or_default();
        let port = match after.strip_prefix(':') {
            Some(port) => port,
            None if after.is_empty() => return Err(SplitError::MissingPort),
            None => return Err(SplitError::Brackets),
        };
        (host, port, port)
    } else {
        let colon = hostport.rfind(':').ok_or_else(|| {
            if hostport.contains(['[', ']']) {
                SplitError::Brackets
            } else {
                SplitError::MissingPort
            }
        })?;
        let host = hostport.get(..colon).unwrap_or_default();
        if host.contains(':') {
            return Err(SplitError::Unbracketed);
        }
        let port = hostport.get(colon + 1..).unwrap_or_default();
        (host, port, hostport)
    };
    if host.contains(['[', ']']) || after_host.contains(['[', ']']) {
        return Err(SplitError::Brackets);
    }
    if port.is_empty() {
        return Err(SplitError::MissingPort);
    }
    Ok((host, port))
}

/// A decimal port 0..=65535, digits only (Go's `strconv.ParseUint(s, 10, 16)`).
fn parse_port(port: &str) -> Option<u16> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// An IP literal, else a syntactically valid DNS name (letters, digits, `-`, `_`, dots between
/// non-empty labels of at most 63 characters, an optional final dot).
fn parse_host(host: &str) -> Option<Host> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Host::Ip(canonical_ip(ip)));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    // `1.2.3.4.` is the absolute form of an IP literal: keep it an IP so printing and parsing
    // again give the same host.
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(Host::Ip(canonical_ip(ip)));
    }
    let valid = !name.is_empty()
        && name.len() <= MAX_DNS_NAME_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| Host::Dns(name.to_ascii_lowercase()))
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as IPv4: Go stores both in 16 bytes and prints the mapped
/// form as a dotted quad, and the printed form is an address's identity in many maps.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Why one entry of a comma-separated address list is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {position} of the address list: {source}")]
pub struct PeerListError {
    /// The 1-based position among the non-empty entries.
    pub position: usize,
    /// Why the entry is invalid.
    pub source: AddrError,
}

/// Parses a comma-separated list as in `persistent_peers` and `seeds`: entries are trimmed of
/// spaces and empty entries are skipped (Go's `splitAndTrimEmpty(s, ",", " ")`). The first
/// invalid entry is the error.
pub fn parse_peer_list(list: &str) -> Result<Vec<PeerAddr>, PeerListError> {
    list.split(',')
        .map(|entry| entry.trim_matches(' '))
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(i, entry)| {
            entry.parse().map_err(|source| PeerListError {
                position: i + 1,
                source,
            })
        })
        .collect()
}

/// A resolved peer address: a node id at an IP and port. This is what the address book stores,
/// what PEX carries and what the engine dials. Printed as `id@ip:port` (IPv6 in brackets).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NetAddr {
    /// The node id expected at this address.
    pub id: NodeId,
    /// The IP and TCP port.
    pub addr: SocketAddr,
}

impl NetAddr {
    /// Pairs an id with a socket address; an IPv4-mapped IPv6 address becomes IPv4 (as Go
    /// prints it), so equal addresses print equally.
    #[must_use]
    pub fn new(id: NodeId, addr: SocketAddr) -> Self {
        let addr = SocketAddr::new(canonical_ip(addr.ip()), addr.port());
        NetAddr { id, addr }
    }

    /// The wire form carried by PEX: textual IP (Go's `net.IP.String()`), port as `uint32`.
    #[must_use]
    pub fn to_proto(&self) -> NetAddress {
        NetAddress {
            id: self.id.to_string(),
            ip: canonical_ip(self.addr.ip()).to_string(),
            port: u32::from(self.addr.port()),
        }
    }

    /// Reads a wire address. The errors mean different things to PEX (spec 5.2):
    /// [`AddrError::BadIp`] and [`AddrError::BadPort`] are misbehaviour of the sender, while
    /// [`AddrError::BadId`] is an entry Go silently drops.
    pub fn from_proto(wire: &NetAddress) -> Result<Self, AddrError> {
        let ip = wire
            .ip
            .parse::<IpAddr>()
            .map_err(|_| AddrError::BadIp(wire.ip.clone()))?;
        let port = u16::try_from(wire.port).map_err(|_| AddrError::BadPort {
            addr: format!("{}@{}", wire.id, wire.ip),
            port: wire.port.to_string(),
        })?;
        let id = wire
            .id
            .parse::<NodeId>()
            .map_err(|source| AddrError::BadId {
                addr: wire.id.clone(),
                source,
            })?;
        Ok(NetAddr::new(id, SocketAddr::new(ip, port)))
    }
}

impl From<&NetAddr> for NetAddress {
    fn from(addr: &NetAddr) -> Self {
        addr.to_proto()
    }
}

impl TryFrom<&NetAddress> for NetAddr {
    type Error = AddrError;

    fn try_from(wire: &NetAddress) -> Result<Self, Self::Error> {
        NetAddr::from_proto(wire)
    }
}

impl fmt::Display for NetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

impl FromStr for NetAddr {
    type Err = AddrError;

    /// Parses `[scheme://]id@ip:port`; a DNS name is [`AddrError::NotAnIp`].
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let peer: PeerAddr = input.parse()?;
        peer.resolved()
            .ok_or_else(|| AddrError::NotAnIp(input.to_owned()))
    }
}
