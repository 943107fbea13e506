//! One shard of the simulator: the nodes `i` with `i % shards == index`, their pending
//! deliveries and deadlines, and the pipes and endpoints of their connections.
//!
//! A shard runs its own nodes' steps and reads nothing another shard changes. What one of its
//! nodes sends to a node of another shard arrives at least the minimum link latency later; it
//! waits in the shard's outbox until the simulator hands it over. So the shards of a window
//! shorter than that latency can run side by side ([`Sim::run_windows`](super::Sim::run_windows)).

use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::hash::Hasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use siphasher::sip::SipHasher13;

use super::{Guest, Recorded};
use crate::engine::{CloseCause, DialFailure, Engine, EngineConfig, Event, Input, Origin, Output};
use crate::identity::NodeKey;
use crate::ids::{ConnId, NodeId};

/// A connection endpoint: node index and that node's connection id.
pub(super) type Ep = (usize, ConnId);

/// What every shard reads and no step changes: the settings, the clock's zero and the nodes'
/// names, addresses and partition groups.
pub(super) struct World {
    pub(super) cfg: super::SimConfig,
    pub(super) base: Instant,
    pub(super) ids: Vec<NodeId>,
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) partition: Vec<u32>,
    pub(super) by_addr: hashbrown::HashMap<SocketAddr, usize>,
}

impl World {
    fn link_latency(&self, rng: &mut ChaCha20Rng) -> Duration {
        let j = u64::try_from(self.cfg.latency_jitter.as_micros()).unwrap_or(0);
        let extra = if j == 0 { 0 } else { rng.next_u64() % j };
        self.cfg.latency + Duration::from_micros(extra)
    }
}

/// An event in a queue, ordered by its time, then by the node whose step produced it and that
/// node's count of produced events: one total order, whatever the heap's layout and however
/// the nodes are split into shards.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) at: Instant,
    pub(super) by: usize,
    pub(super) seq: u64,
    pub(super) ev: Ev,
}

impl Queued {
    fn key(&self) -> (Instant, usize, u64) {
        (self.at, self.by, self.seq)
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
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
        other.key().cmp(&self.key())
    }
}

#[derive(Debug)]
pub(super) enum Ev {
    /// A dial reaches `to`.
    Connect {
        from: Ep,
        to: usize,
    },
    /// The dialler learns its dial was accepted at `back`, over a link of `latency`.
    Connected {
        ep: Ep,
        back: Ep,
        latency: Duration,
    },
    DialFailed {
        ep: Ep,
        error: DialFailure,
    },
    Deliver {
        ep: Ep,
        bytes: Bytes,
    },
    Sent {
        ep: Ep,
        len: usize,
    },
    Closed {
        ep: Ep,
        cause: CloseCause,
    },
}

impl Ev {
    /// The node it happens at.
    pub(super) fn node(&self) -> usize {
        match self {
            Ev::Connect { to, .. } => *to,
            Ev::Connected { ep, .. }
            | Ev::DialFailed { ep, .. }
            | Ev::Deliver { ep, .. }
            | Ev::Sent { ep, .. }
            | Ev::Closed { ep, .. } => ep.0,
        }
    }
}

/// One direction of a connection, kept by the sending end.
pub(super) struct Pipe {
    pub(super) to: Ep,
    pub(super) latency: Duration,
    /// When the last byte sent so far arrives: later bytes never overtake it.
    pub(super) last: Instant,
    pub(super) open: bool,
}

/// A live endpoint (removed at its terminal input).
#[derive(Default)]
pub(super) struct EpState {
    close_out: bool,
    /// Bytes in flight to a connection whose engine does not read it now (a full delivery
    /// window): the socket buffer of a stalled TCP stream.
    stash: VecDeque<Bytes>,
    /// The close that arrived behind stashed bytes.
    close_after: Option<CloseCause>,
}

/// A simulated host: an engine or a guest, and what the network does to it.
pub(super) struct Node {
    pub(super) engine: Option<Engine>,
    pub(super) guest: Option<Box<dyn Guest>>,
    pub(super) config: EngineConfig,
    pub(super) key: NodeKey,
    deadline: Option<Instant>,
    pub(super) sent_delay: Duration,
    pub(super) corrupt: bool,
    /// PeerUp and PeerDown events emitted so far (see [`Sim::peer_epoch`](super::Sim::peer_epoch)).
    pub(super) peer_epoch: u64,
    /// The node's own draws: link latencies, refusals, chunk boundaries, garbage.
    rng: ChaCha20Rng,
    /// The node's outputs so far, with their times.
    pub(super) trace: SipHasher13,
    /// Events produced by its steps so far (the queue's tie-break).
    seq: u64,
}

impl Node {
    pub(super) fn new(
        config: EngineConfig,
        key: NodeKey,
        guest: Option<Box<dyn Guest>>,
        rng: ChaCha20Rng,
    ) -> Node {
        Node {
            engine: None,
            guest,
            config,
            key,
            deadline: None,
            sent_delay: Duration::ZERO,
            corrupt: false,
            peer_epoch: 0,
            rng,
            trace: SipHasher13::new_with_keys(0, 0),
            seq: 0,
        }
    }
}

/// The nodes `i` with `i % count == index` and everything in flight to them.
pub(super) struct Shard {
    index: usize,
    count: usize,
    pub(super) nodes: Vec<Node>,
    /// The shard's clock: the time of the step it runs.
    pub(super) now: Instant,
    queue: BinaryHeap<Queued>,
    timers: BTreeSet<(Instant, usize)>,
    pub(super) pipes: hashbrown::HashMap<Ep, Pipe>,
    pub(super) eps: hashbrown::HashMap<Ep, EpState>,
    /// Events for other shards' nodes, handed over between steps or windows.
    pub(super) outbox: Vec<Queued>,
    /// Recorded events (with `record_events`), collected by the simulator.
    pub(super) events: Vec<Recorded>,
    pub(super) steps: u64,
    touched: Vec<usize>,
}

impl Shard {
    pub(super) fn new(index: usize, count: usize, now: Instant) -> Shard {
        Shard {
            index,
            count,
            nodes: Vec::new(),
            now,
            queue: BinaryHeap::new(),
            timers: BTreeSet::new(),
            pipes: hashbrown::HashMap::new(),
            eps: hashbrown::HashMap::new(),
            outbox: Vec::new(),
            events: Vec::new(),
            steps: 0,
            touched: Vec::new(),
        }
    }

    pub(super) fn node(&self, i: usize) -> &Node {
        debug_assert_eq!(i % self.count, self.index);
        &self.nodes[i / self.count]
    }

    pub(super) fn node_mut(&mut self, i: usize) -> &mut Node {
        debug_assert_eq!(i % self.count, self.index);
        &mut self.nodes[i / self.count]
    }

    /// Schedules `ev` at `at`, produced by node `by`'s step (one of this shard's).
    pub(super) fn push(&mut self, by: usize, at: Instant, ev: Ev) {
        let node = self.node_mut(by);
        node.seq += 1;
        let q = Queued {
            at,
            by,
            seq: node.seq,
            ev,
        };
        self.accept(q);
    }

    /// Takes an event for one of this shard's nodes, or puts it in the outbox.
    pub(super) fn accept(&mut self, q: Queued) {
        if q.ev.node() % self.count == self.index {
            self.queue.push(q);
        } else {
            self.outbox.push(q);
        }
    }

    /// The time of the next step and whether it is a deadline (a delivery at the same time
    /// goes first).
    pub(super) fn next(&self) -> Option<(Instant, bool)> {
        let ev = self.queue.peek().map(|q| (q.at, false));
        let timer = self.timers.first().map(|(t, _)| (*t, true));
        match (ev, timer) {
            (Some(e), Some(t)) => Some(e.min(t)),
            (e, t) => e.or(t),
        }
    }

    /// Pending events and deadlines.
    pub(super) fn pending(&self) -> usize {
        self.queue.len() + self.timers.len()
    }

    /// Removes the pending events `keep` rejects.
    pub(super) fn retain_queued(&mut self, keep: impl FnMut(&Queued) -> bool) {
        self.queue.retain(keep);
    }

    /// The pending events, for a caller that changes them and puts them back.
    pub(super) fn take_queue(&mut self) -> Vec<Queued> {
        std::mem::take(&mut self.queue).into_vec()
    }

    /// Puts back what [`Shard::take_queue`] took.
    pub(super) fn restore_queue(&mut self, queued: Vec<Queued>) {
        self.queue = BinaryHeap::from(queued);
    }

    pub(super) fn set_timer(&mut self, i: usize, at: Option<Instant>) {
        let node = self.node_mut(i);
        let old = node.deadline;
        if old == at {
            return;
        }
        node.deadline = at;
        if let Some(t) = old {
            self.timers.remove(&(t, i));
        }
        if let Some(t) = at {
            self.timers.insert((t, i));
        }
    }

    pub(super) fn trace_u64(&mut self, w: &World, i: usize, words: &[u64]) {
        let t = u64::try_from(self.now.saturating_duration_since(w.base).as_nanos())
            .unwrap_or(u64::MAX);
        let trace = &mut self.node_mut(i).trace;
        trace.write_u64(t);
        for word in words {
            trace.write_u64(*word);
        }
    }

    fn trace_ip(&mut self, i: usize, ip: std::net::IpAddr) {
        let trace = &mut self.node_mut(i).trace;
        match ip {
            std::net::IpAddr::V4(v4) => trace.write(&v4.octets()),
            std::net::IpAddr::V6(v6) => trace.write(&v6.octets()),
        }
    }

    fn trace_id(&mut self, i: usize, id: &NodeId) {
        self.node_mut(i).trace.write(id.as_bytes());
    }

    /// Runs the earliest delivery or deadline. False when nothing is left.
    pub(super) fn step(&mut self, w: &World) -> bool {
        let Some((_, timer)) = self.next() else {
            return false;
        };
        self.touched.clear();
        if timer {
            let Some((t, i)) = self.timers.pop_first() else {
                return false;
            };
            self.node_mut(i).deadline = None;
            self.now = self.now.max(t);
            let now = self.now;
            let node = self.node_mut(i);
            if let Some(e) = node.engine.as_mut() {
                e.handle_timeout(now);
            } else if let Some(g) = node.guest.as_deref_mut() {
                g.handle_timeout(now);
            }
            self.drain(w, i);
        } else {
            let Some(q) = self.queue.pop() else {
                return false;
            };
            self.now = self.now.max(q.at);
            self.run_event(w, q.ev);
        }
        self.steps += 1;
        if w.cfg.check_invariants {
            let touched = std::mem::take(&mut self.touched);
            for &i in &touched {
                self.check_node(i);
            }
            self.touched = touched;
        }
        true
    }

    /// Runs every step due at or before `limit`; returns how many.
    pub(super) fn run_through(&mut self, w: &World, limit: Instant) -> u64 {
        let start = self.steps;
        while self.next().is_some_and(|(t, _)| t <= limit) {
            self.step(w);
        }
        self.steps - start
    }

    fn terminal(&self, ep: &Ep) -> bool {
        !self.eps.contains_key(ep)
    }

    pub(super) fn input(&mut self, w: &World, ep: Ep, input: Input) {
        let now = self.now;
        let node = self.node_mut(ep.0);
        if let Some(g) = node.guest.as_deref_mut() {
            g.handle_input(now, input);
            self.drain(w, ep.0);
            return;
        }
        let Some(e) = node.engine.as_mut() else {
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
        self.drain(w, ep.0);
    }

    pub(super) fn run_event(&mut self, w: &World, ev: Ev) {
        match ev {
            Ev::Connect { from, to } => {
                let now = self.now;
                let node = self.node_mut(to);
                let lat = w.link_latency(&mut node.rng);
                let reachable = node.engine.is_some()
                    && w.partition[to] == w.partition[from.0]
                    && !(w.cfg.refuse_ppm > 0
                        && node.rng.next_u32() % 1_000_000 < w.cfg.refuse_ppm);
                let accepted = if reachable {
                    node.engine.as_mut().map(|e| e.accept(now, w.addrs[from.0]))
                } else {
                    None
                };
                let Some(Ok(cj)) = accepted else {
                    let error = DialFailure::Refused;
                    return self.push(to, now + lat, Ev::DialFailed { ep: from, error });
                };
                let back: Ep = (to, cj);
                self.eps.insert(back, EpState::default());
                let pipe = Pipe {
                    to: from,
                    latency: lat,
                    last: now + lat,
                    open: true,
                };
                self.pipes.insert(back, pipe);
                let connected = Ev::Connected {
                    ep: from,
                    back,
                    latency: lat,
                };
                self.push(to, now + lat, connected);
                self.touched.push(to);
                self.drain(w, to);
            }
            Ev::Connected { ep, back, latency } => {
                let now = self.now;
                if self.terminal(&ep) {
                    // The dialler gave up before the accept reached it: the acceptor's
                    // connection ends.
                    let cause = CloseCause::Eof;
                    return self.push(ep.0, now + latency, Ev::Closed { ep: back, cause });
                }
                let pipe = Pipe {
                    to: back,
                    latency,
                    last: now,
                    open: true,
                };
                self.pipes.insert(ep, pipe);
                self.input(w, ep, Input::Connected { conn: ep.1 });
            }
            Ev::DialFailed { ep, error } => {
                if self.terminal(&ep) {
                    return;
                }
                self.mark_terminal(ep);
                self.input(w, ep, Input::DialFailed { conn: ep.1, error });
            }
            Ev::Deliver { ep, bytes } => {
                if self.terminal(&ep) {
                    return;
                }
                let stalled = self
                    .node(ep.0)
                    .engine
                    .as_ref()
                    .is_some_and(|e| e.delivery_stalled(ep.1));
                if let Some(s) = self.eps.get_mut(&ep)
                    && (stalled || !s.stash.is_empty())
                {
                    s.stash.push_back(bytes);
                    return;
                }
                self.input(w, ep, Input::Received { conn: ep.1, bytes });
            }
            Ev::Sent { ep, len } => {
                if self.terminal(&ep) {
                    return;
                }
                self.input(w, ep, Input::Sent { conn: ep.1, len });
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
                self.close_pipe(ep);
                self.input(w, ep, Input::Closed { conn: ep.1, cause });
            }
        }
    }

    /// Closes `ep`'s sending pipe, if open: the remote reads the end after the bytes in flight.
    fn close_pipe(&mut self, ep: Ep) {
        let now = self.now;
        if let Some(p) = self.pipes.get_mut(&ep)
            && p.open
        {
            p.open = false;
            let to = p.to;
            let at = (now + p.latency).max(p.last);
            let cause = CloseCause::Eof;
            self.push(ep.0, at, Ev::Closed { ep: to, cause });
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

    /// Carries out node `i`'s outputs.
    pub(super) fn drain(&mut self, w: &World, i: usize) {
        if !self.touched.contains(&i) {
            self.touched.push(i);
        }
        loop {
            let node = self.node_mut(i);
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
                    self.trace_u64(w, i, &[9, conn.0, data.len() as u64]);
                    self.node_mut(i).trace.write(&data);
                    self.transmit(w, i, conn, data);
                }
                // The simulator has no DNS: a dial by name fails as unresolved.
                Output::DialName { conn, .. } => {
                    self.eps.insert((i, conn), EpState::default());
                    let lat = w.link_latency(&mut self.node_mut(i).rng);
                    let error = DialFailure::Unresolved;
                    self.push(
                        i,
                        now + lat,
                        Ev::DialFailed {
                            ep: (i, conn),
                            error,
                        },
                    );
                }
                Output::Dial { conn, addr } => {
                    self.trace_u64(w, i, &[1, conn.0, u64::from(addr.port())]);
                    self.trace_ip(i, addr.ip());
                    if w.cfg.check_invariants {
                        self.check_dial(w, i, addr);
                    }
                    self.eps.insert((i, conn), EpState::default());
                    let lat = w.link_latency(&mut self.node_mut(i).rng);
                    let from = (i, conn);
                    let ev = match w.by_addr.get(&addr).copied() {
                        Some(to) => Ev::Connect { from, to },
                        None => Ev::DialFailed {
                            ep: from,
                            error: DialFailure::Unreachable,
                        },
                    };
                    self.push(i, now + lat, ev);
                }
                Output::Close { conn } => {
                    self.trace_u64(w, i, &[2, conn.0]);
                    let ep = (i, conn);
                    let Some(s) = self.eps.get_mut(&ep) else {
                        panic!("node {i} closed {conn}, which is unknown or already closed");
                    };
                    assert!(!s.close_out, "node {i} closed {conn} twice");
                    s.close_out = true;
                    self.close_pipe(ep);
                    let cause = CloseCause::Local;
                    self.push(i, now, Ev::Closed { ep, cause });
                }
                Output::Event(ev) => self.record(w, i, ev),
            }
        }
        let node = self.node(i);
        let t = match (node.engine.as_ref(), node.guest.as_deref()) {
            (Some(e), _) => e.poll_timeout(),
            (None, Some(g)) => g.poll_timeout(),
            (None, None) => None,
        };
        self.set_timer(i, t);
    }

    fn transmit(&mut self, w: &World, i: usize, conn: ConnId, data: Bytes) {
        let ep = (i, conn);
        let now = self.now;
        let len = data.len();
        let delay = self.node(i).sent_delay;
        self.push(i, now + delay, Ev::Sent { ep, len });
        let Some(p) = self.pipes.get(&ep) else {
            return;
        };
        if !p.open {
            return;
        }
        let (to, latency, last) = (p.to, p.latency, p.last);
        let node = self.node_mut(i);
        let data = if node.corrupt {
            let mut v = vec![0u8; len];
            node.rng.fill_bytes(&mut v);
            Bytes::from(v)
        } else {
            data
        };
        let mut at = (now + latency).max(last);
        if w.cfg.rechunk && len > 1 {
            let mut rest = data;
            let n = 1 + node.rng.next_u32() % 3;
            let mut cuts = Vec::new();
            for _ in 1..n {
                if rest.len() <= 1 {
                    break;
                }
                let cut =
                    1 + usize::try_from(node.rng.next_u64() % (rest.len() as u64 - 1)).unwrap_or(0);
                cuts.push(rest.split_to(cut));
            }
            cuts.push(rest);
            for bytes in cuts {
                self.push(i, at, Ev::Deliver { ep: to, bytes });
                at += Duration::from_micros(1);
            }
        } else {
            self.push(
                i,
                at,
                Ev::Deliver {
                    ep: to,
                    bytes: data,
                },
            );
            at += Duration::from_micros(1);
        }
        if let Some(p) = self.pipes.get_mut(&ep) {
            p.last = at;
        }
    }

    fn record(&mut self, w: &World, i: usize, ev: Event) {
        if matches!(ev, Event::PeerUp { .. } | Event::PeerDown { .. }) {
            self.node_mut(i).peer_epoch += 1;
        }
        match &ev {
            Event::PeerUp { peer, conn, .. } => {
                self.trace_u64(w, i, &[3, conn.0]);
                self.trace_id(i, peer);
            }
            Event::PeerDown { peer, .. } => {
                self.trace_u64(w, i, &[4]);
                self.trace_id(i, peer);
            }
            Event::Message { peer, payload, .. } => {
                self.trace_u64(w, i, &[5, payload.len() as u64]);
                self.trace_id(i, peer);
            }
            Event::DialFailed { addr, .. } => {
                self.trace_u64(w, i, &[6]);
                self.trace_id(i, &addr.id);
            }
            Event::AddrBookDirty => self.trace_u64(w, i, &[7]),
            Event::InboundFailed { remote, .. } => {
                self.trace_u64(w, i, &[8, u64::from(remote.port())]);
            }
            Event::SendReady { peer, channel } => {
                self.trace_u64(w, i, &[9, u64::from(channel.0)]);
                self.trace_id(i, peer);
            }
        }
        if w.cfg.record_events {
            self.events.push(Recorded {
                at: self.now.saturating_duration_since(w.base),
                node: i,
                event: ev,
            });
        }
    }

    /// Feeds stashed bytes to node `i`'s connections that read again (after `consumed`).
    pub(super) fn resume_stalled(&mut self, w: &World, i: usize) {
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
                let stalled = self
                    .node(i)
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
                    Some(bytes) => self.input(w, ep, Input::Received { conn: ep.1, bytes }),
                    None => {
                        if let Some(cause) = s.close_after.take() {
                            self.run_event(w, Ev::Closed { ep, cause });
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Forgets node `i`'s endpoints and everything in flight to them (a stopped node).
    pub(super) fn forget_node(&mut self, i: usize) {
        self.set_timer(i, None);
        self.pipes.retain(|ep, _| ep.0 != i);
        self.eps.retain(|ep, _| ep.0 != i);
    }

    // ------------------------------------------------------------------ invariants

    /// Checks node `i`'s invariants; panics with a description when one is broken.
    pub(super) fn check_node(&self, i: usize) {
        let Some(e) = self.node(i).engine.as_ref() else {
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
    fn check_dial(&self, w: &World, i: usize, addr: SocketAddr) {
        let (Some(e), Some(&to)) = (self.node(i).engine.as_ref(), w.by_addr.get(&addr)) else {
            return;
        };
        let id = w.ids[to];
        let persistent = e.config().persistent_peers.iter().any(|p| p.id == id);
        assert!(
            persistent || !e.is_banned(&id, self.now),
            "node {i} dials node {to}, which it banned (G15)"
        );
    }
}
