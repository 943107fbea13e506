//! What an automatic pick (ensure-peers, a feeler) may dial, asked of the parts that know.

use super::*;

/// What an automatic pick (ensure-peers, a feeler) may dial: not us, not a persistent peer
/// (dialled on its own schedule), not connected or being dialled, no duplicate IP (unless
/// allowed), not banned, not backed off.
pub(super) struct Dialable<'a> {
    /// Our node id.
    pub(super) our: NodeId,
    /// The address book (bans).
    pub(super) book: &'a AddrBook,
    /// Persistent peers (dialled on their own schedule).
    pub(super) persistent: &'a PersistentPeers,
    /// Connected peers.
    pub(super) peers: &'a BTreeMap<NodeId, PeerInfo>,
    /// Connections and dials in progress (duplicate IPs).
    pub(super) conns: &'a ConnTable,
    /// Dial backoff per address.
    pub(super) backoff: &'a DialBackoff,
}

impl Dialable<'_> {
    pub(super) fn allows(&self, a: &NetAddr, unix: u64, now: Instant) -> bool {
        let ip = a.addr.ip();
        a.id != self.our
            && !self.persistent.contains(&a.id)
            && !self.peers.contains_key(&a.id)
            && !self.conns.is_dialing(&a.id)
            && !self.conns.outbound_duplicate(&ip)
            && !self.book.is_banned(&a.id, &ip, unix)
            && self.backoff.allowed(&a.addr, now)
    }
}
