//! `--html`: one self-contained page (inline CSS and SVG, no script, nothing fetched) drawing
//! the crawled network, with the summary beside it and every node in a table below.
//!
//! Layout: deterministic and computed here. Reachable nodes sit on the inner rings, ordered
//! by software version, then address group, then id, so each version is an arc of one colour;
//! unreachable and never-dialled nodes sit on the outer rings, ordered by failure kind. Rings
//! are filled inside out, each holding as many nodes as fit at 7 px apart. Announcements
//! (who gave whose address) are straight lines. Every string that came from the network
//! (monikers, versions, chain ids) is escaped.

use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::fmt::Write as _;

use cometmesh_core::crawl::{CrawlReport, NodeRecord, Status, group_of};
use cometmesh_core::ids::NodeId;

/// Colours for the most common versions; the rest are grey.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f",
];
/// Colour of versions beyond the palette.
const OTHER: &str = "#555555";
/// Edges drawn at most (the page stays light); the count drawn is stated.
const MAX_EDGES: usize = 20_000;
/// Size of the drawing.
const SIZE: f64 = 900.0;
/// Distance between neighbours on a ring, and between rings.
const SPACING: f64 = 7.0;

/// Escapes text for HTML and attribute values.
#[must_use]
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn version_of(n: &NodeRecord) -> Option<&str> {
    (n.status == Status::Reachable)
        .then(|| n.info.as_ref().map(|i| i.version.as_str()))
        .flatten()
}

/// Places `count` points on rings starting at radius `r0`; returns the points and the radius
/// after the last ring.
fn rings(count: usize, r0: f64) -> (Vec<(f64, f64)>, f64) {
    let mut pts = Vec::with_capacity(count);
    let mut r = r0;
    let mut left = count;
    while left > 0 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let cap = ((2.0 * PI * r / SPACING).floor() as usize).max(1);
        let n = cap.min(left);
        for k in 0..n {
            #[allow(clippy::cast_precision_loss)]
            let a = 2.0 * PI * k as f64 / n as f64 - PI / 2.0;
            pts.push((r * a.cos(), r * a.sin()));
        }
        left -= n;
        r += SPACING;
    }
    (pts, r)
}

/// The page.
#[must_use]
pub fn render(r: &CrawlReport) -> String {
    let s = &r.summary;
    // Colours: versions by number of reachable nodes, most common first.
    let mut versions: Vec<(&String, &u64)> = s.versions.iter().collect();
    versions.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let colour: BTreeMap<&str, &str> = versions
        .iter()
        .zip(PALETTE)
        .map(|((v, _), c)| (v.as_str(), c))
        .collect();
    let colour_of =
        |n: &NodeRecord| version_of(n).map_or(OTHER, |v| colour.get(v).copied().unwrap_or(OTHER));

    let mut inner: Vec<&NodeRecord> = r
        .nodes
        .iter()
        .filter(|n| n.status == Status::Reachable)
        .collect();
    let rank: BTreeMap<&str, usize> = versions
        .iter()
        .enumerate()
        .map(|(i, (v, _))| (v.as_str(), i))
        .collect();
    let group = |n: &NodeRecord| n.main_addr().map(|a| group_of(a.ip())).unwrap_or_default();
    inner.sort_by_cached_key(|n| {
        (
            version_of(n).and_then(|v| rank.get(v).copied()),
            group(n),
            n.id,
        )
    });
    let mut outer: Vec<&NodeRecord> = r
        .nodes
        .iter()
        .filter(|n| n.status != Status::Reachable)
        .collect();
    outer.sort_by_cached_key(|n| (n.failure.as_ref().map(|f| f.kind()), group(n), n.id));

    let (pin, r_after) = rings(inner.len(), 60.0);
    let (pout, r_end) = rings(outer.len(), r_after + 4.0 * SPACING);
    let scale = (SIZE / 2.0 - 20.0) / r_end.max(1.0);
    let scale = scale.min(1.5);
    let mut pos: BTreeMap<NodeId, (f64, f64)> = BTreeMap::new();
    for (n, p) in inner.iter().zip(&pin).chain(outer.iter().zip(&pout)) {
        pos.insert(n.id, (SIZE / 2.0 + p.0 * scale, SIZE / 2.0 + p.1 * scale));
    }
    let dot = (SPACING * scale * 0.4).clamp(1.0, 6.0);

    let chain = r.crawl.chain_id.as_deref().unwrap_or("(unknown chain)");
    let mut h = String::with_capacity(4096 + r.nodes.len() * 400);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n\
         <title>cometmesh crawl: {}</title>\n<style>\n{}\n</style>\n</head>\n<body>\n",
        escape(chain),
        CSS
    );
    let _ = write!(
        h,
        "<h1>{} <small>{} nodes, {} reachable · {} · {}</small></h1>\n<main>\n",
        escape(chain),
        s.known,
        s.reachable,
        escape(&r.crawl.state),
        escape(&format!("{:.1} s", r.crawl.elapsed_s))
    );
    // The drawing.
    let _ = write!(
        h,
        "<section class=\"map\">\n<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {SIZE} {SIZE}\" \
         width=\"{SIZE}\" height=\"{SIZE}\" role=\"img\" aria-label=\"network map\">\n<g class=\"edges\">\n"
    );
    let mut drawn = 0usize;
    for e in r.edges.iter().take(MAX_EDGES) {
        if let (Some(a), Some(b)) = (pos.get(&e.from), pos.get(&e.to)) {
            let _ = writeln!(
                h,
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" />",
                a.0, a.1, b.0, b.1
            );
            drawn += 1;
        }
    }
    h.push_str("</g>\n<g class=\"nodes\">\n");
    for n in inner.iter().chain(outer.iter()) {
        let Some(p) = pos.get(&n.id) else { continue };
        let class = match n.status {
            Status::Reachable => "up",
            Status::Unreachable => "down",
            Status::Unknown => "unknown",
        };
        let fill = if n.status == Status::Reachable {
            colour_of(n)
        } else {
            "none"
        };
        let _ = writeln!(
            h,
            "<circle class=\"{class}\" data-id=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{dot:.1}\" fill=\"{fill}\"><title>{}</title></circle>",
            n.id,
            p.0,
            p.1,
            escape(&tooltip(n))
        );
    }
    h.push_str("</g>\n</svg>\n");
    let _ = writeln!(
        h,
        "<p class=\"note\">Inner rings: reachable nodes, coloured by version. Outer rings: \
         unreachable (grey ring) and never dialled (dotted). Lines: PEX announcements \
         ({drawn} of {} drawn).</p>\n</section>",
        r.edges.len()
    );
    // The summary beside it.
    h.push_str("<aside>\n<h2>Summary</h2>\n<table>\n");
    for (k, v) in [
        ("known", s.known),
        ("reachable", s.reachable),
        ("unreachable", s.unreachable),
        ("not dialled", s.not_dialled),
        ("addresses", s.addresses),
        ("announcements", s.edges),
        ("dials", r.crawl.dials),
    ] {
        let _ = writeln!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    h.push_str("</table>\n<h2>Versions</h2>\n<table>\n");
    for (v, c) in &versions {
        let col = colour.get(v.as_str()).copied().unwrap_or(OTHER);
        let _ = writeln!(
            h,
            "<tr><th><span class=\"swatch\" style=\"background:{col}\"></span>{}</th><td>{c}</td></tr>",
            escape(if v.is_empty() { "(empty)" } else { v })
        );
    }
    h.push_str("</table>\n");
    let section = |h: &mut String, title: &str, rows: &mut dyn Iterator<Item = (String, u64)>| {
        let _ = write!(h, "<h2>{title}</h2>\n<table>\n");
        for (k, v) in rows {
            let _ = writeln!(h, "<tr><th>{}</th><td>{v}</td></tr>", escape(&k));
        }
        h.push_str("</table>\n");
    };
    section(
        &mut h,
        "Failures",
        &mut s.failures.iter().map(|(k, v)| (k.clone(), *v)),
    );
    section(
        &mut h,
        "Channels",
        &mut s.channels.iter().map(|(k, v)| (format!("0x{k}"), *v)),
    );
    section(
        &mut h,
        "Other chains",
        &mut s.other_chains.iter().map(|(k, v)| (k.clone(), *v)),
    );
    let _ = write!(
        h,
        "<h2>Address groups</h2>\n<p>{} groups; the largest holds {:.1} %; HHI {:.4}</p>\n<table>\n",
        s.groups.len(),
        s.largest_group_share * 100.0,
        s.group_hhi
    );
    for g in s.groups.iter().take(10) {
        let _ = writeln!(
            h,
            "<tr><th>{}</th><td>{}</td><td>{} up</td></tr>",
            escape(&g.group),
            g.nodes,
            g.reachable
        );
    }
    h.push_str("</table>\n</aside>\n</main>\n");
    // Every node.
    let _ = write!(
        h,
        "<details>\n<summary>All {} nodes</summary>\n<table class=\"nodes\">\n<tr><th>id</th><th>status</th>\
         <th>address</th><th>moniker</th><th>version</th><th>addresses given</th></tr>\n",
        r.nodes.len()
    );
    for n in &r.nodes {
        let status = match (&n.status, &n.failure) {
            (Status::Reachable, _) => "reachable".to_owned(),
            (_, Some(f)) => format!("{}: {f}", f.kind()),
            (Status::Unknown, None) => "not dialled".to_owned(),
            (Status::Unreachable, None) => "unreachable".to_owned(),
        };
        let _ = writeln!(
            h,
            "<tr id=\"n{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            n.id,
            n.id,
            escape(&status),
            n.main_addr().map(|a| a.to_string()).unwrap_or_default(),
            escape(n.info.as_ref().map_or("", |i| i.moniker.as_str())),
            escape(n.info.as_ref().map_or("", |i| i.version.as_str())),
            n.addrs_given.map(|g| g.to_string()).unwrap_or_default()
        );
    }
    h.push_str("</table>\n</details>\n</body>\n</html>\n");
    h
}

fn tooltip(n: &NodeRecord) -> String {
    let mut t = n.id.to_string();
    if let Some(a) = n.main_addr() {
        let _ = write!(t, " @ {a}");
    }
    if let Some(i) = &n.info {
        let _ = write!(t, "\n{} · {} · {}", i.moniker, i.version, i.network);
    }
    match &n.failure {
        Some(f) => {
            let _ = write!(t, "\n{f}");
        }
        None if n.status == Status::Unknown => t.push_str("\nnot dialled"),
        None => {}
    }
    t
}

const CSS: &str = "body{font:14px system-ui,sans-serif;margin:1em;color:#222;background:#fafafa}\
h1 small{font-weight:normal;color:#666;font-size:60%}\
main{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}\
svg{background:#fff;border:1px solid #ddd;max-width:100%;height:auto}\
.edges line{stroke:#888;stroke-opacity:.12;stroke-width:.5}\
circle.up{stroke:#fff;stroke-width:.3}\
circle.down{stroke:#999;stroke-width:1}\
circle.unknown{stroke:#bbb;stroke-width:1;stroke-dasharray:1 1}\
aside table{border-collapse:collapse;margin-bottom:.5em}\
th{text-align:left;font-weight:normal;padding:1px 8px 1px 0}td{text-align:right;padding:1px 4px}\
.swatch{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:50%}\
table.nodes td{text-align:left;font-family:monospace;font-size:12px;padding:1px 8px 1px 0}\
.note{color:#666;max-width:900px}";

#[cfg(test)]
mod tests {
    use super::*;
    use cometmesh_core::crawl::{
        CrawlMeta, Edge, Failure, InfoRecord, SCHEMA, SCHEMA_VERSION, edges_of, summarize,
    };

    fn node(i: u8, status: Status, moniker: &str, version: &str) -> NodeRecord {
        let json = serde_json::json!({
            "id": NodeId([i; 20]).to_string(),
            "status": status,
            "addresses": [{"addr": format!("10.{i}.0.1:26656"), "announced_by": [NodeId([1; 20]).to_string()], "dials": 1}],
            "first_seen": 1, "last_seen": 2,
        });
        let mut n: NodeRecord = serde_json::from_value(json).expect("record");
        if status == Status::Reachable {
            n.answered_at = Some(n.addresses[0].addr);
            n.info = Some(InfoRecord {
                p2p_version: 8,
                block_version: 11,
                app_version: 0,
                listen_addr: "tcp://0.0.0.0:26656".into(),
                network: "c".into(),
                version: version.into(),
                channels: vec![0x00, 0x20],
                moniker: moniker.into(),
                tx_index: "on".into(),
                rpc_address: String::new(),
            });
        } else {
            n.failure = Some(Failure::Refused);
        }
        n
    }

    fn report() -> CrawlReport {
        let nodes = vec![
            node(1, Status::Reachable, "alpha", "0.38.26"),
            node(2, Status::Reachable, "<script>alert(1)</script>", "0.34.35"),
            node(3, Status::Unreachable, "", ""),
            node(4, Status::Reachable, "d&\"q'", "0.38.26"),
        ];
        let edges: Vec<Edge> = edges_of(&nodes);
        CrawlReport {
            schema: SCHEMA.into(),
            schema_version: SCHEMA_VERSION,
            crawl: CrawlMeta {
                crawler_id: NodeId([9; 20]),
                chain_id: Some("c<hain>".into()),
                chain_id_learned_from: None,
                seeds: vec![],
                started: 0,
                updated: 1,
                elapsed_s: 1.0,
                state: "complete".into(),
                dials: 4,
                rounds: 1,
                dropped_nodes: 0,
            },
            summary: summarize(&nodes, edges.len()),
            nodes,
            edges,
        }
    }

    /// Checks that tags nest properly (the page is also well-formed XML apart from the
    /// doctype), and returns the tag names seen.
    fn check_well_formed(page: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut rest = page;
        while let Some(i) = rest.find('<') {
            rest = &rest[i + 1..];
            let end = rest.find('>').expect("unclosed tag");
            let tag = &rest[..end];
            rest = &rest[end + 1..];
            if tag.starts_with('!') {
                continue;
            }
            assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().expect("close without open");
                assert_eq!(open, name, "mismatched </{name}>");
            } else {
                let name: String = tag
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                seen.push(name.clone());
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        seen
    }

    #[test]
    fn page_is_well_formed_self_contained_and_has_every_node() {
        let r = report();
        let page = render(&r);
        let tags = check_well_formed(&page);
        assert!(tags.iter().any(|t| t == "svg"));
        for n in &r.nodes {
            assert!(
                page.contains(&format!("data-id=\"{}\"", n.id)),
                "node {} drawn",
                n.id
            );
            assert!(
                page.contains(&format!("<tr id=\"n{}\">", n.id)),
                "node {} listed",
                n.id
            );
        }
        assert_eq!(page.matches("<line ").count(), r.edges.len());
        // Nothing is fetched: no script, no external reference.
        for bad in ["<script", "src=", "href=", "url(", "@import"] {
            assert!(!page.contains(bad), "page contains {bad}");
        }
        assert_eq!(page.matches("http").count(), 1, "only the SVG namespace");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("c&lt;hain&gt;"));
    }

    #[test]
    fn same_report_same_page() {
        assert_eq!(render(&report()), render(&report()));
    }
}
