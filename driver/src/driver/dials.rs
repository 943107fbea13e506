//! Dials: a task per `Output::Dial` / `Output::DialName`, bounded by the engine's dial timeout.

use super::*;

impl<R: Runtime> Driver<R> {
    pub(super) fn dial(&mut self, now: Instant, conn: ConnId, addr: SocketAddr) {
        if self.stopping.is_some() {
            // The engine is about to be dropped: no new connections.
            return;
        }
        let (abort, reg) = AbortHandle::new_pair();
        let rt = self.rt.clone();
        let mut io = self.io_tx.clone();
        let deadline = now + self.engine.config().dial_timeout;
        let fut = async move {
            let connect = pin!(rt.connect(addr));
            let timeout = pin!(sleep_until(&rt, deadline));
            let ev = match select(connect, timeout).await {
                Either::Left((Ok((reader, writer)), _)) => IoEvent::Connected {
                    conn,
                    reader,
                    writer,
                },
                Either::Left((Err(e), _)) => IoEvent::DialFailed {
                    conn,
                    error: dial_failure(&e),
                },
                Either::Right(_) => IoEvent::DialFailed {
                    conn,
                    error: DialFailure::TimedOut,
                },
            };
            let _ = io.send(ev).await;
        };
        self.tasks
            .push(self.rt.spawn(Abortable::new(fut, reg).map(|_| ())));
        self.conns.insert(conn, Slot::Dialing(abort));
    }

    /// Like [`dial`](Self::dial), for a DNS name resolved now (at every dial, so a persistent
    /// peer or seed that moved is found at its new address): the first address the resolver
    /// returns is reported to the engine, then dialled. The dial timeout covers both.
    pub(super) fn dial_name(&mut self, now: Instant, conn: ConnId, name: DialName) {
        if self.stopping.is_some() {
            return;
        }
        let (abort, reg) = AbortHandle::new_pair();
        let rt = self.rt.clone();
        let resolver = self.resolver.clone();
        let mut io = self.io_tx.clone();
        let deadline = now + self.engine.config().dial_timeout;
        let fut = async move {
            let attempt = async {
                let addr = match resolver.resolve(&name.host, name.port).await {
                    Ok(addrs) => match addrs.first() {
                        Some(&a) => a,
                        None => return Err(DialFailure::Unresolved),
                    },
                    Err(_) => return Err(DialFailure::Unresolved),
                };
                let _ = io.send(IoEvent::Resolved { conn, addr }).await;
                rt.connect(addr).await.map_err(|e| dial_failure(&e))
            };
            let timeout = pin!(sleep_until(&rt, deadline));
            let ev = match select(pin!(attempt), timeout).await {
                Either::Left((Ok((reader, writer)), _)) => IoEvent::Connected {
                    conn,
                    reader,
                    writer,
                },
                Either::Left((Err(error), _)) => IoEvent::DialFailed { conn, error },
                Either::Right(_) => IoEvent::DialFailed {
                    conn,
                    error: DialFailure::TimedOut,
                },
            };
            let _ = io.send(ev).await;
        };
        self.tasks
            .push(self.rt.spawn(Abortable::new(fut, reg).map(|_| ())));
        self.conns.insert(conn, Slot::Dialing(abort));
    }
}
