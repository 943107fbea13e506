//! Fuzz entry points for `conn`.
//!
//! - [`conn_packets`]: arbitrary bytes into the MConnection layer directly (below the crypto), and
//!   the same bytes sealed into an established [`PeerConnection`] (a real SecretConnection
//!   handshake first; under `cfg(fuzzing)` its crypto is the cheap insecure shim).
//! - [`upgrade`]: arbitrary bytes, sealed, where the peer's NodeInfo belongs in a
//!   [`PeerConnection`] (the NodeInfo phase of spec 3.2 and the switch to the MConnection).
//! - [`raw`]: arbitrary bytes into a fresh [`PeerConnection`] from the first byte, with
//!   deadlines passing and end of stream.
//! - [`nodeinfo`]: the NodeInfo decoder, validator and compatibility check.
//! - [`shared_port`]: arbitrary bytes, sealed, where the peer's NodeInfo belongs at a shared
//!   port's [`Acceptor`], then the routed connection continued by a chain's
//!   [`PeerConnection::from_routed`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message as _;

use crate::conn::{
    Acceptor, ChannelDescriptor, ConnEvent, ConnectionConfig, Direction, MConnection, NodeInfo,
    PeerConnection, RouteRefusal,
};
use crate::identity::NodeKey;
use crate::ids::ChannelId;
use crate::secret::{Handshake, SecretSession};
use crate::wire::codec::{decode_delimited, encode_delimited};
use crate::wire::limits::MAX_NODE_INFO_SIZE;
use crate::wire::proto::DefaultNodeInfo;

/// The base of the fuzzer's virtual clock; only durations are added to it.
#[allow(clippy::disallowed_methods)]
fn base() -> Instant {
    Instant::now()
}

fn channels() -> Arc<[ChannelDescriptor]> {
    let mut small = ChannelDescriptor::new(ChannelId(0x20), 6);
    small.recv_message_capacity = 4096;
    small.send_queue_capacity = 4;
    vec![ChannelDescriptor::pex(), small].into()
}

fn info(key: &NodeKey) -> NodeInfo {
    NodeInfo::new(
        key.node_id(),
        "fuzz",
        "tcp://127.0.0.1:26656",
        "fuzz",
        [ChannelId(0x00), ChannelId(0x20)],
    )
}

/// Feeds `data` to an MConnection in chunks whose sizes come from the data, interleaving
/// timeouts, sends and polls; then the same bytes, sealed, to an established PeerConnection.
pub fn conn_packets(data: &[u8]) {
    let now = base();
    let config = Arc::new(ConnectionConfig::default());
    let chans = channels();
    let mut m = MConnection::new(
        now,
        config.clone(),
        chans.clone(),
        &[ChannelId(0x00), ChannelId(0x20)],
    );
    let mut t = now;
    let mut rest = data;
    while let Some((&ctl, tail)) = rest.split_first() {
        let n = usize::from(ctl & 0x3f).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        if ctl & 0x40 != 0 {
            t += Duration::from_secs(u64::from(ctl & 0x3f));
            if m.handle_timeout(t).is_err() {
                return;
            }
            let _ = m.send(ChannelId(0x20), Bytes::copy_from_slice(chunk));
        }
        if m.handle_plaintext(t, chunk).is_err() {
            break;
        }
        while m.poll_message().is_some() {}
        if ctl & 0x80 != 0 {
            let _ = m.poll_plaintext(t, usize::from(ctl) * 64);
        }
        let _ = m.poll_timeout();
    }

    // The full pipeline: handshake with a hand-driven peer, NodeInfo, then the fuzz bytes.
    let theirs = NodeKey::from_seed([2; 32]);
    let Some((mut conn, mut session)) = after_handshake(now, config, chans, &theirs) else {
        return;
    };
    let mut plain = BytesMut::new();
    encode_delimited(&info(&theirs).to_proto(), &mut plain);
    plain.extend_from_slice(data);
    let mut sealed = BytesMut::new();
    if session.sealer.seal(&plain, &mut sealed).is_err() {
        return;
    }
    for chunk in sealed.chunks(700) {
        conn.handle_received(now, chunk);
    }
    let mut established = false;
    while let Some(event) = conn.poll_event() {
        if let ConnEvent::Established { .. } = event {
            established = true;
        }
    }
    assert!(
        established,
        "a valid NodeInfo must establish the connection"
    );
    let _ = conn.send(now, ChannelId(0x20), Bytes::from_static(b"x"));
    let later = now + Duration::from_secs(100);
    conn.handle_timeout(later);
    while let Some(b) = conn.poll_transmit(later) {
        conn.handle_sent(later, b.len());
    }
    while conn.poll_event().is_some() {}
}

/// Our inbound [`PeerConnection`] (key 1) after a real SecretConnection handshake with a
/// hand-driven peer holding `theirs`, and that peer's session; `None` if the handshake fails
/// (it cannot with these fixed keys, even under the fuzzing crypto shim).
fn after_handshake(
    now: Instant,
    config: Arc<ConnectionConfig>,
    chans: Arc<[ChannelDescriptor]>,
    theirs: &NodeKey,
) -> Option<(PeerConnection, SecretSession)> {
    let ours = NodeKey::from_seed([1; 32]);
    let mut conn = PeerConnection::new(
        now,
        config,
        chans,
        Arc::new(info(&ours)),
        &ours,
        [3; 32],
        Direction::Inbound,
        None,
    );
    let mut hs = Handshake::new(theirs, [4; 32]);
    for _ in 0..8 {
        while let Some(b) = hs.poll_transmit() {
            conn.handle_received(now, &b);
        }
        while let Some(b) = conn.poll_transmit(now) {
            conn.handle_sent(now, b.len());
            if !hs.is_complete() {
                hs.handle_received(&b).ok()?;
            }
        }
        if hs.is_complete() {
            break;
        }
    }
    let session = hs.into_session().ok()?;
    Some((conn, session))
}

/// The connection upgrade after the SecretConnection handshake: `data` arrives, sealed, where
/// the peer's NodeInfo belongs (then packets), in chunks whose sizes come from its first byte,
/// followed by end of stream. The connection must establish at most once, only with a NodeInfo
/// that validates and names the authenticated key, and `Closed` must be its last event.
pub fn upgrade(data: &[u8]) {
    let now = base();
    let theirs = NodeKey::from_seed([2; 32]);
    let config = Arc::new(ConnectionConfig::default());
    let Some((mut conn, mut session)) = after_handshake(now, config, channels(), &theirs) else {
        return;
    };
    let chunk = 1 + usize::from(data.first().copied().unwrap_or(0)) * 8;
    let mut sealed = BytesMut::new();
    if session.sealer.seal(data, &mut sealed).is_err() {
        return;
    }
    let mut events = Vec::new();
    for piece in sealed.chunks(chunk) {
        conn.handle_received(now, piece);
        while let Some(b) = conn.poll_transmit(now) {
            conn.handle_sent(now, b.len());
        }
        events.extend(std::iter::from_fn(|| conn.poll_event()));
    }
    conn.handle_eof(now);
    events.extend(std::iter::from_fn(|| conn.poll_event()));
    let established: Vec<&NodeInfo> = events
        .iter()
        .filter_map(|e| match e {
            ConnEvent::Established { remote } => Some(&**remote),
            _ => None,
        })
        .collect();
    assert!(established.len() <= 1, "established twice");
    if let Some(remote) = established.first() {
        assert_eq!(remote.validate(), Ok(()));
        assert_eq!(remote.id, theirs.node_id());
        assert_eq!(conn.remote_info(), Some(*remote));
    }
    let closes = events
        .iter()
        .filter(|e| matches!(e, ConnEvent::Closed(_)))
        .count();
    assert_eq!(closes, 1, "end of stream must close exactly once");
    assert!(matches!(events.last(), Some(ConnEvent::Closed(_))));
    assert!(conn.is_closed());
}

/// Arbitrary bytes from the first byte on: a fresh inbound [`PeerConnection`] is fed `data` in
/// pieces whose sizes come from control bytes in the data, with our output drained and the
/// clock advanced between pieces (reaching the handshake and NodeInfo deadlines), then end of
/// stream. Under the fuzzing crypto shim a crafted input can complete the handshake; whatever
/// happens, an `Established` NodeInfo must validate, and `Closed` must come once, last.
pub fn raw(data: &[u8]) {
    let start = base();
    let ours = NodeKey::from_seed([1; 32]);
    let mut conn = PeerConnection::new(
        start,
        Arc::new(ConnectionConfig::default()),
        channels(),
        Arc::new(info(&ours)),
        &ours,
        [3; 32],
        Direction::Inbound,
        None,
    );
    let mut events = Vec::new();
    let mut now = start;
    let mut rest = data;
    while let Some((&ctl, tail)) = rest.split_first() {
        let n = (usize::from(ctl & 0x3f) * 24).min(tail.len());
        let (piece, tail) = tail.split_at(n);
        rest = tail;
        conn.handle_received(now, piece);
        while let Some(b) = conn.poll_transmit(now) {
            conn.handle_sent(now, b.len());
        }
        if ctl & 0xc0 == 0xc0 {
            now += Duration::from_millis(1500);
            conn.handle_timeout(now);
        }
        events.extend(std::iter::from_fn(|| conn.poll_event()));
    }
    conn.handle_eof(now);
    events.extend(std::iter::from_fn(|| conn.poll_event()));
    let mut established = 0;
    for event in &events {
        if let ConnEvent::Established { remote } = event {
            established += 1;
            assert_eq!(remote.validate(), Ok(()));
            assert_eq!(Some(remote.id), conn.remote_id());
        }
    }
    assert!(established <= 1, "established twice");
    let closes = events
        .iter()
        .filter(|e| matches!(e, ConnEvent::Closed(_)))
        .count();
    assert_eq!(closes, 1, "end of stream must close exactly once");
    assert!(matches!(events.last(), Some(ConnEvent::Closed(_))));
}

/// Decodes `data` as a delimited and as a bare NodeInfo, validates it and checks compatibility;
/// whatever converts must survive a round trip.
pub fn nodeinfo(data: &[u8]) {
    let local = info(&NodeKey::from_seed([1; 32]));
    let mut candidates = Vec::new();
    if let Ok(Some((p, _))) = decode_delimited::<DefaultNodeInfo>(data, MAX_NODE_INFO_SIZE) {
        candidates.push(p);
    }
    if data.len() <= MAX_NODE_INFO_SIZE
        && let Ok(p) = DefaultNodeInfo::decode(data)
    {
        candidates.push(p);
    }
    for p in candidates {
        let Ok(ni) = NodeInfo::from_proto(p) else {
            continue;
        };
        let valid = ni.validate();
        let _ = local.compatible_with(&ni);
        let again = NodeInfo::from_proto(ni.to_proto()).expect("a converted NodeInfo re-converts");
        assert_eq!(again, ni);
        assert_eq!(again.validate(), valid);
    }
}

/// A shared port: a real SecretConnection handshake between an [`Acceptor`] (key 1) and a
/// peer (key 2), then `data`, sealed, where the peer's NodeInfo belongs, in chunks whose sizes
/// come from its first byte, then end of stream. The acceptor routes only a NodeInfo it could
/// decode, of a chain it serves (`fuzz`), from the authenticated peer; the routed connection
/// then establishes at most once, with a valid NodeInfo naming that key, and closes once, last.
/// Returns `None` if the acceptor did not route, else whether the connection established.
pub fn shared_port(data: &[u8]) -> Option<bool> {
    let now = base();
    let ours = NodeKey::from_seed([1; 32]);
    let theirs = NodeKey::from_seed([2; 32]);
    let mut acc = Acceptor::new(now, &ours, [3; 32], Duration::from_secs(3));
    let mut hs = Handshake::new(&theirs, [4; 32]);
    for _ in 0..8 {
        while let Some(b) = hs.poll_transmit() {
            acc.handle_received(now, &b);
        }
        while let Some(b) = acc.poll_transmit(now) {
            if !hs.is_complete() && hs.handle_received(&b).is_err() {
                return None;
            }
        }
        if hs.is_complete() {
            break;
        }
    }
    let Ok(mut session) = hs.into_session() else {
        return None;
    };
    assert_eq!(acc.remote_id(), Some(theirs.node_id()));
    let chunk = 1 + usize::from(data.first().copied().unwrap_or(0)) * 8;
    let mut sealed = BytesMut::new();
    if session.sealer.seal(data, &mut sealed).is_err() {
        return None;
    }
    let mut pieces = sealed.chunks(chunk);
    for piece in pieces.by_ref() {
        acc.handle_received(now, piece);
        if acc.is_done() {
            break;
        }
    }
    let rest: Vec<u8> = pieces.flatten().copied().collect();
    if !acc.is_done() {
        acc.handle_eof(now);
    }
    let chains = std::iter::once("fuzz".to_owned()).collect();
    let routed = match acc
        .take_outcome(&chains)
        .expect("decided after end of stream")
    {
        Ok(routed) => routed,
        Err(RouteRefusal::UnknownChain { peer, chain_id }) => {
            assert_eq!(peer, theirs.node_id());
            assert_ne!(chain_id, "fuzz");
            return None;
        }
        Err(_) => return None,
    };
    assert_eq!(routed.chain_id(), "fuzz");
    assert_eq!(routed.remote_id(), theirs.node_id());
    let mut conn = PeerConnection::from_routed(
        now,
        Arc::new(ConnectionConfig::default()),
        channels(),
        Arc::new(info(&ours)),
        routed,
    );
    let mut events: Vec<ConnEvent> = std::iter::from_fn(|| conn.poll_event()).collect();
    conn.handle_received(now, &rest);
    while let Some(b) = conn.poll_transmit(now) {
        conn.handle_sent(now, b.len());
    }
    conn.handle_eof(now);
    events.extend(std::iter::from_fn(|| conn.poll_event()));
    let mut established = 0;
    for event in &events {
        if let ConnEvent::Established { remote } = event {
            established += 1;
            assert_eq!(remote.validate(), Ok(()));
            assert_eq!(remote.id, theirs.node_id());
        }
    }
    assert!(established <= 1, "established twice");
    let closes = events
        .iter()
        .filter(|e| matches!(e, ConnEvent::Closed(_)))
        .count();
    assert_eq!(closes, 1, "end of stream must close exactly once");
    assert!(matches!(events.last(), Some(ConnEvent::Closed(_))));
    Some(established == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared-port entry point routes a valid NodeInfo of the served chain to an
    /// established connection, and refuses other chains and garbage.
    #[test]
    fn shared_port_edge_inputs() {
        let theirs = NodeKey::from_seed([2; 32]);
        let mut valid = Vec::new();
        encode_delimited(&info(&theirs).to_proto(), &mut valid);
        let mut other = info(&theirs);
        other.network = "other".into();
        let mut other_chain = Vec::new();
        encode_delimited(&other.to_proto(), &mut other_chain);
        let mut then_ping = valid.clone();
        then_ping.extend_from_slice(&[0x02, 0x0a, 0x00]);
        assert_eq!(shared_port(&valid), Some(true));
        assert_eq!(shared_port(&then_ping), Some(true));
        assert_eq!(shared_port(&other_chain), None);
        assert_eq!(shared_port(&[]), None);
        assert_eq!(shared_port(&[0x81, 0x50]), None);
    }

    /// The upgrade entry point on its edge inputs: nothing, a valid NodeInfo followed by a ping,
    /// a packet where the NodeInfo belongs, and an oversized length prefix.
    #[test]
    fn upgrade_edge_inputs() {
        let theirs = NodeKey::from_seed([2; 32]);
        let mut valid = Vec::new();
        encode_delimited(&info(&theirs).to_proto(), &mut valid);
        let mut then_ping = valid.clone();
        then_ping.extend_from_slice(&[0x02, 0x0a, 0x00]);
        let mut packet_first = vec![0x02, 0x0a, 0x00];
        packet_first.extend_from_slice(&valid);
        for input in [&[][..], &valid, &then_ping, &packet_first, &[0x81, 0x50]] {
            upgrade(input);
            raw(input);
        }
    }
}
