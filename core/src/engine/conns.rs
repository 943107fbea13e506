//! The engine's connection table: every open connection, the dials in progress by node id,
//! the per-IP counts and the duplicate-IP policy that admission and dialling read.
//!
//! The table owns the bookkeeping that must stay consistent with the set of connections: a
//! connection's IP is counted in exactly one of the pending-outbound, pending-inbound or up
//! maps (its [`IpSlot`]), a dial in progress is found by the node id dialled, and the inbound
//! count follows the inbound connections. Removing a connection releases all of it at once.

use std::net::{IpAddr, SocketAddr};

use super::DisconnectReason;
use super::peers::Origin;
use crate::addr::NetAddr;
use crate::conn::{Direction, PeerConnection};
use crate::ids::{ChannelId, ConnId, NodeId};

/// Where a connection is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// An outbound dial that has not connected yet.
    Dialing,
    /// SecretConnection and NodeInfo exchange.
    Handshaking,
    /// A peer.
    Up(NodeId),
    /// `Output::Close` was emitted; waiting for `Input::Closed`.
    Closing,
}

/// Which per-IP count a connection's IP is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IpSlot {
    /// Not counted (closing).
    None,
    /// An outbound connection not up yet.
    PendingOut,
    /// An inbound connection not up yet.
    PendingIn,
    /// A peer.
    Up,
}

/// One connection of the engine.
pub(super) struct Conn {
    /// The connection's layers; `None` while dialling and once drained. Boxed: a
    /// `PeerConnection` is over 1 KiB, and the map of connections would otherwise hold that
    /// inline for every spare slot of its table as well.
    pub(super) pc: Option<Box<PeerConnection>>,
    pub(super) direction: Direction,
    pub(super) origin: Origin,
    pub(super) remote: SocketAddr,
    /// The address dialled (outbound only).
    pub(super) dialed: Option<NetAddr>,
    pub(super) phase: Phase,
    /// Queued in the engine's dirty list.
    pub(super) dirty: bool,
    /// Why we asked the connection to close after flushing (reported when it closes). Boxed:
    /// a reason takes 48 bytes and most connections never get one.
    pub(super) hangup: Option<Box<DisconnectReason>>,
    /// Counted in the table's per-IP map of this slot (changed only by the table).
    ip_slot: IpSlot,
    /// Channels on which a send was refused as full (each gets one `SendReady` when room
    /// returns).
    pub(super) send_full: smallvec::SmallVec<[ChannelId; 2]>,
    /// The socket closed while messages of this peer were held for the application: the
    /// peer goes down once they are delivered (the connection has no `PeerConnection` then).
    pub(super) draining: bool,
}

impl Conn {
    /// A new inbound connection in its handshake.
    pub(super) fn inbound(pc: PeerConnection, remote: SocketAddr) -> Conn {
        Conn::new(
            Some(Box::new(pc)),
            Direction::Inbound,
            Origin::Inbound,
            remote,
            None,
            Phase::Handshaking,
        )
    }

    /// A new outbound dial to `addr`.
    pub(super) fn dial(addr: NetAddr, origin: Origin) -> Conn {
        Conn::new(
            None,
            Direction::Outbound,
            origin,
            addr.addr,
            Some(addr),
            Phase::Dialing,
        )
    }

    fn new(
        pc: Option<Box<PeerConnection>>,
        direction: Direction,
        origin: Origin,
        remote: SocketAddr,
        dialed: Option<NetAddr>,
        phase: Phase,
    ) -> Conn {
        Conn {
            pc,
            direction,
            origin,
            remote,
            dialed,
            phase,
            dirty: false,
            hangup: None,
            ip_slot: IpSlot::None,
            send_full: smallvec::SmallVec::new(),
            draining: false,
        }
    }
}

/// Per-IP connection counts (an IP leaves the map when its count drops to zero).
type IpCounts = hashbrown::HashMap<IpAddr, u32>;

/// The connections, the dials in progress and the per-IP counts, kept consistent.
pub(super) struct ConnTable {
    conns: hashbrown::HashMap<ConnId, Conn>,
    /// Outbound connections not yet up, by the id dialled.
    pending_out: hashbrown::HashMap<NodeId, ConnId>,
    up_ips: IpCounts,
    pending_in_ips: IpCounts,
    pending_out_ips: IpCounts,
    /// Inbound connections open (any phase).
    inbound_open: usize,
    next_conn: u64,
    /// `allow_duplicate_ip`: several connections from (or to) one IP.
    allow_duplicate_ip: bool,
}

impl ConnTable {
    /// An empty table with the duplicate-IP policy `allow_duplicate_ip`.
    pub(super) fn new(allow_duplicate_ip: bool) -> ConnTable {
        ConnTable {
            conns: hashbrown::HashMap::new(),
            pending_out: hashbrown::HashMap::new(),
            up_ips: IpCounts::new(),
            pending_in_ips: IpCounts::new(),
            pending_out_ips: IpCounts::new(),
            inbound_open: 0,
            next_conn: 1,
            allow_duplicate_ip,
        }
    }

    /// Whether a connection id was ever issued.
    pub(super) fn started(&self) -> bool {
        self.next_conn != 1
    }

    /// A fresh connection id (never reused).
    pub(super) fn alloc(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
    }

    /// The connection `id`.
    pub(super) fn get(&self, id: &ConnId) -> Option<&Conn> {
        self.conns.get(id)
    }

    /// The connection `id`, mutable.
    pub(super) fn get_mut(&mut self, id: &ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id)
    }

    /// Whether `id` is open.
    pub(super) fn contains_key(&self, id: &ConnId) -> bool {
        self.conns.contains_key(id)
    }

    /// Open connections.
    pub(super) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Inbound connections open (any phase).
    pub(super) fn inbound_open(&self) -> usize {
        self.inbound_open
    }

    /// Inbound connections still in their handshake.
    #[allow(clippy::disallowed_methods)] // a count: the order does not matter
    pub(super) fn inbound_handshaking(&self) -> usize {
        self.conns
            .values()
            .filter(|c| c.direction == Direction::Inbound && c.phase == Phase::Handshaking)
            .count()
    }

    /// Adds an accepted inbound connection (its IP counted as pending inbound).
    pub(super) fn insert_inbound(&mut self, id: ConnId, conn: Conn) {
        debug_assert_eq!(conn.direction, Direction::Inbound);
        let ip = conn.remote.ip();
        self.conns.insert(id, conn);
        self.move_ip(id, IpSlot::PendingIn);
        debug_assert_eq!(self.conns[&id].remote.ip(), ip);
        self.inbound_open += 1;
    }

    /// Adds an outbound dial (its IP counted as pending outbound, found by the id dialled).
    pub(super) fn insert_dial(&mut self, id: ConnId, conn: Conn) {
        let dialed = conn.dialed.map(|a| a.id);
        debug_assert!(dialed.is_some(), "a dial without an address");
        self.conns.insert(id, conn);
        self.move_ip(id, IpSlot::PendingOut);
        if let Some(node) = dialed {
            self.pending_out.insert(node, id);
        }
    }

    /// Forgets `id`, releasing its IP count, its dial entry and its inbound slot.
    pub(super) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&id)?;
        release(self.ip_map(c.ip_slot), c.remote.ip());
        if c.direction == Direction::Inbound {
            self.inbound_open = self.inbound_open.saturating_sub(1);
        }
        if let Some(a) = c.dialed {
            self.dial_done(a.id, id);
        }
        Some(c)
    }

    /// Moves `id`'s IP to the count of `slot`.
    pub(super) fn move_ip(&mut self, id: ConnId, slot: IpSlot) {
        let Some((ip, old)) = self.conns.get(&id).map(|c| (c.remote.ip(), c.ip_slot)) else {
            return;
        };
        release(self.ip_map(old), ip);
        if let Some(map) = self.ip_map(slot) {
            *map.entry(ip).or_insert(0) += 1;
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.ip_slot = slot;
        }
    }

    fn ip_map(&mut self, slot: IpSlot) -> Option<&mut IpCounts> {
        match slot {
            IpSlot::None => None,
            IpSlot::PendingOut => Some(&mut self.pending_out_ips),
            IpSlot::PendingIn => Some(&mut self.pending_in_ips),
            IpSlot::Up => Some(&mut self.up_ips),
        }
    }

    /// The dial in progress to `node`.
    pub(super) fn dialing(&self, node: &NodeId) -> Option<ConnId> {
        self.pending_out.get(node).copied()
    }

    /// Whether a dial to `node` is in progress.
    pub(super) fn is_dialing(&self, node: &NodeId) -> bool {
        self.pending_out.contains_key(node)
    }

    /// The dial `id` to `node` is over (up, failed or closed): it no longer blocks another.
    pub(super) fn dial_done(&mut self, node: NodeId, id: ConnId) {
        if self.pending_out.get(&node) == Some(&id) {
            self.pending_out.remove(&node);
        }
    }

    /// Dials in progress.
    pub(super) fn num_dials(&self) -> usize {
        self.pending_out.len()
    }

    /// Dials in progress for which `f(node dialled, connection)` holds.
    #[allow(clippy::disallowed_methods)] // a count: the order does not matter
    pub(super) fn count_dials(&self, f: impl Fn(NodeId, ConnId, &Conn) -> bool) -> usize {
        self.pending_out
            .iter()
            .filter(|(node, id)| self.conns.get(*id).is_some_and(|c| f(**node, **id, c)))
            .count()
    }

    /// The remote IPs of the dials in progress of `origin`, sorted.
    #[allow(clippy::disallowed_methods)] // sorted before use
    pub(super) fn dial_ips(&self, origin: Origin) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .pending_out
            .values()
            .filter_map(|c| self.conns.get(c))
            .filter(|c| c.origin == origin)
            .map(|c| c.remote.ip())
            .collect();
        ips.sort_unstable();
        ips
    }

    /// The duplicate-IP policy for a new peer at `ip`: refused when duplicates are not
    /// allowed and a peer at `ip` is up.
    pub(super) fn peer_duplicate(&self, ip: &IpAddr) -> bool {
        !self.allow_duplicate_ip && self.up_ips.contains_key(ip)
    }

    /// The duplicate-IP policy for an inbound connection from `ip`: refused when duplicates
    /// are not allowed and a peer or an inbound handshake from `ip` exists.
    pub(super) fn inbound_duplicate(&self, ip: &IpAddr) -> bool {
        !self.allow_duplicate_ip
            && (self.up_ips.contains_key(ip) || self.pending_in_ips.contains_key(ip))
    }

    /// The duplicate-IP policy for a dial to `ip`: refused when duplicates are not allowed
    /// and a peer or a dial at `ip` exists.
    pub(super) fn outbound_duplicate(&self, ip: &IpAddr) -> bool {
        !self.allow_duplicate_ip
            && (self.up_ips.contains_key(ip) || self.pending_out_ips.contains_key(ip))
    }
}

fn release(map: Option<&mut IpCounts>, ip: IpAddr) {
    if let Some(map) = map
        && let Some(n) = map.get_mut(&ip)
    {
        *n -= 1;
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::NetAddr;

    fn addr(n: u8, ip: [u8; 4]) -> NetAddr {
        NetAddr {
            id: NodeId([n; 20]),
            addr: SocketAddr::from((ip, 26656)),
        }
    }

    #[test]
    fn ids_are_never_reused() {
        let mut t = ConnTable::new(false);
        assert!(!t.started());
        let a = t.alloc();
        let b = t.alloc();
        assert_ne!(a, b);
        assert!(t.started());
    }

    #[test]
    fn a_dial_blocks_a_second_dial_and_its_ip_until_removed() {
        let mut t = ConnTable::new(false);
        let a = addr(1, [10, 0, 0, 1]);
        let id = t.alloc();
        t.insert_dial(id, Conn::dial(a, Origin::Auto));
        assert_eq!(t.dialing(&a.id), Some(id));
        assert_eq!(t.num_dials(), 1);
        assert!(t.outbound_duplicate(&a.addr.ip()));
        // An inbound connection from the same IP is not refused by a dial in progress.
        assert!(!t.inbound_duplicate(&a.addr.ip()));
        assert_eq!(t.dial_ips(Origin::Auto), vec![a.addr.ip()]);
        assert!(t.dial_ips(Origin::Feeler).is_empty());
        assert!(t.remove(id).is_some());
        assert!(!t.is_dialing(&a.id));
        assert!(!t.outbound_duplicate(&a.addr.ip()));
        assert_eq!(t.len(), 0);
        assert!(t.remove(id).is_none());
    }

    #[test]
    fn a_peer_blocks_both_directions_unless_duplicates_are_allowed() {
        for allow in [false, true] {
            let mut t = ConnTable::new(allow);
            let a = addr(2, [10, 0, 0, 2]);
            let id = t.alloc();
            t.insert_dial(id, Conn::dial(a, Origin::Auto));
            t.move_ip(id, IpSlot::Up);
            t.dial_done(a.id, id);
            assert!(!t.is_dialing(&a.id));
            assert_eq!(t.inbound_duplicate(&a.addr.ip()), !allow);
            assert_eq!(t.outbound_duplicate(&a.addr.ip()), !allow);
            t.move_ip(id, IpSlot::None);
            assert!(!t.inbound_duplicate(&a.addr.ip()));
            assert!(!t.outbound_duplicate(&a.addr.ip()));
        }
    }

    #[test]
    fn ip_counts_drop_only_with_the_last_connection() {
        let mut t = ConnTable::new(false);
        let ip = [10, 0, 0, 3];
        let (a, b) = (addr(3, ip), addr(4, ip));
        let (ia, ib) = (t.alloc(), t.alloc());
        t.insert_dial(ia, Conn::dial(a, Origin::Auto));
        t.insert_dial(ib, Conn::dial(b, Origin::App));
        assert_eq!(t.count_dials(|_, _, c| c.origin == Origin::App), 1);
        t.remove(ia);
        assert!(t.outbound_duplicate(&a.addr.ip()));
        t.remove(ib);
        assert!(!t.outbound_duplicate(&a.addr.ip()));
    }

    #[allow(clippy::disallowed_methods)] // Instant::now() only anchors the test clock
    fn inbound_conn(remote: SocketAddr) -> Conn {
        use std::sync::Arc;
        use std::time::Instant;

        use crate::conn::{ConnectionConfig, NodeInfo};
        use crate::identity::NodeKey;
        let key = NodeKey::from_seed([1; 32]);
        let info = NodeInfo::new(key.node_id(), "t", "", "", []);
        let pc = PeerConnection::new(
            Instant::now(),
            Arc::new(ConnectionConfig::default()),
            Arc::from(Vec::new()),
            Arc::new(info),
            &key,
            [2; 32],
            Direction::Inbound,
            None,
        );
        Conn::inbound(pc, remote)
    }

    #[test]
    fn inbound_connections_count_until_removed() {
        let mut t = ConnTable::new(false);
        let remote = SocketAddr::from(([10, 0, 0, 6], 40000));
        let id = t.alloc();
        t.insert_inbound(id, inbound_conn(remote));
        assert_eq!((t.inbound_open(), t.inbound_handshaking()), (1, 1));
        assert!(t.inbound_duplicate(&remote.ip()));
        // A dial to that IP is not refused by an inbound handshake from it.
        assert!(!t.outbound_duplicate(&remote.ip()));
        // Up, it blocks new peers from its IP in both directions.
        t.move_ip(id, IpSlot::Up);
        if let Some(c) = t.get_mut(&id) {
            c.phase = Phase::Up(NodeId([6; 20]));
        }
        assert_eq!((t.inbound_open(), t.inbound_handshaking()), (1, 0));
        assert!(t.peer_duplicate(&remote.ip()));
        assert!(t.outbound_duplicate(&remote.ip()));
        t.remove(id);
        assert_eq!(t.inbound_open(), 0);
        assert!(!t.inbound_duplicate(&remote.ip()));
        assert!(!t.peer_duplicate(&remote.ip()));
    }

    #[test]
    fn dial_done_ignores_a_stale_connection() {
        let mut t = ConnTable::new(false);
        let a = addr(5, [10, 0, 0, 5]);
        let old = t.alloc();
        let new = t.alloc();
        t.insert_dial(new, Conn::dial(a, Origin::Auto));
        t.dial_done(a.id, old);
        assert_eq!(t.dialing(&a.id), Some(new));
    }
}
