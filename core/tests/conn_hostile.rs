//! Every way a peer can misbehave closes the connection with its own typed reason.

mod conn_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cometmesh_core::conn::{
    CloseReason, ConnEvent, ConnectionConfig, Direction, NodeInfo, NodeInfoError, PeerConnection,
    ProtocolViolation, SendError, TimeoutKind,
};
use cometmesh_core::ids::ChannelId;
use cometmesh_core::secret::FrameError;
use cometmesh_core::wire::codec::CodecError;
use cometmesh_core::wire::proto::{self, Packet, PacketMsg, packet};
use conn_support::*;

fn config() -> Arc<ConnectionConfig> {
    Arc::new(ConnectionConfig::default())
}

/// Our connection (key 1, inbound) and a raw peer (key 2) past the SecretConnection handshake.
fn after_secret() -> (PeerConnection, RawPeer, Instant) {
    let now = base();
    let k = key(1);
    let mut c = conn(
        now,
        &config(),
        &k,
        node_info(&k, "us"),
        1,
        Direction::Inbound,
        None,
    );
    let mut raw = RawPeer::new(key(2));
    raw.handshake(now, &mut c);
    assert!(!c.is_closed(), "{:?}", drain(&mut c));
    (c, raw, now)
}

fn send_node_info(c: &mut PeerConnection, raw: &mut RawPeer, now: Instant, info: &NodeInfo) {
    raw.send_plain(now, c, &delimited(&info.to_proto()));
}

/// Established with the raw peer (its NodeInfo lists every test channel).
fn established_conn() -> (PeerConnection, RawPeer, Instant) {
    let (mut c, mut raw, now) = after_secret();
    let info = node_info(&raw.key, "raw");
    send_node_info(&mut c, &mut raw, now, &info);
    assert!(matches!(
        c.poll_event(),
        Some(ConnEvent::Established { .. })
    ));
    (c, raw, now)
}

fn closed_with(c: &mut PeerConnection) -> CloseReason {
    assert!(c.is_closed());
    match drain(c).pop() {
        Some(ConnEvent::Closed(r)) => r,
        other => panic!("expected Closed, got {other:?}"),
    }
}

fn msg_packet(channel: i32, eof: bool, data: Vec<u8>) -> Vec<u8> {
    delimited(&Packet {
        sum: Some(packet::Sum::PacketMsg(PacketMsg {
            channel_id: channel,
            eof,
            data: data.into(),
        })),
    })
}

#[test]
fn handshake_that_never_finishes_times_out_at_the_deadline() {
    let now = base();
    let k = key(1);
    let mut c = conn(
        now,
        &config(),
        &k,
        node_info(&k, "us"),
        1,
        Direction::Outbound,
        None,
    );
    // The peer sends half of its ephemeral key and then nothing.
    let _ = c.poll_transmit(now);
    c.handle_received(now, &[0x22, 0x0a, 0x20, 1, 2, 3]);
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(3)));
    c.handle_timeout(now + Duration::from_millis(2999));
    assert!(!c.is_closed());
    c.handle_timeout(now + Duration::from_secs(3));
    assert_eq!(
        closed_with(&mut c),
        CloseReason::Timeout(TimeoutKind::SecretHandshake)
    );
    assert_eq!(c.poll_timeout(), None);
    assert!(c.poll_transmit(now).is_none());
}

#[test]
fn handshake_deadline_is_configurable() {
    let now = base();
    let k = key(1);
    let cfg = Arc::new(ConnectionConfig {
        handshake_timeout: Duration::from_millis(500),
        ..ConnectionConfig::default()
    });
    let c = conn(
        now,
        &cfg,
        &k,
        node_info(&k, "us"),
        1,
        Direction::Outbound,
        None,
    );
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_millis(500)));
}

#[test]
fn garbage_instead_of_a_handshake_is_a_handshake_error() {
    let now = base();
    let k = key(1);
    let mut c = conn(
        now,
        &config(),
        &k,
        node_info(&k, "us"),
        1,
        Direction::Outbound,
        None,
    );
    c.handle_received(now, &[0x22, 0x08, 0x20, 0xff, 0xff, 0xff]);
    c.handle_received(now, &[0u8; 40]);
    assert!(matches!(closed_with(&mut c), CloseReason::Handshake(_)));
}

#[test]
fn node_info_that_never_arrives_times_out() {
    let (mut c, _raw, now) = after_secret();
    let deadline = c.poll_timeout().unwrap();
    assert_eq!(deadline, now + Duration::from_secs(3));
    c.handle_timeout(deadline);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::Timeout(TimeoutKind::NodeInfo)
    );
}

#[test]
fn packets_before_the_node_info_are_data_before_handshake() {
    for first in [
        delimited(&Packet {
            sum: Some(packet::Sum::PacketPing(proto::PacketPing {})),
        }),
        delimited(&Packet {
            sum: Some(packet::Sum::PacketPong(proto::PacketPong {})),
        }),
        msg_packet(0x20, true, vec![1, 2, 3]),
    ] {
        let (mut c, mut raw, now) = after_secret();
        raw.send_plain(now, &mut c, &first);
        assert_eq!(
            closed_with(&mut c),
            CloseReason::Protocol(ProtocolViolation::DataBeforeHandshake)
        );
    }
}

#[test]
fn undecodable_or_oversized_node_info() {
    let (mut c, mut raw, now) = after_secret();
    raw.send_plain(now, &mut c, &[0x04, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(
        closed_with(&mut c),
        CloseReason::Protocol(ProtocolViolation::UndecodableNodeInfo(CodecError::Decode(
            _
        )))
    ));
    let (mut c, mut raw, now) = after_secret();
    // A length prefix of 10241: rejected before the body arrives.
    raw.send_plain(now, &mut c, &[0x81, 0x50]);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::Protocol(ProtocolViolation::UndecodableNodeInfo(
            CodecError::TooLarge {
                len: 10241,
                max: 10240
            }
        ))
    );
}

#[test]
fn invalid_node_info_is_rejected() {
    let (mut c, mut raw, now) = after_secret();
    let mut info = node_info(&raw.key, "raw");
    info.moniker = String::new();
    send_node_info(&mut c, &mut raw, now, &info);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::NodeInfo(NodeInfoError::InvalidMoniker(String::new()))
    );
}

#[test]
fn incompatible_network_is_rejected() {
    let (mut c, mut raw, now) = after_secret();
    let mut info = node_info(&raw.key, "raw");
    info.network = "other-chain".into();
    send_node_info(&mut c, &mut raw, now, &info);
    assert!(matches!(
        closed_with(&mut c),
        CloseReason::NodeInfo(NodeInfoError::IncompatibleNetwork { .. })
    ));
}

#[test]
fn no_common_channel_is_rejected() {
    let (mut c, mut raw, now) = after_secret();
    let mut info = node_info(&raw.key, "raw");
    info.channels = [ChannelId(0x77)].into_iter().collect();
    send_node_info(&mut c, &mut raw, now, &info);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::NodeInfo(NodeInfoError::NoCommonChannel)
    );
}

#[test]
fn node_info_id_must_match_the_authenticated_key() {
    let (mut c, mut raw, now) = after_secret();
    let info = node_info(&key(3), "liar");
    send_node_info(&mut c, &mut raw, now, &info);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::NodeInfo(NodeInfoError::IdMismatch {
            claimed: key(3).node_id(),
            authenticated: key(2).node_id()
        })
    );
}

#[test]
fn dialled_id_must_match_the_authenticated_key() {
    let now = base();
    let k = key(1);
    let mut c = conn(
        now,
        &config(),
        &k,
        node_info(&k, "us"),
        1,
        Direction::Outbound,
        Some(key(3).node_id()),
    );
    let mut raw = RawPeer::new(key(2));
    raw.handshake(now, &mut c);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::NodeInfo(NodeInfoError::DialedIdMismatch {
            dialled: key(3).node_id(),
            authenticated: key(2).node_id()
        })
    );
}

#[test]
fn connecting_to_ourselves_is_rejected() {
    let now = base();
    let k = key(1);
    let mut c = conn(
        now,
        &config(),
        &k,
        node_info(&k, "us"),
        1,
        Direction::Inbound,
        None,
    );
    let mut raw = RawPeer::new(key(1));
    raw.handshake(now, &mut c);
    send_node_info(&mut c, &mut raw, now, &node_info(&key(1), "us"));
    assert_eq!(
        closed_with(&mut c),
        CloseReason::NodeInfo(NodeInfoError::SelfConnection)
    );
}

#[test]
fn our_node_info_goes_out_in_its_own_frame_and_pings_are_answered() {
    let (mut c, mut raw, now) = established_conn();
    // What we sent after the handshake is our NodeInfo, delimited.
    let ours = delimited(&node_info(&key(1), "us").to_proto());
    assert_eq!(&raw.received[..], &ours[..]);
    raw.received.clear();
    raw.send_plain(now, &mut c, &[0x02, 0x0a, 0x00]);
    assert_eq!(&raw.received[..], &[0x02, 0x12, 0x00]);
    assert!(!c.is_closed());
}

#[test]
fn unknown_channel_closes() {
    for ch in [0x55, 256, -1] {
        let (mut c, mut raw, now) = established_conn();
        raw.send_plain(now, &mut c, &msg_packet(ch, true, vec![1]));
        assert_eq!(
            closed_with(&mut c),
            CloseReason::Protocol(ProtocolViolation::UnknownChannel(ch))
        );
    }
}

#[test]
fn oversized_packet_closes_before_its_body_arrives() {
    let (mut c, mut raw, now) = established_conn();
    // 1035 = 0x40b as a uvarint: 8b 08.
    raw.send_plain(now, &mut c, &[0x8b, 0x08]);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::Protocol(ProtocolViolation::OversizedPacket {
            len: 1035,
            max: 1034
        })
    );
    // The largest legal packet passes.
    let (mut c, mut raw, now) = established_conn();
    let max = msg_packet(0x20, true, vec![7; 1024]);
    assert_eq!(max.len(), 2 + 1034);
    raw.send_plain(now, &mut c, &max);
    assert!(!c.is_closed());
}

#[test]
fn undecodable_packet_closes() {
    let (mut c, mut raw, now) = established_conn();
    raw.send_plain(now, &mut c, &[0x03, 0xff, 0xff, 0xff]);
    assert!(matches!(
        closed_with(&mut c),
        CloseReason::Protocol(ProtocolViolation::Undecodable(_))
    ));
    let (mut c, mut raw, now) = established_conn();
    raw.send_plain(now, &mut c, &[0xff; 11]);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::Protocol(ProtocolViolation::Undecodable(CodecError::VarintOverflow))
    );
}

#[test]
fn empty_packet_closes() {
    let (mut c, mut raw, now) = established_conn();
    raw.send_plain(now, &mut c, &[0x00]);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::Protocol(ProtocolViolation::EmptyPacket)
    );
}

#[test]
fn a_second_node_info_closes() {
    let (mut c, mut raw, now) = established_conn();
    let info = node_info(&raw.key, "raw");
    send_node_info(&mut c, &mut raw, now, &info);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::Protocol(ProtocolViolation::SecondNodeInfo)
    );
}

#[test]
fn tampered_frame_closes() {
    let (mut c, raw, now) = established_conn();
    let mut raw = raw;
    let mut out = bytes::BytesMut::new();
    raw.sealer
        .as_mut()
        .unwrap()
        .seal(&[0x02, 0x0a, 0x00], &mut out)
        .unwrap();
    out[10] ^= 1;
    c.handle_received(now, &out);
    assert!(matches!(
        closed_with(&mut c),
        CloseReason::Frame(FrameError::Tampered { .. })
    ));
}

#[test]
fn messages_before_a_violation_are_delivered_first() {
    let (mut c, mut raw, now) = established_conn();
    let mut plain = msg_packet(0x20, true, b"hello".to_vec());
    plain.extend_from_slice(&[0x00]);
    raw.send_plain(now, &mut c, &plain);
    let events = drain(&mut c);
    assert_eq!(
        events,
        vec![
            ConnEvent::Message {
                channel: ChannelId(0x20),
                payload: Bytes::from_static(b"hello")
            },
            ConnEvent::Closed(CloseReason::Protocol(ProtocolViolation::EmptyPacket))
        ]
    );
}

#[test]
fn we_only_send_on_channels_the_peer_advertised() {
    let (mut c, mut raw, now) = after_secret();
    let mut info = node_info(&raw.key, "raw");
    info.channels = [ChannelId(0x20)].into_iter().collect();
    send_node_info(&mut c, &mut raw, now, &info);
    assert!(matches!(
        c.poll_event(),
        Some(ConnEvent::Established { .. })
    ));
    assert_eq!(
        c.send(now, ChannelId(0x21), Bytes::new()),
        Err(SendError::NotAdvertisedByPeer(ChannelId(0x21)))
    );
    c.send(now, ChannelId(0x20), Bytes::from_static(b"ok"))
        .unwrap();
    // Written now, flushed when the 10 ms throttle (the default) expires.
    raw.received.clear();
    raw.pump(now, &mut c);
    assert!(raw.received.is_empty());
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_millis(10)));
    raw.pump(now + Duration::from_millis(9), &mut c);
    assert!(raw.received.is_empty());
    raw.pump(now + Duration::from_millis(10), &mut c);
    assert_eq!(
        &raw.received[..],
        &[
            0x0a, 0x1a, 0x08, 0x08, 0x20, 0x10, 0x01, 0x1a, 0x02, b'o', b'k'
        ]
    );
}

#[test]
fn receive_backlog_beyond_the_bound_closes() {
    let now = base();
    let k = key(1);
    let cfg = Arc::new(ConnectionConfig {
        recv_rate: 1000,
        recv_backlog: 8 * 1024,
        ..ConnectionConfig::default()
    });
    let mut c = conn(
        now,
        &cfg,
        &k,
        node_info(&k, "us"),
        1,
        Direction::Inbound,
        None,
    );
    let mut raw = RawPeer::new(key(2));
    raw.handshake(now, &mut c);
    send_node_info(&mut c, &mut raw, now, &node_info(&key(2), "raw"));
    let mut flood = Vec::new();
    for _ in 0..10 {
        flood.extend(msg_packet(0x20, true, vec![0; 1000]));
    }
    raw.send_plain(now, &mut c, &flood);
    assert!(!c.wants_read());
    assert!(matches!(
        closed_with(&mut c),
        CloseReason::RecvBacklog { limit: 8192 }
    ));
}

#[test]
fn end_of_stream_is_typed_by_where_it_happens() {
    use cometmesh_core::secret::HandshakeError;
    let now = base();
    let k = key(1);
    let mut c = conn(
        now,
        &config(),
        &k,
        node_info(&k, "us"),
        1,
        Direction::Inbound,
        None,
    );
    c.handle_eof(now);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::Handshake(HandshakeError::UnexpectedEof)
    );
    // Inside a frame.
    let (mut c, mut raw, now) = established_conn();
    let mut out = bytes::BytesMut::new();
    raw.sealer
        .as_mut()
        .unwrap()
        .seal(&[2, 0x0a, 0], &mut out)
        .unwrap();
    c.handle_received(now, &out[..100]);
    c.handle_eof(now);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::Frame(FrameError::Truncated { buffered: 100 })
    );
    // At a frame boundary, after a complete message.
    let (mut c, mut raw, now) = established_conn();
    raw.send_plain(now, &mut c, &msg_packet(0x20, true, b"bye".to_vec()));
    c.handle_eof(now);
    assert_eq!(
        drain(&mut c),
        vec![
            ConnEvent::Message {
                channel: ChannelId(0x20),
                payload: Bytes::from_static(b"bye")
            },
            ConnEvent::Closed(CloseReason::RemoteClosed)
        ]
    );
}

// ----- limits crossed by one (see docs/limits.md) ------------------------------------------------

/// The raw peer's NodeInfo with its moniker padded so that the encoded body is `len` bytes.
fn node_info_of_len(raw: &RawPeer, len: usize) -> NodeInfo {
    use prost::Message as _;
    let mut info = node_info(&raw.key, "raw");
    while info.to_proto().encoded_len() < len {
        let missing = len - info.to_proto().encoded_len();
        info.moniker.push_str(&"m".repeat(missing));
        // A longer moniker may need a longer length prefix: trim back if it overshot.
        while info.to_proto().encoded_len() > len {
            info.moniker.pop();
        }
    }
    assert_eq!(info.to_proto().encoded_len(), len);
    info
}

#[test]
fn node_info_size_limit_is_crossed_by_one() {
    use cometmesh_core::wire::limits::MAX_NODE_INFO_SIZE;
    let (mut c, mut raw, now) = after_secret();
    let info = node_info_of_len(&raw, MAX_NODE_INFO_SIZE);
    send_node_info(&mut c, &mut raw, now, &info);
    assert!(matches!(
        c.poll_event(),
        Some(ConnEvent::Established { remote }) if *remote == info
    ));
    let (mut c, mut raw, now) = after_secret();
    let info = node_info_of_len(&raw, MAX_NODE_INFO_SIZE + 1);
    send_node_info(&mut c, &mut raw, now, &info);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::Protocol(ProtocolViolation::UndecodableNodeInfo(
            CodecError::TooLarge {
                len: (MAX_NODE_INFO_SIZE + 1) as u64,
                max: MAX_NODE_INFO_SIZE
            }
        ))
    );
}

#[test]
fn node_info_channel_limit_is_crossed_by_one() {
    use cometmesh_core::wire::limits::MAX_NODE_INFO_CHANNELS;
    let with_channels = |n: usize| {
        let (c, raw, now) = after_secret();
        let mut info = node_info(&raw.key, "raw");
        let mut next = 0x80u8;
        while info.channels.len() < n {
            info.channels.push(ChannelId(next));
            next += 1;
        }
        (c, raw, now, info)
    };
    let (mut c, mut raw, now, info) = with_channels(MAX_NODE_INFO_CHANNELS);
    send_node_info(&mut c, &mut raw, now, &info);
    assert!(matches!(
        c.poll_event(),
        Some(ConnEvent::Established { .. })
    ));
    let (mut c, mut raw, now, info) = with_channels(MAX_NODE_INFO_CHANNELS + 1);
    send_node_info(&mut c, &mut raw, now, &info);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::NodeInfo(NodeInfoError::TooManyChannels(MAX_NODE_INFO_CHANNELS + 1))
    );
}

#[test]
fn recv_message_capacity_is_crossed_by_one() {
    // Channel 0x23 accepts messages of up to 4096 bytes: 4095 bytes in four packets, then a
    // last packet of `last` bytes.
    let send = |last: usize| {
        let (mut c, mut raw, now) = established_conn();
        let mut stream = Vec::new();
        for (i, len) in [1024, 1024, 1024, 1023].into_iter().enumerate() {
            stream.extend(msg_packet(0x23, false, vec![i as u8; len]));
        }
        stream.extend(msg_packet(0x23, true, vec![9; last]));
        raw.send_plain(now, &mut c, &stream);
        c
    };
    let mut c = send(1);
    assert!(!c.is_closed());
    let delivered = messages(&drain(&mut c), ChannelId(0x23));
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].len(), 4096);
    let mut c = send(2);
    assert_eq!(
        closed_with(&mut c),
        CloseReason::Protocol(ProtocolViolation::OversizedMessage {
            channel: ChannelId(0x23),
            size: 4097,
            max: 4096
        })
    );
}

/// `wants_read` (the adapter's cue to stop reading) turns false when 64 KiB of received
/// plaintext wait for the receive rate limit: one byte below it the adapter keeps reading.
#[test]
fn wants_read_turns_false_at_64_kib_of_backlog() {
    let now = base();
    let k = key(1);
    let cfg = Arc::new(ConnectionConfig {
        recv_rate: 10, // a 1-byte bucket: one packet, then everything waits
        ..ConnectionConfig::default()
    });
    let mut c = conn(
        now,
        &cfg,
        &k,
        node_info(&k, "us"),
        1,
        Direction::Inbound,
        None,
    );
    let mut raw = RawPeer::new(key(2));
    raw.handshake(now, &mut c);
    send_node_info(&mut c, &mut raw, now, &node_info(&key(2), "raw"));
    assert!(c.wants_read());
    let threshold = 64 * 1024;
    let mut waiting = vec![0x02, 0x0a, 0x00]; // a ping, processed at once
    waiting.extend(std::iter::repeat_n(0x02, threshold - 1));
    raw.send_plain(now, &mut c, &waiting);
    assert!(!c.is_closed());
    assert!(c.wants_read());
    raw.send_plain(now, &mut c, &[0x02]);
    assert!(!c.is_closed());
    assert!(!c.wants_read());
}
