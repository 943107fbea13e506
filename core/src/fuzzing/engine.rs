//! Fuzz entry point for the engine: a small simulated network driven by arbitrary input.
//!
//! The input is a program of one-byte opcodes with operands: run steps, dial, stop and restart
//! nodes (a restart may load the book and anchors saved at the stop), reset connections,
//! corrupt bytes in flight, jump the clock, partition and heal,
//! refuse dials, disconnect peers, and inject arbitrary bytes on the PEX channel. The simulator
//! checks the engine invariants after every step and panics on a violation (a finding).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::ids::ChannelId;
use crate::sim::{Sim, SimConfig, node_config};

/// At most this many simulation steps per input.
const MAX_STEPS: u64 = 5_000;

struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(*b)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

/// Runs the program in `data` on a 5-node network (one seed, one persistent link, small limits).
#[allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock
pub fn engine_sim(data: &[u8]) {
    let mut input = Input { data };
    let seed = u64::from_le_bytes(
        input
            .bytes(8)
            .iter()
            .chain([0u8; 8].iter())
            .take(8)
            .copied()
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap_or([0; 8]),
    );
    let flags = input.byte().unwrap_or(0);
    let cfg = SimConfig {
        seed,
        rechunk: flags & 1 == 0,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg, Instant::now());
    let n = 5;
    let keys: Vec<_> = (0..n).map(|_| sim.gen_key()).collect();
    let addr_of = |i: usize, keys: &[crate::identity::NodeKey]| {
        crate::addr::NetAddr::new(keys[i].node_id(), node_config(i).listen_addr)
    };
    for (i, key) in keys.iter().enumerate() {
        let mut c = node_config(i);
        c.max_num_inbound_peers = 2;
        c.max_num_outbound_peers = 2;
        c.allow_duplicate_ip = flags & 2 != 0;
        c.ensure_peers_period = Duration::from_secs(5);
        if i == 0 {
            c.seed_mode = true;
        } else {
            c.seeds = vec![addr_of(0, &keys)];
        }
        if i == 1 {
            c.persistent_peers = vec![addr_of(2, &keys)];
        }
        if i == 3 {
            c.unconditional_peer_ids = vec![keys[4].node_id()];
        }
        sim.add_node(c, key.clone());
    }
    let mut saved: Vec<Option<(Vec<u8>, Vec<crate::addr::NetAddr>)>> = vec![None; n];
    let start = sim.steps();
    while let Some(op) = input.byte() {
        if sim.steps() - start >= MAX_STEPS {
            break;
        }
        let arg = input.byte().unwrap_or(0);
        let node = usize::from(arg) % n;
        match op % 11 {
            0 | 1 => {
                for _ in 0..=u32::from(arg) {
                    if !sim.step() {
                        break;
                    }
                }
            }
            2 => {
                let to = addr_of(usize::from(arg / 16) % n, &keys);
                let _ = sim.with_engine(node, |e, now| e.dial(now, to));
            }
            3 => {
                // A stop saves the book and the anchors as the driver does; a restart with the
                // high bit set loads them (bans, anchors and the book survive), else starts empty.
                if let Some(e) = sim.engine(node) {
                    saved[node] = Some((e.addr_book().encode(), e.anchors(sim.now())));
                    sim.stop(node);
                } else if arg & 0x80 != 0
                    && let Some((book, anchors)) = saved[node].take()
                {
                    let now = sim.now();
                    sim.restart_with(node, |e| {
                        let _ = e.load_addr_book(&book);
                        let _ = e.dial_anchors(now, &anchors);
                    });
                } else {
                    sim.restart(node);
                }
            }
            4 => {
                sim.reset_nth(usize::from(arg));
            }
            5 => sim.corrupt_next_delivery(arg),
            6 => {
                let d = if arg == 255 {
                    Duration::from_secs(25 * 3600)
                } else {
                    Duration::from_millis(u64::from(arg) * 500)
                };
                sim.jump(d);
            }
            7 => {
                if arg & 1 == 0 {
                    sim.heal();
                } else {
                    sim.partition(&[(node, u32::from(arg >> 1))]);
                }
            }
            8 => sim.set_refuse_ppm(u32::from(arg) * 4000),
            9 => {
                let peer = sim
                    .engine(node)
                    .and_then(|e| e.peers().next().map(|p| p.id));
                if let Some(p) = peer {
                    let _ = sim.with_engine(node, |e, now| e.disconnect(now, p));
                }
            }
            _ => {
                let len = usize::from(input.byte().unwrap_or(0));
                let payload = Bytes::copy_from_slice(input.bytes(len));
                let peer = sim
                    .engine(node)
                    .and_then(|e| e.peers().next().map(|p| p.id));
                if let Some(p) = peer {
                    let ch = if arg & 0x80 == 0 {
                        ChannelId::PEX
                    } else {
                        ChannelId(arg & 0x7f)
                    };
                    let _ = sim.with_engine(node, |e, now| e.send(now, p, ch, payload));
                }
            }
        }
    }
    // Let the network settle a little, then check everything.
    let _ = sim.run_for(Duration::from_secs(30), 2_000);
    sim.check_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_programs_run_clean() {
        engine_sim(&[]);
        engine_sim(&[1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 255, 0, 255, 0, 255, 2, 0x21]);
        let mut prog = vec![9u8; 9];
        for i in 0..200u8 {
            prog.extend_from_slice(&[i, i.wrapping_mul(37), 3, 0x0a, 0x00, 0x12]);
        }
        engine_sim(&prog);
    }

    #[test]
    fn random_programs_run_clean() {
        use rand_core::{RngCore, SeedableRng};
        let cases: u64 = std::env::var("ENGINE_SIM_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(12);
        for case in 0..cases {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(case);
            let mut prog = vec![0u8; 64 + (rng.next_u32() % 400) as usize];
            rng.fill_bytes(&mut prog);
            engine_sim(&prog);
        }
    }
}
