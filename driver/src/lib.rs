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
//! Applications talk to the node through a cloneable [`Handle`]: send (or `send_wait`, which
//! waits for room), broadcast, dial, disconnect, peers with their NodeInfo and traffic, events
//! (a bounded broadcast [`EventStream`]: a subscriber that lags loses events, the node never
//! buffers more) and graceful shutdown (peers disconnected, book saved, tasks joined).
//! Application channels are registered on the [`NodeBuilder`].
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
//! subscriber (1024 by default), parked `send_wait`s (4096).

#![forbid(unsafe_code)]

mod driver;
mod events;
mod node;
pub mod persist;
mod runtime;

pub use events::EventStream;
pub use node::{
    Handle, Node, NodeBuilder, NodeError, NodeStatus, PeerStats, PeerStatus, StartError,
};
pub use runtime::{BoxFuture, Runtime};

pub use cometmesh_core as core;
pub use cometmesh_core::addr::NetAddr;
pub use cometmesh_core::conn::{ChannelStats, ConnStats};
pub use cometmesh_core::engine::{ChannelDescriptor, EngineConfig, Event, SendError};
pub use cometmesh_core::identity::NodeKey;
pub use cometmesh_core::{ChannelId, ConnId, NodeId};
