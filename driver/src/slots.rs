//! The driver's connection slots: a dial in progress, or an open connection with its writer
//! queue, read credit, tasks and linger deadline.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use cometmesh_core::ConnId;

use futures::channel::mpsc;
use futures::future::AbortHandle;

use crate::io_tasks::WriterMsg;

/// An open connection: its writer queue, read credit, tasks and linger deadline.
pub(crate) struct Open {
    /// The writer's queue.
    tx: mpsc::Sender<WriterMsg>,
    /// Transmits the writer's queue could not take yet (bounded by the engine's send budget).
    pending: VecDeque<WriterMsg>,
    /// Read credit for the reader.
    credits: mpsc::Sender<()>,
    /// Aborts the reader task.
    reader: AbortHandle,
    /// Aborts the writer task.
    writer: AbortHandle,
    /// Set once `Close` was queued: the linger deadline.
    closing: Option<Instant>,
}

impl Open {
    /// Queues `msg` for the writer (behind what waits already).
    pub(crate) fn push(&mut self, msg: WriterMsg) {
        if !self.pending.is_empty() {
            self.pending.push_back(msg);
            return;
        }
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(e) if e.is_full() => self.pending.push_back(e.into_inner()),
            // The writer is gone; its end is already on the way.
            Err(_) => {}
        }
    }

    /// Moves waiting transmits into the writer's queue while it has room.
    pub(crate) fn refill(&mut self) {
        while let Some(m) = self.pending.pop_front() {
            match self.tx.try_send(m) {
                Ok(()) => {}
                Err(e) if e.is_full() => {
                    self.pending.push_front(e.into_inner());
                    return;
                }
                Err(_) => {
                    self.pending.clear();
                    return;
                }
            }
        }
    }
}

/// What the driver holds for a connection id.
enum Slot {
    /// A dial in progress (aborts its task).
    Dialing(AbortHandle),
    /// An open socket.
    Open(Open),
}

impl Open {
    /// An open connection over its writer queue, read-credit sender and task handles.
    pub(crate) fn new(
        tx: mpsc::Sender<WriterMsg>,
        credits: mpsc::Sender<()>,
        reader: AbortHandle,
        writer: AbortHandle,
    ) -> Self {
        Open {
            tx,
            pending: VecDeque::new(),
            credits,
            reader,
            writer,
            closing: None,
        }
    }

    /// Gives the reader credit for one more read.
    pub(crate) fn credit(&mut self) {
        let _ = self.credits.try_send(());
    }
}

/// What [`Slots::close`] asks of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseStep {
    /// A dial: it is over at once (finish it).
    Finish,
    /// An open connection: its writer flushes, then closes; cut at the linger deadline.
    Lingering,
    /// Unknown, or already closing.
    Nothing,
}

/// Every connection the driver holds, the linger deadlines of those closing, and those whose
/// reads wait until the engine wants to read again.
#[derive(Default)]
pub(crate) struct Slots {
    map: hashbrown::HashMap<ConnId, Slot>,
    /// Linger deadlines of closing connections, earliest first.
    lingers: BTreeSet<(Instant, ConnId)>,
    /// Open connections whose read credit is held back.
    paused: Vec<ConnId>,
}

impl Slots {
    /// Whether no connection is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether `conn` is a dial in progress.
    pub(crate) fn is_dialing(&self, conn: ConnId) -> bool {
        matches!(self.map.get(&conn), Some(Slot::Dialing(_)))
    }

    /// Whether `conn` is an open connection.
    pub(crate) fn is_open(&self, conn: ConnId) -> bool {
        matches!(self.map.get(&conn), Some(Slot::Open(_)))
    }

    /// The open connection `conn`.
    pub(crate) fn open_mut(&mut self, conn: ConnId) -> Option<&mut Open> {
        match self.map.get_mut(&conn) {
            Some(Slot::Open(o)) => Some(o),
            _ => None,
        }
    }

    /// A dial started (its task aborts with `abort`).
    pub(crate) fn dialing(&mut self, conn: ConnId, abort: AbortHandle) {
        self.map.insert(conn, Slot::Dialing(abort));
    }

    /// A connection opened (replaces its dial slot).
    pub(crate) fn opened(&mut self, conn: ConnId, open: Open) {
        self.map.insert(conn, Slot::Open(open));
    }

    /// A dial's task ended on its own (failed): forget it. Returns whether it was a dial.
    pub(crate) fn dial_ended(&mut self, conn: ConnId) -> bool {
        if !self.is_dialing(conn) {
            return false;
        }
        self.map.remove(&conn);
        true
    }

    /// The engine asked to close `conn` at `now`: what to do (see [`CloseStep`]).
    pub(crate) fn close(&mut self, conn: ConnId, now: Instant, linger: Duration) -> CloseStep {
        match self.map.get_mut(&conn) {
            Some(Slot::Dialing(_)) => CloseStep::Finish,
            Some(Slot::Open(o)) if o.closing.is_none() => {
                let at = now + linger;
                o.closing = Some(at);
                o.push(WriterMsg::Close);
                self.lingers.insert((at, conn));
                CloseStep::Lingering
            }
            _ => CloseStep::Nothing,
        }
    }

    /// Forgets `conn` and stops its tasks. Returns whether it was held.
    pub(crate) fn finish(&mut self, conn: ConnId) -> bool {
        let Some(slot) = self.map.remove(&conn) else {
            return false;
        };
        match slot {
            Slot::Dialing(abort) => abort.abort(),
            Slot::Open(o) => {
                o.reader.abort();
                o.writer.abort();
                if let Some(at) = o.closing {
                    self.lingers.remove(&(at, conn));
                }
            }
        }
        true
    }

    /// The earliest linger deadline.
    pub(crate) fn next_linger(&self) -> Option<Instant> {
        self.lingers.first().map(|(t, _)| *t)
    }

    /// A closing connection whose linger deadline passed at `now` (earliest first), taken off
    /// the linger list; finish it.
    pub(crate) fn expired_linger(&mut self, now: Instant) -> Option<ConnId> {
        let &(at, conn) = self.lingers.first()?;
        if at > now {
            return None;
        }
        self.lingers.remove(&(at, conn));
        Some(conn)
    }

    /// Holds back `conn`'s read credit until [`resume`](Self::resume) finds the engine wants
    /// to read it again.
    pub(crate) fn pause(&mut self, conn: ConnId) {
        self.paused.push(conn);
    }

    /// Gives read credit back to paused connections that `wants_read`; closing or gone ones
    /// are dropped from the list.
    pub(crate) fn resume(&mut self, wants_read: impl Fn(ConnId) -> bool) {
        let map = &mut self.map;
        self.paused.retain(|conn| match map.get_mut(conn) {
            Some(Slot::Open(o)) if o.closing.is_none() => {
                if wants_read(*conn) {
                    o.credit();
                    false
                } else {
                    true
                }
            }
            _ => false,
        });
    }

    /// Every held connection, in connection order (not hash order).
    pub(crate) fn ids(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self.map.keys().copied().collect(); // sorted below
        ids.sort_unstable();
        ids
    }

    /// Stops every task and forgets every connection.
    pub(crate) fn abort_all(&mut self) {
        for conn in self.ids() {
            self.finish(conn);
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Instant::now() only anchors the test clock
mod tests {
    use super::*;
    use futures::channel::mpsc::Receiver;

    struct Ends {
        writes: Receiver<WriterMsg>,
        credits: Receiver<()>,
        reader: AbortHandle,
        writer: AbortHandle,
    }

    fn open() -> (Open, Ends) {
        let (tx, writes) = mpsc::channel(4);
        let (credit_tx, credits) = mpsc::channel(4);
        let (reader, _) = AbortHandle::new_pair();
        let (writer, _) = AbortHandle::new_pair();
        let o = Open::new(tx, credit_tx, reader.clone(), writer.clone());
        let ends = Ends {
            writes,
            credits,
            reader,
            writer,
        };
        (o, ends)
    }

    /// Closing a dial finishes it at once; closing an open connection queues `Close` for its
    /// writer and a linger deadline, once.
    #[test]
    fn close_finishes_a_dial_and_lingers_an_open_connection() {
        let now = Instant::now();
        let linger = Duration::from_secs(1);
        let mut s = Slots::default();
        let (dial, _) = AbortHandle::new_pair();
        s.dialing(ConnId(1), dial.clone());
        assert_eq!(s.close(ConnId(1), now, linger), CloseStep::Finish);
        assert!(s.finish(ConnId(1)));
        assert!(dial.is_aborted());
        let (o, mut ends) = open();
        s.opened(ConnId(2), o);
        assert_eq!(s.close(ConnId(2), now, linger), CloseStep::Lingering);
        assert!(matches!(ends.writes.try_recv(), Ok(WriterMsg::Close)));
        assert_eq!(s.close(ConnId(2), now, linger), CloseStep::Nothing);
        assert_eq!(s.close(ConnId(9), now, linger), CloseStep::Nothing);
        assert_eq!(s.next_linger(), Some(now + linger));
    }

    /// Lingers expire in deadline order; finishing a closing connection drops its linger and
    /// aborts both its tasks.
    #[test]
    fn lingers_expire_in_order_and_finish_clears_them() {
        let now = Instant::now();
        let mut s = Slots::default();
        let mut ends = Vec::new();
        for (i, after) in [(1u64, 3u64), (2, 1), (3, 2)] {
            let (o, e) = open();
            s.opened(ConnId(i), o);
            s.close(ConnId(i), now, Duration::from_secs(after));
            ends.push(e);
        }
        assert!(s.finish(ConnId(3)));
        assert!(ends[2].reader.is_aborted() && ends[2].writer.is_aborted());
        assert_eq!(s.expired_linger(now), None);
        let late = now + Duration::from_secs(5);
        assert_eq!(s.expired_linger(late), Some(ConnId(2)));
        assert_eq!(s.expired_linger(late), Some(ConnId(1)));
        assert_eq!(s.expired_linger(late), None);
        assert_eq!(s.ids(), [ConnId(1), ConnId(2)]);
        s.abort_all();
        assert!(s.is_empty() && ends[0].reader.is_aborted());
    }

    /// A paused connection gets its read credit back only once the engine wants to read it;
    /// a closing one is dropped from the list without credit.
    #[test]
    fn paused_connections_resume_when_wanted() {
        let now = Instant::now();
        let mut s = Slots::default();
        let (a, mut ea) = open();
        let (b, mut eb) = open();
        s.opened(ConnId(1), a);
        s.opened(ConnId(2), b);
        s.pause(ConnId(1));
        s.pause(ConnId(2));
        s.close(ConnId(2), now, Duration::from_secs(1));
        s.resume(|_| false);
        assert!(ea.credits.try_recv().is_err(), "no credit yet");
        s.resume(|_| true);
        assert!(matches!(ea.credits.try_recv(), Ok(())));
        assert!(
            eb.credits.try_recv().is_err(),
            "a closing connection gets none"
        );
        assert!(!s.dial_ended(ConnId(1)), "an open connection is not a dial");
    }
}
