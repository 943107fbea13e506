//! A [`Runtime`] with virtual time and an in-memory network, for deterministic driver tests.
//!
//! - **Time** is tokio's paused clock: run the test with [`block_on`] (a current-thread tokio
//!   runtime started paused). Timers never wait for real: when every task is idle, tokio
//!   advances the clock straight to the next timer. [`Runtime::now`] reads that clock, so the
//!   driver, the engine's deadlines and the test see the same virtual instants, and a test may
//!   assert *when* something happened ("cut at the 500 ms handshake deadline") without
//!   measuring wall-clock time.
//! - **Network**: [`VirtualRuntime::bind`] registers a listener under its address in the
//!   runtime's own table (port 0 picks a free port); `connect` to an address without a
//!   listener is refused. A connection is two in-memory pipes of [`PIPE_CAPACITY`] bytes each
//!   way, standing for the kernel's socket buffers: a writer waits while its pipe is full,
//!   closing (or dropping) a writer is end-of-file for the reader, dropping a reader makes the
//!   other side's writes fail with `BrokenPipe`. Accepted connections come from `127.0.0.1`
//!   with a fresh port.
//! - **Blocking work** (the driver's address-book file writes) runs inline, so the clock never
//!   moves while a file is being written.
//!
//! Everything runs on one thread in a fixed order, so a test gives the same result every run.
//! Clones of a `VirtualRuntime` share one network; separate `VirtualRuntime::new()`s do not.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use cometmesh_driver::{BoxFuture, Runtime};
use futures::StreamExt;
use futures::channel::mpsc;
use futures::io::{AsyncRead, AsyncWrite};

/// Bytes a pipe holds before its writer waits (one direction of a connection).
pub const PIPE_CAPACITY: usize = 64 * 1024;

/// First port handed out for port 0 and to connecting clients.
const FIRST_PORT: u16 = 20_000;

/// Runs `fut` to completion on a current-thread tokio runtime whose clock starts paused.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
        .block_on(fut)
}

/// One direction of a connection.
#[derive(Debug, Default)]
struct Pipe {
    buf: VecDeque<u8>,
    /// The writer closed or was dropped: the reader sees end-of-file once `buf` is empty.
    write_closed: bool,
    /// The reader was dropped: writes fail.
    read_closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

type Shared = Arc<Mutex<Pipe>>;

fn lock(p: &Shared) -> MutexGuard<'_, Pipe> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The read half of an in-memory connection.
#[derive(Debug)]
pub struct PipeReader(Shared);

/// The write half of an in-memory connection.
#[derive(Debug)]
pub struct PipeWriter(Shared);

fn pipe() -> (PipeWriter, PipeReader) {
    let p = Shared::default();
    (PipeWriter(Arc::clone(&p)), PipeReader(p))
}

impl AsyncRead for PipeReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = lock(&self.0);
        if p.buf.is_empty() {
            if p.write_closed || out.is_empty() {
                return Poll::Ready(Ok(0));
            }
            p.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = out.len().min(p.buf.len());
        for (o, b) in out.iter_mut().zip(p.buf.drain(..n)) {
            *o = b;
        }
        if let Some(w) = p.writer.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        let mut p = lock(&self.0);
        p.read_closed = true;
        p.buf.clear();
        if let Some(w) = p.writer.take() {
            w.wake();
        }
    }
}

impl AsyncWrite for PipeWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = lock(&self.0);
        if p.read_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if p.write_closed {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        }
        let room = PIPE_CAPACITY - p.buf.len();
        if room == 0 && !data.is_empty() {
            p.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        p.buf.extend(&data[..n]);
        if let Some(r) = p.reader.take() {
            r.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut p = lock(&self.0);
        p.write_closed = true;
        if let Some(r) = p.reader.take() {
            r.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        let mut p = lock(&self.0);
        p.write_closed = true;
        if let Some(r) = p.reader.take() {
            r.wake();
        }
    }
}

/// An accepted connection on its way to the listener.
type Incoming = (PipeReader, PipeWriter, SocketAddr);

#[derive(Debug, Default)]
struct Net {
    listeners: BTreeMap<SocketAddr, mpsc::UnboundedSender<Incoming>>,
    next_port: u16,
}

impl Net {
    /// A port of `ip` no listener holds (ports cycle from [`FIRST_PORT`]).
    fn free_port(&mut self, ip: IpAddr) -> io::Result<u16> {
        for _ in 0..=u16::MAX {
            let port = FIRST_PORT.wrapping_add(self.next_port);
            self.next_port = self.next_port.wrapping_add(1);
            if port != 0 && !self.listeners.contains_key(&SocketAddr::new(ip, port)) {
                return Ok(port);
            }
        }
        Err(io::ErrorKind::AddrInUse.into())
    }
}

/// A bound listener of the in-memory network; dropping it frees its address.
#[derive(Debug)]
pub struct VirtualListener {
    addr: SocketAddr,
    net: Arc<Mutex<Net>>,
    incoming: futures::lock::Mutex<mpsc::UnboundedReceiver<Incoming>>,
}

impl Drop for VirtualListener {
    fn drop(&mut self) {
        self.net
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .listeners
            .remove(&self.addr);
    }
}

/// A task's handle: resolves when the task has finished (or panicked).
#[derive(Debug)]
pub struct VirtualJoin(tokio::task::JoinHandle<()>);

impl Future for VirtualJoin {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A resettable timer on the paused clock.
#[derive(Debug)]
pub struct VirtualTimer(Pin<Box<tokio::time::Sleep>>);

impl Future for VirtualTimer {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

/// The virtual-time, in-memory [`Runtime`] (see the module docs). Use it inside [`block_on`].
#[derive(Debug, Clone, Default)]
pub struct VirtualRuntime {
    net: Arc<Mutex<Net>>,
}

impl VirtualRuntime {
    /// A runtime with a fresh, empty network.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn net(&self) -> MutexGuard<'_, Net> {
        self.net.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connects to `addr` as a bare client (no cometmesh node behind it): the test drives the
    /// socket itself, e.g. to stay silent or to stop reading.
    pub fn connect_raw(&self, addr: SocketAddr) -> io::Result<(PipeReader, PipeWriter)> {
        let mut net = self.net();
        let Some(listener) = net.listeners.get(&addr).cloned() else {
            return Err(io::ErrorKind::ConnectionRefused.into());
        };
        let local_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let local = SocketAddr::new(local_ip, net.free_port(local_ip)?);
        let (to_server, server_reads) = pipe();
        let (to_client, client_reads) = pipe();
        listener
            .unbounded_send((server_reads, to_client, local))
            .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
        Ok((client_reads, to_server))
    }
}

impl Runtime for VirtualRuntime {
    type Reader = PipeReader;
    type Writer = PipeWriter;
    type Listener = VirtualListener;
    type Timer = VirtualTimer;
    type JoinHandle = VirtualJoin;

    fn spawn<F>(&self, fut: F) -> VirtualJoin
    where
        F: Future<Output = ()> + Send + 'static,
    {
        VirtualJoin(tokio::spawn(fut))
    }

    fn spawn_blocking<F, T>(&self, f: F) -> BoxFuture<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // Inline: the paused clock must not advance while the work runs.
        let out = f();
        Box::pin(async move { out })
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn timer(&self, at: Instant) -> VirtualTimer {
        VirtualTimer(Box::pin(tokio::time::sleep_until(at.into())))
    }

    fn reset_timer(timer: &mut VirtualTimer, at: Instant) {
        timer.0.as_mut().reset(at.into());
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<(PipeReader, PipeWriter)> {
        self.connect_raw(addr)
    }

    async fn bind(&self, addr: SocketAddr) -> io::Result<VirtualListener> {
        let mut net = self.net();
        let addr = if addr.port() == 0 {
            SocketAddr::new(addr.ip(), net.free_port(addr.ip())?)
        } else {
            addr
        };
        if net.listeners.contains_key(&addr) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        let (tx, rx) = mpsc::unbounded();
        net.listeners.insert(addr, tx);
        Ok(VirtualListener {
            addr,
            net: Arc::clone(&self.net),
            incoming: futures::lock::Mutex::new(rx),
        })
    }

    fn local_addr(listener: &VirtualListener) -> io::Result<SocketAddr> {
        Ok(listener.addr)
    }

    async fn accept(
        listener: &VirtualListener,
    ) -> io::Result<(PipeReader, PipeWriter, SocketAddr)> {
        match listener.incoming.lock().await.next().await {
            Some(c) => Ok(c),
            // Unreachable while the listener lives (the table holds the sender).
            None => std::future::pending().await,
        }
    }
}
