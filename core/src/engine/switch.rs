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
use super::persistent::PersistentPeers;
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
mod anchors;
mod bans;
mod conn_io;
mod dialable;
mod discovery;
mod feelers;
mod inputs;
mod lifecycle;
mod messages;
mod queries;
mod seed_reply;
#[cfg(test)]
mod tests;
use dialable::Dialable;
use seed_reply::SeedReply;

/// How long a graceful hang-up may wait for its bytes to be flushed before the connection is
/// closed anyway (a peer that stops reading cannot keep it open).
const HANGUP_GRACE: Duration = Duration::from_secs(10);

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
    /// Persistent peers and their redial state.
    persistent: PersistentPeers,
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
            persistent: PersistentPeers::new(&cfg.persistent_peers),
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
            self.persistent.contains(&id),
            "redial of a non-persistent peer"
        );
        if self.persistent.contains(&id) {
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
                        // Each pass lands at a new phase too (period +/- 25 %, mean one
                        // period): nodes that started together (a chain upgrade restarts a
                        // whole network within seconds) would otherwise come back to a full
                        // seed in one wave every period, and the seed takes only its inbound
                        // limit of each wave.
                        let period = self.cfg.ensure_peers_period;
                        now + period * 3 / 4 + backoff::jitter(&mut self.rng, period / 2)
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
                        self.drop_conn(now, id, *reason, true);
                    }
                }
            }
        }
        self.finish(now);
    }

    /// Processes queued connection work and emits coalesced events.
    fn finish(&mut self, now: Instant) {
        self.refill_crawl(now);
        self.release_deferred_replies(now);
        self.process_dirty(now);
        if self.book_dirty {
            self.book_dirty = false;
            self.outputs.push_back(Output::Event(Event::AddrBookDirty));
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

    // ---------------------------------------------------------------- life cycle
    // (admission and dials: `switch/admission.rs`)

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

    // ---------------------------------------------------------------- connection events
}

/// Parses a NodeInfo `listen_addr` (`[tcp://]ip:port`) into a socket address.
fn listen_addr_of(info: &NodeInfo) -> Option<SocketAddr> {
    let s = info.listen_addr.as_str();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    s.parse().ok()
}
