//! The metrics of a multi-chain seed: CometBFT's p2p names, every series labelled `chain_id`,
//! and no per-peer label. A seed meets thousands of peers a day, each for seconds; a series
//! per peer (CometBFT v0.38's `peer_id` label) would grow without bound, so the byte totals
//! are per chain and channel, kept monotone across peers that leave (CometBFT v1.0 dropped
//! its per-peer byte series too).
//!
//! Per chain (namespace `cometbft` by default):
//! - `cometbft_p2p_peers{chain_id}` (gauge)
//! - `cometbft_p2p_peer_receive_bytes_total{chain_id,chID}`,
//!   `cometbft_p2p_peer_send_bytes_total{chain_id,chID}` (counters, summed over peers)
//! - `cometbft_p2p_peer_pending_send_bytes{chain_id}` (gauge, summed over peers)
//! - `cometmesh_bans_total{chain_id}`, `cometmesh_dial_failures_total{chain_id}` (counters)
//! - `cometmesh_addrbook_size{chain_id,table="all"}`, `cometmesh_vetted_addresses{chain_id}`
//!   (gauges)

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::metrics::{ADDRBOOK_SIZE, BANS_TOTAL, DIAL_FAILURES_TOTAL, Kind, Registry};

/// `cometmesh_vetted_addresses`.
pub const VETTED_ADDRESSES: &str = "cometmesh_vetted_addresses";

/// One peer's byte totals per channel, as last seen: (sent, received).
type PeerBytes = BTreeMap<u8, (u64, u64)>;

/// What one refresh reads from a chain's node.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Peers up.
    pub peers: usize,
    /// Banned so far (the engine's counter).
    pub bans: u64,
    /// Failed dials so far (the engine's counter).
    pub dial_failures: u64,
    /// Addresses in the book.
    pub book_len: usize,
    /// Vetted addresses served now.
    pub vetted: usize,
    /// Per connected peer.
    pub peer_bytes: Vec<PeerBytesSnapshot>,
}

/// One connected peer's traffic in a [`Snapshot`].
#[derive(Debug, Clone, Default)]
pub struct PeerBytesSnapshot {
    /// The peer's node id.
    pub id: String,
    /// Per channel: (channel id, bytes sent, bytes received).
    pub channels: Vec<(u8, u64, u64)>,
    /// Bytes accepted for the peer and not yet sent.
    pub pending: u64,
}

/// The metrics of one chain of the seed.
#[derive(Debug)]
pub struct ChainMetrics {
    registry: Arc<Registry>,
    chain_id: String,
    peers: String,
    receive_bytes: String,
    send_bytes: String,
    pending_send_bytes: String,
    /// Bytes of peers that left, per channel: (sent, received).
    retired: BTreeMap<u8, (u64, u64)>,
    /// Connected peers' last totals (memory, not labels).
    live: BTreeMap<String, PeerBytes>,
    last_bans: u64,
    last_dial_failures: u64,
}

impl ChainMetrics {
    /// Declares the families (once per registry is enough; repeating is harmless) and this
    /// chain's zero samples.
    #[must_use]
    pub fn new(registry: Arc<Registry>, namespace: &str, chain_id: &str) -> Self {
        let name = |suffix: &str| {
            if namespace.is_empty() {
                format!("p2p_{suffix}")
            } else {
                format!("{namespace}_p2p_{suffix}")
            }
        };
        let m = ChainMetrics {
            registry,
            chain_id: chain_id.to_owned(),
            peers: name("peers"),
            receive_bytes: name("peer_receive_bytes_total"),
            send_bytes: name("peer_send_bytes_total"),
            pending_send_bytes: name("peer_pending_send_bytes"),
            retired: BTreeMap::new(),
            live: BTreeMap::new(),
            last_bans: 0,
            last_dial_failures: 0,
        };
        let r = &m.registry;
        r.describe(&m.peers, "Number of peers.", Kind::Gauge);
        r.describe(
            &m.receive_bytes,
            "Number of bytes received from peers, by channel.",
            Kind::Counter,
        );
        r.describe(
            &m.send_bytes,
            "Number of bytes sent to peers, by channel.",
            Kind::Counter,
        );
        r.describe(
            &m.pending_send_bytes,
            "Pending bytes to be sent to peers.",
            Kind::Gauge,
        );
        r.describe(BANS_TOTAL, "Number of peers banned.", Kind::Counter);
        r.describe(
            DIAL_FAILURES_TOTAL,
            "Number of outbound dials that failed.",
            Kind::Counter,
        );
        r.describe(
            ADDRBOOK_SIZE,
            "Number of addresses in the address book, by table.",
            Kind::Gauge,
        );
        r.describe(
            VETTED_ADDRESSES,
            "Number of vetted addresses the seed serves.",
            Kind::Gauge,
        );
        let c = [("chain_id", chain_id)];
        r.set(&m.peers, &c, 0.0);
        r.set(BANS_TOTAL, &c, 0.0);
        r.set(DIAL_FAILURES_TOTAL, &c, 0.0);
        r.set(&m.pending_send_bytes, &c, 0.0);
        m
    }

    /// Updates every series from a snapshot of the chain's node.
    pub fn update(&mut self, s: &Snapshot) {
        let c = self.chain_id.clone();
        let r = Arc::clone(&self.registry);
        let chain = [("chain_id", c.as_str())];
        r.set(&self.peers, &chain, s.peers as f64);
        r.add(
            BANS_TOTAL,
            &chain,
            s.bans.saturating_sub(self.last_bans) as f64,
        );
        r.add(
            DIAL_FAILURES_TOTAL,
            &chain,
            s.dial_failures.saturating_sub(self.last_dial_failures) as f64,
        );
        self.last_bans = self.last_bans.max(s.bans);
        self.last_dial_failures = self.last_dial_failures.max(s.dial_failures);
        r.set(
            ADDRBOOK_SIZE,
            &[("chain_id", c.as_str()), ("table", "all")],
            s.book_len as f64,
        );
        r.set(VETTED_ADDRESSES, &chain, s.vetted as f64);

        let mut now: BTreeMap<String, PeerBytes> = BTreeMap::new();
        let mut pending = 0u64;
        for p in &s.peer_bytes {
            pending += p.pending;
            now.insert(
                p.id.clone(),
                p.channels
                    .iter()
                    .map(|&(ch, tx, rx)| (ch, (tx, rx)))
                    .collect(),
            );
        }
        // Peers gone since the last refresh: their last totals stay counted.
        for (peer, bytes) in &self.live {
            if !now.contains_key(peer) {
                for (ch, (tx, rx)) in bytes {
                    let slot = self.retired.entry(*ch).or_default();
                    slot.0 += tx;
                    slot.1 += rx;
                }
            }
        }
        self.live = now;
        let mut totals = self.retired.clone();
        for bytes in self.live.values() {
            for (ch, (tx, rx)) in bytes {
                let slot = totals.entry(*ch).or_default();
                slot.0 += tx;
                slot.1 += rx;
            }
        }
        for (ch, (tx, rx)) in totals {
            let ch = format!("{ch:#x}");
            let labels = [("chain_id", c.as_str()), ("chID", ch.as_str())];
            r.set(&self.send_bytes, &labels, tx as f64);
            r.set(&self.receive_bytes, &labels, rx as f64);
        }
        r.set(&self.pending_send_bytes, &chain, pending as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, tx: u64, rx: u64) -> PeerBytesSnapshot {
        PeerBytesSnapshot {
            id: id.to_owned(),
            channels: vec![(0, tx, rx)],
            pending: 3,
        }
    }

    #[test]
    fn totals_are_per_chain_and_channel_and_stay_monotone() {
        let registry = Arc::new(Registry::new());
        let mut a = ChainMetrics::new(Arc::clone(&registry), "cometbft", "chain-a");
        let mut b = ChainMetrics::new(Arc::clone(&registry), "cometbft", "chain-b");
        a.update(&Snapshot {
            peers: 2,
            bans: 1,
            dial_failures: 2,
            book_len: 5,
            vetted: 4,
            peer_bytes: vec![peer("p1", 10, 20), peer("p2", 1, 2)],
        });
        b.update(&Snapshot {
            peers: 1,
            peer_bytes: vec![peer("p9", 7, 7)],
            ..Snapshot::default()
        });
        // p1 left; p2 grew.
        a.update(&Snapshot {
            peers: 1,
            bans: 1,
            dial_failures: 3,
            book_len: 6,
            vetted: 4,
            peer_bytes: vec![peer("p2", 5, 6)],
        });
        let text = registry.render();
        for line in [
            "cometbft_p2p_peers{chain_id=\"chain-a\"} 1",
            "cometbft_p2p_peers{chain_id=\"chain-b\"} 1",
            "cometbft_p2p_peer_send_bytes_total{chain_id=\"chain-a\",chID=\"0x0\"} 15",
            "cometbft_p2p_peer_receive_bytes_total{chain_id=\"chain-a\",chID=\"0x0\"} 26",
            "cometbft_p2p_peer_send_bytes_total{chain_id=\"chain-b\",chID=\"0x0\"} 7",
            "cometbft_p2p_peer_pending_send_bytes{chain_id=\"chain-a\"} 3",
            "cometmesh_bans_total{chain_id=\"chain-a\"} 1",
            "cometmesh_dial_failures_total{chain_id=\"chain-a\"} 3",
            "cometmesh_bans_total{chain_id=\"chain-b\"} 0",
            "cometmesh_addrbook_size{chain_id=\"chain-a\",table=\"all\"} 6",
            "cometmesh_vetted_addresses{chain_id=\"chain-a\"} 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("peer_id"), "no per-peer label:\n{text}");
    }
}
