//! Found by the interop tests (`engine_refuses_wrong_dialled_id_v038` failed 1 run in 4 with
//! `DialFailed { reason: Closed(Eof) }` about 3 s late instead of `DialedIdMismatch`): when the
//! peer's ephemeral key and its AuthSig frame arrive in one read, as they often do from a Go node,
//! the handshake completes inside `PeerConnection::poll_transmit` (it waits for our AuthSig to be
//! taken), and the `Closed(DialedIdMismatch)` event it queued there was not drained by the
//! engine, whose `process_dirty` polled events only before transmits; the connection then hung
//! until the peer's own handshake deadline closed the socket. The engine now polls events again
//! after taking the bytes. No sockets here: the engine is driven by
//! hand, the peer is the core's `Handshake`.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use cometmesh_core::addr::NetAddr;
use cometmesh_core::conn::{CloseReason, NodeInfoError};
use cometmesh_core::engine::{DialFailReason, Engine, EngineConfig, Event, Input, Output};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::secret::Handshake;

/// Dials a peer under the wrong id; returns what the engine emitted after the peer's handshake
/// bytes arrived, delivered in one chunk (`together`) or in two.
fn wrong_id_dial(together: bool) -> Vec<Output> {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut cfg = EngineConfig::default();
    cfg.chain_id = "order".into();
    cfg.listen_addr = ([127, 0, 0, 1], 26656).into();
    let mut engine = Engine::new(
        cfg,
        NodeKey::from_seed([1; 32]),
        [2; 32],
        now,
        1_700_000_000,
    )
    .expect("engine");
    let peer_key = NodeKey::from_seed([3; 32]);
    let wrong = NodeKey::from_seed([4; 32]).node_id();
    let addr: SocketAddr = ([127, 0, 0, 2], 26656).into();
    let conn = engine.dial(now, NetAddr::new(wrong, addr)).expect("dial");
    while engine.poll_output().is_some() {}
    engine
        .handle_input(now, Input::Connected { conn })
        .expect("connected");
    let mut ours = BytesMut::new();
    while let Some(o) = engine.poll_output() {
        if let Output::Transmit { data, .. } = o {
            ours.extend_from_slice(&data);
        }
    }
    assert_eq!(ours.len(), 35, "our ephemeral message");

    let mut peer = Handshake::new(&peer_key, [5; 32]);
    let eph = peer.poll_transmit().expect("peer ephemeral");
    peer.handle_received(&ours).expect("our ephemeral");
    let auth = peer.poll_transmit().expect("peer auth");
    let chunks: Vec<Bytes> = if together {
        let mut b = BytesMut::new();
        b.extend_from_slice(&eph);
        b.extend_from_slice(&auth);
        vec![b.freeze()]
    } else {
        vec![eph, auth]
    };
    let mut out = Vec::new();
    for bytes in chunks {
        engine
            .handle_input(now, Input::Received { conn, bytes })
            .expect("received");
        while let Some(o) = engine.poll_output() {
            out.push(o);
        }
    }
    out
}

fn reports_mismatch(out: &[Output]) -> bool {
    out.iter().any(|o| {
        matches!(
            o,
            Output::Event(Event::DialFailed {
                reason: DialFailReason::Handshake(CloseReason::NodeInfo(
                    NodeInfoError::DialedIdMismatch { .. }
                )),
                ..
            })
        )
    })
}

/// Control: the peer's two handshake messages in two reads; the mismatch is reported at once.
#[test]
fn dialled_id_mismatch_is_reported_when_handshake_arrives_in_two_reads() {
    let out = wrong_id_dial(false);
    assert!(reports_mismatch(&out), "{out:?}");
    assert!(
        out.iter().any(|o| matches!(o, Output::Close { .. })),
        "{out:?}"
    );
}

/// The bug: the same bytes in one read; the engine emits our AuthSig frame and then nothing.
#[test]
fn dialled_id_mismatch_is_reported_when_handshake_arrives_in_one_read() {
    let out = wrong_id_dial(true);
    assert!(reports_mismatch(&out), "{out:?}");
    assert!(
        out.iter().any(|o| matches!(o, Output::Close { .. })),
        "{out:?}"
    );
}
