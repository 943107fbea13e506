//! `cometmesh seed --config seeds.toml`: seeds several chains in one process. Each chain has
//! its own engine, address book, bans and metrics; chains on a shared port take their
//! connections from one [`SharedPort`](cometmesh_tokio::SharedPort), which answers each peer
//! as the chain its NodeInfo names and refuses other chains.
//!
//! Prints `listening on ADDR as ID for chain CHAIN` per chain once every listener is bound.
//! With `prometheus = true` it serves `/metrics` (see [`crate::seed_metrics`]) and `/vetted`:
//! the vetted addresses each chain serves now, as JSON (refreshed once a second):
//!
//! ```json
//! {"chains":[{"chain_id":"a","node_id":"…","listen_addr":"127.0.0.1:26656",
//!             "vetted":["id@1.2.3.4:26656", …]}]}
//! ```

use std::sync::Arc;
use std::time::Duration;

use cometmesh_tokio as adapter;

use crate::addrbook_file;
use crate::error::{CliError, io_reason};
use crate::metrics::{self, Pages, Registry};
use crate::node::{Signals, engine_config, runtime};
use crate::seed_config::{ChainPlan, SeedPlan};
use crate::seed_metrics::{ChainMetrics, PeerBytesSnapshot, Snapshot};

/// How long a graceful shutdown of all chains may take before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often metrics and `/vetted` are refreshed.
const REFRESH_PERIOD: Duration = Duration::from_secs(1);

/// Runs the seed until Ctrl-C or SIGTERM, then stops every chain gracefully and writes each
/// chain's address book.
pub fn run(plan: SeedPlan) -> Result<(), CliError> {
    runtime()?.block_on(async {
        // Watched from before the chains announce themselves, so that a signal sent right
        // after the announcement is not lost to the default handler.
        let mut signals = Signals::install();
        serve(plan, async move {
            let signal = signals.recv().await;
            tracing::info!(signal, "shutting down");
        })
        .await
    })
}

fn listen_error(chain: &ChainPlan, e: adapter::StartError) -> CliError {
    match e {
        adapter::StartError::Listen { addr, source } => CliError::Listen {
            key: format!("chain[{}].laddr", chain.index),
            addr,
            reason: io_reason(&source),
        },
        other => CliError::Node(format!("chain {}: {other}", chain.settings.chain_id)),
    }
}

/// Runs the seed of `plan` on the current tokio runtime until `stop` completes, then stops
/// every chain gracefully and writes each chain's address book (what [`run`] does between
/// two signals; a library entry point for tests and embedders).
pub async fn serve(
    plan: SeedPlan,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), CliError> {
    let metrics_listener = match &plan.metrics {
        Some(m) => Some((metrics::bind(m.listen).await?, m.clone())),
        None => None,
    };
    for c in &plan.chains {
        let book = engine_config(&c.settings).addr_book;
        if let Some(n) = addrbook_file::import_if_newer(&c.settings.addr_book_path, &book)? {
            tracing::info!(chain_id = %c.settings.chain_id, path = %c.settings.addr_book_path.display(), addresses = n, "imported CometBFT address book");
        }
    }
    let mut nodes: Vec<(usize, adapter::Node)> = Vec::new();
    let mut ports = Vec::new();
    for (_, shared, members) in plan.ports() {
        let first = &plan.chains[members[0]];
        let port = if shared {
            Some(
                adapter::shared_port(first.settings.listen, first.key.clone())
                    .await
                    .map_err(|e| listen_error(first, e))?
                    .phase_timeout(
                        first
                            .settings
                            .config
                            .p2p
                            .handshake_phase_timeout
                            .max(Duration::from_millis(1)),
                    ),
            )
        } else {
            None
        };
        for &i in &members {
            let c = &plan.chains[i];
            let mut b = adapter::builder(engine_config(&c.settings), c.key.clone())
                .addr_book_path(addrbook_file::binary_path(&c.settings.addr_book_path));
            if let Some(p) = &port {
                b = b.shared_port(p);
            }
            let node = b.start().await.map_err(|e| listen_error(c, e))?;
            nodes.push((i, node));
        }
        ports.extend(port.map(adapter::SharedPort::start));
    }
    for (i, node) in &nodes {
        let c = &plan.chains[*i];
        tracing::info!(
            chain_id = %c.settings.chain_id,
            node_id = %node.node_id(),
            listen = %node.listen_addr(),
            shared_port = c.shared_port,
            seed_mode = c.settings.config.p2p.seed_mode,
            "chain started"
        );
        println!(
            "listening on {} as {} for chain {}",
            node.listen_addr(),
            node.node_id(),
            c.settings.chain_id
        );
    }

    let mut tasks = Vec::new();
    if let Some((listener, m)) = metrics_listener {
        let registry = Arc::new(Registry::new());
        let pages = Arc::new(Pages::default());
        let addr = listener.local_addr().unwrap_or(m.listen);
        tracing::info!(%addr, "serving metrics at /metrics and vetted addresses at /vetted");
        tasks.push(tokio::spawn(metrics::serve(
            listener,
            Arc::clone(&registry),
            m.max_open_connections,
            Arc::clone(&pages),
        )));
        let chains: Vec<(String, adapter::Handle, ChainMetrics)> = nodes
            .iter()
            .map(|(i, n)| {
                let id = plan.chains[*i].settings.chain_id.clone();
                let cm = ChainMetrics::new(Arc::clone(&registry), &m.namespace, &id);
                (id, n.handle(), cm)
            })
            .collect();
        tasks.push(tokio::spawn(refresh(chains, pages)));
    }

    stop.await;
    for task in &tasks {
        task.abort();
    }
    drop(ports);
    let stops = futures::future::join_all(nodes.into_iter().map(|(_, n)| n.shutdown()));
    if tokio::time::timeout(SHUTDOWN_GRACE, stops).await.is_err() {
        tracing::warn!("shutdown took longer than {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    for c in &plan.chains {
        let book = engine_config(&c.settings).addr_book;
        match addrbook_file::export(&c.settings.addr_book_path, &book) {
            Ok(Some(n)) => {
                tracing::info!(chain_id = %c.settings.chain_id, path = %c.settings.addr_book_path.display(), addresses = n, "address book written for CometBFT");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(chain_id = %c.settings.chain_id, error = %e, "address book not exported");
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Refreshes every chain's metrics and the `/vetted` document once per [`REFRESH_PERIOD`].
async fn refresh(mut chains: Vec<(String, adapter::Handle, ChainMetrics)>, pages: Arc<Pages>) {
    let mut tick = tokio::time::interval(REFRESH_PERIOD);
    loop {
        tick.tick().await;
        let mut doc = Vec::with_capacity(chains.len());
        for (chain_id, handle, m) in &mut chains {
            let (Ok(status), Ok(peers), Ok(vetted)) = (
                handle.status().await,
                handle.peers().await,
                handle.vetted_addrs().await,
            ) else {
                return;
            };
            let peer_bytes = peers
                .iter()
                .map(|p| {
                    let channels = p
                        .conn
                        .channels
                        .iter()
                        .map(|ch| (ch.id.0, ch.bytes_sent, ch.bytes_received))
                        .collect();
                    let pending = p
                        .conn
                        .channels
                        .iter()
                        .map(|ch| ch.pending_bytes as u64)
                        .sum();
                    PeerBytesSnapshot {
                        id: p.info.id.to_string(),
                        channels,
                        pending,
                    }
                })
                .collect();
            m.update(&Snapshot {
                peers: status.inbound + status.outbound,
                bans: status.counters.bans,
                dial_failures: status.counters.dial_failures,
                book_len: status.book_len,
                vetted: vetted.len(),
                peer_bytes,
            });
            doc.push(vetted_entry(chain_id, handle, &vetted));
        }
        pages.set("/vetted", "application/json", vetted_doc(doc));
    }
}

/// One chain's entry of the `/vetted` document.
#[must_use]
pub fn vetted_entry(
    chain_id: &str,
    handle: &adapter::Handle,
    vetted: &[adapter::NetAddr],
) -> serde_json::Value {
    serde_json::json!({
        "chain_id": chain_id,
        "node_id": handle.node_id().to_string(),
        "listen_addr": handle.listen_addr().to_string(),
        "vetted": vetted.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// The `/vetted` document: `{"chains": [entry, ...]}` and a newline.
#[must_use]
pub fn vetted_doc(chains: Vec<serde_json::Value>) -> String {
    serde_json::json!({ "chains": chains }).to_string() + "\n"
}
