//! # cometmesh-driver
//!
//! The driving loop of a cometmesh node, written once and generic over a small [`Runtime`]
//! trait, so that `cometmesh-tokio` and `cometmesh-async-std` are only runtime glue.
//!
//! One task owns the sans-IO [`Engine`](cometmesh_core::engine::Engine) (no
//! `Arc<Mutex<Engine>>`). Around it:
//! - a listener task accepts TCP connections and hands them to the engine task, which admits
//!   them with `Engine::accept` (a refused socket is closed);
//! - dials run as tasks with the engine's dial timeout;
//! - per connection, one reader task and one writer task, joined to the engine task by bounded
//!   channels: the reader reports `Input::Received` (and stops reading while the engine does
//!   not want more), the writer reports the bytes it flushed as `Input::Sent`, and end of file
//!   or errors become `Input::Closed`;
//! - one timer, reset from `Engine::poll_timeout()` after every wake; `now` is read once per
//!   wake;
//! - the address book is loaded at start and saved atomically on change (debounced) and at
//!   shutdown ([`NodeBuilder::addr_book_path`]).
//!
//! Applications talk to the node through a cloneable [`Handle`]: `send`, `try_send` (not
//! async), `send_wait` (waits for room), `send_timeout`, `broadcast`, `broadcast_except`,
//! `ban`, `disconnect`, `mark_good`, `dial`, peers with their NodeInfo and traffic, and
//! graceful shutdown (peers disconnected, book saved, tasks joined). Reactors and application
//! channels are registered on the [`NodeBuilder`], before `start()`.
//!
//! # Reactors
//!
//! [`NodeBuilder::reactor`] registers a channel and returns its [`Inbox`], a bounded queue of
//! [`ReactorEvent`]s (a `Stream`, and [`Inbox::try_recv`] for non-async code). Guarantees:
//!
//! - **Lossless.** Every message a peer sends on the channel while it is up is delivered,
//!   unless *we* drop the peer (`ban`, `disconnect`, a ping timeout, a protocol error): then
//!   the messages it sent that had not reached the inbox yet are discarded with it (counted in
//!   `Counters::messages_discarded`), as CometBFT does when it stops a peer. When the *peer*
//!   closes the connection, everything it sent before is delivered first.
//! - **Ordered.** Per inbox: a peer's `PeerUp` (NodeInfo, direction, persistent flag) comes
//!   before its first message, its messages come in the order it sent them, and its
//!   `PeerDown` (with the reason) comes after its last message. Every inbox sees every peer.
//! - **Backpressure.** At most `window` messages wait in an inbox. A message that finds it
//!   full is held by the engine with its connection, and that connection is not read again
//!   until all it holds is delivered: the peer's TCP stream stalls (like a blocking
//!   `Receive` in CometBFT) and its sends back up. A stalled peer's messages on *other*
//!   channels already read keep flowing if those channels have room, and other peers keep
//!   flowing until they too have a message for the full inbox. Note that a stalled peer's
//!   pongs are not read either: a reactor that stalls a peer for longer than the pong
//!   timeout loses that peer, as in CometBFT.
//! - **Bounded memory.** Per inbox: `window` messages (plus lifecycle items, two per
//!   connection). Per connection: what the engine holds for it, at most what the reader had
//!   in flight when the stall began (`read_window` reads of at most 64 KiB, by default
//!   4 × 64 KiB) plus one message being reassembled; `Engine::held()` counts it.
//! - **A dropped inbox** makes the node discard that channel's messages from then on; other
//!   channels and peers are not affected.
//! - **Cheap.** The reactor returns room in batches of a quarter window; that is the only
//!   time it wakes the engine task. No task or allocation per message beyond the payload.
//!
//! The same windows exist in the bare core (`Engine::set_delivery_window`,
//! `Engine::consumed`, `Engine::wants_read`) and in the simulator.
//!
//! [`Handle::events`] is the other, **lossy monitoring stream** (a bounded broadcast
//! [`EventStream`]: a subscriber that lags loses events, the node never buffers more). It
//! carries lifecycle, dial and book events and the messages of channels registered with
//! [`NodeBuilder::channel`] (no reactor); use it for dashboards, not for protocol logic.
//!
//! # Runtimes
//!
//! A [`Runtime`] is a few dozen lines: spawn, spawn_blocking, one resettable timer, and TCP
//! connect/bind/accept yielding `futures-io` halves. `cometmesh-tokio` and
//! `cometmesh-async-std` are such impls plus a `builder()`; the repository's loopback suite
//! also runs on smol's parts (`tests/tests/loopback_smol.rs`) with an impl written in the test.
//!
//! The driver reads the time only through [`Runtime::now`], so a runtime with virtual time
//! drives it entirely: the repository's `cometmesh_tests::virtual_time` runtime (tokio's paused
//! clock and an in-memory network) tests the driver's deadlines, lingering closes, `send_wait`
//! parking, read pausing and book saving deterministically (`tests/tests/virtual_driver.rs`).
//!
//! # Bounded memory
//!
//! Every queue is bounded: commands (256), IO results into the engine task (1024 plus one
//! slot per IO task), each writer (64 transmits; beyond that the driver keeps the engine's
//! transmits, which the engine's per-connection send budget bounds), each reader (4 reads in
//! flight, and none while the engine's receive rate limit holds data), each event
//! subscriber (1024 by default), parked `send_wait`s (4096), each reactor inbox (its
//! window).

#![forbid(unsafe_code)]

mod book_saver;
mod command;
mod driver;
mod events;
mod io_tasks;
mod node;
pub mod persist;
mod reactor;
mod resolve;
mod runtime;
mod sends;
pub mod shared;
mod slots;
mod status;

pub use events::EventStream;
pub use node::{Handle, Node, NodeBuilder, NodeError, StartError};
pub use reactor::{Inbox, PeerUp, ReactorEvent, TryRecvError};
pub use resolve::{Resolver, SystemResolver};
pub use runtime::{BoxFuture, Runtime};
pub use shared::{PortTask, SharedPort};
pub use status::{NodeStatus, PeerStats, PeerStatus};

pub use cometmesh_core as core;
pub use cometmesh_core::addr::NetAddr;
pub use cometmesh_core::conn::{ChannelStats, ConnStats};
pub use cometmesh_core::engine::{
    BanOutcome, ChannelDescriptor, ConnFilter, DisconnectReason, EngineConfig, Event,
    FilterRefusal, HeldStats, PeerFilter, SendError,
};
pub use cometmesh_core::identity::NodeKey;
pub use cometmesh_core::{ChannelId, ConnId, NodeId};
