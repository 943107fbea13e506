//! Read access to the engine's state: the book, the peers and their life-cycle state, the
//! counts against the limits, per-connection read and delivery state.

use super::*;

impl Engine {
    /// The address book (read access; persist with its `encode`).
    #[must_use]
    pub fn addr_book(&self) -> &AddrBook {
        &self.book
    }

    /// The address book, mutable (e.g. to import a CometBFT `addrbook.json`).
    pub fn addr_book_mut(&mut self) -> &mut AddrBook {
        &mut self.book
    }

    /// Our node id.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.our_id
    }

    /// The NodeInfo we send.
    #[must_use]
    pub fn node_info(&self) -> &NodeInfo {
        &self.our_info
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Connected peers, ordered by node id.
    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.values()
    }

    /// A connected peer.
    #[must_use]
    pub fn peer(&self, id: &NodeId) -> Option<&PeerInfo> {
        self.peers.get(id)
    }

    /// Where `id` is in its life cycle; `None` means unknown or gone.
    #[must_use]
    pub fn peer_state(&self, id: &NodeId) -> Option<PeerState> {
        if self.peers.contains_key(id) {
            return Some(PeerState::Connected);
        }
        if let Some(c) = self.conns.dialing(id).and_then(|c| self.conns.get(&c)) {
            return Some(match c.phase {
                Phase::Dialing => PeerState::Dialing,
                _ => PeerState::Handshaking,
            });
        }
        if self.book.is_id_banned(id, self.unix(self.last_now)) {
            return Some(PeerState::Banned);
        }
        self.persistent.state(id)
    }

    /// Counters of what happened so far.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// `(inbound, outbound)` peers as counted against the limits (unconditional excluded).
    #[must_use]
    pub fn num_peers(&self) -> (usize, usize) {
        let mut inbound = 0;
        let mut outbound = 0;
        for p in self.peers.values() {
            inbound += usize::from(p.counts_inbound());
            outbound += usize::from(p.counts_outbound());
        }
        (inbound, outbound)
    }

    /// Outbound dials in progress (TCP or handshake) that count against the outbound limit.
    #[must_use]
    pub fn num_dialing(&self) -> usize {
        self.conns
            .count_dials(|id, c, _| !self.unconditional.contains(&id) && !self.feeler.is_feeler(c))
    }

    /// Open connections (any phase, until their `Input::Closed`).
    #[must_use]
    pub fn num_conns(&self) -> usize {
        self.conns.len()
    }

    /// Whether `conn` is known (issued and not yet closed).
    #[must_use]
    pub fn has_conn(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| !c.draining)
    }

    /// Whether the adapter should keep reading from `conn`: false while received data waits
    /// for the receive rate limit (read again after the next timeout) and while a message of
    /// `conn` waits for room in a flow-controlled channel (read again after
    /// [`consumed`](Self::consumed) made room). True for unknown ids.
    #[must_use]
    pub fn wants_read(&self, conn: ConnId) -> bool {
        !self.delivery.is_stalled(conn)
            && self
                .conns
                .get(&conn)
                .and_then(|c| c.pc.as_deref())
                .is_none_or(PeerConnection::wants_read)
    }

    /// Whether `conn` holds a message that waits for room in a flow-controlled channel (its
    /// reads are paused until [`consumed`](Self::consumed) makes room).
    #[must_use]
    pub fn delivery_stalled(&self, conn: ConnId) -> bool {
        self.delivery.is_stalled(conn)
    }

    /// What the engine holds for connections stalled by full delivery windows.
    #[must_use]
    pub fn held(&self) -> HeldStats {
        self.delivery.stats()
    }

    /// Traffic counters of the connection carrying `peer`.
    #[must_use]
    pub fn conn_stats(&self, peer: &NodeId) -> Option<ConnStats> {
        let conn = self.peers.get(peer)?.conn;
        self.conns
            .get(&conn)?
            .pc
            .as_deref()
            .map(PeerConnection::stats)
    }

    /// The address group of `ip`, as the book computes it (for G7 checks).
    #[must_use]
    pub fn group_of(&self, ip: &IpAddr) -> Group {
        self.book.group_of(ip)
    }
}
