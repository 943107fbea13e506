//! Shared harness for the connection tests: two `PeerConnection`s joined by an in-memory pipe
//! that re-chunks bytes at random from a seed, on a virtual clock; and a raw peer that speaks the
//! SecretConnection by hand so tests can send anything after the handshake.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cometmesh_core::conn::{
    ChannelDescriptor, CloseReason, ConnEvent, ConnectionConfig, Direction, NodeInfo,
    PeerConnection,
};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::ids::{ChannelId, NodeId};
use cometmesh_core::secret::{Handshake, Opener, Sealer};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

pub const CHAIN: &str = "test-chain";

/// The base of the virtual clock (its value is irrelevant; only Durations are added to it).
#[allow(clippy::disallowed_methods)]
pub fn base() -> Instant {
    Instant::now()
}

pub fn key(n: u8) -> NodeKey {
    NodeKey::from_seed([n; 32])
}

/// The channels every test node registers.
pub fn channels() -> Arc<[ChannelDescriptor]> {
    let mut big = ChannelDescriptor::new(ChannelId(0x40), 5);
    big.send_queue_capacity = 1000;
    big.recv_message_capacity = 2 * 1024 * 1024;
    let mut state = ChannelDescriptor::new(ChannelId(0x20), 6);
    state.send_queue_capacity = 1000;
    state.recv_message_capacity = 1024 * 1024;
    let mut data = ChannelDescriptor::new(ChannelId(0x21), 10);
    data.send_queue_capacity = 1000;
    data.recv_message_capacity = 1024 * 1024;
    let mut low = ChannelDescriptor::new(ChannelId(0x23), 1);
    low.send_queue_capacity = 1000;
    low.recv_message_capacity = 4096;
    vec![ChannelDescriptor::pex(), state, data, low, big].into()
}

pub fn node_info(key: &NodeKey, moniker: &str) -> NodeInfo {
    NodeInfo::new(
        key.node_id(),
        CHAIN,
        "tcp://127.0.0.1:26656",
        moniker,
        channels().iter().map(|c| c.id),
    )
}

pub fn conn(
    now: Instant,
    config: &Arc<ConnectionConfig>,
    key: &NodeKey,
    info: NodeInfo,
    eph: u8,
    direction: Direction,
    expected: Option<NodeId>,
) -> PeerConnection {
    PeerConnection::new(
        now,
        config.clone(),
        channels(),
        Arc::new(info),
        key,
        [eph; 32],
        direction,
        expected,
    )
}

/// A one-way in-memory pipe that hands bytes over in random chunks.
pub struct Pipe {
    buf: BytesMut,
    pub max_chunk: usize,
}

impl Pipe {
    pub fn new() -> Self {
        Pipe {
            buf: BytesMut::new(),
            max_chunk: 4096,
        }
    }
}

/// Two connections back to back.
pub struct Pair {
    pub a: PeerConnection,
    pub b: PeerConnection,
    pub now: Instant,
    pub start: Instant,
    rng: ChaCha8Rng,
    ab: Pipe,
    ba: Pipe,
    pub events_a: Vec<ConnEvent>,
    pub events_b: Vec<ConnEvent>,
    /// Drop everything B sends (a peer that went deaf).
    pub drop_b_to_a: bool,
}

impl Pair {
    /// A (outbound, dialled B's id) and B (inbound), default config.
    pub fn new(seed: u64) -> Self {
        Self::with_config(seed, ConnectionConfig::default())
    }

    pub fn with_config(seed: u64, config: ConnectionConfig) -> Self {
        let now = base();
        let config = Arc::new(config);
        let (ka, kb) = (key(1), key(2));
        let a = conn(
            now,
            &config,
            &ka,
            node_info(&ka, "a"),
            11,
            Direction::Outbound,
            Some(kb.node_id()),
        );
        let b = conn(
            now,
            &config,
            &kb,
            node_info(&kb, "b"),
            22,
            Direction::Inbound,
            None,
        );
        Pair {
            a,
            b,
            now,
            start: now,
            rng: ChaCha8Rng::seed_from_u64(seed),
            ab: Pipe::new(),
            ba: Pipe::new(),
            events_a: Vec::new(),
            events_b: Vec::new(),
            drop_b_to_a: false,
        }
    }

    /// Sets the largest chunk the pipes hand over at once (default 4096).
    pub fn set_max_chunk(&mut self, max: usize) {
        self.ab.max_chunk = max.max(1);
        self.ba.max_chunk = max.max(1);
    }

    /// Moves bytes both ways until neither side has anything to send now. Returns whether
    /// anything moved.
    pub fn step(&mut self) -> bool {
        let mut moved = false;
        for _ in 0..10_000 {
            let mut any = false;
            while let Some(bytes) = self.a.poll_transmit(self.now) {
                self.ab.buf.extend_from_slice(&bytes);
                any = true;
            }
            while let Some(bytes) = self.b.poll_transmit(self.now) {
                if !self.drop_b_to_a {
                    self.ba.buf.extend_from_slice(&bytes);
                } else {
                    self.b.handle_sent(self.now, bytes.len());
                }
                any = true;
            }
            any |= deliver(
                &mut self.rng,
                &mut self.ab,
                &mut self.a,
                &mut self.b,
                self.now,
            );
            any |= deliver(
                &mut self.rng,
                &mut self.ba,
                &mut self.b,
                &mut self.a,
                self.now,
            );
            while let Some(e) = self.a.poll_event() {
                self.events_a.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                self.events_b.push(e);
            }
            if !any {
                break;
            }
            moved = true;
        }
        moved
    }

    /// Advances the virtual clock to the earlier deadline of the two (at most `max`).
    pub fn advance(&mut self, max: Duration) -> bool {
        let limit = self.now + max;
        let next = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { return false };
        self.now = next.min(limit).max(self.now);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        true
    }

    /// Runs until `done` holds, stepping and advancing virtual time; panics after `limit` of
    /// virtual time.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) {
        let end = self.now + limit;
        loop {
            self.step();
            if done(self) {
                return;
            }
            assert!(self.now < end, "condition not reached within {limit:?}");
            if !self.advance(end - self.now) {
                panic!("no deadline left and condition not reached");
            }
        }
    }

    pub fn establish(&mut self) {
        self.run_until(Duration::from_secs(1), |p| {
            established(&p.events_a) && established(&p.events_b)
        });
    }

    /// Messages B received on `channel`, in order.
    pub fn received_b(&self, channel: ChannelId) -> Vec<Bytes> {
        messages(&self.events_b, channel)
    }
}

fn deliver(
    rng: &mut ChaCha8Rng,
    pipe: &mut Pipe,
    from: &mut PeerConnection,
    to: &mut PeerConnection,
    now: Instant,
) -> bool {
    let mut any = false;
    while !pipe.buf.is_empty() {
        let max = pipe.buf.len().min(pipe.max_chunk);
        let n = 1 + (rng.next_u32() as usize) % max;
        let chunk = pipe.buf.split_to(n);
        to.handle_received(now, &chunk);
        from.handle_sent(now, n);
        any = true;
    }
    any
}

pub fn established(events: &[ConnEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, ConnEvent::Established { .. }))
}

pub fn closed(events: &[ConnEvent]) -> Option<&CloseReason> {
    events.iter().find_map(|e| match e {
        ConnEvent::Closed(r) => Some(r),
        _ => None,
    })
}

pub fn messages(events: &[ConnEvent], channel: ChannelId) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|e| match e {
            ConnEvent::Message {
                channel: c,
                payload,
            } if *c == channel => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

/// A hand-driven peer: runs the SecretConnection handshake against a `PeerConnection`, then
/// sends whatever plaintext a test wants.
pub struct RawPeer {
    pub key: NodeKey,
    hs: Option<Handshake>,
    pub sealer: Option<Sealer>,
    pub opener: Option<Opener>,
    pub received: BytesMut,
}

impl RawPeer {
    pub fn new(key: NodeKey) -> Self {
        RawPeer {
            hs: Some(Handshake::new(&key, [99; 32])),
            key,
            sealer: None,
            opener: None,
            received: BytesMut::new(),
        }
    }

    /// Runs the SecretConnection handshake with `conn` (the peer is authenticated both ways).
    pub fn handshake(&mut self, now: Instant, conn: &mut PeerConnection) {
        for _ in 0..16 {
            let hs = self.hs.as_mut().expect("handshake already done");
            while let Some(b) = hs.poll_transmit() {
                conn.handle_received(now, &b);
            }
            while let Some(b) = conn.poll_transmit(now) {
                conn.handle_sent(now, b.len());
                if let Some(hs) = self.hs.as_mut() {
                    hs.handle_received(&b).expect("raw peer handshake");
                } else if let Some(opener) = self.opener.as_mut() {
                    opener.open(&b, &mut self.received).expect("open");
                }
            }
            let hs = self.hs.as_mut().expect("handshake");
            while let Some(b) = hs.poll_transmit() {
                conn.handle_received(now, &b);
            }
            if self.hs.as_ref().is_some_and(Handshake::is_complete) {
                let session = self.hs.take().unwrap().into_session().unwrap();
                self.sealer = Some(session.sealer);
                let mut opener = session.opener;
                opener.open(&[], &mut self.received).unwrap();
                self.opener = Some(opener);
                return;
            }
        }
        panic!("raw handshake did not complete");
    }

    /// Seals `plain` and feeds it to `conn`, then collects what `conn` sends back.
    pub fn send_plain(&mut self, now: Instant, conn: &mut PeerConnection, plain: &[u8]) {
        let mut out = BytesMut::new();
        self.sealer.as_mut().unwrap().seal(plain, &mut out).unwrap();
        conn.handle_received(now, &out);
        self.pump(now, conn);
    }

    /// Takes (and decrypts) everything `conn` has to send.
    pub fn pump(&mut self, now: Instant, conn: &mut PeerConnection) {
        while let Some(b) = conn.poll_transmit(now) {
            conn.handle_sent(now, b.len());
            self.opener
                .as_mut()
                .unwrap()
                .open(&b, &mut self.received)
                .unwrap();
        }
    }
}

/// `uvarint(len) || message`.
pub fn delimited(msg: &impl prost::Message) -> Vec<u8> {
    let mut v = Vec::new();
    msg.encode_length_delimited(&mut v).unwrap();
    v
}

/// All events of `conn`.
pub fn drain(conn: &mut PeerConnection) -> Vec<ConnEvent> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}
