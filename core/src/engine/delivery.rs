//! Lossless, flow-controlled delivery of application messages (the receive side of reactors).
//!
//! A channel with a *delivery window* of `w` messages has at most `w` messages handed to the
//! application (as [`Event::Message`]) and not yet reported consumed
//! with [`Engine::consumed`](super::Engine::consumed). A message that arrives while its channel
//! has no room is *held* with its connection, in arrival order, and that connection stops
//! wanting reads ([`Engine::wants_read`](super::Engine::wants_read) is false) until everything
//! it holds is delivered: the peer's TCP stream stalls, as a blocking `Receive` stalls a peer's
//! receive routine in CometBFT. Nothing is dropped.
//!
//! Per connection, messages of one channel are delivered in arrival order; a held message of
//! channel A does not hold back a later message of channel B that has room.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;
use smallvec::SmallVec;

use super::{DisconnectReason, Event, Output};
use crate::ids::{ChannelId, ConnId, NodeId};

/// One channel's window: `room` more messages may be handed out now.
#[derive(Clone, Copy, Debug)]
struct Window {
    channel: ChannelId,
    size: usize,
    room: usize,
}

/// What one stalled connection holds.
#[derive(Debug)]
struct Held {
    peer: NodeId,
    queue: VecDeque<(ChannelId, Bytes)>,
    /// Held messages per channel (to keep a channel's order when another channel has room).
    per_channel: SmallVec<[(ChannelId, u32); 4]>,
    /// The socket closed while messages were held: the peer goes down with this reason once
    /// they are delivered.
    closed: Option<DisconnectReason>,
}

impl Held {
    fn holds(&self, ch: ChannelId) -> bool {
        self.per_channel.iter().any(|(c, n)| *c == ch && *n > 0)
    }

    fn count(&mut self, ch: ChannelId, add: bool) {
        match self.per_channel.iter_mut().find(|(c, _)| *c == ch) {
            Some((_, n)) if add => *n += 1,
            Some((_, n)) => *n = n.saturating_sub(1),
            None if add => self.per_channel.push((ch, 1)),
            None => {}
        }
    }
}

/// How much the engine holds for stalled connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldStats {
    /// Connections whose reads are paused because a message waits for room.
    pub stalled_conns: usize,
    /// Messages held.
    pub messages: usize,
    /// Payload bytes held.
    pub bytes: usize,
}

/// The windows of the flow-controlled channels and the messages held for them.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    windows: SmallVec<[Window; 4]>,
    held: BTreeMap<ConnId, Held>,
    /// Where the next fair pass over stalled connections starts.
    cursor: Option<ConnId>,
    stats: HeldStats,
}

impl Delivery {
    /// Sets (or with `None` removes) the window of `ch`. Removing releases what is held for it.
    pub(crate) fn set_window(
        &mut self,
        ch: ChannelId,
        size: Option<usize>,
        out: &mut VecDeque<Output>,
    ) -> Vec<(ConnId, NodeId, DisconnectReason)> {
        match (size, self.windows.iter().position(|w| w.channel == ch)) {
            (Some(size), Some(i)) => {
                let w = &mut self.windows[i];
                let used = w.size - w.room;
                w.size = size;
                w.room = size.saturating_sub(used);
            }
            (Some(size), None) => self.windows.push(Window {
                channel: ch,
                size,
                room: size,
            }),
            (None, Some(i)) => {
                self.windows.remove(i);
            }
            (None, None) => {}
        }
        self.pump(out)
    }

    fn window(&mut self, ch: ChannelId) -> Option<&mut Window> {
        self.windows.iter_mut().find(|w| w.channel == ch)
    }

    /// Whether `ch` is flow-controlled.
    pub(crate) fn has_window(&self, ch: ChannelId) -> bool {
        self.windows.iter().any(|w| w.channel == ch)
    }

    /// A message arrived from `peer` on `conn`: hands it out or holds it.
    /// Returns whether it was handed out.
    pub(crate) fn offer(
        &mut self,
        conn: ConnId,
        peer: NodeId,
        channel: ChannelId,
        payload: Bytes,
        out: &mut VecDeque<Output>,
    ) -> bool {
        let behind = self.held.get(&conn).is_some_and(|h| h.holds(channel));
        if !behind {
            match self.window(channel) {
                None => {
                    out.push_back(message(peer, channel, payload));
                    return true;
                }
                Some(w) if w.room > 0 => {
                    w.room -= 1;
                    out.push_back(message(peer, channel, payload));
                    return true;
                }
                Some(_) => {}
            }
        }
        self.stats.messages += 1;
        self.stats.bytes += payload.len();
        let h = self.held.entry(conn).or_insert_with(|| Held {
            peer,
            queue: VecDeque::new(),
            per_channel: SmallVec::new(),
            closed: None,
        });
        h.count(channel, true);
        h.queue.push_back((channel, payload));
        self.stats.stalled_conns = self.held.len();
        false
    }

    /// The application consumed `n` messages of `ch`: their room returns and held messages
    /// are handed out. Returns the connections whose socket closed and whose last held
    /// message is now out (their peer goes down now).
    pub(crate) fn consumed(
        &mut self,
        ch: ChannelId,
        n: usize,
        out: &mut VecDeque<Output>,
    ) -> Vec<(ConnId, NodeId, DisconnectReason)> {
        if let Some(w) = self.window(ch) {
            w.room = (w.room + n).min(w.size);
        }
        self.pump(out)
    }

    /// Hands out held messages that have room, one fair pass over stalled connections.
    fn pump(&mut self, out: &mut VecDeque<Output>) -> Vec<(ConnId, NodeId, DisconnectReason)> {
        let mut done = Vec::new();
        if self.held.is_empty() {
            return done;
        }
        // Start after the connection served first last time (round robin).
        let order: Vec<ConnId> = match self.cursor {
            Some(c) => self
                .held
                .range((Bound::Excluded(c), Bound::Unbounded))
                .chain(self.held.range(..=c))
                .map(|(k, _)| *k)
                .collect(),
            None => self.held.keys().copied().collect(),
        };
        if let Some(first) = order.first() {
            self.cursor = Some(*first);
        }
        for conn in order {
            let Some(mut h) = self.held.remove(&conn) else {
                continue;
            };
            let mut blocked: SmallVec<[ChannelId; 4]> = SmallVec::new();
            let mut keep = VecDeque::with_capacity(h.queue.len());
            while let Some((ch, payload)) = h.queue.pop_front() {
                let room = if blocked.contains(&ch) {
                    false
                } else {
                    match self.windows.iter_mut().find(|w| w.channel == ch) {
                        None => true,
                        Some(w) if w.room > 0 => {
                            w.room -= 1;
                            true
                        }
                        Some(_) => false,
                    }
                };
                if room {
                    self.stats.messages -= 1;
                    self.stats.bytes -= payload.len();
                    h.count(ch, false);
                    out.push_back(message(h.peer, ch, payload));
                } else {
                    blocked.push(ch);
                    keep.push_back((ch, payload));
                }
            }
            h.queue = keep;
            if h.queue.is_empty() {
                if let Some(reason) = h.closed.take() {
                    done.push((conn, h.peer, reason));
                }
            } else {
                self.held.insert(conn, h);
            }
        }
        self.stats.stalled_conns = self.held.len();
        done
    }

    /// Whether `conn` holds messages (and so must not be read).
    pub(crate) fn is_stalled(&self, conn: ConnId) -> bool {
        self.held.contains_key(&conn)
    }

    /// The socket of `conn` closed: if it holds messages, they stay and the peer goes down
    /// with `reason` after the last one (returns true); else returns false.
    pub(crate) fn defer_close(&mut self, conn: ConnId, reason: DisconnectReason) -> bool {
        match self.held.get_mut(&conn) {
            Some(h) => {
                h.closed = Some(reason);
                true
            }
            None => false,
        }
    }

    /// Forgets what `conn` holds (we dropped the peer); returns how many messages that was.
    pub(crate) fn discard(&mut self, conn: ConnId) -> usize {
        let Some(h) = self.held.remove(&conn) else {
            return 0;
        };
        let n = h.queue.len();
        self.stats.messages -= n;
        self.stats.bytes -= h.queue.iter().map(|(_, b)| b.len()).sum::<usize>();
        self.stats.stalled_conns = self.held.len();
        n
    }

    /// What is held now.
    pub(crate) fn stats(&self) -> HeldStats {
        self.stats
    }
}

fn message(peer: NodeId, channel: ChannelId, payload: Bytes) -> Output {
    Output::Event(Event::Message {
        peer,
        channel,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ChannelId = ChannelId(0x30);
    const B: ChannelId = ChannelId(0x31);

    fn msgs(out: &mut VecDeque<Output>) -> Vec<(ChannelId, u8)> {
        out.drain(..)
            .filter_map(|o| match o {
                Output::Event(Event::Message {
                    channel, payload, ..
                }) => Some((channel, payload[0])),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn holds_beyond_the_window_and_keeps_each_channels_order() {
        let mut d = Delivery::default();
        let mut out = VecDeque::new();
        d.set_window(A, Some(2), &mut out);
        d.set_window(B, Some(8), &mut out);
        let (c, p) = (ConnId(1), NodeId([1; 20]));
        for (ch, i) in [(A, 0), (A, 1), (A, 2), (B, 3), (A, 4), (B, 5)] {
            d.offer(c, p, ch, Bytes::from(vec![i]), &mut out);
        }
        // A's window is full after two; B keeps flowing, A's order holds.
        assert_eq!(msgs(&mut out), [(A, 0), (A, 1), (B, 3), (B, 5)]);
        assert!(d.is_stalled(c));
        assert_eq!(d.stats().messages, 2);
        d.consumed(A, 1, &mut out);
        assert_eq!(msgs(&mut out), [(A, 2)]);
        d.consumed(A, 5, &mut out);
        assert_eq!(msgs(&mut out), [(A, 4)]);
        assert!(!d.is_stalled(c));
        assert_eq!(d.stats(), HeldStats::default());
    }

    #[test]
    fn a_closed_connection_goes_down_after_its_last_held_message() {
        let mut d = Delivery::default();
        let mut out = VecDeque::new();
        d.set_window(A, Some(1), &mut out);
        let (c, p) = (ConnId(1), NodeId([1; 20]));
        d.offer(c, p, A, Bytes::from_static(&[0]), &mut out);
        d.offer(c, p, A, Bytes::from_static(&[1]), &mut out);
        assert!(d.defer_close(c, DisconnectReason::Local));
        assert_eq!(msgs(&mut out), [(A, 0)]);
        let done = d.consumed(A, 1, &mut out);
        assert_eq!(msgs(&mut out), [(A, 1)]);
        assert_eq!(done.len(), 1);
        assert!(!d.defer_close(c, DisconnectReason::Local));
    }

    #[test]
    fn removing_a_window_releases_everything() {
        let mut d = Delivery::default();
        let mut out = VecDeque::new();
        d.set_window(A, Some(1), &mut out);
        let (c, p) = (ConnId(1), NodeId([1; 20]));
        for i in 0..5 {
            d.offer(c, p, A, Bytes::from(vec![i]), &mut out);
        }
        d.set_window(A, None, &mut out);
        assert_eq!(msgs(&mut out).len(), 5);
        assert_eq!(d.discard(c), 0);
    }
}
