//! Socket events in: each [`Input`] checked against the connection's phase and carried out.

use super::*;

impl Engine {
    pub(super) fn input(&mut self, now: Instant, input: Input) -> Result<(), EngineError> {
        match input {
            Input::Connected { conn } => {
                let c = self
                    .conns
                    .get(&conn)
                    .ok_or(EngineError::UnknownConn(conn))?;
                match c.phase {
                    Phase::Dialing => {}
                    // We gave up on the dial (timeout, cancel) before it connected.
                    Phase::Closing => return Ok(()),
                    _ => {
                        return Err(EngineError::Unexpected {
                            conn,
                            input: "connected",
                        });
                    }
                }
                let expected = c.dialed.map(|a| a.id);
                let secret = self.ephemeral();
                let pc = PeerConnection::new(
                    now,
                    self.conn_cfg.clone(),
                    self.channels_arc.clone(),
                    self.our_info.clone(),
                    &self.node_key,
                    secret,
                    Direction::Outbound,
                    expected,
                );
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.pc = Some(Box::new(pc));
                    c.phase = Phase::Handshaking;
                }
                self.set_dial_deadline(conn, None);
                self.mark_dirty(conn);
                Ok(())
            }
            Input::Resolved { conn, addr } => {
                let c = self
                    .conns
                    .get(&conn)
                    .ok_or(EngineError::UnknownConn(conn))?;
                match c.phase {
                    Phase::Dialing => self.on_resolved(now, conn, addr),
                    Phase::Closing => {}
                    _ => {
                        return Err(EngineError::Unexpected {
                            conn,
                            input: "resolved",
                        });
                    }
                }
                Ok(())
            }
            Input::DialFailed { conn, error } => {
                let c = self
                    .conns
                    .get(&conn)
                    .ok_or(EngineError::UnknownConn(conn))?;
                match c.phase {
                    Phase::Dialing => {
                        self.fail_conn(now, conn, DialFailReason::Io(error), false);
                    }
                    Phase::Closing => {}
                    _ => {
                        return Err(EngineError::Unexpected {
                            conn,
                            input: "dial failed",
                        });
                    }
                }
                self.remove_conn(conn);
                Ok(())
            }
            Input::Received { conn, bytes } => {
                let c = self
                    .conns
                    .get_mut(&conn)
                    .ok_or(EngineError::UnknownConn(conn))?;
                match c.phase {
                    Phase::Closing => return Ok(()),
                    Phase::Dialing => {
                        return Err(EngineError::Unexpected {
                            conn,
                            input: "received",
                        });
                    }
                    _ => {}
                }
                if let Some(pc) = c.pc.as_mut() {
                    pc.handle_received(now, &bytes);
                }
                self.mark_dirty(conn);
                Ok(())
            }
            Input::Sent { conn, len } => {
                let c = self
                    .conns
                    .get_mut(&conn)
                    .ok_or(EngineError::UnknownConn(conn))?;
                if c.phase == Phase::Closing {
                    return Ok(());
                }
                if let Some(pc) = c.pc.as_mut() {
                    pc.handle_sent(now, len);
                }
                self.mark_dirty(conn);
                Ok(())
            }
            Input::Closed { conn, cause } => {
                let c = self
                    .conns
                    .get(&conn)
                    .ok_or(EngineError::UnknownConn(conn))?;
                match c.phase {
                    Phase::Closing => {}
                    Phase::Up(_) if c.draining => {
                        return Err(EngineError::Unexpected {
                            conn,
                            input: "closed",
                        });
                    }
                    Phase::Up(_) => {
                        if self.delivery.defer_close(conn, DisconnectReason::Io(cause)) {
                            self.start_draining(conn);
                            return Ok(());
                        }
                        self.drop_conn(now, conn, DisconnectReason::Io(cause), false);
                    }
                    Phase::Dialing | Phase::Handshaking => {
                        self.fail_conn(now, conn, DialFailReason::Closed(cause), false);
                    }
                }
                self.remove_conn(conn);
                Ok(())
            }
        }
    }
}
