//! IO results into the engine: accepted and routed sockets, dials, reads, flushes, ends, saves.

use super::*;

impl<R: Runtime> Driver<R> {
    pub(super) fn on_io(&mut self, now: Instant, ev: IoEvent<R>) {
        match ev {
            IoEvent::Accepted {
                reader,
                writer,
                remote,
            } => {
                if self.stopping.is_some() {
                    return;
                }
                match self.engine.accept(now, remote) {
                    Ok(conn) => self.open(conn, reader, writer),
                    // Dropping the halves closes the socket.
                    Err(why) => tracing::debug!(%remote, %why, "inbound connection refused"),
                }
            }
            IoEvent::Routed {
                reader,
                writer,
                remote,
                routed,
            } => {
                if self.stopping.is_some() {
                    return;
                }
                match self.engine.accept_routed(now, remote, *routed) {
                    Ok(conn) => self.open(conn, reader, writer),
                    Err(why) => tracing::debug!(%remote, %why, "routed connection refused"),
                }
            }
            IoEvent::Connected {
                conn,
                reader,
                writer,
            } => {
                if self.conns.is_dialing(conn) {
                    self.open(conn, reader, writer);
                    let _ = self.engine.handle_input(now, Input::Connected { conn });
                }
            }
            IoEvent::Resolved { conn, addr } => {
                if self.conns.is_dialing(conn) {
                    let _ = self
                        .engine
                        .handle_input(now, Input::Resolved { conn, addr });
                }
            }
            IoEvent::DialFailed { conn, error } => {
                if self.conns.dial_ended(conn) {
                    let _ = self
                        .engine
                        .handle_input(now, Input::DialFailed { conn, error });
                }
            }
            IoEvent::Read { conn, bytes } => {
                if let Some(o) = self.conns.open_mut(conn) {
                    let _ = self
                        .engine
                        .handle_input(now, Input::Received { conn, bytes });
                    if self.engine.wants_read(conn) {
                        o.credit();
                    } else {
                        self.conns.pause(conn);
                    }
                }
            }
            IoEvent::Flushed { conn, len } => {
                if let Some(o) = self.conns.open_mut(conn) {
                    if len > 0 {
                        let _ = self.engine.handle_input(now, Input::Sent { conn, len });
                    }
                    o.refill();
                }
            }
            IoEvent::ReadEnd { conn, cause } => {
                if self.conns.is_open(conn) {
                    self.finish_conn(now, conn, cause);
                }
            }
            IoEvent::WriteEnd { conn, cause } => {
                if self.conns.is_open(conn) {
                    self.finish_conn(now, conn, cause.unwrap_or(CloseCause::Local));
                }
            }
            IoEvent::Saved(r) => {
                if let Some(b) = &mut self.book {
                    b.saved(&r);
                }
            }
        }
        self.drain(now);
    }

    /// Spawns the reader and the writer of a connection.
    pub(super) fn open(&mut self, conn: ConnId, reader: R::Reader, writer: R::Writer) {
        let (tx, wrx) = mpsc::channel(self.cfg.writer_capacity.saturating_sub(1));
        let (credits, crx) = mpsc::channel(self.cfg.read_window);
        let (reader_abort, rreg) = AbortHandle::new_pair();
        let (writer_abort, wreg) = AbortHandle::new_pair();
        let read = read_loop::<R>(conn, reader, crx, self.cfg.read_window, self.io_tx.clone());
        let write = write_loop::<R>(conn, writer, wrx, self.io_tx.clone());
        self.tasks
            .push(self.rt.spawn(Abortable::new(read, rreg).map(|_| ())));
        self.tasks
            .push(self.rt.spawn(Abortable::new(write, wreg).map(|_| ())));
        self.conns
            .opened(conn, Open::new(tx, credits, reader_abort, writer_abort));
    }
}
