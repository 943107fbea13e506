//! The driving loop: one task owns the [`Engine`]; readers, writers, dials, the listener and
//! address-book saves are tasks joined to it by bounded channels.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cometmesh_core::engine::{
    CloseCause, DialFailure, DialName, Engine, Event, Input, Output, SendError,
};
use cometmesh_core::{ChannelId, ConnId, NodeId};
use futures::channel::mpsc::TryRecvError;
use futures::channel::{mpsc, oneshot};
use futures::future::{AbortHandle, Abortable, Either, select};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};

use crate::book_saver::BookSaver;
pub(crate) use crate::command::Command;
use crate::events::Subscribers;
pub(crate) use crate::io_tasks::IoEvent;
use crate::io_tasks::{WriterMsg, accept_loop, dial_failure, read_loop, write_loop};
use crate::persist;
use crate::reactor::Reactors;
use crate::resolve::{Resolver, SystemResolver};
use crate::runtime::{Alarm, Runtime, sleep_until};
use crate::sends::{Gate, Parked, Queued};
use crate::slots::{CloseStep, Open, Slots};
use crate::status::{NodeStatus, PeerStats, PeerStatus};

mod commands;
mod dials;
mod io;

/// Tunables of the driver (set through the builder).
#[derive(Clone, Debug)]
pub(crate) struct DriverConfig {
    /// Shortest time between two address-book saves.
    pub(crate) save_interval: Duration,
    /// Queue length of each event subscriber.
    pub(crate) event_capacity: usize,
    /// Queue length of handle commands.
    pub(crate) command_capacity: usize,
    /// Queue length of IO results into the engine task (plus one slot per IO task).
    pub(crate) io_capacity: usize,
    /// Queue length (in transmits) of each writer; the engine's send budget bounds the rest.
    pub(crate) writer_capacity: usize,
    /// Reads a connection may have in flight before the engine has taken them.
    pub(crate) read_window: usize,
    /// How long a closing connection may take to flush before it is cut.
    pub(crate) linger: Duration,
    /// How long shutdown waits for connections to close.
    pub(crate) shutdown_grace: Duration,
    /// Resolves the names of `Output::DialName`; `None`: the system's ([`SystemResolver`]).
    pub(crate) resolver: Option<Arc<dyn Resolver>>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            save_interval: Duration::from_secs(2),
            event_capacity: 1024,
            command_capacity: 256,
            io_capacity: 1024,
            writer_capacity: 64,
            read_window: 4,
            linger: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(2),
            resolver: None,
        }
    }
}

/// Most queued IO results or commands handled per wake, after the one that woke us.
const BATCH: usize = 256;

struct Stopping {
    replies: Vec<oneshot::Sender<()>>,
    deadline: Instant,
}

enum Wake<R: Runtime> {
    Io(IoEvent<R>),
    Cmd(Option<Command>),
    Timer,
    /// A reactor returned room or dropped its inbox.
    Room,
}

struct Driver<R: Runtime> {
    rt: R,
    engine: Engine,
    cfg: DriverConfig,
    io_tx: mpsc::Sender<IoEvent<R>>,
    io_rx: mpsc::Receiver<IoEvent<R>>,
    cmd_rx: mpsc::Receiver<Command>,
    cmd_open: bool,
    /// Dials and open connections, their linger deadlines and paused reads.
    conns: Slots,
    parked: Parked,
    gate: Arc<Gate>,
    /// `try_send` messages taken from the gate's mailbox (kept for its allocation).
    mail: VecDeque<Queued>,
    reactors: Reactors,
    tasks: FuturesUnordered<R::JoinHandle>,
    subs: Subscribers,
    /// Wakes the task at the next deadline.
    alarm: Alarm<R>,
    book: Option<BookSaver>,
    listener: AbortHandle,
    /// The shared port this node takes connections from, if any.
    routes: Option<crate::shared::Routes<R>>,
    stopping: Option<Stopping>,
    resolver: Arc<dyn Resolver>,
}

/// Starts the listener and the engine task; returns the engine task's handle.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn<R: Runtime>(
    rt: R,
    engine: Engine,
    listener: Option<R::Listener>,
    routes: Option<crate::shared::Routes<R>>,
    cmd_rx: mpsc::Receiver<Command>,
    book_path: Option<PathBuf>,
    cfg: DriverConfig,
    reactors: Reactors,
    gate: Arc<Gate>,
) -> R::JoinHandle {
    let (io_tx, io_rx) = mpsc::channel(cfg.io_capacity);
    let (listener_abort, reg) = AbortHandle::new_pair();
    let tasks = FuturesUnordered::new();
    if let Some(listener) = listener {
        tasks.push(rt.spawn(
            Abortable::new(accept_loop(rt.clone(), listener, io_tx.clone()), reg).map(|_| ()),
        ));
    }
    if let Some(routes) = &routes {
        routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(engine.config().chain_id.clone(), io_tx.clone());
    }
    let alarm = Alarm::new(&rt, rt.now() + Duration::from_secs(3600));
    let driver = Driver {
        engine,
        subs: Subscribers::new(cfg.event_capacity),
        io_tx,
        io_rx,
        cmd_rx,
        cmd_open: true,
        conns: Slots::default(),
        parked: Parked::default(),
        gate,
        mail: VecDeque::new(),
        reactors,
        tasks,
        alarm,
        book: book_path.map(BookSaver::new),
        listener: listener_abort,
        routes,
        stopping: None,
        resolver: cfg
            .resolver
            .clone()
            .unwrap_or_else(|| Arc::new(SystemResolver::new(rt.clone()))),
        cfg,
        rt: rt.clone(),
    };
    rt.spawn(driver.run())
}

impl<R: Runtime> Driver<R> {
    async fn run(mut self) {
        let mut now = self.rt.now();
        loop {
            self.drain(now);
            self.resume_paused();
            self.maybe_save(now);
            if let Some(s) = &self.stopping
                && (self.conns.is_empty() || now >= s.deadline)
            {
                break;
            }
            if !self.cmd_open && self.stopping.is_none() {
                self.begin_stop(now, None);
                continue;
            }
            let deadline = self.next_deadline(now);
            if let Some(at) = deadline {
                self.alarm.set(at);
            }
            // What was routed to reactors this pass goes out now, one lock and wake per inbox.
            self.reactors.flush();
            let wake = std::future::poll_fn(|cx| self.poll_wake(cx, deadline.is_some())).await;
            // `now` is read once per wake.
            now = self.rt.now();
            match wake {
                Wake::Io(ev) => self.on_io(now, ev),
                Wake::Cmd(Some(cmd)) => self.on_cmd(now, cmd),
                Wake::Cmd(None) => self.cmd_open = false,
                Wake::Timer => {}
                Wake::Room => {
                    self.reactors.collect(&mut self.engine, now);
                    self.drain(now);
                }
            }
            self.take_mail(now);
            for _ in 0..BATCH {
                match self.io_rx.try_recv() {
                    Ok(ev) => self.on_io(now, ev),
                    Err(_) => break,
                }
            }
            for _ in 0..BATCH {
                if !self.cmd_open {
                    break;
                }
                match self.cmd_rx.try_recv() {
                    Ok(cmd) => self.on_cmd(now, cmd),
                    Err(TryRecvError::Closed) => self.cmd_open = false,
                    Err(TryRecvError::Empty) => break,
                }
            }
            self.on_timers(now);
            for (peer, channel) in self.gate.take_busy() {
                self.event(now, Event::SendReady { peer, channel });
            }
        }
        self.teardown().await;
    }

    fn poll_wake(&mut self, cx: &mut Context<'_>, timed: bool) -> Poll<Wake<R>> {
        // Room returned by reactors first: under a read flood it must not wait.
        if self.reactors.notify().poll(cx) {
            return Poll::Ready(Wake::Room);
        }
        // Reap finished tasks first, so that their handles never pile up under load.
        for _ in 0..BATCH {
            if self.tasks.is_empty() {
                break;
            }
            match self.tasks.poll_next_unpin(cx) {
                Poll::Ready(Some(())) => {}
                _ => break,
            }
        }
        if let Poll::Ready(Some(ev)) = self.io_rx.poll_next_unpin(cx) {
            return Poll::Ready(Wake::Io(ev));
        }
        if self.cmd_open
            && let Poll::Ready(cmd) = self.cmd_rx.poll_next_unpin(cx)
        {
            return Poll::Ready(Wake::Cmd(cmd));
        }
        if timed && self.alarm.poll(cx) {
            return Poll::Ready(Wake::Timer);
        }
        Poll::Pending
    }

    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let book = self
            .book
            .as_ref()
            .and_then(|b| b.due(now, self.cfg.save_interval));
        [
            self.engine.poll_timeout(),
            self.conns.next_linger(),
            book,
            self.stopping.as_ref().map(|s| s.deadline),
            self.parked.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_timers(&mut self, now: Instant) {
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
            self.drain(now);
        }
        while let Some(conn) = self.conns.expired_linger(now) {
            tracing::debug!(%conn, "closing connection did not flush in time: cut");
            self.finish_conn(now, conn, CloseCause::Local);
        }
        self.parked.expire(now);
        self.drain(now);
    }

    /// Carries out every queued engine output.
    fn drain(&mut self, now: Instant) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Transmit { conn, data } => {
                    if let Some(o) = self.conns.open_mut(conn) {
                        o.push(WriterMsg::Data(data));
                    }
                }
                Output::Dial { conn, addr } => self.dial(conn, addr),
                Output::DialName { conn, name } => self.dial_name(conn, name),
                Output::Close { conn } => self.close(now, conn),
                Output::Event(ev) => self.event(now, ev),
            }
        }
    }

    fn event(&mut self, now: Instant, ev: Event) {
        match &ev {
            Event::AddrBookDirty => {
                if let Some(b) = &mut self.book {
                    b.mark_dirty();
                }
            }
            Event::PeerUp {
                peer,
                direction,
                info,
                ..
            } => {
                tracing::info!(%peer, ?direction, moniker = %info.moniker, "peer up");
                self.gate.peer_up(*peer);
            }
            Event::PeerDown { peer, reason } => {
                tracing::info!(%peer, %reason, "peer down");
                self.parked.drop_peer(*peer);
                self.gate.peer_down(*peer);
            }
            Event::DialFailed { addr, reason } => {
                tracing::debug!(%addr, %reason, "dial failed");
            }
            Event::InboundFailed { remote, reason } => {
                tracing::debug!(%remote, %reason, "inbound connection failed");
            }
            Event::SendReady { peer, channel } => {
                let (peer, ch) = (*peer, *channel);
                if !self.retry(now, peer, ch) {
                    // Parked sends took the room: the edge is for later.
                    return;
                }
                self.gate.set_full(peer, ch, false);
            }
            _ => {}
        }
        if self.reactors.route(&ev) {
            return;
        }
        self.subs.publish(&ev);
    }

    /// Retries the sends parked for `peer` on `ch`; true when none is left.
    fn retry(&mut self, now: Instant, peer: NodeId, ch: ChannelId) -> bool {
        let Driver { parked, engine, .. } = self;
        parked.retry(peer, ch, |payload| engine.send(now, peer, ch, payload))
    }

    /// The engine asked to close `conn`: flush what was handed out, then shut the socket.
    fn close(&mut self, now: Instant, conn: ConnId) {
        if self.conns.close(conn, now, self.cfg.linger) == CloseStep::Finish {
            self.finish_conn(now, conn, CloseCause::Local);
        }
    }

    /// The connection is over: stop its tasks and give the engine its terminal input.
    fn finish_conn(&mut self, now: Instant, conn: ConnId, cause: CloseCause) {
        if !self.conns.finish(conn) {
            return;
        }
        let _ = self.engine.handle_input(now, Input::Closed { conn, cause });
    }

    /// Gives read credit back to connections the engine wants to read again.
    fn resume_paused(&mut self) {
        let engine = &self.engine;
        self.conns.resume(|conn| engine.wants_read(conn));
    }

    fn maybe_save(&mut self, now: Instant) {
        let Some(b) = &mut self.book else {
            return;
        };
        if !b.begin(now, self.cfg.save_interval) {
            return;
        }
        let bytes = self.engine.addr_book().encode();
        let path = b.path().to_path_buf();
        let job = self
            .rt
            .spawn_blocking(move || persist::write_atomic(&path, &bytes));
        let mut io = self.io_tx.clone();
        self.tasks.push(self.rt.spawn(async move {
            let r = job.await;
            let _ = io.send(IoEvent::Saved(r)).await;
        }));
    }

    fn begin_stop(&mut self, now: Instant, reply: Option<oneshot::Sender<()>>) {
        if let Some(s) = &mut self.stopping {
            s.replies.extend(reply);
            return;
        }
        tracing::info!("node shutting down");
        self.listener.abort();
        if let Some(routes) = &self.routes {
            routes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&self.engine.config().chain_id);
        }
        self.stopping = Some(Stopping {
            replies: reply.into_iter().collect(),
            deadline: now + self.cfg.shutdown_grace,
        });
        if let Some(b) = &mut self.book {
            b.set_anchors(self.engine.anchors(now));
        }
        let peers: Vec<NodeId> = self.engine.peers().map(|p| p.id).collect();
        for p in peers {
            self.engine.disconnect(now, p);
        }
        self.drain(now);
        // Connections that are not peers yet (handshakes, dials) are closed too.
        for conn in self.conns.ids() {
            self.close(now, conn);
        }
        self.drain(now);
    }

    async fn teardown(mut self) {
        self.conns.abort_all();
        self.listener.abort();
        // A save in flight finishes before the last one starts (they share the temp file).
        let limit = self.rt.now() + Duration::from_secs(5);
        while self.book.as_ref().is_some_and(BookSaver::in_flight) {
            let next = pin!(self.io_rx.next());
            match select(next, pin!(sleep_until(&self.rt, limit))).await {
                Either::Left((Some(IoEvent::Saved(r)), _)) => {
                    if let Some(b) = &mut self.book {
                        b.saved(&r);
                    }
                }
                Either::Left((Some(_), _)) => {}
                Either::Left((None, _)) | Either::Right(_) => break,
            }
        }
        if let Some(b) = &self.book {
            b.save_final(&self.rt, self.engine.addr_book().encode())
                .await;
        }
        self.subs.close();
        self.reactors.close();
        self.parked.clear();
        self.gate.clear();
        // Join every task (they were aborted, or are about to end); bounded.
        drop(self.io_rx);
        let mut tasks = std::mem::take(&mut self.tasks);
        let join = pin!(async move { while tasks.next().await.is_some() {} });
        let limit = self.rt.now() + Duration::from_secs(2);
        if let Either::Right(_) = select(join, pin!(sleep_until(&self.rt, limit))).await {
            tracing::warn!("some node tasks did not finish within 2 s");
        }
        if let Some(s) = self.stopping.take() {
            for r in s.replies {
                let _ = r.send(());
            }
        }
    }
}
