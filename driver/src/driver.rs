//! The driving loop: one task owns the [`Engine`]; readers, writers, dials, the listener and
//! address-book saves are tasks joined to it by bounded channels.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::{Pin, pin};
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

pub(crate) use crate::command::Command;
use crate::events::Subscribers;
pub(crate) use crate::io_tasks::IoEvent;
use crate::io_tasks::{WriterMsg, accept_loop, dial_failure, read_loop, write_loop};
use crate::persist;
use crate::reactor::Reactors;
use crate::resolve::{Resolver, SystemResolver};
use crate::runtime::{Runtime, sleep_until};
use crate::sends::{Gate, Parked, Queued};
use crate::status::{NodeStatus, PeerStats, PeerStatus};

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

struct Open {
    tx: mpsc::Sender<WriterMsg>,
    /// Transmits the writer's queue could not take yet (bounded by the engine's send budget).
    pending: VecDeque<WriterMsg>,
    credits: mpsc::Sender<()>,
    reader: AbortHandle,
    writer: AbortHandle,
    /// Set once `Close` was queued: the linger deadline.
    closing: Option<Instant>,
    stats: PeerStats,
}

impl Open {
    fn push(&mut self, msg: WriterMsg) {
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

    fn refill(&mut self) {
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

enum Slot {
    Dialing(AbortHandle),
    Open(Open),
}

struct BookSaver {
    path: PathBuf,
    dirty: bool,
    in_flight: bool,
    last: Option<Instant>,
    /// The engine's anchors taken when the shutdown began (G12), saved beside the book.
    anchors: Vec<cometmesh_core::addr::NetAddr>,
}

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
    conns: hashbrown::HashMap<ConnId, Slot>,
    lingers: BTreeSet<(Instant, ConnId)>,
    paused: Vec<ConnId>,
    parked: Parked,
    gate: Arc<Gate>,
    /// `try_send` messages taken from the gate's mailbox (kept for its allocation).
    mail: VecDeque<Queued>,
    reactors: Reactors,
    tasks: FuturesUnordered<R::JoinHandle>,
    subs: Subscribers,
    timer: R::Timer,
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
    let timer = rt.timer(rt.now() + Duration::from_secs(3600));
    let driver = Driver {
        engine,
        subs: Subscribers::new(cfg.event_capacity),
        io_tx,
        io_rx,
        cmd_rx,
        cmd_open: true,
        conns: hashbrown::HashMap::new(),
        lingers: BTreeSet::new(),
        paused: Vec::new(),
        parked: Parked::default(),
        gate,
        mail: VecDeque::new(),
        reactors,
        tasks,
        timer,
        book: book_path.map(|path| BookSaver {
            path,
            dirty: false,
            in_flight: false,
            last: None,
            anchors: Vec::new(),
        }),
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
                R::reset_timer(&mut self.timer, at);
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
        if timed && Pin::new(&mut self.timer).poll(cx).is_ready() {
            return Poll::Ready(Wake::Timer);
        }
        Poll::Pending
    }

    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let book = self.book.as_ref().and_then(|b| {
            (b.dirty && !b.in_flight).then(|| b.last.map_or(now, |t| t + self.cfg.save_interval))
        });
        [
            self.engine.poll_timeout(),
            self.lingers.first().map(|(t, _)| *t),
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
        while let Some(&(at, conn)) = self.lingers.first() {
            if at > now {
                break;
            }
            self.lingers.remove(&(at, conn));
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
                    if let Some(Slot::Open(o)) = self.conns.get_mut(&conn) {
                        o.push(WriterMsg::Data(data));
                    }
                }
                Output::Dial { conn, addr } => self.dial(now, conn, addr),
                Output::DialName { conn, name } => self.dial_name(now, conn, name),
                Output::Close { conn } => self.close(now, conn),
                Output::Event(ev) => self.event(now, ev),
            }
        }
    }

    fn event(&mut self, now: Instant, ev: Event) {
        match &ev {
            Event::AddrBookDirty => {
                if let Some(b) = &mut self.book {
                    b.dirty = true;
                }
            }
            Event::Message { peer, .. } => {
                if let Some(conn) = self.engine.peer(peer).map(|p| p.conn)
                    && let Some(Slot::Open(o)) = self.conns.get_mut(&conn)
                {
                    o.stats.messages_received += 1;
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
        let Driver {
            parked,
            engine,
            conns,
            ..
        } = self;
        parked.retry(peer, ch, |payload| {
            send_counted(engine, conns, now, peer, ch, payload)
        })
    }

    fn dial(&mut self, now: Instant, conn: ConnId, addr: SocketAddr) {
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
    fn dial_name(&mut self, now: Instant, conn: ConnId, name: DialName) {
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

    /// The engine asked to close `conn`: flush what was handed out, then shut the socket.
    fn close(&mut self, now: Instant, conn: ConnId) {
        match self.conns.get_mut(&conn) {
            Some(Slot::Dialing(_)) => self.finish_conn(now, conn, CloseCause::Local),
            Some(Slot::Open(o)) if o.closing.is_none() => {
                let at = now + self.cfg.linger;
                o.closing = Some(at);
                o.push(WriterMsg::Close);
                self.lingers.insert((at, conn));
            }
            _ => {}
        }
    }

    /// The connection is over: stop its tasks and give the engine its terminal input.
    fn finish_conn(&mut self, now: Instant, conn: ConnId, cause: CloseCause) {
        let Some(slot) = self.conns.remove(&conn) else {
            return;
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
        let _ = self.engine.handle_input(now, Input::Closed { conn, cause });
    }

    /// Spawns the reader and the writer of a connection.
    fn open(&mut self, conn: ConnId, reader: R::Reader, writer: R::Writer) {
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
        self.conns.insert(
            conn,
            Slot::Open(Open {
                tx,
                pending: VecDeque::new(),
                credits,
                reader: reader_abort,
                writer: writer_abort,
                closing: None,
                stats: PeerStats::default(),
            }),
        );
    }

    fn on_io(&mut self, now: Instant, ev: IoEvent<R>) {
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
                if matches!(self.conns.get(&conn), Some(Slot::Dialing(_))) {
                    self.open(conn, reader, writer);
                    let _ = self.engine.handle_input(now, Input::Connected { conn });
                }
            }
            IoEvent::Resolved { conn, addr } => {
                if matches!(self.conns.get(&conn), Some(Slot::Dialing(_))) {
                    let _ = self
                        .engine
                        .handle_input(now, Input::Resolved { conn, addr });
                }
            }
            IoEvent::DialFailed { conn, error } => {
                if matches!(self.conns.get(&conn), Some(Slot::Dialing(_))) {
                    self.conns.remove(&conn);
                    let _ = self
                        .engine
                        .handle_input(now, Input::DialFailed { conn, error });
                }
            }
            IoEvent::Read { conn, bytes } => {
                if let Some(Slot::Open(o)) = self.conns.get_mut(&conn) {
                    o.stats.bytes_received += bytes.len() as u64;
                    let _ = self
                        .engine
                        .handle_input(now, Input::Received { conn, bytes });
                    if self.engine.wants_read(conn) {
                        let _ = o.credits.try_send(());
                    } else {
                        self.paused.push(conn);
                    }
                }
            }
            IoEvent::Flushed { conn, len } => {
                if let Some(Slot::Open(o)) = self.conns.get_mut(&conn) {
                    o.stats.bytes_sent += len as u64;
                    if len > 0 {
                        let _ = self.engine.handle_input(now, Input::Sent { conn, len });
                    }
                    o.refill();
                }
            }
            IoEvent::ReadEnd { conn, cause } => {
                if matches!(self.conns.get(&conn), Some(Slot::Open(_))) {
                    self.finish_conn(now, conn, cause);
                }
            }
            IoEvent::WriteEnd { conn, cause } => {
                if matches!(self.conns.get(&conn), Some(Slot::Open(_))) {
                    self.finish_conn(now, conn, cause.unwrap_or(CloseCause::Local));
                }
            }
            IoEvent::Saved(r) => {
                if let Some(b) = &mut self.book {
                    b.in_flight = false;
                    if let Err(e) = r {
                        tracing::warn!(path = %b.path.display(), error = %e, "address book not saved");
                    }
                }
            }
        }
        self.drain(now);
    }

    /// Carries out the `try_send` messages of the gate's mailbox, in order.
    fn take_mail(&mut self, now: Instant) {
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

    fn on_cmd(&mut self, now: Instant, cmd: Command) {
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
                let peers: Vec<NodeId> = self.engine.peers().map(|p| p.id).collect();
                let n = peers
                    .into_iter()
                    .filter(|p| self.send(now, *p, channel, payload.clone()).is_ok())
                    .count();
                let _ = reply.send(n);
            }
            Command::BroadcastExcept {
                channel,
                payload,
                except,
                reply,
            } => {
                let outcomes = self.engine.broadcast_except(now, channel, &payload, except);
                for (peer, r) in &outcomes {
                    match r {
                        Ok(()) => count_sent(&self.engine, &mut self.conns, *peer),
                        Err(SendError::Full(_)) => self.gate.set_full(*peer, channel, true),
                        Err(_) => {}
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
                    .map(|p| PeerStatus {
                        stats: match self.conns.get(&p.conn) {
                            Some(Slot::Open(o)) => o.stats,
                            _ => PeerStats::default(),
                        },
                        conn: self.engine.conn_stats(&p.id).unwrap_or_default(),
                        info: p.clone(),
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

    fn send(
        &mut self,
        now: Instant,
        peer: NodeId,
        channel: ChannelId,
        payload: Bytes,
    ) -> Result<(), SendError> {
        send_counted(
            &mut self.engine,
            &mut self.conns,
            now,
            peer,
            channel,
            payload,
        )
    }

    /// Gives read credit back to connections the engine wants to read again.
    fn resume_paused(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let engine = &self.engine;
        let conns = &mut self.conns;
        self.paused.retain(|conn| match conns.get_mut(conn) {
            Some(Slot::Open(o)) if o.closing.is_none() => {
                if engine.wants_read(*conn) {
                    let _ = o.credits.try_send(());
                    false
                } else {
                    true
                }
            }
            _ => false,
        });
    }

    fn maybe_save(&mut self, now: Instant) {
        let Some(b) = &mut self.book else {
            return;
        };
        if !b.dirty || b.in_flight || b.last.is_some_and(|t| now < t + self.cfg.save_interval) {
            return;
        }
        b.dirty = false;
        b.in_flight = true;
        b.last = Some(now);
        let bytes = self.engine.addr_book().encode();
        let path = b.path.clone();
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
            b.anchors = self.engine.anchors(now);
        }
        let peers: Vec<NodeId> = self.engine.peers().map(|p| p.id).collect();
        for p in peers {
            self.engine.disconnect(now, p);
        }
        self.drain(now);
        // Connections that are not peers yet (handshakes, dials) are closed too.
        let mut rest: Vec<ConnId> = self.conns.keys().copied().collect();
        rest.sort_unstable(); // in connection order, not hash order
        for conn in rest {
            self.close(now, conn);
        }
        self.drain(now);
    }

    async fn teardown(mut self) {
        for (_, slot) in self.conns.drain() {
            match slot {
                Slot::Dialing(a) => a.abort(),
                Slot::Open(o) => {
                    o.reader.abort();
                    o.writer.abort();
                }
            }
        }
        self.listener.abort();
        // A save in flight finishes before the last one starts (they share the temp file).
        let limit = self.rt.now() + Duration::from_secs(5);
        while self.book.as_ref().is_some_and(|b| b.in_flight) {
            let next = pin!(self.io_rx.next());
            match select(next, pin!(sleep_until(&self.rt, limit))).await {
                Either::Left((Some(IoEvent::Saved(_)), _)) => {
                    if let Some(b) = &mut self.book {
                        b.in_flight = false;
                    }
                }
                Either::Left((Some(_), _)) => {}
                Either::Left((None, _)) | Either::Right(_) => break,
            }
        }
        if let Some(b) = &self.book {
            let bytes = self.engine.addr_book().encode();
            let path = b.path.clone();
            match self
                .rt
                .spawn_blocking(move || persist::write_atomic(&path, &bytes))
                .await
            {
                Ok(()) => tracing::info!(path = %b.path.display(), "address book saved"),
                Err(e) => {
                    tracing::warn!(path = %b.path.display(), error = %e, "address book not saved");
                }
            }
            if !b.anchors.is_empty() {
                let bytes = cometmesh_core::engine::anchors::encode(&b.anchors);
                let path = persist::anchors_path(&b.path);
                let n = b.anchors.len();
                match self
                    .rt
                    .spawn_blocking(move || persist::write_atomic(&path, &bytes))
                    .await
                {
                    Ok(()) => tracing::info!(anchors = n, "anchors saved"),
                    Err(e) => tracing::warn!(error = %e, "anchors not saved"),
                }
            }
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

/// Queues a message in the engine and counts it in the peer's stats.
fn send_counted(
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

fn count_sent(engine: &Engine, conns: &mut hashbrown::HashMap<ConnId, Slot>, peer: NodeId) {
    if let Some(conn) = engine.peer(&peer).map(|p| p.conn)
        && let Some(Slot::Open(o)) = conns.get_mut(&conn)
    {
        o.stats.messages_sent += 1;
    }
}
