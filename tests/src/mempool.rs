//! A real reactor on the reactor API: CometBFT's mempool channel (0x30).
//!
//! It receives `tendermint.mempool.Message{Txs}` from peers, de-duplicates transactions,
//! re-gossips each new one to every other peer (never back to its sender) and bans a peer that
//! sends bytes it cannot decode (as CometBFT's `StopPeerForError`). Locally submitted
//! transactions are gossiped to every peer.
//!
//! CometBFT's mempool reactor (`mempool/reactor.go`, `broadcastTxRoutine`) sends a
//! transaction to a peer only once that peer's consensus height (from the peer's
//! `NewRoundStep` on the consensus state channel 0x20) is at least the transaction's height
//! minus one. So the reactor also registers channel 0x20 and, when a peer comes up, sends it
//! exactly one message there: `tendermint.consensus.Message{NewRoundStep{height: H, round: 0,
//! step: 1 (NewHeight), seconds_since_start_time: 0, last_commit_round: 0}}` with the `H`
//! it was given (at least 2, so that `last_commit_round = 0` is valid). Messages arriving on
//! 0x20 are read and ignored. Nothing else of consensus is spoken.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use cometmesh_core::engine::ChannelDescriptor;
use cometmesh_core::{ChannelId, NodeId};
use cometmesh_driver::{Handle, Inbox, NodeBuilder, ReactorEvent, Runtime};
use futures::channel::mpsc;
use futures::{StreamExt, select};
use prost::Message as _;

/// CometBFT's mempool channel.
pub const MEMPOOL: ChannelId = ChannelId(0x30);
/// CometBFT's consensus state channel.
pub const STATE: ChannelId = ChannelId(0x20);
/// How long a peer that sends undecodable bytes stays banned.
pub const BAN: Duration = Duration::from_secs(3600);
/// How many transaction hashes are remembered for de-duplication (CometBFT's default
/// `mempool.cache_size`).
pub const CACHE: usize = 10_000;

/// `tendermint.mempool.Txs`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Txs {
    /// The transactions.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub txs: Vec<Bytes>,
}

/// `tendermint.mempool.Message`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MempoolMessage {
    /// The one variant.
    #[prost(oneof = "mempool_message::Sum", tags = "1")]
    pub sum: Option<mempool_message::Sum>,
}

/// `tendermint.mempool.Message.sum`.
pub mod mempool_message {
    /// The variants.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Sum {
        /// Transactions.
        #[prost(message, tag = "1")]
        Txs(super::Txs),
    }
}

/// `tendermint.consensus.NewRoundStep`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NewRoundStep {
    /// Height.
    #[prost(int64, tag = "1")]
    pub height: i64,
    /// Round.
    #[prost(int32, tag = "2")]
    pub round: i32,
    /// Step (1 = NewHeight).
    #[prost(uint32, tag = "3")]
    pub step: u32,
    /// Seconds since the round started.
    #[prost(int64, tag = "4")]
    pub seconds_since_start_time: i64,
    /// The last commit's round.
    #[prost(int32, tag = "5")]
    pub last_commit_round: i32,
}

/// `tendermint.consensus.Message`, only the `NewRoundStep` variant.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConsensusMessage {
    /// The variant.
    #[prost(oneof = "consensus_message::Sum", tags = "1")]
    pub sum: Option<consensus_message::Sum>,
}

/// `tendermint.consensus.Message.sum` (the variant we send).
pub mod consensus_message {
    /// The variants.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Sum {
        /// A peer's new round step.
        #[prost(message, tag = "1")]
        NewRoundStep(super::NewRoundStep),
    }
}

/// Encodes `txs` as a mempool message.
#[must_use]
pub fn encode_txs(txs: Vec<Bytes>) -> Bytes {
    let m = MempoolMessage {
        sum: Some(mempool_message::Sum::Txs(Txs { txs })),
    };
    m.encode_to_vec().into()
}

/// Decodes a mempool message; what CometBFT refuses (bad protobuf, no variant, no
/// transaction) is an error.
pub fn decode_txs(bytes: &[u8]) -> Result<Vec<Bytes>, &'static str> {
    match MempoolMessage::decode(bytes) {
        Ok(MempoolMessage {
            sum: Some(mempool_message::Sum::Txs(Txs { txs })),
        }) if !txs.is_empty() => Ok(txs),
        Ok(MempoolMessage { sum: Some(_) }) => Err("empty txs"),
        Ok(MempoolMessage { sum: None }) => Err("unknown mempool message"),
        Err(_) => Err("undecodable mempool message"),
    }
}

/// The `NewRoundStep` the reactor sends to each new peer on channel 0x20.
#[must_use]
pub fn new_round_step(height: i64) -> Bytes {
    let m = ConsensusMessage {
        sum: Some(consensus_message::Sum::NewRoundStep(NewRoundStep {
            height: height.max(2),
            round: 0,
            step: 1,
            seconds_since_start_time: 0,
            last_commit_round: 0,
        })),
    };
    m.encode_to_vec().into()
}

/// The reactor's inboxes, registered on a builder before `start()`.
#[derive(Debug)]
pub struct Inboxes {
    mempool: Inbox,
    state: Inbox,
}

/// Registers the mempool channel (0x30) and the consensus state channel (0x20).
pub fn register<R: Runtime>(builder: &mut NodeBuilder<R>) -> Inboxes {
    let mut mempool = ChannelDescriptor::new(MEMPOOL, 5);
    mempool.send_queue_capacity = 128;
    mempool.recv_message_capacity = 1 << 20;
    let mut state = ChannelDescriptor::new(STATE, 6);
    state.send_queue_capacity = 100;
    state.recv_message_capacity = 1 << 20;
    Inboxes {
        mempool: builder.reactor(mempool, 1024),
        state: builder.reactor(state, 64),
    }
}

/// Remembers the last [`CACHE`] transactions seen.
#[derive(Debug, Default)]
struct Seen {
    set: HashSet<Bytes>,
    order: VecDeque<Bytes>,
}

impl Seen {
    /// True if `tx` is new.
    fn insert(&mut self, tx: &Bytes) -> bool {
        if !self.set.insert(tx.clone()) {
            return false;
        }
        self.order.push_back(tx.clone());
        if self.order.len() > CACHE
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// Runs the reactor until the node stops: transactions from `local` are gossiped to every
/// peer; each new transaction from a peer goes to `received` and to every other peer.
pub async fn run(
    node: Handle,
    inboxes: Inboxes,
    height: i64,
    mut local: mpsc::UnboundedReceiver<Bytes>,
    received: mpsc::UnboundedSender<(NodeId, Bytes)>,
) {
    let Inboxes { mempool, state } = inboxes;
    let (mut mempool, mut state) = (mempool.fuse(), state.fuse());
    let mut seen = Seen::default();
    loop {
        select! {
            ev = mempool.next() => match ev {
                Some(ReactorEvent::PeerUp(up)) => {
                    if up.info.channels.contains(&STATE) {
                        let _ = node.send_wait(up.peer, STATE, new_round_step(height)).await;
                    }
                }
                Some(ReactorEvent::Message(from, bytes)) => match decode_txs(&bytes) {
                    Err(why) => {
                        let _ = node.ban(from, why, BAN).await;
                    }
                    Ok(txs) => {
                        for tx in txs.into_iter().filter(|tx| seen.insert(tx)) {
                            let _ = received.unbounded_send((from, tx.clone()));
                            let _ = node.broadcast_except(MEMPOOL, encode_txs(vec![tx]), from).await;
                        }
                    }
                },
                Some(_) => {}
                None => return,
            },
            // Consensus messages are read (so the peer never stalls) and ignored.
            ev = state.next() => if ev.is_none() { return },
            tx = local.next() => if let Some(tx) = tx && seen.insert(&tx) {
                let _ = node.broadcast(MEMPOOL, encode_txs(vec![tx])).await;
            },
        }
    }
}
