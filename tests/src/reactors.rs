//! The reactor suite (lossless inboxes, backpressure, lifecycle, hooks, filters), written once
//! and run on every runtime (`tests/loopback_*.rs` expand [`reactor_suite!`](crate::reactor_suite)).
//!
//! Real TCP on 127.0.0.1 (port 0), every wait bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cometmesh_core::engine::{
    ChannelDescriptor, DialFailReason, Direction, DisconnectReason, Event, FilterRefusal, SendError,
};
use cometmesh_core::{ChannelId, NodeId};
use cometmesh_driver::{
    BanOutcome, Handle, Inbox, Node, NodeBuilder, NodeError, ReactorEvent, Runtime, TryRecvError,
};
use futures::StreamExt;

use crate::loopback::{config, has_peer, key, sleep, timeout, wait_until};

/// The reactor channel of the suite.
pub const CH: ChannelId = ChannelId(0x61);
/// A second reactor channel.
pub const CH2: ChannelId = ChannelId(0x62);

fn desc(id: ChannelId) -> ChannelDescriptor {
    let mut d = ChannelDescriptor::new(id, 5);
    d.send_queue_capacity = 64;
    d.recv_message_capacity = 1 << 20;
    d
}

/// A node with one reactor on [`CH`] (window `window`).
async fn node<R: Runtime>(rt: &R, k: u8, window: usize) -> (Node<R>, Inbox) {
    let mut b = NodeBuilder::new(rt.clone(), config(), key(k));
    let inbox = b.reactor(desc(CH), window);
    (b.start().await.expect("node starts"), inbox)
}

/// The next inbox event (bounded wait).
pub async fn next<R: Runtime>(rt: &R, inbox: &mut Inbox) -> ReactorEvent {
    timeout(rt, Duration::from_secs(20), inbox.next())
        .await
        .expect("inbox event in time")
        .expect("inbox open")
}

/// The next message, skipping lifecycle events.
async fn next_message<R: Runtime>(rt: &R, inbox: &mut Inbox) -> (NodeId, Bytes) {
    for _ in 0..1000 {
        if let ReactorEvent::Message(p, m) = next(rt, inbox).await {
            return (p, m);
        }
    }
    panic!("no message among 1000 events");
}

/// `a` dials `b`; both see each other up.
async fn connect<R: Runtime>(rt: &R, a: &Handle, b: &Handle) {
    a.dial(b.net_addr()).await.expect("dial");
    let (ida, idb) = (a.node_id(), b.node_id());
    wait_until(rt, Duration::from_secs(10), "peers up", || async {
        has_peer(a, idb).await && has_peer(b, ida).await
    })
    .await;
}

fn numbered(i: u32, len: usize) -> Bytes {
    let mut m = vec![0u8; len.max(4)];
    m[..4].copy_from_slice(&i.to_be_bytes());
    m.into()
}

fn number(m: &[u8]) -> u32 {
    u32::from_be_bytes(
        m.get(..4)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_default(),
    )
}

/// A reactor that sleeps while 100 000 messages are sent loses none: the sender sees `Full`
/// (and waits for the `SendReady` edge), the receiver's inbox never holds more than its
/// window and the engine holds at most a few reads per stalled peer.
pub async fn sleeping_reactor_loses_nothing<R: Runtime>(rt: R) {
    const N: u32 = 100_000;
    const WINDOW: usize = 256;
    let (a, mut ia) = node(&rt, 40, 16).await;
    let (b, mut ib) = node(&rt, 41, WINDOW).await;
    connect(&rt, &a, &b).await;
    let bid = b.node_id();
    let fulls = AtomicU64::new(0);
    let sender = async {
        let mut i = 0;
        while i < N {
            match a.try_send(bid, CH, numbered(i, 64)) {
                Ok(()) => i += 1,
                Err(NodeError::Send(SendError::Full(_))) => {
                    fulls.fetch_add(1, Ordering::Relaxed);
                    // Wait for the room-again edge (bounded).
                    loop {
                        match next(&rt, &mut ia).await {
                            ReactorEvent::SendReady(p) if p == bid => break,
                            _ => {}
                        }
                    }
                }
                Err(e) => panic!("try_send: {e}"),
            }
        }
    };
    let receiver = async {
        // Sleep until the sender is pushed back and everything is full.
        wait_until(&rt, Duration::from_secs(20), "sender sees Full", || async {
            fulls.load(Ordering::Relaxed) > 0
        })
        .await;
        wait_until(&rt, Duration::from_secs(20), "inbox full", || async {
            ib.len() >= WINDOW
        })
        .await;
        // The stall is stable: nothing more arrives while we sleep.
        sleep(&rt, Duration::from_millis(200)).await;
        let st = b.status().await.expect("status");
        assert_eq!(ib.len(), WINDOW + 1, "window messages plus a's PeerUp");
        assert!(st.held.stalled_conns <= 1, "{:?}", st.held);
        assert!(
            st.held.bytes <= 4 * 64 * 1024,
            "held per stalled peer is bounded by its reads in flight: {:?}",
            st.held
        );
        let mut expect = 0;
        let mut max_len = 0;
        while expect < N {
            max_len = max_len.max(ib.len());
            let (from, m) = next_message(&rt, &mut ib).await;
            assert_eq!(from, a.node_id());
            assert_eq!(number(&m), expect, "lossless and in order");
            expect += 1;
        }
        assert!(max_len <= WINDOW + 1, "inbox bounded: {max_len}");
    };
    futures::join!(sender, receiver);
    assert!(
        fulls.load(Ordering::Relaxed) > 0,
        "the sender saw backpressure"
    );
    assert_eq!(ib.try_recv().err(), Some(TryRecvError::Empty));
    let st = b.status().await.expect("status");
    assert_eq!(st.held, Default::default(), "nothing held at the end");
    a.shutdown().await;
    b.shutdown().await;
}

/// Lifecycle order in every inbox: `PeerUp` (NodeInfo, direction, persistent) before the
/// first message, `PeerDown` (reason) after the last, nothing lost; `disconnect` works.
pub async fn lifecycle_in_order<R: Runtime>(rt: R) {
    let (a, _ia) = node(&rt, 42, 8).await;
    let mut bb = NodeBuilder::new(rt.clone(), config(), key(43));
    let mut ib = bb.reactor(desc(CH), 4);
    let mut life = bb.peer_events();
    let b = bb.start().await.expect("start");
    connect(&rt, &a, &b).await;
    let aid = a.node_id();
    for i in 0..50 {
        a.send_wait(b.node_id(), CH, numbered(i, 16))
            .await
            .expect("send");
    }
    // The reactor is slow to start; nothing is lost meanwhile.
    sleep(&rt, Duration::from_millis(100)).await;
    match next(&rt, &mut ib).await {
        ReactorEvent::PeerUp(up) => {
            assert_eq!(up.peer, aid);
            assert_eq!(up.info.id, aid);
            assert_eq!(up.direction, Direction::Inbound);
            assert!(!up.persistent);
        }
        other => panic!("first event must be PeerUp, got {other:?}"),
    }
    for i in 0..50 {
        match next(&rt, &mut ib).await {
            ReactorEvent::Message(p, m) => assert_eq!((p, number(&m)), (aid, i)),
            other => panic!("message {i} expected, got {other:?}"),
        }
    }
    b.disconnect(aid).await.expect("disconnect");
    match next(&rt, &mut ib).await {
        ReactorEvent::PeerDown(p, DisconnectReason::Local) => assert_eq!(p, aid),
        other => panic!("PeerDown expected, got {other:?}"),
    }
    assert!(matches!(next(&rt, &mut life).await, ReactorEvent::PeerUp(u) if u.peer == aid));
    assert!(matches!(
        next(&rt, &mut life).await,
        ReactorEvent::PeerDown(p, _) if p == aid
    ));
    a.shutdown().await;
    b.shutdown().await;
    // After shutdown the inbox ends.
    assert!(matches!(
        timeout(&rt, Duration::from_secs(5), ib.next()).await,
        Some(None)
    ));
}

/// A reactor that drops its inbox stops receiving; other channels keep flowing and the peer
/// is not stalled.
pub async fn dropped_inbox_spares_other_channels<R: Runtime>(rt: R) {
    let mut ba = NodeBuilder::new(rt.clone(), config(), key(44));
    let _ia = ba.reactor(desc(CH), 8);
    let _ia2 = ba.reactor(desc(CH2), 8);
    let a = ba.start().await.expect("start");
    let mut bb = NodeBuilder::new(rt.clone(), config(), key(45));
    let dropped = bb.reactor(desc(CH), 4);
    let mut kept = bb.reactor(desc(CH2), 4);
    let b = bb.start().await.expect("start");
    drop(dropped);
    connect(&rt, &a, &b).await;
    let bid = b.node_id();
    for i in 0..1000 {
        a.send_wait(bid, CH, numbered(i, 32)).await.expect("send");
    }
    a.send_wait(bid, CH2, numbered(7, 32)).await.expect("send");
    let (from, m) = next_message(&rt, &mut kept).await;
    assert_eq!((from, number(&m)), (a.node_id(), 7));
    wait_until(&rt, Duration::from_secs(10), "1000 discarded", || async {
        b.status().await.is_ok_and(|s| s.inbox_discarded == 1000)
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// `ban` disconnects and bans (a redial is refused); a persistent peer is only disconnected
/// and comes back.
pub async fn ban_hook<R: Runtime>(rt: R) {
    let (a, _ia) = node(&rt, 46, 8).await;
    let (b, mut ib) = node(&rt, 47, 8).await;
    connect(&rt, &a, &b).await;
    let aid = a.node_id();
    let out = b
        .ban(aid, "undecodable", Duration::from_secs(600))
        .await
        .expect("ban");
    assert_eq!(out, BanOutcome::Banned);
    loop {
        match next(&rt, &mut ib).await {
            ReactorEvent::PeerDown(p, DisconnectReason::Banned(why)) => {
                assert_eq!((p, why.as_str()), (aid, "undecodable"));
                break;
            }
            ReactorEvent::PeerUp(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(b.status().await.expect("status").counters.bans, 1);
    // a dials again: b refuses it. These nodes allow duplicate IPs, so the ban covers a's node
    // id only (docs/bans.md): b refuses a right after the handshake, and a sees either a
    // failed dial or a peer that goes down at once.
    let bid = b.node_id();
    wait_until(&rt, Duration::from_secs(10), "a sees b gone", || async {
        !has_peer(&a, bid).await
    })
    .await;
    let refused_before = b.status().await.expect("status").counters.refused;
    let mut ea = a.events().await.expect("events");
    a.dial(b.net_addr()).await.expect("dial");
    let failed = timeout(&rt, Duration::from_secs(10), async {
        while let Some(ev) = ea.next().await {
            match ev {
                Event::DialFailed { .. } => return true,
                Event::PeerDown { peer, .. } if peer == bid => return true,
                _ => {}
            }
        }
        false
    })
    .await;
    assert_eq!(failed, Some(true), "a banned peer is refused");
    assert_eq!(
        b.status().await.expect("status").counters.refused,
        refused_before + 1
    );
    assert!(!has_peer(&b, aid).await);
    let not = b.ban(aid, "again", Duration::from_secs(1)).await;
    assert_eq!(not.ok(), Some(BanOutcome::NotConnected));
    a.shutdown().await;
    b.shutdown().await;

    // A persistent peer: disconnected, not banned, redialled.
    let (c, _ic) = node(&rt, 48, 8).await;
    let mut cfg = config();
    cfg.persistent_peers = vec![c.net_addr()];
    let mut bd = NodeBuilder::new(rt.clone(), cfg, key(49));
    let mut id = bd.reactor(desc(CH), 8);
    let d = bd.start().await.expect("start");
    let cid = c.node_id();
    let up =
        |ev: &ReactorEvent| matches!(ev, ReactorEvent::PeerUp(u) if u.peer == cid && u.persistent);
    assert!(up(&next(&rt, &mut id).await), "persistent peer up");
    let out = d.ban(cid, "misbehaved", Duration::from_secs(600)).await;
    assert_eq!(out.ok(), Some(BanOutcome::Persistent));
    assert!(matches!(
        next(&rt, &mut id).await,
        ReactorEvent::PeerDown(p, DisconnectReason::Banned(_)) if p == cid
    ));
    assert!(up(&next(&rt, &mut id).await), "persistent peer redialled");
    assert_eq!(d.status().await.expect("status").counters.bans, 0);
    c.shutdown().await;
    d.shutdown().await;
}

/// `mark_good`, `broadcast_except` (per-peer outcomes, never to the excluded peer),
/// `try_send` to an unknown peer, and `send_timeout` on a full queue.
pub async fn send_hooks<R: Runtime>(rt: R) {
    let (a, _ia) = node(&rt, 50, 8).await;
    let (b, mut ib) = node(&rt, 51, 8).await;
    let (c, mut ic) = node(&rt, 52, 8).await;
    connect(&rt, &b, &a).await;
    connect(&rt, &c, &a).await;
    let (bid, cid) = (b.node_id(), c.node_id());
    // a's inbound peers are in its book (their listen addresses): mark_good finds them.
    wait_until(&rt, Duration::from_secs(10), "b in a's book", || async {
        a.known_addrs()
            .await
            .is_ok_and(|k| k.iter().any(|x| x.id == bid))
    })
    .await;
    assert_eq!(a.mark_good(bid).await.ok(), Some(true));
    assert_eq!(a.mark_good(NodeId([9; 20])).await.ok(), Some(false));

    let out = a
        .broadcast_except(CH, Bytes::from_static(b"gossip"), bid)
        .await
        .expect("broadcast");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, cid);
    assert!(out[0].1.is_ok());
    let (from, m) = next_message(&rt, &mut ic).await;
    assert_eq!((from, &m[..]), (a.node_id(), &b"gossip"[..]));
    a.send_wait(bid, CH, Bytes::from_static(b"direct"))
        .await
        .expect("send");
    let (_, m) = next_message(&rt, &mut ib).await;
    assert_eq!(&m[..], b"direct", "b never got the broadcast");

    let unknown = a.try_send(NodeId([9; 20]), CH, Bytes::new());
    assert!(matches!(
        unknown,
        Err(NodeError::Send(SendError::UnknownPeer))
    ));
    // b's reactor sleeps: a's queue to b fills, then a send with a deadline gives up and
    // hands the message back.
    let mut sent = 0u32;
    let mut gave_up = false;
    for i in 0..100_000 {
        match a
            .send_timeout(bid, CH, numbered(i, 1024), Duration::from_millis(300))
            .await
        {
            Ok(()) => sent += 1,
            Err(NodeError::Send(SendError::Full(m))) => {
                assert_eq!(number(&m), i, "the message comes back");
                gave_up = true;
                break;
            }
            Err(e) => panic!("send_timeout: {e}"),
        }
    }
    assert!(gave_up && sent > 0, "sent {sent} before the deadline hit");
    for i in 0..sent {
        let (_, m) = next_message(&rt, &mut ib).await;
        assert_eq!(number(&m), i);
    }
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

/// Admission filters run in the engine: a peer filter refuses an authenticated node id, a
/// connection filter refuses an address before the handshake; the reasons are typed.
pub async fn filters_refuse<R: Runtime>(rt: R) {
    let (a, _ia) = node(&rt, 53, 8).await;
    let aid = a.node_id();
    let b = NodeBuilder::new(rt.clone(), config(), key(54))
        .peer_filter(Box::new(move |info, _| {
            if info.id == aid {
                Err(FilterRefusal("node a is not welcome"))
            } else {
                Ok(())
            }
        }))
        .start()
        .await
        .expect("start");
    let mut eb = b.events().await.expect("events");
    a.dial(b.net_addr()).await.expect("dial");
    let refused = timeout(&rt, Duration::from_secs(10), async {
        while let Some(ev) = eb.next().await {
            if let Event::InboundFailed { reason, .. } = ev {
                return Some(reason);
            }
        }
        None
    })
    .await
    .flatten();
    assert!(
        matches!(
            refused,
            Some(DialFailReason::Filtered(FilterRefusal(
                "node a is not welcome"
            )))
        ),
        "{refused:?}"
    );
    assert!(!has_peer(&b, aid).await);

    let port = b.listen_addr().port();
    let c = NodeBuilder::new(rt.clone(), config(), key(55))
        .conn_filter(Box::new(move |addr| {
            if addr.port() == port {
                Err(FilterRefusal("port blocked"))
            } else {
                Ok(())
            }
        }))
        .start()
        .await
        .expect("start");
    let r = c.dial(b.net_addr()).await;
    assert!(
        matches!(
            r,
            Err(NodeError::Dial(
                cometmesh_core::engine::DialError::Filtered(FilterRefusal("port blocked"))
            ))
        ),
        "{r:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

/// Expands the reactor suite for one runtime.
#[macro_export]
macro_rules! reactor_suite {
    ($rt:expr, $block_on:path) => {
        #[test]
        fn reactor_sleeping_loses_nothing() {
            $block_on($crate::reactors::sleeping_reactor_loses_nothing($rt));
        }
        #[test]
        fn reactor_lifecycle_in_order() {
            $block_on($crate::reactors::lifecycle_in_order($rt));
        }
        #[test]
        fn reactor_dropped_inbox_spares_other_channels() {
            $block_on($crate::reactors::dropped_inbox_spares_other_channels($rt));
        }
        #[test]
        fn reactor_ban_hook() {
            $block_on($crate::reactors::ban_hook($rt));
        }
        #[test]
        fn reactor_send_hooks() {
            $block_on($crate::reactors::send_hooks($rt));
        }
        #[test]
        fn reactor_filters_refuse() {
            $block_on($crate::reactors::filters_refuse($rt));
        }
    };
}
