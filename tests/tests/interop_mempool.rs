//! The mempool reactor (`cometmesh_tests::mempool`) against a real CometBFT v0.38 node with
//! `proxy_app = kvstore` (see `tests/interop/cometbft-node.sh`).
//!
//! 1. A transaction our reactor gossips shows up in the node's mempool and is committed.
//! 2. A transaction submitted to the node's RPC (`broadcast_tx_sync`) reaches our reactor. For
//!    that, our reactor sends the node one `NewRoundStep` on channel 0x20 claiming a height
//!    `H` = the node's latest height + 100 (`broadcastTxRoutine` sends a transaction only to
//!    peers at height >= tx height - 1); the test prints the message.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cometmesh_core::engine::EngineConfig;
use cometmesh_core::identity::NodeKey;
use cometmesh_driver::NetAddr;
use cometmesh_tests::cometbft::{CometBft, NodeOptions, Version};
use cometmesh_tests::mempool::{self, ConsensusMessage};
use futures::StreamExt;
use futures::channel::mpsc;
use prost::Message as _;

const CHAIN: &str = "mempool-interop";

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

fn height(node: &CometBft) -> i64 {
    let s = node.rpc("/status").expect("status");
    s["result"]["sync_info"]["latest_block_height"]
        .as_str()
        .and_then(|h| h.parse().ok())
        .expect("latest_block_height")
}

/// The kvstore value stored under `key` (committed state), if any.
fn committed_value(node: &CometBft, key: &str) -> Option<String> {
    let r = node.rpc(&format!("/abci_query?data=%22{key}%22")).ok()?;
    let v = r["result"]["response"]["value"].as_str()?;
    let raw = base64_decode(v)?;
    (!raw.is_empty()).then(|| String::from_utf8_lossy(&raw).into_owned())
}

fn unconfirmed(node: &CometBft) -> u64 {
    node.rpc("/num_unconfirmed_txs")
        .ok()
        .and_then(|r| r["result"]["n_txs"].as_str().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Standard base64 (RPC values); `None` on bad input.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[test]
#[ignore = "needs cometbft"]
fn mempool_reactor_gossips_with_cometbft_v038() {
    let node = CometBft::start(&NodeOptions::new("mempool", Version::V038, CHAIN))
        .unwrap_or_else(|e| panic!("{e}"));
    let h = height(&node) + 100;
    let step = ConsensusMessage::decode(mempool::new_round_step(h)).expect("decodes");
    println!("our reactor sends on channel 0x20: {step:?}");
    block_on(async {
        let mut cfg = EngineConfig::default();
        cfg.chain_id = CHAIN.into();
        cfg.listen_addr = ([127, 0, 0, 1], 0).into();
        cfg.allow_duplicate_ip = true;
        cfg.addr_book_strict = false;
        let mut b = cometmesh_tokio::builder(cfg, NodeKey::from_seed([0x30; 32]));
        let inboxes = mempool::register(&mut b);
        let mut peers = b.peer_events();
        let me = b.start().await.expect("start");
        let (local_tx, local_rx) = mpsc::unbounded();
        let (got_tx, mut got_rx) = mpsc::unbounded();
        let reactor = tokio::spawn(mempool::run(me.handle(), inboxes, h, local_rx, got_tx));
        me.dial(NetAddr::new(node.id(), node.p2p_addr()))
            .await
            .expect("dial");
        let up = tokio::time::timeout(Duration::from_secs(10), peers.next()).await;
        assert!(
            matches!(up, Ok(Some(cometmesh_driver::ReactorEvent::PeerUp(_)))),
            "{up:?}"
        );

        // 1. Ours to CometBFT: in its mempool, then committed.
        local_tx
            .unbounded_send(Bytes::from_static(b"cometmesh=gossiped"))
            .expect("reactor runs");
        let end = Instant::now() + Duration::from_secs(30);
        let (mut in_mempool, mut committed) = (false, None);
        while committed.is_none() && Instant::now() < end {
            in_mempool |= unconfirmed(&node) > 0;
            committed = committed_value(&node, "cometmesh");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(committed.as_deref(), Some("gossiped"), "committed");
        println!("seen in /num_unconfirmed_txs before commit: {in_mempool}");

        // 2. CometBFT's RPC to our reactor.
        let r = node
            .rpc("/broadcast_tx_sync?tx=%22rpc=submitted%22")
            .expect("broadcast_tx_sync");
        assert_eq!(r["result"]["code"].as_u64(), Some(0), "{r}");
        let got = tokio::time::timeout(Duration::from_secs(30), got_rx.next()).await;
        match got {
            Ok(Some((from, tx))) => {
                assert_eq!(from, node.id());
                assert_eq!(&tx[..], b"rpc=submitted");
            }
            other => panic!("the RPC transaction never reached our reactor: {other:?}"),
        }
        me.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), reactor).await;
    });
}
