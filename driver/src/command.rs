//! The command protocol between a [`Handle`](crate::Handle) and the engine task: one
//! `Command` per request, each with its reply channel.

use std::time::Duration;

use bytes::Bytes;
use cometmesh_core::addr::NetAddr;
use cometmesh_core::engine::{BanOutcome, DialError, SendError};
use cometmesh_core::{ChannelId, ConnId, NodeId};
use futures::channel::oneshot;

use crate::events::EventStream;
use crate::sends::Reply;
use crate::status::{NodeStatus, PeerStatus};

/// A request from a [`Handle`](crate::Handle).
pub(crate) enum Command {
    Send {
        peer: NodeId,
        channel: ChannelId,
        payload: Bytes,
        reply: oneshot::Sender<Result<(), SendError>>,
    },
    /// Waits for room (parked), at most `timeout`; `reply` is `None` for `try_send`.
    SendWait {
        peer: NodeId,
        channel: ChannelId,
        payload: Bytes,
        timeout: Option<Duration>,
        reply: Reply,
    },
    Broadcast {
        channel: ChannelId,
        payload: Bytes,
        reply: oneshot::Sender<usize>,
    },
    BroadcastExcept {
        channel: ChannelId,
        payload: Bytes,
        except: Option<NodeId>,
        reply: oneshot::Sender<Vec<(NodeId, Result<(), SendError>)>>,
    },
    Ban {
        peer: NodeId,
        reason: String,
        duration: Duration,
        reply: oneshot::Sender<BanOutcome>,
    },
    MarkGood {
        peer: NodeId,
        reply: oneshot::Sender<bool>,
    },
    Dial {
        addr: NetAddr,
        reply: oneshot::Sender<Result<ConnId, DialError>>,
    },
    Disconnect {
        peer: NodeId,
        reply: oneshot::Sender<()>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerStatus>>,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    Subscribe {
        reply: oneshot::Sender<EventStream>,
    },
    KnownAddrs {
        reply: oneshot::Sender<Vec<NetAddr>>,
    },
    VettedAddrs {
        reply: oneshot::Sender<Vec<NetAddr>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}
