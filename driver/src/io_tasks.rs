//! The IO tasks of the driver: the accept loop and one reader and one writer task per TCP
//! connection, joined to the engine task by bounded queues (`IoEvent` in, `WriterMsg` out).

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cometmesh_core::ConnId;
use cometmesh_core::engine::{CloseCause, DialFailure};
use futures::channel::mpsc;
use futures::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::{SinkExt, StreamExt};

use crate::runtime::{Runtime, sleep_until};

/// Smallest and largest read buffer of a connection (it grows while reads fill it). The
/// smallest is what an idle connection holds, so it is small, yet holds one sealed frame
/// (1044 bytes) so that a ping does not grow it.
const READ_MIN: usize = 1536;
const READ_MAX: usize = 64 * 1024;
/// Most bytes a writer coalesces into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// A result from an IO task.
pub(crate) enum IoEvent<R: Runtime> {
    Accepted {
        reader: R::Reader,
        writer: R::Writer,
        remote: SocketAddr,
    },
    /// An inbound connection a shared port authenticated and routed to this node's chain.
    Routed {
        reader: R::Reader,
        writer: R::Writer,
        remote: SocketAddr,
        /// Boxed: the session state is large, the queue's other events are small.
        routed: Box<cometmesh_core::conn::Routed>,
    },
    Connected {
        conn: ConnId,
        reader: R::Reader,
        writer: R::Writer,
    },
    /// The name of a dial by name resolved to `addr` (sent before its `Connected`).
    Resolved {
        conn: ConnId,
        addr: SocketAddr,
    },
    DialFailed {
        conn: ConnId,
        error: DialFailure,
    },
    Read {
        conn: ConnId,
        bytes: Bytes,
    },
    /// A writer took a batch (`len` bytes written and flushed; may be 0).
    Flushed {
        conn: ConnId,
        len: usize,
    },
    ReadEnd {
        conn: ConnId,
        cause: CloseCause,
    },
    /// The writer stopped: `None` after a local close, else the write error.
    WriteEnd {
        conn: ConnId,
        cause: Option<CloseCause>,
    },
    Saved(io::Result<()>),
}

/// What the engine task queues for a connection's writer task.
pub(crate) enum WriterMsg {
    Data(Bytes),
    Close,
}

/// Accepts connections and hands them to the engine task (which admits or refuses them).
pub(crate) async fn accept_loop<R: Runtime>(
    rt: R,
    listener: R::Listener,
    mut io: mpsc::Sender<IoEvent<R>>,
) {
    loop {
        match R::accept(&listener).await {
            Ok((reader, writer, remote)) => {
                let ev = IoEvent::Accepted {
                    reader,
                    writer,
                    remote,
                };
                if io.send(ev).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                sleep_until(&rt, rt.now() + Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads while it has credit; each chunk goes to the engine task.
pub(crate) async fn read_loop<R: Runtime>(
    conn: ConnId,
    mut reader: R::Reader,
    mut credits: mpsc::Receiver<()>,
    window: usize,
    mut io: mpsc::Sender<IoEvent<R>>,
) {
    let mut have = window;
    let mut buf = vec![0u8; READ_MIN];
    loop {
        while let Ok(()) = credits.try_recv() {
            have += 1;
        }
        if have == 0 {
            match credits.next().await {
                Some(()) => have += 1,
                None => return,
            }
        }
        let ev = match reader.read(&mut buf).await {
            Ok(0) => IoEvent::ReadEnd {
                conn,
                cause: CloseCause::Eof,
            },
            Ok(n) => {
                have -= 1;
                let bytes = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                if n == buf.len() && buf.len() < READ_MAX {
                    buf.resize(buf.len() * 2, 0);
                } else if n <= buf.len() / 2 && buf.len() > READ_MIN {
                    // A read that fills half the buffer or less (an idle connection's ping
                    // after a burst) gives half back: idle peers keep small buffers.
                    buf.truncate(buf.len() / 2);
                    buf.shrink_to_fit();
                }
                IoEvent::Read { conn, bytes }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => IoEvent::ReadEnd {
                conn,
                cause: close_cause(&e),
            },
        };
        let end = matches!(ev, IoEvent::ReadEnd { .. });
        if io.send(ev).await.is_err() || end {
            return;
        }
    }
}

/// Writes transmits in batches, reports what it flushed, and closes on request.
pub(crate) async fn write_loop<R: Runtime>(
    conn: ConnId,
    mut writer: R::Writer,
    mut rx: mpsc::Receiver<WriterMsg>,
    mut io: mpsc::Sender<IoEvent<R>>,
) {
    let mut batch: Vec<Bytes> = Vec::new();
    while let Some(first) = rx.next().await {
        let mut close = false;
        let mut len = 0;
        let mut next = Some(first);
        while let Some(m) = next {
            match m {
                WriterMsg::Data(b) => {
                    len += b.len();
                    batch.push(b);
                }
                WriterMsg::Close => {
                    close = true;
                    break;
                }
            }
            if len >= WRITE_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        let written = async {
            write_all_vectored(&mut writer, &batch).await?;
            writer.flush().await
        }
        .await;
        batch.clear();
        if let Err(e) = written {
            let _ = io
                .send(IoEvent::WriteEnd {
                    conn,
                    cause: Some(close_cause(&e)),
                })
                .await;
            return;
        }
        if io.send(IoEvent::Flushed { conn, len }).await.is_err() {
            return;
        }
        if close {
            let _ = writer.close().await;
            let _ = io.send(IoEvent::WriteEnd { conn, cause: None }).await;
            return;
        }
    }
}

/// Most slices handed to one vectored write (Linux's `IOV_MAX` is 1024).
const MAX_SLICES: usize = 64;

/// Writes every byte of `bufs`, in order, with vectored writes (no copy into one buffer).
pub(crate) async fn write_all_vectored<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bufs: &[Bytes],
) -> io::Result<()> {
    // `first` is the buffer the next write starts in, `offset` how much of it was written.
    let (mut first, mut offset) = (0, 0);
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(bufs.len().min(MAX_SLICES));
    loop {
        // Skip what is written (and empty buffers).
        while bufs.get(first).is_some_and(|b| b.len() == offset) {
            first += 1;
            offset = 0;
        }
        let Some(rest) = bufs.get(first..).filter(|r| !r.is_empty()) else {
            break;
        };
        slices.clear();
        for (i, b) in rest.iter().take(MAX_SLICES).enumerate() {
            let b = if i == 0 {
                b.get(offset..).unwrap_or_default()
            } else {
                b
            };
            slices.push(IoSlice::new(b));
        }
        let mut n = writer.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // Advance past the `n` bytes written.
        while let Some(b) = bufs.get(first).filter(|_| n > 0) {
            let left = b.len() - offset;
            if n < left {
                offset += n;
                n = 0;
            } else {
                n -= left;
                first += 1;
                offset = 0;
            }
        }
    }
    Ok(())
}

pub(crate) fn close_cause(e: &io::Error) -> CloseCause {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => CloseCause::Reset,
        io::ErrorKind::UnexpectedEof => CloseCause::Eof,
        _ => CloseCause::Io,
    }
}

pub(crate) fn dial_failure(e: &io::Error) -> DialFailure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => DialFailure::Refused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            DialFailure::Unreachable
        }
        io::ErrorKind::TimedOut => DialFailure::TimedOut,
        _ => DialFailure::Io,
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::executor::block_on;

    use super::*;

    /// A writer that takes at most `max` bytes per call (across slices when vectored).
    struct Chunky {
        out: Vec<u8>,
        max: usize,
        calls: usize,
    }

    impl AsyncWrite for Chunky {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.out
                    .extend_from_slice(b.get(..take).unwrap_or_default());
                n += take;
            }
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn transmits() -> Vec<Bytes> {
        [0usize, 5, 1, 0, 1044, 3000, 0, 17, 70_000]
            .iter()
            .enumerate()
            .map(|(i, &len)| Bytes::from((0..len).map(|j| (i * 31 + j) as u8).collect::<Vec<_>>()))
            .collect()
    }

    #[test]
    fn vectored_write_keeps_order_across_partial_writes() {
        let bufs = transmits();
        let want: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        for max in [1, 2, 7, 1044, 1045, 4096, 1 << 20] {
            let mut w = Chunky {
                out: Vec::new(),
                max,
                calls: 0,
            };
            block_on(write_all_vectored(&mut w, &bufs)).expect("written");
            assert_eq!(w.out, want, "max {max}");
            // One call per `max` bytes (rounded up): no write per buffer, none wasted.
            assert_eq!(w.calls, want.len().div_ceil(max), "max {max}");
        }
    }

    #[test]
    fn vectored_write_of_nothing_makes_no_call() {
        let mut w = Chunky {
            out: Vec::new(),
            max: 10,
            calls: 0,
        };
        block_on(write_all_vectored(&mut w, &[])).expect("nothing to write");
        block_on(write_all_vectored(&mut w, &[Bytes::new(), Bytes::new()])).expect("empty");
        assert_eq!(w.calls, 0);
    }

    #[test]
    fn vectored_write_that_takes_nothing_is_an_error() {
        let mut w = Chunky {
            out: Vec::new(),
            max: 0,
            calls: 0,
        };
        let e = block_on(write_all_vectored(&mut w, &[Bytes::from_static(b"abc")]))
            .expect_err("a writer that takes nothing");
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn vectored_write_passes_many_transmits_in_one_call() {
        let bufs: Vec<Bytes> = (0..200u8).map(|i| Bytes::from(vec![i; 3])).collect();
        let mut w = Chunky {
            out: Vec::new(),
            max: usize::MAX / 2,
            calls: 0,
        };
        block_on(write_all_vectored(&mut w, &bufs)).expect("written");
        let want: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(w.out, want);
        // At most MAX_SLICES slices per call.
        assert_eq!(w.calls, 200usize.div_ceil(MAX_SLICES));
    }
}
