//! The connection life cycle: handshake complete (admission of the authenticated peer, the
//! duplicate-id rule, the inbound limit), connection events, graceful hang-up, failure of a
//! connection that never became a peer, a peer going down, draining, and the redial of
//! persistent peers.

use super::*;

impl Engine {
    pub(super) fn on_conn_event(&mut self, now: Instant, id: ConnId, ev: ConnEvent) {
        #[allow(unreachable_patterns)]
        match ev {
            ConnEvent::Established { remote } => self.on_established(now, id, remote),
            ConnEvent::Message { channel, payload } => {
                let Some(peer) = self.conns.get(&id).and_then(|c| match c.phase {
                    Phase::Up(p) => Some(p),
                    _ => None,
                }) else {
                    return;
                };
                if channel == ChannelId::PEX && self.cfg.pex {
                    self.on_pex(now, id, peer, &payload);
                } else {
                    self.inbound_guard.useful(id, now);
                    self.counters.messages += 1;
                    self.delivery
                        .offer(id, peer, channel, payload, &mut self.outputs);
                }
            }
            ConnEvent::Closed(reason) => {
                let Some(phase) = self.conns.get(&id).map(|c| c.phase) else {
                    return;
                };
                let reason = match (
                    reason,
                    self.conns.get_mut(&id).and_then(|c| c.hangup.take()),
                ) {
                    (CloseReason::Local, Some(ours)) => *ours,
                    (reason, _) => DisconnectReason::Conn(reason),
                };
                match phase {
                    Phase::Up(_) => self.drop_conn(now, id, reason, true),
                    Phase::Handshaking | Phase::Dialing => {
                        let reason = match reason {
                            DisconnectReason::Conn(CloseReason::NodeInfo(
                                NodeInfoError::SelfConnection,
                            )) => DialFailReason::SelfConnection,
                            DisconnectReason::Conn(r) => DialFailReason::Handshake(r),
                            _ => DialFailReason::Handshake(CloseReason::Local),
                        };
                        self.fail_conn(now, id, reason, true);
                    }
                    Phase::Closing => {}
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_established(&mut self, now: Instant, id: ConnId, info: Arc<NodeInfo>) {
        let Some((direction, origin, remote, dialed)) = self
            .conns
            .get(&id)
            .map(|c| (c.direction, c.origin, c.remote, c.dialed))
        else {
            return;
        };
        let peer = info.id;
        if peer == self.our_id {
            self.fail_conn(now, id, DialFailReason::SelfConnection, true);
            return;
        }
        let persistent = self.persistent.contains(&peer);
        let unconditional = self.unconditional.contains(&peer);
        if !persistent && self.book.is_id_banned(&peer, self.unix(now)) {
            self.counters.refused += 1;
            self.fail_conn(now, id, DialFailReason::Banned, true);
            return;
        }
        if let Some(Err(why)) = self.peer_filter.as_ref().map(|f| f(&info, remote)) {
            self.counters.refused += 1;
            self.fail_conn(now, id, DialFailReason::Filtered(why), true);
            return;
        }
        if origin == Origin::Feeler {
            self.feeler_reached(now, id, dialed);
            return;
        }
        // Duplicate id: keep the connection dialled by the lower node id, else the newer one.
        if let Some(old) = self.peers.get(&peer).map(|p| (p.conn, p.direction)) {
            let dialer = |d: Direction| {
                if d == Direction::Outbound {
                    self.our_id
                } else {
                    peer
                }
            };
            let (old_dialer, new_dialer) = (dialer(old.1), dialer(direction));
            let keep_new = if old_dialer == new_dialer {
                true
            } else {
                new_dialer == self.our_id.min(peer)
            };
            self.counters.duplicates += 1;
            if keep_new {
                self.drop_conn(now, old.0, DisconnectReason::Duplicate, true);
            } else {
                self.fail_conn(now, id, DialFailReason::Duplicate, true);
                return;
            }
        }
        let ip = remote.ip();
        if self.conns.peer_duplicate(&ip) {
            self.fail_conn(now, id, DialFailReason::DuplicateIp, true);
            return;
        }
        if direction == Direction::Inbound && !unconditional {
            let (inbound, _) = self.num_peers();
            if inbound >= self.cfg.max_num_inbound_peers {
                let victim = if persistent {
                    self.peers
                        .values()
                        .filter(|p| p.counts_inbound() && !p.persistent)
                        .max_by_key(|p| (p.since, p.id))
                        .map(|p| p.conn)
                } else {
                    self.inbound_victim(now, id, peer, remote)
                };
                match victim {
                    Some(v) => self.drop_conn(now, v, DisconnectReason::Evicted, true),
                    None => {
                        self.counters.refused += 1;
                        self.fail_conn(now, id, DialFailReason::InboundLimit, true);
                        return;
                    }
                }
            }
        }
        // Admitted.
        if let Some(c) = self.conns.get_mut(&id) {
            c.phase = Phase::Up(peer);
        }
        self.conns.move_ip(id, IpSlot::Up);
        if let Some(a) = dialed {
            self.dial_reached(now, id, a);
        }
        if self.persistent.connected(&peer) {
            self.timers.cancel(Timer::Redial(peer));
        }
        self.peers.insert(
            peer,
            PeerInfo {
                id: peer,
                conn: id,
                direction,
                origin,
                info: info.clone(),
                remote,
                persistent,
                unconditional,
                since: now,
            },
        );
        self.counters.peers_up += 1;
        self.outputs.push_back(Output::Event(Event::PeerUp {
            peer,
            conn: id,
            info: info.clone(),
            direction,
            persistent,
        }));
        if self.cfg.pex {
            self.pex_add_peer(now, id, direction, origin, &info, remote);
        }
        if self.cfg.seed_mode && direction == Direction::Inbound && !persistent && !unconditional {
            self.seed_await_request(now, id);
        }
    }

    /// Our dial of `a` on `id` completed its handshake (a peer or a feeler): the dial is over,
    /// its back-off is cleared and the address is marked good in the book.
    pub(super) fn dial_reached(&mut self, now: Instant, id: ConnId, a: NetAddr) {
        self.conns.dial_done(a.id, id);
        self.backoff.succeeded(&a.addr);
        let unix = self.unix(now);
        let _ = self.book.mark_good(a.addr, unix, &mut self.rng);
        self.book_dirty = true;
    }

    /// Closes `id` gracefully once its queued bytes are flushed; `reason` is reported then.
    pub(super) fn hang_up(&mut self, now: Instant, id: ConnId, reason: DisconnectReason) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.hangup = Some(Box::new(reason));
        if let Some(pc) = c.pc.as_mut() {
            pc.close_after_flush();
        }
        self.timers.set(Timer::Hangup(id), now + HANGUP_GRACE);
        self.mark_dirty(id);
    }

    /// Forgets a connection after its terminal input.
    pub(super) fn remove_conn(&mut self, id: ConnId) {
        let Some(_) = self.conns.remove(id) else {
            return;
        };
        for timer in Timer::of_conn(id) {
            self.timers.cancel(timer);
        }
        self.seed_replies.remove(&id);
        self.pex.remove_conn(id);
        self.feeler.finished(id);
        self.inbound_guard.forget(id);
    }

    /// A connection that never became a peer is over (dial or handshake failure).
    /// `emit_close` asks the adapter to close the socket (when it is still open).
    pub(super) fn fail_conn(
        &mut self,
        now: Instant,
        id: ConnId,
        reason: DialFailReason,
        emit_close: bool,
    ) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.phase == Phase::Closing {
            return;
        }
        let dialed = c.dialed;
        let remote = c.remote;
        let auto = c.origin == Origin::Auto;
        c.phase = Phase::Closing;
        if let Some(pc) = c.pc.as_mut()
            && !pc.is_closed()
        {
            pc.close(CloseReason::Local);
        }
        self.set_conn_timer(id, None);
        self.set_dial_deadline(id, None);
        if emit_close {
            self.outputs.push_back(Output::Close { conn: id });
        }
        let Some(addr) = dialed else {
            self.counters.inbound_failures += 1;
            self.outputs
                .push_back(Output::Event(Event::InboundFailed { remote, reason }));
            return;
        };
        self.conns.dial_done(addr.id, id);
        self.counters.dial_failures += 1;
        let counts_as_failure = !matches!(
            reason,
            DialFailReason::Duplicate | DialFailReason::Cancelled | DialFailReason::SelfConnection
        );
        if counts_as_failure {
            let unix = self.unix(now);
            self.book.mark_failed(addr.addr, unix);
            if !self.persistent.contains(&addr.id) {
                self.backoff.failed(addr.addr, now, &mut self.rng);
            }
        }
        if matches!(reason, DialFailReason::SelfConnection) {
            self.book.remove(addr.addr);
            self.book.add_our_address(addr.addr);
            self.book_dirty = true;
        }
        self.outputs.push_back(Output::Event(Event::DialFailed {
            addr: Box::new(addr),
            reason,
        }));
        if self.persistent.contains(&addr.id) && !self.peers.contains_key(&addr.id) {
            self.schedule_redial(now, addr.id);
        }
        if auto {
            self.outbound_slot_lost(now);
        }
    }

    /// A peer that was up goes down.
    pub(super) fn drop_conn(
        &mut self,
        now: Instant,
        id: ConnId,
        reason: DisconnectReason,
        emit_close: bool,
    ) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Phase::Up(peer) = c.phase else {
            return;
        };
        c.phase = Phase::Closing;
        let draining = c.draining;
        let inbound = c.direction == Direction::Inbound;
        let auto_outbound = !inbound && c.origin == Origin::Auto;
        let dialed = c.dialed;
        if let Some(pc) = c.pc.as_mut()
            && !pc.is_closed()
        {
            pc.close(CloseReason::Local);
        }
        // A crawl connection lost before its reply (typically to the duplicate rule, when the
        // crawled node dialled us at the same moment) is crawled again at the next pass: the
        // held connection is what keeps that node from dialling us every period.
        let outstanding = self.pex.peer(id).is_some_and(|p| p.outstanding);
        let unanswered_crawl = (c.origin == Origin::Crawl && outstanding)
            .then_some(c.dialed)
            .flatten();
        if let Some(addr) = unanswered_crawl {
            self.pex.forget_crawl(&addr.addr);
        }
        self.set_conn_timer(id, None);
        self.conns.move_ip(id, IpSlot::None);
        self.counters.messages_discarded += self.delivery.discard(id) as u64;
        if emit_close && !draining {
            self.outputs.push_back(Output::Close { conn: id });
        }
        // A seed crawls a node that contacted it as soon as that node's own connection is gone
        // (it refuses a second connection from our id meanwhile), not at the next pass: the
        // crawl gives the node our address (an inbound peer's) that its PEX then spreads, and
        // every node that learns it dials us at its next ensure-peers pass unless we already
        // hold a connection to it. That crawl goes ahead even if we crawled the node lately:
        // had our crawl connection lasted, the node would not have dialled us (a dial of its
        // that crossed our crawl can win the duplicate rule on its side, which ends the crawl
        // connection as the node's hang-up); it would dial us again every period.
        if self.cfg.seed_mode && inbound {
            let listen = self
                .peers
                .get(&peer)
                .filter(|_| !matches!(reason, DisconnectReason::Duplicate))
                .and_then(|p| listen_addr_of(&p.info));
            if let Some(addr) = listen {
                self.pex.forget_crawl(&addr);
            }
            self.crawl_after_inbound_close(now);
        }
        if self.peers.get(&peer).is_some_and(|p| p.conn == id) {
            let since = self.peers.remove(&peer).map_or(now, |p| p.since);
            let closed_by_socket = matches!(reason, DisconnectReason::Io(_));
            self.counters.peers_down += 1;
            self.outputs
                .push_back(Output::Event(Event::PeerDown { peer, reason }));
            if self.persistent.contains(&peer) {
                self.schedule_redial(now, peer);
            }
            if auto_outbound {
                // A peer we dialled that hangs up right after the handshake refused us, as a
                // node at its inbound limit does: the next passes dial others.
                if let Some(a) = dialed
                    && closed_by_socket
                    && now.saturating_duration_since(since) < backoff::REFUSAL_WINDOW
                {
                    self.backoff.refused(a.addr, now, &mut self.rng);
                }
                self.outbound_slot_lost(now);
            }
        }
        if draining {
            // The socket is gone already: no `Input::Closed` will come.
            self.remove_conn(id);
        }
    }

    /// The socket of an up connection closed while messages of its peer are held: keep the
    /// peer (without its `PeerConnection`) until they are delivered.
    pub(super) fn start_draining(&mut self, id: ConnId) {
        self.set_conn_timer(id, None);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.draining = true;
        c.pc = None;
        c.hangup = None;
        self.timers.cancel(Timer::Hangup(id));
    }

    /// Peers whose socket closed while they were drained, and whose last message is out.
    pub(super) fn finish_drained(
        &mut self,
        now: Instant,
        done: Vec<(ConnId, NodeId, DisconnectReason)>,
    ) {
        for (conn, _, reason) in done {
            self.drop_conn(now, conn, reason, false);
        }
    }

    pub(super) fn schedule_redial(&mut self, now: Instant, id: NodeId) {
        debug_assert!(
            self.persistent.contains(&id),
            "redial of a non-persistent peer"
        );
        let cap = self.cfg.persistent_redial_cap;
        let Some(delay) = self.persistent.next_delay(&id, cap, &mut self.rng) else {
            return;
        };
        self.set_redial(id, now + delay);
    }

    pub(super) fn redial(&mut self, now: Instant, id: NodeId) {
        debug_assert!(
            self.persistent.contains(&id),
            "redial of a non-persistent peer"
        );
        let Some(addr) = self.persistent.addr(&id) else {
            return;
        };
        match self.start_dial(now, addr, Origin::Persistent) {
            Ok(_) | Err(DialError::AlreadyConnected | DialError::AlreadyDialing) => {}
            Err(_) => self.schedule_redial(now, id),
        }
    }

    /// Closes the connection to `peer` (no ban). A persistent peer is redialled later.
    /// Cancels a dial in progress to that id as well.
    pub fn disconnect(&mut self, now: Instant, peer: NodeId) {
        self.touch(now);
        if let Some(conn) = self.peers.get(&peer).map(|p| p.conn) {
            self.drop_conn(now, conn, DisconnectReason::Local, true);
        } else if let Some(conn) = self.conns.dialing(&peer) {
            self.fail_conn(now, conn, DialFailReason::Cancelled, true);
        }
        self.finish(now);
    }
}
