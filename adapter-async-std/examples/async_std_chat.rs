//! Two async-std nodes on loopback chat through a reactor inbox: nothing can be missed, because
//! each inbox exists before its node starts and sees `PeerUp` before any message.
//! Run: `cargo run -p cometmesh-async-std --example async_std_chat`
use std::error::Error;
use std::time::Duration;

use async_std::future::timeout;
use cometmesh_async_std::{self as mesh, ChannelDescriptor, ChannelId, Inbox, ReactorEvent};
use futures::StreamExt;

const CHAT: ChannelId = ChannelId(0x70);
type Res<T> = Result<T, Box<dyn Error>>;

async fn node(seed: u8) -> Res<(mesh::Node, Inbox)> {
    let mut config = mesh::EngineConfig::default();
    config.chain_id = "example-chain".into();
    config.listen_addr = ([127, 0, 0, 1], 0).into();
    config.addr_book_strict = false; // loopback addresses are not routable
    let mut builder = mesh::builder(config, mesh::NodeKey::from_seed([seed; 32]));
    let inbox = builder.reactor(ChannelDescriptor::new(CHAT, 1), 64);
    Ok((builder.start().await?, inbox))
}

/// The next inbox event (waits 10 s at most).
async fn next(inbox: &mut Inbox) -> Res<ReactorEvent> {
    let event = timeout(Duration::from_secs(10), inbox.next()).await?;
    event.ok_or_else(|| "node stopped".into())
}

async fn run() -> Res<()> {
    let ((alice, mut alice_in), (bob, mut bob_in)) = (node(1).await?, node(2).await?);
    alice.dial(bob.net_addr()).await?;
    // Each inbox says PeerUp first: then the peer is up on *that* side, so sending cannot race.
    let ReactorEvent::PeerUp(bob_up) = next(&mut alice_in).await? else {
        return Err("expected PeerUp".into());
    };
    alice
        .send_wait(bob_up.peer, CHAT, "hello bob".into())
        .await?;
    let ReactorEvent::PeerUp(alice_up) = next(&mut bob_in).await? else {
        return Err("expected PeerUp".into());
    };
    if let ReactorEvent::Message(_, text) = next(&mut bob_in).await? {
        println!("bob got {text:?}");
    }
    bob.send_wait(alice_up.peer, CHAT, "hi alice".into())
        .await?;
    if let ReactorEvent::Message(_, text) = next(&mut alice_in).await? {
        println!("alice got {text:?}");
    }
    futures::join!(alice.shutdown(), bob.shutdown());
    Ok(())
}

fn main() -> Res<()> {
    async_std::task::block_on(run())
}
