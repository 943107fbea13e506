//! The engine's admission glue: an inbound connection is admitted or refused (bans, attempt
//! rates, the inbound limit and its eviction handshakes, the connection table's duplicate-IP
//! policy, the application's filter) and a dial is checked and started.

use super::*;

impl Engine {
    /// Admits an inbound TCP connection from `remote`, or refuses it (then close the socket).
    pub fn accept(&mut self, now: Instant, remote: SocketAddr) -> Result<ConnId, Refused> {
        self.accept_inner(now, remote, None)
    }

    /// Admits an inbound connection from `remote` that a shared port's
    /// [`Acceptor`](crate::conn::Acceptor) already authenticated and routed to this chain (the
    /// peer's NodeInfo names our chain id): the same admission as [`Engine::accept`], then the
    /// peer's NodeInfo is checked and ours sent. The acceptor's socket becomes this
    /// connection; report its bytes and its close as for any other. Refused with
    /// [`Refused::OtherChain`] if the peer's chain is not ours (a routing mistake).
    pub fn accept_routed(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        routed: crate::conn::Routed,
    ) -> Result<ConnId, Refused> {
        if routed.chain_id() != self.cfg.chain_id {
            self.touch(now);
            self.counters.refused += 1;
            return Err(Refused::OtherChain);
        }
        self.accept_inner(now, remote, Some(routed))
    }

    pub(super) fn accept_inner(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        routed: Option<crate::conn::Routed>,
    ) -> Result<ConnId, Refused> {
        self.touch(now);
        let ip = remote.ip();
        let rates = Rates {
            per_ip: self.cfg.inbound_attempts_per_ip_per_minute,
            per_group: self.cfg.inbound_attempts_per_group_per_minute,
        };
        let group = self.book.group_of(&ip);
        let refused = if self.book.is_ip_banned(&ip, self.unix(now)) {
            Some(Refused::Banned)
        } else if !self
            .inbound_guard
            .admit(ip, group, is_routable(&ip), now, rates)
        {
            Some(Refused::RateLimited)
        } else if self.conns.inbound_open() >= self.inbound_conn_limit()
            && !self.may_handshake_to_evict()
        {
            Some(Refused::TooManyInbound)
        } else if self.conns.inbound_duplicate(&ip) {
            Some(Refused::DuplicateIp)
        } else if let Some(Err(why)) = self.conn_filter.as_ref().map(|f| f(remote)) {
            Some(Refused::Filtered(why))
        } else {
            None
        };
        if let Some(r) = refused {
            self.counters.refused += 1;
            return Err(r);
        }
        let id = self.conns.alloc();
        let pc = match routed {
            Some(routed) => PeerConnection::from_routed(
                now,
                self.conn_cfg.clone(),
                self.channels_arc.clone(),
                self.our_info.clone(),
                routed,
            ),
            None => {
                let secret = self.ephemeral();
                PeerConnection::new(
                    now,
                    self.conn_cfg.clone(),
                    self.channels_arc.clone(),
                    self.our_info.clone(),
                    &self.node_key,
                    secret,
                    Direction::Inbound,
                    None,
                )
            }
        };
        self.conns.insert_inbound(id, Conn::inbound(pc, remote));
        self.pex.add_conn(id);
        self.counters.accepted += 1;
        self.mark_dirty(id);
        self.finish(now);
        Ok(id)
    }

    /// Whether one more inbound handshake may run beyond the limit: every inbound slot holds a
    /// peer and fewer than [`inbound::EVICTION_HANDSHAKES`] handshakes are running (the newcomer
    /// then competes for a slot by eviction, G13).
    pub(super) fn may_handshake_to_evict(&self) -> bool {
        // Fewer peers than inbound slots: the inbound ones cannot fill them (and the walk of
        // every peer below is skipped at each accept).
        if self.peers.len() < self.cfg.max_num_inbound_peers {
            return false;
        }
        let (inbound, _) = self.num_peers();
        let handshaking = self.conns.inbound_handshaking();
        inbound >= self.cfg.max_num_inbound_peers && handshaking < inbound::EVICTION_HANDSHAKES
    }

    /// The inbound peer a newcomer on `newcomer` evicts (G13, see [`inbound`]), or `None` when
    /// the newcomer itself loses (or every peer is protected).
    pub(super) fn inbound_victim(
        &self,
        now: Instant,
        newcomer: ConnId,
        peer: NodeId,
        remote: SocketAddr,
    ) -> Option<ConnId> {
        let mut cands: Vec<Candidate> = self
            .peers
            .values()
            .filter(|p| p.counts_inbound() && !p.persistent)
            .map(|p| Candidate {
                conn: p.conn,
                id: p.id,
                group: self.book.group_of(&p.remote.ip()),
                since: p.since,
                last_useful: self.inbound_guard.last_useful(p.conn),
            })
            .collect();
        cands.push(Candidate {
            conn: newcomer,
            id: peer,
            group: self.book.group_of(&remote.ip()),
            since: now,
            last_useful: None,
        });
        inbound::select_victim(&cands, self.evict_key).filter(|&v| v != newcomer)
    }

    /// Inbound connections open at once: `max_num_inbound_peers + |unconditional| +
    /// |persistent|` (Go counts the unconditional ids; the persistent ones are added so a
    /// persistent peer can still complete its handshake when inbound is full, G18).
    pub(super) fn inbound_conn_limit(&self) -> usize {
        self.cfg.max_num_inbound_peers + self.unconditional.len() + self.persistent.len()
    }

    /// Dials `addr` on the application's behalf.
    pub fn dial(&mut self, now: Instant, addr: NetAddr) -> Result<ConnId, DialError> {
        self.touch(now);
        let r = self.start_dial(now, addr, Origin::App);
        self.finish(now);
        r
    }

    pub(super) fn check_dial(&self, now: Instant, addr: &NetAddr) -> Result<(), DialError> {
        if addr.id == self.our_id {
            return Err(DialError::SelfDial);
        }
        // A node dialled by name has no address yet: its filter and IP checks run on
        // `Input::Resolved`.
        let named = self.cfg.dial_names.contains_key(&addr.id);
        if !named && let Some(Err(why)) = self.conn_filter.as_ref().map(|f| f(addr.addr)) {
            return Err(DialError::Filtered(why));
        }
        if self.peers.contains_key(&addr.id) {
            return Err(DialError::AlreadyConnected);
        }
        if self.conns.is_dialing(&addr.id) {
            return Err(DialError::AlreadyDialing);
        }
        let ip = addr.addr.ip();
        if !self.persistent.contains(&addr.id) && self.book.is_banned(&addr.id, &ip, self.unix(now))
        {
            return Err(DialError::Banned);
        }
        if !named && self.conns.outbound_duplicate(&ip) {
            return Err(DialError::DuplicateIp);
        }
        Ok(())
    }

    pub(super) fn start_dial(
        &mut self,
        now: Instant,
        addr: NetAddr,
        origin: Origin,
    ) -> Result<ConnId, DialError> {
        self.check_dial(now, &addr)?;
        let id = self.conns.alloc();
        self.conns.insert_dial(id, Conn::dial(addr, origin));
        self.pex.add_conn(id);
        let deadline = now + self.cfg.dial_timeout;
        self.set_dial_deadline(id, Some(deadline));
        let unix = self.unix(now);
        self.book.mark_attempt(addr.addr, unix);
        self.persistent.dialled(&addr.id);
        self.counters.dials += 1;
        let out = match self.cfg.dial_names.get(&addr.id) {
            Some(name) => Output::DialName {
                conn: id,
                name: name.clone(),
            },
            None => Output::Dial {
                conn: id,
                addr: addr.addr,
            },
        };
        self.outputs.push_back(out);
        Ok(id)
    }

    /// A dial by name learnt its address: the connection, and the persistent peer's entry,
    /// now carry it; the filter and duplicate-IP checks that waited for it run now.
    pub(super) fn on_resolved(&mut self, now: Instant, id: ConnId, addr: SocketAddr) {
        if let Some(Err(why)) = self.conn_filter.as_ref().map(|f| f(addr)) {
            self.fail_conn(now, id, DialFailReason::Filtered(why), true);
            return;
        }
        let ip = addr.ip();
        if self.conns.outbound_duplicate(&ip) {
            self.fail_conn(now, id, DialFailReason::DuplicateIp, true);
            return;
        }
        self.conns.move_ip(id, IpSlot::None);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.remote = addr;
        let Some(dialed) = c.dialed.as_mut() else {
            return;
        };
        dialed.addr = addr;
        let peer = dialed.id;
        self.conns.move_ip(id, IpSlot::PendingOut);
        self.persistent.resolved(&peer, addr);
    }
}
