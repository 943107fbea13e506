//! One peer connection, sans-IO: NodeInfo exchange (spec 3) and MConnection (spec 4).
//!
//! [`PeerConnection`] runs the whole pipeline of one TCP connection: SecretConnection
//! handshake → NodeInfo exchange and checks → MConnection. Bytes, events and deadlines come out
//! of its `poll_*` methods; every input carries `now`. A misbehaving peer never produces an
//! error or a panic: the connection closes with a typed [`CloseReason`].

pub mod acceptor;
pub mod channel;
pub mod config;
pub mod connection;
pub mod error;
pub mod mconn;
pub mod nodeinfo;
pub mod ratelimit;

pub use acceptor::{Acceptor, RouteRefusal, Routed};
pub use channel::ChannelDescriptor;
pub use config::ConnectionConfig;
pub use connection::{ConnEvent, Direction, PeerConnection};
pub use error::{CloseReason, ProtocolViolation, SendError, TimeoutKind};
pub use mconn::{ChannelStats, ConnStats, MConnection};
pub use nodeinfo::{NodeInfo, NodeInfoError, ProtocolVersion};
