//! A small blocking driver: one sans-IO [`PeerConnection`] over a real `std::net::TcpStream`,
//! its clock fed from `Instant::now()`. Used by the interop tests to talk to a real CometBFT node
//! without any runtime; every wait is bounded by a caller's deadline.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cometmesh_core::ChannelId;
use cometmesh_core::conn::{
    ChannelDescriptor, CloseReason, ConnEvent, ConnectionConfig, Direction, NodeInfo,
    PeerConnection, SendError,
};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::ids::NodeId;

/// The wall clock (allowed outside the core).
#[allow(clippy::disallowed_methods)]
#[must_use]
pub fn now() -> Instant {
    Instant::now()
}

/// How a connection ended, as the driver saw it.
#[derive(Debug)]
pub enum End {
    /// The state machine closed the connection with this reason.
    Closed(CloseReason),
    /// The peer closed the TCP connection (EOF or reset) while the state machine was still open.
    PeerHangUp(std::io::Error),
}

/// What [`BlockingConn::run_until`] stopped on.
// Returned once per wait, matched in place by tests: boxing the event only adds noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Stop {
    /// The predicate accepted this event.
    Event(ConnEvent),
    /// The deadline passed first.
    Deadline,
    /// The connection ended first.
    Ended,
}

/// One `PeerConnection` on one TCP socket.
#[derive(Debug)]
pub struct BlockingConn {
    stream: TcpStream,
    conn: PeerConnection,
    /// Every event seen so far, in order.
    pub events: Vec<ConnEvent>,
    pending: VecDeque<ConnEvent>,
    end: Option<End>,
    /// Wire bytes received from the peer.
    pub bytes_in: u64,
}

/// What our side announces and how it behaves.
#[derive(Clone, Debug)]
pub struct Local {
    /// Our node key.
    pub key: NodeKey,
    /// Our NodeInfo.
    pub info: Arc<NodeInfo>,
    /// Our channels.
    pub channels: Arc<[ChannelDescriptor]>,
    /// Our connection settings.
    pub config: Arc<ConnectionConfig>,
}

impl Local {
    /// A node with only the PEX channel, chain `chain`, listen address `listen`, default
    /// connection settings.
    #[must_use]
    pub fn pex_only(key: NodeKey, chain: &str, listen: &str, moniker: &str) -> Local {
        let channels: Arc<[ChannelDescriptor]> = vec![ChannelDescriptor::pex()].into();
        let info = NodeInfo::new(
            key.node_id(),
            chain,
            listen,
            moniker,
            channels.iter().map(|c| c.id),
        );
        Local {
            key,
            info: Arc::new(info),
            channels,
            config: Arc::new(ConnectionConfig::default()),
        }
    }
}

impl BlockingConn {
    /// Dials `addr` and starts an outbound connection that expects `expected` (the dialled id).
    pub fn dial(
        local: &Local,
        addr: SocketAddr,
        expected: Option<NodeId>,
        ephemeral: [u8; 32],
    ) -> std::io::Result<BlockingConn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        Ok(Self::new(
            stream,
            local,
            Direction::Outbound,
            expected,
            ephemeral,
        ))
    }

    /// Accepts one connection on `listener` (bounded by `timeout`) and starts an inbound
    /// connection on it.
    pub fn accept(
        local: &Local,
        listener: &TcpListener,
        timeout: Duration,
        ephemeral: [u8; 32],
    ) -> std::io::Result<BlockingConn> {
        listener.set_nonblocking(true)?;
        let end = now() + timeout;
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if now() >= end {
                        return Err(std::io::Error::new(
                            ErrorKind::TimedOut,
                            "no inbound connection in time",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        Ok(Self::new(
            stream,
            local,
            Direction::Inbound,
            None,
            ephemeral,
        ))
    }

    fn new(
        stream: TcpStream,
        local: &Local,
        direction: Direction,
        expected: Option<NodeId>,
        ephemeral: [u8; 32],
    ) -> BlockingConn {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let conn = PeerConnection::new(
            now(),
            local.config.clone(),
            local.channels.clone(),
            local.info.clone(),
            &local.key,
            ephemeral,
            direction,
            expected,
        );
        BlockingConn {
            stream,
            conn,
            events: Vec::new(),
            pending: VecDeque::new(),
            end: None,
            bytes_in: 0,
        }
    }

    /// The state machine (for stats and the remote NodeInfo).
    #[must_use]
    pub fn conn(&self) -> &PeerConnection {
        &self.conn
    }

    /// How the connection ended, if it did.
    #[must_use]
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// Queues a message (it goes out on the next [`Self::run_until`]).
    pub fn send(&mut self, channel: ChannelId, msg: Bytes) -> Result<(), SendError> {
        self.conn.send(now(), channel, msg)
    }

    /// Drives the connection until `stop` accepts an event, the connection ends or `deadline`
    /// passes. Events before the accepted one are kept in [`Self::events`] too.
    pub fn run_until(
        &mut self,
        deadline: Instant,
        mut stop: impl FnMut(&ConnEvent) -> bool,
    ) -> Stop {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            self.flush();
            while let Some(ev) = self.conn.poll_event() {
                if let ConnEvent::Closed(reason) = &ev
                    && self.end.is_none()
                {
                    self.end = Some(End::Closed(reason.clone()));
                    let _ = self.stream.shutdown(std::net::Shutdown::Both);
                }
                self.events.push(ev.clone());
                self.pending.push_back(ev);
            }
            while let Some(ev) = self.pending.pop_front() {
                if stop(&ev) {
                    return Stop::Event(ev);
                }
            }
            if self.end.is_some() {
                return Stop::Ended;
            }
            let t = now();
            if t >= deadline {
                return Stop::Deadline;
            }
            let wake = self
                .conn
                .poll_timeout()
                .map_or(deadline, |w| w.min(deadline));
            if wake <= t {
                self.conn.handle_timeout(t);
                continue;
            }
            if !self.conn.wants_read() {
                std::thread::sleep(wake - t);
                self.conn.handle_timeout(now());
                continue;
            }
            let wait = (wake - t).max(Duration::from_millis(1));
            let _ = self.stream.set_read_timeout(Some(wait));
            match self.stream.read(&mut buf) {
                Ok(0) => self.hang_up(std::io::Error::new(ErrorKind::UnexpectedEof, "eof")),
                Ok(n) => {
                    self.bytes_in += n as u64;
                    self.conn.handle_received(now(), &buf[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    let t = now();
                    if self.conn.poll_timeout().is_some_and(|w| w <= t) {
                        self.conn.handle_timeout(t);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => self.hang_up(e),
            }
        }
    }

    /// Drives the connection until it is established (or ends, or `deadline`); returns the
    /// peer's NodeInfo.
    pub fn establish(&mut self, deadline: Instant) -> Result<NodeInfo, String> {
        match self.run_until(deadline, |e| matches!(e, ConnEvent::Established { .. })) {
            Stop::Event(ConnEvent::Established { remote }) => Ok(NodeInfo::clone(&remote)),
            Stop::Deadline => Err("not established before the deadline".into()),
            _ => Err(format!(
                "connection ended before establishment: {:?}",
                self.end
            )),
        }
    }

    /// Drives the connection until it ends or `deadline`; returns how it ended.
    pub fn run_to_end(&mut self, deadline: Instant) -> Option<&End> {
        let _ = self.run_until(deadline, |_| false);
        self.end.as_ref()
    }

    fn hang_up(&mut self, e: std::io::Error) {
        if self.end.is_none() {
            self.end = Some(End::PeerHangUp(e));
        }
        self.conn.close(CloseReason::Local);
        // The Closed(Local) event that follows is ours, not the peer's: keep `end` as is.
    }

    fn flush(&mut self) {
        while let Some(bytes) = self.conn.poll_transmit(now()) {
            if let Err(e) = self.stream.write_all(&bytes) {
                self.hang_up(e);
                return;
            }
            self.conn.handle_sent(now(), bytes.len());
        }
    }
}
