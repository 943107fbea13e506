//! The network crawler (`cometmesh crawl`), as a sans-IO state machine.
//!
//! A [`Crawler`] maps a CometBFT network through the p2p protocol alone: it dials every address
//! it learns, completes SecretConnection and the NodeInfo exchange (the same
//! [`PeerConnection`] the engine uses), sends **one** PEX request, records the reply and hangs
//! up. It follows the engine's loop contract exactly — the same [`Input`]s and [`Output`]s,
//! `poll_output` / `poll_timeout` / `handle_timeout`, time injected as `now`, randomness from a
//! seed — so the same driver code, the simulator ([`crate::sim::Sim::add_guest`]) and a tokio
//! loop (`cometmesh_cli::crawl`) all run it.
//!
//! # Decisions
//!
//! - **Frontier.** Addresses are queued per host (IP) and served round-robin across hosts; a host
//!   never has two connections from us at once ([`CrawlConfig::concurrency`] bounds the total,
//!   [`CrawlConfig::rate`] the dials per second). Every `id@ip:port` is dialled at most once per
//!   crawl; once an id answered, its other addresses are recorded but not dialled. After a
//!   connection a host cools down for twice that connection's connect time (at most 2 s):
//!   CometBFT refuses a connection from an IP it still has one from, and our close needs that
//!   long to reach it. With
//!   [`CrawlConfig::revisit`] everything is dialled again in rounds until the duration ends.
//! - **Per connection.** One PEX request right after the handshake (CometBFT accepts a first
//!   request at any time; a second one within its minimum interval is what gets a peer
//!   banned), then a graceful hang-up when the reply arrives or [`CrawlConfig::timeout`]
//!   after the dial, whichever is first. A PEX request from the node is not answered.
//! - **What we announce.** Our NodeInfo lists only the PEX channel and the listen address
//!   `0.0.0.0:0`. CometBFT (v0.34–v0.40) validates a NodeInfo's listen address only
//!   syntactically, so the handshake succeeds; its PEX reactor then adds an inbound peer's
//!   `NodeInfo.NetAddress()` to the address book with itself as source, and `addAddress`
//!   refuses it (`ErrAddrBookInvalidAddr`: unspecified IP). The crawler therefore never
//!   enters an address book as a peer that does not serve, and never gets dialled back.
//! - **Chain id.** Given, or learned: until it is known each connection sends its NodeInfo
//!   only after the node's, carrying the node's own chain id
//!   ([`PeerConnection::adopt_peer_network`]); the first NodeInfo received fixes the chain
//!   (reported as [`Note::ChainLearned`] and in the report's `chain_id_learned_from`). From
//!   then on a node of another chain is recorded with its NodeInfo and
//!   [`Failure::OtherChain`], and its addresses are not followed.
//! - **Trust.** Nothing a node says is believed beyond what it proves: an address is an
//!   announcement (recorded with its announcer) until a dial authenticates the id there.
//!   Replies with more than 250 addresses or malformed ones are a `pex_error` on the node,
//!   never a crash; invalid addresses (unspecified IP, port 0) are dropped with a [`Note`].
//!
//! # Loop contract
//!
//! Drain [`Crawler::poll_output`] after every call, carry out each output (as for the
//! engine: `Dial`, `Transmit` + [`Input::Sent`], `Close` + [`Input::Closed`]); read
//! [`Crawler::poll_note`] for log lines; sleep until [`Crawler::poll_timeout`]; stop when
//! [`Crawler::is_done`]. [`Crawler::report`] gives the result at any time;
//! [`Crawler::stop`] ends a crawl early (Ctrl-C) and [`Crawler::resume`] continues one from
//! a report.

mod config;
mod frontier;
mod record;
mod report;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

pub use config::{CrawlConfig, CrawlConfigError};
pub use record::{AddrRecord, Failure, InfoRecord, NodeRecord, Stage, Status};
pub use report::{
    CrawlMeta, CrawlReport, Edge, GroupCount, ResumeError, SCHEMA, SCHEMA_VERSION, Summary,
    edges_of, group_of, summarize,
};

use crate::addr::NetAddr;
use crate::conn::{
    ChannelDescriptor, CloseReason, ConnEvent, ConnectionConfig, Direction, NodeInfo,
    NodeInfoError, PeerConnection, TimeoutKind,
};
use crate::engine::pex::{self, PexMsg};
use crate::engine::{CloseCause, DialFailure, Input, Output};
use crate::identity::NodeKey;
use crate::ids::{ChannelId, ConnId, NodeId};
use crate::wire::proto::PexMessage;
use frontier::Frontier;

/// The listen address the crawler announces (see the module docs).
pub const ANNOUNCED_LISTEN_ADDR: &str = "0.0.0.0:0";

/// Longest wait between two connections to one host.
const MAX_HOST_COOLDOWN: Duration = Duration::from_secs(2);

/// Most notes kept unread; older ones are dropped (and counted).
const MAX_NOTES: usize = 4096;

/// Something worth a log line.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Note {
    /// The chain id was learned from a node's NodeInfo.
    ChainLearned {
        /// The chain id.
        chain_id: String,
        /// Whose NodeInfo.
        from: NodeId,
    },
    /// A node answered.
    Reached {
        /// Where.
        addr: NetAddr,
        /// Its software version.
        version: String,
        /// Addresses in its PEX reply (`None`: no reply).
        addrs_given: Option<u32>,
    },
    /// A dial failed.
    Failed {
        /// Where.
        addr: NetAddr,
        /// How.
        failure: Failure,
        /// Whether the address was a seed.
        seed: bool,
    },
    /// A PEX reply was malformed or oversized.
    BadPex {
        /// The sender.
        from: NodeId,
        /// What was wrong.
        detail: String,
    },
    /// An announced address was invalid and dropped.
    BadAddress {
        /// The announcer.
        from: NodeId,
        /// The address.
        addr: NetAddr,
    },
    /// `max_nodes` was reached: further node ids are dropped (said once).
    NodeLimit {
        /// The limit.
        max_nodes: usize,
    },
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::ChainLearned { chain_id, from } => {
                write!(f, "chain id {chain_id:?} learned from {from}")
            }
            Note::Reached {
                addr,
                version,
                addrs_given,
            } => match addrs_given {
                Some(n) => write!(f, "reached {addr} (version {version}), {n} addresses"),
                None => write!(f, "reached {addr} (version {version}), no pex reply"),
            },
            Note::Failed {
                addr,
                failure,
                seed,
            } => {
                let what = if *seed { "seed" } else { "node" };
                write!(f, "{what} {addr} not reached: {failure}")
            }
            Note::BadPex { from, detail } => write!(f, "bad pex reply from {from}: {detail}"),
            Note::BadAddress { from, addr } => {
                write!(f, "{from} announced an invalid address {addr}; dropped")
            }
            Note::NodeLimit { max_nodes } => {
                write!(
                    f,
                    "{max_nodes} nodes known (--max-nodes); further nodes are dropped"
                )
            }
        }
    }
}

/// Counts for a progress line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Progress {
    /// Node ids known.
    pub known: usize,
    /// Reachable nodes.
    pub reached: usize,
    /// Unreachable nodes.
    pub failed: usize,
    /// Connections open or being dialled.
    pub in_flight: usize,
    /// Addresses waiting.
    pub queued: usize,
    /// Time crawled.
    pub elapsed: Duration,
}

/// Misuse of the crawler API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrawlError {
    /// The connection id is unknown (never issued, or already finished).
    #[error("unknown connection {0}")]
    UnknownConn(ConnId),
}

/// How an attempt ended, decided before its terminal input.
#[derive(Debug)]
enum Outcome {
    Reached {
        info: NodeInfo,
        connect: Duration,
        handshake: Duration,
        addrs: Option<u32>,
        pex_error: Option<String>,
    },
    Failed {
        failure: Failure,
        info: Option<NodeInfo>,
    },
    /// Stopped by [`Crawler::stop`]: not counted as a dial.
    Cancelled,
}

/// One dial in flight.
#[derive(Debug)]
struct Attempt {
    addr: NetAddr,
    dialled_at: Instant,
    deadline: Instant,
    connected_at: Option<Instant>,
    conn: Option<PeerConnection>,
    outcome: Option<Outcome>,
    close_sent: bool,
}

/// Why the crawl is not running any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopped {
    Running,
    Duration,
    Interrupted,
}

/// The crawler state machine; see the module docs.
pub struct Crawler {
    cfg: CrawlConfig,
    key: NodeKey,
    rng: ChaCha20Rng,
    conn_cfg: Arc<ConnectionConfig>,
    channels: Arc<[ChannelDescriptor]>,
    local: Arc<NodeInfo>,
    chain_id: Option<String>,
    chain_learned_from: Option<NodeId>,
    start: Instant,
    unix_start: u64,
    /// Elapsed time of the runs before a resume.
    prior_elapsed: Duration,
    prior_dials: u64,
    last_now: Instant,
    next_conn: u64,
    nodes: BTreeMap<NodeId, NodeRecord>,
    seeds: Vec<NetAddr>,
    frontier: Frontier,
    attempts: BTreeMap<ConnId, Attempt>,
    outputs: VecDeque<Output>,
    notes: VecDeque<Note>,
    notes_dropped: u64,
    next_dial_at: Instant,
    round: u32,
    round_started: Instant,
    stopped: Stopped,
    dials: u64,
    dropped_nodes: u64,
    started_dialling: bool,
}

impl std::fmt::Debug for Crawler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crawler")
            .field("nodes", &self.nodes.len())
            .field("in_flight", &self.attempts.len())
            .field("queued", &self.frontier.len())
            .finish_non_exhaustive()
    }
}

impl Crawler {
    /// A crawler starting at `now` (unix time `unix`), identified by `key` (a throw-away key
    /// is fine), drawing ephemeral keys from `seed`. Nothing is dialled before the first
    /// [`Self::handle_timeout`] (so that [`Self::resume`] can come first).
    pub fn new(
        cfg: CrawlConfig,
        key: NodeKey,
        seed: [u8; 32],
        now: Instant,
        unix: u64,
    ) -> Result<Crawler, CrawlConfigError> {
        cfg.validate()?;
        let conn_cfg = ConnectionConfig {
            handshake_timeout: cfg.timeout,
            // We send one message per connection: waiting 100 ms to batch it with others
            // would only add 100 ms to every node.
            flush_throttle: Duration::from_millis(1),
            ..ConnectionConfig::default()
        };
        let mut local = NodeInfo::new(
            key.node_id(),
            cfg.chain_id.clone().unwrap_or_default(),
            ANNOUNCED_LISTEN_ADDR,
            cfg.moniker.clone(),
            [ChannelId::PEX],
        );
        local.version = if cfg.version.is_empty() {
            format!("cometmesh-crawler/{}", env!("CARGO_PKG_VERSION"))
        } else {
            cfg.version.clone()
        };
        let mut c = Crawler {
            chain_id: cfg.chain_id.clone(),
            seeds: cfg.seeds.clone(),
            cfg,
            key,
            rng: ChaCha20Rng::from_seed(seed),
            conn_cfg: Arc::new(conn_cfg),
            channels: Arc::from(vec![ChannelDescriptor::pex()]),
            local: Arc::new(local),
            chain_learned_from: None,
            start: now,
            unix_start: unix,
            prior_elapsed: Duration::ZERO,
            prior_dials: 0,
            last_now: now,
            next_conn: 1,
            nodes: BTreeMap::new(),
            frontier: Frontier::default(),
            attempts: BTreeMap::new(),
            outputs: VecDeque::new(),
            notes: VecDeque::new(),
            notes_dropped: 0,
            next_dial_at: now,
            round: 0,
            round_started: now,
            stopped: Stopped::Running,
            dials: 0,
            dropped_nodes: 0,
            started_dialling: false,
        };
        let unix_now = c.unix(now);
        for s in c.seeds.clone() {
            c.learn(s, None, unix_now);
            if let Some(n) = c.nodes.get_mut(&s.id) {
                n.addr_mut(s.addr).seed = true;
            }
        }
        Ok(c)
    }

    /// Our node id.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// The chain id, once given or learned.
    #[must_use]
    pub fn chain_id(&self) -> Option<&str> {
        self.chain_id.as_deref()
    }

    /// The records, by node id.
    #[must_use]
    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeRecord> {
        &self.nodes
    }

    /// Continues the crawl of `report`: its nodes are known again, its addresses never
    /// dialled are queued, and its chain id is used. Call it before the first
    /// [`Self::handle_timeout`].
    pub fn resume(&mut self, report: CrawlReport) -> Result<(), ResumeError> {
        if report.schema != SCHEMA || report.schema_version != SCHEMA_VERSION {
            return Err(ResumeError::Schema {
                schema: report.schema,
                version: report.schema_version,
            });
        }
        if self.started_dialling {
            return Err(ResumeError::AlreadyStarted);
        }
        if let (Some(asked), Some(theirs)) = (&self.chain_id, &report.crawl.chain_id)
            && asked != theirs
        {
            return Err(ResumeError::ChainMismatch {
                report: theirs.clone(),
                asked: asked.clone(),
            });
        }
        if self.chain_id.is_none()
            && let Some(c) = report.crawl.chain_id
        {
            self.set_chain(c, report.crawl.chain_id_learned_from);
        }
        self.prior_elapsed = Duration::from_secs_f64(report.crawl.elapsed_s.max(0.0));
        self.prior_dials = report.crawl.dials;
        self.dropped_nodes = report.crawl.dropped_nodes;
        self.round = report.crawl.rounds.saturating_sub(1);
        self.unix_start = self.unix_start.min(report.crawl.started);
        for s in &report.crawl.seeds {
            if let Ok(a) = s.parse::<NetAddr>()
                && !self.seeds.contains(&a)
            {
                self.seeds.push(a);
            }
        }
        // The report's records replace what the seeds created; the new seeds are merged in.
        let mine = std::mem::take(&mut self.nodes);
        for mut n in report.nodes {
            for a in &mut n.addresses {
                a.pending = false;
            }
            self.nodes.insert(n.id, n);
        }
        self.frontier = Frontier::default();
        for (id, n) in mine {
            for a in n.addresses {
                let rec = self
                    .nodes
                    .entry(id)
                    .or_insert_with(|| NodeRecord::new(id, n.first_seen))
                    .addr_mut(a.addr);
                rec.seed |= a.seed;
            }
        }
        let todo: Vec<NetAddr> = self
            .nodes
            .values()
            .filter(|n| n.status != Status::Reachable)
            .flat_map(|n| {
                n.addresses
                    .iter()
                    .filter(|a| a.dials == 0)
                    .map(|a| NetAddr::new(n.id, a.addr))
            })
            .collect();
        for a in todo {
            self.queue(a);
        }
        Ok(())
    }

    /// Stops the crawl: nothing more is dialled and open connections are closed. Addresses not
    /// dialled yet stay in the report (as `dials: 0`) for a resume.
    pub fn stop(&mut self, now: Instant) {
        self.halt(now, Stopped::Interrupted);
    }

    fn halt(&mut self, now: Instant, why: Stopped) {
        self.last_now = now;
        if self.stopped == Stopped::Running {
            self.stopped = why;
        }
        let ids: Vec<ConnId> = self.attempts.keys().copied().collect();
        for id in ids {
            if let Some(a) = self.attempts.get_mut(&id)
                && a.outcome.is_none()
            {
                a.outcome = Some(Outcome::Cancelled);
            }
            self.close(id);
        }
    }

    /// Whether the crawl is over: nothing in flight and nothing left to dial (or stopped).
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.attempts.is_empty()
            && self.outputs.is_empty()
            && (self.stopped != Stopped::Running || (self.frontier.is_empty() && !self.cfg.revisit))
    }

    /// Counts for a progress line.
    #[must_use]
    pub fn progress(&self) -> Progress {
        let mut p = Progress {
            known: self.nodes.len(),
            in_flight: self.attempts.len(),
            queued: self.frontier.len(),
            elapsed: self.elapsed(self.last_now),
            ..Progress::default()
        };
        for n in self.nodes.values() {
            match n.status {
                Status::Reachable => p.reached += 1,
                Status::Unreachable => p.failed += 1,
                Status::Unknown => {}
            }
        }
        p
    }

    /// The next log-worthy note.
    pub fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    /// Notes dropped because nobody read them.
    #[must_use]
    pub fn notes_dropped(&self) -> u64 {
        self.notes_dropped
    }

    /// The next thing to do.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`Self::handle_timeout`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.outputs.is_empty() || !self.started_dialling {
            return Some(self.last_now);
        }
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        for a in self.attempts.values() {
            if !a.close_sent {
                at(a.deadline);
                if let Some(ct) = a.conn.as_ref().and_then(PeerConnection::poll_timeout) {
                    at(ct);
                }
            }
        }
        if self.stopped == Stopped::Running {
            if let Some(d) = self.cfg.duration {
                at(self.start + d.saturating_sub(self.prior_elapsed));
            }
            if let Some(t) = self.frontier.next_release() {
                at(t);
            }
            if self.frontier.has_ready() && self.attempts.len() < self.cfg.concurrency {
                at(self.next_dial_at.max(self.last_now));
            }
            if self.cfg.revisit && self.frontier.is_empty() && self.attempts.is_empty() {
                at(self.round_started + self.cfg.revisit_interval);
            }
        }
        t
    }

    /// Timers: per-node deadlines, the crawl's duration, the dial budget.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        self.started_dialling = true;
        if self.stopped == Stopped::Running
            && let Some(d) = self.cfg.duration
            && self.elapsed(now) >= d
        {
            self.halt(now, Stopped::Duration);
        }
        let ids: Vec<ConnId> = self.attempts.keys().copied().collect();
        for id in ids {
            let Some(a) = self.attempts.get_mut(&id) else {
                continue;
            };
            if a.close_sent {
                continue;
            }
            if let Some(c) = a.conn.as_mut()
                && c.poll_timeout().is_some_and(|t| t <= now)
            {
                c.handle_timeout(now);
                self.pump(now, id);
            }
            let Some(a) = self.attempts.get_mut(&id) else {
                continue;
            };
            if !a.close_sent && now >= a.deadline {
                if a.outcome.is_none() {
                    let stage = if a.conn.is_some() {
                        Stage::Handshake
                    } else {
                        Stage::Dial
                    };
                    a.outcome = Some(Outcome::Failed {
                        failure: Failure::Timeout { stage },
                        info: None,
                    });
                }
                self.close(id);
            }
        }
        self.maybe_new_round(now);
        self.dial_ready(now);
    }

    /// An IO result for one of our connections.
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), CrawlError> {
        self.last_now = now;
        match input {
            // The crawler dials addresses, never names.
            Input::Resolved { .. } => {}
            Input::Connected { conn } => {
                let a = self
                    .attempts
                    .get_mut(&conn)
                    .ok_or(CrawlError::UnknownConn(conn))?;
                if a.close_sent || a.conn.is_some() {
                    return Ok(());
                }
                let mut eph = [0u8; 32];
                self.rng.fill_bytes(&mut eph);
                let mut c = PeerConnection::new(
                    now,
                    self.conn_cfg.clone(),
                    self.channels.clone(),
                    self.local.clone(),
                    &self.key,
                    eph,
                    Direction::Outbound,
                    Some(a.addr.id),
                );
                if self.chain_id.is_none() {
                    c.adopt_peer_network();
                }
                a.conn = Some(c);
                a.connected_at = Some(now);
                self.pump(now, conn);
            }
            Input::Received { conn, bytes } => {
                let a = self
                    .attempts
                    .get_mut(&conn)
                    .ok_or(CrawlError::UnknownConn(conn))?;
                if let (Some(c), false) = (a.conn.as_mut(), a.close_sent) {
                    c.handle_received(now, &bytes);
                    self.pump(now, conn);
                }
            }
            Input::Sent { conn, len } => {
                let a = self
                    .attempts
                    .get_mut(&conn)
                    .ok_or(CrawlError::UnknownConn(conn))?;
                if let (Some(c), false) = (a.conn.as_mut(), a.close_sent) {
                    c.handle_sent(now, len);
                    self.pump(now, conn);
                }
            }
            Input::DialFailed { conn, error } => {
                if !self.attempts.contains_key(&conn) {
                    return Err(CrawlError::UnknownConn(conn));
                }
                let failure = match error {
                    DialFailure::Refused => Failure::Refused,
                    DialFailure::TimedOut => Failure::Timeout { stage: Stage::Dial },
                    other => Failure::Unreachable {
                        detail: other.to_string(),
                    },
                };
                self.finish(now, conn, failure);
            }
            Input::Closed { conn, cause } => {
                let a = self
                    .attempts
                    .get_mut(&conn)
                    .ok_or(CrawlError::UnknownConn(conn))?;
                if let Some(c) = a.conn.as_mut() {
                    match cause {
                        CloseCause::Eof => c.handle_eof(now),
                        _ => c.close(CloseReason::RemoteClosed),
                    }
                    // Record what the connection concluded; no Close is owed any more.
                    a.close_sent = true;
                    self.pump(now, conn);
                }
                let failure = match cause {
                    CloseCause::Local => Failure::Handshake {
                        detail: "closed before the handshake".to_owned(),
                    },
                    other => Failure::Handshake {
                        detail: format!("{other} during the handshake"),
                    },
                };
                self.finish(now, conn, failure);
            }
        }
        self.dial_ready(now);
        Ok(())
    }

    /// The result so far.
    #[must_use]
    pub fn report(&self, now: Instant) -> CrawlReport {
        let nodes: Vec<NodeRecord> = self.nodes.values().cloned().collect();
        let edges = edges_of(&nodes);
        let summary = summarize(&nodes, edges.len());
        let state = match self.stopped {
            Stopped::Interrupted => "interrupted",
            Stopped::Duration => "duration",
            Stopped::Running if self.is_done() && self.started_dialling => "complete",
            Stopped::Running => "running",
        };
        CrawlReport {
            schema: SCHEMA.to_owned(),
            schema_version: SCHEMA_VERSION,
            crawl: CrawlMeta {
                crawler_id: self.node_id(),
                chain_id: self.chain_id.clone(),
                chain_id_learned_from: self.chain_learned_from,
                seeds: self.seeds.iter().map(ToString::to_string).collect(),
                started: self.unix_start,
                updated: self.unix(now),
                elapsed_s: self.elapsed(now).as_secs_f64(),
                state: state.to_owned(),
                dials: self.prior_dials + self.dials,
                rounds: self.round + 1,
                dropped_nodes: self.dropped_nodes,
            },
            summary,
            nodes,
            edges,
        }
    }

    // ------------------------------------------------------------------ internals

    fn elapsed(&self, now: Instant) -> Duration {
        self.prior_elapsed + now.saturating_duration_since(self.start)
    }

    fn unix(&self, now: Instant) -> u64 {
        self.unix_start + self.elapsed(now).as_secs()
    }

    fn note(&mut self, n: Note) {
        if self.notes.len() >= MAX_NOTES {
            self.notes.pop_front();
            self.notes_dropped += 1;
        }
        self.notes.push_back(n);
    }

    fn set_chain(&mut self, chain: String, from: Option<NodeId>) {
        let mut local = (*self.local).clone();
        local.network.clone_from(&chain);
        self.local = Arc::new(local);
        self.chain_id = Some(chain);
        self.chain_learned_from = from;
    }

    /// Records that `addr` was announced (by `by`, or as a seed when `None`), and queues it
    /// if it is worth a dial.
    fn learn(&mut self, addr: NetAddr, by: Option<NodeId>, unix: u64) {
        if addr.id == self.node_id() {
            return;
        }
        if !self.nodes.contains_key(&addr.id) {
            if let Some(max) = self.cfg.max_nodes
                && self.nodes.len() >= max
            {
                if self.dropped_nodes == 0 {
                    self.note(Note::NodeLimit { max_nodes: max });
                }
                self.dropped_nodes += 1;
                return;
            }
            self.nodes.insert(addr.id, NodeRecord::new(addr.id, unix));
        }
        let Some(node) = self.nodes.get_mut(&addr.id) else {
            return;
        };
        node.last_seen = node.last_seen.max(unix);
        let reachable = node.status == Status::Reachable;
        let rec = node.addr_mut(addr.addr);
        if let Some(by) = by {
            rec.announced_by.insert(by);
        }
        if !reachable && rec.dials == 0 && !rec.pending && self.stopped == Stopped::Running {
            self.queue(addr);
        }
    }

    fn queue(&mut self, addr: NetAddr) {
        if let Some(rec) = self.nodes.get_mut(&addr.id).map(|n| n.addr_mut(addr.addr)) {
            rec.pending = true;
        }
        self.frontier.push(addr);
    }

    fn maybe_new_round(&mut self, now: Instant) {
        if !self.cfg.revisit
            || self.stopped != Stopped::Running
            || !self.frontier.is_empty()
            || !self.attempts.is_empty()
            || now < self.round_started + self.cfg.revisit_interval
        {
            return;
        }
        self.round += 1;
        self.round_started = now;
        let todo: Vec<NetAddr> = self
            .nodes
            .values()
            .filter(|n| !matches!(n.failure, Some(Failure::OtherChain { .. })))
            .flat_map(|n| match n.answered_at {
                Some(a) => vec![NetAddr::new(n.id, a)],
                None => n
                    .addresses
                    .iter()
                    .map(|a| NetAddr::new(n.id, a.addr))
                    .collect(),
            })
            .collect();
        for a in todo {
            self.queue(a);
        }
    }

    /// Dials while the budget allows.
    fn dial_ready(&mut self, now: Instant) {
        if !self.started_dialling {
            return;
        }
        self.frontier.tick(now);
        while self.stopped == Stopped::Running
            && self.attempts.len() < self.cfg.concurrency
            && now >= self.next_dial_at
        {
            let Some(addr) = self.frontier.pop() else {
                return;
            };
            let round = self.round;
            let stale = self.nodes.get_mut(&addr.id).is_none_or(|n| {
                let done = n.status == Status::Reachable && n.round == round;
                n.addr_mut(addr.addr).pending = false;
                done
            });
            if stale {
                self.frontier.release(addr.addr.ip());
                continue;
            }
            if let Some(n) = self.nodes.get_mut(&addr.id) {
                n.addr_mut(addr.addr).pending = true;
            }
            let id = ConnId(self.next_conn);
            self.next_conn += 1;
            self.dials += 1;
            if self.cfg.rate > 0 {
                self.next_dial_at = now + Duration::from_secs(1) / self.cfg.rate;
            }
            self.attempts.insert(
                id,
                Attempt {
                    addr,
                    dialled_at: now,
                    deadline: now + self.cfg.timeout,
                    connected_at: None,
                    conn: None,
                    outcome: None,
                    close_sent: false,
                },
            );
            self.outputs.push_back(Output::Dial {
                conn: id,
                addr: addr.addr,
            });
        }
    }

    /// Asks the adapter to close `id` (once).
    fn close(&mut self, id: ConnId) {
        if let Some(a) = self.attempts.get_mut(&id)
            && !a.close_sent
        {
            a.close_sent = true;
            self.outputs.push_back(Output::Close { conn: id });
        }
    }

    /// Carries out what connection `id` wants: bytes out, and its events.
    fn pump(&mut self, now: Instant, id: ConnId) {
        loop {
            let Some(a) = self.attempts.get_mut(&id) else {
                return;
            };
            let Some(c) = a.conn.as_mut() else {
                return;
            };
            if let Some(data) = c.poll_transmit(now) {
                if !a.close_sent {
                    self.outputs.push_back(Output::Transmit { conn: id, data });
                }
                continue;
            }
            let Some(ev) = c.poll_event() else {
                return;
            };
            match ev {
                ConnEvent::Established { remote } => {
                    self.on_established(now, id, NodeInfo::clone(&remote));
                }
                ConnEvent::Message { channel, payload } if channel == ChannelId::PEX => {
                    self.on_pex(now, id, &payload);
                }
                ConnEvent::Message { .. } => {}
                ConnEvent::Closed(reason) => {
                    self.on_conn_closed(id, &reason);
                    self.close(id);
                }
            }
        }
    }

    fn on_established(&mut self, now: Instant, id: ConnId, remote: NodeInfo) {
        if self.chain_id.is_none() {
            self.set_chain(remote.network.clone(), Some(remote.id));
            self.note(Note::ChainLearned {
                chain_id: remote.network.clone(),
                from: remote.id,
            });
        }
        let chain = self.chain_id.clone().unwrap_or_default();
        let Some(a) = self.attempts.get_mut(&id) else {
            return;
        };
        if a.outcome.is_some() {
            return;
        }
        let connected = a.connected_at.unwrap_or(a.dialled_at);
        if remote.network != chain {
            a.outcome = Some(Outcome::Failed {
                failure: Failure::OtherChain {
                    network: remote.network.clone(),
                },
                info: Some(remote),
            });
            self.close(id);
            return;
        }
        let has_pex = remote.has_channel(ChannelId::PEX);
        a.outcome = Some(Outcome::Reached {
            info: remote,
            connect: connected.saturating_duration_since(a.dialled_at),
            handshake: now.saturating_duration_since(connected),
            addrs: None,
            pex_error: None,
        });
        let Some(c) = a.conn.as_mut() else {
            return;
        };
        let asked = has_pex
            && c.send(
                now,
                ChannelId::PEX,
                Bytes::from(PexMessage::request().encode_to_vec()),
            )
            .is_ok();
        if !asked {
            c.close_after_flush();
        }
    }

    fn on_pex(&mut self, now: Instant, id: ConnId, payload: &[u8]) {
        let Some(a) = self.attempts.get_mut(&id) else {
            return;
        };
        let from = a.addr.id;
        let Some(Outcome::Reached {
            addrs, pex_error, ..
        }) = a.outcome.as_mut()
        else {
            return;
        };
        if addrs.is_some() || pex_error.is_some() {
            return; // one reply is all we asked for
        }
        let list = match pex::decode(payload) {
            Ok(PexMsg::Addrs(list)) => list,
            Ok(PexMsg::Request) => return, // not answered (see the module docs)
            Err(v) => {
                *pex_error = Some(v.to_string());
                if let Some(c) = a.conn.as_mut() {
                    c.close_after_flush();
                }
                self.note(Note::BadPex {
                    from,
                    detail: v.to_string(),
                });
                return;
            }
        };
        *addrs = Some(u32::try_from(list.len()).unwrap_or(u32::MAX));
        if let Some(c) = a.conn.as_mut() {
            c.close_after_flush();
        }
        let unix = self.unix(now);
        for addr in list {
            let ip = addr.addr.ip();
            if addr.addr.port() == 0 || !crate::addrbook::is_valid(&ip) {
                self.note(Note::BadAddress { from, addr });
                continue;
            }
            self.learn(addr, Some(from), unix);
        }
    }

    fn on_conn_closed(&mut self, id: ConnId, reason: &CloseReason) {
        let chain = self.chain_id.clone();
        let Some(a) = self.attempts.get_mut(&id) else {
            return;
        };
        if a.outcome.is_some() {
            return;
        }
        let info = a
            .conn
            .as_ref()
            .and_then(|c| c.received_node_info().cloned());
        // A node without PEX shares no channel with us, yet it answered: reachable, without
        // addresses.
        if matches!(
            reason,
            CloseReason::NodeInfo(NodeInfoError::NoCommonChannel)
        ) && let Some(info) = info.as_ref().filter(|i| Some(&i.network) == chain.as_ref())
        {
            let connected = a.connected_at.unwrap_or(a.dialled_at);
            a.outcome = Some(Outcome::Reached {
                info: info.clone(),
                connect: connected.saturating_duration_since(a.dialled_at),
                handshake: Duration::ZERO,
                addrs: None,
                pex_error: None,
            });
            return;
        }
        let failure = match reason {
            CloseReason::NodeInfo(NodeInfoError::DialedIdMismatch { authenticated, .. }) => {
                Failure::WrongId {
                    answered_by: *authenticated,
                }
            }
            CloseReason::NodeInfo(NodeInfoError::IncompatibleNetwork { theirs, .. }) => {
                Failure::OtherChain {
                    network: theirs.clone(),
                }
            }
            CloseReason::NodeInfo(e @ NodeInfoError::IncompatibleBlockVersion { .. }) => {
                Failure::Incompatible {
                    detail: e.to_string(),
                }
            }
            CloseReason::Timeout(TimeoutKind::SecretHandshake | TimeoutKind::NodeInfo) => {
                Failure::Timeout {
                    stage: Stage::Handshake,
                }
            }
            other => Failure::Handshake {
                detail: other.to_string(),
            },
        };
        a.outcome = Some(Outcome::Failed { failure, info });
    }

    /// The terminal input for `id`: fold the attempt into the records.
    fn finish(&mut self, now: Instant, id: ConnId, default: Failure) {
        let Some(a) = self.attempts.remove(&id) else {
            return;
        };
        // After a connection, wait twice its connect time (about two round trips) before the
        // next dial to that host, so that the host has seen our close.
        let cooldown = a.connected_at.map_or(Duration::ZERO, |c| {
            (c.saturating_duration_since(a.dialled_at) * 2 + Duration::from_millis(5))
                .min(MAX_HOST_COOLDOWN)
        });
        self.frontier
            .release_at(a.addr.addr.ip(), now + cooldown, now);
        let unix = self.unix(now);
        let round = self.round;
        let outcome = a.outcome.unwrap_or(Outcome::Failed {
            failure: default,
            info: None,
        });
        let seed = self.seeds.contains(&a.addr);
        let Some(node) = self.nodes.get_mut(&a.addr.id) else {
            return;
        };
        let rec = node.addr_mut(a.addr.addr);
        rec.pending = false;
        let note = match outcome {
            Outcome::Cancelled => None,
            Outcome::Reached {
                info,
                connect,
                handshake,
                addrs,
                pex_error,
            } => {
                rec.dials += 1;
                rec.answered = true;
                rec.last_failure = None;
                node.status = Status::Reachable;
                node.failure = None;
                node.answered_at = Some(a.addr.addr);
                node.connect_ms = Some(ms(connect));
                node.handshake_ms = Some(ms(handshake));
                node.addrs_given = addrs;
                node.pex_error = pex_error;
                node.last_seen = node.last_seen.max(unix);
                node.round = round;
                let version = info.version.clone();
                node.info = Some(InfoRecord::from(&info));
                Some(Note::Reached {
                    addr: a.addr,
                    version,
                    addrs_given: addrs,
                })
            }
            Outcome::Failed { failure, info } => {
                rec.dials += 1;
                rec.last_failure = Some(failure.clone());
                if let Some(info) = &info {
                    node.info = Some(InfoRecord::from(info));
                    node.last_seen = node.last_seen.max(unix);
                }
                if node.status != Status::Reachable || node.round < round {
                    node.status = Status::Unreachable;
                    node.failure = Some(failure.clone());
                }
                if let Failure::WrongId { answered_by } = &failure {
                    let other = NetAddr::new(*answered_by, a.addr.addr);
                    self.learn(other, None, unix);
                    if let Some(r) = self.nodes.get_mut(answered_by) {
                        r.addr_mut(other.addr).from_handshake = true;
                    }
                }
                Some(Note::Failed {
                    addr: a.addr,
                    failure,
                    seed,
                })
            }
        };
        if let Some(n) = note {
            self.note(n);
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(any(feature = "sim", feature = "fuzzing"))]
impl crate::sim::Guest for Crawler {
    fn handle_input(&mut self, now: Instant, input: Input) {
        if let Err(e) = Crawler::handle_input(self, now, input) {
            panic!("crawler rejected an input: {e}");
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        Crawler::handle_timeout(self, now);
    }

    fn poll_output(&mut self) -> Option<Output> {
        Crawler::poll_output(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Crawler::poll_timeout(self)
    }
}

#[cfg(all(test, feature = "sim"))]
mod sim_tests;
#[cfg(feature = "sim")]
pub mod simnet;
