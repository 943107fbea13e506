//! Runs the cometmesh engine on async-std over TCP.
//!
//! The driving loop lives in [`cometmesh_driver`] (written once for every runtime); this crate
//! is its async-std glue: [`AsyncStdRuntime`] and a [`builder`] for a [`Node`].
//!
//! **async-std is discontinued upstream.** This adapter therefore depends on nothing
//! async-std-specific beyond `task::spawn`/`spawn_blocking` and `net::{TcpStream,
//! TcpListener}`: sockets are used only through the `futures-io` traits (`AsyncRead`,
//! `AsyncWrite`) and the timer is [`async_io::Timer`], the reactor async-std and smol share.
//! The same driver runs on smol: a [`Runtime`] impl of the same few lines over smol's parts
//! (`async-executor`, `async-io`'s `Async<TcpStream>` and `Timer`, `blocking::unblock`) passes
//! the whole loopback suite (`tests/tests/loopback_smol.rs` in the repository).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use cometmesh_async_std::{ChannelDescriptor, ChannelId, EngineConfig, NodeKey};
//! let mut config = EngineConfig::default();
//! config.chain_id = "my-chain".into();
//! config.listen_addr = "127.0.0.1:0".parse()?;
//! let node = cometmesh_async_std::builder(config, NodeKey::from_seed([7; 32]))
//!     .channel(ChannelDescriptor::new(ChannelId(0x60), 1))
//!     .start()
//!     .await?;
//! println!("listening as {}", node.net_addr());
//! node.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_std::net::{TcpListener, TcpStream};

pub use cometmesh_driver::{
    BanOutcome, BoxFuture, ChannelDescriptor, ChannelId, ConnFilter, ConnId, DisconnectReason,
    EngineConfig, Event, EventStream, FilterRefusal, Handle, HeldStats, Inbox, NetAddr, NodeError,
    NodeId, NodeKey, NodeStatus, PeerFilter, PeerStats, PeerStatus, PeerUp, ReactorEvent, Runtime,
    SendError, StartError, TryRecvError, core,
};

/// A node running on async-std.
pub type Node = cometmesh_driver::Node<AsyncStdRuntime>;
/// The builder of an async-std [`Node`].
pub type NodeBuilder = cometmesh_driver::NodeBuilder<AsyncStdRuntime>;

/// One listen port shared by the nodes of several chains, on async-std.
pub type SharedPort = cometmesh_driver::SharedPort<AsyncStdRuntime>;
pub use cometmesh_driver::PortTask;

/// Binds a [`SharedPort`] on `addr` for nodes whose key is `key` (see
/// [`cometmesh_driver::shared`]).
pub async fn shared_port(
    addr: std::net::SocketAddr,
    key: NodeKey,
) -> Result<SharedPort, StartError> {
    SharedPort::bind(AsyncStdRuntime, addr, key).await
}

/// A builder for a node with `config` and identity `key` on async-std.
pub fn builder(config: EngineConfig, key: NodeKey) -> NodeBuilder {
    NodeBuilder::new(AsyncStdRuntime, config, key)
}

/// The async-std [`Runtime`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStdRuntime;

/// A resettable timer on the `async-io` reactor.
#[derive(Debug)]
pub struct Timer(async_io::Timer);

impl Future for Timer {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// The handle of a spawned async-std task.
#[derive(Debug)]
pub struct JoinHandle(async_std::task::JoinHandle<()>);

impl Future for JoinHandle {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

fn split(stream: TcpStream) -> (TcpStream, TcpStream) {
    // Like Go: small writes go out at once (MConnection batches them itself).
    let _ = stream.set_nodelay(true);
    (stream.clone(), stream)
}

impl Runtime for AsyncStdRuntime {
    type Reader = TcpStream;
    type Writer = TcpStream;
    type Listener = TcpListener;
    type Timer = Timer;
    type JoinHandle = JoinHandle;

    fn spawn<F>(&self, fut: F) -> JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        JoinHandle(async_std::task::spawn(fut))
    }

    fn spawn_blocking<F, T>(&self, f: F) -> BoxFuture<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Box::pin(async_std::task::spawn_blocking(f))
    }

    fn now(&self) -> Instant {
        // async-io's timers run on the system's monotonic clock.
        Instant::now()
    }

    fn timer(&self, at: Instant) -> Timer {
        Timer(async_io::Timer::at(at))
    }

    fn reset_timer(timer: &mut Timer, at: Instant) {
        timer.0.set_at(at);
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<(TcpStream, TcpStream)> {
        TcpStream::connect(addr).await.map(split)
    }

    async fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(addr).await
    }

    fn local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, TcpStream, SocketAddr)> {
        let (stream, remote) = listener.accept().await?;
        let (r, w) = split(stream);
        Ok((r, w, remote))
    }
}
