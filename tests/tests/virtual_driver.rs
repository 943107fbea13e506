//! The driver's own logic, in virtual time (`cometmesh_tests::virtual_time`): handshake
//! deadlines, `send_wait` parking, read pausing, lingering closes, shutdown deadlines and
//! address-book saving. Every node has a fixed seed and the network is in memory, so each test
//! runs the same way every time; "when" is read from the runtime's paused clock, never from
//! the wall clock.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cometmesh_core::engine::{CloseCause, DisconnectReason, EngineConfig, Event};
use cometmesh_driver::{Node, NodeBuilder, NodeError, Runtime, SendError};
use cometmesh_tests::loopback::{
    APP, app_channel, config, exchange, has_peer, key, next_message, scratch_dir, sleep, timeout,
    wait_until,
};
use cometmesh_tests::virtual_time::{VirtualRuntime, block_on};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::{AsyncRead, StreamExt};

/// The driver's defaults these tests lean on (`DriverConfig`): a closing connection may take
/// `LINGER` to flush; shutdown waits at most `GRACE` for connections to close.
const LINGER: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(2);

/// Starts node `i` with a fixed engine seed, the application channel and, optionally, a book.
async fn node(
    rt: &VirtualRuntime,
    cfg: EngineConfig,
    i: u8,
    book: Option<(PathBuf, Duration)>,
) -> Node<VirtualRuntime> {
    let mut b = NodeBuilder::new(rt.clone(), cfg, key(i))
        .channel(app_channel())
        .seed([i ^ 0x5a; 32]);
    if let Some((path, interval)) = book {
        b = b.addr_book_path(path).save_interval(interval);
    }
    b.start().await.expect("node starts")
}

/// Reads until end-of-file or error (bounded by 30 s of virtual time); returns when it ended.
async fn read_to_end(rt: &VirtualRuntime, mut r: impl AsyncRead + Unpin) -> Instant {
    let end = timeout(rt, Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(end.is_some(), "the node never closed the connection");
    rt.now()
}

#[test]
fn silent_client_cut_at_the_handshake_deadline() {
    block_on(async {
        let rt = VirtualRuntime::new();
        let mut c = config();
        c.handshake_timeout = Duration::from_millis(500);
        let n = node(&rt, c, 1, None).await;
        let t0 = rt.now();
        let (r, _w) = rt.connect_raw(n.listen_addr()).expect("connect");
        let cut = read_to_end(&rt, r).await - t0;
        assert!(
            cut >= Duration::from_millis(500) && cut < Duration::from_millis(550),
            "cut at the 500 ms deadline, not before nor much after: {cut:?}"
        );
        n.shutdown().await;
    });
}

#[test]
fn garbage_client_cut_at_once() {
    block_on(async {
        let rt = VirtualRuntime::new();
        let mut c = config();
        c.handshake_timeout = Duration::from_millis(500);
        let n = node(&rt, c, 1, None).await;
        let t0 = rt.now();
        let (r, mut w) = rt.connect_raw(n.listen_addr()).expect("connect");
        w.write_all(&[0xff; 300]).await.expect("write");
        let cut = read_to_end(&rt, r).await - t0;
        assert!(
            cut < Duration::from_millis(10),
            "garbage is refused as it arrives, long before the deadline: {cut:?}"
        );
        // The node still serves a real peer.
        let good = node(&rt, config(), 2, None).await;
        exchange(&rt, &good, &n).await;
        good.shutdown().await;
        n.shutdown().await;
    });
}

#[test]
fn shutdown_tells_peers_at_once_and_saves_the_book() {
    block_on(async {
        let rt = VirtualRuntime::new();
        let dir = scratch_dir("virtual-shutdown");
        let path = dir.join("addrbook.bin");
        let a = node(
            &rt,
            config(),
            1,
            Some((path.clone(), Duration::from_secs(60))),
        )
        .await;
        let b = node(&rt, config(), 2, None).await;
        exchange(&rt, &b, &a).await;
        let mut eb = b.events().await.expect("events");
        let (aid, ha) = (a.node_id(), a.handle());
        let t0 = rt.now();
        a.shutdown().await;
        let took = rt.now() - t0;
        assert!(
            took < LINGER,
            "every connection flushed and closed: no linger, no grace deadline ({took:?})"
        );
        assert!(matches!(ha.peers().await, Err(NodeError::Stopped)));
        let down = timeout(&rt, Duration::from_secs(5), async {
            while let Some(ev) = eb.next().await {
                if let Event::PeerDown { peer, reason } = ev
                    && peer == aid
                {
                    return Some((reason, rt.now()));
                }
            }
            None
        })
        .await
        .flatten();
        let (reason, at) = down.expect("b saw a go down");
        assert!(
            matches!(reason, DisconnectReason::Io(CloseCause::Eof)),
            "b learnt it from the socket closing: {reason:?}"
        );
        assert!(at - t0 < LINGER, "b learnt it at once: {:?}", at - t0);
        // Saved at shutdown although the 60 s save interval had not passed since the first save.
        assert!(path.exists(), "book saved at shutdown");
        assert!(!dir.join("addrbook.bin.tmp").exists(), "no temp file left");
        b.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A config whose node reads at most `rate` bytes per second.
fn slow_reader(rate: u64) -> EngineConfig {
    let mut c = config();
    c.connection.recv_rate = rate;
    c
}

#[test]
fn send_wait_parks_while_a_slow_reader_pauses_reading() {
    const RATE: u64 = 200_000;
    const COUNT: u32 = 300;
    const SIZE: usize = 16 * 1024;
    block_on(async {
        let rt = VirtualRuntime::new();
        let a = node(&rt, config(), 1, None).await;
        let b = node(&rt, slow_reader(RATE), 2, None).await;
        exchange(&rt, &a, &b).await;
        let (aid, bid) = (a.node_id(), b.node_id());
        let mut eb = b.events().await.expect("events");
        let t0 = rt.now();
        // The sender runs as its own task; this one watches the reader.
        let ha = a.handle();
        let sender = tokio::spawn(async move {
            for i in 0..COUNT {
                let mut m = vec![0u8; SIZE];
                m[..4].copy_from_slice(&i.to_be_bytes());
                ha.send_wait(bid, APP, m.into()).await.expect("send_wait");
            }
            tokio::time::Instant::now().into_std()
        });
        // Read pausing: after 2 s, the driver has read about 2 s worth of bytes from the socket,
        // not what the sender pushed (without pausing, everything within milliseconds).
        sleep(&rt, Duration::from_secs(2)).await;
        let read = b
            .peers()
            .await
            .expect("peers")
            .iter()
            .find(|p| p.info.id == aid)
            .expect("a up")
            .stats
            .bytes_received;
        let bound = 2 * RATE + RATE / 10 + 4 * 64 * 1024 + 64 * 1024;
        assert!(
            read <= bound,
            "b's driver read {read} bytes in 2 s at {RATE} B/s (bound {bound})"
        );
        assert!(
            read >= RATE,
            "b keeps reading at its rate: {read} bytes in 2 s"
        );
        // Every message arrives, in order.
        for i in 0..COUNT {
            let (_, m) = next_message(&rt, &mut eb).await.expect("message");
            assert_eq!(m.get(..4), Some(&i.to_be_bytes()[..]), "in order");
        }
        let done = rt.now() - t0;
        let total = u64::from(COUNT) * SIZE as u64;
        let floor = Duration::from_millis((total - RATE / 10 - 64 * 1024) * 1000 / RATE);
        assert!(
            done >= floor,
            "{total} bytes at {RATE} B/s arrived in {done:?}, under {floor:?}"
        );
        // send_wait parked: the last call returned only once the reader had drained all but
        // what the queue, the send budget and the socket buffers hold (well under 2 MiB).
        let sent_at = sender.await.expect("sender") - t0;
        let held = 2 * 1024 * 1024;
        let parked = Duration::from_millis((total - held) * 1000 / RATE);
        assert!(
            sent_at >= parked,
            "the last send_wait returned after {sent_at:?}, before {parked:?}"
        );
        assert!(has_peer(&b, aid).await, "the slow reader stays connected");
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn a_connection_that_cannot_flush_lingers_then_is_cut() {
    block_on(async {
        let rt = VirtualRuntime::new();
        let a = node(&rt, config(), 1, None).await;
        let b = node(&rt, slow_reader(10_000), 2, None).await;
        exchange(&rt, &a, &b).await;
        let bid = b.node_id();
        // Fill everything between a and b: a's queue, its send budget and the pipe.
        let msg = Bytes::from(vec![7u8; 64 * 1024]);
        let mut full = false;
        for _ in 0..1024 {
            match a.send(bid, APP, msg.clone()).await {
                Ok(()) => {}
                Err(NodeError::Send(SendError::Full(_))) => {
                    full = true;
                    break;
                }
                Err(e) => panic!("unexpected send error: {e}"),
            }
        }
        assert!(full, "a's queue toward the slow reader filled");
        // Shutdown closes the connection; its writer cannot flush, so it lingers and is cut.
        let aid = a.node_id();
        let t0 = rt.now();
        a.shutdown().await;
        let took = rt.now() - t0;
        assert!(
            took >= LINGER && took < GRACE,
            "cut at the linger deadline ({LINGER:?}), before the grace one ({GRACE:?}): {took:?}"
        );
        wait_until(&rt, Duration::from_secs(30), "b sees a go down", || async {
            !has_peer(&b, aid).await
        })
        .await;
        b.shutdown().await;
    });
}

/// The bytes of the book file, if it exists.
fn book_bytes(path: &std::path::Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// Waits (in 10 ms steps of virtual time, at most `limit`) until the book file differs from
/// `before`; returns when.
async fn next_save(
    rt: &VirtualRuntime,
    path: &std::path::Path,
    before: Option<&[u8]>,
    limit: Duration,
) -> Instant {
    let end = rt.now() + limit;
    loop {
        if book_bytes(path).as_deref() != before {
            return rt.now();
        }
        assert!(rt.now() < end, "no save within {limit:?}");
        sleep(rt, Duration::from_millis(10)).await;
    }
}

#[test]
fn book_saved_on_change_at_most_once_per_interval_and_at_shutdown() {
    const INTERVAL: Duration = Duration::from_secs(10);
    block_on(async {
        let rt = VirtualRuntime::new();
        let dir = scratch_dir("virtual-book");
        let path = dir.join("addrbook.bin");
        let a = node(&rt, config(), 1, Some((path.clone(), INTERVAL))).await;
        assert!(book_bytes(&path).is_none(), "nothing to save yet");
        // b dials a: a learns b's address, and the first save follows at once.
        let b = node(&rt, config(), 2, None).await;
        let t0 = rt.now();
        b.dial(a.net_addr()).await.expect("dial");
        let first = next_save(&rt, &path, None, Duration::from_secs(5)).await;
        assert!(first - t0 < Duration::from_secs(1), "first save at once");
        let saved = book_bytes(&path);
        // c dials a one second later: the change waits for the interval.
        sleep(&rt, Duration::from_secs(1)).await;
        let c = node(&rt, config(), 3, None).await;
        c.dial(a.net_addr()).await.expect("dial");
        let second = next_save(&rt, &path, saved.as_deref(), 2 * INTERVAL).await;
        assert!(
            second - first >= INTERVAL && second - first < INTERVAL + Duration::from_millis(100),
            "second save one interval after the first: {:?}",
            second - first
        );
        // A change just before shutdown is saved by the shutdown, not left for the interval.
        let saved = book_bytes(&path);
        let d = node(&rt, config(), 4, None).await;
        d.dial(a.net_addr()).await.expect("dial");
        let did = d.node_id();
        wait_until(&rt, Duration::from_secs(5), "a knows d", || async {
            a.known_addrs()
                .await
                .is_ok_and(|k| k.iter().any(|x| x.id == did))
        })
        .await;
        assert_eq!(book_bytes(&path), saved, "not saved before the interval");
        a.shutdown().await;
        assert_ne!(book_bytes(&path), saved, "saved at shutdown");
        for n in [b, c, d] {
            n.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A ban survives a restart of the driver (issue 13.2): the book it saves carries the ban and
/// the restarted node reads it on admission, so the banned peer is refused at once; a
/// neighbour on the same IP (duplicate IPs allowed: the ban covers the node id only) gets in.
#[test]
fn a_ban_survives_a_driver_restart() {
    block_on(async {
        let rt = VirtualRuntime::new();
        let dir = scratch_dir("virtual-ban");
        let path = dir.join("addrbook.bin");
        let book = || Some((path.clone(), Duration::from_secs(60)));
        let a = node(&rt, config(), 1, book()).await;
        let b = node(&rt, config(), 2, None).await;
        exchange(&rt, &b, &a).await;
        let (aid, bid) = (a.node_id(), b.node_id());
        let out = a.ban(bid, "test", Duration::from_secs(3600)).await;
        assert_eq!(out.ok(), Some(cometmesh_core::engine::BanOutcome::Banned));
        sleep(&rt, Duration::from_secs(1)).await;
        a.shutdown().await;
        let a = node(&rt, config(), 1, book()).await;
        let _ = b.dial(a.net_addr()).await;
        sleep(&rt, Duration::from_secs(5)).await;
        assert!(
            !has_peer(&a, bid).await,
            "banned peer admitted after a restart"
        );
        assert!(!has_peer(&b, aid).await);
        let c = node(&rt, config(), 3, None).await;
        exchange(&rt, &c, &a).await;
        for n in [a, b, c] {
            n.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Anchors through the driver (issue 13.4, G12): at shutdown the peer the node picked by
/// itself and held for 10 min is saved beside the book; at the next start the file is read,
/// deleted, and the anchor dialled even with PEX off (nothing else would dial it).
#[test]
fn anchors_are_saved_at_shutdown_and_dialled_at_start() {
    block_on(async {
        let rt = VirtualRuntime::new();
        let dir = scratch_dir("virtual-anchors");
        let path = dir.join("addrbook.bin");
        let anchors_file = dir.join("addrbook.bin.anchors");
        let book = || Some((path.clone(), Duration::from_secs(60)));
        let c = node(&rt, config(), 3, None).await;
        let b = node(&rt, config(), 2, None).await;
        exchange(&rt, &c, &b).await;
        let mut ca = config();
        ca.seeds = vec![b.net_addr()];
        let a = node(&rt, ca, 1, book()).await;
        let cid = c.node_id();
        wait_until(&rt, Duration::from_secs(60), "a dials c by itself", || {
            has_peer(&a, cid)
        })
        .await;
        sleep(&rt, Duration::from_secs(11 * 60)).await;
        assert!(has_peer(&a, cid).await);
        a.shutdown().await;
        let bytes = std::fs::read(&anchors_file).expect("anchors saved");
        let saved = cometmesh_core::engine::anchors::decode(&bytes).expect("decodes");
        assert_eq!(saved, vec![c.net_addr()]);
        let mut quiet = config();
        quiet.pex = false;
        let a = node(&rt, quiet, 1, book()).await;
        assert!(!anchors_file.exists(), "read and deleted at start");
        wait_until(&rt, Duration::from_secs(5), "the anchor dialled", || {
            has_peer(&a, cid)
        })
        .await;
        for n in [a, b, c] {
            n.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
