//! The driver's connection slots: a dial in progress, or an open connection with its writer
//! queue, read credit, tasks and linger deadline.

use std::collections::VecDeque;
use std::time::Instant;

use futures::channel::mpsc;
use futures::future::AbortHandle;

use crate::io_tasks::WriterMsg;

/// An open connection: its writer queue, read credit, tasks and linger deadline.
pub(crate) struct Open {
    /// The writer's queue.
    pub(crate) tx: mpsc::Sender<WriterMsg>,
    /// Transmits the writer's queue could not take yet (bounded by the engine's send budget).
    pub(crate) pending: VecDeque<WriterMsg>,
    /// Read credit for the reader.
    pub(crate) credits: mpsc::Sender<()>,
    /// Aborts the reader task.
    pub(crate) reader: AbortHandle,
    /// Aborts the writer task.
    pub(crate) writer: AbortHandle,
    /// Set once `Close` was queued: the linger deadline.
    pub(crate) closing: Option<Instant>,
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
pub(crate) enum Slot {
    /// A dial in progress (aborts its task).
    Dialing(AbortHandle),
    /// An open socket.
    Open(Open),
}
