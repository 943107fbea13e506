//! Issue 15.5: seeds and persistent peers given by DNS name are resolved anew at every dial, by
//! the driver (the core only carries the name). In virtual time with a resolver the test
//! controls (`FakeResolver`: a name table it changes between dials), so no DNS and no network
//! beyond the in-memory one.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cometmesh_core::addr::PeerAddr;
use cometmesh_core::engine::{Direction, EngineConfig};
use cometmesh_driver::{BoxFuture, Node, NodeBuilder, Resolver, Runtime};
use cometmesh_tests::loopback::{app_channel, config, has_peer, key, wait_until};
use cometmesh_tests::virtual_time::{VirtualRuntime, block_on};

/// A resolver whose answers the test sets, and which counts the lookups of each name.
#[derive(Default)]
struct FakeResolver {
    table: Mutex<BTreeMap<String, SocketAddr>>,
    lookups: Mutex<BTreeMap<String, usize>>,
}

impl FakeResolver {
    fn set(&self, name: &str, addr: SocketAddr) {
        self.table.lock().unwrap().insert(name.to_owned(), addr);
    }

    fn remove(&self, name: &str) {
        self.table.lock().unwrap().remove(name);
    }

    fn lookups(&self, name: &str) -> usize {
        self.lookups.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

impl Resolver for FakeResolver {
    fn resolve(&self, host: &str, _port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        *self
            .lookups
            .lock()
            .unwrap()
            .entry(host.to_owned())
            .or_default() += 1;
        let answer = self.table.lock().unwrap().get(host).copied();
        Box::pin(async move {
            answer
                .map(|a| vec![a])
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"))
        })
    }
}

/// A node with key `i` listening on `listen`.
async fn node_at(rt: &VirtualRuntime, i: u8, listen: SocketAddr) -> Node<VirtualRuntime> {
    let mut c = config();
    c.listen_addr = listen;
    NodeBuilder::new(rt.clone(), c, key(i))
        .channel(app_channel())
        .seed([i ^ 0x5a; 32])
        .start()
        .await
        .expect("node starts")
}

/// Node `i` with `cfg`, resolving through `resolver`.
async fn node_with(
    rt: &VirtualRuntime,
    i: u8,
    cfg: EngineConfig,
    resolver: &Arc<FakeResolver>,
) -> Node<VirtualRuntime> {
    NodeBuilder::new(rt.clone(), cfg, key(i))
        .channel(app_channel())
        .seed([i ^ 0x5a; 32])
        .resolver(resolver.clone())
        .start()
        .await
        .expect("node starts")
}

#[test]
fn persistent_peer_by_name_is_redialled_at_its_new_address() {
    block_on(async {
        let rt = VirtualRuntime::new();
        let resolver = Arc::new(FakeResolver::default());
        let (old, new): (SocketAddr, SocketAddr) = (
            "10.0.0.1:26656".parse().unwrap(),
            "10.0.0.2:26656".parse().unwrap(),
        );
        // The peer (key 2) first runs at `old`, and its name says so.
        let peer = node_at(&rt, 2, old).await;
        let pid = peer.node_id();
        resolver.set("peer.test", old);
        let mut c = config();
        let named: PeerAddr = format!("{pid}@peer.test:26656").parse().unwrap();
        c.add_persistent_peer(&named);
        let a = node_with(&rt, 1, c, &resolver).await;
        let ha = a.handle();
        wait_until(&rt, Duration::from_secs(10), "first connection", || {
            has_peer(&ha, pid)
        })
        .await;
        let first = ha.peers().await.unwrap();
        let p = first.iter().find(|p| p.info.id == pid).unwrap();
        assert_eq!(
            (p.info.remote, p.info.direction),
            (old, Direction::Outbound)
        );
        let looked_up = resolver.lookups("peer.test");
        assert!(looked_up >= 1);

        // The peer moves: it stops at `old`, starts again (same key) at `new`, and the name
        // is updated. Nothing listens at `old` any more.
        peer.shutdown().await;
        resolver.set("peer.test", new);
        let moved = node_at(&rt, 2, new).await;
        wait_until(
            &rt,
            Duration::from_secs(30),
            "redial to the new address",
            || has_peer(&ha, pid),
        )
        .await;
        let again = ha.peers().await.unwrap();
        let p = again.iter().find(|p| p.info.id == pid).unwrap();
        assert_eq!(
            (p.info.remote, p.info.direction),
            (new, Direction::Outbound),
            "redialled where the name points now"
        );
        assert!(
            resolver.lookups("peer.test") > looked_up,
            "resolved again at the redial"
        );
        assert!(
            has_peer(&moved.handle(), a.node_id()).await,
            "the moved peer sees us"
        );
        a.shutdown().await;
        moved.shutdown().await;
    });
}

#[test]
fn seed_by_name_is_resolved_whenever_it_is_dialled() {
    block_on(async {
        let rt = VirtualRuntime::new();
        let resolver = Arc::new(FakeResolver::default());
        let seed_at: SocketAddr = "10.0.1.1:26656".parse().unwrap();
        let mut sc = config();
        sc.listen_addr = seed_at;
        sc.seed_mode = true;
        let seed = NodeBuilder::new(rt.clone(), sc, key(9))
            .channel(app_channel())
            .seed([9; 32])
            .start()
            .await
            .expect("seed starts");
        let sid = seed.node_id();
        // At first the name does not resolve: the dial fails, and is tried again later.
        let mut c = config();
        let named: PeerAddr = format!("{sid}@seed.test:26656").parse().unwrap();
        c.add_seed(&named);
        let a = node_with(&rt, 1, c, &resolver).await;
        let ha = a.handle();
        wait_until(&rt, Duration::from_secs(10), "a failed lookup", || {
            let n = resolver.lookups("seed.test");
            async move { n >= 1 }
        })
        .await;
        assert_eq!(ha.status().await.unwrap().counters.dial_failures, 1);
        resolver.set("seed.test", seed_at);
        wait_until(&rt, Duration::from_secs(30), "the seed answers", || {
            let h = ha.clone();
            async move {
                h.status()
                    .await
                    .is_ok_and(|s| s.counters.pex_addrs_received >= 1)
            }
        })
        .await;
        assert!(resolver.lookups("seed.test") >= 2, "resolved at each dial");
        resolver.remove("seed.test");
        a.shutdown().await;
        seed.shutdown().await;
    });
}

/// A resolver that never answers: a dial by name hangs until the dial timeout.
struct SilentResolver;

impl Resolver for SilentResolver {
    fn resolve(&self, _host: &str, _port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(std::future::pending())
    }
}

/// The dial timeout has one source, the engine's (`EngineConfig::dial_timeout`): a dial that
/// never completes (here its name never resolves) fails with `DialFailReason::Timeout`
/// exactly that long after it started, and the driver's dial task is aborted.
#[test]
fn a_hanging_dial_fails_at_the_engines_dial_timeout() {
    use cometmesh_core::engine::{DialFailReason, Event};
    use futures::StreamExt;
    block_on(async {
        let rt = VirtualRuntime::new();
        let mut c = config();
        c.dial_timeout = Duration::from_millis(1500);
        let pid = key(2).node_id();
        let named: PeerAddr = format!("{pid}@hang.test:26656").parse().unwrap();
        c.add_persistent_peer(&named);
        let a = NodeBuilder::new(rt.clone(), c, key(1))
            .channel(app_channel())
            .seed([1 ^ 0x5a; 32])
            .resolver(Arc::new(SilentResolver))
            .start()
            .await
            .expect("node starts");
        let ha = a.handle();
        let mut events = ha.events().await.unwrap();
        // The first dial starts within the persistent peers' startup jitter.
        wait_until(&rt, Duration::from_secs(10), "the dial starts", || {
            let h = ha.clone();
            async move { h.status().await.is_ok_and(|s| s.counters.dials >= 1) }
        })
        .await;
        let started = rt.now();
        let failed = cometmesh_tests::loopback::timeout(&rt, Duration::from_secs(10), async {
            loop {
                match events.next().await {
                    Some(Event::DialFailed { reason, .. }) => return (reason, rt.now()),
                    Some(_) => {}
                    None => panic!("event stream closed"),
                }
            }
        })
        .await
        .expect("the dial fails");
        assert!(
            matches!(failed.0, DialFailReason::Timeout),
            "{:?}",
            failed.0
        );
        let took = failed.1 - started;
        assert!(
            took <= Duration::from_millis(1500) && took > Duration::from_millis(1000),
            "failed {took:?} after the dial was seen to start"
        );
        assert_eq!(ha.status().await.unwrap().counters.dial_failures, 1);
        a.shutdown().await;
    });
}
