//! Draining each dirty connection's events and transmits into the engine's outputs.

use super::*;

impl Engine {
    pub(super) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push_back(id);
        }
    }

    /// Drains events and transmits of every dirty connection.
    pub(super) fn process_dirty(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop_front() {
            let mut events = Vec::new();
            let mut next = None;
            {
                let Some(c) = self.conns.get_mut(&id) else {
                    continue;
                };
                c.dirty = false;
                let closing = c.phase == Phase::Closing;
                let Some(pc) = c.pc.as_mut() else {
                    continue;
                };
                while let Some(ev) = pc.poll_event() {
                    events.push(ev);
                }
                if !closing {
                    while let Some(data) = pc.poll_transmit(now) {
                        self.outputs.push_back(Output::Transmit { conn: id, data });
                    }
                    // Taking bytes can finish the handshake (our AuthSig was the last thing
                    // owed), and with it run the id checks: a close decided there must not be
                    // lost until the next input.
                    while let Some(ev) = pc.poll_event() {
                        events.push(ev);
                    }
                    next = pc.poll_timeout();
                    if let Phase::Up(peer) = c.phase
                        && !c.send_full.is_empty()
                    {
                        c.send_full.retain(|ch| {
                            if pc.can_send(*ch) {
                                self.outputs.push_back(Output::Event(Event::SendReady {
                                    peer,
                                    channel: *ch,
                                }));
                                false
                            } else {
                                true
                            }
                        });
                    }
                }
            }
            self.set_conn_timer(id, next);
            for ev in events {
                self.on_conn_event(now, id, ev);
            }
        }
    }
}
