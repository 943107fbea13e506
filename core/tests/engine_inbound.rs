//! Inbound protection (issue 13.5, G13, tendermint#4753) on the simulator: 1 000 inbound
//! attempts from one /16 against a node whose inbound slots hold honest peers.
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cometmesh_core::engine::{ChannelDescriptor, DisconnectReason, EngineConfig, Event};
use cometmesh_core::sim::{Sim, SimConfig, node_config};
use cometmesh_core::{ChannelId, NodeId};

const APP: ChannelId = ChannelId(0x30);
const INBOUND: usize = 20;
const HONEST: usize = 12;
const ATTACKERS: usize = 100;

/// A node that never dials by itself (no outbound slots, no feelers), with the app channel.
fn quiet(i: usize, listen: Option<SocketAddr>) -> EngineConfig {
    let mut c = node_config(i);
    c.max_num_outbound_peers = 0;
    c.feeler_interval = Duration::ZERO;
    c.max_num_inbound_peers = INBOUND;
    if let Some(l) = listen {
        c.listen_addr = l;
    }
    c
}

fn add(sim: &mut Sim, c: EngineConfig) -> usize {
    let key = sim.gen_key();
    let n = sim.add_node(c, key);
    sim.with_engine(n, |e, _| e.add_channel(ChannelDescriptor::new(APP, 1)))
        .expect("node")
        .expect("channel");
    n
}

fn connected(sim: &Sim, a: usize, b: usize) -> bool {
    let id = sim.node_id(b);
    sim.engine(a).is_some_and(|e| e.peer(&id).is_some())
}

fn dial(sim: &mut Sim, from: usize, to: usize) -> bool {
    let addr = sim.net_addr(to);
    sim.with_engine(from, |e, now| e.dial(now, addr))
        .is_some_and(|r| r.is_ok())
}

#[test]
fn a_thousand_attempts_from_one_group_evict_no_protected_honest_peer() {
    let mut cfg = SimConfig::default();
    cfg.seed = 13;
    cfg.record_events = true;
    let mut sim = Sim::new(cfg, Instant::now());
    let v = add(&mut sim, quiet(0, None));
    // Honest peers in distinct /16s connect first and hold the slots for a while; four of
    // them send application messages (recently useful).
    let honest: Vec<usize> = (1..=HONEST)
        .map(|i| add(&mut sim, quiet(i, None)))
        .collect();
    for &h in &honest {
        assert!(dial(&mut sim, h, v));
    }
    sim.run_until(|s| honest.iter().all(|&h| connected(s, v, h)), 1_000_000)
        .expect("honest peers up");
    sim.run_for(Duration::from_secs(600), 10_000_000)
        .expect("runs");
    let vid = sim.node_id(v);
    for &h in &honest[..4] {
        sim.with_engine(h, |e, now| {
            e.send(now, vid, APP, Bytes::from_static(b"vote"))
        })
        .expect("node")
        .expect("sent");
    }
    // The attacker: 100 nodes on 100 IPs of one /16, redialling as soon as they are out.
    let attackers: Vec<usize> = (0..ATTACKERS)
        .map(|k| {
            let ip = [50, 1, (k / 250) as u8, (k % 250) as u8 + 1];
            add(
                &mut sim,
                quiet(HONEST + 1 + k, Some(SocketAddr::from((ip, 26656)))),
            )
        })
        .collect();
    let mut attempts = 0;
    for k in 0..20_000 {
        if attempts >= 1000 {
            break;
        }
        let a = attackers[k % ATTACKERS];
        if !connected(&sim, a, v) && dial(&mut sim, a, v) {
            attempts += 1;
            sim.run_for(Duration::from_millis(500), 1_000_000)
                .expect("runs");
            for &h in &honest {
                assert!(
                    connected(&sim, v, h),
                    "honest node {h} lost after {attempts} attempts"
                );
            }
        }
    }
    assert_eq!(attempts, 1000);
    let e = sim.engine(v).expect("victim");
    let honest_ids: Vec<NodeId> = honest.iter().map(|&h| sim.node_id(h)).collect();
    let evicted = |pred: &dyn Fn(&NodeId) -> bool| evicted_in(&sim, v, pred);
    assert_eq!(
        evicted(&|p| honest_ids.contains(p)),
        0,
        "protected honest peers evicted"
    );
    let flood_evicted = evicted(&|p| !honest_ids.contains(p));
    let (inbound, _) = e.num_peers();
    assert!(inbound <= INBOUND);
    assert!(
        e.counters().refused > 0,
        "attempts beyond the rates were refused"
    );
    // The node keeps serving: a newcomer from a fresh group gets a slot (it evicts a flooder),
    // and the honest peers' messages still arrive.
    let fresh = add(&mut sim, quiet(HONEST + ATTACKERS + 1, None));
    assert!(dial(&mut sim, fresh, v));
    sim.run_until(|s| connected(s, v, fresh), 1_000_000)
        .expect("a fresh honest node gets in");
    let fresh_id = sim.node_id(fresh);
    assert_eq!(
        evicted_in(&sim, v, &|p| !honest_ids.contains(p) && *p != fresh_id),
        flood_evicted + 1,
        "the fresh node took a flooder's slot"
    );
    let before = sim.engine(v).expect("v").counters().messages;
    sim.with_engine(honest[5], |e, now| {
        e.send(now, vid, APP, Bytes::from_static(b"block"))
    })
    .expect("node")
    .expect("sent");
    sim.run_for(Duration::from_secs(1), 1_000_000)
        .expect("runs");
    assert_eq!(sim.engine(v).expect("v").counters().messages, before + 1);
    assert!(honest.iter().all(|&h| connected(&sim, v, h)));
    eprintln!(
        "1000 attempts: flooders evicted {flood_evicted}, refused {}, honest evicted 0",
        sim.engine(v).expect("v").counters().refused
    );
}

/// Peers of node `v` evicted so far that match `pred`.
fn evicted_in(sim: &Sim, v: usize, pred: &dyn Fn(&NodeId) -> bool) -> usize {
    sim.events()
        .iter()
        .filter(|r| r.node == v)
        .filter(|r| {
            matches!(&r.event, Event::PeerDown { peer, reason: DisconnectReason::Evicted }
                if pred(peer))
        })
        .count()
}

/// With every inbound slot held, at most `EVICTION_HANDSHAKES` (2) newcomers may handshake at
/// once to compete for a slot: of three arriving together, exactly one is refused at once.
#[test]
fn eviction_handshakes_limit_is_crossed_by_one() {
    use cometmesh_core::engine::DialFailure;
    use cometmesh_core::engine::{DialFailReason, inbound::EVICTION_HANDSHAKES};
    assert_eq!(EVICTION_HANDSHAKES, 2);
    let mut cfg = SimConfig::default();
    cfg.seed = 14;
    cfg.record_events = true;
    let mut sim = Sim::new(cfg, Instant::now());
    let mut vc = quiet(0, None);
    vc.max_num_inbound_peers = 1;
    let v = add(&mut sim, vc);
    let h = add(&mut sim, quiet(1, None));
    assert!(dial(&mut sim, h, v));
    sim.run_until(|s| connected(s, v, h), 1_000_000)
        .expect("up");
    let newcomers: Vec<usize> = (2..=4).map(|i| add(&mut sim, quiet(i, None))).collect();
    for &n in &newcomers {
        assert!(dial(&mut sim, n, v));
    }
    sim.run_for(Duration::from_secs(10), 1_000_000)
        .expect("runs");
    let refused_at_once = sim
        .events()
        .iter()
        .filter(|r| newcomers.contains(&r.node))
        .filter(|r| {
            matches!(
                &r.event,
                Event::DialFailed {
                    reason: DialFailReason::Io(DialFailure::Refused),
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        refused_at_once, 1,
        "two handshakes allowed, the third refused"
    );
    assert!(connected(&sim, v, h), "the protected peer stays");
    assert!(newcomers.iter().all(|&n| !connected(&sim, v, n)));
}
