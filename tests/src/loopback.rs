//! The loopback suite, written once and run on every runtime (`tests/loopback_*.rs` expand
//! [`loopback_suite!`](crate::loopback_suite) for tokio and async-std).
//!
//! Real TCP on 127.0.0.1, ports from binding port 0, every wait bounded. No assertion measures
//! wall-clock time: the runtime's clock ([`Runtime::now`]) only bounds waits, and what happens
//! when is asserted by order (timings are asserted in virtual time, `tests/virtual_*.rs`).

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use cometmesh_core::engine::{
    ChannelDescriptor, CloseCause, DisconnectReason, EngineConfig, Event, SendError,
};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::{ChannelId, NodeId};
use cometmesh_driver::{Handle, Node, NodeBuilder, NodeError, Runtime};
use futures::future::{Either, select};
use futures::{Stream, StreamExt};

/// The application channel of the suite.
pub const APP: ChannelId = ChannelId(0x60);

/// A configuration for loopback tests: 127.0.0.1 port 0, duplicate IPs allowed, non-strict
/// book, fast PEX/redial timers. The handshake deadline is 2 s (debug builds on a loaded
/// machine); the hostile-client test shortens it to 500 ms.
#[must_use]
pub fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.chain_id = "loopback".into();
    c.listen_addr = ([127, 0, 0, 1], 0).into();
    c.allow_duplicate_ip = true;
    c.addr_book_strict = false;
    c.handshake_timeout = Duration::from_secs(2);
    c.dial_timeout = Duration::from_secs(1);
    c.ensure_peers_period = Duration::from_millis(300);
    c.persistent_redial_cap = Duration::from_secs(1);
    c.addr_book.min_selection = 32;
    c
}

/// A deterministic node key.
#[must_use]
pub fn key(i: u8) -> NodeKey {
    NodeKey::from_seed([i; 32])
}

/// The application channel's descriptor.
#[must_use]
pub fn app_channel() -> ChannelDescriptor {
    let mut d = ChannelDescriptor::new(APP, 5);
    d.send_queue_capacity = 16;
    d.recv_message_capacity = 1 << 20;
    d
}

/// Starts a node with the application channel.
pub async fn start<R: Runtime>(rt: &R, cfg: EngineConfig, key: NodeKey) -> Node<R> {
    start_with(rt, cfg, key, None).await
}

/// Starts a node with the application channel and, optionally, a book file.
pub async fn start_with<R: Runtime>(
    rt: &R,
    cfg: EngineConfig,
    key: NodeKey,
    book: Option<PathBuf>,
) -> Node<R> {
    let mut b = NodeBuilder::new(rt.clone(), cfg, key)
        .channel(app_channel())
        .save_interval(Duration::from_millis(200));
    if let Some(p) = book {
        b = b.addr_book_path(p);
    }
    b.start().await.expect("node starts")
}

/// Sleeps on the runtime's timer.
pub async fn sleep<R: Runtime>(rt: &R, d: Duration) {
    rt.timer(rt.now() + d).await;
}

/// `fut`, or `None` after `d`.
pub async fn timeout<R: Runtime, T>(
    rt: &R,
    d: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    match select(pin!(fut), pin!(sleep(rt, d))).await {
        Either::Left((t, _)) => Some(t),
        Either::Right(_) => None,
    }
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until<R: Runtime, F, Fut>(rt: &R, limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = rt.now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            rt.now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        sleep(rt, Duration::from_millis(50)).await;
    }
}

/// Whether `h` has `peer` up.
pub async fn has_peer(h: &Handle, peer: NodeId) -> bool {
    h.peers()
        .await
        .is_ok_and(|ps| ps.iter().any(|p| p.info.id == peer))
}

/// The next application message on `events` (bounded wait).
pub async fn next_message<R: Runtime>(
    rt: &R,
    events: &mut (impl Stream<Item = Event> + Unpin),
) -> Option<(NodeId, Bytes)> {
    let limit = rt.now() + Duration::from_secs(10);
    loop {
        let left = limit.saturating_duration_since(rt.now());
        match timeout(rt, left, events.next()).await?? {
            Event::Message {
                peer,
                channel,
                payload,
            } if channel == APP => return Some((peer, payload)),
            _ => {}
        }
    }
}

/// A fresh scratch directory for book files.
#[must_use]
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cometmesh-loopback-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// `a` and `b` connect (a dials b) and exchange one application message each way.
pub async fn exchange<R: Runtime>(ra: &R, a: &Handle, b: &Handle) {
    let mut ea = a.events().await.expect("events");
    let mut eb = b.events().await.expect("events");
    a.dial(b.net_addr()).await.expect("dial");
    let (ida, idb) = (a.node_id(), b.node_id());
    wait_until(ra, Duration::from_secs(10), "peers up", || async {
        has_peer(a, idb).await && has_peer(b, ida).await
    })
    .await;
    a.send(idb, APP, Bytes::from_static(b"ping"))
        .await
        .expect("send");
    let (from, msg) = next_message(ra, &mut eb).await.expect("b gets ping");
    assert_eq!((from, &msg[..]), (ida, &b"ping"[..]));
    b.send(ida, APP, Bytes::from_static(b"pong"))
        .await
        .expect("send");
    let (from, msg) = next_message(ra, &mut ea).await.expect("a gets pong");
    assert_eq!((from, &msg[..]), (idb, &b"pong"[..]));
    let stats = a.peers().await.expect("peers");
    let p = stats.iter().find(|p| p.info.id == idb).expect("b listed");
    assert_eq!(p.info.info.moniker, "cometmesh");
    assert!(p.stats.messages_sent >= 1 && p.stats.messages_received >= 1);
    assert!(p.stats.bytes_sent > 0 && p.stats.bytes_received > 0);
    let app = p
        .conn
        .channels
        .iter()
        .find(|c| c.id == APP)
        .expect("channel stats");
    assert!(app.bytes_sent >= 4 && app.bytes_received >= 4);
}

/// Two nodes on the same runtime exchange messages both ways.
pub async fn two_nodes_exchange<R: Runtime>(rt: R) {
    let a = start(&rt, config(), key(1)).await;
    let b = start(&rt, config(), key(2)).await;
    exchange(&rt, &a, &b).await;
    let mut eb = b.events().await.expect("events");
    assert_eq!(
        a.broadcast(APP, Bytes::from_static(b"all")).await.ok(),
        Some(1)
    );
    let (_, m) = next_message(&rt, &mut eb).await.expect("broadcast arrives");
    assert_eq!(&m[..], b"all");
    // `send_wait` rides over full queues (capacity 16) and keeps the order.
    for i in 0..200u32 {
        let mut m = vec![0u8; 1024];
        m[..4].copy_from_slice(&i.to_be_bytes());
        a.send_wait(b.node_id(), APP, m.into())
            .await
            .expect("send_wait");
    }
    for i in 0..200u32 {
        let (_, m) = next_message(&rt, &mut eb).await.expect("message");
        assert_eq!(m.get(..4), Some(&i.to_be_bytes()[..]), "in order");
    }
    // Shutdown tells the peer at once: b learns it from the socket closing (EOF or reset),
    // not from a ping timeout.
    let aid = a.node_id();
    let ha = a.handle();
    a.shutdown().await;
    let down = timeout(&rt, Duration::from_secs(5), async {
        while let Some(ev) = eb.next().await {
            if let Event::PeerDown { peer, reason } = ev
                && peer == aid
            {
                return Some(reason);
            }
        }
        None
    })
    .await
    .flatten();
    assert!(
        matches!(
            down,
            Some(DisconnectReason::Io(CloseCause::Eof | CloseCause::Reset))
        ),
        "b saw a close the socket: {down:?}"
    );
    assert!(matches!(ha.peers().await, Err(NodeError::Stopped)));
    b.shutdown().await;
}

/// Ten nodes find each other through one seed: every node's book learns every other
/// non-seed node (nobody gossips the seed itself: CometBFT books learn addresses from PEX and
/// from inbound peers), and every node has peers.
///
/// The address book keeps at most 4 ports per IP (eclipse goal G5), so ten nodes sharing
/// 127.0.0.1 cannot all be remembered: the nine nodes listen on 127.0.0.2–127.0.0.10, still
/// loopback (all of 127/8 is, on Linux), and an IPv4 group is one address (`/32`) so the
/// nine addresses do not compete for the slots of one group's buckets. The seed listens on
/// 127.0.0.1.
pub async fn ten_nodes_discover_through_one_seed<R: Runtime>(rt: R) {
    let mut c = config();
    c.addr_book.ipv4_group_bits = 32;
    let seed = start(&rt, c, key(10)).await;
    let mut nodes = Vec::new();
    for i in 0..9 {
        let mut c = config();
        c.listen_addr = ([127, 0, 0, 2 + i], 0).into();
        c.addr_book.ipv4_group_bits = 32;
        c.seeds = vec![seed.net_addr()];
        nodes.push(start(&rt, c, key(11 + i)).await);
    }
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.node_id()).collect();
    let end = rt.now() + Duration::from_secs(30);
    for n in nodes.iter().chain(std::iter::once(&seed)) {
        let me = n.node_id();
        let missing = |known: &[cometmesh_driver::NetAddr]| -> Vec<NodeId> {
            ids.iter()
                .filter(|id| **id != me && !known.iter().any(|a| a.id == **id))
                .copied()
                .collect()
        };
        loop {
            let known = n.known_addrs().await.expect("book");
            let left = missing(&known);
            let peers = n.peers().await.expect("peers").len();
            if left.is_empty() && peers > 0 {
                break;
            }
            assert!(
                rt.now() < end,
                "{me}: {peers} peers, book of {} misses {left:?}",
                known.len()
            );
            sleep(&rt, Duration::from_millis(50)).await;
        }
    }
    for n in nodes {
        n.shutdown().await;
    }
    seed.shutdown().await;
}

/// A node saves its book, restarts from it and finds its peer again without seeds.
pub async fn restart_reloads_book<R: Runtime>(rt: R) {
    let dir = scratch_dir(&format!("reload-{}", std::any::type_name::<R>().len()));
    let path = dir.join("addrbook.bin");
    // b dials a: a records its inbound peer's address in the book.
    let b = start(&rt, config(), key(21)).await;
    let a = start_with(&rt, config(), key(20), Some(path.clone())).await;
    b.dial(a.net_addr()).await.expect("dial");
    let bid = b.node_id();
    wait_until(
        &rt,
        Duration::from_secs(10),
        "a has b in its book",
        || async {
            a.known_addrs()
                .await
                .is_ok_and(|k| k.iter().any(|x| x.id == bid))
        },
    )
    .await;
    // Saved on change (debounced, 200 ms here), before any shutdown.
    wait_until(
        &rt,
        Duration::from_secs(5),
        "the book saved on change",
        || async { path.exists() },
    )
    .await;
    a.shutdown().await;
    assert!(path.exists(), "book saved at shutdown");
    assert!(!dir.join("addrbook.bin.tmp").exists(), "no temp file left");
    // Restart without seeds: the book alone leads back to b.
    let a = start_with(&rt, config(), key(20), Some(path.clone())).await;
    let known = a.known_addrs().await.expect("book");
    assert!(
        known.iter().any(|x| x.id == bid),
        "book reloaded: {known:?}"
    );
    wait_until(
        &rt,
        Duration::from_secs(15),
        "a reconnects to b from its book",
        || async { has_peer(&a, bid).await },
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
    // A corrupt book is moved aside and the node starts from its seeds.
    std::fs::write(&path, b"definitely not an address book").expect("write");
    let b = start(&rt, config(), key(21)).await;
    let mut c = config();
    c.seeds = vec![b.net_addr()];
    let a = start_with(&rt, c, key(20), Some(path.clone())).await;
    assert_eq!(
        std::fs::read(dir.join("addrbook.bin.corrupt")).expect("moved aside"),
        b"definitely not an address book"
    );
    wait_until(
        &rt,
        Duration::from_secs(15),
        "a reaches its seed",
        || async { has_peer(&a, bid).await },
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
    assert!(
        std::fs::read(&path).expect("saved").len() > 16,
        "a fresh book replaced the corrupt one"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A persistent peer is redialled after the other side restarts (same key, same port).
pub async fn persistent_peer_redialled<R: Runtime>(rt: R) {
    let b = start(&rt, config(), key(31)).await;
    let baddr = b.net_addr();
    let mut c = config();
    c.persistent_peers = vec![baddr];
    let a = start(&rt, c, key(30)).await;
    let mut events = a.events().await.expect("events");
    wait_until(&rt, Duration::from_secs(10), "a connects to b", || async {
        has_peer(&a, baddr.id).await
    })
    .await;
    b.shutdown().await;
    wait_until(&rt, Duration::from_secs(10), "a sees b down", || async {
        !has_peer(&a, baddr.id).await
    })
    .await;
    let mut c = config();
    c.listen_addr = baddr.addr;
    let b = start(&rt, c, key(31)).await;
    let up = timeout(&rt, Duration::from_secs(15), async {
        let mut ups = 0;
        while let Some(ev) = events.next().await {
            if let Event::PeerUp { peer, .. } = ev
                && peer == baddr.id
            {
                ups += 1;
                if ups == 2 {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(up, Some(true), "b redialled after its restart");
    a.shutdown().await;
    b.shutdown().await;
}

/// Reads until EOF or error; `None` if the server has not cut us off within `limit` (a bound
/// on the wait, not a measurement).
fn cut_off_within(mut s: TcpStream, limit: Duration) -> Option<()> {
    s.set_read_timeout(Some(limit)).ok()?;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(_) => return Some(()),
        }
    }
}

/// A client that sends garbage and one that stays silent are cut off (the handshake
/// deadline is 500 ms) while the node keeps serving a real peer. When the silent client is cut
/// (at the deadline, not at once) is asserted in virtual time (`tests/virtual_driver.rs`).
pub async fn hostile_clients_cut_off<R: Runtime>(rt: R) {
    let mut c = config();
    c.handshake_timeout = Duration::from_millis(500);
    let n = start(&rt, c, key(40)).await;
    let addr = n.listen_addr();
    let garbage = rt.spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).ok()?;
        s.write_all(&[0xff; 300]).ok()?;
        cut_off_within(s, Duration::from_secs(5))
    });
    let silent = rt.spawn_blocking(move || {
        let s = TcpStream::connect(addr).ok()?;
        cut_off_within(s, Duration::from_secs(5))
    });
    // Meanwhile a real peer connects and talks.
    let good = start(&rt, config(), key(41)).await;
    exchange(&rt, &good, &n).await;
    garbage.await.expect("garbage client cut off within 5 s");
    silent.await.expect("silent client cut off within 5 s");
    // Still serving.
    good.send(n.node_id(), APP, Bytes::from_static(b"still there"))
        .await
        .expect("send");
    assert!(has_peer(&n, good.node_id()).await);
    good.shutdown().await;
    n.shutdown().await;
}

/// Sending to a peer that reads slowly ends in `SendError::Full`: the queue and the unflushed
/// bytes are bounded, memory does not grow with what the application tries to send.
pub async fn slow_reader_backpressure<R: Runtime>(rt: R) {
    let mut slow = config();
    slow.connection.recv_rate = 20_000; // bytes per second: a slow reader
    let b = start(&rt, slow, key(51)).await;
    let a = start(&rt, config(), key(50)).await;
    a.dial(b.net_addr()).await.expect("dial");
    let bid = b.node_id();
    wait_until(&rt, Duration::from_secs(10), "peers up", || async {
        has_peer(&a, bid).await
    })
    .await;
    let msg = Bytes::from(vec![7u8; 64 * 1024]);
    let mut accepted = 0usize;
    let mut full = false;
    // Bounded by count, not paced by time: the slow reader takes 3 s per 64 KiB, so the queue
    // and the send budget fill long before 1 024 sends, however fast this loop runs.
    for _ in 0..1024 {
        match a.send(bid, APP, msg.clone()).await {
            Ok(()) => accepted += 1,
            Err(NodeError::Send(SendError::Full(back))) => {
                assert_eq!(back.len(), msg.len(), "the message is handed back");
                full = true;
                break;
            }
            Err(e) => panic!("unexpected send error: {e}"),
        }
    }
    assert!(
        full,
        "send never reported a full queue ({accepted} accepted)"
    );
    // Bound: the channel queue (16) + the send budget (512 KiB) + kernel socket buffers.
    assert!(
        accepted < 512,
        "{accepted} messages of 64 KiB accepted before Full"
    );
    let p = a.peers().await.expect("peers");
    let sent = p
        .iter()
        .find(|p| p.info.id == bid)
        .expect("b up")
        .stats
        .bytes_sent;
    assert!(
        sent < (accepted as u64 + 1) * 70 * 1024,
        "flushed {sent} bytes"
    );
    assert!(
        has_peer(&b, a.node_id()).await,
        "the slow reader was not disconnected"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Dropping every handle stops the node: the listener closes and calls fail with `Stopped`.
pub async fn dropping_every_handle_stops_the_node<R: Runtime>(rt: R) {
    let n = start(&rt, config(), key(70)).await;
    let addr = n.listen_addr();
    let h = n.handle();
    drop(n);
    assert!(h.status().await.is_ok(), "a handle keeps the node running");
    let h2 = h.clone();
    drop(h);
    h2.shutdown().await;
    assert!(matches!(h2.status().await, Err(NodeError::Stopped)));
    let n = start(&rt, config(), key(71)).await;
    let addr2 = n.listen_addr();
    drop(n);
    for a in [addr, addr2] {
        wait_until(
            &rt,
            Duration::from_secs(5),
            "the listener closed",
            || async { TcpStream::connect(a).is_err() },
        )
        .await;
    }
}

/// Expands the loopback suite as `#[test]`s for runtime `$rt`, run with `$block_on`.
#[macro_export]
macro_rules! loopback_suite {
    ($rt:expr, $block_on:path) => {
        #[test]
        fn two_nodes_exchange() {
            $block_on($crate::loopback::two_nodes_exchange($rt));
        }
        #[test]
        fn ten_nodes_discover_through_one_seed() {
            $block_on($crate::loopback::ten_nodes_discover_through_one_seed($rt));
        }
        #[test]
        fn restart_reloads_book() {
            $block_on($crate::loopback::restart_reloads_book($rt));
        }
        #[test]
        fn persistent_peer_redialled() {
            $block_on($crate::loopback::persistent_peer_redialled($rt));
        }
        #[test]
        fn hostile_clients_cut_off() {
            $block_on($crate::loopback::hostile_clients_cut_off($rt));
        }
        #[test]
        fn dropping_every_handle_stops_the_node() {
            $block_on($crate::loopback::dropping_every_handle_stops_the_node($rt));
        }
        #[test]
        fn slow_reader_backpressure() {
            $block_on($crate::loopback::slow_reader_backpressure($rt));
        }
    };
}
