//! The crawl's terminal output: the progress line and the summary table.

use std::fmt::Write as _;

use cometmesh_core::crawl::{CrawlReport, Progress};

/// `known 812 · reached 640 · failed 97 · in flight 16 · queued 59 · 41.2 s`.
#[must_use]
pub fn progress_line(p: &Progress) -> String {
    format!(
        "known {} · reached {} · failed {} · in flight {} · queued {} · {:.1} s",
        p.known,
        p.reached,
        p.failed,
        p.in_flight,
        p.queued,
        p.elapsed.as_secs_f64()
    )
}

/// Share as a percentage with one decimal.
#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    format!("{:.1} %", part as f64 * 100.0 / whole as f64)
}

/// The summary table printed at the end of a crawl.
#[must_use]
pub fn render(r: &CrawlReport) -> String {
    let s = &r.summary;
    let mut out = String::new();
    let chain = r.crawl.chain_id.as_deref().unwrap_or("(unknown)");
    let learned = match &r.crawl.chain_id_learned_from {
        Some(id) => format!(" (learned from {id})"),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "crawl of {chain:?}{learned}: {} after {:.1} s, {} dials",
        r.crawl.state, r.crawl.elapsed_s, r.crawl.dials
    );
    let _ = writeln!(out, "{:<14}{:>8}{:>10}", "nodes", "count", "share");
    for (name, n) in [
        ("known", s.known),
        ("reachable", s.reachable),
        ("unreachable", s.unreachable),
        ("not dialled", s.not_dialled),
    ] {
        let _ = writeln!(out, "  {name:<24}{n:>8}{:>10}", pct(n, s.known));
    }
    let table = |out: &mut String, title: &str, rows: Vec<(String, u64)>, whole: u64| {
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(out, "{title}");
        for (k, v) in rows {
            let _ = writeln!(out, "  {k:<24}{v:>8}{:>10}", pct(v, whole));
        }
    };
    table(
        &mut out,
        "failures (unreachable nodes)",
        s.failures.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        s.unreachable,
    );
    let mut versions: Vec<(String, u64)> =
        s.versions.iter().map(|(k, v)| (display(k), *v)).collect();
    versions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    table(
        &mut out,
        "versions (reachable nodes)",
        versions,
        s.reachable,
    );
    table(
        &mut out,
        "channels (reachable nodes)",
        s.channels
            .iter()
            .map(|(k, v)| (format!("0x{k}"), *v))
            .collect(),
        s.reachable,
    );
    table(
        &mut out,
        "other chains",
        s.other_chains
            .iter()
            .map(|(k, v)| (display(k), *v))
            .collect(),
        s.known,
    );
    let _ = writeln!(
        out,
        "address groups: {} (IPv4 /16, IPv6 /32); largest holds {}, HHI {:.4}",
        s.groups.len(),
        pct_f(s.largest_group_share),
        s.group_hhi
    );
    for g in s.groups.iter().take(5) {
        let _ = writeln!(
            out,
            "  {:<24}{:>8}{:>10}  ({} reachable)",
            g.group,
            g.nodes,
            pct(g.nodes, s.known),
            g.reachable
        );
    }
    let _ = writeln!(
        out,
        "addresses known: {}; announcements (edges): {}",
        s.addresses, s.edges
    );
    out
}

fn pct_f(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

fn display(s: &str) -> String {
    if s.is_empty() {
        "(empty)".to_owned()
    } else {
        s.to_owned()
    }
}
