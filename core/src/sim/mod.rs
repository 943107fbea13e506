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
//! Everything random comes from seeded RNGs (the simulator's for keys and engine seeds, one
//! per node for what the network does to its connections), and events at the same time run in
//! an order fixed by who produced them, so the same seed and the same calls give the same
//! event trace; [`Sim::trace_hash`] summarises it.
//!
//! Large networks run on several threads with [`Sim::run_windows`]: the nodes are split into
//! shards ([`SHARDS_PER_THREAD`] for each of [`SimConfig::threads`]), and within a window
//! shorter than the minimum link latency no shard's step can affect another's, so the threads
//! run the shards of a window side by side, each taking the next shard left (conservative
//! parallel discrete-event simulation). The result is the same for any number of threads.

mod shard;

use std::hash::Hasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use siphasher::sip::SipHasher13;

use crate::addr::NetAddr;
use crate::engine::{CloseCause, Engine, EngineConfig, Event, Input, Output};
use crate::identity::NodeKey;
use crate::ids::NodeId;
use shard::{Ep, Ev, Node, Queued, Shard, World};

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
/// accepts (dials to it are refused). Add one with [`Sim::add_guest`]. `Send`: with
/// [`SimConfig::threads`] its shard may run on another thread.
pub trait Guest: std::any::Any + Send {
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
    /// Seeds the simulator's RNGs (node keys, engine seeds, chunking, latency, faults).
    pub seed: u64,
    /// One-way latency of every link (plus jitter); also the length of [`Sim::run_windows`]'s
    /// windows.
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
    /// Threads [`Sim::run_windows`] runs the network's shards on (default 1). Only the speed
    /// depends on it.
    pub threads: usize,
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
            threads: 1,
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

/// Shards for each thread of [`Sim::run_windows`] (one in all without threads): with more
/// shards than threads, a thread that finished its shard of a window takes another instead of
/// waiting for a busier one.
pub const SHARDS_PER_THREAD: usize = 4;

/// The simulator.
pub struct Sim {
    w: World,
    /// Node keys and engine seeds.
    rng: ChaCha20Rng,
    now: Instant,
    shards: Vec<Shard>,
    events: Vec<Recorded>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("nodes", &self.len())
            .field("shards", &self.shards.len())
            .field("elapsed", &self.elapsed())
            .field("steps", &self.steps())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// An empty network. `origin` is only the zero of the virtual clock; nothing depends on
    /// its value.
    #[must_use]
    pub fn new(cfg: SimConfig, origin: Instant) -> Sim {
        let count = match cfg.threads {
            0 | 1 => 1,
            t => t * SHARDS_PER_THREAD,
        };
        Sim {
            rng: ChaCha20Rng::from_seed(Self::rng_seed(cfg.seed)),
            shards: (0..count).map(|k| Shard::new(k, count, origin)).collect(),
            w: World {
                cfg,
                base: origin,
                ids: Vec::new(),
                addrs: Vec::new(),
                partition: Vec::new(),
                by_addr: hashbrown::HashMap::new(),
            },
            now: origin,
            events: Vec::new(),
        }
    }

    fn rng_seed(seed: u64) -> [u8; 32] {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s
    }

    /// A node key drawn from the simulator's RNG (use it to know ids before adding nodes).
    pub fn gen_key(&mut self) -> NodeKey {
        let mut s = [0u8; 32];
        self.rng.fill_bytes(&mut s);
        NodeKey::from_seed(s)
    }

    fn shard_of(&self, i: usize) -> &Shard {
        &self.shards[i % self.shards.len()]
    }

    fn node(&self, i: usize) -> &Node {
        self.shard_of(i).node(i)
    }

    /// Runs `f` on node `i`'s shard at the current time, then hands over what it sent to
    /// other shards and what it recorded.
    fn on_shard<R>(&mut self, i: usize, f: impl FnOnce(&mut Shard, &World) -> R) -> R {
        let k = i % self.shards.len();
        let shard = &mut self.shards[k];
        shard.now = self.now;
        let r = f(shard, &self.w);
        self.now = self.now.max(shard.now);
        self.exchange(false);
        r
    }

    /// Moves every outbox's events to the shards of their nodes, and the recorded events to
    /// [`Sim::events`] (`sort`: in time order, then node order, as after a window).
    fn exchange(&mut self, sort: bool) {
        let count = self.shards.len();
        for k in 0..count {
            let out = std::mem::take(&mut self.shards[k].outbox);
            for q in out {
                self.shards[q.ev.node() % count].accept(q);
            }
        }
        let start = self.events.len();
        for shard in &mut self.shards {
            self.events.append(&mut shard.events);
        }
        if sort {
            self.events[start..].sort_by_key(|r| (r.at, r.node));
        }
    }

    /// Makes room for `n` more nodes, so adding them moves no node (a node is over 4 KiB, and
    /// a vector that doubles keeps up to half of its room spare).
    pub fn reserve_nodes(&mut self, n: usize) {
        let count = self.shards.len();
        let next = self.len();
        for (i, shard) in self.shards.iter_mut().enumerate() {
            // Node `j` goes to shard `j % count`.
            let mine = (next..next + n).filter(|j| j % count == i).count();
            shard.nodes.reserve_exact(mine);
        }
        self.w.ids.reserve_exact(n);
        self.w.addrs.reserve_exact(n);
        self.w.partition.reserve_exact(n);
        self.w.by_addr.reserve(n);
    }

    /// Adds a node listening on `config.listen_addr` and starts its engine now.
    /// Panics if the address is taken or the config is invalid (a test bug).
    pub fn add_node(&mut self, config: EngineConfig, key: NodeKey) -> usize {
        let addr = config.listen_addr;
        let idx = self.push_node(addr, Node::new(config, key, None, self.node_rng()));
        self.start_node(idx);
        idx
    }

    /// Adds a guest machine at `addr` (with `key` as its identity for [`Sim::node_id`]) and
    /// carries out its first outputs. Panics if the address is taken.
    pub fn add_guest(&mut self, addr: SocketAddr, key: NodeKey, guest: Box<dyn Guest>) -> usize {
        let node = Node::new(EngineConfig::default(), key, Some(guest), self.node_rng());
        let idx = self.push_node(addr, node);
        self.on_shard(idx, |s, w| s.drain(w, idx));
        idx
    }

    /// The RNG of the next node: the simulator's seed on the node's own stream.
    fn node_rng(&self) -> ChaCha20Rng {
        let mut rng = ChaCha20Rng::from_seed(Self::rng_seed(self.w.cfg.seed));
        rng.set_stream(1 + self.len() as u64);
        rng
    }

    fn push_node(&mut self, addr: SocketAddr, node: Node) -> usize {
        assert!(!self.w.by_addr.contains_key(&addr), "address {addr} taken");
        let idx = self.len();
        self.w.ids.push(node.key.node_id());
        self.w.addrs.push(addr);
        self.w.partition.push(0);
        self.w.by_addr.insert(addr, idx);
        let count = self.shards.len();
        self.shards[idx % count].nodes.push(node);
        idx
    }

    /// Guest `i` (see [`Sim::add_guest`]); downcast it with `as &dyn Any`.
    #[must_use]
    pub fn guest(&self, i: usize) -> Option<&dyn Guest> {
        if i >= self.len() {
            return None;
        }
        self.node(i).guest.as_deref()
    }

    /// Calls `f` on guest `i` at the current time, then carries out its outputs.
    pub fn with_guest<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut dyn Guest, Instant) -> R,
    ) -> Option<R> {
        if i >= self.len() {
            return None;
        }
        self.on_shard(i, |s, w| {
            let now = s.now;
            let r = s.node_mut(i).guest.as_deref_mut().map(|g| f(g, now));
            s.drain(w, i);
            r
        })
    }

    fn start_node(&mut self, idx: usize) {
        self.start_node_with(idx, |_| {});
    }

    fn start_node_with(&mut self, idx: usize, setup: impl FnOnce(&mut Engine)) {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let unix = self.unix_now();
        self.on_shard(idx, |s, w| {
            let now = s.now;
            let node = s.node_mut(idx);
            let mut engine = Engine::new(node.config.clone(), node.key.clone(), seed, now, unix)
                .expect("valid engine config");
            setup(&mut engine);
            node.engine = Some(engine);
            node.peer_epoch += 1;
            s.drain(w, idx);
        });
    }

    /// The unix time now.
    #[must_use]
    pub fn unix_now(&self) -> u64 {
        self.w.cfg.unix_start + self.elapsed().as_secs()
    }

    /// Number of nodes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.w.addrs.len()
    }

    /// Whether there are no nodes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.w.addrs.is_empty()
    }

    /// The engine of node `i` (`None` while stopped).
    #[must_use]
    pub fn engine(&self, i: usize) -> Option<&Engine> {
        if i >= self.len() {
            return None;
        }
        self.node(i).engine.as_ref()
    }

    /// Calls `f` on node `i`'s engine at the current time, then carries out its outputs.
    pub fn with_engine<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Engine, Instant) -> R,
    ) -> Option<R> {
        if i >= self.len() {
            return None;
        }
        self.on_shard(i, |s, w| {
            let now = s.now;
            let r = s.node_mut(i).engine.as_mut().map(|e| f(e, now));
            s.drain(w, i);
            s.resume_stalled(w, i);
            r
        })
    }

    /// How many `PeerUp` and `PeerDown` events node `i` has emitted (plus its starts and
    /// stops): while it stays the same, the node's set of peers has not changed (a caller
    /// watching many nodes re-reads only those whose epoch moved).
    #[must_use]
    pub fn peer_epoch(&self, i: usize) -> u64 {
        self.node(i).peer_epoch
    }

    /// Node `i`'s id.
    #[must_use]
    pub fn node_id(&self, i: usize) -> NodeId {
        self.w.ids[i]
    }

    /// Node `i`'s address.
    #[must_use]
    pub fn net_addr(&self, i: usize) -> NetAddr {
        NetAddr::new(self.node_id(i), self.w.addrs[i])
    }

    /// Current virtual time.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.w.base)
    }

    /// Steps run so far.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.shards.iter().map(|s| s.steps).sum()
    }

    /// The recorded events (with `record_events`), in the order they ran ([`Sim::step`]) or,
    /// window by window, in time and node order ([`Sim::run_windows`]).
    #[must_use]
    pub fn events(&self) -> &[Recorded] {
        &self.events
    }

    /// A hash of every engine output so far, node by node, each in order with its time:
    /// events, dials (with the address), closes and transmitted bytes. Two runs with the same
    /// seed and the same calls give the same hash, in any process and on any number of
    /// threads.
    #[must_use]
    pub fn trace_hash(&self) -> u64 {
        let mut h = SipHasher13::new_with_keys(0, 0);
        for i in 0..self.len() {
            h.write_u64(self.node(i).trace.finish());
        }
        h.finish()
    }

    // ------------------------------------------------------------------ faults

    /// Stops node `i`: its connections reset, dials to it are refused until [`Sim::restart`].
    pub fn stop(&mut self, i: usize) {
        let now = self.now;
        // The other end of each of its connections, and when the reset reaches it (after
        // the bytes `i` sent before).
        let mut ends: std::collections::BTreeMap<Ep, Instant> = std::collections::BTreeMap::new();
        for shard in &mut self.shards {
            #[allow(clippy::disallowed_methods)] // into an ordered map
            for (ep, p) in &mut shard.pipes {
                if ep.0 == i && p.open {
                    let at = ends.entry(p.to).or_insert(now + p.latency);
                    *at = (*at).max(p.last);
                } else if p.to.0 == i && ep.0 != i && p.open {
                    ends.entry(*ep).or_insert(now + p.latency);
                }
                if ep.0 == i || p.to.0 == i {
                    p.open = false;
                }
            }
        }
        self.on_shard(i, |s, w| {
            let node = s.node_mut(i);
            node.engine = None;
            node.peer_epoch += 1;
            for (to, at) in ends {
                let cause = CloseCause::Reset;
                s.push(i, at, Ev::Closed { ep: to, cause });
            }
            // The stopped engine's connection ids die with it: forget them and anything in
            // flight to them, so a restarted engine (which numbers connections from 1 again)
            // starts clean.
            s.forget_node(i);
            s.trace_u64(w, i, &[0xdead]);
        });
        for shard in &mut self.shards {
            shard.retain_queued(|q| match &q.ev {
                Ev::Connect { from, .. } => from.0 != i,
                Ev::Connected { ep, .. }
                | Ev::DialFailed { ep, .. }
                | Ev::Deliver { ep, .. }
                | Ev::Sent { ep, .. }
                | Ev::Closed { ep, .. } => ep.0 != i,
            });
        }
    }

    /// Restarts a stopped node with a fresh engine (same key and config).
    pub fn restart(&mut self, i: usize) {
        self.restart_with(i, |_| {});
    }

    /// Restarts a stopped node with a fresh engine (same key and config) that `setup` prepares
    /// before its first output, as a driver does at start (load the saved address book,
    /// anchors).
    pub fn restart_with(&mut self, i: usize, setup: impl FnOnce(&mut Engine)) {
        if self.node(i).engine.is_none() {
            self.start_node_with(i, setup);
        }
    }

    /// The open pipes' sending endpoints, in endpoint order.
    fn open_pipes(&self, keep: impl Fn(Ep, Ep) -> bool) -> Vec<Ep> {
        let mut open: Vec<Ep> = Vec::new();
        for shard in &self.shards {
            #[allow(clippy::disallowed_methods)] // sorted below
            open.extend(
                shard
                    .pipes
                    .iter()
                    .filter(|(ep, p)| p.open && keep(**ep, p.to))
                    .map(|(ep, _)| *ep),
            );
        }
        open.sort_unstable();
        open
    }

    /// Puts nodes in partition groups: dials between different groups are refused and
    /// existing connections between them reset. Group 0 is the default.
    pub fn partition(&mut self, groups: &[(usize, u32)]) {
        for &(i, g) in groups {
            self.w.partition[i] = g;
        }
        let part = &self.w.partition;
        let cross = self.open_pipes(|ep, to| part[ep.0] != part[to.0]);
        for ep in cross {
            self.reset_ep(ep);
        }
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        self.w.partition.fill(0);
    }

    /// Resets the connection at endpoint `(node, conn)` (both sides see `Closed{Reset}`).
    pub fn reset_ep(&mut self, ep: Ep) {
        let count = self.shards.len();
        let Some(p) = self.shards[ep.0 % count].pipes.get_mut(&ep) else {
            return;
        };
        let to = p.to;
        p.open = false;
        if let Some(back) = self.shards[to.0 % count].pipes.get_mut(&to) {
            back.open = false;
        }
        self.on_shard(ep.0, |s, _| {
            let now = s.now;
            let cause = CloseCause::Reset;
            s.push(ep.0, now, Ev::Closed { ep, cause });
            s.push(ep.0, now, Ev::Closed { ep: to, cause });
        });
    }

    /// Resets the `n`-th open connection (modulo their number, in endpoint order); false if
    /// there is none.
    pub fn reset_nth(&mut self, n: usize) -> bool {
        let open = self.open_pipes(|_, _| true);
        if open.is_empty() {
            return false;
        }
        self.reset_ep(open[n % open.len()]);
        true
    }

    /// Sets the refusal rate of dials to reachable nodes (per million).
    pub fn set_refuse_ppm(&mut self, ppm: u32) {
        self.w.cfg.refuse_ppm = ppm;
    }

    /// Makes node `i` a slow reader: send credit returns `delay` late.
    pub fn set_slow_reader(&mut self, i: usize, delay: Duration) {
        let count = self.shards.len();
        self.shards[i % count].node_mut(i).sent_delay = delay;
    }

    /// From now on every byte node `i` transmits is garbage.
    pub fn set_corrupt(&mut self, i: usize, on: bool) {
        let count = self.shards.len();
        self.shards[i % count].node_mut(i).corrupt = on;
    }

    /// Flips one byte of the next pending delivery (fuzzing).
    pub fn corrupt_next_delivery(&mut self, xor: u8) {
        let mut queues: Vec<Vec<Queued>> = self.shards.iter_mut().map(Shard::take_queue).collect();
        let next = queues
            .iter_mut()
            .flatten()
            .filter(|q| matches!(&q.ev, Ev::Deliver { bytes, .. } if !bytes.is_empty()))
            .min_by_key(|q| (q.at, q.by, q.seq));
        if let Some(Queued {
            ev: Ev::Deliver { bytes, .. },
            ..
        }) = next
        {
            let mut v = bytes.to_vec();
            v[0] ^= xor | 1;
            *bytes = bytes::Bytes::from(v);
        }
        for (shard, q) in self.shards.iter_mut().zip(queues) {
            shard.restore_queue(q);
        }
    }

    /// Jumps the clock forward by `d` (timers then fire late, as after a suspend).
    pub fn jump(&mut self, d: Duration) {
        self.now += d;
    }

    // ------------------------------------------------------------------ running

    /// The shard whose next step is the earliest (a delivery before a deadline at the same
    /// time, then the lowest shard), and that step's time.
    fn next(&self) -> Option<(usize, Instant)> {
        self.shards
            .iter()
            .enumerate()
            .filter_map(|(k, s)| s.next().map(|n| (n, k)))
            .min()
            .map(|((t, _), k)| (k, t))
    }

    /// Runs one step: the earliest delivery or engine deadline. False when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some((k, _)) = self.next() else {
            return false;
        };
        let modelled = self.w.cfg.modelled_crypto;
        let shard = &mut self.shards[k];
        shard.now = self.now;
        let w = &self.w;
        crate::crypto::with_modelled_crypto(modelled, || shard.step(w));
        self.now = self.now.max(shard.now);
        self.exchange(false);
        true
    }

    /// Runs everything due within the next `d` of virtual time, window by window: each window
    /// is shorter than the minimum link latency ([`SimConfig::latency`]), so nothing a node
    /// does in it reaches another shard within it, and the shards of a window run side by
    /// side on [`SimConfig::threads`] threads. The clock then stands at the end of `d`.
    /// Returns the steps run. The result is the same as stepping one by one, and the same for
    /// any number of threads; with a zero latency the steps run one by one.
    pub fn run_windows(&mut self, d: Duration) -> u64 {
        let start = self.steps();
        let end = self.now + d;
        let lookahead = self.w.cfg.latency;
        while let Some((_, t)) = self.next() {
            if t > end {
                break;
            }
            if lookahead.is_zero() {
                self.step();
                continue;
            }
            // What a step at `from` sends to another node arrives at `from + lookahead` or
            // later: after this window.
            let from = t.max(self.now);
            let limit = (from + lookahead - Duration::from_nanos(1)).min(end);
            self.run_window(limit);
        }
        self.now = self.now.max(end);
        self.steps() - start
    }

    /// Runs every shard through `limit` on [`SimConfig::threads`] threads, each taking the next
    /// shard left (the busiest first), then exchanges what they sent.
    fn run_window(&mut self, limit: Instant) {
        let now = self.now;
        let modelled = self.w.cfg.modelled_crypto;
        let threads = self.w.cfg.threads.max(1);
        let w = &self.w;
        let mut busy: Vec<&mut Shard> = self
            .shards
            .iter_mut()
            .filter(|s| s.next().is_some_and(|(t, _)| t <= limit))
            .collect();
        busy.sort_by_key(|s| std::cmp::Reverse(s.pending()));
        let run = |s: &mut Shard| {
            s.now = now;
            crate::crypto::with_modelled_crypto(modelled, || s.run_through(w, limit));
        };
        if threads == 1 || busy.len() == 1 {
            busy.into_iter().for_each(run);
        } else {
            let left = std::sync::Mutex::new(busy.into_iter());
            let work = || {
                while let Some(s) = left.lock().ok().and_then(|mut l| l.next()) {
                    run(s);
                }
            };
            std::thread::scope(|scope| {
                for _ in 1..threads {
                    scope.spawn(work);
                }
                work();
            });
        }
        self.now = self
            .shards
            .iter()
            .map(|s| s.now)
            .fold(self.now, Instant::max);
        self.exchange(true);
    }

    /// Steps until `pred` holds (checked before each step), at most `max_steps` steps.
    pub fn run_until(
        &mut self,
        mut pred: impl FnMut(&Sim) -> bool,
        max_steps: u64,
    ) -> Result<u64, SimError> {
        let start = self.steps();
        loop {
            let done = self.steps() - start;
            if pred(self) {
                return Ok(done);
            }
            if done >= max_steps {
                return Err(SimError::Exhausted(max_steps));
            }
            if !self.step() {
                let done = self.steps() - start;
                return if pred(self) {
                    Ok(done)
                } else {
                    Err(SimError::Idle(done))
                };
            }
        }
    }

    /// Runs until `d` of virtual time has passed (or nothing is left), at most `max_steps`.
    pub fn run_for(&mut self, d: Duration, max_steps: u64) -> Result<u64, SimError> {
        let end = self.now + d;
        let r = self.run_until(|s| s.next().is_none_or(|(_, t)| t > end), max_steps);
        if r.is_ok() && self.now < end {
            self.now = end;
        }
        r
    }

    // ------------------------------------------------------------------ invariants

    /// Checks node `i`'s invariants; panics with a description when one is broken.
    pub fn check_node(&self, i: usize) {
        self.shard_of(i).check_node(i);
    }

    /// Checks every node's invariants.
    pub fn check_all(&self) {
        for i in 0..self.len() {
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
