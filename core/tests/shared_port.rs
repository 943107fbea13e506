//! One port for several chains, without a network: a shared port's [`Acceptor`] completes the
//! SecretConnection with the port's key, reads the dialling peer's NodeInfo (sent without
//! waiting for ours, as CometBFT does), and the engine of the peer's chain takes the
//! connection over ([`Engine::accept_routed`]); a peer of a chain the port does not serve is
//! refused with a typed reason before it sees any NodeInfo of ours.
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cometmesh_core::addr::NetAddr;
use cometmesh_core::conn::{Acceptor, CloseReason, RouteRefusal, Routed};
use cometmesh_core::engine::{Engine, EngineConfig, Event, Input, Output, Refused};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::{ConnId, NodeId};

const SEED_ADDR: &str = "20.0.0.1:26656";

fn config(chain: &str, listen: &str) -> EngineConfig {
    let mut c = EngineConfig::default();
    c.chain_id = chain.into();
    c.listen_addr = listen.parse().unwrap();
    c.pex = false;
    c
}

/// The seed's two chains, one key (the port's), and the chain ids the port serves.
fn seed_engines(t0: Instant) -> (Engine, Engine, NodeKey, BTreeSet<String>) {
    let key = NodeKey::from_seed([1; 32]);
    let a = Engine::new(config("chain-a", SEED_ADDR), key.clone(), [2; 32], t0, 0).unwrap();
    let b = Engine::new(config("chain-b", SEED_ADDR), key.clone(), [3; 32], t0, 0).unwrap();
    let chains = ["chain-a", "chain-b"].map(String::from).into();
    (a, b, key, chains)
}

/// A node of `chain` that dials the seed; returns it, the dial's conn id and its outputs.
fn dialler(t0: Instant, chain: &str, seed: u8, seed_id: NodeId) -> (Engine, ConnId) {
    let mut e = Engine::new(
        config(chain, "30.0.0.1:26656"),
        NodeKey::from_seed([seed; 32]),
        [seed; 32],
        t0,
        0,
    )
    .unwrap();
    let conn = e
        .dial(t0, NetAddr::new(seed_id, SEED_ADDR.parse().unwrap()))
        .unwrap();
    let _ = drain(&mut e);
    e.handle_input(t0, Input::Connected { conn }).unwrap();
    (e, conn)
}

fn drain(e: &mut Engine) -> Vec<Output> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

/// Carries the dialler's transmits to the acceptor and back until the acceptor decides.
fn run_acceptor(t0: Instant, node: &mut Engine, conn: ConnId, acc: &mut Acceptor) {
    for _ in 0..16 {
        for out in drain(node) {
            if let Output::Transmit { data, .. } = out {
                node.handle_input(
                    t0,
                    Input::Sent {
                        conn,
                        len: data.len(),
                    },
                )
                .unwrap();
                acc.handle_received(t0, &data);
            }
        }
        while let Some(b) = acc.poll_transmit(t0) {
            node.handle_input(t0, Input::Received { conn, bytes: b })
                .unwrap();
        }
        if acc.is_done() {
            return;
        }
    }
    panic!("the acceptor did not decide");
}

/// Moves `from`'s outputs to `to`: transmits as received bytes, events into `events`.
fn carry(
    t0: Instant,
    from: (&mut Engine, ConnId),
    to: (&mut Engine, ConnId),
    events: &mut Vec<Event>,
) -> bool {
    let mut moved = false;
    for out in drain(from.0) {
        match out {
            Output::Transmit { data, .. } => {
                moved = true;
                from.0
                    .handle_input(
                        t0,
                        Input::Sent {
                            conn: from.1,
                            len: data.len(),
                        },
                    )
                    .unwrap();
                to.0.handle_input(
                    t0,
                    Input::Received {
                        conn: to.1,
                        bytes: data,
                    },
                )
                .unwrap();
            }
            Output::Event(e) => events.push(e),
            _ => {}
        }
    }
    moved
}

/// Carries bytes both ways between two engines' connections; returns their events.
fn pump(
    t0: Instant,
    x: (&mut Engine, ConnId),
    y: (&mut Engine, ConnId),
) -> (Vec<Event>, Vec<Event>) {
    let ((ex, cx), (ey, cy)) = (x, y);
    let (mut evx, mut evy) = (Vec::new(), Vec::new());
    for _ in 0..16 {
        let m1 = carry(t0, (&mut *ex, cx), (&mut *ey, cy), &mut evx);
        let m2 = carry(t0, (&mut *ey, cy), (&mut *ex, cx), &mut evy);
        if !m1 && !m2 {
            break;
        }
    }
    (evx, evy)
}

fn peer_up(events: &[Event]) -> Option<(NodeId, String)> {
    events.iter().find_map(|e| match e {
        Event::PeerUp { peer, info, .. } => Some((*peer, info.network.clone())),
        _ => None,
    })
}

#[test]
fn a_peer_is_answered_by_the_engine_of_its_chain() {
    let t0 = Instant::now();
    let (mut a, mut b, key, chains) = seed_engines(t0);
    let remote: SocketAddr = "30.0.0.1:40000".parse().unwrap();
    for (chain, seed) in [("chain-b", 7u8), ("chain-a", 8)] {
        let (mut node, nconn) = dialler(t0, chain, seed, key.node_id());
        let mut acc = Acceptor::new(t0, &key, [seed; 32], Duration::from_secs(3));
        run_acceptor(t0, &mut node, nconn, &mut acc);
        // Nothing of ours but the handshake went out: the peer has seen no NodeInfo yet.
        assert!(
            drain(&mut node)
                .iter()
                .all(|o| !matches!(o, Output::Event(_)))
        );
        let routed: Routed = acc.take_outcome(&chains).unwrap().unwrap();
        assert_eq!(routed.chain_id(), chain);
        assert_eq!(routed.remote_id(), NodeKey::from_seed([seed; 32]).node_id());
        let (target, other) = if chain == "chain-a" {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let (before, peers_before) = (other.counters(), other.num_peers());
        let sconn = target.accept_routed(t0, remote, routed).unwrap();
        let (seed_events, node_events) = pump(t0, (target, sconn), (&mut node, nconn));
        assert_eq!(
            peer_up(&seed_events),
            Some((NodeKey::from_seed([seed; 32]).node_id(), chain.to_owned()))
        );
        // The node saw the seed, with the seed's NodeInfo for its own chain.
        assert_eq!(
            peer_up(&node_events),
            Some((key.node_id(), chain.to_owned()))
        );
        assert_eq!(
            other.counters().accepted,
            before.accepted,
            "other chain untouched"
        );
        assert_eq!(other.num_peers(), peers_before);
    }
    assert_eq!((a.num_peers(), b.num_peers()), ((1, 0), (1, 0)));
}

#[test]
fn a_peer_of_an_unknown_chain_is_refused_before_our_node_info() {
    let t0 = Instant::now();
    let (_a, mut b, key, chains) = seed_engines(t0);
    let (mut node, nconn) = dialler(t0, "chain-z", 9, key.node_id());
    let mut acc = Acceptor::new(t0, &key, [9; 32], Duration::from_secs(3));
    run_acceptor(t0, &mut node, nconn, &mut acc);
    let refusal = acc.take_outcome(&chains).unwrap().unwrap_err();
    assert_eq!(
        refusal,
        RouteRefusal::UnknownChain {
            chain_id: "chain-z".into(),
            peer: NodeKey::from_seed([9; 32]).node_id(),
        }
    );
    assert_eq!(
        refusal.to_string(),
        format!(
            "unknown chain \"chain-z\" (peer {})",
            NodeKey::from_seed([9; 32]).node_id()
        )
    );
    // A mis-routed connection is refused by the engine too, with a typed reason.
    let (mut node, nconn) = dialler(t0, "chain-a", 10, key.node_id());
    let mut acc = Acceptor::new(t0, &key, [10; 32], Duration::from_secs(3));
    run_acceptor(t0, &mut node, nconn, &mut acc);
    let routed = acc.take_outcome(&chains).unwrap().unwrap();
    assert_eq!(
        b.accept_routed(t0, "30.0.0.1:1".parse().unwrap(), routed)
            .unwrap_err(),
        Refused::OtherChain
    );
}

#[test]
fn a_silent_peer_times_out_in_each_phase() {
    let t0 = Instant::now();
    let key = NodeKey::from_seed([1; 32]);
    let mut acc = Acceptor::new(t0, &key, [4; 32], Duration::from_secs(3));
    assert!(
        acc.poll_transmit(t0).is_some(),
        "our ephemeral key goes first"
    );
    assert_eq!(acc.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    acc.handle_timeout(t0 + Duration::from_secs(2));
    assert!(!acc.is_done());
    acc.handle_timeout(t0 + Duration::from_secs(3));
    let chains = BTreeSet::new();
    assert!(matches!(
        acc.take_outcome(&chains),
        Some(Err(RouteRefusal::Handshake(CloseReason::Timeout(_))))
    ));
    assert_eq!(acc.poll_timeout(), None);
}
