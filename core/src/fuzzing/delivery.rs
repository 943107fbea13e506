//! Fuzz entry point for the engine's flow-controlled delivery ([`crate::engine::delivery`]).
//!
//! Two simulated nodes with channels A and B; node 1's are flow-controlled with windows taken
//! from the input. The input is a program of one-byte opcodes with operands: node 0 (the peer)
//! sends numbered messages of arbitrary sizes on either channel (until its queue refuses),
//! the simulation runs, node 1's application consumes an arbitrary number of what it holds,
//! the clock jumps, either side drops the connection, node 0 redials. The byte stream is
//! re-chunked arbitrarily by the simulator. Checked after every step (a panic is a finding):
//!
//! - per (peer, channel) the numbers delivered only increase, and without a connection loss
//!   they are exactly 0, 1, 2, ...: nothing lost, duplicated or reordered;
//! - at most `window` messages of a channel are out and not consumed;
//! - what node 1 holds is at most what was sent and not yet delivered, and when node 1 drops
//!   the peer its held messages are exactly the ones counted as discarded;
//! - node 0 gets `SendReady` for a (peer, channel) only after a send there was refused;
//! - at the end, after the application consumed everything, nothing is held, and without a
//!   connection loss every message accepted by `send` was delivered.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::engine::{ChannelDescriptor, Event, SendError};
use crate::ids::{ChannelId, NodeId};
use crate::sim::{Sim, SimConfig, node_config};

const A: ChannelId = ChannelId(0x30);
const B: ChannelId = ChannelId(0x31);
const CHANNELS: [ChannelId; 2] = [A, B];
/// Simulation steps per run at most.
const MAX_STEPS: u64 = 20_000;

fn numbered(i: u32, len: usize) -> Bytes {
    let mut m = vec![0u8; len.max(4)];
    m[..4].copy_from_slice(&i.to_be_bytes());
    m.into()
}

fn number(m: &[u8]) -> u32 {
    m.get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(u32::MAX, u32::from_be_bytes)
}

fn ix(ch: ChannelId) -> usize {
    usize::from(ch == B)
}

/// The application side of node 1 and the sender side of node 0, as the test sees them.
struct State {
    windows: [usize; 2],
    /// Next number node 0 sends per channel; `sent_bytes` the payload bytes accepted.
    next: [u32; 2],
    sizes: [Vec<usize>; 2],
    /// Numbers delivered to node 1's application, per channel.
    delivered: [Vec<u32>; 2],
    /// Messages delivered and not yet consumed, per channel.
    outstanding: [usize; 2],
    /// Events already looked at.
    seen: usize,
    /// A connection went down at some point (node 0's queued messages may be lost).
    lost_conn: bool,
    /// (channel) sends refused as full on node 0 and not yet followed by `SendReady`.
    refused: BTreeSet<ChannelId>,
}

impl State {
    /// Folds new events in and checks the invariants.
    fn check(&mut self, sim: &Sim, peer0: NodeId) {
        for r in &sim.events()[self.seen..] {
            match (&r.event, r.node) {
                (
                    Event::Message {
                        peer,
                        channel,
                        payload,
                    },
                    1,
                ) if CHANNELS.contains(channel) => {
                    assert_eq!(*peer, peer0);
                    let i = ix(*channel);
                    let n = number(payload);
                    if let Some(last) = self.delivered[i].last() {
                        assert!(n > *last, "channel {channel}: {n} after {last}");
                    }
                    if !self.lost_conn {
                        assert_eq!(
                            n as usize,
                            self.delivered[i].len(),
                            "channel {channel}: a gap without a connection loss"
                        );
                    }
                    assert_eq!(
                        payload.len(),
                        self.sizes[i][n as usize],
                        "payload size changed"
                    );
                    self.delivered[i].push(n);
                    self.outstanding[i] += 1;
                    assert!(
                        self.outstanding[i] <= self.windows[i],
                        "channel {channel}: {} out with a window of {}",
                        self.outstanding[i],
                        self.windows[i]
                    );
                }
                (Event::PeerDown { .. }, _) => self.lost_conn = true,
                (Event::SendReady { channel, .. }, 0) => {
                    assert!(
                        self.refused.remove(channel),
                        "SendReady on {channel} without a refused send"
                    );
                }
                _ => {}
            }
        }
        self.seen = sim.events().len();
        if let Some(e) = sim.engine(1) {
            let held = e.held();
            let (mut msgs, mut bytes) = (0usize, 0usize);
            for i in 0..2 {
                let undelivered = self.delivered[i].last().map_or(0, |l| *l as usize + 1);
                msgs += self.sizes[i].len().saturating_sub(undelivered);
                bytes += self.sizes[i][undelivered.min(self.sizes[i].len())..]
                    .iter()
                    .sum::<usize>();
            }
            assert!(held.messages <= msgs, "holds {held:?}, {msgs} undelivered");
            assert!(
                held.bytes <= bytes,
                "holds {held:?}, {bytes} bytes undelivered"
            );
        }
    }
}

/// Runs the program in `data` on a pair of nodes; returns the numbers delivered on A and B.
#[allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock
pub fn delivery(data: &[u8]) -> [Vec<u32>; 2] {
    let mut rest = data;
    let mut next = || -> Option<u8> {
        let (b, tail) = rest.split_first()?;
        rest = tail;
        Some(*b)
    };
    let w = next().unwrap_or(0);
    let mut st = State {
        windows: [1 + usize::from(w & 0x0f), 1 + usize::from(w >> 4)],
        next: [0; 2],
        sizes: [Vec::new(), Vec::new()],
        delivered: [Vec::new(), Vec::new()],
        outstanding: [0; 2],
        seen: 0,
        lost_conn: false,
        refused: BTreeSet::new(),
    };
    let cfg = SimConfig {
        seed: u64::from(next().unwrap_or(0)),
        record_events: true,
        rechunk: true,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg, Instant::now());
    for i in 0..2 {
        let mut c = node_config(i);
        c.pex = false;
        let key = sim.gen_key();
        let n = sim.add_node(c, key);
        for ch in CHANNELS {
            let mut d = ChannelDescriptor::new(ch, 1);
            d.send_queue_capacity = 4;
            let _ = sim.with_engine(n, |e, _| e.add_channel(d));
        }
    }
    let windows = st.windows;
    sim.with_engine(1, |e, now| {
        e.set_delivery_window(now, A, Some(windows[0]));
        e.set_delivery_window(now, B, Some(windows[1]));
    });
    let (id0, id1) = (sim.node_id(0), sim.node_id(1));
    let to = sim.net_addr(1);
    let _ = sim.with_engine(0, |e, now| e.dial(now, to));
    let _ = sim.run_for(Duration::from_secs(2), MAX_STEPS);
    st.check(&sim, id0);
    while let Some(op) = next() {
        let arg = next().unwrap_or(0);
        let ch = if arg & 1 == 0 { A } else { B };
        match op % 6 {
            0 => {
                // Node 0 sends up to 8 messages, sizes from the input.
                let len = 4 + usize::from(next().unwrap_or(0)) * 37;
                for _ in 0..=(arg >> 1) % 8 {
                    let i = ix(ch);
                    let m = numbered(st.next[i], len);
                    match sim.with_engine(0, |e, now| e.send(now, id1, ch, m)) {
                        Some(Ok(())) => {
                            st.sizes[i].push(len);
                            st.next[i] += 1;
                        }
                        Some(Err(SendError::Full(_))) => {
                            st.refused.insert(ch);
                            break;
                        }
                        _ => break,
                    }
                }
            }
            1 => {
                let _ = sim.run_for(Duration::from_millis(u64::from(arg) * 4), MAX_STEPS);
            }
            2 => {
                let i = ix(ch);
                let n = usize::from(arg >> 1).min(st.outstanding[i]);
                st.outstanding[i] -= n;
                sim.with_engine(1, |e, now| e.consumed(now, ch, n));
            }
            3 => sim.jump(Duration::from_millis(u64::from(arg) * 250)),
            4 => {
                if arg & 1 == 0 {
                    // Node 1 drops the peer: what it holds is discarded, and counted.
                    let r = sim.with_engine(1, |e, now| {
                        let (held, before) = (e.held().messages, e.counters().messages_discarded);
                        e.disconnect(now, id0);
                        (
                            held,
                            e.held().messages,
                            e.counters().messages_discarded - before,
                        )
                    });
                    if let Some((held, after, discarded)) = r {
                        assert_eq!(after, 0, "held messages survive a drop");
                        assert_eq!(held as u64, discarded, "discards not counted");
                    }
                } else {
                    let _ = sim.with_engine(0, |e, now| e.disconnect(now, id1));
                }
            }
            _ => {
                let _ = sim.with_engine(0, |e, now| e.dial(now, to));
            }
        }
        st.check(&sim, id0);
    }
    // The application consumes everything until nothing more arrives: each round delivers at
    // least one held message (a window is at least 1), so the rounds are bounded by the
    // messages accepted, which can exceed 64 (seed `window_of_one`).
    let rounds = 64 + st.sizes[0].len() + st.sizes[1].len();
    for _ in 0..rounds {
        let _ = sim.run_for(Duration::from_millis(200), MAX_STEPS);
        st.check(&sim, id0);
        if st.outstanding == [0, 0] {
            break;
        }
        for ch in CHANNELS {
            let n = std::mem::take(&mut st.outstanding[ix(ch)]);
            sim.with_engine(1, |e, now| e.consumed(now, ch, n));
        }
    }
    st.check(&sim, id0);
    if let Some(e) = sim.engine(1) {
        assert_eq!(
            e.held().messages,
            0,
            "still held after consuming everything"
        );
    }
    if !st.lost_conn {
        for i in 0..2 {
            assert_eq!(
                st.delivered[i].len(),
                st.sizes[i].len(),
                "channel {i}: accepted messages not delivered"
            );
        }
    }
    st.delivered
}

/// Seed inputs for the corpus (`fuzz/corpus/delivery/`) and the unit test: steady sends and
/// consumption, a slow application, and drops with messages held.
#[must_use]
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    // op 0: send (arg: channel bit, count), size byte; op 1: run; op 2: consume; op 3: jump;
    // op 4: drop (even: node 1 drops, odd: node 0); op 5: redial.
    let steady = vec![
        0x21, 7, 0, 14, 3, 0, 15, 3, 1, 50, 2, 14, 2, 15, 1, 50, 0, 14, 0, 0, 15, 0, 1, 50,
    ];
    let slow = vec![
        0x00, 1, 0, 14, 40, 0, 15, 200, 1, 100, 1, 100, 2, 2, 1, 100, 2, 3, 1, 100, 0, 14, 1,
    ];
    let drops = vec![
        0x11, 3, 0, 14, 0, 0, 15, 60, 1, 100, 4, 0, 1, 100, 5, 0, 1, 250, 0, 14, 0, 1, 100, 4, 1,
        1, 200, 2, 14, 5, 0, 3, 200,
    ];
    // Windows of 1 and nine sends of 8 large messages: 69 accepted, more than 64 rounds of
    // consumption deliver (found by `fuzz-run` in CI, 2026-12-05).
    let mut window_of_one = vec![0x00, 0x01, 0x00, 0x4e];
    window_of_one.extend([0xae; 24]);
    window_of_one.push(0x28);
    vec![
        ("steady", steady),
        ("slow", slow),
        ("drops", drops),
        ("window_of_one", window_of_one),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed corpus is what [`seeds`] generates, and each seed runs clean. With
    /// `COMETMESH_WRITE_SEEDS=1` it (re)writes `fuzz/corpus/delivery/` first.
    #[test]
    fn corpus_seeds_run_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/delivery");
        for (name, input) in seeds() {
            let _ = delivery(&input);
            if std::env::var_os("COMETMESH_WRITE_SEEDS").is_some() {
                std::fs::create_dir_all(&dir).expect("corpus dir");
                std::fs::write(dir.join(name), &input).expect("seed written");
            }
            let committed = std::fs::read(dir.join(name)).expect("the seed is committed");
            assert_eq!(committed, input, "fuzz/corpus/delivery/{name} is stale");
        }
    }

    /// More messages than 64 rounds of consumption deliver one at a time are all delivered.
    #[test]
    fn a_window_of_one_delivers_every_accepted_message() {
        let [a, _] = delivery(&seeds()[3].1);
        assert!(a.len() > 64, "{} delivered", a.len());
        assert_eq!(a, (0..a.len() as u32).collect::<Vec<_>>());
    }

    /// The steady seed delivers every message, in order, through windows of 2 and 3.
    #[test]
    fn steady_seed_delivers_everything_in_order() {
        let [a, b] = delivery(&seeds()[0].1);
        assert!(!a.is_empty() && !b.is_empty());
        assert_eq!(a, (0..a.len() as u32).collect::<Vec<_>>());
        assert_eq!(b, (0..b.len() as u32).collect::<Vec<_>>());
        let _ = delivery(&[]);
    }
}
