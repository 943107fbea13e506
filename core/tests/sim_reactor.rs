//! Reactor delivery on the simulator (virtual time): flow-controlled channels under random
//! re-chunking, a slow application, and closes behind held messages.
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::time::{Duration, Instant};

use bytes::Bytes;
use cometmesh_core::engine::{
    BanOutcome, ChannelDescriptor, DisconnectReason, Engine, Event, SendError,
};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::sim::{Sim, SimConfig, node_config};
use cometmesh_core::{ChannelId, NodeId};
use proptest::prelude::*;

const A: ChannelId = ChannelId(0x30);
const B: ChannelId = ChannelId(0x31);

fn desc(id: ChannelId) -> ChannelDescriptor {
    let mut d = ChannelDescriptor::new(id, 1);
    d.send_queue_capacity = 8;
    d
}

/// Two nodes with channels A and B; node 1's are flow-controlled (`window_a`, `window_b`);
/// node 0 dials node 1 and the peers come up.
fn pair(seed: u64, window_a: usize, window_b: usize) -> Sim {
    let mut cfg = SimConfig::default();
    cfg.seed = seed;
    cfg.record_events = true;
    cfg.rechunk = true;
    let mut sim = Sim::new(cfg, Instant::now());
    for i in 0..2 {
        let mut c = node_config(i);
        c.pex = false;
        let key = sim.gen_key();
        let n = sim.add_node(c, key);
        for ch in [A, B] {
            sim.with_engine(n, |e, _| e.add_channel(desc(ch)))
                .expect("node")
                .expect("channel");
        }
    }
    sim.with_engine(1, |e, now| {
        e.set_delivery_window(now, A, Some(window_a));
        e.set_delivery_window(now, B, Some(window_b));
    });
    let to = sim.net_addr(1);
    sim.with_engine(0, |e, now| e.dial(now, to))
        .expect("node")
        .expect("dial");
    let (id0, id1) = (sim.node_id(0), sim.node_id(1));
    sim.run_until(
        |s| {
            s.engine(0).is_some_and(|e| e.peer(&id1).is_some())
                && s.engine(1).is_some_and(|e| e.peer(&id0).is_some())
        },
        100_000,
    )
    .expect("peers up");
    sim
}

/// Node 1's messages (channel, number) recorded from index `from` on.
fn received(sim: &Sim, from: usize) -> Vec<(ChannelId, u32)> {
    sim.events()[from..]
        .iter()
        .filter(|r| r.node == 1)
        .filter_map(|r| match &r.event {
            Event::Message {
                channel, payload, ..
            } => Some((*channel, number(payload))),
            _ => None,
        })
        .collect()
}

fn number(m: &[u8]) -> u32 {
    u32::from_be_bytes(
        m.get(..4)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_default(),
    )
}

fn numbered(i: u32, len: usize) -> Bytes {
    let mut m = vec![0u8; len.max(4)];
    m[..4].copy_from_slice(&i.to_be_bytes());
    m.into()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16),
        ..ProptestConfig::default()
    })]

    /// Whatever the chunking, sizes, windows and the application's pace: every message
    /// arrives once, in order per (peer, channel), never more than the window outstanding,
    /// and the engine holds only what its reads brought.
    #[test]
    fn order_per_peer_and_channel_survives_rechunking_and_stalls(
        seed in 0u64..1_000_000,
        window_a in 1usize..16,
        window_b in 1usize..16,
        sizes in proptest::collection::vec(4usize..3000, 1..8),
        consume in proptest::collection::vec(0usize..6, 1..16),
    ) {
        const N: u32 = 300;
        let mut sim = pair(seed, window_a, window_b);
        let id1 = sim.node_id(1);
        let start = sim.events().len();
        let (mut next_a, mut next_b) = (0u32, 0u32);
        let (mut seen_a, mut seen_b) = (0usize, 0usize);
        let (mut used_a, mut used_b) = (0usize, 0usize);
        let mut round = 0usize;
        while (seen_a as u32) < N || (seen_b as u32) < N {
            round += 1;
            prop_assert!(round < 20_000, "stuck: a {seen_a}, b {seen_b}");
            // Node 0 sends on both channels until its queues are full.
            for (ch, next) in [(A, &mut next_a), (B, &mut next_b)] {
                while *next < N {
                    let len = sizes[(*next as usize) % sizes.len()];
                    match sim.with_engine(0, |e, now| e.send(now, id1, ch, numbered(*next, len))) {
                        Some(Ok(())) => *next += 1,
                        Some(Err(SendError::Full(_))) => break,
                        other => prop_assert!(false, "send: {other:?}"),
                    }
                }
            }
            sim.run_for(Duration::from_millis(5), 100_000).expect("runs");
            // The application consumes at its own pace.
            let got = received(&sim, start);
            let a: Vec<u32> = got.iter().filter(|m| m.0 == A).map(|m| m.1).collect();
            let b: Vec<u32> = got.iter().filter(|m| m.0 == B).map(|m| m.1).collect();
            prop_assert_eq!(&a, &(0..a.len() as u32).collect::<Vec<_>>());
            prop_assert_eq!(&b, &(0..b.len() as u32).collect::<Vec<_>>());
            seen_a = a.len();
            seen_b = b.len();
            prop_assert!(seen_a - used_a <= window_a, "window A exceeded");
            prop_assert!(seen_b - used_b <= window_b, "window B exceeded");
            let held = sim.engine(1).expect("node").held();
            prop_assert!(held.stalled_conns <= 1);
            let k = consume[round % consume.len()];
            let (ka, kb) = (k.min(seen_a - used_a), k.min(seen_b - used_b));
            used_a += ka;
            used_b += kb;
            sim.with_engine(1, |e, now| {
                e.consumed(now, A, ka);
                e.consumed(now, B, kb);
            });
            // A stalled application must not stall the test: consume everything sometimes.
            if round.is_multiple_of(7) {
                let (ra, rb) = (seen_a - used_a, seen_b - used_b);
                used_a = seen_a;
                used_b = seen_b;
                sim.with_engine(1, |e, now| {
                    e.consumed(now, A, ra);
                    e.consumed(now, B, rb);
                });
            }
        }
        prop_assert_eq!(sim.engine(1).expect("node").held(), Default::default());
    }
}

/// The remote closes while messages wait for room: they are all delivered, then `PeerDown`.
#[test]
fn remote_close_behind_held_messages_delivers_them_first() {
    let mut sim = pair(7, 2, 2);
    let id0: NodeId = sim.node_id(0);
    let id1 = sim.node_id(1);
    let start = sim.events().len();
    for i in 0..8 {
        sim.with_engine(0, |e, now| e.send(now, id1, A, numbered(i, 16)))
            .expect("node")
            .expect("queued");
    }
    sim.run_for(Duration::from_secs(1), 100_000).expect("runs");
    assert_eq!(received(&sim, start).len(), 2, "window of 2");
    assert!(sim.engine(1).expect("node").held().messages > 0);
    // Node 0 hangs up.
    sim.with_engine(0, |e, now| e.disconnect(now, id1));
    sim.run_for(Duration::from_secs(1), 100_000).expect("runs");
    assert!(
        sim.engine(1).expect("node").peer(&id0).is_some(),
        "the peer stays up while its messages wait"
    );
    for _ in 0..8 {
        sim.with_engine(1, |e, now| e.consumed(now, A, 1));
        sim.run_for(Duration::from_millis(10), 100_000)
            .expect("runs");
    }
    let evs: Vec<&Event> = sim.events()[start..]
        .iter()
        .filter(|r| r.node == 1)
        .map(|r| &r.event)
        .filter(|e| matches!(e, Event::Message { .. } | Event::PeerDown { .. }))
        .collect();
    assert_eq!(evs.len(), 9, "{evs:?}");
    for (i, e) in evs[..8].iter().enumerate() {
        assert!(matches!(e, Event::Message { payload, .. } if number(payload) == i as u32));
    }
    assert!(matches!(
        evs[8],
        Event::PeerDown { peer, reason: DisconnectReason::Io(_) } if *peer == id0
    ));
    assert_eq!(sim.engine(1).expect("node").held(), Default::default());
    assert!(sim.engine(1).expect("node").peer(&id0).is_none());
}

/// We drop a stalled peer: its held messages are discarded (counted), `PeerDown` follows the
/// last delivered message, and the connection is gone.
#[test]
fn local_drop_of_a_stalled_peer_discards_what_it_holds() {
    let mut sim = pair(8, 1, 1);
    let id0 = sim.node_id(0);
    let id1 = sim.node_id(1);
    for i in 0..6 {
        sim.with_engine(0, |e, now| e.send(now, id1, A, numbered(i, 16)))
            .expect("node")
            .expect("queued");
    }
    sim.run_for(Duration::from_secs(1), 100_000).expect("runs");
    let held = sim.engine(1).expect("node").held().messages;
    assert!(held > 0);
    sim.with_engine(1, |e, now| e.disconnect(now, id0));
    sim.run_for(Duration::from_secs(1), 100_000).expect("runs");
    let e = sim.engine(1).expect("node");
    assert_eq!(e.held(), Default::default());
    assert_eq!(e.counters().messages_discarded, held as u64);
    assert_eq!(e.num_conns(), 0);
}

/// `ban` goes through the one ban list: id and IP in the address book,
/// which persists it (it survives an encode/load) for exactly the duration asked.
#[test]
fn ban_is_persisted_in_the_book_for_its_duration() {
    let mut sim = pair(9, 8, 8);
    let id0 = sim.node_id(0);
    let ip0 = sim.net_addr(0).addr.ip();
    let out = sim.with_engine(1, |e, now| {
        e.ban(now, id0, "bad bytes", Duration::from_secs(3600))
    });
    assert_eq!(out, Some(BanOutcome::Banned));
    sim.run_for(Duration::from_secs(1), 100_000).expect("runs");
    let e = sim.engine(1).expect("node");
    assert!(e.peer(&id0).is_none(), "disconnected");
    assert!(e.is_banned(&id0, sim.now()));
    let unix = sim.unix_now();
    let saved = e.addr_book().encode();
    let mut fresh = Engine::new(
        node_config(1),
        NodeKey::from_seed([7; 32]),
        [0; 32],
        sim.now(),
        unix,
    )
    .expect("engine");
    fresh.load_addr_book(&saved).expect("loads");
    assert!(fresh.addr_book().is_banned(&id0, &ip0, unix));
    assert!(!fresh.addr_book().is_banned(&id0, &ip0, unix + 3601));
    assert_eq!(
        sim.with_engine(1, |e, now| e.ban(now, id0, "again", Duration::from_secs(1))),
        Some(BanOutcome::NotConnected)
    );
}
