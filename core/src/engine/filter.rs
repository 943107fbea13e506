//! Admission filters (CometBFT's `ConnFilters` and `PeerFilters`): pure functions the engine
//! runs itself, so admission stays sans-IO and deterministic.

use std::net::SocketAddr;

use crate::conn::NodeInfo;

/// Why a filter refused a connection or a peer: a static, typed reason that both the refusal
/// error and the logs carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("refused by filter: {0}")]
pub struct FilterRefusal(pub &'static str);

/// A connection filter: sees the remote address before the handshake (inbound and dials).
pub type ConnFilter = Box<dyn Fn(SocketAddr) -> Result<(), FilterRefusal> + Send + Sync>;

/// A peer filter: sees the authenticated NodeInfo and the remote address after the handshake.
pub type PeerFilter = Box<dyn Fn(&NodeInfo, SocketAddr) -> Result<(), FilterRefusal> + Send + Sync>;
