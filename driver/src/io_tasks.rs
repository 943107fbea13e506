//! The IO tasks of the driver: the accept loop and one reader and one writer task per TCP
//! connection, joined to the engine task by bounded queues (`IoEvent` in, `WriterMsg` out).

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
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
    let mut buf = ReadBuf::new();
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
        let ev = match reader.read(buf.room()).await {
            Ok(0) => IoEvent::ReadEnd {
                conn,
                cause: CloseCause::Eof,
            },
            Ok(n) => {
                have -= 1;
                IoEvent::Read {
                    conn,
                    bytes: buf.take(n),
                }
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

/// A reader's buffer: reads land in it and are handed out by splitting, not copying.
///
/// The room read into is the tail of one allocation of `size` bytes; a read of `n` bytes is
/// split off the front as a [`Bytes`] that shares the allocation, so the bytes are never
/// copied and no byte is handed out twice. Once the room left is under half of `size`, a new
/// room is taken: the allocation itself again when every chunk handed out from it was
/// dropped (the engine drops them once opened), else a fresh one. `size` doubles while reads
/// fill the room (up to `READ_MAX`) and halves after a read that filled half of it or less
/// (down to `READ_MIN`), so idle connections keep small buffers.
#[derive(Debug)]
pub(crate) struct ReadBuf {
    /// The room the next read goes into (initialised: `futures-io` reads into `&mut [u8]`).
    room: BytesMut,
    /// The size of a new room.
    size: usize,
}

impl ReadBuf {
    /// An empty buffer; the first room is `READ_MIN` bytes.
    pub(crate) fn new() -> ReadBuf {
        ReadBuf {
            room: BytesMut::new(),
            size: READ_MIN,
        }
    }

    /// The room to read into (never empty).
    pub(crate) fn room(&mut self) -> &mut [u8] {
        if self.room.len() < self.size / 2 {
            // `reserve` on the emptied view reuses the allocation when it is no longer shared.
            self.room.clear();
            self.room.reserve(self.size);
            self.room.resize(self.size, 0);
        }
        &mut self.room
    }

    /// Hands out the first `n` bytes of the room (those the read filled) and adapts the size.
    pub(crate) fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.room.len());
        let filled = n == self.room.len();
        let bytes = self.room.split_to(n).freeze();
        if filled && self.size < READ_MAX {
            self.size = (self.size * 2).min(READ_MAX);
        } else if n <= self.size / 2 && self.size > READ_MIN {
            // A read that fills half the room or less (an idle connection's ping after a
            // burst) halves it: the big allocation goes once its chunks are dropped.
            self.size = (self.size / 2).max(READ_MIN);
            if self.room.len() > self.size {
                self.room = BytesMut::new();
            }
        }
        bytes
    }

    /// Bytes of room left in the current allocation.
    #[cfg(test)]
    fn room_len(&self) -> usize {
        self.room.len()
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

    /// Reads `stream` through a `ReadBuf`, each read taking at most the next of `sizes`
    /// (cycled); returns the chunks handed out, all kept alive.
    fn read_through(stream: &[u8], sizes: &[usize]) -> Vec<Bytes> {
        let mut buf = ReadBuf::new();
        let mut chunks = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < stream.len() {
            let room = buf.room();
            assert!(!room.is_empty(), "a room to read into");
            let n = room
                .len()
                .min(sizes[i % sizes.len()])
                .min(stream.len() - at);
            room[..n].copy_from_slice(&stream[at..at + n]);
            // Scribble over the rest of the room: it must not show in any chunk.
            room[n..].fill(0xee);
            chunks.push(buf.take(n));
            at += n;
            i += 1;
        }
        chunks
    }

    #[test]
    fn read_chunks_hand_out_every_byte_once_in_order() {
        let stream: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
        for sizes in [
            vec![usize::MAX],
            vec![1],
            vec![1044, 7, 70_000, 300],
            vec![READ_MAX, READ_MAX, 10],
        ] {
            let chunks = read_through(&stream, &sizes);
            let got: Vec<u8> = chunks.iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(got, stream, "sizes {sizes:?}");
        }
    }

    #[test]
    fn read_room_grows_while_filled_and_shrinks_when_idle() {
        let mut buf = ReadBuf::new();
        // Reads that fill the room double it up to READ_MAX.
        for _ in 0..20 {
            let n = buf.room().len();
            drop(buf.take(n));
        }
        assert_eq!(buf.size, READ_MAX);
        assert_eq!(buf.room().len(), READ_MAX);
        // Small reads (pings) halve it back down to READ_MIN; the room follows.
        for _ in 0..20 {
            buf.room();
            drop(buf.take(10));
        }
        assert_eq!(buf.size, READ_MIN);
        assert!(buf.room().len() <= READ_MIN);
    }

    #[test]
    fn read_room_reuses_its_allocation_once_chunks_are_dropped() {
        let mut buf = ReadBuf::new();
        let first = buf.room().as_ptr();
        let n = buf.room_len();
        let chunk = buf.take(n / 2 + 1);
        assert_eq!(
            chunk.as_ptr(),
            first,
            "the chunk is the room's front, not a copy"
        );
        drop(chunk);
        // Under half the room is left: a new room, in the same allocation.
        assert_eq!(buf.room().as_ptr(), first);
        // While a chunk is held, the next room is elsewhere.
        let held = buf.take(n / 2 + 1);
        assert_ne!(buf.room().as_ptr(), held.as_ptr());
    }
}
