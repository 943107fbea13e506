//! [`SharedPort`]: one TCP listen port for the nodes of several chains.
//!
//! The port owns the listener and the node key every chain on it uses. Each inbound connection
//! runs the core's [`Acceptor`] in a task of its own (SecretConnection with the port's key,
//! then the peer's NodeInfo, sent by CometBFT without waiting for ours); the connection is
//! then handed, socket and session, to the node of the peer's chain, whose engine takes it
//! over with [`Engine::accept_routed`](cometmesh_core::engine::Engine::accept_routed). A peer
//! of a chain no node on the port serves is refused ([`RouteRefusal::UnknownChain`], logged)
//! and its socket closed before it sees any NodeInfo of ours.
//!
//! The engine's admission rules (bans, duplicate IPs, the inbound limit) run when the node
//! takes the connection over, after the handshake; until then at most
//! [`SharedPort::max_pending`] handshakes run at once on the port, each bounded by the phase
//! timeout.
//!
//! ```no_run
//! # async fn f<R: cometmesh_driver::Runtime>(rt: R, key: cometmesh_driver::NodeKey,
//! #     a: cometmesh_driver::core::engine::EngineConfig,
//! #     b: cometmesh_driver::core::engine::EngineConfig) -> Result<(), cometmesh_driver::StartError> {
//! use cometmesh_driver::{NodeBuilder, SharedPort};
//! let port = SharedPort::bind(rt.clone(), "0.0.0.0:26656".parse().unwrap(), key.clone()).await?;
//! let node_a = NodeBuilder::new(rt.clone(), a, key.clone()).shared_port(&port).start().await?;
//! let node_b = NodeBuilder::new(rt, b, key).shared_port(&port).start().await?;
//! port.start(); // accepts from now on, for as long as the returned handle lives
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cometmesh_core::NodeId;
use cometmesh_core::conn::{Acceptor, RouteRefusal};
use cometmesh_core::identity::NodeKey;
use futures::channel::mpsc;
use futures::future::{AbortHandle, Abortable, Either};
use futures::io::{AsyncReadExt as _, AsyncWriteExt as _};
use futures::{FutureExt as _, SinkExt as _};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore as _, SeedableRng as _};

use crate::driver::IoEvent;
use crate::node::StartError;
use crate::runtime::{Runtime, sleep_until};

/// The chains served on a port: chain id → the engine task's IO queue.
pub(crate) type Routes<R> = Arc<Mutex<BTreeMap<String, mpsc::Sender<IoEvent<R>>>>>;

/// What a [`NodeBuilder`](crate::NodeBuilder) needs to join a shared port.
#[derive(Clone)]
pub(crate) struct PortJoin<R: Runtime> {
    pub(crate) routes: Routes<R>,
    pub(crate) addr: SocketAddr,
    pub(crate) node_id: NodeId,
}

/// One listen port shared by the nodes of several chains (see the [module docs](self)).
pub struct SharedPort<R: Runtime> {
    rt: R,
    listener: R::Listener,
    addr: SocketAddr,
    key: NodeKey,
    routes: Routes<R>,
    phase_timeout: Duration,
    max_pending: usize,
    rng: ChaCha20Rng,
}

impl<R: Runtime> std::fmt::Debug for SharedPort<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPort")
            .field("addr", &self.addr)
            .field("node_id", &self.key.node_id())
            .finish_non_exhaustive()
    }
}

/// The accept loop of a started [`SharedPort`]; dropping it (or [`PortTask::stop`]) stops
/// accepting. Connections already handed to a node stay with it.
#[derive(Debug)]
pub struct PortTask {
    abort: AbortHandle,
}

impl PortTask {
    /// Stops accepting.
    pub fn stop(&self) {
        self.abort.abort();
    }
}

impl Drop for PortTask {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

impl<R: Runtime> SharedPort<R> {
    /// Binds `addr` (port 0 picks a free port) for nodes whose node key is `key`.
    pub async fn bind(rt: R, addr: SocketAddr, key: NodeKey) -> Result<Self, StartError> {
        let listener = rt
            .bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        let addr =
            R::local_addr(&listener).map_err(|source| StartError::Listen { addr, source })?;
        Ok(SharedPort {
            rt,
            listener,
            addr,
            key,
            routes: Arc::default(),
            phase_timeout: Duration::from_secs(3),
            max_pending: 256,
            rng: ChaCha20Rng::from_rng(rand_core::OsRng)
                .unwrap_or_else(|_| ChaCha20Rng::from_seed([0; 32])),
        })
    }

    /// The seed of the port's RNG, which draws each handshake's ephemeral secret (default:
    /// from the OS). Fixed seeds are for tests.
    #[must_use]
    pub fn seed(mut self, seed: [u8; 32]) -> Self {
        self.rng = ChaCha20Rng::from_seed(seed);
        self
    }

    /// The bound address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The time each handshake phase (SecretConnection, NodeInfo) may take (default 3 s,
    /// CometBFT's).
    #[must_use]
    pub fn phase_timeout(mut self, d: Duration) -> Self {
        self.phase_timeout = d;
        self
    }

    /// Most handshakes running at once on the port (default 256); beyond it a new
    /// connection is closed at once.
    #[must_use]
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n;
        self
    }

    /// The chain ids of the nodes on the port so far.
    #[must_use]
    pub fn chains(&self) -> Vec<String> {
        lock(&self.routes).keys().cloned().collect()
    }

    pub(crate) fn join(&self) -> PortJoin<R> {
        PortJoin {
            routes: Arc::clone(&self.routes),
            addr: self.addr,
            node_id: self.key.node_id(),
        }
    }

    /// Starts accepting: every connection is routed to the node of its chain.
    pub fn start(self) -> PortTask {
        let (abort, reg) = AbortHandle::new_pair();
        let rt = self.rt.clone();
        // Detached (every runtime's handle detaches on drop); the abort handle stops it.
        drop(rt.spawn(Abortable::new(self.accept_loop(), reg).map(|_| ())));
        PortTask { abort }
    }

    async fn accept_loop(mut self) {
        let pending = Arc::new(AtomicUsize::new(0));
        loop {
            match R::accept(&self.listener).await {
                Ok((reader, writer, remote)) => {
                    if pending.load(Ordering::Relaxed) >= self.max_pending {
                        tracing::debug!(%remote, "shared port: too many handshakes at once; closed");
                        continue;
                    }
                    pending.fetch_add(1, Ordering::Relaxed);
                    let mut secret = [0u8; 32];
                    self.rng.fill_bytes(&mut secret);
                    let acceptor =
                        Acceptor::new(self.rt.now(), &self.key, secret, self.phase_timeout);
                    let (rt, routes, pending) = (
                        self.rt.clone(),
                        Arc::clone(&self.routes),
                        Arc::clone(&pending),
                    );
                    // Detached: it ends within two phase timeouts.
                    drop(self.rt.spawn(async move {
                        route(rt, acceptor, reader, writer, remote, routes).await;
                        pending.fetch_sub(1, Ordering::Relaxed);
                    }));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "shared port: accept failed");
                    sleep_until(&self.rt, self.rt.now() + Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs one acceptor over its socket, then hands the connection to its chain's node.
async fn route<R: Runtime>(
    rt: R,
    mut acc: Acceptor,
    mut reader: R::Reader,
    mut writer: R::Writer,
    remote: SocketAddr,
    routes: Routes<R>,
) {
    let mut buf = vec![0u8; 4096];
    // Bounded: every pass either ends or waits for bytes or the phase deadline.
    while !acc.is_done() {
        let now = rt.now();
        while let Some(b) = acc.poll_transmit(now) {
            if writer.write_all(&b).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
        if acc.is_done() {
            break;
        }
        let Some(deadline) = acc.poll_timeout() else {
            break;
        };
        let read = reader.read(&mut buf);
        let timer = rt.timer(deadline);
        match futures::future::select(read, timer).await {
            Either::Left((Ok(0) | Err(_), _)) => acc.handle_eof(rt.now()),
            Either::Left((Ok(n), _)) => acc.handle_received(rt.now(), &buf[..n]),
            Either::Right(((), _)) => acc.handle_timeout(rt.now()),
        }
    }
    let now = rt.now();
    while let Some(b) = acc.poll_transmit(now) {
        if writer.write_all(&b).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
    let (chains, senders): (BTreeSet<String>, _) = {
        let r = lock(&routes);
        (r.keys().cloned().collect(), r.clone())
    };
    match acc.take_outcome(&chains) {
        Some(Ok(routed)) => {
            let Some(mut tx) = senders.get(routed.chain_id()).cloned() else {
                return;
            };
            let ev = IoEvent::Routed {
                reader,
                writer,
                remote,
                routed: Box::new(routed),
            };
            if tx.send(ev).await.is_err() {
                tracing::debug!(%remote, "shared port: the chain's node has stopped");
            }
        }
        Some(Err(why)) => {
            log_refusal(remote, &why);
            let _ = writer.close().await;
        }
        None => {}
    }
}

fn log_refusal(remote: SocketAddr, why: &RouteRefusal) {
    match why {
        // Debug, not info: anyone can send us a NodeInfo of any chain, as often as they like.
        RouteRefusal::UnknownChain { .. } => {
            tracing::debug!(%remote, %why, "shared port: connection refused");
        }
        _ => tracing::debug!(%remote, %why, "shared port: handshake failed"),
    }
}
