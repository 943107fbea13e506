//! The runtime trait: the few things the driver needs from an async runtime.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use futures::io::{AsyncRead, AsyncWrite};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the driver needs from an async runtime: spawning, one resettable timer, blocking work,
/// and TCP (connect, bind, accept) on the `futures-io` traits.
///
/// An implementation is a few dozen lines of glue; see `cometmesh-tokio` and
/// `cometmesh-async-std`.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The read half of a TCP stream.
    type Reader: AsyncRead + Unpin + Send + 'static;
    /// The write half of a TCP stream.
    type Writer: AsyncWrite + Unpin + Send + 'static;
    /// A bound TCP listener.
    type Listener: Send + Sync + 'static;
    /// A resettable timer: resolves once its deadline has passed.
    type Timer: Future<Output = ()> + Unpin + Send + 'static;
    /// The handle of a spawned task: resolves when the task has finished.
    type JoinHandle: Future<Output = ()> + Unpin + Send + 'static;

    /// Runs `fut` on the runtime.
    fn spawn<F>(&self, fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static;

    /// Runs blocking `f` (file IO) where it does not stall the async workers.
    fn spawn_blocking<F, T>(&self, f: F) -> BoxFuture<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static;

    /// The runtime's current time. The driver reads its clock only here (as quinn's
    /// `Runtime::now`), so a runtime with virtual time (tokio's paused clock, a simulator)
    /// drives the engine, its deadlines and the driver's own timers alike.
    fn now(&self) -> Instant;

    /// A timer that fires at `at` (an instant of [`Runtime::now`]'s clock).
    fn timer(&self, at: Instant) -> Self::Timer;

    /// Moves `timer` to fire at `at` (it may have fired already).
    fn reset_timer(timer: &mut Self::Timer, at: Instant);

    /// Opens a TCP connection (no timeout: the driver adds one).
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<(Self::Reader, Self::Writer)>> + Send;

    /// Binds a TCP listener.
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// The address a listener is bound to.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// Accepts the next inbound connection.
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Reader, Self::Writer, SocketAddr)>> + Send;
}

/// Sleeps until `at` on runtime `rt`.
pub(crate) async fn sleep_until<R: Runtime>(rt: &R, at: Instant) {
    rt.timer(at).await;
}
