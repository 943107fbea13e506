//! `id@host:port` peer addresses (spec 1.3): parsing and printing, DNS names kept as names.

use std::fmt;
use std::net::SocketAddr;

use crate::ids::NodeId;

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
    /// Pairs an id with a socket address.
    #[must_use]
    pub fn new(id: NodeId, addr: SocketAddr) -> Self {
        NetAddr { id, addr }
    }
}

impl fmt::Display for NetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}
