//! Reactor inboxes: the lossless, flow-controlled receive side of application channels.
//!
//! Each [`Inbox`] is one bounded queue shared by the engine task (which pushes) and the
//! reactor (which pops). Messages are pushed only while the engine's delivery window for the
//! channel has room (see `cometmesh_core::engine::delivery`), so the queue never holds more
//! than `window` messages; the reactor returns room in batches of a quarter window, which is
//! the only time it wakes the engine task. Peer lifecycle events ride in the same queue, so
//! their order relative to messages is exact.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use cometmesh_core::engine::{Direction, DisconnectReason, Engine, Event, NodeInfo};
use cometmesh_core::{ChannelId, NodeId};
use futures::Stream;
use futures::task::AtomicWaker;

/// A peer came up: what a reactor learns before the peer's first message.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PeerUp {
    /// Its node id.
    pub peer: NodeId,
    /// The NodeInfo it sent (its channels, moniker, listen address, ...), shared by every
    /// reactor and the engine.
    pub info: Arc<NodeInfo>,
    /// Who dialled.
    pub direction: Direction,
    /// Whether it is one of our persistent peers (never banned, always redialled).
    pub persistent: bool,
}

/// What a reactor receives, in order: for each peer, `PeerUp`, then its messages (and
/// `SendReady` edges), then `PeerDown`. Nothing is ever dropped.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ReactorEvent {
    /// A peer came up (before any of its messages). Boxed: messages, by far the most
    /// frequent event, then move 40 bytes through the queues instead of a NodeInfo's size.
    PeerUp(Box<PeerUp>),
    /// A message from a peer on the inbox's channel.
    Message(NodeId, Bytes),
    /// A send to this peer on the inbox's channel was refused as `Full` (by `try_send` or
    /// `send`) and there is room again: an edge, once per refusal streak.
    SendReady(NodeId),
    /// A peer went down (after its last message).
    PeerDown(NodeId, DisconnectReason),
}

/// Why [`Inbox::try_recv`] returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing queued now.
    #[error("inbox empty")]
    Empty,
    /// The node stopped and everything queued was received.
    #[error("node stopped")]
    Closed,
}

/// Wakes the engine task when a reactor returned room or went away.
#[derive(Debug, Default)]
pub(crate) struct Notify {
    waker: AtomicWaker,
    flag: AtomicBool,
}

impl Notify {
    /// Wakes the engine task.
    pub(crate) fn notify(&self) {
        self.flag.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Registers the engine task; true if it was notified since the last call.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.flag.swap(false, Ordering::AcqRel)
    }
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<ReactorEvent>,
    /// Messages returned, waiting for the engine task to collect them.
    returned: usize,
    /// The node stopped: no more pushes.
    ended: bool,
    /// The inbox was dropped.
    dropped: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    waker: AtomicWaker,
    notify: Arc<Notify>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent queue: keep using it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The receiving end of a reactor: a bounded, lossless queue of [`ReactorEvent`]s for one
/// application channel (or, from [`NodeBuilder::peer_events`](crate::NodeBuilder::peer_events),
/// only the peer lifecycle). Read it as a [`Stream`] or with [`try_recv`](Self::try_recv); it
/// ends after the node stops.
///
/// While the inbox holds `window` messages, the node stops reading from peers whose next
/// message is for this channel (their TCP streams stall); it reads again as the reactor
/// catches up. Dropping the inbox makes the node discard the channel's messages from then on
/// (other channels are not affected).
#[derive(Debug)]
pub struct Inbox {
    shared: Arc<Shared>,
    channel: Option<ChannelId>,
    /// Room is returned to the engine in batches of this many messages.
    batch: usize,
    /// Events taken from the shared queue under one lock (all it held), handed out one by
    /// one: the reactor locks once per batch, not once per message. They still count against
    /// the window until handed out.
    local: VecDeque<ReactorEvent>,
    /// Messages handed out and not yet returned to the engine.
    taken: usize,
}

impl Inbox {
    /// The channel this inbox receives (`None` for a lifecycle-only inbox).
    #[must_use]
    pub fn channel(&self) -> Option<ChannelId> {
        self.channel
    }

    /// The next event, without waiting.
    pub fn try_recv(&mut self) -> Result<ReactorEvent, TryRecvError> {
        if self.local.is_empty() {
            let mut st = self.shared.lock();
            if st.queue.is_empty() {
                return Err(if st.ended {
                    TryRecvError::Closed
                } else {
                    TryRecvError::Empty
                });
            }
            // The shared queue keeps `local`'s empty allocation.
            std::mem::swap(&mut self.local, &mut st.queue);
        }
        let ev = self.local.pop_front().ok_or(TryRecvError::Empty)?;
        if matches!(ev, ReactorEvent::Message(..)) {
            self.taken += 1;
            if self.taken >= self.batch {
                self.shared.lock().returned += std::mem::take(&mut self.taken);
                self.shared.notify.notify();
            }
        }
        Ok(ev)
    }

    /// Messages queued now (for tests and metrics).
    #[must_use]
    pub fn len(&self) -> usize {
        self.local.len() + self.shared.lock().queue.len()
    }

    /// Whether nothing is queued now.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Stream for Inbox {
    type Item = ReactorEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ReactorEvent>> {
        match self.try_recv() {
            Ok(ev) => return Poll::Ready(Some(ev)),
            Err(TryRecvError::Closed) => return Poll::Ready(None),
            Err(TryRecvError::Empty) => {}
        }
        self.shared.waker.register(cx.waker());
        match self.try_recv() {
            Ok(ev) => Poll::Ready(Some(ev)),
            Err(TryRecvError::Closed) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.dropped = true;
        st.queue.clear();
        drop(st);
        self.shared.notify.notify();
    }
}

/// The engine task's side of one inbox.
#[derive(Debug)]
struct Entry {
    shared: Arc<Shared>,
    channel: Option<ChannelId>,
    window: usize,
    live: bool,
    /// Events routed since the last [`Reactors::flush`]: moved to the shared queue under one
    /// lock, with at most one wake, when the engine task is about to wait.
    pending: Vec<ReactorEvent>,
}

impl Entry {
    fn push(&mut self, ev: ReactorEvent) {
        self.pending.push(ev);
    }

    /// Moves the pending events to the shared queue; wakes the reactor if it was empty.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut st = self.shared.lock();
        if st.ended || st.dropped {
            self.pending.clear();
            return;
        }
        let was_empty = st.queue.is_empty();
        st.queue.extend(self.pending.drain(..));
        drop(st);
        if was_empty {
            self.shared.waker.wake();
        }
    }
}

/// Every inbox of a node, owned by the engine task.
#[derive(Debug, Default)]
pub(crate) struct Reactors {
    entries: Vec<Entry>,
    /// Inbox index by channel id.
    by_channel: Vec<(ChannelId, usize)>,
    notify: Arc<Notify>,
    /// Messages of dropped inboxes, discarded.
    discarded: u64,
}

impl Reactors {
    /// A new inbox for `channel` (`None`: lifecycle only) with a window of `window` messages.
    pub(crate) fn add(&mut self, channel: Option<ChannelId>, window: usize) -> Inbox {
        let window = window.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            waker: AtomicWaker::new(),
            notify: self.notify.clone(),
        });
        if let Some(ch) = channel {
            self.by_channel.push((ch, self.entries.len()));
        }
        self.entries.push(Entry {
            shared: shared.clone(),
            channel,
            window,
            live: true,
            pending: Vec::new(),
        });
        Inbox {
            shared,
            channel,
            batch: (window / 4).max(1),
            local: VecDeque::new(),
            taken: 0,
        }
    }

    /// Whether `ch` already has an inbox.
    pub(crate) fn has(&self, ch: ChannelId) -> bool {
        self.by_channel.iter().any(|(c, _)| *c == ch)
    }

    /// Gives each inbox channel its delivery window in the engine.
    pub(crate) fn install(&self, engine: &mut Engine, now: Instant) {
        for e in &self.entries {
            if let Some(ch) = e.channel {
                engine.set_delivery_window(now, ch, Some(e.window));
            }
        }
    }

    pub(crate) fn notify(&self) -> &Arc<Notify> {
        &self.notify
    }

    fn entry(&mut self, ch: ChannelId) -> Option<&mut Entry> {
        self.by_channel
            .iter()
            .find(|(c, _)| *c == ch)
            .and_then(|(_, i)| self.entries.get_mut(*i))
    }

    /// Hands every event routed since the last call to its reactor (one lock and at most one
    /// wake per inbox). The engine task calls it before it waits, so nothing routed stays
    /// behind while it sleeps.
    pub(crate) fn flush(&mut self) {
        for e in &mut self.entries {
            e.flush();
        }
    }

    /// Routes an engine event to the inboxes. Returns true if it was a message or a
    /// `SendReady` of an inbox channel (those do not go to the monitoring stream).
    pub(crate) fn route(&mut self, ev: &Event) -> bool {
        match ev {
            Event::Message {
                peer,
                channel,
                payload,
            } => match self.entry(*channel) {
                Some(e) if e.live => {
                    e.push(ReactorEvent::Message(*peer, payload.clone()));
                    true
                }
                Some(_) => {
                    self.discarded += 1;
                    true
                }
                None => false,
            },
            Event::PeerUp {
                peer,
                info,
                direction,
                persistent,
                ..
            } => {
                for e in self.entries.iter_mut().filter(|e| e.live) {
                    e.push(ReactorEvent::PeerUp(Box::new(PeerUp {
                        peer: *peer,
                        info: info.clone(),
                        direction: *direction,
                        persistent: *persistent,
                    })));
                }
                false
            }
            Event::PeerDown { peer, reason } => {
                for e in self.entries.iter_mut().filter(|e| e.live) {
                    e.push(ReactorEvent::PeerDown(*peer, reason.clone()));
                }
                false
            }
            Event::SendReady { peer, channel } => {
                if let Some(e) = self.entry(*channel).filter(|e| e.live) {
                    e.push(ReactorEvent::SendReady(*peer));
                }
                false
            }
            _ => false,
        }
    }

    /// Collects the room reactors returned (and notices dropped inboxes); tells the engine.
    pub(crate) fn collect(&mut self, engine: &mut Engine, now: Instant) {
        for e in &mut self.entries {
            let (returned, dropped) = {
                let mut st = e.shared.lock();
                (std::mem::take(&mut st.returned), st.dropped)
            };
            let Some(ch) = e.channel else {
                e.live &= !dropped;
                continue;
            };
            if dropped && e.live {
                e.live = false;
                tracing::debug!(channel = %ch, "inbox dropped: the channel's messages are discarded from now on");
                engine.set_delivery_window(now, ch, None);
            } else if returned > 0 && e.live {
                engine.consumed(now, ch, returned);
            }
        }
    }

    /// Messages discarded because their inbox was dropped.
    pub(crate) fn discarded(&self) -> u64 {
        self.discarded
    }

    /// The node stopped: every inbox ends once drained.
    pub(crate) fn close(&mut self) {
        self.flush();
        for e in &self.entries {
            e.shared.lock().ended = true;
            e.shared.waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CH: ChannelId = ChannelId(1);

    fn msg(n: u8) -> Event {
        Event::Message {
            peer: NodeId([7; 20]),
            channel: CH,
            payload: Bytes::from(vec![n]),
        }
    }

    fn payload(ev: Result<ReactorEvent, TryRecvError>) -> u8 {
        match ev {
            Ok(ReactorEvent::Message(_, b)) => b[0],
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn routed_events_reach_the_inbox_at_flush_in_order() {
        let mut r = Reactors::default();
        let mut inbox = r.add(Some(CH), 8);
        for n in 0..5 {
            assert!(r.route(&msg(n)));
        }
        assert_eq!(inbox.try_recv().unwrap_err(), TryRecvError::Empty);
        r.flush();
        assert_eq!(inbox.len(), 5);
        assert_eq!(payload(inbox.try_recv()), 0);
        // Routed while the reactor holds a batch: queued behind it.
        r.route(&msg(5));
        r.flush();
        let rest: Vec<u8> = (0..5).map(|_| payload(inbox.try_recv())).collect();
        assert_eq!(rest, vec![1, 2, 3, 4, 5]);
        assert_eq!(inbox.try_recv().unwrap_err(), TryRecvError::Empty);
        r.close();
        assert_eq!(inbox.try_recv().unwrap_err(), TryRecvError::Closed);
    }

    #[test]
    fn room_returns_in_batches_of_a_quarter_window() {
        let mut r = Reactors::default();
        let mut inbox = r.add(Some(CH), 8); // batches of 2
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(!r.notify().poll(&mut cx));
        for n in 0..5 {
            r.route(&msg(n));
        }
        r.flush();
        let returned = |i: &Inbox| i.shared.lock().returned;
        payload(inbox.try_recv());
        assert_eq!(returned(&inbox), 0);
        assert!(!r.notify().poll(&mut cx), "no wake before a whole batch");
        payload(inbox.try_recv());
        assert_eq!(returned(&inbox), 2);
        assert!(
            r.notify().poll(&mut cx),
            "a whole batch wakes the engine task"
        );
        for _ in 0..3 {
            payload(inbox.try_recv());
        }
        assert_eq!(returned(&inbox), 4, "the fifth waits for its batch");
    }

    #[test]
    fn a_dropped_inbox_discards_what_is_routed_later() {
        let mut r = Reactors::default();
        let inbox = r.add(Some(CH), 8);
        r.route(&msg(0));
        drop(inbox);
        r.flush();
        assert_eq!(r.entries[0].shared.lock().queue.len(), 0);
        assert!(r.entries[0].pending.is_empty());
    }
}
