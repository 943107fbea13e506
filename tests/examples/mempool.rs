//! The mempool reactor (`cometmesh_tests::mempool`, CometBFT's channel 0x30) on three tokio
//! nodes in a line, A - B - C, plus a misbehaving node M connected to B:
//! a transaction submitted at A reaches B and is re-gossiped to C (never back to A); M sends
//! bytes that are not a mempool message and B bans it.
//! Run: `cargo run -p cometmesh-tests --example mempool`
use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use cometmesh_driver::{ChannelDescriptor, EngineConfig, Handle, Inbox, NodeKey, ReactorEvent};
use cometmesh_tests::mempool::{self, MEMPOOL};
use futures::StreamExt;
use futures::channel::mpsc;

type Res<T> = Result<T, Box<dyn Error>>;
type Received = mpsc::UnboundedReceiver<(cometmesh_driver::NodeId, Bytes)>;

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.chain_id = "mempool-example".into();
    c.listen_addr = ([127, 0, 0, 1], 0).into();
    (c.allow_duplicate_ip, c.addr_book_strict, c.pex) = (true, false, false);
    c
}

/// Waits (10 s at most) for the next lifecycle event of `peers`.
async fn next(peers: &mut Inbox) -> Res<ReactorEvent> {
    let ev = tokio::time::timeout(Duration::from_secs(10), peers.next()).await?;
    ev.ok_or_else(|| "node stopped".into())
}

/// A node running the mempool reactor: its handle, its peer events, where to submit, and
/// what it received.
async fn node(seed: u8) -> Res<(Handle, Inbox, mpsc::UnboundedSender<Bytes>, Received)> {
    let mut b = cometmesh_tokio::builder(config(), NodeKey::from_seed([seed; 32]));
    let (inboxes, peers) = (mempool::register(&mut b), b.peer_events());
    let node = b.start().await?.handle();
    let ((submit, local), (got, received)) = (mpsc::unbounded(), mpsc::unbounded());
    tokio::spawn(mempool::run(node.clone(), inboxes, 2, local, got));
    Ok((node, peers, submit, received))
}

#[tokio::main]
async fn main() -> Res<()> {
    let (a, _, submit_a, _) = node(1).await?;
    let (b, mut b_peers, _, mut got_b) = node(2).await?;
    let (c, _, _, mut got_c) = node(3).await?;
    a.dial(b.net_addr()).await?;
    c.dial(b.net_addr()).await?;
    for _ in 0..2 {
        next(&mut b_peers).await?; // B has A and C up: nothing can race now.
    }
    submit_a.unbounded_send(Bytes::from_static(b"key=value"))?;
    let (from, tx) = got_b.next().await.ok_or("stopped")?;
    println!("B got {tx:?} from A: {}", from == a.node_id());
    let (from, tx) = got_c.next().await.ok_or("stopped")?;
    println!("C got {tx:?} re-gossiped by B: {}", from == b.node_id());
    // M speaks garbage on 0x30: B bans it.
    let mut mb = cometmesh_tokio::builder(config(), NodeKey::from_seed([4; 32]));
    let mut m_peers = mb.peer_events();
    let m = mb
        .channel(ChannelDescriptor::new(MEMPOOL, 5))
        .start()
        .await?;
    m.dial(b.net_addr()).await?;
    next(&mut m_peers).await?;
    m.send_wait(b.node_id(), MEMPOOL, Bytes::from_static(b"\xff\xff"))
        .await?;
    if let ReactorEvent::PeerDown(_, why) = next(&mut m_peers).await? {
        println!(
            "M was dropped by B ({why}); B's bans: {}",
            b.status().await?.counters.bans
        );
    }
    Ok(())
}
