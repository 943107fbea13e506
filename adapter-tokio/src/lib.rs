//! Runs the cometmesh engine on tokio over TCP.
//!
//! The driving loop lives in [`cometmesh_driver`] (written once for every runtime); this crate
//! is its tokio glue: [`TokioRuntime`] (spawn, timer, TCP on the `futures-io` traits) and a
//! [`builder`] for a [`Node`]. Call it from inside a tokio runtime.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use cometmesh_tokio::{ChannelDescriptor, ChannelId, EngineConfig, NodeKey};
//! let mut config = EngineConfig::default();
//! config.chain_id = "my-chain".into();
//! config.listen_addr = "127.0.0.1:0".parse()?;
//! let node = cometmesh_tokio::builder(config, NodeKey::from_seed([7; 32]))
//!     .channel(ChannelDescriptor::new(ChannelId(0x60), 1))
//!     .addr_book_path("addrbook.bin")
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
use std::task::{Context, Poll, ready};
use std::time::Instant;

use futures::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncRead as TokioRead, AsyncWrite as TokioWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

pub use cometmesh_driver::{
    BanOutcome, BoxFuture, ChannelDescriptor, ChannelId, ConnFilter, ConnId, DisconnectReason,
    EngineConfig, Event, EventStream, FilterRefusal, Handle, HeldStats, Inbox, NetAddr, NodeError,
    NodeId, NodeKey, NodeStatus, PeerFilter, PeerStats, PeerStatus, PeerUp, ReactorEvent, Runtime,
    SendError, StartError, TryRecvError, core,
};

/// A node running on tokio.
pub type Node = cometmesh_driver::Node<TokioRuntime>;
/// The builder of a tokio [`Node`].
pub type NodeBuilder = cometmesh_driver::NodeBuilder<TokioRuntime>;

/// One listen port shared by the nodes of several chains, on tokio.
pub type SharedPort = cometmesh_driver::SharedPort<TokioRuntime>;
pub use cometmesh_driver::PortTask;

/// Binds a [`SharedPort`] on `addr` for nodes whose key is `key` (see
/// [`cometmesh_driver::shared`]); join nodes with [`NodeBuilder::shared_port`], then call
/// [`SharedPort::start`].
pub async fn shared_port(addr: SocketAddr, key: NodeKey) -> Result<SharedPort, StartError> {
    SharedPort::bind(TokioRuntime, addr, key).await
}

/// A builder for a node with `config` and identity `key` on the current tokio runtime.
pub fn builder(config: EngineConfig, key: NodeKey) -> NodeBuilder {
    NodeBuilder::new(TokioRuntime, config, key)
}

/// The tokio [`Runtime`]: tasks go to the runtime the caller runs in.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioRuntime;

/// The read half of a tokio TCP stream, as a `futures-io` reader.
#[derive(Debug)]
pub struct Reader(OwnedReadHalf);

/// The write half of a tokio TCP stream, as a `futures-io` writer.
#[derive(Debug)]
pub struct Writer(OwnedWriteHalf);

impl AsyncRead for Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        ready!(Pin::new(&mut self.0).poll_read(cx, &mut rb))?;
        Poll::Ready(Ok(rb.filled().len()))
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A resettable tokio timer.
#[derive(Debug)]
pub struct Timer(Pin<Box<tokio::time::Sleep>>);

impl Future for Timer {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

/// The handle of a spawned tokio task.
#[derive(Debug)]
pub struct JoinHandle(tokio::task::JoinHandle<()>);

impl Future for JoinHandle {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A task that panicked or was cancelled has finished all the same.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

fn split(stream: TcpStream) -> (Reader, Writer) {
    // Like Go: small writes go out at once (MConnection batches them itself).
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    (Reader(r), Writer(w))
}

impl Runtime for TokioRuntime {
    type Reader = Reader;
    type Writer = Writer;
    type Listener = TcpListener;
    type Timer = Timer;
    type JoinHandle = JoinHandle;

    fn spawn<F>(&self, fut: F) -> JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        JoinHandle(tokio::spawn(fut))
    }

    fn spawn_blocking<F, T>(&self, f: F) -> BoxFuture<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let task = tokio::task::spawn_blocking(f);
        Box::pin(async move {
            match task.await {
                Ok(t) => t,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: the runtime is shutting down and this future will not be polled.
                Err(_) => std::future::pending().await,
            }
        })
    }

    fn now(&self) -> Instant {
        // tokio's clock: the real one, or the paused test clock its timers follow.
        tokio::time::Instant::now().into_std()
    }

    fn timer(&self, at: Instant) -> Timer {
        Timer(Box::pin(tokio::time::sleep_until(at.into())))
    }

    fn reset_timer(timer: &mut Timer, at: Instant) {
        timer.0.as_mut().reset(at.into());
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<(Reader, Writer)> {
        TcpStream::connect(addr).await.map(split)
    }

    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpListener>> + Send {
        TcpListener::bind(addr)
    }

    fn local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &TcpListener) -> io::Result<(Reader, Writer, SocketAddr)> {
        let (stream, remote) = listener.accept().await?;
        let (r, w) = split(stream);
        Ok((r, w, remote))
    }
}
