//! MConnection channels (spec 4.2): descriptors and the per-channel send and receive state.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::ids::ChannelId;

/// How a reactor's channel behaves on every connection (spec 4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelDescriptor {
    /// The channel id.
    pub id: ChannelId,
    /// Send-scheduling weight (> 0; 0 is treated as 1).
    pub priority: u32,
    /// Outbound queue length in messages (0 means 1).
    pub send_queue_capacity: usize,
    /// Initial reassembly-buffer capacity in bytes: an allocation hint, capped at the message
    /// capacity and only allocated when the first chunk of a multi-packet message arrives.
    pub recv_buffer_capacity: usize,
    /// Largest reassembled message accepted; more is a disconnect (0 means 21 MiB).
    pub recv_message_capacity: usize,
}

/// CometBFT's default `RecvMessageCapacity` (21 MiB).
pub const DEFAULT_RECV_MESSAGE_CAPACITY: usize = 22_020_096;

impl ChannelDescriptor {
    /// A descriptor with CometBFT's defaults for the unset fields.
    #[must_use]
    pub fn new(id: ChannelId, priority: u32) -> Self {
        ChannelDescriptor {
            id,
            priority,
            send_queue_capacity: 1,
            recv_buffer_capacity: 4096,
            recv_message_capacity: DEFAULT_RECV_MESSAGE_CAPACITY,
        }
    }

    /// The PEX channel: id 0x00, priority 1, queue 10, messages up to 64000 bytes.
    #[must_use]
    pub fn pex() -> Self {
        ChannelDescriptor {
            id: ChannelId::PEX,
            priority: 1,
            send_queue_capacity: 10,
            recv_buffer_capacity: 4096,
            recv_message_capacity: 64_000,
        }
    }

    pub(crate) fn effective_priority(&self) -> u64 {
        u64::from(self.priority.max(1))
    }

    pub(crate) fn effective_queue(&self) -> usize {
        self.send_queue_capacity.max(1)
    }

    pub(crate) fn effective_max_message(&self) -> usize {
        if self.recv_message_capacity == 0 {
            DEFAULT_RECV_MESSAGE_CAPACITY
        } else {
            self.recv_message_capacity
        }
    }
}

/// The send half of one channel: queue, message in progress and the scheduler's counter.
#[derive(Debug)]
pub(crate) struct SendChannel {
    pub(crate) queue: VecDeque<Bytes>,
    /// The message being sent and how much of it has gone out.
    pub(crate) current: Option<(Bytes, usize)>,
    /// Bytes sent recently (decayed ×0.8 every 2 s).
    pub(crate) recently_sent: u64,
    /// Queued bytes not yet packetised (for stats).
    pub(crate) pending_bytes: usize,
    /// Total payload bytes sent.
    pub(crate) bytes_sent: u64,
    /// Messages accepted for sending.
    pub(crate) messages_sent: u64,
}

impl SendChannel {
    pub(crate) fn new() -> Self {
        SendChannel {
            queue: VecDeque::new(),
            current: None,
            recently_sent: 0,
            pending_bytes: 0,
            bytes_sent: 0,
            messages_sent: 0,
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.current.is_some() || !self.queue.is_empty()
    }

    /// The next chunk of at most `max_payload` bytes and whether it ends its message.
    pub(crate) fn next_chunk(&mut self, max_payload: usize) -> Option<(Bytes, bool)> {
        if self.current.is_none() {
            let msg = self.queue.pop_front()?;
            self.current = Some((msg, 0));
        }
        let (msg, offset) = self.current.as_mut()?;
        let end = msg.len().min(offset.saturating_add(max_payload));
        let chunk = msg.slice(*offset..end);
        *offset = end;
        let eof = end == msg.len();
        self.pending_bytes = self.pending_bytes.saturating_sub(chunk.len());
        self.bytes_sent += chunk.len() as u64;
        if eof {
            self.current = None;
        }
        Some((chunk, eof))
    }
}

/// The receive half of one channel: the reassembly buffer.
#[derive(Debug)]
pub(crate) struct RecvChannel {
    pub(crate) buf: BytesMut,
    /// Total payload bytes received.
    pub(crate) bytes_received: u64,
    /// Complete messages received.
    pub(crate) messages_received: u64,
    /// Size of the last multi-packet message: the next one reserves this much up front, so a
    /// stream of similar messages (64 KiB block parts) is reassembled without regrowing the
    /// buffer by doubling (each doubling copies what arrived so far). It follows the last
    /// message, so one large message does not make every later one reserve as much.
    size_hint: usize,
}

/// Reassembly overflow: the message would exceed the channel's capacity.
pub(crate) struct Oversized {
    pub(crate) size: usize,
    pub(crate) max: usize,
}

impl RecvChannel {
    pub(crate) fn new() -> Self {
        RecvChannel {
            buf: BytesMut::new(),
            bytes_received: 0,
            messages_received: 0,
            size_hint: 0,
        }
    }

    /// Adds a chunk; returns the complete message on `eof`.
    pub(crate) fn push(
        &mut self,
        desc: &ChannelDescriptor,
        data: Bytes,
        eof: bool,
    ) -> Result<Option<Bytes>, Oversized> {
        let max = desc.effective_max_message();
        let size = self.buf.len().saturating_add(data.len());
        if size > max {
            return Err(Oversized { size, max });
        }
        self.bytes_received += data.len() as u64;
        if eof && self.buf.is_empty() {
            // A single-packet message (at most one payload, ~1 KiB) is copied out: a view into
            // the packet would keep the whole read buffer it arrived in alive for as long as
            // the application keeps the message, so a peer could make each small retained
            // message pin a large allocation.
            self.messages_received += 1;
            return Ok(Some(Bytes::copy_from_slice(&data)));
        }
        if self.buf.is_empty() {
            let expect = desc.recv_buffer_capacity.max(self.size_hint);
            self.buf.reserve(expect.min(max).max(data.len()));
        }
        self.buf.extend_from_slice(&data);
        if eof {
            let msg = self.buf.split().freeze();
            self.size_hint = msg.len();
            // Release the reassembly buffer so idle channels hold no heap.
            self.buf = BytesMut::new();
            self.messages_received += 1;
            return Ok(Some(msg));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a single-packet message used to be a view into the packet, so keeping a
    /// 5-byte message kept the whole (here 64 KiB) read buffer alive.
    #[test]
    fn a_single_packet_message_does_not_pin_the_read_buffer() {
        let read_buffer = Bytes::from(vec![7u8; 64 * 1024]);
        let packet_data = read_buffer.slice(1000..1005);
        let desc = ChannelDescriptor::new(ChannelId(0x30), 1);
        let mut ch = RecvChannel::new();
        let Ok(Some(msg)) = ch.push(&desc, packet_data, true) else {
            panic!("a complete single-packet message is delivered");
        };
        assert_eq!(&msg[..], &[7u8; 5]);
        let buffer = read_buffer.as_ptr_range();
        assert!(
            !buffer.contains(&msg.as_ptr()),
            "the message shares the read buffer"
        );
    }

    #[test]
    fn a_multi_packet_message_is_reassembled_and_its_buffer_released() {
        let desc = ChannelDescriptor::new(ChannelId(0x30), 1);
        let mut ch = RecvChannel::new();
        assert!(matches!(
            ch.push(&desc, Bytes::from_static(b"ab"), false),
            Ok(None)
        ));
        let Ok(Some(msg)) = ch.push(&desc, Bytes::from_static(b"cd"), true) else {
            panic!("the last chunk completes the message");
        };
        assert_eq!(&msg[..], b"abcd");
        assert_eq!(ch.buf.capacity(), 0);
        assert_eq!(ch.bytes_received, 4);
    }

    /// After one 64 KiB message, the next of the same size is reassembled in one allocation
    /// of its size (no regrowth); a smaller one after it reserves the first one's size only
    /// once, then its own.
    #[test]
    fn reassembly_reserves_the_last_message_size() {
        let desc = ChannelDescriptor::new(ChannelId(0x30), 1);
        let mut ch = RecvChannel::new();
        let deliver = |ch: &mut RecvChannel, size: usize| -> usize {
            let mut most = 0;
            for i in 0..size / 1024 {
                let eof = i + 1 == size / 1024;
                let got = ch.push(&desc, Bytes::from(vec![1u8; 1024]), eof);
                most = most.max(ch.buf.capacity());
                if eof {
                    let Ok(Some(msg)) = got else {
                        panic!("the last chunk completes the message");
                    };
                    assert_eq!(msg.len(), size);
                }
            }
            most
        };
        deliver(&mut ch, 64 * 1024);
        assert_eq!(deliver(&mut ch, 64 * 1024), 64 * 1024);
        assert_eq!(deliver(&mut ch, 8 * 1024), 64 * 1024);
        assert_eq!(deliver(&mut ch, 8 * 1024), 8 * 1024);
    }
}
