//! The public face: [`NodeBuilder`], [`Node`] and its cloneable [`Handle`].

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cometmesh_core::addr::NetAddr;
use cometmesh_core::conn::ConnStats;
use cometmesh_core::engine::{
    ChannelDescriptor, ConfigError, Counters, DialError, Engine, EngineConfig, PeerInfo, SendError,
};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::{ChannelId, ConnId, NodeId};
use futures::SinkExt;
use futures::channel::{mpsc, oneshot};

use crate::driver::{self, Command, DriverConfig};
use crate::events::EventStream;
use crate::persist;
use crate::runtime::Runtime;

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

/// Traffic of one connection, counted by the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// Bytes read from the socket.
    pub bytes_received: u64,
    /// Bytes flushed to the socket.
    pub bytes_sent: u64,
    /// Application messages received.
    pub messages_received: u64,
    /// Application messages queued with `send` or `broadcast`.
    pub messages_sent: u64,
}

/// A connected peer: what the engine knows (NodeInfo, direction, origin) and its traffic.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PeerStatus {
    /// The engine's record, with the peer's NodeInfo.
    pub info: PeerInfo,
    /// Traffic counters of the driver.
    pub stats: PeerStats,
    /// The connection's own counters: per channel (bytes, queued messages) and on the wire.
    pub conn: ConnStats,
}

/// A summary of the node.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct NodeStatus {
    /// Peers up, inbound.
    pub inbound: usize,
    /// Peers up, outbound.
    pub outbound: usize,
    /// Open connections, peers or not.
    pub connections: usize,
    /// Addresses in the address book.
    pub book_len: usize,
    /// The engine's counters.
    pub counters: Counters,
}

/// Builds and starts a [`Node`] on runtime `R`. Application channels are registered here.
#[derive(Debug)]
#[must_use]
pub struct NodeBuilder<R: Runtime> {
    rt: R,
    config: EngineConfig,
    key: NodeKey,
    channels: Vec<ChannelDescriptor>,
    book_path: Option<PathBuf>,
    seed: Option<[u8; 32]>,
    driver: DriverConfig,
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
        }
    }

    /// Registers an application channel (0x00 is PEX's).
    pub fn channel(mut self, desc: ChannelDescriptor) -> Self {
        self.channels.push(desc);
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
        } = self;
        let listener = rt
            .bind(config.listen_addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen_addr,
                source,
            })?;
        let local = R::local_addr(&listener).map_err(|source| StartError::Listen {
            addr: config.listen_addr,
            source,
        })?;
        config.listen_addr = local;
        let seed = seed.unwrap_or_else(|| {
            let mut s = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut s);
            s
        });
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut engine = Engine::new(config, key, seed, rt.now(), unix_now)?;
        for c in channels {
            engine.add_channel(c)?;
        }
        if let Some(path) = &book_path {
            load_book(&rt, &mut engine, path).await?;
        }
        let node_id = engine.node_id();
        let (cmd_tx, cmd_rx) = mpsc::channel(dcfg.command_capacity);
        let task = driver::spawn(rt, engine, listener, cmd_rx, book_path, dcfg);
        Ok(Node {
            handle: Handle {
                cmd: cmd_tx,
                node_id,
                listen_addr: local,
            },
            task: Some(task),
        })
    }
}

/// A saved book larger than this is not read (a full book is about 8 MiB).
const MAX_BOOK_FILE: u64 = 64 << 20;

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
    /// waiting. Fails if the peer goes away. At most 4096 sends wait per node; beyond that
    /// it returns `Full` at once.
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
            reply,
        })
        .await??;
        Ok(())
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

    /// Subscribes to the node's events from now on.
    pub async fn events(&self) -> Result<EventStream, NodeError> {
        self.call(|reply| Command::Subscribe { reply }).await
    }

    /// Stops the node (peers disconnected, book saved, tasks joined); returns when it is done.
    /// Calling it on a stopped node returns at once.
    pub async fn shutdown(&self) {
        let _ = self.call(|reply| Command::Shutdown { reply }).await;
    }
}
