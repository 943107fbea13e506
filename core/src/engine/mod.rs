//! The engine: Switch, peer life cycle and PEX as one sans-IO state machine (spec 5, 7, 8).
//!
//! One [`Engine`] owns every connection, the peer table, the channels, the PEX reactor and the
//! address book. It does no IO: the caller (an adapter, the simulator, a test) feeds it inputs
//! and carries out its outputs.
//!
//! # The loop contract
//!
//! 1. After **every** call that changes the engine — [`Engine::handle_input`],
//!    [`Engine::handle_timeout`], [`Engine::accept`], [`Engine::accept_routed`] (a connection
//!    a shared port's [`Acceptor`](crate::conn::Acceptor) authenticated and routed to this
//!    chain), [`Engine::dial`], [`Engine::send`],
//!    [`Engine::broadcast`], [`Engine::disconnect`] — drain [`Engine::poll_output`] until it
//!    returns `None`, carrying out each [`Output`] in order:
//!    - `Transmit { conn, data }`: write `data` to the socket of `conn`; when bytes are flushed,
//!      report them with [`Input::Sent`] (this returns send credit; without it transmits stop);
//!    - `Dial { conn, addr }`: open TCP to `addr`, then report [`Input::Connected`] or
//!      [`Input::DialFailed`];
//!    - `DialName { conn, name }` (seeds and persistent peers given by DNS name): resolve
//!      `name`, report [`Input::Resolved`], then as `Dial`;
//!    - `Close { conn }`: write the transmits already handed out for `conn`, shut the socket,
//!      then report [`Input::Closed`];
//!    - `Event(event)`: hand it to the application.
//! 2. Then sleep until [`Engine::poll_timeout`] (or until IO or a command arrives) and call
//!    [`Engine::handle_timeout`] with the current time. While outputs are queued,
//!    `poll_timeout` returns the last `now` the engine saw, so a loop that forgot to drain does
//!    not sleep.
//!
//! Every connection id gets exactly one terminal input: `DialFailed`, or `Closed` (after
//! `Connected` or after an accept). After that the id is forgotten and inputs for it return
//! [`EngineError::UnknownConn`], which an adapter may ignore (a read that raced the close).
//!
//! A peer's misbehaviour never makes a call fail: it becomes [`Event::PeerDown`] with a
//! [`DisconnectReason`] (and, when provable, a ban). `Err` means the caller misused the API.
//!
//! ```no_run
//! # use std::time::Instant;
//! # use cometmesh_core::engine::{Engine, EngineConfig, Input, Output, Event};
//! # use cometmesh_core::identity::NodeKey;
//! # fn io_wait(_deadline: Option<Instant>) -> Option<Input> { None }
//! # fn write(_c: cometmesh_core::ConnId, _d: bytes::Bytes) {}
//! # fn connect(_c: cometmesh_core::ConnId, _a: std::net::SocketAddr) {}
//! # fn shut(_c: cometmesh_core::ConnId) {}
//! # fn app(_e: Event) {}
//! let mut config = EngineConfig::default();
//! config.chain_id = "test-chain".into();
//! let mut engine = Engine::new(config, NodeKey::from_seed([1; 32]), [2; 32], Instant::now(), 1_700_000_000)?;
//! loop {
//!     while let Some(out) = engine.poll_output() {
//!         match out {
//!             Output::Transmit { conn, data } => write(conn, data),
//!             Output::Dial { conn, addr } => connect(conn, addr),
//!             Output::Close { conn } => shut(conn),
//!             Output::Event(event) => app(event),
//!             _ => {}
//!         }
//!     }
//!     match io_wait(engine.poll_timeout()) {
//!         Some(input) => { let _ = engine.handle_input(Instant::now(), input); }
//!         None => engine.handle_timeout(Instant::now()),
//!     }
//! }
//! # Ok::<(), cometmesh_core::engine::ConfigError>(())
//! ```
//!
//! # Reactors: delivery windows, send edges, bans, filters
//!
//! - [`Engine::set_delivery_window`] makes a channel flow-controlled: at most `window` of its
//!   messages are out as [`Event::Message`] and not yet reported with [`Engine::consumed`]. A
//!   message beyond that is held with its connection, which then stops wanting reads
//!   ([`Engine::wants_read`]) until all it holds is delivered: the peer's TCP stream stalls.
//!   Messages of one peer on one channel keep their order; another channel with room keeps
//!   flowing. When the socket of a stalled peer closes, its held messages are still delivered
//!   and `PeerDown` comes after the last; when *we* drop the peer (ban, disconnect, timeout,
//!   protocol error) its held messages are discarded (`Counters::messages_discarded`).
//!   [`Engine::held`] counts what is held: per connection at most what the adapter read after
//!   `wants_read` turned false. See [`delivery`].
//! - A send refused as full marks its (peer, channel); when that queue has room again the
//!   engine emits [`Event::SendReady`] once.
//! - [`Engine::ban`] (CometBFT's `StopPeerForError`), [`Engine::mark_good`],
//!   [`Engine::broadcast_except`] (per-peer outcomes), and the admission filters
//!   [`Engine::set_conn_filter`] / [`Engine::set_peer_filter`] (pure functions run by the
//!   engine: refused with [`Refused::Filtered`], [`DialError::Filtered`] or
//!   [`DialFailReason::Filtered`]).
//!
//! # Policies
//!
//! [`AddrBook::mark_good`]: crate::addrbook::AddrBook::mark_good
//!
//! - **Duplicates.** Two live connections to one node id (for example a simultaneous cross-dial
//!   with `allow_duplicate_ip = true`) end as one: if they were dialled by different sides, the
//!   one dialled by the **lower node id** (byte order) survives; if by the same side, the newer
//!   one survives (the older is presumed dead). Both sides apply the same rule, so they keep the
//!   same TCP connection. A replaced peer is reported as `PeerDown { reason: Duplicate }` then
//!   `PeerUp` on the new connection.
//! - **Limits.** Inbound and outbound peers are counted separately; `unconditional_peer_ids` are
//!   not counted. Admission refuses inbound connections beyond `max_num_inbound_peers +
//!   |unconditional| + |persistent|` open at once, banned IPs and, unless `allow_duplicate_ip`, an IP that
//!   already has a peer; after the handshake an inbound peer beyond `max_num_inbound_peers` is
//!   dropped, except a persistent peer, which evicts the newest ordinary inbound peer.
//!   Automatic dials keep `outbound + dialing ≤ max_num_outbound_peers`; no two automatic
//!   outbound peers share an address group (G7).
//! - **Persistent peers** are dialled at start after `U[0, 3 s)` and redialled forever on the
//!   schedule documented in [`backoff`]; they are never banned by the engine and always admitted.
//! - **Seed mode** crawls: it dials addresses from the book (never-reached ones first, then a
//!   random selection; each at most every `min_time_between_crawls`), asks for addresses and
//!   holds the connection for `seed_disconnect_wait`; inbound peers get one answer, held 1 s
//!   after it (a CometBFT node whose reply gave it nothing to dial falls back to its seeds at
//!   once, and must find us still connected rather than dial us again), then the seed hangs
//!   up, and crawls the node 0.5 s after its connection is gone. A hang-up is graceful (the
//!   reply is flushed first) but takes at most 10 s. A node we crawled that asks again too
//!   soon is ignored, not banned (CometBFT v0.39+ asks a random peer whenever a seed's
//!   addresses arrive, so it may ask us twice in a row). An inbound peer that has not asked
//!   within 1.5 s of its handshake is hung up ([`DisconnectReason::SeedUnasked`]): one that
//!   dialled us as an ordinary peer would hold an inbound slot for a day. Details:
//!   `switch/seed_reply.rs`.
//! - **Vetted seed replies.** A seed's PEX reply holds only addresses it reached itself within
//!   `seed_vetted_window` (24 h): a connection *we dialled* (a crawl, or any dial) completed
//!   the handshake, which proves the node listens there and is on our chain. The one record
//!   of that is the address book's `last_success`, set by [`AddrBook::mark_good`] when such a
//!   connection comes up; an address whose later dial failed is out until reached again, and
//!   one we dialled and still hold (crawled connections are held) counts as reached now. An
//!   inbound peer's announced address is not vetted: the crawler dials addresses never
//!   reached first (newest first), as soon as the node's own connection is gone, and only
//!   then serves it. A reply that would be empty waits (2 s at most) while the crawler tests
//!   what the seed knows but never reached, so that a young seed does not answer empty. The reply is most recently reached first, as
//!   large as CometBFT's rule gives for the vetted set (23 %, at least `min_selection`, at most
//!   250), taken from the address groups in turns so that no group crowds out the others.
//!   A zero window is CometBFT's policy: a random selection of the whole book, tested or not.
//!   On a simulated network where half the addresses are dead, a node bootstrapping from a
//!   vetted seed reaches its outbound target tens of times sooner (`bench/README.md`).
//! - **Names.** Seeds and persistent peers given by DNS name ([`EngineConfig::add_seed`],
//!   [`EngineConfig::add_persistent_peer`]) are dialled with [`Output::DialName`]: the adapter
//!   resolves the name at every dial and reports where it connects with [`Input::Resolved`].
//! - **Bootstrapping from a seed.** A seed that answered us is about to hang up: the
//!   ensure-peers pass does not count it against the outbound target, so the addresses it gave
//!   are dialled at once (as CometBFT does, #2093) rather than a period later. We hang up on a
//!   node we dialled as a seed ourselves once its reply is in (a seed's linger is for CometBFT
//!   nodes). With `early_ensure_passes` (default) a node short of its outbound target runs a
//!   pass 0.5 s after a peer's PEX addresses arrive and 2, 4, 8, 16 s after a short pass
//!   (seeds are redialled by those only if none answered within the period), instead of
//!   waiting 30 s per step. Each ensure-peers period is drawn from `[3p/4, 5p/4)`, so that
//!   nodes started together and refused by a full seed do not return in one wave every
//!   period. A seed's crawler dials the next never-reached address as soon as
//!   a dial ends, and equally recent vetted addresses are served in a per-reply random order.
//!   1 000 nodes starting from five young seeds reach their target in 31 s (vetted) and 7 s
//!   (CometBFT policy) of simulated time, against 241 s and 122 s before (`bench/README.md`).
//! - **PEX** (spec 5) runs on channel 0x00: one outstanding request per peer; requests faster
//!   than every `ensure_peers_period / 3` (from the third on), unsolicited or oversized replies
//!   and malformed messages ban the peer (24 h) and disconnect it with
//!   [`DisconnectReason::Pex`]. Failed dials never ban (G14). Sending on 0x00 through
//!   [`Engine::send`] bypasses the reactor (meant for tests).
//! - **Feelers** (G11): about every 2 min one short extra outbound connection tests the
//!   incumbent of a tried collision or a new entry, then hangs up; collisions are resolved
//!   first, and a tried incumbent we are connected to is never displaced. See [`feeler`].
//! - **Anchors** (G12): [`Engine::anchors`] names up to two outbound peers connected for
//!   10 min or more, to be saved at shutdown; [`Engine::dial_anchors`] dials them first at the
//!   next start. See [`anchors`].
//! - **Inbound protection** (G13): inbound attempts are rate-limited per IP and per address
//!   group before the handshake (`inbound_attempts_per_ip_per_minute`,
//!   `inbound_attempts_per_group_per_minute`); when every inbound slot holds a peer, a newcomer
//!   may evict one ordinary inbound peer of the most-represented group, never a protected one
//!   (distinct groups, recently useful, longest-connected). See [`inbound`].
//! - **Bans** live in one list, the address book's, which is persisted with it: admission and
//!   every dial read it, so a ban survives a restart. A ban covers the node id, and the IP too
//!   unless `allow_duplicate_ip` (many honest nodes may then share an IP): see `docs/bans.md`.

pub mod anchors;
pub mod backoff;
mod config;
mod conns;
pub mod delivery;
pub mod feeler;
mod filter;
pub mod inbound;
mod peers;
mod persistent;
pub mod pex;
mod switch;
mod timers;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

pub use config::{ConfigError, DialName, EngineConfig};
pub use delivery::HeldStats;
pub use filter::{ConnFilter, FilterRefusal, PeerFilter};
pub use peers::{Counters, Origin, PeerInfo, PeerState};
pub use pex::PexViolation;
pub use switch::Engine;

use crate::addr::NetAddr;
pub use crate::conn::{ChannelDescriptor, CloseReason, ConnStats, Direction, NodeInfo};
use crate::ids::{ChannelId, ConnId, NodeId};

/// Something that happened on a socket, reported by the adapter.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Input {
    /// Our `Output::Dial` for `conn` succeeded: TCP is up.
    Connected {
        /// The connection.
        conn: ConnId,
    },
    /// The name of our `Output::DialName` for `conn` resolved to `addr`, where the adapter
    /// now connects (report before `Connected`; the engine records it as the peer's address).
    Resolved {
        /// The connection.
        conn: ConnId,
        /// The address chosen among those the name resolved to.
        addr: SocketAddr,
    },
    /// Our `Output::Dial` (or `DialName`) for `conn` failed.
    DialFailed {
        /// The connection.
        conn: ConnId,
        /// What went wrong.
        error: DialFailure,
    },
    /// Bytes arrived (any chunking).
    Received {
        /// The connection.
        conn: ConnId,
        /// The bytes, in order.
        bytes: Bytes,
    },
    /// `len` bytes of earlier transmits were flushed to the socket (returns send credit).
    Sent {
        /// The connection.
        conn: ConnId,
        /// How many bytes.
        len: usize,
    },
    /// The socket is closed (by the remote, an IO error, or after our `Output::Close`).
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why.
        cause: CloseCause,
    },
}

/// Why a TCP dial failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialFailure {
    /// The remote refused the connection.
    #[error("connection refused")]
    Refused,
    /// The dial timed out in the adapter.
    #[error("dial timed out")]
    TimedOut,
    /// No route to the host or network.
    #[error("host unreachable")]
    Unreachable,
    /// Any other IO error.
    #[error("dial io error")]
    Io,
    /// The DNS name of an `Output::DialName` did not resolve.
    #[error("name did not resolve")]
    Unresolved,
}

/// Why a socket closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseCause {
    /// The remote closed cleanly.
    #[error("closed by the remote")]
    Eof,
    /// The remote reset the connection.
    #[error("connection reset")]
    Reset,
    /// A read or write error.
    #[error("io error")]
    Io,
    /// We closed it (after `Output::Close`).
    #[error("closed locally")]
    Local,
}

/// Something for the adapter to do. Exhaustive: every output is an obligation of the loop,
/// so a new one must break the adapters' matches rather than be ignored by a wildcard.
// Every output is moved through the engine's queue and the driver's, so its size is paid per
// message: the rare variants box their large payloads (`Event::PeerUp`'s NodeInfo,
// `Event::DialFailed`'s address), which keeps an `Output` at 80 bytes (it was 248).
#[derive(Clone, Debug)]
pub enum Output {
    /// Write `data` to the connection.
    Transmit {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        data: Bytes,
    },
    /// Open a TCP connection to `addr`; report the result for `conn`.
    Dial {
        /// The id the engine gave this connection.
        conn: ConnId,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Resolve `name` (the adapter's resolver, anew at every dial), report `Input::Resolved`
    /// with the address chosen, then open TCP to it as for `Dial`.
    DialName {
        /// The id the engine gave this connection.
        conn: ConnId,
        /// The DNS name and port.
        name: DialName,
    },
    /// Flush what was handed out, then close the socket and report `Input::Closed`.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// An event for the application.
    Event(Event),
}

/// Something the application may want to know.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A peer completed the handshake and was admitted.
    PeerUp {
        /// Its node id.
        peer: NodeId,
        /// Its connection.
        conn: ConnId,
        /// The NodeInfo it sent, shared with the engine's [`PeerInfo`] (behind a pointer: every
        /// output moved through the engine's queues is as large as its largest variant, and a
        /// NodeInfo is 216 bytes; `Message` is the hot one).
        info: Arc<NodeInfo>,
        /// Who dialled.
        direction: Direction,
        /// Whether it is one of our persistent peers (never banned, always redialled).
        persistent: bool,
    },
    /// A peer that was up went away.
    PeerDown {
        /// Its node id.
        peer: NodeId,
        /// Why.
        reason: DisconnectReason,
    },
    /// A complete message arrived on an application channel.
    Message {
        /// From whom.
        peer: NodeId,
        /// On which channel.
        channel: ChannelId,
        /// The message.
        payload: Bytes,
    },
    /// A dial did not produce a peer.
    DialFailed {
        /// The address dialled (boxed for the same reason as `PeerUp`'s NodeInfo).
        addr: Box<NetAddr>,
        /// Why.
        reason: DialFailReason,
    },
    /// An inbound connection ended before its peer was admitted (a failed handshake, another
    /// chain, a limit reached after the handshake, ...).
    InboundFailed {
        /// The remote socket address.
        remote: SocketAddr,
        /// Why.
        reason: DialFailReason,
    },
    /// The address book changed; persist `addr_book().encode()` when convenient.
    AddrBookDirty,
    /// A send to `peer` on `channel` was refused as full earlier, and the channel's queue has
    /// room again (an edge: once per refusal streak).
    SendReady {
        /// The peer.
        peer: NodeId,
        /// The channel.
        channel: ChannelId,
    },
}

/// What [`Engine::ban`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BanOutcome {
    /// The peer is banned (its id, and its IP unless `allow_duplicate_ip`) and disconnected.
    Banned,
    /// The peer is persistent: it was disconnected (and will be redialled), not banned.
    Persistent,
    /// No such peer is up; nothing was done.
    NotConnected,
}

/// Why a peer went down.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The connection failed or the peer broke the MConnection protocol.
    #[error("connection: {0}")]
    Conn(CloseReason),
    /// The socket closed.
    #[error("socket: {0}")]
    Io(CloseCause),
    /// A PEX protocol violation; the peer is banned.
    #[error("pex: {0}")]
    Pex(PexViolation),
    /// Another connection to the same peer was kept instead.
    #[error("duplicate connection")]
    Duplicate,
    /// Evicted to make room for a persistent peer, or for an inbound newcomer when the inbound
    /// slots are full (G13).
    #[error("evicted for a persistent peer")]
    Evicted,
    /// The application called `disconnect`.
    #[error("disconnected locally")]
    Local,
    /// Seed mode: the exchange is over.
    #[error("seed hung up after the address exchange")]
    SeedDone,
    /// Seed mode: connected for longer than `seed_disconnect_wait`.
    #[error("seed connection expired")]
    SeedExpired,
    /// Seed mode: an inbound peer did not ask for addresses within 1.5 s of its handshake (it
    /// dialled the seed as an ordinary peer and would hold an inbound slot that newcomers need).
    #[error("seed hung up on an inbound peer that did not ask")]
    SeedUnasked,
    /// The application banned (or, for a persistent peer, only disconnected) it.
    #[error("banned: {0}")]
    Banned(String),
}

/// Why a dial (or an inbound handshake) did not produce a peer.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialFailReason {
    /// TCP failed.
    #[error("dial: {0}")]
    Io(DialFailure),
    /// TCP did not connect within `dial_timeout`.
    #[error("dial timed out")]
    Timeout,
    /// The handshake failed or the connection closed before the peer was up.
    #[error("handshake: {0}")]
    Handshake(CloseReason),
    /// The socket closed during the handshake.
    #[error("closed during handshake: {0}")]
    Closed(CloseCause),
    /// The remote is ourselves.
    #[error("connected to ourselves")]
    SelfConnection,
    /// We already have a connection to that peer, and it was kept.
    #[error("duplicate connection")]
    Duplicate,
    /// Another peer already uses that IP.
    #[error("duplicate ip")]
    DuplicateIp,
    /// The inbound limit is reached.
    #[error("too many inbound peers")]
    InboundLimit,
    /// The peer is banned.
    #[error("peer is banned")]
    Banned,
    /// The application cancelled it with `disconnect`.
    #[error("cancelled")]
    Cancelled,
    /// The peer filter refused the authenticated peer.
    #[error("{0}")]
    Filtered(FilterRefusal),
}

/// Why an inbound connection was refused at admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The remote IP is banned.
    #[error("remote ip is banned")]
    Banned,
    /// Too many inbound connections are open.
    #[error("too many inbound connections")]
    TooManyInbound,
    /// Another connection from that IP exists.
    #[error("duplicate ip")]
    DuplicateIp,
    /// Too many connection attempts from that IP or its address group (G13, see
    /// [`inbound`]).
    #[error("too many connection attempts from this ip or its group")]
    RateLimited,
    /// The connection filter refused the remote address.
    #[error("{0}")]
    Filtered(FilterRefusal),
    /// A connection routed by a shared port belongs to another chain.
    #[error("peer belongs to another chain")]
    OtherChain,
}

/// Why [`Engine::dial`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The address is our own.
    #[error("cannot dial ourselves")]
    SelfDial,
    /// The peer is already connected.
    #[error("already connected")]
    AlreadyConnected,
    /// The peer is already being dialled.
    #[error("already dialing")]
    AlreadyDialing,
    /// Another peer already uses that IP.
    #[error("duplicate ip")]
    DuplicateIp,
    /// The peer is banned.
    #[error("peer is banned")]
    Banned,
    /// The connection filter refused the address.
    #[error("{0}")]
    Filtered(FilterRefusal),
}

/// Why [`Engine::send`] refused a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No such connected peer.
    #[error("unknown peer")]
    UnknownPeer,
    /// The channel is not registered.
    #[error("unknown channel")]
    UnknownChannel,
    /// The peer did not advertise the channel.
    #[error("peer does not accept this channel")]
    NotAdvertisedByPeer,
    /// The channel's send queue is full; the message is handed back.
    #[error("send queue full")]
    Full(Bytes),
    /// The connection is closing.
    #[error("connection closed")]
    Closed,
}

/// Misuse of the engine API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The connection id is unknown (never issued, or already closed).
    #[error("unknown connection {0}")]
    UnknownConn(ConnId),
    /// The input does not fit the connection's state (e.g. bytes before `Connected`).
    #[error("unexpected {input} for {conn}")]
    Unexpected {
        /// The connection.
        conn: ConnId,
        /// The input kind.
        input: &'static str,
    },
}
