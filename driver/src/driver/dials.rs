//! Dials: a task per `Output::Dial` / `Output::DialName`. The dial timeout is the engine's
//! alone (`Timer::DialTimeout`): when it passes, the engine fails the dial and asks to close
//! the connection, and [`close`](Driver::close) aborts the task.

use super::*;

impl<R: Runtime> Driver<R> {
    pub(super) fn dial(&mut self, conn: ConnId, addr: SocketAddr) {
        if self.stopping.is_some() {
            // The engine is about to be dropped: no new connections.
            return;
        }
        let (abort, reg) = AbortHandle::new_pair();
        let rt = self.rt.clone();
        let mut io = self.io_tx.clone();
        let fut = async move {
            let ev = match rt.connect(addr).await {
                Ok((reader, writer)) => IoEvent::Connected {
                    conn,
                    reader,
                    writer,
                },
                Err(e) => IoEvent::DialFailed {
                    conn,
                    error: dial_failure(&e),
                },
            };
            let _ = io.send(ev).await;
        };
        self.tasks
            .push(self.rt.spawn(Abortable::new(fut, reg).map(|_| ())));
        self.conns.dialing(conn, abort);
    }

    /// Like [`dial`](Self::dial), for a DNS name resolved now (at every dial, so a persistent
    /// peer or seed that moved is found at its new address): the first address the resolver
    /// returns is reported to the engine, then dialled. The engine's dial timeout covers both.
    pub(super) fn dial_name(&mut self, conn: ConnId, name: DialName) {
        if self.stopping.is_some() {
            return;
        }
        let (abort, reg) = AbortHandle::new_pair();
        let rt = self.rt.clone();
        let resolver = self.resolver.clone();
        let mut io = self.io_tx.clone();
        let fut = async move {
            let addr = match resolver.resolve(&name.host, name.port).await {
                Ok(addrs) => addrs.first().copied(),
                Err(_) => None,
            };
            let ev = match addr {
                None => IoEvent::DialFailed {
                    conn,
                    error: DialFailure::Unresolved,
                },
                Some(addr) => {
                    let _ = io.send(IoEvent::Resolved { conn, addr }).await;
                    match rt.connect(addr).await {
                        Ok((reader, writer)) => IoEvent::Connected {
                            conn,
                            reader,
                            writer,
                        },
                        Err(e) => IoEvent::DialFailed {
                            conn,
                            error: dial_failure(&e),
                        },
                    }
                }
            };
            let _ = io.send(ev).await;
        };
        self.tasks
            .push(self.rt.spawn(Abortable::new(fut, reg).map(|_| ())));
        self.conns.dialing(conn, abort);
    }
}
