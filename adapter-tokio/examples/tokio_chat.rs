//! Two tokio nodes on loopback exchange messages on a custom channel.
//! Run: `cargo run -p cometmesh-tokio --example tokio_chat`
use std::error::Error;
use std::time::Duration;

use cometmesh_tokio::{self as mesh, ChannelDescriptor, ChannelId, Event, EventStream};
use futures::StreamExt;
use tokio::time::timeout;

const CHAT: ChannelId = ChannelId(0x70);
type Res<T> = Result<T, Box<dyn Error>>;

async fn node(seed: u8) -> Result<mesh::Node, mesh::StartError> {
    let mut config = mesh::EngineConfig::default();
    config.chain_id = "example-chain".into();
    config.listen_addr = ([127, 0, 0, 1], 0).into();
    config.addr_book_strict = false; // loopback addresses are not routable
    mesh::builder(config, mesh::NodeKey::from_seed([seed; 32]))
        .channel(ChannelDescriptor::new(CHAT, 1))
        .start()
        .await
}

/// The next event that `f` picks (waits 10 s at most).
async fn next<T>(events: &mut EventStream, f: impl Fn(Event) -> Option<T>) -> Res<T> {
    loop {
        let event = timeout(Duration::from_secs(10), events.next()).await?;
        match event.map(&f) {
            Some(Some(t)) => return Ok(t),
            Some(None) => {}
            None => return Err("node stopped".into()),
        }
    }
}

#[tokio::main]
async fn main() -> Res<()> {
    let (alice, bob) = (node(1).await?, node(2).await?);
    let (mut alice_events, mut bob_events) = (alice.events().await?, bob.events().await?);
    alice.dial(bob.net_addr()).await?;
    let peer_up = |e| matches!(e, Event::PeerUp { .. }).then_some(());
    next(&mut bob_events, peer_up).await?;
    let message = |e| match e {
        Event::Message { payload, .. } => Some(payload),
        _ => None,
    };
    alice
        .send_wait(bob.node_id(), CHAT, "hello bob".into())
        .await?;
    println!("bob got {:?}", next(&mut bob_events, message).await?);
    bob.send_wait(alice.node_id(), CHAT, "hi alice".into())
        .await?;
    println!("alice got {:?}", next(&mut alice_events, message).await?);
    futures::join!(alice.shutdown(), bob.shutdown());
    Ok(())
}
