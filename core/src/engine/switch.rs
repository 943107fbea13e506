//! The [`Engine`] itself: connections, the peer table, timers, PEX and the address book.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::backoff::{self, DialBackoff};
use super::config::{ConfigError, EngineConfig};
use super::delivery::{Delivery, HeldStats};
use super::filter::{ConnFilter, PeerFilter};
use super::peers::{Bans, Counters, Origin, PeerInfo, PeerState};
use super::pex::{self, PexMsg, PexPeer, PexViolation};
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

mod seed_reply;
use seed_reply::SeedReply;

/// The engine's timers, ordered by deadline in one `BTreeSet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The connection's own deadline (handshake, ping, pong, flush).
    Conn(ConnId),
    /// A dial that has not connected yet.
    DialTimeout(ConnId),
    /// The periodic ensure-peers pass (or the seed crawler).
    EnsurePeers,
    /// An extra ensure-peers pass after addresses from a seed.
    EnsureSoon,
    /// A persistent peer's redial.
    Redial(NodeId),
    /// A graceful hang-up that has not finished flushing in time.
    Hangup(ConnId),
    /// Seed mode: a deferred PEX reply's deadline, or the end of an answered inbound
    /// connection's linger (see `seed_reply`).
    SeedReply(ConnId),
}

/// How long a graceful hang-up may wait for its bytes to be flushed before the connection is
/// closed anyway (a peer that stops reading cannot keep it open).
const HANGUP_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Dialing,
    Handshaking,
    Up(NodeId),
    /// `Output::Close` was emitted; waiting for `Input::Closed`.
    Closing,
}

struct Conn {
    /// Boxed: a `PeerConnection` is over 1 KiB, and the map of connections would otherwise
    /// hold that inline for every spare slot of its table as well.
    pc: Option<Box<PeerConnection>>,
    direction: Direction,
    origin: Origin,
    remote: SocketAddr,
    /// The address dialled (outbound only).
    dialed: Option<NetAddr>,
    phase: Phase,
    /// The deadline registered for `Timer::Conn`.
    timer: Option<Instant>,
    /// The deadline registered for `Timer::DialTimeout`.
    dial_deadline: Option<Instant>,
    dirty: bool,
    pex: PexPeer,
    /// Why we asked the connection to close after flushing (reported when it closes).
    hangup: Option<DisconnectReason>,
    /// The registered `Timer::Hangup` deadline.
    hangup_deadline: Option<Instant>,
    /// Counted in `pending_out_ips` / `pending_in_ips` / `up_ips`.
    ip_slot: IpSlot,
    /// Channels on which a send was refused as full (each gets one `SendReady` when room
    /// returns).
    send_full: smallvec::SmallVec<[ChannelId; 2]>,
    /// The socket closed while messages of this peer were held for the application: the
    /// peer goes down once they are delivered (the connection has no `PeerConnection` then).
    draining: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IpSlot {
    None,
    PendingOut,
    PendingIn,
    Up,
}

struct Persistent {
    addr: NetAddr,
    /// Consecutive failures since the last success (k of the G18 schedule).
    failures: u32,
    /// Ever dialled (distinguishes candidate from reconnecting).
    dialled: bool,
    /// Registered `Timer::Redial` deadline.
    next: Option<Instant>,
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
    next_conn: u64,
    conns: hashbrown::HashMap<ConnId, Conn>,
    peers: BTreeMap<NodeId, PeerInfo>,
    /// Outbound connections not yet up, by the id dialled.
    pending_out: hashbrown::HashMap<NodeId, ConnId>,
    persistent: BTreeMap<NodeId, Persistent>,
    unconditional: hashbrown::HashSet<NodeId>,
    up_ips: hashbrown::HashMap<IpAddr, u32>,
    pending_in_ips: hashbrown::HashMap<IpAddr, u32>,
    pending_out_ips: hashbrown::HashMap<IpAddr, u32>,
    inbound_open: usize,
    bans: Bans,
    backoff: DialBackoff,
    /// Seed mode: when each address was last crawled.
    crawled: BTreeMap<SocketAddr, Instant>,
    timers: BTreeSet<(Instant, Timer)>,
    ensure_at: Option<Instant>,
    ensure_soon_at: Option<Instant>,
    /// Seed mode: inbound connections whose PEX reply is deferred or that linger after it.
    seed_replies: BTreeMap<ConnId, SeedReply>,
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

/// At most this many crawl records are kept in seed mode.
const MAX_CRAWL_RECORDS: usize = 65_536;

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
            next_conn: 1,
            conns: hashbrown::HashMap::new(),
            peers: BTreeMap::new(),
            pending_out: hashbrown::HashMap::new(),
            persistent: BTreeMap::new(),
            unconditional: cfg.unconditional_peer_ids.iter().copied().collect(),
            up_ips: hashbrown::HashMap::new(),
            pending_in_ips: hashbrown::HashMap::new(),
            pending_out_ips: hashbrown::HashMap::new(),
            inbound_open: 0,
            bans: Bans::default(),
            backoff: DialBackoff::default(),
            crawled: BTreeMap::new(),
            timers: BTreeSet::new(),
            seed_replies: BTreeMap::new(),
            ensure_at: None,
            ensure_soon_at: None,
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
        for a in engine.cfg.persistent_peers.clone() {
            let at = now + backoff::startup_jitter(&mut engine.rng);
            engine.persistent.insert(
                a.id,
                Persistent {
                    addr: a,
                    failures: 0,
                    dialled: false,
                    next: None,
                },
            );
            engine.set_redial(a.id, at);
        }
        if engine.cfg.pex || engine.cfg.seed_mode {
            let first = now + backoff::jitter(&mut engine.rng, Duration::from_secs(1));
            engine.set_ensure(first);
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
        if self.next_conn != 1 {
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
        if self.next_conn != 1 {
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
        if let Some(c) = self.pending_out.get(id).and_then(|c| self.conns.get(c)) {
            return Some(match c.phase {
                Phase::Dialing => PeerState::Dialing,
                _ => PeerState::Handshaking,
            });
        }
        if self.bans.id_banned(id, self.last_now) {
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
    #[allow(clippy::disallowed_methods)] // a count: the order does not matter
    pub fn num_dialing(&self) -> usize {
        self.pending_out
            .keys()
            .filter(|id| !self.unconditional.contains(*id))
            .count()
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

    /// How many node ids the engine currently bans (expired ones are dropped lazily).
    #[must_use]
    pub fn num_banned(&self) -> usize {
        self.bans.len()
    }

    /// Whether `id` is banned at `now`.
    #[must_use]
    pub fn is_banned(&self, id: &NodeId, now: Instant) -> bool {
        self.bans.id_banned(id, now)
    }

    fn unix(&self, now: Instant) -> u64 {
        self.unix_start + now.saturating_duration_since(self.start).as_secs()
    }

    fn alloc_conn(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
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
        self.timers.first().map(|(t, _)| *t)
    }

    fn touch(&mut self, now: Instant) {
        if now > self.last_now {
            self.last_now = now;
        }
    }

    fn set_timer(
        &mut self,
        slot: Option<Instant>,
        at: Option<Instant>,
        t: Timer,
    ) -> Option<Instant> {
        if slot == at {
            return slot;
        }
        if let Some(old) = slot {
            self.timers.remove(&(old, t));
        }
        if let Some(at) = at {
            self.timers.insert((at, t));
        }
        at
    }

    fn set_ensure(&mut self, at: Instant) {
        self.ensure_at = self.set_timer(self.ensure_at, Some(at), Timer::EnsurePeers);
    }

    fn set_redial(&mut self, id: NodeId, at: Instant) {
        let Some(old) = self.persistent.get(&id).map(|p| p.next) else {
            return;
        };
        let next = self.set_timer(old, Some(at), Timer::Redial(id));
        if let Some(p) = self.persistent.get_mut(&id) {
            p.next = next;
        }
    }

    fn set_conn_timer(&mut self, id: ConnId, at: Option<Instant>) {
        let Some(old) = self.conns.get(&id).map(|c| c.timer) else {
            return;
        };
        let new = self.set_timer(old, at, Timer::Conn(id));
        if let Some(c) = self.conns.get_mut(&id) {
            c.timer = new;
        }
    }

    fn set_dial_deadline(&mut self, id: ConnId, at: Option<Instant>) {
        let Some(old) = self.conns.get(&id).map(|c| c.dial_deadline) else {
            return;
        };
        let new = self.set_timer(old, at, Timer::DialTimeout(id));
        if let Some(c) = self.conns.get_mut(&id) {
            c.dial_deadline = new;
        }
    }

    /// Runs every timer due at `now`. Call when `poll_timeout()` has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.touch(now);
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, timer));
            match timer {
                Timer::Conn(id) => {
                    let mut closed = false;
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.timer = None;
                        if let Some(pc) = c.pc.as_mut() {
                            pc.handle_timeout(now);
                            closed = pc.is_closed();
                        }
                    }
                    self.mark_dirty(id);
                    self.process_dirty(now);
                    // A connection whose deadline did not move would spin: push it forward.
                    if !closed
                        && let Some(c) = self.conns.get(&id)
                        && c.timer.is_some_and(|t| t <= now)
                    {
                        self.set_conn_timer(id, Some(now + Duration::from_millis(1)));
                    }
                }
                Timer::DialTimeout(id) => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.dial_deadline = None;
                        if c.phase == Phase::Dialing {
                            self.fail_conn(now, id, DialFailReason::Timeout, true);
                        }
                    }
                }
                Timer::EnsurePeers => {
                    self.ensure_at = None;
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
                    self.ensure_soon_at = None;
                    if self.cfg.seed_mode {
                        self.crawl(now);
                    } else {
                        self.ensure_peers(now, false);
                    }
                }
                Timer::Redial(id) => {
                    if let Some(p) = self.persistent.get_mut(&id) {
                        p.next = None;
                    }
                    self.redial(now, id);
                }
                Timer::SeedReply(id) => self.on_seed_reply_timer(now, id),
                Timer::Hangup(id) => {
                    let reason = self.conns.get_mut(&id).and_then(|c| {
                        c.hangup_deadline = None;
                        c.hangup.take()
                    });
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
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        if let Some(t) = c.timer {
            self.timers.remove(&(t, Timer::Conn(id)));
        }
        if let Some(t) = c.dial_deadline {
            self.timers.remove(&(t, Timer::DialTimeout(id)));
        }
        if let Some(t) = c.hangup_deadline {
            self.timers.remove(&(t, Timer::Hangup(id)));
        }
        if let Some(r) = self.seed_replies.remove(&id) {
            self.timers.remove(&(r.at(), Timer::SeedReply(id)));
        }
        self.release_ip(c.remote.ip(), c.ip_slot);
        if c.direction == Direction::Inbound {
            self.inbound_open = self.inbound_open.saturating_sub(1);
        }
        if let Some(a) = c.dialed
            && self.pending_out.get(&a.id) == Some(&id)
        {
            self.pending_out.remove(&a.id);
        }
    }

    fn ip_map(&mut self, slot: IpSlot) -> Option<&mut hashbrown::HashMap<IpAddr, u32>> {
        match slot {
            IpSlot::None => None,
            IpSlot::PendingOut => Some(&mut self.pending_out_ips),
            IpSlot::PendingIn => Some(&mut self.pending_in_ips),
            IpSlot::Up => Some(&mut self.up_ips),
        }
    }

    fn release_ip(&mut self, ip: IpAddr, slot: IpSlot) {
        if let Some(map) = self.ip_map(slot)
            && let Some(n) = map.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }

    fn take_ip(&mut self, ip: IpAddr, slot: IpSlot) {
        if let Some(map) = self.ip_map(slot) {
            *map.entry(ip).or_insert(0) += 1;
        }
    }

    fn move_ip(&mut self, id: ConnId, slot: IpSlot) {
        let Some((ip, old)) = self.conns.get(&id).map(|c| (c.remote.ip(), c.ip_slot)) else {
            return;
        };
        self.release_ip(ip, old);
        self.take_ip(ip, slot);
        if let Some(c) = self.conns.get_mut(&id) {
            c.ip_slot = slot;
        }
    }

    // ---------------------------------------------------------------- admission and dials

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

    fn accept_inner(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        routed: Option<crate::conn::Routed>,
    ) -> Result<ConnId, Refused> {
        self.touch(now);
        let ip = remote.ip();
        let refused = if self.bans.ip_banned(&ip, now) {
            Some(Refused::Banned)
        } else if self.inbound_open >= self.inbound_conn_limit() {
            Some(Refused::TooManyInbound)
        } else if !self.cfg.allow_duplicate_ip
            && (self.up_ips.contains_key(&ip) || self.pending_in_ips.contains_key(&ip))
        {
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
        let id = self.alloc_conn();
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
        self.conns.insert(
            id,
            Conn {
                pc: Some(Box::new(pc)),
                direction: Direction::Inbound,
                origin: Origin::Inbound,
                remote,
                dialed: None,
                phase: Phase::Handshaking,
                timer: None,
                dial_deadline: None,
                dirty: false,
                pex: PexPeer::default(),
                hangup: None,
                hangup_deadline: None,
                ip_slot: IpSlot::None,
                send_full: smallvec::SmallVec::new(),
                draining: false,
            },
        );
        self.take_ip(ip, IpSlot::PendingIn);
        if let Some(c) = self.conns.get_mut(&id) {
            c.ip_slot = IpSlot::PendingIn;
        }
        self.inbound_open += 1;
        self.counters.accepted += 1;
        self.mark_dirty(id);
        self.finish(now);
        Ok(id)
    }

    /// Inbound connections open at once: `max_num_inbound_peers + |unconditional| +
    /// |persistent|` (Go counts the unconditional ids; the persistent ones are added so a
    /// persistent peer can still complete its handshake when inbound is full, G18).
    fn inbound_conn_limit(&self) -> usize {
        self.cfg.max_num_inbound_peers + self.unconditional.len() + self.persistent.len()
    }

    /// Dials `addr` on the application's behalf.
    pub fn dial(&mut self, now: Instant, addr: NetAddr) -> Result<ConnId, DialError> {
        self.touch(now);
        let r = self.start_dial(now, addr, Origin::App);
        self.finish(now);
        r
    }

    fn check_dial(&self, now: Instant, addr: &NetAddr) -> Result<(), DialError> {
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
        if self.pending_out.contains_key(&addr.id) {
            return Err(DialError::AlreadyDialing);
        }
        if !self.persistent.contains_key(&addr.id) && self.bans.id_banned(&addr.id, now) {
            return Err(DialError::Banned);
        }
        let ip = addr.addr.ip();
        if !named
            && !self.cfg.allow_duplicate_ip
            && (self.up_ips.contains_key(&ip) || self.pending_out_ips.contains_key(&ip))
        {
            return Err(DialError::DuplicateIp);
        }
        Ok(())
    }

    fn start_dial(
        &mut self,
        now: Instant,
        addr: NetAddr,
        origin: Origin,
    ) -> Result<ConnId, DialError> {
        self.check_dial(now, &addr)?;
        let id = self.alloc_conn();
        self.conns.insert(
            id,
            Conn {
                pc: None,
                direction: Direction::Outbound,
                origin,
                remote: addr.addr,
                dialed: Some(addr),
                phase: Phase::Dialing,
                timer: None,
                dial_deadline: None,
                dirty: false,
                pex: PexPeer::default(),
                hangup: None,
                hangup_deadline: None,
                ip_slot: IpSlot::None,
                send_full: smallvec::SmallVec::new(),
                draining: false,
            },
        );
        self.move_ip(id, IpSlot::PendingOut);
        self.pending_out.insert(addr.id, id);
        let deadline = now + self.cfg.dial_timeout;
        self.set_dial_deadline(id, Some(deadline));
        let unix = self.unix(now);
        self.book.mark_attempt(addr.addr, unix);
        if let Some(p) = self.persistent.get_mut(&addr.id) {
            p.dialled = true;
        }
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
    fn on_resolved(&mut self, now: Instant, id: ConnId, addr: SocketAddr) {
        if let Some(Err(why)) = self.conn_filter.as_ref().map(|f| f(addr)) {
            self.fail_conn(now, id, DialFailReason::Filtered(why), true);
            return;
        }
        let ip = addr.ip();
        if !self.cfg.allow_duplicate_ip
            && (self.up_ips.contains_key(&ip) || self.pending_out_ips.contains_key(&ip))
        {
            self.fail_conn(now, id, DialFailReason::DuplicateIp, true);
            return;
        }
        self.move_ip(id, IpSlot::None);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.remote = addr;
        let Some(dialed) = c.dialed.as_mut() else {
            return;
        };
        dialed.addr = addr;
        let peer = dialed.id;
        self.move_ip(id, IpSlot::PendingOut);
        if let Some(p) = self.persistent.get_mut(&peer) {
            p.addr.addr = addr;
        }
    }

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
        if self.pending_out.get(&addr.id) == Some(&id) {
            self.pending_out.remove(&addr.id);
        }
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
        let unanswered_crawl = (c.origin == Origin::Crawl && c.pex.outstanding)
            .then_some(c.dialed)
            .flatten();
        if let Some(addr) = unanswered_crawl {
            self.crawled.remove(&addr.addr);
        }
        self.set_conn_timer(id, None);
        self.move_ip(id, IpSlot::None);
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
        if let Some(t) = c.hangup_deadline.take() {
            self.timers.remove(&(t, Timer::Hangup(id)));
        }
    }

    /// Peers whose socket closed while they were drained, and whose last message is out.
    fn finish_drained(&mut self, now: Instant, done: Vec<(ConnId, NodeId, DisconnectReason)>) {
        for (conn, _, reason) in done {
            self.drop_conn(now, conn, reason, false);
        }
    }

    fn schedule_redial(&mut self, now: Instant, id: NodeId) {
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
        } else if let Some(conn) = self.pending_out.get(&peer).copied() {
            self.fail_conn(now, conn, DialFailReason::Cancelled, true);
        }
        self.finish(now);
    }

    /// Bans `peer` for `duration` and disconnects it with [`DisconnectReason::Banned`]
    /// (CometBFT's `StopPeerForError`): its node id and IP go on the engine's ban list and
    /// into the address book's (persisted) bans, so it is neither dialled nor admitted until
    /// the ban expires. A persistent peer is never banned: it is disconnected and redialled
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
            if self.book.ban_for(peer, ip, unix, duration) {
                self.book_dirty = true;
            }
            self.bans.ban(peer, ip, now + duration);
            BanOutcome::Banned
        };
        self.drop_conn(now, id, reason, true);
        outcome
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
        if !persistent && self.bans.id_banned(&peer, now) {
            self.counters.refused += 1;
            self.fail_conn(now, id, DialFailReason::Banned, true);
            return;
        }
        if let Some(Err(why)) = self.peer_filter.as_ref().map(|f| f(&info, remote)) {
            self.counters.refused += 1;
            self.fail_conn(now, id, DialFailReason::Filtered(why), true);
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
        if !self.cfg.allow_duplicate_ip && self.up_ips.contains_key(&ip) {
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
                    None
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
        self.move_ip(id, IpSlot::Up);
        if let Some(a) = dialed {
            if self.pending_out.get(&a.id) == Some(&id) {
                self.pending_out.remove(&a.id);
            }
            self.backoff.succeeded(&a.addr);
            let unix = self.unix(now);
            self.book.mark_good(a.addr, unix, &mut self.rng);
            self.book_dirty = true;
        }
        if let Some(p) = self.persistent.get_mut(&peer) {
            p.failures = 0;
            p.dialled = true;
            let next = p.next.take();
            if let Some(t) = next {
                self.timers.remove(&(t, Timer::Redial(peer)));
            }
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

    // ---------------------------------------------------------------- PEX

    fn pex_add_peer(
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

    fn pex_request(&mut self, now: Instant, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.pex.start_request(now) {
            return;
        }
        if self
            .send_on(now, id, ChannelId::PEX, pex::encode_request())
            .is_ok()
        {
            self.counters.pex_requests_sent += 1;
        } else if let Some(c) = self.conns.get_mut(&id) {
            c.pex.outstanding = false;
        }
    }

    /// Bans `peer` (id and IP) and disconnects it for a PEX violation (G14). Persistent peers
    /// are banned only in the book (spec 7.7) and redialled.
    fn pex_violation(&mut self, now: Instant, id: ConnId, peer: NodeId, v: PexViolation) {
        let duration = self.cfg.addr_book.ban_duration;
        if self.ban_conn(now, id, peer, duration, DisconnectReason::Pex(v))
            != BanOutcome::NotConnected
        {
            self.counters.bans += 1;
        }
    }

    fn on_pex(&mut self, now: Instant, id: ConnId, peer: NodeId, payload: &[u8]) {
        let msg = match pex::decode(payload) {
            Ok(m) => m,
            Err(v) => return self.pex_violation(now, id, peer, v),
        };
        let Some(direction) = self.conns.get(&id).map(|c| c.direction) else {
            return;
        };
        match msg {
            PexMsg::Request => {
                if self.cfg.seed_mode && direction == Direction::Inbound {
                    let answered = self.conns.get(&id).is_some_and(|c| c.pex.answered);
                    if answered {
                        return;
                    }
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.pex.answered = true;
                    }
                    // Answered now or once the crawler's tests are done, then held a moment
                    // and hung up (`seed_reply`).
                    self.seed_request(now, id);
                    return;
                }
                let min = self.cfg.ensure_peers_period / 3;
                let verdict = self.conns.get_mut(&id).map(|c| c.pex.on_request(now, min));
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
                let verdict = self.conns.get_mut(&id).map(|c| c.pex.on_addrs());
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
                    Origin::Seed
                        if !self.cfg.seed_mode
                        // v0.37/v0.38: addresses from a seed trigger an ensure-peers pass.
                        && self.ensure_soon_at.is_none() =>
                    {
                        self.ensure_soon_at = self.set_timer(None, Some(now), Timer::EnsureSoon);
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
    fn pex_reply(&mut self, now: Instant) -> Vec<NetAddr> {
        let unix = self.unix(now);
        if !self.cfg.seed_mode || self.cfg.seed_vetted_window.is_zero() {
            return self.book.selection(unix, &mut self.rng);
        }
        self.vetted_addrs(now)
    }

    /// The vetted addresses a seed serves now (most recently reached first): those it reached
    /// itself within `seed_vetted_window`, as its PEX reply gives them (an operator's view,
    /// e.g. the CLI's `/vetted` endpoint). Empty with a zero window.
    #[must_use]
    pub fn vetted_addrs(&self, now: Instant) -> Vec<NetAddr> {
        let unix = self.unix(now);
        let window = self.cfg.seed_vetted_window;
        if window.is_zero() {
            return Vec::new();
        }
        let live: BTreeSet<SocketAddr> = self
            .peers
            .values()
            .filter(|p| p.direction == Direction::Outbound)
            .filter_map(|p| self.conns.get(&p.conn).and_then(|c| c.dialed))
            .map(|a| a.addr)
            .collect();
        let since = unix.saturating_sub(window.as_secs());
        self.book
            .vetted_selection(unix, since, |a| live.contains(a))
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
        let old = c.hangup_deadline;
        let new = self.set_timer(old, Some(now + HANGUP_GRACE), Timer::Hangup(id));
        if let Some(c) = self.conns.get_mut(&id) {
            c.hangup_deadline = new;
        }
        self.mark_dirty(id);
    }

    /// Groups of automatic outbound peers and automatic dials in progress (G7).
    #[allow(clippy::disallowed_methods)] // collected into a BTreeSet: the order does not matter
    fn auto_groups(&self) -> BTreeSet<Group> {
        let mut groups = BTreeSet::new();
        for p in self.peers.values() {
            if p.origin == Origin::Auto && p.direction == Direction::Outbound {
                groups.insert(self.book.group_of(&p.remote.ip()));
            }
        }
        for c in self.pending_out.values().filter_map(|c| self.conns.get(c)) {
            if c.origin == Origin::Auto {
                groups.insert(self.book.group_of(&c.remote.ip()));
            }
        }
        groups
    }

    /// spec 5.4 `ensurePeers`.
    fn ensure_peers(&mut self, now: Instant, period_elapsed: bool) {
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
                .filter(|p| self.conns.get(&p.conn).is_some_and(|c| c.pex.replied()))
                .count()
        };
        let out = out.saturating_sub(leaving_seeds);
        let dialing = self.num_dialing();
        let need = self
            .cfg
            .max_num_outbound_peers
            .saturating_sub(out + dialing);
        let mut picked_any = false;
        if need > 0 {
            let mut groups = self.auto_groups();
            let mut picked: Vec<NetAddr> = Vec::new();
            let unix = self.unix(now);
            let tries = 3 * need + 16;
            for _ in 0..tries {
                if picked.len() >= need {
                    break;
                }
                let (peers, pending, up_ips, pend_ips, bans, backoff, allow_dup, our, persistent) = (
                    &self.peers,
                    &self.pending_out,
                    &self.up_ips,
                    &self.pending_out_ips,
                    &self.bans,
                    &self.backoff,
                    self.cfg.allow_duplicate_ip,
                    self.our_id,
                    &self.persistent,
                );
                let picked_ref = &picked;
                let Some(a) = self.book.pick(unix, &mut self.rng, |a: &NetAddr| {
                    let ip = a.addr.ip();
                    a.id != our
                        && !persistent.contains_key(&a.id)
                        && !peers.contains_key(&a.id)
                        && !pending.contains_key(&a.id)
                        && !picked_ref.iter().any(|p| p.id == a.id || p.addr.ip() == ip)
                        && (allow_dup || (!up_ips.contains_key(&ip) && !pend_ips.contains_key(&ip)))
                        && !bans.id_banned(&a.id, now)
                        && !bans.ip_banned(&ip, now)
                        && backoff.allowed(&a.addr, now)
                }) else {
                    continue;
                };
                let g = self.book.group_of(&a.addr.ip());
                if groups.contains(&g) {
                    continue;
                }
                groups.insert(g);
                picked.push(a);
            }
            for a in picked {
                if self.start_dial(now, a, Origin::Auto).is_ok() {
                    picked_any = true;
                }
            }
        }
        // Expired bans return to the book (new table only, rate-limited by the book, G16).
        let unix = self.unix(now);
        if self.book.reinstate_expired(unix, &mut self.rng) > 0 {
            self.book_dirty = true;
        }
        self.bans.expire(now);
        if self.book.needs_more() {
            // One request to a peer drawn uniformly among those we may ask now (none
            // outstanding, none in the last 10 s), so the pacing rule never wastes a period.
            if period_elapsed {
                let askable: Vec<ConnId> = self
                    .peers
                    .values()
                    .map(|p| p.conn)
                    .filter(|c| self.conns.get(c).is_some_and(|c| c.pex.can_request(now)))
                    .collect();
                if !askable.is_empty() {
                    let n = askable.len() as u64;
                    let i = usize::try_from(self.rng.next_u64() % n).unwrap_or(0);
                    if let Some(&conn) = askable.get(i) {
                        self.pex_request(now, conn);
                    }
                }
            }
            if !picked_any && need > 0 {
                self.dial_seeds(now);
            }
        }
    }

    /// spec 5.6: try the seeds in random order; stop at the first dial started or at a seed
    /// already connected or being dialled.
    fn dial_seeds(&mut self, now: Instant) {
        let mut seeds = self.cfg.seeds.clone();
        // Fisher-Yates with the engine RNG.
        for i in (1..seeds.len()).rev() {
            let j = usize::try_from(self.rng.next_u64() % (i as u64 + 1)).unwrap_or(0);
            seeds.swap(i, j);
        }
        for s in seeds {
            match self.start_dial(now, s, Origin::Seed) {
                Ok(_) | Err(DialError::AlreadyConnected | DialError::AlreadyDialing) => return,
                Err(_) => {}
            }
        }
    }

    /// spec 5.7: the seed-mode crawler pass.
    fn crawl(&mut self, now: Instant) {
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
        let day = Duration::from_secs(24 * 3600);
        self.crawled
            .retain(|_, t| now.saturating_duration_since(*t) < day);
        if self.book.reinstate_expired(unix, &mut self.rng) > 0 {
            self.book_dirty = true;
        }
        self.bans.expire(now);
    }

    /// The most crawl dials in flight at once.
    fn max_crawl_inflight(&self) -> usize {
        self.cfg.max_num_outbound_peers.max(1) * 3
    }

    /// Addresses the seed never reached, newest first, that may be crawled now.
    fn untested_candidates(&self, now: Instant) -> Vec<NetAddr> {
        let unix = self.unix(now);
        let (crawled, backoff, min_gap) = (
            &self.crawled,
            &self.backoff,
            self.cfg.min_time_between_crawls,
        );
        self.book.untested(unix, self.max_crawl_inflight(), |a| {
            backoff.allowed(&a.addr, now)
                && crawled
                    .get(&a.addr)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= min_gap)
        })
    }

    /// Starts crawl dials to `candidates` in order, within the in-flight budget, skipping
    /// ourselves, addresses crawled within `min_time_between_crawls` and backed-off ones.
    fn crawl_dials(&mut self, now: Instant, candidates: Vec<NetAddr>) {
        let max_inflight = self.max_crawl_inflight();
        for a in candidates {
            if self.pending_out.len() >= max_inflight {
                break;
            }
            if a.id == self.our_id {
                continue;
            }
            if self.crawled.get(&a.addr).is_some_and(|t| {
                now.saturating_duration_since(*t) < self.cfg.min_time_between_crawls
            }) {
                continue;
            }
            if !self.backoff.allowed(&a.addr, now) {
                continue;
            }
            if self.crawled.len() >= MAX_CRAWL_RECORDS {
                break;
            }
            // Recorded only when dialled: an address skipped now (connected to us this very
            // moment, say) stays a candidate for the next pass.
            if self.start_dial(now, a, Origin::Crawl).is_ok() {
                self.crawled.insert(a.addr, now);
            }
        }
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
