//! The MConnection (spec 4) over the plaintext byte stream: packets in and out, channel
//! scheduling, keep-alive, flush throttle and rate limits. It sits below nothing and above the
//! SecretConnection; [`super::PeerConnection`] seals what it produces and feeds it what was opened.
//! It is usable alone (tests and the `conn_packets` fuzz target drive it directly).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message as _;

use super::channel::{ChannelDescriptor, RecvChannel, SendChannel};
use super::config::ConnectionConfig;
use super::error::{CloseReason, ProtocolViolation, SendError, TimeoutKind};
use crate::ids::{ChannelId, NodeId};
use crate::wire::codec::{CodecError, encode_delimited, read_length_prefix};
use crate::wire::limits::max_packet_size;
use crate::wire::proto::{self, Packet, PacketMsg, packet};

/// Written packets are flushed at once when this many bytes are waiting (Go's 64 KiB writer).
pub const FLUSH_THRESHOLD: usize = 64 * 1024;
/// `recently_sent` decays by ×0.8 this often.
pub const DECAY_INTERVAL: Duration = Duration::from_secs(2);

/// Traffic counters of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelStats {
    /// The channel.
    pub id: ChannelId,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Messages accepted by `send`.
    pub messages_sent: u64,
    /// Complete messages received.
    pub messages_received: u64,
    /// Messages waiting in the send queue (not counting the one in progress).
    pub queued_messages: usize,
    /// Payload bytes accepted by `send` and not yet packetised.
    pub pending_bytes: usize,
}

/// Traffic counters of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Per registered channel, in registration order.
    pub channels: Vec<ChannelStats>,
    /// Bytes handed out by `poll_transmit` (including handshake and encryption overhead).
    pub wire_bytes_sent: u64,
    /// Of those, bytes reported taken by `handle_sent` (flushed to the socket).
    pub wire_bytes_flushed: u64,
    /// Bytes passed to `handle_received`.
    pub wire_bytes_received: u64,
    /// Bytes produced but not yet reported taken by `handle_sent`.
    pub unflushed_bytes: usize,
}

/// The MConnection state machine on plaintext.
#[derive(Debug)]
pub struct MConnection {
    config: Arc<ConnectionConfig>,
    channels: Arc<[ChannelDescriptor]>,
    send: Vec<SendChannel>,
    recv: Vec<RecvChannel>,
    /// Bitmap of the channel ids the peer advertised.
    peer_channels: [u64; 4],
    /// Largest delimited Packet body accepted (1034 at the default payload).
    max_packet: usize,
    /// Received plaintext not yet processed (waiting for more bytes or for the rate limit).
    recv_buf: BytesMut,
    /// Packets written and not yet handed out by `poll_plaintext`.
    send_buf: BytesMut,
    flush_at: Option<Instant>,
    flush_now: bool,
    send_bucket: super::ratelimit::TokenBucket,
    recv_bucket: super::ratelimit::TokenBucket,
    next_ping: Instant,
    pong_deadline: Option<Instant>,
    pong_pending: bool,
    next_decay: Instant,
    messages: VecDeque<(ChannelId, Bytes)>,
}

/// Whether `ch` is in the 256-bit channel set `set`.
fn in_channel_set(set: &[u64; 4], ch: ChannelId) -> bool {
    set[usize::from(ch.0 >> 6)] & (1 << (ch.0 & 63)) != 0
}

impl MConnection {
    /// A fresh MConnection; `peer_channels` are the channels the peer advertised (we only send
    /// on those).
    #[must_use]
    pub fn new(
        now: Instant,
        config: Arc<ConnectionConfig>,
        channels: Arc<[ChannelDescriptor]>,
        peer_channels: &[ChannelId],
    ) -> Self {
        let mut set = [0u64; 4];
        for ch in peer_channels {
            set[usize::from(ch.0 >> 6)] |= 1 << (ch.0 & 63);
        }
        MConnection {
            send: channels.iter().map(|_| SendChannel::new()).collect(),
            recv: channels.iter().map(|_| RecvChannel::new()).collect(),
            peer_channels: set,
            max_packet: max_packet_size(config.max_packet_payload),
            recv_buf: BytesMut::new(),
            send_buf: BytesMut::new(),
            flush_at: None,
            flush_now: false,
            send_bucket: super::ratelimit::TokenBucket::new(now, config.send_rate),
            recv_bucket: super::ratelimit::TokenBucket::new(now, config.recv_rate),
            next_ping: now + config.ping_interval,
            pong_deadline: None,
            pong_pending: false,
            next_decay: now + DECAY_INTERVAL,
            messages: VecDeque::new(),
            config,
            channels,
        }
    }

    fn index(&self, ch: ChannelId) -> Option<usize> {
        self.channels.iter().position(|d| d.id == ch)
    }

    /// Queues `msg` on `channel`; a full queue hands the message back.
    pub fn send(&mut self, channel: ChannelId, msg: Bytes) -> Result<(), SendError> {
        let idx = self
            .index(channel)
            .ok_or(SendError::UnknownChannel(channel))?;
        if !in_channel_set(&self.peer_channels, channel) {
            return Err(SendError::NotAdvertisedByPeer(channel));
        }
        let desc = &self.channels[idx];
        let ch = &mut self.send[idx];
        if ch.queue.len() >= desc.effective_queue() {
            return Err(SendError::Full(msg));
        }
        ch.pending_bytes += msg.len();
        ch.messages_sent += 1;
        ch.queue.push_back(msg);
        Ok(())
    }

    /// Whether a send on `channel` would be accepted now (registered, advertised, queue room).
    #[must_use]
    pub fn can_send(&self, channel: ChannelId) -> bool {
        self.index(channel).is_some_and(|i| {
            in_channel_set(&self.peer_channels, channel)
                && self.send[i].queue.len() < self.channels[i].effective_queue()
        })
    }

    /// Whether the peer advertised `channel`.
    #[must_use]
    pub fn peer_has_channel(&self, channel: ChannelId) -> bool {
        in_channel_set(&self.peer_channels, channel)
    }

    /// Whether any message is queued or partly sent, or packets wait to be flushed.
    #[must_use]
    pub fn has_pending_send(&self) -> bool {
        !self.send_buf.is_empty() || self.pong_pending || self.send.iter().any(|c| c.has_pending())
    }

    /// Received plaintext waiting for the receive rate limit.
    #[must_use]
    pub fn recv_backlog(&self) -> usize {
        self.recv_buf.len()
    }

    /// The receive buffer, for an opener to append plaintext to without a copy; follow with
    /// [`Self::handle_plaintext`] (with an empty slice) to process it.
    pub(crate) fn recv_buf_mut(&mut self) -> &mut BytesMut {
        &mut self.recv_buf
    }

    /// Takes received plaintext and processes as many packets as the receive rate allows.
    pub fn handle_plaintext(&mut self, now: Instant, data: &[u8]) -> Result<(), CloseReason> {
        self.recv_buf.extend_from_slice(data);
        self.process(now)?;
        if self.recv_buf.len() > self.config.recv_backlog {
            return Err(CloseReason::RecvBacklog {
                limit: self.config.recv_backlog,
            });
        }
        Ok(())
    }

    /// Expires the pong deadline and resumes receive processing held back by the rate limit.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), CloseReason> {
        if self.pong_deadline.is_some_and(|d| now >= d) {
            return Err(CloseReason::Timeout(TimeoutKind::Pong));
        }
        self.process(now)
    }

    fn process(&mut self, now: Instant) -> Result<(), CloseReason> {
        while !self.recv_buf.is_empty() && self.recv_bucket.ready(now) {
            let (body_len, prefix_len) = match read_length_prefix(&self.recv_buf, self.max_packet) {
                Ok(Some(v)) => v,
                Ok(None) => break,
                Err(CodecError::TooLarge { len, max }) => {
                    return Err(ProtocolViolation::OversizedPacket { len, max }.into());
                }
                Err(e) => return Err(ProtocolViolation::Undecodable(e).into()),
            };
            let total = prefix_len + body_len;
            if self.recv_buf.len() < total {
                break;
            }
            let frame = self.recv_buf.split_to(total).freeze();
            let body = frame.slice(prefix_len..);
            self.recv_bucket.consume(total);
            self.handle_packet(body)?;
        }
        if self.recv_buf.is_empty() && self.recv_buf.capacity() > 0 {
            // Delivered messages may share this allocation; do not keep it alive when idle.
            self.recv_buf = BytesMut::new();
        }
        Ok(())
    }

    fn handle_packet(&mut self, body: Bytes) -> Result<(), CloseReason> {
        let packet = match Packet::decode(body.clone()) {
            Ok(p) => p,
            Err(e) => {
                if looks_like_node_info(&body) {
                    return Err(ProtocolViolation::SecondNodeInfo.into());
                }
                return Err(ProtocolViolation::Undecodable(CodecError::Decode(e)).into());
            }
        };
        match packet.sum {
            None => {
                if looks_like_node_info(&body) {
                    return Err(ProtocolViolation::SecondNodeInfo.into());
                }
                Err(ProtocolViolation::EmptyPacket.into())
            }
            Some(packet::Sum::PacketPing(_)) | Some(packet::Sum::PacketPong(_))
                if body.len() > 2 && looks_like_node_info(&body) =>
            {
                Err(ProtocolViolation::SecondNodeInfo.into())
            }
            Some(packet::Sum::PacketPing(_)) => {
                self.pong_pending = true;
                Ok(())
            }
            Some(packet::Sum::PacketPong(_)) => {
                self.pong_deadline = None;
                Ok(())
            }
            Some(packet::Sum::PacketMsg(msg)) => self.handle_msg(msg),
        }
    }

    fn handle_msg(&mut self, msg: PacketMsg) -> Result<(), CloseReason> {
        let Some(idx) = u8::try_from(msg.channel_id)
            .ok()
            .and_then(|c| self.index(ChannelId(c)))
        else {
            return Err(ProtocolViolation::UnknownChannel(msg.channel_id).into());
        };
        let desc = &self.channels[idx];
        match self.recv[idx].push(desc, msg.data, msg.eof) {
            Ok(Some(message)) => {
                self.messages.push_back((desc.id, message));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(o) => Err(ProtocolViolation::OversizedMessage {
                channel: desc.id,
                size: o.size,
                max: o.max,
            }
            .into()),
        }
    }

    /// Whether a ping is due: the connection then also gives back the buffers of its empty
    /// queues ([`Self::trim_idle`]).
    pub(crate) fn ping_due(&self, now: Instant) -> bool {
        now >= self.next_ping
    }

    /// Frees the buffers of empty queues, once a ping interval: a queue keeps the capacity of
    /// its busiest moment, and ten thousand idle peers would keep theirs for good. A busy queue
    /// grows again at once, so this costs one allocation per queue and ping interval at most.
    fn trim_idle(&mut self) {
        if self.messages.is_empty() {
            self.messages = VecDeque::new();
        }
        for c in &mut self.send {
            if c.queue.is_empty() {
                c.queue = VecDeque::new();
            }
        }
    }

    /// The next complete message received.
    #[must_use]
    pub fn poll_message(&mut self) -> Option<(ChannelId, Bytes)> {
        self.messages.pop_front()
    }

    fn decay(&mut self, now: Instant) {
        let mut periods = 0;
        while now >= self.next_decay {
            periods += 1;
            if periods > 64 {
                for ch in &mut self.send {
                    ch.recently_sent = 0;
                }
                self.next_decay = now + DECAY_INTERVAL;
                return;
            }
            for ch in &mut self.send {
                ch.recently_sent = ch.recently_sent * 8 / 10;
            }
            self.next_decay += DECAY_INTERVAL;
        }
    }

    /// The channel to serve next: pending data, least `recently_sent / priority`, ties by
    /// registration order.
    fn select(&self) -> Option<usize> {
        let mut best: Option<(usize, u64, u64)> = None;
        for (i, ch) in self.send.iter().enumerate() {
            if !ch.has_pending() {
                continue;
            }
            let prio = self.channels[i].effective_priority();
            let better = match best {
                None => true,
                Some((_, bs, bp)) => {
                    u128::from(ch.recently_sent) * u128::from(bp)
                        < u128::from(bs) * u128::from(prio)
                }
            };
            if better {
                best = Some((i, ch.recently_sent, prio));
            }
        }
        best.map(|(i, _, _)| i)
    }

    fn write_packet(&mut self, packet: &Packet) -> usize {
        let before = self.send_buf.len();
        encode_delimited(packet, &mut self.send_buf);
        self.send_buf.len() - before
    }

    /// Produces plaintext to seal and send, if any is due. `room` is how many more unflushed bytes
    /// the send budget allows; no packet is written once the written bytes reach it.
    #[must_use]
    pub fn poll_plaintext(&mut self, now: Instant, room: usize) -> Option<BytesMut> {
        self.decay(now);
        const CONTROL_LEN: usize = 3;
        if now >= self.next_ping && self.send_buf.len() + CONTROL_LEN <= room {
            self.write_packet(&Packet {
                sum: Some(packet::Sum::PacketPing(proto::PacketPing {})),
            });
            self.flush_now = true;
            if self.pong_deadline.is_none() {
                self.pong_deadline = Some(now + self.config.pong_timeout);
            }
            self.next_ping = now + self.config.ping_interval;
            self.trim_idle();
        }
        if self.pong_pending && self.send_buf.len() + CONTROL_LEN <= room {
            self.write_packet(&Packet {
                sum: Some(packet::Sum::PacketPong(proto::PacketPong {})),
            });
            self.pong_pending = false;
            self.flush_now = true;
        }
        let payload = self.config.max_packet_payload;
        let batch = self.config.packets_per_batch.max(1);
        'batches: while self.send_buf.len() < room
            && self.send_buf.len() < FLUSH_THRESHOLD
            && self.send_bucket.ready(now)
        {
            self.reserve_send_buf(room, payload, batch);
            let mut written = 0;
            let mut wrote_any = false;
            for _ in 0..batch {
                if self.send_buf.len() >= room {
                    break;
                }
                let Some(idx) = self.select() else {
                    break;
                };
                let id = self.channels[idx].id;
                let Some((data, eof)) = self.send[idx].next_chunk(payload) else {
                    break;
                };
                let n = self.write_packet(&Packet {
                    sum: Some(packet::Sum::PacketMsg(PacketMsg {
                        channel_id: i32::from(id.0),
                        eof,
                        data,
                    })),
                });
                self.send[idx].recently_sent += n as u64;
                written += n;
                wrote_any = true;
            }
            self.send_bucket.consume(written);
            if !wrote_any {
                break 'batches;
            }
            if self.flush_at.is_none() {
                self.flush_at = Some(now + self.config.flush_throttle);
            }
        }
        if self.send_buf.is_empty() {
            self.flush_now = false;
            self.flush_at = None;
            return None;
        }
        let due = self.flush_now
            || self.send_buf.len() >= FLUSH_THRESHOLD
            || self.send_buf.len() >= room
            || self.flush_at.is_some_and(|t| now >= t);
        if !due {
            return None;
        }
        self.flush_now = false;
        self.flush_at = None;
        // Hand over the whole buffer: keeping a view into it would pin the allocation.
        Some(std::mem::take(&mut self.send_buf))
    }

    /// Sizes an empty packet buffer for what is queued, up to what one call may write (the
    /// flush threshold plus one batch), so that writing a burst does not regrow it by doubling
    /// (each doubling copies what was written so far). Called only when packets are about to
    /// be written (send rate ready), so an idle or throttled connection reserves nothing.
    fn reserve_send_buf(&mut self, room: usize, payload: usize, batch: usize) {
        /// More than any PacketMsg's framing: Packet and PacketMsg tags and lengths, channel, eof.
        const PACKET_OVERHEAD: usize = 16;
        if !self.send_buf.is_empty() {
            return;
        }
        let (bytes, messages) = self.send.iter().fold((0usize, 0usize), |(b, m), c| {
            (
                b.saturating_add(c.pending_bytes),
                m + c.queue.len() + usize::from(c.current.is_some()),
            )
        });
        if messages == 0 {
            return;
        }
        let packets = messages.saturating_add(bytes / payload.max(1));
        let want = bytes.saturating_add(packets.saturating_mul(PACKET_OVERHEAD));
        let most = FLUSH_THRESHOLD.saturating_add(batch.saturating_mul(payload + PACKET_OVERHEAD));
        self.send_buf.reserve(want.min(most).min(room));
    }

    /// Like [`Self::poll_plaintext`] but flushes whatever is written, ignoring the throttle
    /// (used when closing after a flush).
    #[must_use]
    pub fn poll_plaintext_now(&mut self, now: Instant, room: usize) -> Option<BytesMut> {
        self.flush_now = true;
        self.poll_plaintext(now, room)
    }

    /// The next instant at which [`Self::handle_timeout`] or [`Self::poll_plaintext`] has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.next_ping);
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        min(self.pong_deadline);
        if !self.send_buf.is_empty() {
            min(self.flush_at);
        }
        if self.send.iter().any(SendChannel::has_pending) {
            min(self.send_bucket.ready_at());
        }
        if !self.recv_buf.is_empty() {
            min(self.recv_bucket.ready_at());
        }
        t
    }

    /// Per-channel counters.
    #[must_use]
    pub fn channel_stats(&self) -> Vec<ChannelStats> {
        self.channels
            .iter()
            .zip(self.send.iter().zip(&self.recv))
            .map(|(d, (s, r))| ChannelStats {
                id: d.id,
                bytes_sent: s.bytes_sent,
                bytes_received: r.bytes_received,
                messages_sent: s.messages_sent,
                messages_received: r.messages_received,
                queued_messages: s.queue.len(),
                pending_bytes: s.pending_bytes,
            })
            .collect()
    }
}

/// Whether a Packet body is really a `DefaultNodeInfo` (a node id in field 2): what a peer that
/// sends its NodeInfo twice puts on the Packet stream.
fn looks_like_node_info(body: &[u8]) -> bool {
    proto::DefaultNodeInfo::decode(body)
        .is_ok_and(|ni| ni.default_node_id.parse::<NodeId>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn base() -> Instant {
        Instant::now()
    }

    fn mconn(now: Instant, config: ConnectionConfig, prios: &[(u8, u32)]) -> MConnection {
        let descs: Vec<_> = prios
            .iter()
            .map(|&(id, p)| {
                let mut d = ChannelDescriptor::new(ChannelId(id), p);
                d.send_queue_capacity = 100;
                d
            })
            .collect();
        let ids: Vec<_> = descs.iter().map(|d| d.id).collect();
        MConnection::new(now, Arc::new(config), descs.into(), &ids)
    }

    /// Channel ids of the PacketMsgs in `plain`, in order.
    fn channels_of(plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = plain;
        while !buf.is_empty() {
            let (len, pre) = read_length_prefix(buf, 2000).unwrap().unwrap();
            let p = Packet::decode(&buf[pre..pre + len]).unwrap();
            if let Some(packet::Sum::PacketMsg(m)) = p.sum {
                out.push(m.channel_id as u8);
            }
            buf = &buf[pre + len..];
        }
        out
    }

    #[test]
    fn ties_go_to_registration_order_then_least_recently_sent() {
        let now = base();
        let mut m = mconn(now, ConnectionConfig::default(), &[(0x21, 1), (0x20, 1)]);
        for _ in 0..3 {
            m.send(ChannelId(0x20), Bytes::from(vec![1; 100])).unwrap();
            m.send(ChannelId(0x21), Bytes::from(vec![1; 100])).unwrap();
        }
        let plain = m.poll_plaintext_now(now, usize::MAX).unwrap();
        assert_eq!(channels_of(&plain), [0x21, 0x20, 0x21, 0x20, 0x21, 0x20]);
    }

    #[test]
    fn a_batch_is_at_most_packets_per_batch_and_waits_for_the_send_rate() {
        let now = base();
        let config = ConnectionConfig {
            send_rate: 10_000, // 1000-byte bucket: one 10-packet batch (~2 KB) puts it in debt
            ..ConnectionConfig::default()
        };
        let mut m = mconn(now, config, &[(0x20, 1)]);
        for _ in 0..30 {
            m.send(ChannelId(0x20), Bytes::from(vec![1; 200])).unwrap();
        }
        let first = m.poll_plaintext_now(now, usize::MAX).unwrap();
        assert_eq!(channels_of(&first).len(), 10);
        assert!(m.poll_plaintext_now(now, usize::MAX).is_none());
        let ready = m.poll_timeout().unwrap();
        assert!(ready > now && ready < now + Duration::from_secs(1));
        let second = m.poll_plaintext_now(ready, usize::MAX).unwrap();
        assert_eq!(channels_of(&second).len(), 10);
    }

    #[test]
    fn recently_sent_decays_by_four_fifths_every_two_seconds() {
        let now = base();
        let mut m = mconn(now, ConnectionConfig::default(), &[(0x20, 1)]);
        m.send(ChannelId(0x20), Bytes::from(vec![1; 995])).unwrap();
        let _ = m.poll_plaintext_now(now, usize::MAX).unwrap();
        // PacketMsg = 08 20 10 01 1a e3 07 + 995 = 1002 bytes; Packet = 1a ea 07 + 1002;
        // with its 2-byte prefix: 1007.
        let sent = m.send[0].recently_sent;
        assert_eq!(sent, 1007);
        let _ = m.poll_plaintext(now + Duration::from_millis(1999), usize::MAX);
        assert_eq!(m.send[0].recently_sent, sent);
        let _ = m.poll_plaintext(now + Duration::from_secs(2), usize::MAX);
        assert_eq!(m.send[0].recently_sent, sent * 8 / 10);
        let _ = m.poll_plaintext(now + Duration::from_secs(6), usize::MAX);
        assert_eq!(m.send[0].recently_sent, sent * 8 / 10 * 8 / 10 * 8 / 10);
        let _ = m.poll_plaintext(now + Duration::from_secs(1000), usize::MAX);
        assert_eq!(m.send[0].recently_sent, 0);
    }

    /// A burst is written into a buffer sized for it once (what is queued plus 16 bytes of
    /// framing per packet), not regrown by doubling from empty.
    #[test]
    fn the_packet_buffer_is_sized_for_the_queued_burst() {
        let now = base();
        let mut m = mconn(now, ConnectionConfig::default(), &[(0x20, 1)]);
        for _ in 0..60 {
            m.send(ChannelId(0x20), Bytes::from(vec![1; 1000])).unwrap();
        }
        let plain = m.poll_plaintext_now(now, usize::MAX).unwrap();
        assert_eq!(channels_of(&plain).len(), 60);
        // 60 000 bytes in 60 messages (60 + 60 000 / 1024 = 118 packets at most) → 61 888.
        assert_eq!(plain.capacity(), 60_000 + 118 * 16);
        assert!(plain.len() <= plain.capacity());
    }

    /// A ping gives back the buffers of the empty queues (received messages, each channel's
    /// send queue); a queue still holding messages keeps its own, and nothing is trimmed before
    /// the ping is due.
    #[test]
    fn a_ping_frees_the_buffers_of_empty_queues() {
        let now = base();
        let config = ConnectionConfig::default();
        let interval = config.ping_interval;
        let mut m = mconn(now, config, &[(0x20, 1), (0x21, 1)]);
        let mut incoming = BytesMut::new();
        for i in 0..20u8 {
            let packet = Packet::msg(ChannelId(0x20), true, vec![i; 10].into());
            encode_delimited(&packet, &mut incoming);
        }
        m.handle_plaintext(now, &incoming).unwrap();
        let mut got = 0;
        while m.poll_message().is_some() {
            got += 1;
        }
        assert_eq!(got, 20);
        for _ in 0..50 {
            m.send(ChannelId(0x20), Bytes::from(vec![1; 100])).unwrap();
        }
        while m.poll_plaintext_now(now, usize::MAX).is_some() {}
        assert!(m.messages.capacity() >= 20 && m.send[0].queue.capacity() >= 50);
        for _ in 0..2 {
            m.send(ChannelId(0x21), Bytes::from(vec![2; 100])).unwrap();
        }
        let before = now + interval - Duration::from_millis(1);
        assert!(!m.ping_due(before));
        let _ = m.poll_plaintext(before, 0);
        assert!(m.messages.capacity() >= 20 && m.send[0].queue.capacity() >= 50);
        let at = now + interval;
        assert!(m.ping_due(at));
        // Room for the ping only: the messages of 0x21 stay queued.
        let plain = m.poll_plaintext(at, 3).unwrap();
        assert_eq!(&plain[..], &[0x02, 0x0a, 0x00], "the ping");
        assert!(!m.ping_due(at));
        assert_eq!(m.messages.capacity(), 0);
        assert_eq!(m.send[0].queue.capacity(), 0);
        assert_eq!(m.send[1].queue.len(), 2, "a busy queue keeps its messages");
        let mut plain = m.poll_plaintext_now(at, usize::MAX).unwrap();
        assert_eq!(channels_of(&plain.split_off(0)), [0x21, 0x21]);
    }

    #[test]
    fn a_zero_length_message_is_one_eof_packet_and_pings_coalesce() {
        let now = base();
        let mut m = mconn(now, ConnectionConfig::default(), &[(0x20, 1)]);
        m.send(ChannelId(0x20), Bytes::new()).unwrap();
        let plain = m.poll_plaintext_now(now, usize::MAX).unwrap();
        assert_eq!(&plain[..], &[0x06, 0x1a, 0x04, 0x08, 0x20, 0x10, 0x01][..]);
        // Three pings in one read: one pong.
        m.handle_plaintext(now, &[2, 0x0a, 0, 2, 0x0a, 0, 2, 0x0a, 0])
            .unwrap();
        let plain = m.poll_plaintext(now, usize::MAX).unwrap();
        assert_eq!(&plain[..], &[0x02, 0x12, 0x00]);
    }

    /// The PEX channel's message limit (64000 bytes, spec 9) holds at the channel, before any
    /// PEX decoding: exactly 64000 bytes arrive, one more closes.
    #[test]
    fn pex_channel_message_limit_is_crossed_by_one() {
        let now = base();
        let stream = |total: usize| {
            let mut out = BytesMut::new();
            let mut sent = 0;
            while sent < total {
                let len = (total - sent).min(1000);
                sent += len;
                let packet = Packet::msg(ChannelId::PEX, sent == total, vec![0; len].into());
                encode_delimited(&packet, &mut out);
            }
            out
        };
        let pex = || {
            let descs: Arc<[ChannelDescriptor]> = vec![ChannelDescriptor::pex()].into();
            MConnection::new(
                now,
                Arc::new(ConnectionConfig::default()),
                descs,
                &[ChannelId::PEX],
            )
        };
        let mut m = pex();
        m.handle_plaintext(now, &stream(64_000)).unwrap();
        let (channel, msg) = m.poll_message().unwrap();
        assert_eq!((channel, msg.len()), (ChannelId::PEX, 64_000));
        let mut m = pex();
        assert_eq!(
            m.handle_plaintext(now, &stream(64_001)),
            Err(CloseReason::Protocol(ProtocolViolation::OversizedMessage {
                channel: ChannelId::PEX,
                size: 64_001,
                max: 64_000
            }))
        );
    }

    #[test]
    fn recv_backlog_is_crossed_by_one() {
        let now = base();
        // A 1-byte bucket: one packet is processed, then everything waits for the rate.
        let config = ConnectionConfig {
            recv_rate: 10,
            recv_backlog: 100,
            ..ConnectionConfig::default()
        };
        let mut m = mconn(now, config, &[(0x20, 1)]);
        let mut input = vec![0x02, 0x0a, 0x00]; // a ping, processed at once
        input.extend_from_slice(&[0x02; 100]); // waits: exactly the backlog
        m.handle_plaintext(now, &input).unwrap();
        assert_eq!(m.recv_backlog(), 100);
        assert_eq!(
            m.handle_plaintext(now, &[0x02]),
            Err(CloseReason::RecvBacklog { limit: 100 })
        );
    }

    #[test]
    fn packets_match_the_spec_examples_byte_for_byte() {
        let now = base();
        let mut m = mconn(now, ConnectionConfig::default(), &[(0x00, 1), (0x20, 1)]);
        // A PexRequest (`0a 00`) on channel 0: the channel id is omitted as the proto3 default.
        m.send(ChannelId(0x00), Bytes::from_static(&[0x0a, 0x00]))
            .unwrap();
        let plain = m.poll_plaintext_now(now, usize::MAX).unwrap();
        assert_eq!(
            &plain[..],
            &[0x08, 0x1a, 0x06, 0x10, 0x01, 0x1a, 0x02, 0x0a, 0x00][..]
        );
        m.send(ChannelId(0x20), Bytes::from_static(&[0xaa; 3]))
            .unwrap();
        let plain = m.poll_plaintext_now(now, usize::MAX).unwrap();
        assert_eq!(
            &plain[..],
            &[
                0x0b, 0x1a, 0x09, 0x08, 0x20, 0x10, 0x01, 0x1a, 0x03, 0xaa, 0xaa, 0xaa
            ][..]
        );
        // Ping after the interval.
        let plain = m
            .poll_plaintext(now + Duration::from_secs(60), usize::MAX)
            .unwrap();
        assert_eq!(&plain[..], &[0x02, 0x0a, 0x00]);
    }
}
