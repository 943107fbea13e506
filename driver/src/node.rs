//! The public face: [`NodeBuilder`], [`Node`] and its cloneable [`Handle`].

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cometmesh_core::addr::NetAddr;
use cometmesh_core::engine::{
    BanOutcome, ChannelDescriptor, ConfigError, ConnFilter, DialError, Engine, EngineConfig,
    PeerFilter, SendError,
};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::{ChannelId, ConnId, NodeId};
use futures::SinkExt;
use futures::channel::{mpsc, oneshot};

use crate::driver::{self, Command, DriverConfig};
use crate::events::EventStream;
use crate::persist;
use crate::reactor::{Inbox, Notify, Reactors};
use crate::runtime::Runtime;
use crate::sends::{Gate, Verdict};
use crate::shared::{PortJoin, SharedPort};
use crate::status::{NodeStatus, PeerStatus};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The engine refused the configuration or a channel.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// The node's key is not the key of the shared port it joins.
    #[error("node key {node_key} is not the key {port_key} of the shared port {addr}")]
    SharedPortKey {
        /// The port.
        addr: SocketAddr,
        /// The id of the port's key.
        port_key: NodeId,
        /// The id of the node's key.
        node_key: NodeId,
    },
    /// Another node of the same chain is already on the shared port.
    #[error("chain {chain_id:?} already has a node on the shared port {addr}")]
    SharedPortChain {
        /// The port.
        addr: SocketAddr,
        /// The chain id.
        chain_id: String,
    },
    /// The address book file could not be read (a corrupt one is moved aside instead).
    #[error("cannot read the address book {path}: {source}")]
    AddrBook {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

/// Why a [`Handle`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// The engine refused the message (a full queue hands it back in `SendError::Full`).
    #[error("send: {0}")]
    Send(#[from] SendError),
    /// The engine refused the dial.
    #[error("dial: {0}")]
    Dial(#[from] DialError),
}

/// Builds and starts a [`Node`] on runtime `R`. Application channels and reactors are
/// registered here, before anything can arrive.
#[must_use]
pub struct NodeBuilder<R: Runtime> {
    rt: R,
    config: EngineConfig,
    key: NodeKey,
    channels: Vec<ChannelDescriptor>,
    book_path: Option<PathBuf>,
    seed: Option<[u8; 32]>,
    driver: DriverConfig,
    reactors: Reactors,
    conn_filter: Option<ConnFilter>,
    peer_filter: Option<PeerFilter>,
    shared: Option<PortJoin<R>>,
}

impl<R: Runtime> std::fmt::Debug for NodeBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("config", &self.config)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> NodeBuilder<R> {
    /// A builder for a node with `config` and identity `key`, running on `rt`.
    pub fn new(rt: R, config: EngineConfig, key: NodeKey) -> Self {
        NodeBuilder {
            rt,
            config,
            key,
            channels: Vec::new(),
            book_path: None,
            seed: None,
            driver: DriverConfig::default(),
            reactors: Reactors::default(),
            conn_filter: None,
            peer_filter: None,
            shared: None,
        }
    }

    /// Takes inbound connections from a [`SharedPort`] (with the other chains on it) instead
    /// of binding `listen_addr`: the node advertises the port's address, and its key must be
    /// the port's ([`StartError::SharedPortKey`]); one node per chain id on a port
    /// ([`StartError::SharedPortChain`]).
    pub fn shared_port(mut self, port: &SharedPort<R>) -> Self {
        self.shared = Some(port.join());
        self
    }

    /// The resolver of seeds' and persistent peers' DNS names, asked at every dial by name
    /// (default: the system's, [`SystemResolver`](crate::SystemResolver)).
    pub fn resolver(mut self, resolver: Arc<dyn crate::Resolver>) -> Self {
        self.driver.resolver = Some(resolver);
        self
    }

    /// Registers an application channel without a reactor: its messages go to the lossy
    /// monitoring stream ([`Handle::events`]). Prefer [`reactor`](Self::reactor).
    pub fn channel(mut self, desc: ChannelDescriptor) -> Self {
        self.channels.push(desc);
        self
    }

    /// Registers an application channel with a reactor and returns the reactor's [`Inbox`]:
    /// every message of the channel, losslessly, at most `window` of them queued (beyond
    /// that the sending peers' reads pause), with every peer's `PeerUp` and `PeerDown` in
    /// order. See the [crate docs](crate#reactors) for the guarantees.
    ///
    /// # Panics
    ///
    /// If `desc.id` already has a reactor.
    pub fn reactor(&mut self, desc: ChannelDescriptor, window: usize) -> Inbox {
        assert!(
            !self.reactors.has(desc.id),
            "channel {} already has a reactor",
            desc.id
        );
        let inbox = self.reactors.add(Some(desc.id), window);
        self.channels.push(desc);
        inbox
    }

    /// A lifecycle-only inbox: every peer's `PeerUp` and `PeerDown`, in order, none lost.
    pub fn peer_events(&mut self) -> Inbox {
        self.reactors.add(None, 1)
    }

    /// A connection filter, run inside the engine on the remote address of every inbound
    /// connection and dial, before the handshake (CometBFT's `ConnFilters`).
    pub fn conn_filter(mut self, filter: ConnFilter) -> Self {
        self.conn_filter = Some(filter);
        self
    }

    /// A peer filter, run inside the engine on every authenticated NodeInfo, after the
    /// handshake (CometBFT's `PeerFilters`).
    pub fn peer_filter(mut self, filter: PeerFilter) -> Self {
        self.peer_filter = Some(filter);
        self
    }

    /// Loads the address book from `path` at start and saves it there (atomically) when it
    /// changes, at most once per [`save_interval`](Self::save_interval), and at shutdown.
    pub fn addr_book_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.book_path = Some(path.into());
        self
    }

    /// The engine's RNG seed (default: from the OS). Fixed seeds are for tests.
    pub fn seed(mut self, seed: [u8; 32]) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Shortest time between two address-book saves (default 2 s).
    pub fn save_interval(mut self, d: Duration) -> Self {
        self.driver.save_interval = d;
        self
    }

    /// Events each subscriber may have queued before it loses some (default 1024).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.driver.event_capacity = n;
        self
    }

    /// Binds the listener, builds the engine, loads the address book and starts the driver.
    ///
    /// A `listen_addr` with port 0 gets a free port; the bound address is advertised.
    pub async fn start(self) -> Result<Node<R>, StartError> {
        let NodeBuilder {
            rt,
            mut config,
            key,
            channels,
            book_path,
            seed,
            driver: dcfg,
            reactors,
            conn_filter,
            peer_filter,
            shared,
        } = self;
        let (listener, local, routes) = match shared {
            Some(join) => {
                if join.node_id != key.node_id() {
                    return Err(StartError::SharedPortKey {
                        addr: join.addr,
                        port_key: join.node_id,
                        node_key: key.node_id(),
                    });
                }
                let taken = join
                    .routes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .contains_key(&config.chain_id);
                if taken {
                    return Err(StartError::SharedPortChain {
                        addr: join.addr,
                        chain_id: config.chain_id.clone(),
                    });
                }
                (None, join.addr, Some(join.routes))
            }
            None => {
                let listener =
                    rt.bind(config.listen_addr)
                        .await
                        .map_err(|source| StartError::Listen {
                            addr: config.listen_addr,
                            source,
                        })?;
                let local = R::local_addr(&listener).map_err(|source| StartError::Listen {
                    addr: config.listen_addr,
                    source,
                })?;
                (Some(listener), local, None)
            }
        };
        config.listen_addr = local;
        let seed = seed.unwrap_or_else(|| {
            let mut s = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut s);
            s
        });
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let now = rt.now();
        let mut engine = Engine::new(config, key, seed, now, unix_now)?;
        for c in channels {
            engine.add_channel(c)?;
        }
        reactors.install(&mut engine, now);
        if let Some(f) = conn_filter {
            engine.set_conn_filter(f);
        }
        if let Some(f) = peer_filter {
            engine.set_peer_filter(f);
        }
        if let Some(path) = &book_path {
            load_book(&rt, &mut engine, path).await?;
            dial_anchors(&rt, &mut engine, path, now).await;
        }
        let node_id = engine.node_id();
        let (cmd_tx, cmd_rx) = mpsc::channel(dcfg.command_capacity);
        let gate = Arc::new(Gate::default());
        let wake = reactors.notify().clone();
        let task = driver::spawn(
            rt,
            engine,
            listener,
            routes,
            cmd_rx,
            book_path,
            dcfg,
            reactors,
            gate.clone(),
        );
        Ok(Node {
            handle: Handle {
                cmd: cmd_tx,
                gate,
                wake,
                node_id,
                listen_addr: local,
            },
            task: Some(task),
        })
    }
}

/// A saved book larger than this is not read (a full book is about 8 MiB).
const MAX_BOOK_FILE: u64 = 64 << 20;

/// Reads and deletes the anchors saved beside the book at the last shutdown (G12) and dials
/// them before the engine picks anything from the book. A missing or unreadable file only
/// means no anchors.
async fn dial_anchors<R: Runtime>(
    rt: &R,
    engine: &mut Engine,
    book: &std::path::Path,
    now: std::time::Instant,
) {
    let path = persist::anchors_path(book);
    let p = path.clone();
    let read = rt
        .spawn_blocking(move || {
            let bytes = persist::read_if_exists(&p, 4096)?;
            persist::remove_if_exists(&p)?;
            Ok::<_, std::io::Error>(bytes)
        })
        .await;
    let anchors = match read {
        Ok(Some(bytes)) => match cometmesh_core::engine::anchors::decode(&bytes) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "anchors file ignored");
                return;
            }
        },
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "anchors file not read");
            return;
        }
    };
    let n = engine.dial_anchors(now, &anchors);
    tracing::info!(
        anchors = anchors.len(),
        dialled = n,
        "anchors dialled first"
    );
}

/// Loads a saved book; a file the engine cannot read is moved aside with a warning.
async fn load_book<R: Runtime>(
    rt: &R,
    engine: &mut Engine,
    path: &std::path::Path,
) -> Result<(), StartError> {
    let p = path.to_owned();
    let read = rt
        .spawn_blocking(move || persist::read_if_exists(&p, MAX_BOOK_FILE))
        .await;
    let bytes = match read {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(()),
        Err(source) => {
            return Err(StartError::AddrBook {
                path: path.to_owned(),
                source,
            });
        }
    };
    let loaded = if bytes.len() as u64 > MAX_BOOK_FILE {
        Err(format!("larger than {MAX_BOOK_FILE} bytes"))
    } else {
        engine.load_addr_book(&bytes).map_err(|e| e.to_string())
    };
    let Err(e) = loaded else {
        tracing::info!(path = %path.display(), entries = engine.addr_book().len(), "address book loaded");
        return Ok(());
    };
    let p = path.to_owned();
    match rt.spawn_blocking(move || persist::move_aside(&p)).await {
        Ok(aside) => tracing::warn!(
            path = %path.display(),
            moved_to = %aside.display(),
            error = %e,
            "address book is corrupt or not ours: moved aside, starting from the seeds"
        ),
        Err(io) => tracing::warn!(
            path = %path.display(),
            error = %e,
            rename_error = %io,
            "address book is corrupt or not ours and could not be moved aside; starting from the seeds (it will be overwritten)"
        ),
    }
    Ok(())
}

/// A running node: a [`Handle`] (through `Deref`) that also owns the driver task.
/// Call [`shutdown`](Node::shutdown) to stop it gracefully; dropping every handle stops it too.
#[derive(Debug)]
pub struct Node<R: Runtime> {
    handle: Handle,
    task: Option<R::JoinHandle>,
}

impl<R: Runtime> Node<R> {
    /// A cloneable handle to the node.
    #[must_use]
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stops the node: peers are disconnected, the address book saved, every task joined.
    pub async fn shutdown(mut self) {
        self.handle.shutdown().await;
        if let Some(t) = self.task.take() {
            t.await;
        }
    }
}

impl<R: Runtime> Deref for Node<R> {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

/// A cloneable handle to a running node. Every call is a message to the task that owns the
/// engine; it fails with [`NodeError::Stopped`] once the node has stopped.
#[derive(Clone, Debug)]
pub struct Handle {
    cmd: mpsc::Sender<Command>,
    gate: Arc<Gate>,
    /// Wakes the engine task (after marking a `try_send` busy).
    wake: Arc<Notify>,
    node_id: NodeId,
    listen_addr: SocketAddr,
}

impl Handle {
    /// Our node id.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The address the listener is bound to.
    #[must_use]
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Our address as peers dial it: `id@listen_addr`.
    #[must_use]
    pub fn net_addr(&self) -> NetAddr {
        NetAddr::new(self.node_id, self.listen_addr)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .clone()
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Queues `payload` for `peer` on `channel`. A full channel queue is
    /// `NodeError::Send(SendError::Full(payload))`: back-pressure, retry later.
    pub async fn send(
        &self,
        peer: NodeId,
        channel: ChannelId,
        payload: Bytes,
    ) -> Result<(), NodeError> {
        self.call(|reply| Command::Send {
            peer,
            channel,
            payload,
            reply,
        })
        .await??;
        Ok(())
    }

    /// Like [`send`](Self::send), but a full channel queue makes it wait (in order with other
    /// waiting sends to the same peer and channel) until the queue has room: back-pressure by
    /// waiting. It is woken by the queue's room-again edge (`SendReady`), not by polling.
    /// Fails if the peer goes away. At most 4096 sends wait per node; beyond that it returns
    /// `Full` at once.
    pub async fn send_wait(
        &self,
        peer: NodeId,
        channel: ChannelId,
        payload: Bytes,
    ) -> Result<(), NodeError> {
        self.call(|reply| Command::SendWait {
            peer,
            channel,
            payload,
            timeout: None,
            reply: Some(reply),
        })
        .await??;
        Ok(())
    }

    /// Like [`send_wait`](Self::send_wait), but gives up after `timeout` (measured by the
    /// node's clock): then `NodeError::Send(SendError::Full(payload))` hands the message back.
    pub async fn send_timeout(
        &self,
        peer: NodeId,
        channel: ChannelId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        self.call(|reply| Command::SendWait {
            peer,
            channel,
            payload,
            timeout: Some(timeout),
            reply: Some(reply),
        })
        .await??;
        Ok(())
    }

    /// Queues `payload` without waiting (callable outside async code). `Ok` means the node
    /// took it: it is sent in order unless the peer goes away. `SendError::UnknownPeer` if
    /// the peer is not up; `SendError::Full(payload)` if the (peer, channel) queue is full
    /// (wait for [`ReactorEvent::SendReady`](crate::ReactorEvent::SendReady) in the
    /// channel's inbox, or the `SendReady` event) or the node's mailbox of `try_send`
    /// messages is (1024 not yet taken by the engine task). `NodeError::Stopped` once the
    /// node has stopped. The engine task takes the whole mailbox per wake (and before any
    /// command, so a `try_send` followed by another send keeps its order).
    pub fn try_send(
        &self,
        peer: NodeId,
        channel: ChannelId,
        payload: Bytes,
    ) -> Result<(), NodeError> {
        if self.cmd.is_closed() {
            return Err(NodeError::Stopped);
        }
        match self.gate.submit(peer, channel, payload) {
            Verdict::Queued { wake } => {
                if wake {
                    self.wake.notify();
                }
                Ok(())
            }
            Verdict::UnknownPeer => Err(SendError::UnknownPeer.into()),
            Verdict::Full { payload, wake } => {
                if wake {
                    // The engine task may have emptied the mailbox meanwhile: make it look.
                    self.wake.notify();
                }
                Err(SendError::Full(payload).into())
            }
        }
    }

    /// Queues `payload` on `channel` for every peer but `except` (the one it came from);
    /// returns each peer's outcome (`SendError::Full` hands the message back for that peer).
    pub async fn broadcast_except(
        &self,
        channel: ChannelId,
        payload: Bytes,
        except: NodeId,
    ) -> Result<Vec<(NodeId, Result<(), SendError>)>, NodeError> {
        self.call(|reply| Command::BroadcastExcept {
            channel,
            payload,
            except: Some(except),
            reply,
        })
        .await
    }

    /// Bans `peer` for `duration` and disconnects it (CometBFT's `StopPeerForError`): its id
    /// and IP (unless `allow_duplicate_ip`) go into the address book's persisted bans. A
    /// persistent peer is only disconnected (and redialled later): [`BanOutcome::Persistent`].
    pub async fn ban(
        &self,
        peer: NodeId,
        reason: impl Into<String>,
        duration: Duration,
    ) -> Result<BanOutcome, NodeError> {
        let reason = reason.into();
        self.call(|reply| Command::Ban {
            peer,
            reason,
            duration,
            reply,
        })
        .await
    }

    /// Marks `peer` good in the address book (CometBFT's `MarkGood`); false if it is not up
    /// or its address is not in the book.
    pub async fn mark_good(&self, peer: NodeId) -> Result<bool, NodeError> {
        self.call(|reply| Command::MarkGood { peer, reply }).await
    }

    /// Queues `payload` on `channel` for every peer that accepts it; returns how many did.
    pub async fn broadcast(&self, channel: ChannelId, payload: Bytes) -> Result<usize, NodeError> {
        self.call(|reply| Command::Broadcast {
            channel,
            payload,
            reply,
        })
        .await
    }

    /// Dials `addr` now.
    pub async fn dial(&self, addr: NetAddr) -> Result<ConnId, NodeError> {
        Ok(self.call(|reply| Command::Dial { addr, reply }).await??)
    }

    /// Disconnects `peer` (a persistent peer is redialled later).
    pub async fn disconnect(&self, peer: NodeId) -> Result<(), NodeError> {
        self.call(|reply| Command::Disconnect { peer, reply }).await
    }

    /// The connected peers with their NodeInfo and traffic.
    pub async fn peers(&self) -> Result<Vec<PeerStatus>, NodeError> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// Peer counts, book size and the engine's counters.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        self.call(|reply| Command::Status { reply }).await
    }

    /// The addresses in the address book.
    pub async fn known_addrs(&self) -> Result<Vec<NetAddr>, NodeError> {
        self.call(|reply| Command::KnownAddrs { reply }).await
    }

    /// The vetted addresses a seed serves now, most recently reached first
    /// ([`Engine::vetted_addrs`](cometmesh_core::engine::Engine::vetted_addrs)).
    pub async fn vetted_addrs(&self) -> Result<Vec<NetAddr>, NodeError> {
        self.call(|reply| Command::VettedAddrs { reply }).await
    }

    /// Subscribes to the node's events from now on: a **lossy monitoring stream** (a
    /// subscriber that falls behind loses events). Messages of channels that have a reactor
    /// do not appear here; reactors get them, and every peer's lifecycle, losslessly in their
    /// [`Inbox`].
    pub async fn events(&self) -> Result<EventStream, NodeError> {
        self.call(|reply| Command::Subscribe { reply }).await
    }

    /// Stops the node (peers disconnected, book saved, tasks joined); returns when it is done.
    /// Calling it on a stopped node returns at once.
    pub async fn shutdown(&self) {
        let _ = self.call(|reply| Command::Shutdown { reply }).await;
    }
}
