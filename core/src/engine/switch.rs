//! The [`Engine`] itself: construction, input dispatch, `poll_*` and the glue between its
//! parts (the connection table, the timer table, the PEX reactor, the address book and the
//! defences).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::anchors::{MAX_ANCHORS, MIN_ANCHOR_AGE};
use super::backoff::{self, DialBackoff};
use super::config::{ConfigError, EngineConfig};
use super::conns::{Conn, ConnTable, IpSlot, Phase};
use super::delivery::{Delivery, HeldStats};
use super::feeler::{self, Feeler};
use super::filter::{ConnFilter, PeerFilter};
use super::inbound::{self, Candidate, InboundGuard, Rates};
use super::peers::{Counters, Origin, PeerInfo, PeerState};
use super::pex::{self, Pex, PexMsg, PexViolation};
use super::timers::{Timer, TimerTable};
use super::{
    BanOutcome, DialError, DialFailReason, DisconnectReason, EngineError, Event, Input, Output,
    Refused, SendError,
};
use crate::addr::NetAddr;
use crate::addrbook::{AddrBook, Group, is_routable};
use crate::conn::{
    ChannelDescriptor, CloseReason, ConnEvent, ConnStats, ConnectionConfig, Direction, NodeInfo,
    NodeInfoError, PeerConnection, SendError as ConnSendError,
};
use crate::identity::NodeKey;
use crate::ids::{ChannelId, ConnId, NodeId};

mod admission;
mod discovery;
mod seed_reply;
use seed_reply::SeedReply;

/// How long a graceful hang-up may wait for its bytes to be flushed before the connection is
/// closed anyway (a peer that stops reading cannot keep it open).
const HANGUP_GRACE: Duration = Duration::from_secs(10);

struct Persistent {
    addr: NetAddr,
    /// Consecutive failures since the last success (k of the G18 schedule).
    failures: u32,
    /// Ever dialled (distinguishes candidate from reconnecting).
    dialled: bool,
}

/// What an automatic pick (ensure-peers, a feeler) may dial: not us, not a persistent peer
/// (dialled on its own schedule), not connected or being dialled, no duplicate IP (unless
/// allowed), not banned, not backed off.
struct Dialable<'a> {
    our: NodeId,
    book: &'a AddrBook,
    persistent: &'a BTreeMap<NodeId, Persistent>,
    peers: &'a BTreeMap<NodeId, PeerInfo>,
    conns: &'a ConnTable,
    backoff: &'a DialBackoff,
}

impl Dialable<'_> {
    fn allows(&self, a: &NetAddr, unix: u64, now: Instant) -> bool {
        let ip = a.addr.ip();
        a.id != self.our
            && !self.persistent.contains_key(&a.id)
            && !self.peers.contains_key(&a.id)
            && !self.conns.is_dialing(&a.id)
            && !self.conns.outbound_duplicate(&ip)
            && !self.book.is_banned(&a.id, &ip, unix)
            && self.backoff.allowed(&a.addr, now)
    }
}

/// The sans-IO p2p engine. See the [module docs](super) for the loop contract.
pub struct Engine {
    cfg: EngineConfig,
    conn_cfg: Arc<ConnectionConfig>,
    node_key: NodeKey,
    our_id: NodeId,
    our_info: Arc<NodeInfo>,
    channels: Vec<ChannelDescriptor>,
    channels_arc: Arc<[ChannelDescriptor]>,
    rng: ChaCha20Rng,
    book: AddrBook,
    start: Instant,
    unix_start: u64,
    last_now: Instant,
    /// Connections, dials in progress, per-IP counts and the duplicate-IP policy.
    conns: ConnTable,
    peers: BTreeMap<NodeId, PeerInfo>,
    persistent: BTreeMap<NodeId, Persistent>,
    unconditional: hashbrown::HashSet<NodeId>,
    backoff: DialBackoff,
    /// The PEX reactor: per-connection PEX state, seeds, crawl records, ensure-peers picks.
    pex: Pex,
    /// Every deadline the engine runs.
    timers: TimerTable,
    /// Seed mode: inbound connections whose PEX reply is deferred or that linger after it.
    seed_replies: BTreeMap<ConnId, SeedReply>,
    feeler: Feeler,
    inbound_guard: InboundGuard,
    /// Keys the group hash of the inbound eviction's distinct-group protection.
    evict_key: u64,
    outputs: VecDeque<Output>,
    dirty: VecDeque<ConnId>,
    book_dirty: bool,
    counters: Counters,
    delivery: Delivery,
    conn_filter: Option<ConnFilter>,
    peer_filter: Option<PeerFilter>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("id", &self.our_id)
            .field("conns", &self.conns.len())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds an engine. `seed` feeds the one ChaCha RNG (ephemeral keys, PEX sampling,
    /// jitter); `now` and `unix_now` anchor the monotonic and the wall clock.
    pub fn new(
        config: EngineConfig,
        node_key: NodeKey,
        seed: [u8; 32],
        now: Instant,
        unix_now: u64,
    ) -> Result<Engine, ConfigError> {
        config.validate()?;
        let our_id = node_key.node_id();
        for a in config.persistent_peers.iter().chain(&config.seeds) {
            if a.id == our_id {
                return Err(ConfigError::OwnId(our_id));
            }
        }
        let mut cfg = config;
        cfg.connection.handshake_timeout = cfg.handshake_timeout;
        cfg.addr_book.strict = cfg.addr_book_strict;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut book = AddrBook::new(cfg.addr_book.clone(), &mut rng);
        book.add_our_address(cfg.listen_addr);
        if let Some(ext) = cfg.external_address {
            book.add_our_address(ext);
        }
        book.set_private_ids(cfg.private_peer_ids.iter().copied());
        for a in &cfg.persistent_peers {
            book.set_persistent(*a);
        }
        let src = cfg.external_address.unwrap_or(cfg.listen_addr).ip();
        for a in &cfg.persistent_peers {
            // Failures to add (private, unroutable, ...) are fine: the engine dials persistent
            // peers from its own table.
            let _ = book.add(*a, src, unix_now, &mut rng);
        }
        let channels = if cfg.pex {
            vec![ChannelDescriptor::pex()]
        } else {
            Vec::new()
        };
        let mut engine = Engine {
            conn_cfg: Arc::new(cfg.connection.clone()),
            our_info: Arc::new(NodeInfo::new(our_id, "", "", "", [])),
            channels_arc: Arc::from(channels.clone()),
            channels,
            node_key,
            our_id,
            rng,
            book,
            start: now,
            unix_start: unix_now,
            last_now: now,
            conns: ConnTable::new(cfg.allow_duplicate_ip),
            peers: BTreeMap::new(),
            persistent: BTreeMap::new(),
            unconditional: cfg.unconditional_peer_ids.iter().copied().collect(),
            backoff: DialBackoff::default(),
            pex: Pex::new(
                cfg.seeds.clone(),
                cfg.max_num_outbound_peers,
                cfg.min_time_between_crawls,
            ),
            timers: TimerTable::default(),
            seed_replies: BTreeMap::new(),
            feeler: Feeler::default(),
            inbound_guard: InboundGuard::default(),
            evict_key: 0,
            outputs: VecDeque::new(),
            dirty: VecDeque::new(),
            book_dirty: false,
            counters: Counters::default(),
            delivery: Delivery::default(),
            conn_filter: None,
            peer_filter: None,
            cfg,
        };
        engine.rebuild_node_info();
        engine.evict_key = engine.rng.next_u64();
        for a in engine.cfg.persistent_peers.clone() {
            let at = now + backoff::startup_jitter(&mut engine.rng);
            engine.persistent.insert(
                a.id,
                Persistent {
                    addr: a,
                    failures: 0,
                    dialled: false,
                },
            );
            engine.set_redial(a.id, at);
        }
        if engine.cfg.pex || engine.cfg.seed_mode {
            let first = now + backoff::jitter(&mut engine.rng, Duration::from_secs(1));
            engine.set_ensure(first);
        }
        if engine.cfg.pex && !engine.cfg.seed_mode {
            let at = feeler::next_at(now, engine.cfg.feeler_interval, &mut engine.rng);
            engine.timers.set_opt(Timer::Feeler, at);
        }
        Ok(engine)
    }

    fn rebuild_node_info(&mut self) {
        let mut info = NodeInfo::new(
            self.our_id,
            self.cfg.chain_id.clone(),
            self.cfg.advertised_addr(),
            self.cfg.moniker.clone(),
            self.channels.iter().map(|c| c.id),
        );
        if !self.cfg.version.is_empty() {
            info.version.clone_from(&self.cfg.version);
        }
        info.tx_index.clone_from(&self.cfg.tx_index);
        info.rpc_address.clone_from(&self.cfg.rpc_address);
        self.our_info = Arc::new(info);
        self.channels_arc = Arc::from(self.channels.clone());
    }

    /// Registers an application channel. Only before the first connection; 0x00 is PEX's.
    /// Channels are advertised in registration order, PEX last (as CometBFT).
    pub fn add_channel(&mut self, desc: ChannelDescriptor) -> Result<(), ConfigError> {
        if self.conns.started() {
            return Err(ConfigError::AlreadyStarted);
        }
        if desc.id == ChannelId::PEX {
            return Err(ConfigError::ReservedChannel);
        }
        if self.channels.iter().any(|c| c.id == desc.id) {
            return Err(ConfigError::DuplicateChannel(desc.id));
        }
        if self.channels.len() >= 16 {
            return Err(ConfigError::TooManyChannels);
        }
        let at = if self.cfg.pex {
            self.channels.len() - 1
        } else {
            self.channels.len()
        };
        self.channels.insert(at, desc);
        self.rebuild_node_info();
        Ok(())
    }

    /// Replaces the address book with a saved one (bytes from `addr_book().encode()`).
    /// Only before the first connection.
    pub fn load_addr_book(&mut self, bytes: &[u8]) -> Result<(), ConfigError> {
        if self.conns.started() {
            return Err(ConfigError::AlreadyStarted);
        }
        let mut book = AddrBook::decode(bytes, self.cfg.addr_book.clone())
            .map_err(|e| ConfigError::AddrBook(e.to_string()))?;
        book.add_our_address(self.cfg.listen_addr);
        if let Some(ext) = self.cfg.external_address {
            book.add_our_address(ext);
        }
        book.set_private_ids(self.cfg.private_peer_ids.iter().copied());
        for a in &self.cfg.persistent_peers {
            book.set_persistent(*a);
        }
        self.book = book;
        Ok(())
    }

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
        self.persistent.get(id).map(|p| {
            if p.dialled {
                PeerState::Reconnecting
            } else {
                PeerState::Candidate
            }
        })
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

    /// How many bans are in force (the address book's records, which persist with it).
    #[must_use]
    pub fn num_banned(&self) -> usize {
        self.book.len_banned_at(self.unix(self.last_now))
    }

    /// Whether `id` is banned at `now` (by the address book's ban list, which persists).
    #[must_use]
    pub fn is_banned(&self, id: &NodeId, now: Instant) -> bool {
        self.book.is_id_banned(id, self.unix(now))
    }

    /// What a ban of a peer seen at `ip` covers: its node id always, and its IP only when
    /// duplicate IPs are refused (`allow_duplicate_ip = false`). With duplicate IPs allowed the
    /// operator has declared that many nodes share an address (one host, a NAT), so a ban on
    /// the IP would refuse honest nodes along with the offender (docs/bans.md).
    fn ban_scope(&self, ip: IpAddr) -> Option<IpAddr> {
        (!self.cfg.allow_duplicate_ip).then_some(ip)
    }

    fn unix(&self, now: Instant) -> u64 {
        self.unix_start + now.saturating_duration_since(self.start).as_secs()
    }

    fn ephemeral(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.rng.fill_bytes(&mut s);
        s
    }

    // ---------------------------------------------------------------- outputs and timers

    /// The next output, in order. Drain after every input or command.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next; the last `now` seen while
    /// outputs are queued; `None` if nothing is scheduled.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.outputs.is_empty() {
            return Some(self.last_now);
        }
        self.timers.next()
    }

    fn touch(&mut self, now: Instant) {
        if now > self.last_now {
            self.last_now = now;
        }
    }

    fn set_ensure(&mut self, at: Instant) {
        self.timers.set(Timer::EnsurePeers, at);
    }

    fn set_redial(&mut self, id: NodeId, at: Instant) {
        debug_assert!(
            self.persistent.contains_key(&id),
            "redial of a non-persistent peer"
        );
        if self.persistent.contains_key(&id) {
            self.timers.set(Timer::Redial(id), at);
        }
    }

    /// Arms (or with `None` disarms) a live connection's own deadline.
    fn set_conn_timer(&mut self, id: ConnId, at: Option<Instant>) {
        if self.conns.contains_key(&id) {
            self.timers.set_opt(Timer::Conn(id), at);
        }
    }

    /// Arms (or with `None` disarms) a live connection's dial timeout.
    fn set_dial_deadline(&mut self, id: ConnId, at: Option<Instant>) {
        if self.conns.contains_key(&id) {
            self.timers.set_opt(Timer::DialTimeout(id), at);
        }
    }

    /// Runs every timer due at `now`. Call when `poll_timeout()` has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.touch(now);
        while let Some(timer) = self.timers.expired(now) {
            match timer {
                Timer::Conn(id) => {
                    let mut closed = false;
                    if let Some(pc) = self.conns.get_mut(&id).and_then(|c| c.pc.as_mut()) {
                        pc.handle_timeout(now);
                        closed = pc.is_closed();
                    }
                    self.mark_dirty(id);
                    self.process_dirty(now);
                    // A connection whose deadline did not move would spin: push it forward.
                    if !closed
                        && self.conns.contains_key(&id)
                        && self.timers.get(Timer::Conn(id)).is_some_and(|t| t <= now)
                    {
                        self.set_conn_timer(id, Some(now + Duration::from_millis(1)));
                    }
                }
                Timer::DialTimeout(id) => {
                    if self
                        .conns
                        .get(&id)
                        .is_some_and(|c| c.phase == Phase::Dialing)
                    {
                        self.fail_conn(now, id, DialFailReason::Timeout, true);
                    }
                }
                Timer::EnsurePeers => {
                    let next = if self.cfg.seed_mode {
                        let period = self.cfg.crawl_period;
                        self.crawl(now);
                        // Each crawl pass lands at a new phase (period +/- 25 %): crawled nodes
                        // run their ensure-peers pass on the same fixed period, and a crawl
                        // that met a node's own dial to us once would otherwise meet it at
                        // every pass, so that the node is never held and keeps dialling.
                        now + period * 3 / 4 + backoff::jitter(&mut self.rng, period / 2)
                    } else {
                        if self.cfg.pex {
                            self.ensure_peers(now, true);
                        }
                        now + self.cfg.ensure_peers_period
                    };
                    self.set_ensure(next);
                }
                Timer::EnsureSoon => {
                    if self.cfg.seed_mode {
                        self.crawl(now);
                    } else {
                        self.ensure_peers(now, false);
                    }
                }
                Timer::Redial(id) => self.redial(now, id),
                Timer::SeedReply(id) => self.on_seed_reply_timer(now, id),
                Timer::Feeler => {
                    self.run_feeler(now);
                    let at = feeler::next_at(now, self.cfg.feeler_interval, &mut self.rng);
                    self.timers.set_opt(Timer::Feeler, at);
                }
                Timer::Hangup(id) => {
                    let reason = self.conns.get_mut(&id).and_then(|c| c.hangup.take());
                    if let Some(reason) = reason {
                        self.drop_conn(now, id, reason, true);
                    }
                }
            }
        }
        self.finish(now);
    }

    /// Processes queued connection work and emits coalesced events.
    fn finish(&mut self, now: Instant) {
        self.release_deferred_replies(now);
        self.process_dirty(now);
        if self.book_dirty {
            self.book_dirty = false;
            self.outputs.push_back(Output::Event(Event::AddrBookDirty));
        }
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push_back(id);
        }
    }

    /// Drains events and transmits of every dirty connection.
    fn process_dirty(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop_front() {
            let mut events = Vec::new();
            let mut next = None;
            {
                let Some(c) = self.conns.get_mut(&id) else {
                    continue;
                };
                c.dirty = false;
                let closing = c.phase == Phase::Closing;
                let Some(pc) = c.pc.as_mut() else {
                    continue;
                };
                while let Some(ev) = pc.poll_event() {
                    events.push(ev);
                }
                if !closing {
                    while let Some(data) = pc.poll_transmit(now) {
                        self.outputs.push_back(Output::Transmit { conn: id, data });
                    }
                    // Taking bytes can finish the handshake (our AuthSig was the last thing
                    // owed), and with it run the id checks: a close decided there must not be
                    // lost until the next input.
                    while let Some(ev) = pc.poll_event() {
                        events.push(ev);
                    }
                    next = pc.poll_timeout();
                    if let Phase::Up(peer) = c.phase
                        && !c.send_full.is_empty()
                    {
                        c.send_full.retain(|ch| {
                            if pc.can_send(*ch) {
                                self.outputs.push_back(Output::Event(Event::SendReady {
                                    peer,
                                    channel: *ch,
                                }));
                                false
                            } else {
                                true
                            }
                        });
                    }
                }
            }
            self.set_conn_timer(id, next);
            for ev in events {
                self.on_conn_event(now, id, ev);
            }
        }
    }

    // ---------------------------------------------------------------- inputs

    /// Feeds one socket event. `Err` only for API misuse (unknown connection, wrong phase).
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), EngineError> {
        self.touch(now);
        let r = self.input(now, input);
        self.finish(now);
        r
    }

    fn input(&mut self, now: Instant, input: Input) -> Result<(), EngineError> {
        match input {
            Input::Connected { conn } => {
                let c = self
                    .conns
                    .get(&conn)
                    .ok_or(EngineError::UnknownConn(conn))?;
                match c.phase {
                    Phase::Dialing => {}
                    // We gave up on the dial (timeout, cancel) before it connected.
                    Phase::Closing => return Ok(()),
                    _ => {
                        return Err(EngineError::Unexpected {
                            conn,
                            input: "connected",
                        });
                    }
                }
                let expected = c.dialed.map(|a| a.id);
                let secret = self.ephemeral();
                let pc = PeerConnection::new(
                    now,
                    self.conn_cfg.clone(),
                    self.channels_arc.clone(),
                    self.our_info.clone(),
                    &self.node_key,
                    secret,
                    Direction::Outbound,
                    expected,
                );
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.pc = Some(Box::new(pc));
                    c.phase = Phase::Handshaking;
                }
                self.set_dial_deadline(conn, None);
                self.mark_dirty(conn);
                Ok(())
            }
            Input::Resolved { conn, addr } => {
                let c = self
                    .conns
                    .get(&conn)
                    .ok_or(EngineError::UnknownConn(conn))?;
                match c.phase {
                    Phase::Dialing => self.on_resolved(now, conn, addr),
                    Phase::Closing => {}
                    _ => {
                        return Err(EngineError::Unexpected {
                            conn,
                            input: "resolved",
                        });
                    }
                }
                Ok(())
            }
            Input::DialFailed { conn, error } => {
                let c = self
                    .conns
                    .get(&conn)
                    .ok_or(EngineError::UnknownConn(conn))?;
                match c.phase {
                    Phase::Dialing => {
                        self.fail_conn(now, conn, DialFailReason::Io(error), false);
                    }
                    Phase::Closing => {}
                    _ => {
                        return Err(EngineError::Unexpected {
                            conn,
                            input: "dial failed",
                        });
                    }
                }
                self.remove_conn(conn);
                Ok(())
            }
            Input::Received { conn, bytes } => {
                let c = self
                    .conns
                    .get_mut(&conn)
                    .ok_or(EngineError::UnknownConn(conn))?;
                match c.phase {
                    Phase::Closing => return Ok(()),
                    Phase::Dialing => {
                        return Err(EngineError::Unexpected {
                            conn,
                            input: "received",
                        });
                    }
                    _ => {}
                }
                if let Some(pc) = c.pc.as_mut() {
                    pc.handle_received(now, &bytes);
                }
                self.mark_dirty(conn);
                Ok(())
            }
            Input::Sent { conn, len } => {
                let c = self
                    .conns
                    .get_mut(&conn)
                    .ok_or(EngineError::UnknownConn(conn))?;
                if c.phase == Phase::Closing {
                    return Ok(());
                }
                if let Some(pc) = c.pc.as_mut() {
                    pc.handle_sent(now, len);
                }
                self.mark_dirty(conn);
                Ok(())
            }
            Input::Closed { conn, cause } => {
                let c = self
                    .conns
                    .get(&conn)
                    .ok_or(EngineError::UnknownConn(conn))?;
                match c.phase {
                    Phase::Closing => {}
                    Phase::Up(_) if c.draining => {
                        return Err(EngineError::Unexpected {
                            conn,
                            input: "closed",
                        });
                    }
                    Phase::Up(_) => {
                        if self.delivery.defer_close(conn, DisconnectReason::Io(cause)) {
                            self.start_draining(conn);
                            return Ok(());
                        }
                        self.drop_conn(now, conn, DisconnectReason::Io(cause), false);
                    }
                    Phase::Dialing | Phase::Handshaking => {
                        self.fail_conn(now, conn, DialFailReason::Closed(cause), false);
                    }
                }
                self.remove_conn(conn);
                Ok(())
            }
        }
    }

    /// Forgets a connection after its terminal input.
    fn remove_conn(&mut self, id: ConnId) {
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

    // ---------------------------------------------------------------- life cycle
    // (admission and dials: `switch/admission.rs`)

    /// A connection that never became a peer is over (dial or handshake failure).
    /// `emit_close` asks the adapter to close the socket (when it is still open).
    fn fail_conn(&mut self, now: Instant, id: ConnId, reason: DialFailReason, emit_close: bool) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.phase == Phase::Closing {
            return;
        }
        let dialed = c.dialed;
        let remote = c.remote;
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
            if !self.persistent.contains_key(&addr.id) {
                self.backoff.failed(addr.addr, now, &mut self.rng);
            }
        }
        if matches!(reason, DialFailReason::SelfConnection) {
            self.book.remove(addr.addr);
            self.book.add_our_address(addr.addr);
            self.book_dirty = true;
        }
        self.outputs
            .push_back(Output::Event(Event::DialFailed { addr, reason }));
        if self.persistent.contains_key(&addr.id) && !self.peers.contains_key(&addr.id) {
            self.schedule_redial(now, addr.id);
        }
    }

    /// A peer that was up goes down.
    fn drop_conn(&mut self, now: Instant, id: ConnId, reason: DisconnectReason, emit_close: bool) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Phase::Up(peer) = c.phase else {
            return;
        };
        c.phase = Phase::Closing;
        let draining = c.draining;
        let inbound = c.direction == Direction::Inbound;
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
        // hold a connection to it.
        if self.cfg.seed_mode && inbound {
            self.crawl_after_inbound_close(now);
        }
        if self.peers.get(&peer).is_some_and(|p| p.conn == id) {
            self.peers.remove(&peer);
            self.counters.peers_down += 1;
            self.outputs
                .push_back(Output::Event(Event::PeerDown { peer, reason }));
            if self.persistent.contains_key(&peer) {
                self.schedule_redial(now, peer);
            }
        }
        if draining {
            // The socket is gone already: no `Input::Closed` will come.
            self.remove_conn(id);
        }
    }

    /// The socket of an up connection closed while messages of its peer are held: keep the
    /// peer (without its `PeerConnection`) until they are delivered.
    fn start_draining(&mut self, id: ConnId) {
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
    fn finish_drained(&mut self, now: Instant, done: Vec<(ConnId, NodeId, DisconnectReason)>) {
        for (conn, _, reason) in done {
            self.drop_conn(now, conn, reason, false);
        }
    }

    fn schedule_redial(&mut self, now: Instant, id: NodeId) {
        debug_assert!(
            self.persistent.contains_key(&id),
            "redial of a non-persistent peer"
        );
        let cap = self.cfg.persistent_redial_cap;
        let Some(k) = self.persistent.get(&id).map(|p| p.failures) else {
            return;
        };
        let delay = backoff::persistent_delay(k, cap, &mut self.rng);
        if let Some(p) = self.persistent.get_mut(&id) {
            p.failures = p.failures.saturating_add(1);
        }
        self.set_redial(id, now + delay);
    }

    fn redial(&mut self, now: Instant, id: NodeId) {
        debug_assert!(
            self.persistent.contains_key(&id),
            "redial of a non-persistent peer"
        );
        let Some(addr) = self.persistent.get(&id).map(|p| p.addr) else {
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

    /// Bans `peer` for `duration` and disconnects it with [`DisconnectReason::Banned`]
    /// (CometBFT's `StopPeerForError`): its node id (and its IP, unless `allow_duplicate_ip`)
    /// go into the address book's bans, the one persisted list, so it is neither dialled nor
    /// admitted until the ban expires, across restarts. A persistent peer is never banned: it is disconnected and redialled
    /// on its usual schedule ([`BanOutcome::Persistent`]).
    pub fn ban(
        &mut self,
        now: Instant,
        peer: NodeId,
        reason: impl Into<String>,
        duration: Duration,
    ) -> BanOutcome {
        self.touch(now);
        let Some(conn) = self.peers.get(&peer).map(|p| p.conn) else {
            return BanOutcome::NotConnected;
        };
        let reason = DisconnectReason::Banned(reason.into());
        let outcome = self.ban_conn(now, conn, peer, duration, reason);
        if outcome == BanOutcome::Banned {
            self.counters.bans += 1;
        }
        self.finish(now);
        outcome
    }

    /// Bans the peer on `id` (not if persistent) and drops it with `reason`.
    fn ban_conn(
        &mut self,
        now: Instant,
        id: ConnId,
        peer: NodeId,
        duration: Duration,
        reason: DisconnectReason,
    ) -> BanOutcome {
        let Some(ip) = self.conns.get(&id).map(|c| c.remote.ip()) else {
            return BanOutcome::NotConnected;
        };
        let outcome = if self.persistent.contains_key(&peer) {
            BanOutcome::Persistent
        } else {
            let unix = self.unix(now);
            // A ban always lasts at least one second of the book's clock.
            let duration = duration.max(Duration::from_secs(1));
            if self
                .book
                .ban_scoped(peer, self.ban_scope(ip), unix, duration)
            {
                self.book_dirty = true;
            }
            BanOutcome::Banned
        };
        self.drop_conn(now, id, reason, true);
        outcome
    }

    /// The anchors to save at shutdown (G12): up to two automatic outbound peers connected for
    /// at least 10 min, longest-connected first. A peer that misbehaved provably was banned and
    /// disconnected, so every peer still connected qualifies. See [`anchors`](super::anchors).
    #[must_use]
    pub fn anchors(&self, now: Instant) -> Vec<NetAddr> {
        let mut found: Vec<(Instant, NodeId, NetAddr)> = self
            .peers
            .values()
            .filter(|p| p.origin == Origin::Auto && p.counts_outbound() && !p.persistent)
            .filter(|p| now.saturating_duration_since(p.since) >= MIN_ANCHOR_AGE)
            .filter_map(|p| {
                let a = self.conns.get(&p.conn)?.dialed?;
                Some((p.since, p.id, a))
            })
            .collect();
        found.sort_by_key(|&(since, id, _)| (since, id));
        found.into_iter().take(MAX_ANCHORS).map(|f| f.2).collect()
    }

    /// Dials saved anchors (G12): call at start, before the first ensure-peers pass picks from
    /// the book. They are automatic outbound dials (the outbound limit and G7 apply; banned
    /// ones are skipped). Returns how many dials started.
    pub fn dial_anchors(&mut self, now: Instant, anchors: &[NetAddr]) -> usize {
        self.touch(now);
        let mut groups = self.auto_groups();
        let mut started = 0;
        for a in anchors.iter().take(MAX_ANCHORS) {
            let (_, out) = self.num_peers();
            if out + self.num_dialing() >= self.cfg.max_num_outbound_peers {
                break;
            }
            let g = self.book.group_of(&a.addr.ip());
            if groups.contains(&g) {
                continue;
            }
            if self.start_dial(now, *a, Origin::Auto).is_ok() {
                groups.insert(g);
                started += 1;
            }
        }
        self.finish(now);
        started
    }

    /// Marks `peer` good in the address book (CometBFT's `MarkGood`: it moves to the tried
    /// table, which makes it a preferred dial later). Returns false if the peer is not up or
    /// its address is not in the book.
    pub fn mark_good(&mut self, now: Instant, peer: NodeId) -> bool {
        self.touch(now);
        let Some(p) = self.peers.get(&peer) else {
            return false;
        };
        let addr = match p.direction {
            Direction::Outbound => self
                .conns
                .get(&p.conn)
                .and_then(|c| c.dialed)
                .map(|a| a.addr),
            Direction::Inbound => listen_addr_of(&p.info),
        };
        let Some(addr) = addr else {
            return false;
        };
        let unix = self.unix(now);
        let known = !matches!(
            self.book.mark_good(addr, unix, &mut self.rng),
            crate::addrbook::GoodOutcome::Unknown
        );
        if known {
            self.book_dirty = true;
        }
        self.finish(now);
        known
    }

    /// Makes `ch` flow-controlled with a window of `window` messages (`None`: unlimited, the
    /// default): see [`delivery`](super::delivery). The application reports what it consumed
    /// with [`consumed`](Self::consumed).
    pub fn set_delivery_window(&mut self, now: Instant, ch: ChannelId, window: Option<usize>) {
        self.touch(now);
        let done = self.delivery.set_window(ch, window, &mut self.outputs);
        self.finish_drained(now, done);
        self.finish(now);
    }

    /// The application consumed `n` messages of the flow-controlled channel `ch`: their room
    /// returns, held messages are handed out, and connections with nothing held may be read
    /// again ([`wants_read`](Self::wants_read)).
    pub fn consumed(&mut self, now: Instant, ch: ChannelId, n: usize) {
        self.touch(now);
        let done = self.delivery.consumed(ch, n, &mut self.outputs);
        self.finish_drained(now, done);
        self.finish(now);
    }

    /// Whether `ch` is flow-controlled.
    #[must_use]
    pub fn has_delivery_window(&self, ch: ChannelId) -> bool {
        self.delivery.has_window(ch)
    }

    /// Installs a connection filter: a pure function of the remote address, run before the
    /// handshake on every inbound connection (refused with [`Refused::Filtered`]) and every
    /// dial (refused with [`DialError::Filtered`]). CometBFT's `ConnFilters`.
    pub fn set_conn_filter(&mut self, filter: ConnFilter) {
        self.conn_filter = Some(filter);
    }

    /// Installs a peer filter: a pure function of the authenticated NodeInfo and the remote
    /// address, run after the handshake; a refusal ends the connection with
    /// [`DialFailReason::Filtered`] (in `DialFailed` or `InboundFailed`). CometBFT's
    /// `PeerFilters`.
    pub fn set_peer_filter(&mut self, filter: PeerFilter) {
        self.peer_filter = Some(filter);
    }

    // ---------------------------------------------------------------- messages

    /// Queues `msg` for `peer` on channel `ch`. A full queue hands the message back.
    pub fn send(
        &mut self,
        now: Instant,
        peer: NodeId,
        ch: ChannelId,
        msg: Bytes,
    ) -> Result<(), SendError> {
        self.touch(now);
        let conn = self
            .peers
            .get(&peer)
            .map(|p| p.conn)
            .ok_or(SendError::UnknownPeer)?;
        let r = self.send_on(now, conn, ch, msg);
        self.finish(now);
        r
    }

    fn send_on(
        &mut self,
        now: Instant,
        conn: ConnId,
        ch: ChannelId,
        msg: Bytes,
    ) -> Result<(), SendError> {
        let c = self.conns.get_mut(&conn).ok_or(SendError::UnknownPeer)?;
        let pc = c.pc.as_mut().ok_or(SendError::Closed)?;
        let r = pc.send(now, ch, msg).map_err(|e| match e {
            ConnSendError::Full(b) => SendError::Full(b),
            ConnSendError::UnknownChannel(_) => SendError::UnknownChannel,
            ConnSendError::NotAdvertisedByPeer(_) => SendError::NotAdvertisedByPeer,
            _ => SendError::Closed,
        });
        if matches!(r, Err(SendError::Full(_))) && !c.send_full.contains(&ch) {
            c.send_full.push(ch);
        }
        self.mark_dirty(conn);
        r
    }

    /// Queues `msg` on channel `ch` for every connected peer except `except`; returns each
    /// peer's outcome, in node-id order (a full queue hands the message back in
    /// `SendError::Full`).
    pub fn broadcast_except(
        &mut self,
        now: Instant,
        ch: ChannelId,
        msg: &Bytes,
        except: Option<NodeId>,
    ) -> Vec<(NodeId, Result<(), SendError>)> {
        self.touch(now);
        let targets: Vec<(NodeId, ConnId)> = self
            .peers
            .values()
            .filter(|p| Some(p.id) != except)
            .map(|p| (p.id, p.conn))
            .collect();
        let mut outcomes = Vec::with_capacity(targets.len());
        for (peer, conn) in targets {
            outcomes.push((peer, self.send_on(now, conn, ch, msg.clone())));
        }
        self.finish(now);
        outcomes
    }

    /// Queues `msg` on channel `ch` for every connected peer that accepts it; returns how many
    /// queued it (a full queue drops the message for that peer).
    pub fn broadcast(&mut self, now: Instant, ch: ChannelId, msg: Bytes) -> usize {
        self.touch(now);
        let conns: Vec<ConnId> = self.peers.values().map(|p| p.conn).collect();
        let mut n = 0;
        for conn in conns {
            if self.send_on(now, conn, ch, msg.clone()).is_ok() {
                n += 1;
            }
        }
        self.finish(now);
        n
    }

    // ---------------------------------------------------------------- connection events

    fn on_conn_event(&mut self, now: Instant, id: ConnId, ev: ConnEvent) {
        #[allow(unreachable_patterns)]
        match ev {
            ConnEvent::Established { remote } => self.on_established(now, id, *remote),
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
                    (CloseReason::Local, Some(ours)) => ours,
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

    fn on_established(&mut self, now: Instant, id: ConnId, info: NodeInfo) {
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
        let persistent = self.persistent.contains_key(&peer);
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
            self.conns.dial_done(a.id, id);
            self.backoff.succeeded(&a.addr);
            let unix = self.unix(now);
            self.book.mark_good(a.addr, unix, &mut self.rng);
            self.book_dirty = true;
        }
        if let Some(p) = self.persistent.get_mut(&peer) {
            p.failures = 0;
            p.dialled = true;
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
    }

    /// Closes `id` gracefully once its queued bytes are flushed; `reason` is reported then.
    fn hang_up(&mut self, now: Instant, id: ConnId, reason: DisconnectReason) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.hangup = Some(reason);
        if let Some(pc) = c.pc.as_mut() {
            pc.close_after_flush();
        }
        self.timers.set(Timer::Hangup(id), now + HANGUP_GRACE);
        self.mark_dirty(id);
    }

    /// The feeler pass (G11): resolve buffered tried collisions, then dial one incumbent of a
    /// collision or one new entry. See [`feeler`].
    fn run_feeler(&mut self, now: Instant) {
        if self.feeler.busy() {
            return;
        }
        let unix = self.unix(now);
        // A tried incumbent we are connected to is alive: refresh its success time, so that
        // resolving a collision never displaces it.
        let live: Vec<SocketAddr> = self
            .peers
            .values()
            .filter(|p| p.direction == Direction::Outbound)
            .filter_map(|p| self.conns.get(&p.conn).and_then(|c| c.dialed))
            .map(|a| a.addr)
            .filter(|a| self.book.is_tried(a))
            .collect();
        for a in live {
            let _ = self.book.mark_good(a, unix, &mut self.rng);
        }
        let before = self.book.len_collisions();
        if self.book.resolve_collisions(unix) > 0 || self.book.len_collisions() != before {
            self.book_dirty = true;
        }
        let dialable = Dialable {
            our: self.our_id,
            book: &self.book,
            persistent: &self.persistent,
            peers: &self.peers,
            conns: &self.conns,
            backoff: &self.backoff,
        };
        let target = Feeler::choose(&self.book, unix, &mut self.rng, |a: &NetAddr| {
            dialable.allows(a, unix, now)
        });
        if let Some(t) = target
            && let Ok(conn) = self.start_dial(now, t.addr(), Origin::Feeler)
        {
            self.feeler.started(conn);
            self.counters.feelers += 1;
        }
    }

    /// A feeler's handshake completed: the address is alive (marked good: a tested incumbent
    /// stays, a new entry moves to tried) and the connection closes at once, never a peer.
    fn feeler_reached(&mut self, now: Instant, id: ConnId, dialed: Option<NetAddr>) {
        if let Some(a) = dialed {
            self.conns.dial_done(a.id, id);
            self.backoff.succeeded(&a.addr);
            let unix = self.unix(now);
            let _ = self.book.mark_good(a.addr, unix, &mut self.rng);
            self.book_dirty = true;
        }
        self.counters.feelers_reached += 1;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.phase = Phase::Closing;
        if let Some(pc) = c.pc.as_mut()
            && !pc.is_closed()
        {
            pc.close(CloseReason::Local);
        }
        self.set_conn_timer(id, None);
        self.outputs.push_back(Output::Close { conn: id });
    }
}

/// Parses a NodeInfo `listen_addr` (`[tcp://]ip:port`) into a socket address.
fn listen_addr_of(info: &NodeInfo) -> Option<SocketAddr> {
    let s = info.listen_addr.as_str();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    s.parse().ok()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Instant::now() only anchors the test clock
mod tests {
    use super::*;
    use crate::addrbook::AddRejected;

    /// An inbound peer that connects from a routable IP has that IP as the source of the listen
    /// address it announces, whatever address it claims (G1 confinement).
    #[test]
    fn routable_inbound_peer_is_sourced_by_its_connection() {
        let now = Instant::now();
        let c = EngineConfig {
            chain_id: "t".into(),
            listen_addr: ([20, 0, 0, 1], 26656).into(),
            ..EngineConfig::default()
        };
        let mut e = Engine::new(c, NodeKey::from_seed([10; 32]), [7; 32], now, 1_700_000_000)
            .expect("engine");
        let from = SocketAddr::from(([30, 0, 0, 1], 40000));
        let claimed = SocketAddr::from(([40, 9, 0, 1], 26656));
        let conn = e.accept(now, from).expect("accepted");
        let mut info = e.node_info().clone();
        info.id = NodeKey::from_seed([11; 32]).node_id();
        info.listen_addr = format!("tcp://{claimed}");
        e.pex_add_peer(now, conn, Direction::Inbound, Origin::Inbound, &info, from);
        assert_eq!(
            e.addr_book().new_buckets_of(&claimed),
            vec![e.addr_book().new_bucket(&claimed, &from.ip())]
        );
    }

    /// Regression (loopback `ten_nodes_discover_through_one_seed`): inbound peers that listen
    /// on distinct IPs but all dial from 127.0.0.1 (not routable) are each recorded with
    /// themselves as source.
    /// With the connection's IP as source, two of them could meet in one new-table slot and
    /// the second was refused (`SlotTaken`) for good.
    #[test]
    fn inbound_peer_is_its_own_source() {
        let now = Instant::now();
        let unix = 1_700_000_000;
        let mut c = EngineConfig {
            chain_id: "t".into(),
            listen_addr: ([127, 0, 0, 1], 26656).into(),
            addr_book_strict: false,
            allow_duplicate_ip: true,
            ..EngineConfig::default()
        };
        c.addr_book.ipv4_group_bits = 32;
        let mut e =
            Engine::new(c, NodeKey::from_seed([10; 32]), [7; 32], now, unix).expect("engine");
        let from = SocketAddr::from(([127, 0, 0, 1], 40000));
        let id = |n: u8| NodeKey::from_seed([n; 32]).node_id();
        // Find two listen addresses that collide when both are heard from 127.0.0.1.
        let first = SocketAddr::from(([127, 0, 0, 2], 26656));
        let mut probe = e.addr_book().clone();
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        assert!(
            probe
                .add(NetAddr::new(id(11), first), from.ip(), unix, &mut rng)
                .is_ok()
        );
        let bucket = probe.new_bucket(&first, &from.ip());
        let same_bucket: Vec<SocketAddr> = (3..=254u8)
            .map(|i| SocketAddr::from(([127, 0, 0, i], 0)))
            .filter(|a| probe.new_bucket(a, &from.ip()) == bucket)
            .collect();
        let second = same_bucket
            .into_iter()
            .flat_map(|a| (1024..=u16::MAX).map(move |p| SocketAddr::new(a.ip(), p)))
            .find(
                |&s| match probe.add(NetAddr::new(id(12), s), from.ip(), unix, &mut rng) {
                    Ok(_) => {
                        probe.remove(s);
                        false
                    }
                    Err(r) => r == AddRejected::SlotTaken,
                },
            )
            .expect("a colliding pair of addresses");
        for (n, listen) in [(11, first), (12, second)] {
            let conn = e.accept(now, from).expect("accepted");
            let mut info = e.node_info().clone();
            info.id = id(n);
            info.listen_addr = format!("tcp://{listen}");
            e.pex_add_peer(now, conn, Direction::Inbound, Origin::Inbound, &info, from);
        }
        for a in [first, second] {
            assert!(
                e.addr_book().entries().any(|(x, _)| x.addr == a),
                "{a} is in the book"
            );
        }
        for a in [first, second] {
            assert_eq!(
                e.addr_book().new_buckets_of(&a),
                vec![e.addr_book().new_bucket(&a, &a.ip())],
                "{a} is its own source"
            );
        }
    }
}
