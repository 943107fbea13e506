//! Running nodes on tokio: the engine configuration built from the settings, `start` (one node
//! until Ctrl-C or SIGTERM) and the metrics feed.

use std::sync::Arc;
use std::time::Duration;

use cometmesh_core::engine::EngineConfig;
use cometmesh_tokio as adapter;

use crate::addrbook_file;
use crate::error::{CliError, io_reason};
use crate::metrics::{self, P2pMetrics, Pages, Registry};
use crate::settings::NodeSettings;
use crate::start::Prepared;

/// How long a graceful shutdown may take before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often the metrics are refreshed from the node.
const METRICS_PERIOD: Duration = Duration::from_secs(1);

/// The engine configuration for these settings: every `[p2p]` key the engine has.
#[must_use]
pub fn engine_config(s: &NodeSettings) -> EngineConfig {
    let p = &s.config.p2p;
    let mut c = EngineConfig::default();
    c.listen_addr = s.listen;
    c.external_address = s.external;
    c.chain_id.clone_from(&s.chain_id);
    c.moniker.clone_from(&s.moniker);
    // DNS names stay names: the driver resolves them at every dial.
    for p in &s.seeds {
        c.add_seed(p);
    }
    for p in &s.persistent_peers {
        c.add_persistent_peer(p);
    }
    c.unconditional_peer_ids
        .clone_from(&s.unconditional_peer_ids);
    c.private_peer_ids.clone_from(&s.private_peer_ids);
    // Every other engine field a `[p2p]` key sets is declared with the key (config/p2p.rs).
    p.apply_to(&mut c);
    c
}

/// Maps a node start failure to a one-line error naming the key.
#[must_use]
pub fn start_error(e: adapter::StartError) -> CliError {
    match e {
        adapter::StartError::Listen { addr, source } => CliError::Listen {
            key: "p2p.laddr".to_owned(),
            addr,
            reason: io_reason(&source),
        },
        other => CliError::Node(other.to_string()),
    }
}

/// A multi-threaded tokio runtime (two workers: the node is IO-bound).
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// `start`: runs the node until Ctrl-C or SIGTERM, then shuts it down gracefully (peers
/// disconnected, address book saved).
pub fn run(prepared: Prepared) -> Result<(), CliError> {
    runtime()?.block_on(run_async(prepared))
}

async fn run_async(p: Prepared) -> Result<(), CliError> {
    let s = &p.settings;
    // Bind the metrics port first so a busy port stops us before any peer connects.
    let metrics_listener = match &s.metrics {
        Some(m) => Some((metrics::bind(m.listen).await?, m.clone())),
        None => None,
    };
    let config = engine_config(s);
    let book_config = config.addr_book.clone();
    if let Some(n) = addrbook_file::import_if_newer(&s.addr_book_path, &book_config)? {
        tracing::info!(path = %s.addr_book_path.display(), addresses = n, "imported CometBFT address book");
    }
    let node = adapter::builder(config, p.key.clone())
        .addr_book_path(addrbook_file::binary_path(&s.addr_book_path))
        .start()
        .await
        .map_err(start_error)?;
    tracing::info!(
        node_id = %node.node_id(),
        listen = %node.listen_addr(),
        chain_id = %s.chain_id,
        moniker = %s.moniker,
        seed_mode = s.config.p2p.seed_mode,
        pex = s.config.p2p.pex,
        "node started"
    );
    let mut signals = Signals::install();
    // The machine-readable line tests and scripts look for.
    println!("listening on {} as {}", node.listen_addr(), node.node_id());

    // Peers up and down are logged by the runtime itself.
    let mut tasks = Vec::new();
    if let Some((listener, m)) = metrics_listener {
        let registry = Arc::new(Registry::new());
        let pages = Arc::new(Pages::default());
        let p2p = P2pMetrics::new(Arc::clone(&registry), &m.namespace, &s.chain_id);
        let addr = listener.local_addr().unwrap_or(m.listen);
        tracing::info!(%addr, "serving metrics at /metrics (and a seed's vetted addresses at /vetted)");
        tasks.push(tokio::spawn(metrics::serve(
            listener,
            registry,
            m.max_open_connections,
            Arc::clone(&pages),
        )));
        let vetted = s.config.p2p.seed_mode.then(|| (s.chain_id.clone(), pages));
        tasks.push(tokio::spawn(feed_metrics(node.handle(), p2p, vetted)));
    }

    let signal = signals.recv().await;
    tracing::info!(signal, "shutting down");
    for task in &tasks {
        task.abort();
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, node.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown took longer than {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    match addrbook_file::export(&s.addr_book_path, &book_config) {
        Ok(Some(n)) => {
            tracing::info!(path = %s.addr_book_path.display(), addresses = n, "address book written for CometBFT");
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "address book not exported"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM, watched from the moment this is made: make it before the
/// node announces itself, so that a signal sent right after the announcement is not lost to
/// the default handler.
pub(crate) struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub(crate) fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let watch = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch {name}");
                None
            }
        };
        Signals {
            int: watch(SignalKind::interrupt(), "SIGINT"),
            term: watch(SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Waits for either signal; returns its name.
    pub(crate) async fn recv(&mut self) -> &'static str {
        async fn one(s: Option<&mut tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = one(self.int.as_mut()) => "SIGINT",
            () = one(self.term.as_mut()) => "SIGTERM",
        }
    }
}

/// Refreshes the metrics (and, for a seed, the `/vetted` document of its chain) from the node
/// once per [`METRICS_PERIOD`] until it stops.
async fn feed_metrics(
    handle: adapter::Handle,
    m: P2pMetrics,
    vetted: Option<(String, Arc<Pages>)>,
) {
    let mut known: Vec<String> = Vec::new();
    let (mut last_bans, mut last_dial_failures) = (0, 0);
    let mut tick = tokio::time::interval(METRICS_PERIOD);
    loop {
        tick.tick().await;
        let (Ok(status), Ok(peers)) = (handle.status().await, handle.peers().await) else {
            return;
        };
        if let Some((chain_id, pages)) = &vetted {
            let Ok(addrs) = handle.vetted_addrs().await else {
                return;
            };
            let entry = crate::seed::vetted_entry(chain_id, &handle, &addrs);
            pages.set(
                "/vetted",
                "application/json",
                crate::seed::vetted_doc(vec![entry]),
            );
        }
        m.set_peers(status.inbound + status.outbound);
        let c = status.counters;
        for _ in last_bans..c.bans {
            m.inc_bans();
        }
        for _ in last_dial_failures..c.dial_failures {
            m.inc_dial_failures();
        }
        (last_bans, last_dial_failures) = (c.bans, c.dial_failures);
        m.set_addrbook_size("all", status.book_len);
        let mut now: Vec<String> = Vec::with_capacity(peers.len());
        for peer in &peers {
            let id = peer.info.id.to_string();
            let mut pending = 0u64;
            for ch in &peer.conn.channels {
                m.set_peer_channel_bytes(&id, ch.id.0, ch.bytes_sent, ch.bytes_received);
                pending += ch.pending_bytes as u64;
            }
            m.set_peer_pending(&id, pending);
            now.push(id);
        }
        for gone in known.iter().filter(|id| !now.contains(id)) {
            m.remove_peer(gone);
        }
        known = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::home::Home;

    /// Seeds and persistent peers given by DNS name reach the engine as names (resolved by the
    /// driver at every dial), never resolved here: `.test` names resolve nowhere.
    #[test]
    fn dns_names_reach_the_engine_as_names() {
        let (a, b) = (
            "7627de929814c7484dc6bf94f60166ab3115b316",
            "0000000000000000000000000000000000000001",
        );
        let mut config = Config::default();
        config.p2p.seeds = format!("{a}@seed.example.test:26656");
        config.p2p.persistent_peers = format!("{b}@peer.example.test:26657,{a}@1.2.3.4:8");
        let s = NodeSettings::resolve(&Home::new("/h"), config, "chain".into()).unwrap();
        let c = engine_config(&s);
        let names: Vec<String> = c.dial_names.values().map(ToString::to_string).collect();
        assert_eq!(
            names,
            ["peer.example.test:26657", "seed.example.test:26656"],
            "by node id: {b} < {a}"
        );
        assert_eq!(c.seeds[0].addr, "0.0.0.0:26656".parse().unwrap());
        assert_eq!(c.persistent_peers[0].addr, "0.0.0.0:26657".parse().unwrap());
        assert_eq!(c.persistent_peers[1].addr, "1.2.3.4:8".parse().unwrap());
    }

    #[test]
    fn every_p2p_key_reaches_the_engine() {
        let id = "7627de929814c7484dc6bf94f60166ab3115b316";
        let mut config = Config::default();
        let p = &mut config.p2p;
        p.laddr = "tcp://127.0.0.1:5".into();
        p.external_address = "1.2.3.4:6".into();
        p.seeds = format!("{id}@1.2.3.4:7");
        p.persistent_peers = format!("{id}@1.2.3.4:8");
        p.unconditional_peer_ids = id.into();
        p.private_peer_ids = id.into();
        p.max_num_inbound_peers = 3;
        p.max_num_outbound_peers = 4;
        p.seed_mode = true;
        p.pex = false;
        p.allow_duplicate_ip = true;
        p.addr_book_strict = false;
        p.flush_throttle_timeout = Duration::from_millis(7);
        p.max_packet_msg_payload_size = 2048;
        p.send_rate = 11;
        p.recv_rate = 12;
        p.persistent_peers_max_dial_period = Duration::from_secs(9);
        let s = NodeSettings::resolve(&Home::new("/h"), config, "chain".into()).unwrap();
        let c = engine_config(&s);
        assert_eq!(c.listen_addr, "127.0.0.1:5".parse().unwrap());
        assert_eq!(c.external_address, Some("1.2.3.4:6".parse().unwrap()));
        assert_eq!(c.seeds.len(), 1);
        assert_eq!(c.persistent_peers[0].addr.port(), 8);
        assert_eq!(c.unconditional_peer_ids.len(), 1);
        assert_eq!(c.private_peer_ids.len(), 1);
        assert_eq!((c.max_num_inbound_peers, c.max_num_outbound_peers), (3, 4));
        assert!(c.seed_mode && !c.pex && c.allow_duplicate_ip && !c.addr_book_strict);
        assert!(!c.addr_book.strict);
        assert_eq!(c.addr_book.min_selection, 32);
        assert_eq!(c.seed_disconnect_wait, Duration::from_secs(28 * 3600));
        assert_eq!(c.crawl_period, Duration::from_secs(30));
        assert_eq!(c.min_time_between_crawls, Duration::from_secs(120));
        assert_eq!(c.seed_vetted_window, Duration::from_secs(24 * 3600));
        assert_eq!(c.connection.flush_throttle, Duration::from_millis(7));
        assert_eq!(c.connection.max_packet_payload, 2048);
        assert_eq!((c.connection.send_rate, c.connection.recv_rate), (11, 12));
        assert_eq!(c.persistent_redial_cap, Duration::from_secs(9));
        assert_eq!(c.chain_id, "chain");
        // A stock CometBFT home says 20s; CometBFT applies 3 s per phase, and so do we.
        assert_eq!(c.handshake_timeout, Duration::from_secs(3));
        assert_eq!(c.connection.handshake_timeout, Duration::from_secs(3));
        let mut config = Config::default();
        config.p2p.handshake_timeout = Duration::from_secs(60);
        config.p2p.handshake_phase_timeout = Duration::from_secs(7);
        config.p2p.seed_mode = true;
        config.p2p.seed_disconnect_wait = Duration::from_secs(3600);
        config.p2p.seed_crawl_period = Duration::from_secs(10);
        config.p2p.seed_min_time_between_crawls = Duration::from_secs(600);
        config.p2p.seed_min_reply_size = 100;
        config.p2p.seed_vetted_window = Duration::ZERO;
        config.p2p.feeler_interval = Duration::from_millis(10);
        config.p2p.inbound_attempts_per_ip_per_minute = 5;
        config.p2p.inbound_attempts_per_group_per_minute = 0;
        let s = NodeSettings::resolve(&Home::new("/h"), config, "chain".into()).unwrap();
        let c = engine_config(&s);
        assert_eq!(c.feeler_interval, Duration::from_secs(1));
        assert_eq!(
            (
                c.inbound_attempts_per_ip_per_minute,
                c.inbound_attempts_per_group_per_minute
            ),
            (5, 0)
        );
        assert_eq!(c.handshake_timeout, Duration::from_secs(7));
        assert_eq!(c.seed_disconnect_wait, Duration::from_secs(3600));
        assert_eq!(c.crawl_period, Duration::from_secs(10));
        assert_eq!(c.min_time_between_crawls, Duration::from_secs(600));
        assert_eq!(c.addr_book.min_selection, 100);
        assert_eq!(
            c.seed_vetted_window,
            Duration::ZERO,
            "0s: CometBFT's policy"
        );
    }
}
