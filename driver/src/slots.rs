//! The driver's connection slots: a dial in progress, or an open connection with its writer
//! queue, read credit, tasks and linger deadline.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use cometmesh_core::engine::{Engine, SendError};
use cometmesh_core::{ChannelId, ConnId, NodeId};
use futures::channel::mpsc;
use futures::future::AbortHandle;

use crate::io_tasks::WriterMsg;
use crate::status::PeerStats;

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
    /// Traffic counted by the driver.
    pub(crate) stats: PeerStats,
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

/// Queues a message in the engine and counts it in the peer's stats.
pub(crate) fn send_counted(
    engine: &mut Engine,
    conns: &mut hashbrown::HashMap<ConnId, Slot>,
    now: Instant,
    peer: NodeId,
    channel: ChannelId,
    payload: Bytes,
) -> Result<(), SendError> {
    engine.send(now, peer, channel, payload)?;
    count_sent(engine, conns, peer);
    Ok(())
}

/// Counts one message queued for `peer` in its connection's stats.
pub(crate) fn count_sent(
    engine: &Engine,
    conns: &mut hashbrown::HashMap<ConnId, Slot>,
    peer: NodeId,
) {
    if let Some(conn) = engine.peer(&peer).map(|p| p.conn)
        && let Some(Slot::Open(o)) = conns.get_mut(&conn)
    {
        o.stats.messages_sent += 1;
    }
}
