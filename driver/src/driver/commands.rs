//! The engine task's side of the `Handle`'s command protocol: each [`Command`] carried out.

use super::*;

impl<R: Runtime> Driver<R> {
    /// Carries out the `try_send` messages of the gate's mailbox, in order.
    pub(super) fn take_mail(&mut self, now: Instant) {
        let mut mail = std::mem::take(&mut self.mail);
        self.gate.take_mail(&mut mail);
        for q in mail.drain(..) {
            self.handle_cmd(
                now,
                Command::SendWait {
                    peer: q.peer,
                    channel: q.channel,
                    payload: q.payload,
                    timeout: None,
                    reply: None,
                },
            );
        }
        self.mail = mail;
    }

    pub(super) fn on_cmd(&mut self, now: Instant, cmd: Command) {
        // `try_send`s queued before this command go first: a handle's sends keep their order.
        self.take_mail(now);
        self.handle_cmd(now, cmd);
    }

    fn handle_cmd(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Send {
                peer,
                channel,
                payload,
                reply,
            } => {
                let r = self.send(now, peer, channel, payload);
                if matches!(r, Err(SendError::Full(_))) {
                    self.gate.set_full(peer, channel, true);
                }
                let _ = reply.send(r);
            }
            Command::SendWait {
                peer,
                channel,
                payload,
                timeout,
                reply,
            } => {
                let deadline = timeout.map(|t| now + t);
                let r = if self.parked.is_parked(peer, channel) {
                    Err(SendError::Full(payload))
                } else {
                    self.send(now, peer, channel, payload)
                };
                match r {
                    Err(SendError::Full(payload)) => {
                        self.gate.set_full(peer, channel, true);
                        if let Err((payload, reply)) =
                            self.parked.park(peer, channel, payload, reply, deadline)
                        {
                            match reply {
                                Some(reply) => {
                                    let _ = reply.send(Err(SendError::Full(payload)));
                                }
                                None => {
                                    tracing::warn!(%peer, %channel, "try_send message dropped: too many parked sends")
                                }
                            }
                        }
                    }
                    r => {
                        if let Some(reply) = reply {
                            let _ = reply.send(r);
                        }
                    }
                }
            }
            Command::Broadcast {
                channel,
                payload,
                reply,
            } => {
                let _ = reply.send(self.engine.broadcast(now, channel, payload));
            }
            Command::BroadcastExcept {
                channel,
                payload,
                except,
                reply,
            } => {
                let outcomes = self.engine.broadcast_except(now, channel, &payload, except);
                for (peer, r) in &outcomes {
                    if let Err(SendError::Full(_)) = r {
                        self.gate.set_full(*peer, channel, true);
                    }
                }
                let _ = reply.send(outcomes);
            }
            Command::Ban {
                peer,
                reason,
                duration,
                reply,
            } => {
                tracing::info!(%peer, %reason, ?duration, "banning peer");
                let _ = reply.send(self.engine.ban(now, peer, reason, duration));
            }
            Command::MarkGood { peer, reply } => {
                let _ = reply.send(self.engine.mark_good(now, peer));
            }
            Command::Dial { addr, reply } => {
                // While stopping, the reply is dropped: the caller sees `NodeError::Stopped`.
                if self.stopping.is_none() {
                    let _ = reply.send(self.engine.dial(now, addr));
                }
            }
            Command::Disconnect { peer, reply } => {
                self.engine.disconnect(now, peer);
                let _ = reply.send(());
            }
            Command::Peers { reply } => {
                let peers = self
                    .engine
                    .peers()
                    .map(|p| {
                        let conn = self.engine.conn_stats(&p.id).unwrap_or_default();
                        PeerStatus {
                            stats: PeerStats::from_conn(&conn),
                            conn,
                            info: p.clone(),
                        }
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Status { reply } => {
                let (inbound, outbound) = self.engine.num_peers();
                let _ = reply.send(NodeStatus {
                    inbound,
                    outbound,
                    connections: self.engine.num_conns(),
                    book_len: self.engine.addr_book().len(),
                    counters: self.engine.counters(),
                    inbox_discarded: self.reactors.discarded(),
                    held: self.engine.held(),
                });
            }
            Command::Subscribe { reply } => {
                let _ = reply.send(self.subs.subscribe());
            }
            Command::KnownAddrs { reply } => {
                let _ = reply.send(self.engine.addr_book().entries().map(|(a, _)| a).collect());
            }
            Command::VettedAddrs { reply } => {
                let _ = reply.send(self.engine.vetted_addrs(now));
            }
            Command::Shutdown { reply } => self.begin_stop(now, Some(reply)),
        }
        self.drain(now);
    }

    pub(super) fn send(
        &mut self,
        now: Instant,
        peer: NodeId,
        channel: ChannelId,
        payload: Bytes,
    ) -> Result<(), SendError> {
        self.engine.send(now, peer, channel, payload)
    }
}
