//! The crawl's result: per-node records plus network statistics, serialized as the versioned
//! JSON document described in `docs/crawl-schema.md`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::record::{NodeRecord, Status};
use crate::ids::NodeId;

/// The `schema` field of every report.
pub const SCHEMA: &str = "cometmesh-crawl";
/// The version of the report layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// A crawl's complete result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrawlReport {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// How the crawl ran.
    pub crawl: CrawlMeta,
    /// Network statistics.
    pub summary: Summary,
    /// Every node id learned, sorted by id.
    pub nodes: Vec<NodeRecord>,
    /// Who announced whom, sorted, without duplicates.
    pub edges: Vec<Edge>,
}

/// How the crawl ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrawlMeta {
    /// The crawler's (throw-away) node id.
    pub crawler_id: NodeId,
    /// The crawled chain id (`None` if no node answered).
    pub chain_id: Option<String>,
    /// The node whose NodeInfo taught us the chain id (`None` if it was given).
    pub chain_id_learned_from: Option<NodeId>,
    /// The seeds, as `id@ip:port`.
    pub seeds: Vec<String>,
    /// Unix time of the start.
    pub started: u64,
    /// Unix time of this report.
    pub updated: u64,
    /// Seconds crawled (summed over resumed runs).
    pub elapsed_s: f64,
    /// `running`, `complete` (nothing left to dial), `duration` (time ran out) or
    /// `interrupted` (stopped by the operator).
    pub state: String,
    /// Dials made (summed over resumed runs).
    pub dials: u64,
    /// Rounds started (1 unless `--revisit`).
    pub rounds: u32,
    /// Node ids dropped because `max_nodes` was reached.
    pub dropped_nodes: u64,
}

/// An announcement: `from`'s PEX reply carried an address of `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Edge {
    /// The announcer.
    pub from: NodeId,
    /// The announced node.
    pub to: NodeId,
}

/// One address group (IPv4 /16, IPv6 /32) and its nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCount {
    /// The prefix, e.g. `"20.1.0.0/16"`.
    pub group: String,
    /// Nodes whose main address is in it.
    pub nodes: u64,
    /// Of which reachable.
    pub reachable: u64,
}

/// Network-wide statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Node ids known.
    pub known: u64,
    /// Reachable nodes (handshake completed, same chain).
    pub reachable: u64,
    /// Nodes every dial to which failed.
    pub unreachable: u64,
    /// Nodes never dialled.
    pub not_dialled: u64,
    /// Unreachable nodes per failure kind.
    pub failures: BTreeMap<String, u64>,
    /// Reachable nodes per software version.
    pub versions: BTreeMap<String, u64>,
    /// Reachable nodes per channel (hex id, e.g. `"20"`).
    pub channels: BTreeMap<String, u64>,
    /// Nodes of other chains per chain id.
    pub other_chains: BTreeMap<String, u64>,
    /// Address groups, largest first (ties by name).
    pub groups: Vec<GroupCount>,
    /// Share of the known nodes in the largest group (0 to 1).
    pub largest_group_share: f64,
    /// Herfindahl–Hirschman index of the groups: the sum of squared shares (1 = one group).
    pub group_hhi: f64,
    /// Distinct addresses known.
    pub addresses: u64,
    /// Announcement edges.
    pub edges: u64,
}

/// The address group of `ip`: IPv4 /16, IPv6 /32 (IPv4-mapped IPv6 as IPv4).
#[must_use]
pub fn group_of(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.0.0/16", o[0], o[1])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}::/32", s[0], s[1])
        }
    }
}

/// The edges of `nodes`: every announcer of every address, deduplicated and sorted.
#[must_use]
pub fn edges_of(nodes: &[NodeRecord]) -> Vec<Edge> {
    let mut edges: Vec<Edge> = nodes
        .iter()
        .flat_map(|n| {
            n.addresses.iter().flat_map(move |a| {
                a.announced_by.iter().map(move |from| Edge {
                    from: *from,
                    to: n.id,
                })
            })
        })
        .collect();
    edges.sort_unstable();
    edges.dedup();
    edges
}

/// Computes the statistics of `nodes`.
#[must_use]
pub fn summarize(nodes: &[NodeRecord], edges: usize) -> Summary {
    let count = |s: Status| nodes.iter().filter(|n| n.status == s).count() as u64;
    let mut failures = BTreeMap::new();
    let mut versions = BTreeMap::new();
    let mut channels = BTreeMap::new();
    let mut other_chains = BTreeMap::new();
    let mut groups: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for n in nodes {
        if let Some(f) = &n.failure {
            *failures.entry(f.kind().to_owned()).or_insert(0) += 1;
            if let super::record::Failure::OtherChain { network } = f {
                *other_chains.entry(network.clone()).or_insert(0) += 1;
            }
        }
        if n.status == Status::Reachable
            && let Some(info) = &n.info
        {
            *versions.entry(info.version.clone()).or_insert(0) += 1;
            for c in &info.channels {
                *channels.entry(format!("{c:02x}")).or_insert(0) += 1;
            }
        }
        if let Some(addr) = n.main_addr() {
            let g = groups.entry(group_of(addr.ip())).or_insert((0, 0));
            g.0 += 1;
            if n.status == Status::Reachable {
                g.1 += 1;
            }
        }
    }
    let grouped: u64 = groups.values().map(|g| g.0).sum();
    let mut groups: Vec<GroupCount> = groups
        .into_iter()
        .map(|(group, (nodes, reachable))| GroupCount {
            group,
            nodes,
            reachable,
        })
        .collect();
    groups.sort_by(|a, b| b.nodes.cmp(&a.nodes).then_with(|| a.group.cmp(&b.group)));
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let share = |k: u64| {
        if grouped == 0 {
            0.0
        } else {
            k as f64 / grouped as f64
        }
    };
    let largest_group_share = groups.first().map_or(0.0, |g| share(g.nodes));
    let group_hhi = groups.iter().map(|g| share(g.nodes).powi(2)).sum();
    Summary {
        known: nodes.len() as u64,
        reachable: count(Status::Reachable),
        unreachable: count(Status::Unreachable),
        not_dialled: count(Status::Unknown),
        failures,
        versions,
        channels,
        other_chains,
        groups,
        largest_group_share,
        group_hhi,
        addresses: nodes.iter().map(|n| n.addresses.len() as u64).sum(),
        edges: edges as u64,
    }
}

/// Why a report cannot be resumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// Not a crawl report of a version we read.
    #[error(
        "not a {SCHEMA} report of version {SCHEMA_VERSION} (found {schema:?} version {version})"
    )]
    Schema {
        /// The `schema` found.
        schema: String,
        /// The `schema_version` found.
        version: u32,
    },
    /// The report maps another chain than the one asked for.
    #[error("the report maps chain {report:?}, not {asked:?}")]
    ChainMismatch {
        /// Chain of the report.
        report: String,
        /// Chain asked for.
        asked: String,
    },
    /// The crawler already started.
    #[error("resume before the crawl starts dialling")]
    AlreadyStarted,
}
