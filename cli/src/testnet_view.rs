//! What `cometmesh testnet` shows: the live table, the plain progress lines used when stdout is
//! not a terminal, the discovery target and the closing summary. Pure functions over snapshots,
//! so they are tested without a network.
//!
//! **Target.** The seed only hands out addresses (seed mode hangs up after answering), so the
//! network is the N−1 other nodes, which start knowing only the seed. A node has reached its
//! target when it is connected to `min(max_num_outbound_peers, N − 2)` of those other nodes,
//! inbound or outbound: with the default limit of 10 and up to 12 nodes that is a full mesh,
//! beyond it every node holds as many peers as it dials by itself. The seed has no target.

use std::fmt::Write as _;
use std::time::Duration;

use cometmesh_core::NodeId;

/// One node at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSnapshot {
    /// Display name (`seed`, `node1`, ...).
    pub name: String,
    /// The node id.
    pub id: NodeId,
    /// Whether this is the seed.
    pub is_seed: bool,
    /// Connected peers with their direction (`true`: we dialed them).
    pub peers: Vec<(NodeId, bool)>,
    /// Total bytes sent on all connections so far.
    pub bytes_sent: u64,
    /// Total bytes received on all connections so far.
    pub bytes_received: u64,
    /// PEX messages sent so far (requests and replies).
    pub messages: u64,
}

impl NodeSnapshot {
    /// Peers dialed by this node.
    #[must_use]
    pub fn outbound(&self) -> usize {
        self.peers.iter().filter(|(_, out)| *out).count()
    }

    /// Peers that dialed this node.
    #[must_use]
    pub fn inbound(&self) -> usize {
        self.peers.len() - self.outbound()
    }

    /// Peers other than the seed.
    #[must_use]
    pub fn mesh_peers(&self, seed: &NodeId) -> usize {
        self.peers.iter().filter(|(id, _)| id != seed).count()
    }
}

/// Connections to other non-seed nodes each non-seed node needs; see the module docs.
#[must_use]
pub fn target_peers(nodes: usize, max_outbound: usize) -> usize {
    max_outbound.min(nodes.saturating_sub(2))
}

/// Whether a node has reached its target (the seed always has).
#[must_use]
pub fn reached(node: &NodeSnapshot, seed: &NodeId, target: usize) -> bool {
    node.is_seed || node.mesh_peers(seed) >= target
}

/// Whether every node has reached the target.
#[must_use]
pub fn all_reached(nodes: &[NodeSnapshot], target: usize) -> bool {
    let Some(seed) = nodes.iter().find(|n| n.is_seed).map(|n| n.id) else {
        return false;
    };
    nodes.iter().all(|n| reached(n, &seed, target))
}

/// Human-readable bytes (`512 B`, `3.4 KiB`, `1.2 MiB`).
#[must_use]
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The table: one line per node, then a status line. No escape codes (the caller redraws).
#[must_use]
pub fn render_table(nodes: &[NodeSnapshot], target: usize, elapsed: Duration) -> String {
    let seed = nodes.iter().find(|n| n.is_seed).map(|n| n.id);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<12} {:>4} {:>4} {:>10} {:>10} {:>8}  status",
        "node", "id", "in", "out", "sent", "received", "pex msgs"
    );
    let mut done = 0;
    for node in nodes {
        let id = node.id.to_string();
        let status = match seed {
            _ if node.is_seed => "seed".to_owned(),
            Some(seed) if reached(node, &seed, target) => {
                done += 1;
                format!("ok ({}/{target})", node.mesh_peers(&seed))
            }
            Some(seed) => format!("{}/{target}", node.mesh_peers(&seed)),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<8} {:<12} {:>4} {:>4} {:>10} {:>10} {:>8}  {status}",
            node.name,
            &id[..12.min(id.len())],
            node.inbound(),
            node.outbound(),
            human_bytes(node.bytes_sent),
            human_bytes(node.bytes_received),
            node.messages,
        );
    }
    let others = nodes.iter().filter(|n| !n.is_seed).count();
    let _ = writeln!(
        out,
        "{:.1}s: {done}/{others} nodes connected to {target} others",
        elapsed.as_secs_f64()
    );
    out
}

/// One progress line for a log or a pipe.
#[must_use]
pub fn render_line(nodes: &[NodeSnapshot], target: usize, elapsed: Duration) -> String {
    let seed = nodes.iter().find(|n| n.is_seed).map(|n| n.id);
    let others: Vec<&NodeSnapshot> = nodes.iter().filter(|n| !n.is_seed).collect();
    let done = match seed {
        Some(seed) => others.iter().filter(|n| reached(n, &seed, target)).count(),
        None => 0,
    };
    let peers: Vec<String> = others
        .iter()
        .map(|n| seed.map_or(0, |s| n.mesh_peers(&s)).to_string())
        .collect();
    let bytes: u64 = nodes.iter().map(|n| n.bytes_sent).sum();
    format!(
        "[{:>5.1}s] {done}/{} nodes at target {target}; peers per node [{}]; {} sent",
        elapsed.as_secs_f64(),
        others.len(),
        peers.join(" "),
        human_bytes(bytes)
    )
}

/// The closing summary.
#[must_use]
pub fn render_summary(
    nodes: &[NodeSnapshot],
    target: usize,
    discovery: Option<Duration>,
    elapsed: Duration,
) -> String {
    let messages: u64 = nodes.iter().map(|n| n.messages).sum();
    let bytes: u64 = nodes.iter().map(|n| n.bytes_sent).sum();
    let connections: usize = nodes.iter().map(NodeSnapshot::outbound).sum();
    let others = nodes.iter().filter(|n| !n.is_seed).count();
    let mut out = String::new();
    match discovery {
        Some(t) => {
            let _ = writeln!(
                out,
                "full discovery in {:.2}s: each of the {others} nodes is connected to {target} others",
                t.as_secs_f64()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "discovery incomplete after {:.1}s (target: {target} peers per node)",
                elapsed.as_secs_f64()
            );
        }
    }
    let _ = writeln!(
        out,
        "{} nodes, {connections} open connections; {messages} PEX messages and {} sent",
        nodes.len(),
        human_bytes(bytes)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 20])
    }

    fn node(n: u8, peers: &[(u8, bool)]) -> NodeSnapshot {
        NodeSnapshot {
            name: if n == 0 {
                "seed".into()
            } else {
                format!("node{n}")
            },
            id: id(n),
            is_seed: n == 0,
            peers: peers.iter().map(|&(p, out)| (id(p), out)).collect(),
            bytes_sent: 2048,
            bytes_received: 100,
            messages: 3,
        }
    }

    #[test]
    fn target_is_the_mesh_or_the_outbound_limit() {
        assert_eq!(target_peers(8, 10), 6);
        assert_eq!(target_peers(3, 10), 1);
        assert_eq!(target_peers(40, 10), 10);
        assert_eq!(target_peers(1, 10), 0);
    }

    #[test]
    fn seed_connections_do_not_count() {
        let nodes = vec![
            node(0, &[(1, false)]),
            node(1, &[(0, true), (2, true)]),
            node(2, &[(1, false)]),
        ];
        assert!(all_reached(&nodes, 1));
        let nodes = vec![node(0, &[]), node(1, &[(0, true)]), node(2, &[])];
        assert!(!all_reached(&nodes, 1));
        // No seed at all: never reached.
        assert!(!all_reached(&[node(1, &[])], 0));
    }

    #[test]
    fn table_and_lines_show_progress() {
        let nodes = vec![
            node(0, &[]),
            node(1, &[(2, true), (3, false)]),
            node(2, &[(1, false)]),
            node(3, &[(1, true)]),
        ];
        let table = render_table(&nodes, 2, Duration::from_millis(1500));
        assert_eq!(table.lines().count(), 6);
        assert!(table.contains("ok (2/2)"), "{table}");
        assert!(table.contains("1.5s: 1/3 nodes"), "{table}");
        assert!(table.contains("2.0 KiB"), "{table}");
        let line = render_line(&nodes, 2, Duration::from_secs(2));
        assert!(line.contains("1/3 nodes at target 2"), "{line}");
        assert!(line.contains("[2 1 1]"), "{line}");
        let summary = render_summary(&nodes, 2, Some(Duration::from_millis(4200)), Duration::ZERO);
        assert!(summary.starts_with("full discovery in 4.20s"), "{summary}");
        assert!(summary.contains("12 PEX messages"), "{summary}");
        let summary = render_summary(&nodes, 2, None, Duration::from_secs(60));
        assert!(
            summary.starts_with("discovery incomplete after 60.0s"),
            "{summary}"
        );
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
