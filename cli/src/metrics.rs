//! Prometheus metrics: a small registry, CometBFT's p2p metric names plus cometmesh's own, and
//! a minimal HTTP/1.1 endpoint serving the text exposition format at `/metrics`.
//!
//! The endpoint is a few dozen lines on tokio rather than an HTTP framework: it answers one
//! `GET /metrics` per connection and closes, which is all a Prometheus scraper needs.
//!
//! The registry is ours too, not `prometheus-client`'s: that crate writes OpenMetrics (counter
//! families renamed without `_total`, a `# EOF` trailer), while CometBFT serves the 0.0.4 text
//! format under exactly the names below, which dashboards match. The `prometheus` crate writes
//! 0.0.4, but would trade the 40 lines of `render` for a dependency tree and a second metric
//! model (typed vectors) beside the one the CLI needs.
//!
//! Names (namespace `cometbft` by default, as CometBFT's `p2p/metrics.gen.go`; every CometBFT
//! series also carries the `chain_id` label, as CometBFT's node adds it):
//! - `cometbft_p2p_peers` (gauge)
//! - `cometbft_p2p_peer_receive_bytes_total{peer_id,chID}` (counter, `chID` as `0x20`)
//! - `cometbft_p2p_peer_send_bytes_total{peer_id,chID}` (counter)
//! - `cometbft_p2p_peer_pending_send_bytes{peer_id}` (gauge)
//! - `cometmesh_bans_total`, `cometmesh_dial_failures_total` (counters),
//!   `cometmesh_addrbook_size{table}` (gauge; `table="all"` while the runtime reports only
//!   the total, `"new"`/`"old"` per table where it reports them)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that only grows (resets when the process restarts).
    Counter,
    /// A value that goes up and down.
    Gauge,
}

type Labels = Vec<(String, String)>;

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: Kind,
    samples: BTreeMap<Labels, f64>,
}

/// A set of metric families, rendered in the Prometheus text format in name order.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<String, Family>>,
}

impl Registry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Family>) -> R) -> R {
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut families)
    }

    /// Declares a family; it is rendered (with its HELP and TYPE lines) even with no samples.
    pub fn describe(&self, name: &str, help: &'static str, kind: Kind) {
        self.with(|families| {
            families.entry(name.to_owned()).or_insert_with(|| Family {
                help,
                kind,
                samples: BTreeMap::new(),
            });
        });
    }

    fn update(&self, name: &str, labels: &[(&str, &str)], f: impl FnOnce(&mut f64)) {
        let labels: Labels = labels
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        self.with(|families| {
            if let Some(family) = families.get_mut(name) {
                f(family.samples.entry(labels).or_insert(0.0));
            }
        });
    }

    /// Sets a sample (of a described family; others are ignored).
    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.update(name, labels, |v| *v = value);
    }

    /// Adds to a sample.
    pub fn add(&self, name: &str, labels: &[(&str, &str)], delta: f64) {
        self.update(name, labels, |v| *v += delta);
    }

    /// The current value of a sample, if present.
    #[must_use]
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: Labels = labels
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        self.with(|families| families.get(name)?.samples.get(&labels).copied())
    }

    /// Removes every sample of `name` whose label `label` equals `value`.
    pub fn remove_where(&self, name: &str, label: &str, value: &str) {
        self.with(|families| {
            if let Some(family) = families.get_mut(name) {
                family
                    .samples
                    .retain(|labels, _| !labels.iter().any(|(k, v)| k == label && v == value));
            }
        });
    }

    /// The text exposition format (version 0.0.4).
    #[must_use]
    pub fn render(&self) -> String {
        self.with(|families| {
            let mut out = String::new();
            for (name, family) in families.iter() {
                let kind = match family.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                };
                let _ = writeln!(out, "# HELP {name} {}", family.help);
                let _ = writeln!(out, "# TYPE {name} {kind}");
                for (labels, value) in &family.samples {
                    out.push_str(name);
                    if !labels.is_empty() {
                        out.push('{');
                        for (i, (k, v)) in labels.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                        }
                        out.push('}');
                    }
                    let _ = writeln!(out, " {}", format_value(*value));
                }
            }
            out
        })
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

/// The p2p metrics of one node, under CometBFT's names and ours.
#[derive(Debug, Clone)]
pub struct P2pMetrics {
    registry: Arc<Registry>,
    chain_id: String,
    peers: String,
    receive_bytes: String,
    send_bytes: String,
    pending_send_bytes: String,
}

/// `cometmesh_bans_total`.
pub const BANS_TOTAL: &str = "cometmesh_bans_total";
/// `cometmesh_dial_failures_total`.
pub const DIAL_FAILURES_TOTAL: &str = "cometmesh_dial_failures_total";
/// `cometmesh_addrbook_size`.
pub const ADDRBOOK_SIZE: &str = "cometmesh_addrbook_size";

impl P2pMetrics {
    /// Declares the families in `registry`; `namespace` prefixes CometBFT's names.
    #[must_use]
    pub fn new(registry: Arc<Registry>, namespace: &str, chain_id: &str) -> Self {
        let name = |suffix: &str| {
            if namespace.is_empty() {
                format!("p2p_{suffix}")
            } else {
                format!("{namespace}_p2p_{suffix}")
            }
        };
        let metrics = P2pMetrics {
            registry,
            chain_id: chain_id.to_owned(),
            peers: name("peers"),
            receive_bytes: name("peer_receive_bytes_total"),
            send_bytes: name("peer_send_bytes_total"),
            pending_send_bytes: name("peer_pending_send_bytes"),
        };
        let r = &metrics.registry;
        r.describe(&metrics.peers, "Number of peers.", Kind::Gauge);
        r.describe(
            &metrics.receive_bytes,
            "Number of bytes received from a given peer.",
            Kind::Counter,
        );
        r.describe(
            &metrics.send_bytes,
            "Number of bytes sent to a given peer.",
            Kind::Counter,
        );
        r.describe(
            &metrics.pending_send_bytes,
            "Pending bytes to be sent to a given peer.",
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
        r.set(BANS_TOTAL, &[], 0.0);
        r.set(DIAL_FAILURES_TOTAL, &[], 0.0);
        metrics.set_peers(0);
        metrics
    }

    /// The registry the metrics live in.
    #[must_use]
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Sets the number of connected peers.
    pub fn set_peers(&self, n: usize) {
        self.registry
            .set(&self.peers, &[("chain_id", &self.chain_id)], n as f64);
    }

    /// Sets the byte totals of one peer on one channel.
    pub fn set_peer_channel_bytes(&self, peer: &str, channel: u8, sent: u64, received: u64) {
        let ch = format!("{channel:#x}");
        let labels = [
            ("chain_id", self.chain_id.as_str()),
            ("peer_id", peer),
            ("chID", ch.as_str()),
        ];
        self.registry.set(&self.send_bytes, &labels, sent as f64);
        self.registry
            .set(&self.receive_bytes, &labels, received as f64);
    }

    /// Sets the bytes queued for one peer.
    pub fn set_peer_pending(&self, peer: &str, bytes: u64) {
        let labels = [("chain_id", self.chain_id.as_str()), ("peer_id", peer)];
        self.registry
            .set(&self.pending_send_bytes, &labels, bytes as f64);
    }

    /// Drops the per-peer series of a peer that left.
    pub fn remove_peer(&self, peer: &str) {
        for name in [
            &self.receive_bytes,
            &self.send_bytes,
            &self.pending_send_bytes,
        ] {
            self.registry.remove_where(name, "peer_id", peer);
        }
    }

    /// Counts a ban.
    pub fn inc_bans(&self) {
        self.registry.add(BANS_TOTAL, &[], 1.0);
    }

    /// Counts a failed dial.
    pub fn inc_dial_failures(&self) {
        self.registry.add(DIAL_FAILURES_TOTAL, &[], 1.0);
    }

    /// Sets the size of one address-book table (`new`, `old`, or `all` for the whole book).
    pub fn set_addrbook_size(&self, table: &str, len: usize) {
        self.registry
            .set(ADDRBOOK_SIZE, &[("table", table)], len as f64);
    }
}

/// Why the metrics endpoint cannot start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on instrumentation.prometheus_listen_addr {addr}: {}",
    crate::io_reason::io_reason(source)
)]
pub struct MetricsBindError {
    /// The address.
    pub addr: SocketAddr,
    /// The OS error.
    pub source: std::io::Error,
}

/// Binds the metrics listener (so a busy port is reported before the node starts).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsBindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsBindError { addr, source })
}

/// Longest request head read, and the time a client has to send it.
const MAX_REQUEST: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Documents served beside `/metrics` (e.g. the seed's `/vetted`): path → content type and
/// body, refreshed by their owner, served as they are.
#[derive(Debug, Default)]
pub struct Pages(Mutex<BTreeMap<String, (&'static str, String)>>);

impl Pages {
    /// Sets the document at `path` (e.g. `/vetted`).
    pub fn set(&self, path: &str, content_type: &'static str, body: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), (content_type, body));
    }

    fn get(&self, path: &str) -> Option<(&'static str, String)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .cloned()
    }
}

/// Serves `/metrics` (and `pages`) until the task is dropped; `max_open_connections` of 0
/// means no limit.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    max_open_connections: u32,
    pages: Arc<Pages>,
) {
    let limit = if max_open_connections == 0 {
        Semaphore::MAX_PERMITS
    } else {
        max_open_connections as usize
    };
    let permits = Arc::new(Semaphore::new(limit));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let registry = Arc::clone(&registry);
        let pages = Arc::clone(&pages);
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &registry, &pages).await {
                tracing::debug!(%peer, error = %e, "metrics request failed");
            }
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry, pages: &Pages) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let head = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
                return Ok::<bool, std::io::Error>(true);
            }
            if buf.len() >= MAX_REQUEST {
                return Ok(false);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(!buf.is_empty());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let complete = match head {
        Ok(result) => result?,
        Err(_) => return Ok(()),
    };
    let request_line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = if !complete {
        (
            "431 Request Header Fields Too Large",
            "text/plain",
            String::new(),
        )
    } else if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        )
    } else if path == "/metrics" {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            registry.render(),
        )
    } else if let Some((content_type, body)) = pages.get(path) {
        ("200 OK", content_type, body)
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_owned())
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cometbft_names_and_labels() {
        let registry = Arc::new(Registry::new());
        let m = P2pMetrics::new(Arc::clone(&registry), "cometbft", "test-chain");
        m.set_peers(2);
        m.set_peer_channel_bytes("aabb", 0x20, 10, 20);
        m.set_peer_pending("aabb", 5);
        m.inc_bans();
        m.inc_dial_failures();
        m.inc_dial_failures();
        m.set_addrbook_size("new", 7);
        m.set_addrbook_size("old", 1);
        let text = registry.render();
        for line in [
            "# TYPE cometbft_p2p_peers gauge",
            "cometbft_p2p_peers{chain_id=\"test-chain\"} 2",
            "# TYPE cometbft_p2p_peer_send_bytes_total counter",
            "cometbft_p2p_peer_send_bytes_total{chain_id=\"test-chain\",peer_id=\"aabb\",chID=\"0x20\"} 10",
            "cometbft_p2p_peer_receive_bytes_total{chain_id=\"test-chain\",peer_id=\"aabb\",chID=\"0x20\"} 20",
            "cometbft_p2p_peer_pending_send_bytes{chain_id=\"test-chain\",peer_id=\"aabb\"} 5",
            "cometmesh_bans_total 1",
            "cometmesh_dial_failures_total 2",
            "cometmesh_addrbook_size{table=\"new\"} 7",
            "cometmesh_addrbook_size{table=\"old\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        m.remove_peer("aabb");
        assert!(!registry.render().contains("aabb"));
    }

    #[test]
    fn channel_zero_is_labelled_like_go() {
        let registry = Arc::new(Registry::new());
        let m = P2pMetrics::new(Arc::clone(&registry), "cometbft", "c");
        m.set_peer_channel_bytes("p", 0, 1, 1);
        assert!(registry.render().contains("chID=\"0x0\""));
    }

    #[test]
    fn label_values_are_escaped() {
        let registry = Registry::new();
        registry.describe("x", "help", Kind::Gauge);
        registry.set("x", &[("l", "a\"b\\c\nd")], 1.5);
        assert!(registry.render().contains("x{l=\"a\\\"b\\\\c\\nd\"} 1.5"));
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let registry = Arc::new(Registry::new());
        let m = P2pMetrics::new(Arc::clone(&registry), "cometbft", "c");
        m.set_peers(3);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::clone(&registry), 3, Arc::default()));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
                .await
                .unwrap()
                .unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("cometbft_p2p_peers{chain_id=\"c\"} 3"));
        let missing = get("/").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        server.abort();
    }

    #[tokio::test]
    async fn busy_port_is_reported_with_the_key() {
        let first = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err().to_string();
        assert!(
            err.starts_with("cannot listen on instrumentation.prometheus_listen_addr"),
            "{err}"
        );
        assert!(err.contains("in use"), "{err}");
    }
}
