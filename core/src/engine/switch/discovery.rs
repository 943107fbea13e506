//! The engine's PEX glue: PEX messages in, the ensure-peers pass, the seeds and the seed-mode
//! crawler out. The decisions are the [`Pex`] reactor's (`engine/pex.rs`); here they meet the
//! address book, the connection table and the dials.

use super::*;

impl Engine {
    pub(super) fn pex_add_peer(
        &mut self,
        now: Instant,
        id: ConnId,
        direction: Direction,
        origin: Origin,
        info: &NodeInfo,
        remote: SocketAddr,
    ) {
        match direction {
            Direction::Outbound => {
                if origin == Origin::Crawl || self.book.needs_more() {
                    self.pex_request(now, id);
                }
            }
            Direction::Inbound => {
                if let Some(addr) = listen_addr_of(info) {
                    let unix = self.unix(now);
                    let a = NetAddr::new(info.id, addr);
                    // Source: the routable IP the peer connected from, so that addresses
                    // announced over many connections from one place stay confined to that
                    // source group's 64 new buckets (G1), whatever listen IPs they claim.
                    // From a non-routable IP (loopback, a private LAN, NAT) the connection says
                    // nothing about where the peer is: there the peer is its own source, as in
                    // CometBFT (`AddAddress(addr, addr)`), else peers behind one local IP share
                    // one source group and a slot collision there is never healed by PEX
                    // (every copy comes from that IP too).
                    let source = if is_routable(&remote.ip()) {
                        remote.ip()
                    } else {
                        addr.ip()
                    };
                    if self.book.add(a, source, unix, &mut self.rng).is_ok() {
                        self.book_dirty = true;
                    }
                }
            }
        }
    }

    pub(super) fn pex_request(&mut self, now: Instant, id: ConnId) {
        let Some(p) = self.pex.peer_mut(id) else {
            return;
        };
        if !p.start_request(now) {
            return;
        }
        if self
            .send_on(now, id, ChannelId::PEX, pex::encode_request())
            .is_ok()
        {
            self.counters.pex_requests_sent += 1;
        } else if let Some(p) = self.pex.peer_mut(id) {
            p.outstanding = false;
        }
    }

    /// Bans `peer` (id, and IP unless `allow_duplicate_ip`) and disconnects it for a PEX violation (G14). Persistent peers
    /// are banned only in the book (spec 7.7) and redialled.
    pub(super) fn pex_violation(
        &mut self,
        now: Instant,
        id: ConnId,
        peer: NodeId,
        v: PexViolation,
    ) {
        let duration = self.cfg.addr_book.ban_duration;
        let Some((ip, outbound)) = self
            .conns
            .get(&id)
            .map(|c| (c.remote.ip(), c.direction == Direction::Outbound))
        else {
            return;
        };
        // G17: the peer's group is dialled last for the ban's length, and an outbound slot it
        // held is refilled now rather than at the next period.
        if is_routable(&ip) {
            self.pex
                .suspect_group(self.book.group_of(&ip), now + duration);
        }
        if self.ban_conn(now, id, peer, duration, DisconnectReason::Pex(v))
            != BanOutcome::NotConnected
        {
            self.counters.bans += 1;
        }
        if outbound && self.cfg.pex && !self.cfg.seed_mode && !self.timers.is_set(Timer::EnsureSoon)
        {
            self.timers.set(Timer::EnsureSoon, now);
        }
    }

    pub(super) fn on_pex(&mut self, now: Instant, id: ConnId, peer: NodeId, payload: &[u8]) {
        let msg = match pex::decode(payload) {
            Ok(m) => m,
            Err(v) => return self.pex_violation(now, id, peer, v),
        };
        // Called for a message of an up connection: it and its PEX state exist.
        debug_assert!(self.conns.contains_key(&id) && self.pex.peer(id).is_some());
        let Some(direction) = self.conns.get(&id).map(|c| c.direction) else {
            return;
        };
        match msg {
            PexMsg::Request => {
                if self.cfg.seed_mode && direction == Direction::Inbound {
                    let answered = self.pex.peer(id).is_some_and(|p| p.answered);
                    if answered {
                        return;
                    }
                    if let Some(p) = self.pex.peer_mut(id) {
                        p.answered = true;
                    }
                    // Answered now or once the crawler's tests are done, then held a moment
                    // and hung up (`seed_reply`).
                    self.seed_request(now, id);
                    return;
                }
                let min = self.cfg.ensure_peers_period / 3;
                let verdict = self.pex.peer_mut(id).map(|p| p.on_request(now, min));
                match verdict {
                    Some(Ok(())) => {
                        let sel = self.pex_reply(now);
                        if self
                            .send_on(now, id, ChannelId::PEX, pex::encode_addrs(&sel))
                            .is_ok()
                        {
                            self.counters.pex_requests_answered += 1;
                        }
                    }
                    // A node we crawled asking again too soon is not banned by a seed, and not
                    // answered: a CometBFT v0.39+ node sends a request to a random peer
                    // whenever a seed's addresses arrive, so two come back to back when it
                    // draws us twice; an answer would trigger one more, and a ban would cut the
                    // node off its seed (and, behind one NAT or on loopback, every node at its
                    // IP). Unanswered, its request stays outstanding and it asks others.
                    Some(Err(PexViolation::TooFrequentRequests))
                        if self.cfg.seed_mode && direction == Direction::Outbound => {}
                    Some(Err(v)) => self.pex_violation(now, id, peer, v),
                    None => {}
                }
            }
            PexMsg::Addrs(addrs) => {
                let verdict = self.pex.peer_mut(id).map(pex::PexPeer::on_addrs);
                match verdict {
                    Some(Ok(())) => {}
                    Some(Err(v)) => return self.pex_violation(now, id, peer, v),
                    None => return,
                }
                self.counters.pex_addrs_received += 1;
                let Some((src, origin)) = self.conns.get(&id).map(|c| (c.remote.ip(), c.origin))
                else {
                    return;
                };
                let unix = self.unix(now);
                for a in addrs {
                    if a.id == self.our_id {
                        continue;
                    }
                    if self.book.add(a, src, unix, &mut self.rng).is_ok() {
                        self.book_dirty = true;
                    }
                }
                match origin {
                    Origin::Seed if !self.cfg.seed_mode => {
                        // v0.37/v0.38: addresses from a seed trigger an ensure-peers pass (now,
                        // even when an early pass is due later).
                        if self.timers.get(Timer::EnsureSoon).is_none_or(|t| t > now) {
                            self.timers.set(Timer::EnsureSoon, now);
                        }
                        // A node dialled as a seed is asked once and left, as Bitcoin Core's
                        // address-fetch connections are: we hang up ourselves once its reply is
                        // in, so a seed that lingers (ours holds an answered connection 1 s for
                        // CometBFT nodes, `seed_reply`) frees its inbound slot for the next
                        // newcomer at once. The ensure-peers pass already did not count it.
                        self.hang_up(now, id, DisconnectReason::SeedDone);
                        self.pex.seed_answered(now);
                    }
                    // Addresses from a peer while we are short of the outbound target: an
                    // ensure-peers pass soon dials them (at most one pass per
                    // [`pex::ADDRS_PASS_DELAY`], however many replies arrive), where CometBFT
                    // waits for its next period (up to 30 s) with the addresses in its book.
                    _ if !self.cfg.seed_mode
                        && self.cfg.early_ensure_passes
                        && self.short_of_target() =>
                    {
                        let at = now + pex::ADDRS_PASS_DELAY;
                        if self.timers.get(Timer::EnsureSoon).is_none_or(|t| t > at) {
                            self.timers.set(Timer::EnsureSoon, at);
                        }
                    }
                    // A crawled connection is held (until `seed_disconnect_wait`, as CometBFT's
                    // seed does), not hung up: the crawled node stored our address as an inbound
                    // peer's and, were we gone, its ensure-peers pass would dial us again every
                    // period, a storm that also trips its other peers' PEX rate limits.
                    _ => {}
                }
            }
        }
    }

    /// The addresses of a PEX reply. A seed with a vetted window serves only what it reached
    /// itself: the book's `last_success` (set by `mark_good` when a connection we dialled
    /// completes its handshake, crawls included) is the one record of that; a connection we
    /// dialled and still hold counts as reached now. Otherwise (and with a zero window,
    /// CometBFT's policy) a random selection of the book.
    pub(super) fn pex_reply(&mut self, now: Instant) -> Vec<NetAddr> {
        let unix = self.unix(now);
        if !self.cfg.seed_mode || self.cfg.seed_vetted_window.is_zero() {
            return self.book.selection(unix, &mut self.rng);
        }
        let salt = self.rng.next_u64();
        self.vetted_selection(now, salt)
    }

    /// The vetted addresses a seed serves now (most recently reached first): those it reached
    /// itself within `seed_vetted_window`, as its PEX reply gives them (an operator's view,
    /// e.g. the CLI's `/vetted` endpoint). Empty with a zero window.
    #[must_use]
    pub fn vetted_addrs(&self, now: Instant) -> Vec<NetAddr> {
        self.vetted_selection(now, 0)
    }

    /// The vetted addresses, equally recent ones in the order drawn from `salt`.
    fn vetted_selection(&self, now: Instant, salt: u64) -> Vec<NetAddr> {
        let unix = self.unix(now);
        let window = self.cfg.seed_vetted_window;
        if window.is_zero() {
            return Vec::new();
        }
        let live: Vec<SocketAddr> = self
            .peers
            .values()
            .filter(|p| p.direction == Direction::Outbound)
            .filter_map(|p| self.conns.get(&p.conn).and_then(|c| c.dialed))
            .map(|a| a.addr)
            .collect();
        let since = unix.saturating_sub(window.as_secs());
        self.book.vetted_selection(unix, since, &live, salt)
    }

    /// Groups of automatic outbound peers and automatic dials in progress (G7).
    #[allow(clippy::disallowed_methods)] // collected into a BTreeSet: the order does not matter
    pub(super) fn auto_groups(&self) -> BTreeSet<Group> {
        let mut groups = BTreeSet::new();
        for p in self.peers.values() {
            if p.origin == Origin::Auto && p.direction == Direction::Outbound {
                groups.insert(self.book.group_of(&p.remote.ip()));
            }
        }
        for ip in self.conns.dial_ips(Origin::Auto) {
            groups.insert(self.book.group_of(&ip));
        }
        groups
    }

    /// spec 5.4 `ensurePeers`.
    pub(super) fn ensure_peers(&mut self, now: Instant, period_elapsed: bool) {
        let (_, out) = self.num_peers();
        // A seed that answered us is about to hang up: it holds no place of the outbound
        // target, so its addresses are dialled now rather than a period later (CometBFT dials
        // a seed's addresses at once, #2093).
        let leaving_seeds = if self.cfg.seed_mode {
            0
        } else {
            self.peers
                .values()
                .filter(|p| p.origin == Origin::Seed && p.counts_outbound())
                .filter(|p| self.pex.peer(p.conn).is_some_and(pex::PexPeer::replied))
                .count()
        };
        let out = out.saturating_sub(leaving_seeds);
        let need = self.pex.need(out, self.num_dialing());
        let mut picked_any = false;
        if need > 0 {
            let groups = self.auto_groups();
            let suspect = self.pex.suspect_groups(now);
            let unix = self.unix(now);
            let dialable = Dialable {
                our: self.our_id,
                book: &self.book,
                persistent: &self.persistent,
                peers: &self.peers,
                conns: &self.conns,
                backoff: &self.backoff,
            };
            let picked = Pex::pick_dials_avoiding(
                &self.book,
                &mut self.rng,
                unix,
                need,
                groups,
                &suspect,
                |a| dialable.allows(a, unix, now),
            );
            for a in picked {
                if self.start_dial(now, a, Origin::Auto).is_ok() {
                    picked_any = true;
                }
            }
        }
        self.schedule_short_retry(now, out);
        // Expired bans return to the book (new table only, rate-limited by the book, G16).
        let unix = self.unix(now);
        if self.book.reinstate_expired(unix, &mut self.rng) > 0 {
            self.book_dirty = true;
        }
        if self.book.needs_more() {
            // One request to a peer drawn uniformly among those we may ask now (none
            // outstanding, none in the last 10 s), so the pacing rule never wastes a period.
            if period_elapsed {
                let askable: Vec<ConnId> = self
                    .peers
                    .values()
                    .map(|p| p.conn)
                    .filter(|&c| self.pex.peer(c).is_some_and(|p| p.can_request(now)))
                    .collect();
                if let Some(conn) = Pex::choose_request(&askable, &mut self.rng) {
                    self.pex_request(now, conn);
                }
            }
            // An early pass (not the period's) goes back to the seeds only if none answered
            // us within the last period: a seed that has answered has nothing more for us
            // yet, and a node that can never reach its target (a small network) must not
            // redial it at every early pass. A seed that refused us (full) is tried again.
            let seed_answered = self
                .pex
                .seed_answered_within(now, self.cfg.ensure_peers_period);
            if !picked_any && need > 0 && (period_elapsed || !seed_answered) {
                self.dial_seeds(now);
            }
        }
    }

    /// After an ensure-peers pass: a node still short of its outbound target (peers up and dials
    /// in progress) runs an early pass soon ([`Pex::next_short_retry`]: 2, 4, 8, 16 s) instead of
    /// waiting a whole period; one at its target starts the next shortfall afresh. The early
    /// pass dials what the book has learnt meanwhile (the new peers' PEX replies) and, if it
    /// has nothing, the seeds: a young seed's short reply costs seconds, not periods. At most
    /// four such passes follow one another per shortfall; later ones come only from a lost
    /// slot ([`Self::outbound_slot_lost`]), and none redials a seed that answered within the
    /// period.
    fn schedule_short_retry(&mut self, now: Instant, out: usize) {
        if self.cfg.seed_mode || !self.cfg.pex || !self.cfg.early_ensure_passes {
            return;
        }
        if out >= self.cfg.max_num_outbound_peers {
            self.pex.target_reached();
            return;
        }
        // Dials in progress may yet fill the target; a pass already due needs no retry.
        if self.pex.need(out, self.num_dialing()) == 0 || self.timers.is_set(Timer::EnsureSoon) {
            return;
        }
        if let Some(delay) = self.pex.next_short_retry() {
            // Spread over [delay/2, 3·delay/2): nodes refused together by a full seed must not
            // come back in one wave.
            let delay = delay / 2 + crate::engine::backoff::jitter(&mut self.rng, delay);
            self.timers.set(Timer::EnsureSoon, now + delay);
        }
    }

    /// An automatic outbound peer went down, or an automatic dial failed, while the node is
    /// short of its target: an early pass refills the slot soon (the next short-retry delay,
    /// then [`pex::SHORT_RETRY_FIRST`] once those are spent, jittered) instead of at the next
    /// period. A node at its inbound limit refuses us only after the handshake, so without
    /// this a node whose last dials all met full nodes sits below its target, nothing in
    /// flight, for up to 30 s. Each refill is bounded by the dial back-off: an address that
    /// failed or refused us is not picked again soon, and a pass that picks nothing dials
    /// nothing, so no further loss comes of it.
    pub(super) fn outbound_slot_lost(&mut self, now: Instant) {
        if self.cfg.seed_mode || !self.cfg.pex || !self.cfg.early_ensure_passes {
            return;
        }
        let (_, out) = self.num_peers();
        if self.pex.need(out, self.num_dialing()) == 0 || self.timers.is_set(Timer::EnsureSoon) {
            return;
        }
        let delay = self
            .pex
            .next_short_retry()
            .unwrap_or(pex::SHORT_RETRY_FIRST);
        let delay = delay / 2 + crate::engine::backoff::jitter(&mut self.rng, delay);
        self.timers.set(Timer::EnsureSoon, now + delay);
    }

    /// Whether a node's outbound peers and dials in progress are fewer than its target.
    fn short_of_target(&self) -> bool {
        let (_, out) = self.num_peers();
        self.pex.need(out, self.num_dialing()) > 0
    }

    /// spec 5.6: try the seeds in random order; stop at the first dial started or at a seed
    /// already connected or being dialled.
    pub(super) fn dial_seeds(&mut self, now: Instant) {
        for s in self.pex.seed_order(&mut self.rng) {
            match self.start_dial(now, s, Origin::Seed) {
                Ok(_) | Err(DialError::AlreadyConnected | DialError::AlreadyDialing) => return,
                Err(_) => {}
            }
        }
    }

    /// spec 5.7: the seed-mode crawler pass.
    pub(super) fn crawl(&mut self, now: Instant) {
        // 1. Hang up on peers connected for longer than the wait period.
        let expired: Vec<ConnId> = self
            .peers
            .values()
            .filter(|p| {
                !p.persistent
                    && now.saturating_duration_since(p.since) >= self.cfg.seed_disconnect_wait
            })
            .map(|p| p.conn)
            .collect();
        for conn in expired {
            self.drop_conn(now, conn, DisconnectReason::SeedExpired, true);
        }
        // 2. Crawl: the seeds at first, then a selection of the book.
        if self.book.is_empty() {
            self.dial_seeds(now);
        }
        let unix = self.unix(now);
        // Addresses never reached come first (newest first): a vetted seed serves an address
        // only once it reached it, so an announced one is tested at the next pass (within 2 s
        // of a node's first contact), whatever the size of the book. Then a random selection.
        let mut candidates = self.untested_candidates(now);
        candidates.extend(self.book.selection(unix, &mut self.rng));
        self.crawl_dials(now, candidates);
        // 3. Forget crawl records older than a day; expired bans.
        self.pex.expire_crawls(now);
        if self.book.reinstate_expired(unix, &mut self.rng) > 0 {
            self.book_dirty = true;
        }
    }

    /// Addresses the seed never reached, newest first, that may be crawled now (not of a node
    /// connected to us or being dialled: that dial would not start).
    pub(super) fn untested_candidates(&mut self, now: Instant) -> Vec<NetAddr> {
        let unix = self.unix(now);
        self.book
            .untested(unix, self.pex.max_crawl_inflight(), |a| {
                self.backoff.allowed(&a.addr, now)
                    && self.pex.crawl_due(&a.addr, now)
                    && !self.peers.contains_key(&a.id)
                    && !self.conns.is_dialing(&a.id)
            })
    }

    /// Seed mode, after each input: when a dial ended (a crawl completed its handshake or
    /// failed), the crawler dials the next never-reached addresses at once instead of at its
    /// next pass (up to 30 s away), so that a young seed tests the newcomers that contacted
    /// it within seconds and can serve them (its replies hold only nodes it reached).
    pub(super) fn refill_crawl(&mut self, now: Instant) {
        if !self.cfg.seed_mode {
            return;
        }
        if self.pex.dials_dropped(self.conns.num_dials()) {
            let candidates = self.untested_candidates(now);
            self.crawl_dials(now, candidates);
            self.pex.dials_dropped(self.conns.num_dials());
        }
    }

    /// Starts crawl dials to `candidates` in order, within the in-flight budget, skipping
    /// ourselves, addresses crawled within `min_time_between_crawls` and backed-off ones.
    pub(super) fn crawl_dials(&mut self, now: Instant, candidates: Vec<NetAddr>) {
        let max_inflight = self.pex.max_crawl_inflight();
        for a in candidates {
            if self.conns.num_dials() >= max_inflight {
                break;
            }
            if a.id == self.our_id {
                continue;
            }
            if !self.pex.crawl_due(&a.addr, now) {
                continue;
            }
            if !self.backoff.allowed(&a.addr, now) {
                continue;
            }
            if self.pex.crawl_records_full() {
                break;
            }
            // Recorded only when dialled: an address skipped now (connected to us this very
            // moment, say) stays a candidate for the next pass.
            if self.start_dial(now, a, Origin::Crawl).is_ok() {
                self.pex.record_crawl(a.addr, now);
            }
        }
    }
}
