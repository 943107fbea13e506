//! The loopback suite on smol's building blocks — `async-executor`, `async-io` (reactor,
//! timers, `Async<TcpStream>`) and `blocking`, which is all the `smol` crate re-exports. This
//! is the check that the driver, written on `futures-io`, runs on smol and not only on the two
//! runtimes with an adapter crate. The whole runtime glue is the `Runtime` impl below.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use async_executor::{Executor, Task};
use async_io::{Async, Timer};
use cometmesh_driver::{BoxFuture, Runtime};
use futures::io::{AsyncRead, AsyncWrite};

/// One executor for the process, run by two threads.
fn executor() -> &'static Executor<'static> {
    static EX: OnceLock<Executor<'static>> = OnceLock::new();
    EX.get_or_init(|| {
        for _ in 0..2 {
            std::thread::spawn(|| {
                let ex = executor();
                async_io::block_on(ex.run(futures::future::pending::<()>()));
            });
        }
        Executor::new()
    })
}

#[derive(Clone, Copy, Debug)]
struct Smol;

/// Both halves of a socket: a shared `Async<TcpStream>` (as `smol::net::TcpStream` does).
struct Half(Arc<Async<TcpStream>>);

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, b)
    }
}

impl AsyncWrite for Half {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, b)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_close(cx)
    }
}

fn halves(s: Async<TcpStream>) -> (Half, Half) {
    let _ = s.get_ref().set_nodelay(true);
    let s = Arc::new(s);
    (Half(s.clone()), Half(s))
}

/// A task handle that detaches on drop (async-executor cancels dropped tasks).
struct Join(Option<Task<()>>);

impl Drop for Join {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.detach();
        }
    }
}

impl Future for Join {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.0.as_mut() {
            Some(t) => Pin::new(t).poll(cx),
            None => Poll::Ready(()),
        }
    }
}

struct SmolTimer(Timer);

impl Future for SmolTimer {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Runtime for Smol {
    type Reader = Half;
    type Writer = Half;
    type Listener = Async<TcpListener>;
    type Timer = SmolTimer;
    type JoinHandle = Join;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) -> Join {
        Join(Some(executor().spawn(fut)))
    }
    fn spawn_blocking<F, T>(&self, f: F) -> BoxFuture<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Box::pin(blocking::unblock(f))
    }
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn timer(&self, at: Instant) -> SmolTimer {
        SmolTimer(Timer::at(at))
    }
    fn reset_timer(timer: &mut SmolTimer, at: Instant) {
        timer.0.set_at(at);
    }
    async fn connect(&self, addr: SocketAddr) -> io::Result<(Half, Half)> {
        Async::<TcpStream>::connect(addr).await.map(halves)
    }
    async fn bind(&self, addr: SocketAddr) -> io::Result<Async<TcpListener>> {
        Async::<TcpListener>::bind(addr)
    }
    fn local_addr(l: &Async<TcpListener>) -> io::Result<SocketAddr> {
        l.get_ref().local_addr()
    }
    async fn accept(l: &Async<TcpListener>) -> io::Result<(Half, Half, SocketAddr)> {
        let (s, remote) = l.accept().await?;
        let (r, w) = halves(s);
        Ok((r, w, remote))
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let _ = executor();
    async_io::block_on(f)
}

cometmesh_tests::loopback_suite!(Smol, block_on);
cometmesh_tests::reactor_suite!(Smol, block_on);
