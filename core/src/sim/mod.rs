//! A deterministic network simulator for [`Engine`]s (feature `sim`).
//!
//! N engines share one virtual clock. TCP is modelled as pairs of ordered byte pipes: every
//! transmit is (optionally) re-chunked at seeded random boundaries and delivered after the
//! link's latency, never overtaking earlier bytes on the same pipe. Faults: refused dials
//! (offline nodes, partitions, a configurable refusal rate), resets, slow readers (send credit
//! returned late), corrupted output, clock jumps, node stops and restarts.
//!
//! [`Sim::step`] runs the earliest pending thing — a delivery or an engine deadline — and, with
//! [`SimConfig::check_invariants`], checks after every step, for the node(s) it touched:
//! no duplicate peers, inbound/outbound limits held, automatic outbound peers in distinct
//! address groups (G7), the address book's own `check()`, no dial to a banned id (G15), and
//! (always) that every connection id gets exactly one terminal input and at most one
//! `Output::Close`, and that an engine forgets a connection at its terminal input.
//!
//! Everything random comes from one seeded RNG, so the same seed and the same calls give the
//! same event trace; [`Sim::trace_hash`] summarises it.

use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::hash::Hasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use siphasher::sip::SipHasher13;

use crate::addr::NetAddr;
use crate::engine::{CloseCause, DialFailure, Engine, EngineConfig, Event, Input, Origin, Output};
use crate::identity::NodeKey;
use crate::ids::{ConnId, NodeId};

/// The listen address of simulated node `i`: each of the first 50 000 nodes gets its own /16
/// of public IPv4 space (`20.0.0.1`, `20.1.0.1`, …), so address groups never collide by
/// accident; node `i + 50 000 k` shares the /16 of node `i` (`20.0.k.1`), as there are not
/// enough /16s for more. At most 12 800 000 nodes.
#[must_use]
pub fn node_addr(i: usize) -> SocketAddr {
    let j = i % 50_000;
    let a = 20 + u8::try_from(j / 250).expect("j < 50 000");
    let b = u8::try_from(j % 250).expect("below 250");
    let c = u8::try_from(i / 50_000).expect("at most 12 800 000 simulated nodes");
    SocketAddr::from(([a, b, c, 1], 26656))
}

/// A configuration for simulated node `i` on chain `sim`: listening on [`node_addr`]`(i)`,
/// otherwise CometBFT's defaults.
#[must_use]
pub fn node_config(i: usize) -> EngineConfig {
    EngineConfig {
        chain_id: "sim".to_owned(),
        moniker: format!("node{i}"),
        listen_addr: node_addr(i),
        ..EngineConfig::default()
    }
}

/// A machine the simulator hosts beside engines, such as a [`Crawler`](crate::crawl::Crawler):
/// it follows the engine's loop contract (same [`Input`]s and [`Output`]s), dials but never
/// accepts (dials to it are refused). Add one with [`Sim::add_guest`].
pub trait Guest: std::any::Any {
    /// An IO result for one of its connections.
    fn handle_input(&mut self, now: Instant, input: Input);
    /// Its deadline passed.
    fn handle_timeout(&mut self, now: Instant);
    /// Its next output.
    fn poll_output(&mut self) -> Option<Output>;
    /// Its next deadline.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// Simulator settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SimConfig {
    /// Seeds the simulator's RNG (node keys, engine seeds, chunking, latency, faults).
    pub seed: u64,
    /// One-way latency of every link (plus jitter).
    pub latency: Duration,
    /// Each link gets `latency + U[0, latency_jitter)`.
    pub latency_jitter: Duration,
    /// Split each transmit at random boundaries (up to 3 pieces).
    pub rechunk: bool,
    /// Probability (per million) that a dial to a reachable node is refused anyway.
    pub refuse_ppm: u32,
    /// Check the invariants after every step (slow for very large networks).
    pub check_invariants: bool,
    /// Keep every event in [`Sim::events`].
    pub record_events: bool,
    /// Unix time at the start.
    pub unix_start: u64,
    /// Modelled crypto (default off): inside [`Sim::step`] the SecretConnection uses the
    /// fuzzing shim (identity AEAD with the real frame sizes, XOR "DH", zero signatures of
    /// the real size, all accepted) instead of X25519, Ed25519 and ChaCha20-Poly1305, so that
    /// scale runs measure the engine rather than the curve arithmetic. Figures taken so
    /// are reported beside real-crypto ones, never instead of them.
    pub modelled_crypto: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            latency: Duration::from_millis(20),
            latency_jitter: Duration::from_millis(30),
            rechunk: true,
            refuse_ppm: 0,
            check_invariants: true,
            record_events: false,
            unix_start: 1_750_000_000,
            modelled_crypto: false,
        }
    }
}

/// A broken invariant or a run that did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// `run_until` used up its steps before the predicate held.
    #[error("predicate not reached after {0} steps")]
    Exhausted(u64),
    /// Nothing is scheduled any more and the predicate does not hold.
    #[error("simulation idle after {0} steps")]
    Idle(u64),
}

/// One recorded event.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Simulated time since the start.
    pub at: Duration,
    /// The node that emitted it.
    pub node: usize,
    /// The event.
    pub event: Event,
}

type Ep = (usize, ConnId);

/// An event in the queue, ordered by its time and then by its sequence number (unique), so the
/// queue pops in one total order whatever the heap's layout.
#[derive(Debug)]
struct Queued {
    at: Instant,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest event must come out first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Debug)]
enum Ev {
    Connect { from: Ep, to: usize },
    Connected { ep: Ep },
    DialFailed { ep: Ep, error: DialFailure },
    Deliver { ep: Ep, bytes: Bytes },
    Sent { ep: Ep, len: usize },
    Closed { ep: Ep, cause: CloseCause },
}

struct Pipe {
    to: Ep,
    latency: Duration,
    last: Instant,
    open: bool,
}

/// A live endpoint (removed at its terminal input).
#[derive(Default)]
struct EpState {
    close_out: bool,
    /// Bytes in flight to a connection whose engine does not read it now (a full delivery
    /// window): the socket buffer of a stalled TCP stream.
    stash: VecDeque<Bytes>,
    /// The close that arrived behind stashed bytes.
    close_after: Option<CloseCause>,
}

struct Node {
    engine: Option<Engine>,
    guest: Option<Box<dyn Guest>>,
    config: EngineConfig,
    key: NodeKey,
    addr: SocketAddr,
    deadline: Option<Instant>,
    sent_delay: Duration,
    corrupt: bool,
    partition: u32,
    /// PeerUp and PeerDown events emitted so far (see [`Sim::peer_epoch`]).
    peer_epoch: u64,
}

/// The simulator.
pub struct Sim {
    cfg: SimConfig,
    rng: ChaCha20Rng,
    base: Instant,
    now: Instant,
    nodes: Vec<Node>,
    by_addr: hashbrown::HashMap<SocketAddr, usize>,
    queue: BinaryHeap<Queued>,
    seq: u64,
    timers: BTreeSet<(Instant, usize)>,
    pipes: hashbrown::HashMap<Ep, Pipe>,
    eps: hashbrown::HashMap<Ep, EpState>,
    trace: SipHasher13,
    events: Vec<Recorded>,
    steps: u64,
    touched: Vec<usize>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("nodes", &self.nodes.len())
            .field("elapsed", &self.elapsed())
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// An empty network. `origin` is only the zero of the virtual clock; nothing depends on
    /// its value.
    #[must_use]
    pub fn new(cfg: SimConfig, origin: Instant) -> Sim {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&cfg.seed.to_le_bytes());
        Sim {
            rng: ChaCha20Rng::from_seed(seed),
            cfg,
            base: origin,
            now: origin,
            nodes: Vec::new(),
            by_addr: hashbrown::HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            timers: BTreeSet::new(),
            pipes: hashbrown::HashMap::new(),
            eps: hashbrown::HashMap::new(),
            trace: SipHasher13::new_with_keys(0, 0),
            events: Vec::new(),
            steps: 0,
            touched: Vec::new(),
        }
    }

    /// A node key drawn from the simulator's RNG (use it to know ids before adding nodes).
    pub fn gen_key(&mut self) -> NodeKey {
        let mut s = [0u8; 32];
        self.rng.fill_bytes(&mut s);
        NodeKey::from_seed(s)
    }

    /// Adds a node listening on `config.listen_addr` and starts its engine now.
    /// Panics if the address is taken or the config is invalid (a test bug).
    pub fn add_node(&mut self, config: EngineConfig, key: NodeKey) -> usize {
        let addr = config.listen_addr;
        assert!(!self.by_addr.contains_key(&addr), "address {addr} taken");
        let idx = self.nodes.len();
        self.nodes.push(Node {
            engine: None,
            guest: None,
            config,
            key,
            addr,
            deadline: None,
            sent_delay: Duration::ZERO,
            corrupt: false,
            partition: 0,
            peer_epoch: 0,
        });
        self.by_addr.insert(addr, idx);
        self.start_node(idx);
        idx
    }

    /// Adds a guest machine at `addr` (with `key` as its identity for [`Sim::node_id`]) and
    /// carries out its first outputs. Panics if the address is taken.
    pub fn add_guest(&mut self, addr: SocketAddr, key: NodeKey, guest: Box<dyn Guest>) -> usize {
        assert!(!self.by_addr.contains_key(&addr), "address {addr} taken");
        let idx = self.nodes.len();
        self.nodes.push(Node {
            engine: None,
            guest: Some(guest),
            config: EngineConfig::default(),
            key,
            addr,
            deadline: None,
            sent_delay: Duration::ZERO,
            corrupt: false,
            partition: 0,
            peer_epoch: 0,
        });
        self.by_addr.insert(addr, idx);
        self.drain(idx);
        idx
    }

    /// Guest `i` (see [`Sim::add_guest`]); downcast it with `as &dyn Any`.
    #[must_use]
    pub fn guest(&self, i: usize) -> Option<&dyn Guest> {
        self.nodes.get(i).and_then(|n| n.guest.as_deref())
    }

    /// Calls `f` on guest `i` at the current time, then carries out its outputs.
    pub fn with_guest<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut dyn Guest, Instant) -> R,
    ) -> Option<R> {
        let now = self.now;
        let r = self
            .nodes
            .get_mut(i)?
            .guest
            .as_deref_mut()
            .map(|g| f(g, now));
        self.drain(i);
        r
    }

    fn start_node(&mut self, idx: usize) {
        self.start_node_with(idx, |_| {});
    }

    fn start_node_with(&mut self, idx: usize, setup: impl FnOnce(&mut Engine)) {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let unix = self.unix_now();
        let node = &mut self.nodes[idx];
        let mut engine = Engine::new(node.config.clone(), node.key.clone(), seed, self.now, unix)
            .expect("valid engine config");
        setup(&mut engine);
        node.engine = Some(engine);
        node.peer_epoch += 1;
        self.drain(idx);
    }

    /// The unix time now.
    #[must_use]
    pub fn unix_now(&self) -> u64 {
        self.cfg.unix_start + self.elapsed().as_secs()
    }

    /// Number of nodes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The engine of node `i` (`None` while stopped).
    #[must_use]
    pub fn engine(&self, i: usize) -> Option<&Engine> {
        self.nodes.get(i).and_then(|n| n.engine.as_ref())
    }

    /// Calls `f` on node `i`'s engine at the current time, then carries out its outputs.
    pub fn with_engine<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Engine, Instant) -> R,
    ) -> Option<R> {
        let now = self.now;
        let r = self.nodes.get_mut(i)?.engine.as_mut().map(|e| f(e, now));
        self.drain(i);
        self.resume_stalled(i);
        r
    }

    /// Feeds stashed bytes to node `i`'s connections that read again (after `consumed`).
    fn resume_stalled(&mut self, i: usize) {
        // Collected, then sorted: the hash order does not reach any decision.
        #[allow(clippy::disallowed_methods)]
        let mut eps: Vec<Ep> = self
            .eps
            .iter()
            .filter(|(ep, s)| ep.0 == i && (!s.stash.is_empty() || s.close_after.is_some()))
            .map(|(ep, _)| *ep)
            .collect();
        eps.sort_unstable();
        for ep in eps {
            loop {
                let stalled = self.nodes[i]
                    .engine
                    .as_ref()
                    .is_none_or(|e| e.delivery_stalled(ep.1));
                if stalled {
                    break;
                }
                let Some(s) = self.eps.get_mut(&ep) else {
                    break;
                };
                match s.stash.pop_front() {
                    Some(bytes) => self.input(ep, Input::Received { conn: ep.1, bytes }),
                    None => {
                        if let Some(cause) = s.close_after.take() {
                            self.run_event(Ev::Closed { ep, cause });
                        }
                        break;
                    }
                }
            }
        }
    }

    /// How many `PeerUp` and `PeerDown` events node `i` has emitted (plus its starts and
    /// stops): while it stays the same, the node's set of peers has not changed (a caller watching many nodes re-reads only
    /// those whose epoch moved).
    #[must_use]
    pub fn peer_epoch(&self, i: usize) -> u64 {
        self.nodes[i].peer_epoch
    }

    /// Node `i`'s id.
    #[must_use]
    pub fn node_id(&self, i: usize) -> NodeId {
        self.nodes[i].key.node_id()
    }

    /// Node `i`'s address.
    #[must_use]
    pub fn net_addr(&self, i: usize) -> NetAddr {
        NetAddr::new(self.node_id(i), self.nodes[i].addr)
    }

    /// Current virtual time.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.base)
    }

    /// Steps run so far.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The recorded events (with `record_events`).
    #[must_use]
    pub fn events(&self) -> &[Recorded] {
        &self.events
    }

    /// A hash of every engine output so far, in order, with its time and node: events, dials
    /// (with the address), closes and transmitted bytes. Two runs with the same seed and the
    /// same calls give the same hash, in any process.
    #[must_use]
    pub fn trace_hash(&self) -> u64 {
        self.trace.clone().finish()
    }

    // ------------------------------------------------------------------ faults

    /// Stops node `i`: its connections reset, dials to it are refused until [`Sim::restart`].
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].engine = None;
        self.nodes[i].peer_epoch += 1;
        self.set_timer(i, None);
        let mut ends: Vec<(Ep, Ep, Duration, Instant)> = Vec::new();
        for (ep, p) in &mut self.pipes {
            if ep.0 == i || p.to.0 == i {
                if ep.0 == i && p.open {
                    ends.push((*ep, p.to, p.latency, p.last));
                }
                p.open = false;
            }
        }
        ends.sort_by_key(|e| e.0);
        for (_, to, latency, last) in ends {
            let at = (self.now + latency).max(last);
            self.push(
                at,
                Ev::Closed {
                    ep: to,
                    cause: CloseCause::Reset,
                },
            );
        }
        // The stopped engine's connection ids die with it: forget them and anything in flight
        // to them, so a restarted engine (which numbers connections from 1 again) starts clean.
        self.pipes.retain(|ep, _| ep.0 != i);
        self.eps.retain(|ep, _| ep.0 != i);
        self.queue.retain(|q| match &q.ev {
            Ev::Connect { from, .. } => from.0 != i,
            Ev::Connected { ep }
            | Ev::DialFailed { ep, .. }
            | Ev::Deliver { ep, .. }
            | Ev::Sent { ep, .. }
            | Ev::Closed { ep, .. } => ep.0 != i,
        });
        self.trace_u64(&[0xdead, i as u64]);
    }

    /// Restarts a stopped node with a fresh engine (same key and config).
    pub fn restart(&mut self, i: usize) {
        self.restart_with(i, |_| {});
    }

    /// Restarts a stopped node with a fresh engine (same key and config) that `setup` prepares
    /// before its first output, as a driver does at start (load the saved address book,
    /// anchors).
    pub fn restart_with(&mut self, i: usize, setup: impl FnOnce(&mut Engine)) {
        if self.nodes[i].engine.is_none() {
            self.start_node_with(i, setup);
        }
    }

    /// Puts nodes in partition groups: dials between different groups are refused and
    /// existing connections between them reset. Group 0 is the default.
    pub fn partition(&mut self, groups: &[(usize, u32)]) {
        for &(i, g) in groups {
            self.nodes[i].partition = g;
        }
        #[allow(clippy::disallowed_methods)] // sorted below
        let mut cross: Vec<Ep> = self
            .pipes
            .iter()
            .filter(|(ep, p)| p.open && self.nodes[ep.0].partition != self.nodes[p.to.0].partition)
            .map(|(ep, _)| *ep)
            .collect();
        cross.sort();
        for ep in cross {
            self.reset_ep(ep);
        }
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.partition = 0;
        }
    }

    /// Resets the connection at endpoint `(node, conn)` (both sides see `Closed{Reset}`).
    pub fn reset_ep(&mut self, ep: Ep) {
        let Some(p) = self.pipes.get_mut(&ep) else {
            return;
        };
        let to = p.to;
        p.open = false;
        let now = self.now;
        self.push(
            now,
            Ev::Closed {
                ep,
                cause: CloseCause::Reset,
            },
        );
        if let Some(back) = self.pipes.get_mut(&to) {
            back.open = false;
        }
        self.push(
            now,
            Ev::Closed {
                ep: to,
                cause: CloseCause::Reset,
            },
        );
    }

    /// Resets the `n`-th open connection (modulo their number, in endpoint order); false if
    /// there is none.
    pub fn reset_nth(&mut self, n: usize) -> bool {
        #[allow(clippy::disallowed_methods)] // sorted below
        let mut open: Vec<Ep> = self
            .pipes
            .iter()
            .filter(|(_, p)| p.open)
            .map(|(ep, _)| *ep)
            .collect();
        if open.is_empty() {
            return false;
        }
        open.sort();
        let ep = open[n % open.len()];
        self.reset_ep(ep);
        true
    }

    /// Sets the refusal rate of dials to reachable nodes (per million).
    pub fn set_refuse_ppm(&mut self, ppm: u32) {
        self.cfg.refuse_ppm = ppm;
    }

    /// Makes node `i` a slow reader: send credit returns `delay` late.
    pub fn set_slow_reader(&mut self, i: usize, delay: Duration) {
        self.nodes[i].sent_delay = delay;
    }

    /// From now on every byte node `i` transmits is garbage.
    pub fn set_corrupt(&mut self, i: usize, on: bool) {
        self.nodes[i].corrupt = on;
    }

    /// Flips one byte of the next pending delivery (fuzzing).
    pub fn corrupt_next_delivery(&mut self, xor: u8) {
        let mut queued = std::mem::take(&mut self.queue).into_vec();
        let next = queued
            .iter_mut()
            .filter(|q| matches!(&q.ev, Ev::Deliver { bytes, .. } if !bytes.is_empty()))
            .min_by_key(|q| (q.at, q.seq));
        if let Some(Queued {
            ev: Ev::Deliver { bytes, .. },
            ..
        }) = next
        {
            let mut v = bytes.to_vec();
            v[0] ^= xor | 1;
            *bytes = Bytes::from(v);
        }
        self.queue = BinaryHeap::from(queued);
    }

    /// Jumps the clock forward by `d` (timers then fire late, as after a suspend).
    pub fn jump(&mut self, d: Duration) {
        self.now += d;
    }

    // ------------------------------------------------------------------ running

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn set_timer(&mut self, i: usize, at: Option<Instant>) {
        let old = self.nodes[i].deadline;
        if old == at {
            return;
        }
        if let Some(t) = old {
            self.timers.remove(&(t, i));
        }
        if let Some(t) = at {
            self.timers.insert((t, i));
        }
        self.nodes[i].deadline = at;
    }

    fn trace_u64(&mut self, words: &[u64]) {
        let t = u64::try_from(self.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.trace.write_u64(t);
        for w in words {
            self.trace.write_u64(*w);
        }
    }

    fn trace_ip(&mut self, ip: std::net::IpAddr) {
        match ip {
            std::net::IpAddr::V4(v4) => self.trace.write(&v4.octets()),
            std::net::IpAddr::V6(v6) => self.trace.write(&v6.octets()),
        }
    }

    fn trace_id(&mut self, id: &NodeId) {
        self.trace.write(id.as_bytes());
    }

    /// Runs one step: the earliest delivery or engine deadline. False when nothing is left.
    pub fn step(&mut self) -> bool {
        crate::crypto::with_modelled_crypto(self.cfg.modelled_crypto, || self.step_once())
    }

    fn step_once(&mut self) -> bool {
        let next_ev = self.queue.peek().map(|q| q.at);
        let next_timer = self.timers.first().map(|(t, _)| *t);
        self.touched.clear();
        let ran = match (next_ev, next_timer) {
            (None, None) => false,
            (Some(e), t) if t.is_none_or(|t| e <= t) => {
                let Some(q) = self.queue.pop() else {
                    return false;
                };
                self.now = self.now.max(q.at);
                self.run_event(q.ev);
                true
            }
            (_, Some(t)) => {
                let Some((_, i)) = self.timers.pop_first() else {
                    return false;
                };
                self.nodes[i].deadline = None;
                self.now = self.now.max(t);
                let now = self.now;
                if let Some(e) = self.nodes[i].engine.as_mut() {
                    e.handle_timeout(now);
                } else if let Some(g) = self.nodes[i].guest.as_deref_mut() {
                    g.handle_timeout(now);
                }
                self.drain(i);
                true
            }
            (Some(_), None) => unreachable!("covered by the guard above"),
        };
        if ran {
            self.steps += 1;
            if self.cfg.check_invariants {
                let touched = std::mem::take(&mut self.touched);
                for &i in &touched {
                    self.check_node(i);
                }
                self.touched = touched;
            }
        }
        ran
    }

    /// Steps until `pred` holds (checked before each step), at most `max_steps` steps.
    pub fn run_until(
        &mut self,
        mut pred: impl FnMut(&Sim) -> bool,
        max_steps: u64,
    ) -> Result<u64, SimError> {
        let start = self.steps;
        loop {
            if pred(self) {
                return Ok(self.steps - start);
            }
            if self.steps - start >= max_steps {
                return Err(SimError::Exhausted(max_steps));
            }
            if !self.step() {
                return if pred(self) {
                    Ok(self.steps - start)
                } else {
                    Err(SimError::Idle(self.steps - start))
                };
            }
        }
    }

    /// Runs until `d` of virtual time has passed (or nothing is left), at most `max_steps`.
    pub fn run_for(&mut self, d: Duration, max_steps: u64) -> Result<u64, SimError> {
        let end = self.now + d;
        let r = self.run_until(
            |s| {
                let next = s.queue.peek().map(|q| q.at);
                let t = s.timers.first().map(|(t, _)| *t);
                let earliest = match (next, t) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                earliest.is_none_or(|e| e > end)
            },
            max_steps,
        );
        if r.is_ok() && self.now < end {
            self.now = end;
        }
        r
    }

    fn terminal(&self, ep: &Ep) -> bool {
        !self.eps.contains_key(ep)
    }

    fn input(&mut self, ep: Ep, input: Input) {
        let now = self.now;
        if let Some(g) = self.nodes[ep.0].guest.as_deref_mut() {
            g.handle_input(now, input);
            self.drain(ep.0);
            return;
        }
        let Some(e) = self.nodes[ep.0].engine.as_mut() else {
            return;
        };
        let terminal = matches!(input, Input::Closed { .. } | Input::DialFailed { .. });
        if let Err(err) = e.handle_input(now, input) {
            panic!("engine {} rejected an input for {}: {err}", ep.0, ep.1);
        }
        if terminal {
            assert!(
                !e.has_conn(ep.1),
                "node {} still knows {} after its terminal input",
                ep.0,
                ep.1
            );
        }
        self.drain(ep.0);
    }

    fn run_event(&mut self, ev: Ev) {
        match ev {
            Ev::Connect { from, to } => {
                if self.terminal(&from) {
                    return;
                }
                let lat = self.link_latency();
                let reachable = self.nodes[to].engine.is_some()
                    && self.nodes[to].partition == self.nodes[from.0].partition
                    && !(self.cfg.refuse_ppm > 0
                        && self.rng.next_u32() % 1_000_000 < self.cfg.refuse_ppm);
                let now = self.now;
                if !reachable {
                    self.push(
                        now + lat,
                        Ev::DialFailed {
                            ep: from,
                            error: DialFailure::Refused,
                        },
                    );
                    return;
                }
                let remote = self.nodes[from.0].addr;
                let accepted = self.nodes[to]
                    .engine
                    .as_mut()
                    .map(|e| e.accept(now, remote));
                match accepted {
                    Some(Ok(cj)) => {
                        let back: Ep = (to, cj);
                        self.eps.insert(back, EpState::default());
                        self.pipes.insert(
                            from,
                            Pipe {
                                to: back,
                                latency: lat,
                                last: now + lat,
                                open: true,
                            },
                        );
                        self.pipes.insert(
                            back,
                            Pipe {
                                to: from,
                                latency: lat,
                                last: now + lat,
                                open: true,
                            },
                        );
                        self.push(now + lat, Ev::Connected { ep: from });
                        self.touched.push(to);
                        self.drain(to);
                    }
                    _ => {
                        self.push(
                            now + lat,
                            Ev::DialFailed {
                                ep: from,
                                error: DialFailure::Refused,
                            },
                        );
                    }
                }
            }
            Ev::Connected { ep } => {
                if self.terminal(&ep) {
                    return;
                }
                self.input(ep, Input::Connected { conn: ep.1 });
            }
            Ev::DialFailed { ep, error } => {
                if self.terminal(&ep) {
                    return;
                }
                self.mark_terminal(ep);
                self.input(ep, Input::DialFailed { conn: ep.1, error });
            }
            Ev::Deliver { ep, bytes } => {
                if self.terminal(&ep) {
                    return;
                }
                let stalled = self.nodes[ep.0]
                    .engine
                    .as_ref()
                    .is_some_and(|e| e.delivery_stalled(ep.1));
                if let Some(s) = self.eps.get_mut(&ep)
                    && (stalled || !s.stash.is_empty())
                {
                    s.stash.push_back(bytes);
                    return;
                }
                self.input(ep, Input::Received { conn: ep.1, bytes });
            }
            Ev::Sent { ep, len } => {
                if self.terminal(&ep) {
                    return;
                }
                self.input(ep, Input::Sent { conn: ep.1, len });
            }
            Ev::Closed { ep, cause } => {
                if self.terminal(&ep) {
                    return;
                }
                if let Some(s) = self.eps.get_mut(&ep)
                    && !s.stash.is_empty()
                    && cause != CloseCause::Local
                {
                    // The remote's close follows the bytes still in the socket buffer.
                    s.close_after = Some(cause);
                    return;
                }
                self.mark_terminal(ep);
                if let Some(p) = self.pipes.get_mut(&ep)
                    && p.open
                {
                    p.open = false;
                    let to = p.to;
                    let at = (self.now + p.latency).max(p.last);
                    self.push(
                        at,
                        Ev::Closed {
                            ep: to,
                            cause: CloseCause::Eof,
                        },
                    );
                }
                self.input(ep, Input::Closed { conn: ep.1, cause });
            }
        }
    }

    fn mark_terminal(&mut self, ep: Ep) {
        // Only live endpoints are kept: a second terminal input for `ep` can never be
        // delivered (`terminal()` is true for unknown endpoints), and an output naming it
        // afterwards is caught in `drain`.
        let known = self.eps.remove(&ep).is_some();
        assert!(known, "{ep:?} got a terminal input but was not live");
        self.pipes.remove(&ep);
    }

    fn link_latency(&mut self) -> Duration {
        let j = u64::try_from(self.cfg.latency_jitter.as_micros()).unwrap_or(0);
        let extra = if j == 0 { 0 } else { self.rng.next_u64() % j };
        self.cfg.latency + Duration::from_micros(extra)
    }

    /// Carries out node `i`'s outputs.
    fn drain(&mut self, i: usize) {
        if !self.touched.contains(&i) {
            self.touched.push(i);
        }
        loop {
            let node = &mut self.nodes[i];
            let out = match (node.engine.as_mut(), node.guest.as_deref_mut()) {
                (Some(e), _) => e.poll_output(),
                (None, Some(g)) => g.poll_output(),
                (None, None) => None,
            };
            let Some(out) = out else {
                break;
            };
            let now = self.now;
            match out {
                Output::Transmit { conn, data } => {
                    self.trace_u64(&[9, i as u64, conn.0, data.len() as u64]);
                    self.trace.write(&data);
                    self.transmit(i, conn, data);
                }
                // The simulator has no DNS: a dial by name fails as unresolved.
                Output::DialName { conn, .. } => {
                    self.eps.insert((i, conn), EpState::default());
                    let lat = self.link_latency();
                    self.push(
                        now + lat,
                        Ev::DialFailed {
                            ep: (i, conn),
                            error: DialFailure::Unresolved,
                        },
                    );
                }
                Output::Dial { conn, addr } => {
                    self.trace_u64(&[1, i as u64, conn.0, u64::from(addr.port())]);
                    self.trace_ip(addr.ip());
                    if self.cfg.check_invariants {
                        self.check_dial(i, addr);
                    }
                    self.eps.insert((i, conn), EpState::default());
                    match self.by_addr.get(&addr).copied() {
                        Some(to) => {
                            let lat = self.link_latency();
                            self.push(
                                now + lat,
                                Ev::Connect {
                                    from: (i, conn),
                                    to,
                                },
                            );
                        }
                        None => {
                            let lat = self.link_latency();
                            self.push(
                                now + lat,
                                Ev::DialFailed {
                                    ep: (i, conn),
                                    error: DialFailure::Unreachable,
                                },
                            );
                        }
                    }
                }
                Output::Close { conn } => {
                    self.trace_u64(&[2, i as u64, conn.0]);
                    let ep = (i, conn);
                    let Some(s) = self.eps.get_mut(&ep) else {
                        panic!("node {i} closed {conn}, which is unknown or already closed");
                    };
                    assert!(!s.close_out, "node {i} closed {conn} twice");
                    s.close_out = true;
                    {
                        if let Some(p) = self.pipes.get_mut(&ep)
                            && p.open
                        {
                            p.open = false;
                            let to = p.to;
                            let at = (now + p.latency).max(p.last);
                            self.push(
                                at,
                                Ev::Closed {
                                    ep: to,
                                    cause: CloseCause::Eof,
                                },
                            );
                        }
                        self.push(
                            now,
                            Ev::Closed {
                                ep,
                                cause: CloseCause::Local,
                            },
                        );
                    }
                }
                Output::Event(ev) => self.record(i, ev),
            }
        }
        let node = &self.nodes[i];
        let t = match (node.engine.as_ref(), node.guest.as_deref()) {
            (Some(e), _) => e.poll_timeout(),
            (None, Some(g)) => g.poll_timeout(),
            (None, None) => None,
        };
        self.set_timer(i, t);
    }

    fn transmit(&mut self, i: usize, conn: ConnId, data: Bytes) {
        let ep = (i, conn);
        let now = self.now;
        let len = data.len();
        let delay = self.nodes[i].sent_delay;
        self.push(now + delay, Ev::Sent { ep, len });
        let corrupt = self.nodes[i].corrupt;
        let rechunk = self.cfg.rechunk;
        let Some(p) = self.pipes.get(&ep) else {
            return;
        };
        if !p.open {
            return;
        }
        let (to, latency, last) = (p.to, p.latency, p.last);
        let data = if corrupt {
            let mut v = vec![0u8; len];
            self.rng.fill_bytes(&mut v);
            Bytes::from(v)
        } else {
            data
        };
        let mut pieces = Vec::new();
        if rechunk && len > 1 {
            let mut rest = data;
            let n = 1 + self.rng.next_u32() % 3;
            for _ in 1..n {
                if rest.len() <= 1 {
                    break;
                }
                let cut =
                    1 + usize::try_from(self.rng.next_u64() % (rest.len() as u64 - 1)).unwrap_or(0);
                pieces.push(rest.split_to(cut));
            }
            pieces.push(rest);
        } else {
            pieces.push(data);
        }
        let mut at = (now + latency).max(last);
        for piece in pieces {
            self.push(
                at,
                Ev::Deliver {
                    ep: to,
                    bytes: piece,
                },
            );
            at += Duration::from_micros(1);
        }
        if let Some(p) = self.pipes.get_mut(&ep) {
            p.last = at;
        }
    }

    fn record(&mut self, i: usize, ev: Event) {
        if matches!(ev, Event::PeerUp { .. } | Event::PeerDown { .. }) {
            self.nodes[i].peer_epoch += 1;
        }
        match &ev {
            Event::PeerUp { peer, conn, .. } => {
                self.trace_u64(&[3, i as u64, conn.0]);
                self.trace_id(&peer.clone());
            }
            Event::PeerDown { peer, .. } => {
                self.trace_u64(&[4, i as u64]);
                self.trace_id(&peer.clone());
            }
            Event::Message { peer, payload, .. } => {
                self.trace_u64(&[5, i as u64, payload.len() as u64]);
                self.trace_id(&peer.clone());
            }
            Event::DialFailed { addr, .. } => {
                self.trace_u64(&[6, i as u64]);
                self.trace_id(&addr.id.clone());
            }
            Event::AddrBookDirty => self.trace_u64(&[7, i as u64]),
            Event::InboundFailed { remote, .. } => {
                self.trace_u64(&[8, i as u64, u64::from(remote.port())]);
            }
            Event::SendReady { peer, channel } => {
                self.trace_u64(&[9, i as u64, u64::from(channel.0)]);
                self.trace_id(&peer.clone());
            }
        }
        if self.cfg.record_events {
            self.events.push(Recorded {
                at: self.elapsed(),
                node: i,
                event: ev,
            });
        }
    }

    // ------------------------------------------------------------------ invariants

    /// Checks node `i`'s invariants; panics with a description when one is broken.
    pub fn check_node(&self, i: usize) {
        let Some(e) = self.nodes[i].engine.as_ref() else {
            return;
        };
        let cfg = e.config();
        let mut conns = BTreeSet::new();
        let mut groups = BTreeSet::new();
        let mut auto_out = 0usize;
        for p in e.peers() {
            assert!(conns.insert(p.conn), "node {i}: two peers on {}", p.conn);
            assert_ne!(p.id, e.node_id(), "node {i} is its own peer");
            if p.origin == Origin::Auto && p.counts_outbound() {
                auto_out += 1;
                let g = e.group_of(&p.remote.ip());
                assert!(
                    groups.insert(g),
                    "node {i}: two automatic outbound peers in group {g:?} (G7)"
                );
            }
        }
        let (inbound, _) = e.num_peers();
        assert!(
            inbound <= cfg.max_num_inbound_peers,
            "node {i}: {inbound} inbound peers > {}",
            cfg.max_num_inbound_peers
        );
        assert!(
            auto_out <= cfg.max_num_outbound_peers,
            "node {i}: {auto_out} automatic outbound peers > {}",
            cfg.max_num_outbound_peers
        );
        if let Err(err) = e.addr_book().check() {
            panic!("node {i}: address book inconsistent: {err:?}");
        }
    }

    /// G15: no dial to a banned node id (persistent peers excepted, G18).
    fn check_dial(&self, i: usize, addr: SocketAddr) {
        let (Some(e), Some(&to)) = (self.nodes[i].engine.as_ref(), self.by_addr.get(&addr)) else {
            return;
        };
        let id = self.node_id(to);
        let persistent = e.config().persistent_peers.iter().any(|p| p.id == id);
        assert!(
            persistent || !e.is_banned(&id, self.now),
            "node {i} dials node {to}, which it banned (G15)"
        );
    }

    /// Checks every node's invariants.
    pub fn check_all(&self) {
        for i in 0..self.nodes.len() {
            self.check_node(i);
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock
mod tests {
    use std::time::{Duration, Instant};

    use super::{Sim, SimConfig, node_addr, node_config};

    /// `peer_epoch` moves with every peer up or down (and start and stop), and only then.
    #[test]
    fn peer_epoch_follows_the_peer_set() {
        let mut sim = Sim::new(SimConfig::default(), Instant::now());
        let k0 = sim.gen_key();
        let a = sim.add_node(node_config(0), k0);
        let mut c = node_config(1);
        c.persistent_peers = vec![sim.net_addr(a)];
        let k1 = sim.gen_key();
        let b = sim.add_node(c, k1);
        let (a0, b0) = (sim.peer_epoch(a), sim.peer_epoch(b));
        assert_eq!((a0, b0), (1, 1), "one start each");
        sim.run_until(
            |s| s.engine(b).is_some_and(|e| e.peers().count() == 1),
            10_000,
        )
        .unwrap();
        sim.run_for(Duration::from_secs(1), 100_000).unwrap();
        assert_eq!(
            (sim.peer_epoch(a), sim.peer_epoch(b)),
            (2, 2),
            "one PeerUp each"
        );
        sim.stop(a);
        assert_eq!(sim.peer_epoch(a), 3, "stopped");
        sim.run_for(Duration::from_secs(1), 100_000).unwrap();
        assert_eq!(sim.peer_epoch(b), 3, "one PeerDown");
    }

    /// The first 50 000 nodes keep their own /16; beyond, node `i` shares the /16 of node
    /// `i % 50 000` on another third octet; no two nodes share an address.
    #[test]
    fn node_addresses_are_distinct_beyond_50_000() {
        assert_eq!(node_addr(0).to_string(), "20.0.0.1:26656");
        assert_eq!(node_addr(49_999).to_string(), "219.249.0.1:26656");
        assert_eq!(node_addr(50_000).to_string(), "20.0.1.1:26656");
        assert_eq!(node_addr(100_001).to_string(), "20.1.2.1:26656");
        let mut seen = std::collections::BTreeSet::new();
        for i in (0..200_000).step_by(7) {
            assert!(seen.insert(node_addr(i)), "node {i} reuses an address");
        }
    }
}
