//! The IO tasks of the driver: the accept loop and one reader and one writer task per TCP
//! connection, joined to the engine task by bounded queues (`IoEvent` in, `WriterMsg` out).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cometmesh_core::ConnId;
use cometmesh_core::engine::{CloseCause, DialFailure};
use futures::channel::mpsc;
use futures::io::{AsyncReadExt, AsyncWriteExt};
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
            match batch.as_slice() {
                [] => {}
                [one] => writer.write_all(one).await?,
                many => {
                    let mut buf = Vec::with_capacity(len);
                    for b in many {
                        buf.extend_from_slice(b);
                    }
                    writer.write_all(&buf).await?;
                }
            }
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
