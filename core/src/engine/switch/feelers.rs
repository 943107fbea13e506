//! The engine's feeler glue (G11): resolve tried collisions, dial one feeler, and close it
//! once its handshake completed. The decisions are [`Feeler`]'s (`engine/feeler.rs`).

use super::*;

impl Engine {
    /// The feeler pass (G11): resolve buffered tried collisions, then dial one incumbent of a
    /// collision or one new entry. See [`feeler`].
    pub(super) fn run_feeler(&mut self, now: Instant) {
        if self.feeler.busy() {
            return;
        }
        let unix = self.unix(now);
        // A tried incumbent we are connected to is alive: refresh its success time, so that
        // resolving a collision never displaces it.
        let live: Vec<SocketAddr> = self
            .peers
            .values()
            .filter(|p| p.direction == Direction::Outbound)
            .filter_map(|p| self.conns.get(&p.conn).and_then(|c| c.dialed))
            .map(|a| a.addr)
            .filter(|a| self.book.is_tried(a))
            .collect();
        for a in live {
            let _ = self.book.mark_good(a, unix, &mut self.rng);
        }
        let before = self.book.len_collisions();
        if self.book.resolve_collisions(unix) > 0 || self.book.len_collisions() != before {
            self.book_dirty = true;
        }
        let dialable = Dialable {
            our: self.our_id,
            book: &self.book,
            persistent: &self.persistent,
            peers: &self.peers,
            conns: &self.conns,
            backoff: &self.backoff,
        };
        let target = Feeler::choose(&self.book, unix, &mut self.rng, |a: &NetAddr| {
            dialable.allows(a, unix, now)
        });
        if let Some(t) = target
            && let Ok(conn) = self.start_dial(now, t.addr(), Origin::Feeler)
        {
            self.feeler.started(conn);
            self.counters.feelers += 1;
        }
    }

    /// A feeler's handshake completed: the address is alive (marked good: a tested incumbent
    /// stays, a new entry moves to tried) and the connection closes at once, never a peer.
    pub(super) fn feeler_reached(&mut self, now: Instant, id: ConnId, dialed: Option<NetAddr>) {
        if let Some(a) = dialed {
            self.dial_reached(now, id, a);
        }
        self.counters.feelers_reached += 1;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.phase = Phase::Closing;
        if let Some(pc) = c.pc.as_mut()
            && !pc.is_closed()
        {
            pc.close(CloseReason::Local);
        }
        self.set_conn_timer(id, None);
        self.outputs.push_back(Output::Close { conn: id });
    }
}
