//! The runtime trait: the few things the driver needs from an async runtime.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Context;
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

/// The engine task's one timer, moved only when its deadline changes.
///
/// Moving a runtime's timer is not free: async-io (async-std, smol) deregisters it and
/// registers it again, which wakes its reactor thread through an eventfd and re-arms a
/// timerfd, four system calls. The engine's next deadline rarely changes from one wake to the
/// next, so the timer is moved only when it does (or after it fired).
pub(crate) struct Alarm<R: Runtime> {
    timer: R::Timer,
    /// Where the timer is set; `None` once it fired.
    at: Option<Instant>,
}

impl<R: Runtime> Alarm<R> {
    /// An alarm set to `at`.
    pub(crate) fn new(rt: &R, at: Instant) -> Self {
        Alarm {
            timer: rt.timer(at),
            at: Some(at),
        }
    }

    /// Sets the alarm to `at`; a no-op if it is set there already and has not fired.
    pub(crate) fn set(&mut self, at: Instant) {
        if self.at != Some(at) {
            R::reset_timer(&mut self.timer, at);
            self.at = Some(at);
        }
    }

    /// Whether the alarm went off (registering `cx` for it otherwise). Once it has, it stays
    /// spent until [`set`](Self::set) again.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        if self.at.is_some() && Pin::new(&mut self.timer).poll(cx).is_ready() {
            self.at = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Poll, Waker};
    use std::time::Duration;

    use super::*;

    /// Only a timer: it counts its moves and fires when the test says so. Its clock stands
    /// still at `origin`.
    #[derive(Clone)]
    struct Timers {
        origin: Instant,
    }

    #[derive(Default)]
    struct Counted {
        moves: usize,
        due: bool,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
            if self.due {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl Runtime for Timers {
        type Reader = futures::io::Empty;
        type Writer = futures::io::Sink;
        type Listener = ();
        type Timer = Counted;
        type JoinHandle = futures::future::Ready<()>;

        fn spawn<F: Future<Output = ()> + Send + 'static>(&self, _fut: F) -> Self::JoinHandle {
            unreachable!("timers only")
        }
        fn spawn_blocking<F, T>(&self, _f: F) -> BoxFuture<T>
        where
            F: FnOnce() -> T + Send + 'static,
            T: Send + 'static,
        {
            unreachable!("timers only")
        }
        fn now(&self) -> Instant {
            self.origin
        }
        fn timer(&self, _at: Instant) -> Counted {
            Counted::default()
        }
        fn reset_timer(timer: &mut Counted, _at: Instant) {
            timer.moves += 1;
            timer.due = false;
        }
        async fn connect(&self, _addr: SocketAddr) -> io::Result<(Self::Reader, Self::Writer)> {
            unreachable!("timers only")
        }
        async fn bind(&self, _addr: SocketAddr) -> io::Result<()> {
            unreachable!("timers only")
        }
        fn local_addr(_listener: &()) -> io::Result<SocketAddr> {
            unreachable!("timers only")
        }
        async fn accept(_listener: &()) -> io::Result<(Self::Reader, Self::Writer, SocketAddr)> {
            unreachable!("timers only")
        }
    }

    #[test]
    fn an_alarm_moves_its_timer_only_for_a_new_deadline_or_after_it_fired() {
        #[allow(clippy::disallowed_methods)] // any instant will do: nothing waits on it
        let rt = Timers {
            origin: Instant::now(),
        };
        let (a, b) = (
            rt.now() + Duration::from_secs(1),
            rt.now() + Duration::from_secs(2),
        );
        let mut cx = Context::from_waker(Waker::noop());
        let mut alarm = Alarm::new(&rt, a);
        for _ in 0..10 {
            alarm.set(a);
            assert!(!alarm.poll(&mut cx));
        }
        assert_eq!(alarm.timer.moves, 0, "same deadline: the timer stays");
        alarm.set(b);
        alarm.set(b);
        assert_eq!(alarm.timer.moves, 1, "a new deadline moves it once");
        alarm.timer.due = true;
        assert!(alarm.poll(&mut cx), "it fires");
        assert!(!alarm.poll(&mut cx), "and is spent");
        alarm.set(b);
        assert_eq!(
            alarm.timer.moves, 2,
            "the same deadline again re-arms a spent timer"
        );
        assert!(!alarm.poll(&mut cx));
    }
}
