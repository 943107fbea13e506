//! The sending side: sends parked until their channel queue has room, and the gate that lets
//! [`Handle::try_send`](crate::Handle::try_send) answer without a round trip.
//!
//! A send refused as full is parked per (peer, channel), in order. The engine emits
//! `SendReady { peer, channel }` when that queue has room again; only then is that one
//! (peer, channel) retried, so a wake never retries every parked send.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Most `try_send` messages on their way to the engine task at once (the mailbox's bound).
pub(crate) const MAX_TRY_IN_FLIGHT: usize = 1024;

/// A `try_send` message in the mailbox, waiting for the engine task.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) peer: NodeId,
    pub(crate) channel: ChannelId,
    pub(crate) payload: Bytes,
}

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
/// (peer, channel) queues are full (updated by the engine task on rare edges only), and the
/// mailbox of `try_send` messages: a handle checks and queues under one lock, and the engine
/// task takes the whole mailbox per wake, so a burst of sends costs one wake, not one each.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    inner: Mutex<GateState>,
    /// Set when a `try_send` found the mailbox full (see [`Gate::set_busy`]).
    any_busy: AtomicBool,
    /// Whether the mailbox holds messages (read without the lock by the engine task).
    has_mail: AtomicBool,
}

#[derive(Debug, Default)]
struct GateState {
    up: hashbrown::HashSet<NodeId>,
    /// (peer, channel) queues the engine refused as full, until their `SendReady`.
    full: hashbrown::HashSet<(NodeId, ChannelId)>,
    /// (peer, channel) pairs whose `try_send` found the mailbox full: they get a
    /// `SendReady` once the engine task has taken the mailbox.
    busy: Vec<(NodeId, ChannelId)>,
    /// `try_send` messages not yet taken by the engine task, in order; at most
    /// [`MAX_TRY_IN_FLIGHT`].
    mail: VecDeque<Queued>,
}

/// What the gate did with a `try_send`.
pub(crate) enum Verdict {
    /// Queued in the mailbox; `wake`: the mailbox was empty, the engine task must be woken.
    Queued { wake: bool },
    /// The peer is not up; the message is handed back.
    UnknownPeer,
    /// The (peer, channel) queue is full, or the mailbox is (then the pair is marked busy and
    /// the engine task must be woken); the message is handed back.
    Full { payload: Bytes, wake: bool },
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a `try_send` and, if the gate lets it through, queues it in the mailbox.
    pub(crate) fn submit(&self, peer: NodeId, channel: ChannelId, payload: Bytes) -> Verdict {
        let mut g = self.lock();
        if !g.up.contains(&peer) {
            return Verdict::UnknownPeer;
        }
        if g.full.contains(&(peer, channel)) || g.busy.contains(&(peer, channel)) {
            return Verdict::Full {
                payload,
                wake: false,
            };
        }
        if g.mail.len() >= MAX_TRY_IN_FLIGHT {
            g.busy.push((peer, channel));
            self.any_busy.store(true, Ordering::Release);
            return Verdict::Full {
                payload,
                wake: true,
            };
        }
        let wake = g.mail.is_empty();
        g.mail.push_back(Queued {
            peer,
            channel,
            payload,
        });
        self.has_mail.store(true, Ordering::Release);
        Verdict::Queued { wake }
    }

    /// Moves every queued `try_send` message into `into` (in order); cheap when there is none.
    pub(crate) fn take_mail(&self, into: &mut VecDeque<Queued>) {
        if !self.has_mail.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut g = self.lock();
        if into.is_empty() {
            // Swap the buffers: the mailbox keeps the (empty) allocation of `into`.
            std::mem::swap(into, &mut g.mail);
        } else {
            into.extend(g.mail.drain(..));
        }
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

    /// The engine task took the mailbox: the busy pairs that are not full in the
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
        g.mail.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 20])
    }

    const CH: ChannelId = ChannelId(1);

    #[test]
    fn mailbox_wakes_once_per_burst_and_keeps_order() {
        let gate = Gate::default();
        gate.peer_up(id(1));
        let mut wakes = 0;
        for i in 0..10u8 {
            match gate.submit(id(1), CH, Bytes::from(vec![i])) {
                Verdict::Queued { wake } => wakes += usize::from(wake),
                _ => panic!("refused"),
            }
        }
        assert_eq!(
            wakes, 1,
            "only the first message of a burst wakes the engine task"
        );
        let mut mail = VecDeque::new();
        gate.take_mail(&mut mail);
        let got: Vec<u8> = mail.iter().map(|q| q.payload[0]).collect();
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
        // Taken: the next message wakes again; an empty mailbox gives nothing.
        mail.clear();
        gate.take_mail(&mut mail);
        assert!(mail.is_empty());
        assert!(matches!(
            gate.submit(id(1), CH, Bytes::new()),
            Verdict::Queued { wake: true }
        ));
        // Appends behind what the caller still holds.
        mail.push_back(Queued {
            peer: id(1),
            channel: CH,
            payload: Bytes::from_static(b"held"),
        });
        gate.take_mail(&mut mail);
        assert_eq!(mail.len(), 2);
        assert_eq!(&mail[0].payload[..], b"held");
    }

    #[test]
    fn mailbox_is_bounded_and_a_full_one_marks_the_pair_busy() {
        let gate = Gate::default();
        assert!(matches!(
            gate.submit(id(1), CH, Bytes::new()),
            Verdict::UnknownPeer
        ));
        gate.peer_up(id(1));
        for _ in 0..MAX_TRY_IN_FLIGHT {
            assert!(matches!(
                gate.submit(id(1), CH, Bytes::new()),
                Verdict::Queued { .. }
            ));
        }
        assert!(matches!(
            gate.submit(id(1), CH, Bytes::from_static(b"x")),
            Verdict::Full { wake: true, ref payload } if &payload[..] == b"x"
        ));
        // Busy until the engine task took the mailbox; refused without a wake meanwhile.
        assert!(matches!(
            gate.submit(id(1), CH, Bytes::new()),
            Verdict::Full { wake: false, .. }
        ));
        let mut mail = VecDeque::new();
        gate.take_mail(&mut mail);
        assert_eq!(mail.len(), MAX_TRY_IN_FLIGHT);
        assert_eq!(gate.take_busy(), vec![(id(1), CH)]);
        assert!(matches!(
            gate.submit(id(1), CH, Bytes::new()),
            Verdict::Queued { wake: true }
        ));
        // A full (peer, channel) queue in the engine refuses at once.
        gate.set_full(id(1), CH, true);
        assert!(matches!(
            gate.submit(id(1), CH, Bytes::new()),
            Verdict::Full { wake: false, .. }
        ));
    }
}
