//! One listen port for two chains, over real TCP on loopback (tokio and async-std): a node of
//! each chain dials the shared port and is answered by the node of its own chain; a node of a
//! third chain is refused before the handshake completes and is never a peer of either.

use std::time::Duration;

use cometmesh_core::engine::{DialFailReason, EngineConfig, Event};
use cometmesh_driver::{NodeBuilder, Runtime, SharedPort, StartError};
use cometmesh_tests::loopback::{config, has_peer, key, start, timeout, wait_until};
use cometmesh_tokio::{NetAddr, TokioRuntime};
use futures::StreamExt as _;

fn chain(id: &str) -> EngineConfig {
    let mut c = config();
    c.chain_id = id.into();
    c
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

#[test]
fn two_chains_share_one_port_and_an_unknown_chain_is_refused() {
    block_on(two_chains(TokioRuntime));
}

#[test]
fn two_chains_share_one_port_on_async_std() {
    async_std::task::block_on(two_chains(cometmesh_async_std::AsyncStdRuntime));
}

async fn two_chains<R: Runtime>(rt: R) {
    let seed_key = key(1);
    let port = SharedPort::bind(rt.clone(), ([127, 0, 0, 1], 0).into(), seed_key.clone())
        .await
        .unwrap()
        .seed([0x11; 32]);
    let addr = port.local_addr();
    let seed_a = NodeBuilder::new(rt.clone(), chain("chain-a"), seed_key.clone())
        .shared_port(&port)
        .start()
        .await
        .unwrap();
    let seed_b = NodeBuilder::new(rt.clone(), chain("chain-b"), seed_key.clone())
        .shared_port(&port)
        .start()
        .await
        .unwrap();
    // The port's key only, and one node per chain.
    let err = NodeBuilder::new(rt.clone(), chain("chain-c"), key(9))
        .shared_port(&port)
        .start()
        .await
        .err();
    assert!(
        matches!(err, Some(StartError::SharedPortKey { .. })),
        "{err:?}"
    );
    let err = NodeBuilder::new(rt.clone(), chain("chain-a"), seed_key.clone())
        .shared_port(&port)
        .start()
        .await
        .err();
    assert!(
        matches!(err, Some(StartError::SharedPortChain { .. })),
        "{err:?}"
    );
    assert_eq!(port.chains(), ["chain-a", "chain-b"]);
    assert_eq!((seed_a.listen_addr(), seed_b.listen_addr()), (addr, addr));
    let _task = port.start();

    let target = NetAddr::new(seed_key.node_id(), addr);
    let node_a = start(&rt, chain("chain-a"), key(2)).await;
    let node_b = start(&rt, chain("chain-b"), key(3)).await;
    let node_z = start(&rt, chain("chain-z"), key(4)).await;
    let mut z_events = node_z.events().await.unwrap();
    node_a.dial(target).await.unwrap();
    node_b.dial(target).await.unwrap();
    node_z.dial(target).await.unwrap();
    let limit = Duration::from_secs(10);
    wait_until(&rt, limit, "chain-a's seed has node a", || {
        has_peer(&seed_a, node_a.node_id())
    })
    .await;
    wait_until(&rt, limit, "chain-b's seed has node b", || {
        has_peer(&seed_b, node_b.node_id())
    })
    .await;
    assert!(has_peer(&node_a, seed_key.node_id()).await);
    assert!(has_peer(&node_b, seed_key.node_id()).await);
    // Node z's dial fails in the handshake: the port closed it on seeing chain-z.
    let failed = timeout(&rt, limit, async {
        while let Some(e) = z_events.next().await {
            if let Event::DialFailed { addr, reason } = e {
                return Some((addr, reason));
            }
        }
        None
    })
    .await
    .flatten()
    .expect("node z's dial fails");
    assert_eq!(*failed.0, target);
    assert!(
        matches!(
            failed.1,
            DialFailReason::Handshake(_) | DialFailReason::Closed(_)
        ),
        "{}",
        failed.1
    );
    // Never crossed: each seed has exactly its own chain's node.
    let peers_a = seed_a.peers().await.unwrap();
    let peers_b = seed_b.peers().await.unwrap();
    assert_eq!(
        peers_a.iter().map(|p| p.info.id).collect::<Vec<_>>(),
        [node_a.node_id()]
    );
    assert_eq!(
        peers_b.iter().map(|p| p.info.id).collect::<Vec<_>>(),
        [node_b.node_id()]
    );
    assert!(peers_a.iter().all(|p| p.info.info.network == "chain-a"));
    assert!(node_z.peers().await.unwrap().is_empty());
    for n in [node_a, node_b, node_z, seed_a, seed_b] {
        n.shutdown().await;
    }
}

#[test]
fn a_silent_client_is_closed_after_the_phase_timeout() {
    use std::io::Read as _;
    block_on(async {
        let port = cometmesh_tokio::shared_port(([127, 0, 0, 1], 0).into(), key(1))
            .await
            .unwrap()
            .phase_timeout(Duration::from_millis(300));
        let addr = port.local_addr();
        let _task = port.start();
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            // Bounds the test, not the port: the port closes long before.
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut got = Vec::new();
            let end = s.read_to_end(&mut got);
            assert!(
                end.is_ok(),
                "the port never closed a silent client: {end:?}"
            );
            // It sent its ephemeral key (the SecretConnection's first message) and nothing else.
            assert_eq!(got.len(), 35, "{got:?}");
        })
        .await
        .unwrap();
    });
}
