//! The sending side: sends parked until their channel queue has room, and the gate that lets
//! [`Handle::try_send`](crate::Handle::try_send) answer without a round trip.
//!
//! A send refused as full is parked per (peer, channel), in order. The engine emits
//! `SendReady { peer, channel }` when that queue has room again; only then is that one
//! (peer, channel) retried, so a wake never retries every parked send.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use cometmesh_core::engine::SendError;
use cometmesh_core::{ChannelId, NodeId};
use futures::channel::oneshot;

/// Where a parked send's outcome goes (`None` for `try_send`, which already returned).
pub(crate) type Reply = Option<oneshot::Sender<Result<(), SendError>>>;

/// Most sends parked at once; more are answered `Full`.
pub(crate) const MAX_PARKED: usize = 4096;

/// Most `try_send` commands on their way to the engine task at once.
const MAX_TRY_IN_FLIGHT: usize = 256;

struct Waiting {
    payload: Bytes,
    reply: Reply,
    deadline: Option<Instant>,
    seq: u64,
}

/// Sends waiting for room, per (peer, channel), in order.
#[derive(Default)]
pub(crate) struct Parked {
    queues: BTreeMap<(NodeId, ChannelId), VecDeque<Waiting>>,
    len: usize,
    deadlines: BTreeSet<(Instant, u64)>,
    seq: u64,
}

impl Parked {
    /// Whether sends to `peer` on `ch` are parked (a new one must queue behind them).
    pub(crate) fn is_parked(&self, peer: NodeId, ch: ChannelId) -> bool {
        self.queues.contains_key(&(peer, ch))
    }

    /// Parks a send; hands it back when `MAX_PARKED` are parked already.
    pub(crate) fn park(
        &mut self,
        peer: NodeId,
        ch: ChannelId,
        payload: Bytes,
        reply: Reply,
        deadline: Option<Instant>,
    ) -> Result<(), (Bytes, Reply)> {
        if self.len >= MAX_PARKED {
            return Err((payload, reply));
        }
        self.seq += 1;
        let seq = self.seq;
        if let Some(at) = deadline {
            self.deadlines.insert((at, seq));
        }
        self.len += 1;
        self.queues
            .entry((peer, ch))
            .or_default()
            .push_back(Waiting {
                payload,
                reply,
                deadline,
                seq,
            });
        Ok(())
    }

    fn forget(&mut self, w: &Waiting) {
        self.len -= 1;
        if let Some(at) = w.deadline {
            self.deadlines.remove(&(at, w.seq));
        }
    }

    /// Retries the sends parked for `peer` on `ch`, in order, until one is refused as full.
    /// Returns true when none is left parked there.
    pub(crate) fn retry(
        &mut self,
        peer: NodeId,
        ch: ChannelId,
        mut send: impl FnMut(Bytes) -> Result<(), SendError>,
    ) -> bool {
        let Some(mut q) = self.queues.remove(&(peer, ch)) else {
            return true;
        };
        while let Some(w) = q.pop_front() {
            if w.reply.as_ref().is_some_and(oneshot::Sender::is_canceled) {
                self.forget(&w);
                continue;
            }
            let Waiting {
                payload,
                reply,
                deadline,
                seq,
            } = w;
            match send(payload) {
                Err(SendError::Full(payload)) => {
                    q.push_front(Waiting {
                        payload,
                        reply,
                        deadline,
                        seq,
                    });
                    break;
                }
                r => {
                    self.len -= 1;
                    if let Some(at) = deadline {
                        self.deadlines.remove(&(at, seq));
                    }
                    answer(peer, ch, reply, r);
                }
            }
        }
        let empty = q.is_empty();
        if !empty {
            self.queues.insert((peer, ch), q);
        }
        empty
    }

    /// The earliest deadline of a parked send.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Answers `Full` (with the message) to every parked send whose deadline passed.
    pub(crate) fn expire(&mut self, now: Instant) {
        if self.next_deadline().is_none_or(|t| t > now) {
            return;
        }
        let mut expired = 0;
        self.queues.retain(|_, q| {
            q.retain_mut(|w| {
                if w.deadline.is_some_and(|t| t <= now) {
                    if let Some(r) = w.reply.take() {
                        let _ = r.send(Err(SendError::Full(std::mem::take(&mut w.payload))));
                    }
                    expired += 1;
                    false
                } else {
                    true
                }
            });
            !q.is_empty()
        });
        self.len -= expired;
        while self.deadlines.first().is_some_and(|(t, _)| *t <= now) {
            self.deadlines.pop_first();
        }
    }

    /// The peer went down: every send parked for it fails with `UnknownPeer`.
    pub(crate) fn drop_peer(&mut self, peer: NodeId) {
        let keys: Vec<(NodeId, ChannelId)> = self
            .queues
            .range((peer, ChannelId(0))..=(peer, ChannelId(u8::MAX)))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(q) = self.queues.remove(&k) {
                for w in q {
                    self.forget(&w);
                    answer(k.0, k.1, w.reply, Err(SendError::UnknownPeer));
                }
            }
        }
    }

    /// Fails every parked send (the node stops).
    pub(crate) fn clear(&mut self) {
        let peers: BTreeSet<NodeId> = self.queues.keys().map(|k| k.0).collect();
        for p in peers {
            self.drop_peer(p);
        }
    }
}

fn answer(peer: NodeId, ch: ChannelId, reply: Reply, r: Result<(), SendError>) {
    match reply {
        Some(reply) => {
            let _ = reply.send(r);
        }
        None => {
            if let Err(e) = r {
                tracing::debug!(%peer, channel = %ch, error = %e, "try_send message not sent");
            }
        }
    }
}

/// What handles may know without asking the engine task: which peers are up and which
/// (peer, channel) queues are full. Updated by the engine task on rare edges only.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    inner: Mutex<GateState>,
    /// Set when a `try_send` found the command queue full (see [`Gate::set_busy`]).
    any_busy: AtomicBool,
    /// `try_send` commands sent and not yet taken by the engine task.
    in_flight: AtomicUsize,
}

#[derive(Debug, Default)]
struct GateState {
    up: hashbrown::HashSet<NodeId>,
    /// (peer, channel) queues the engine refused as full, until their `SendReady`.
    full: hashbrown::HashSet<(NodeId, ChannelId)>,
    /// (peer, channel) pairs whose `try_send` found the node's command queue full: they get a
    /// `SendReady` once the engine task has taken the queued commands.
    busy: Vec<(NodeId, ChannelId)>,
}

/// What the gate says about a `try_send`.
pub(crate) enum Verdict {
    Go,
    UnknownPeer,
    Full,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn check(&self, peer: NodeId, ch: ChannelId) -> Verdict {
        let g = self.lock();
        if !g.up.contains(&peer) {
            Verdict::UnknownPeer
        } else if g.full.contains(&(peer, ch)) || g.busy.contains(&(peer, ch)) {
            Verdict::Full
        } else {
            Verdict::Go
        }
    }

    /// Reserves room for one `try_send` command; false when too many are on their way.
    pub(crate) fn reserve(&self) -> bool {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_TRY_IN_FLIGHT {
            self.release();
            return false;
        }
        true
    }

    /// A `try_send` command was taken (or never sent).
    pub(crate) fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn peer_up(&self, peer: NodeId) {
        self.lock().up.insert(peer);
    }

    pub(crate) fn peer_down(&self, peer: NodeId) {
        let mut g = self.lock();
        g.up.remove(&peer);
        g.full.retain(|(p, _)| *p != peer);
    }

    pub(crate) fn set_full(&self, peer: NodeId, ch: ChannelId, full: bool) {
        let mut g = self.lock();
        if full {
            g.full.insert((peer, ch));
        } else {
            g.full.remove(&(peer, ch));
        }
    }

    /// A `try_send` to `peer` on `ch` found the command queue full.
    pub(crate) fn set_busy(&self, peer: NodeId, ch: ChannelId) {
        let mut g = self.lock();
        if !g.busy.contains(&(peer, ch)) {
            g.busy.push((peer, ch));
        }
        self.any_busy.store(true, Ordering::Release);
    }

    /// The engine task took its queued commands: the busy pairs that are not full in the
    /// engine are ready again (returned, for their `SendReady`).
    pub(crate) fn take_busy(&self) -> Vec<(NodeId, ChannelId)> {
        if !self.any_busy.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        let mut g = self.lock();
        let busy = std::mem::take(&mut g.busy);
        busy.into_iter()
            .filter(|k| g.up.contains(&k.0) && !g.full.contains(k))
            .collect()
    }

    pub(crate) fn clear(&self) {
        let mut g = self.lock();
        g.up.clear();
        g.full.clear();
    }
}
