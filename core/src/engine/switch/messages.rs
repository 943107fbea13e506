//! Messages out and delivery in: sends, broadcasts and the application's delivery windows.

use super::*;

impl Engine {
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

    pub(super) fn send_on(
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

    /// Makes `ch` flow-controlled with a window of `window` messages (`None`: unlimited, the
    /// default): see [`delivery`](crate::engine::delivery). The application reports what it consumed
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
}
