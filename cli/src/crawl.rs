//! `cometmesh crawl`: the [`Crawler`] state machine of `cometmesh_core::crawl` driven on tokio
//! over TCP, with DNS for the seeds, a progress line, Ctrl-C, and the JSON, HTML and terminal
//! outputs.
//!
//! Embedders call [`crawl`] from their own tokio runtime:
//!
//! ```no_run
//! # async fn f() -> Result<(), cometmesh_cli::crawl::CrawlRunError> {
//! use cometmesh_cli::crawl::{CrawlEvent, CrawlJob, crawl};
//! use cometmesh_core::crawl::CrawlConfig;
//!
//! let job = CrawlJob {
//!     seeds: vec!["0123456789abcdef0123456789abcdef01234567@seed.example.com:26656".parse()?],
//!     config: CrawlConfig::default(),
//!     resume: None,
//! };
//! let report = crawl(job, |event| {
//!     if let CrawlEvent::Note(note) = event {
//!         eprintln!("{note}");
//!     }
//! }, std::future::pending()).await?;
//! println!("{} reachable nodes", report.summary.reachable);
//! # Ok(()) }
//! ```
//!
//! One task owns the crawler; each connection has one task that dials, reads, and writes what
//! the crawler hands it, reporting back through one channel (the engine's loop contract).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cometmesh_core::ConnId;
use cometmesh_core::addr::{AddrError, Host, NetAddr, PeerAddr, parse_peer_list};
use cometmesh_core::crawl::{
    CrawlConfig, CrawlConfigError, CrawlReport, Crawler, Note, Progress, ResumeError,
};
use cometmesh_core::engine::{CloseCause, DialFailure, Input, Output};
use cometmesh_core::identity::NodeKey;
use rand_core::RngCore as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::crawl_args::CrawlArgs;
use crate::error::CliError;

/// What to crawl.
#[derive(Debug, Clone)]
pub struct CrawlJob {
    /// Where to start (DNS names are resolved; a name that does not resolve is reported as a
    /// [`CrawlEvent::BadSeed`] and skipped).
    pub seeds: Vec<PeerAddr>,
    /// Settings; its `seeds` are extended with the resolved `seeds` above.
    pub config: CrawlConfig,
    /// A previous report to continue.
    pub resume: Option<CrawlReport>,
}

/// Something the caller of [`crawl`] may show.
#[derive(Debug)]
#[non_exhaustive]
pub enum CrawlEvent<'a> {
    /// A log-worthy note from the crawler.
    Note(&'a Note),
    /// Counts, about four times a second.
    Progress(Progress),
    /// A seed that could not be used.
    BadSeed {
        /// The seed as given.
        seed: String,
        /// Why.
        reason: String,
    },
    /// The report so far, every 30 s (for checkpoints).
    Checkpoint(&'a CrawlReport),
}

/// Why a crawl could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrawlRunError {
    /// A setting was refused.
    #[error(transparent)]
    Config(#[from] CrawlConfigError),
    /// The report to resume does not fit.
    #[error("cannot resume: {0}")]
    Resume(#[from] ResumeError),
    /// A seed did not parse.
    #[error(transparent)]
    Addr(#[from] AddrError),
    /// No seed could be used and there is nothing to resume.
    #[error("no usable seed (give --seeds or --peers, or --resume a report)")]
    NoSeeds,
}

/// How long to keep closing connections after a stop before giving up on them.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Longest a socket write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a checkpoint is offered.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

enum Cmd {
    Write(Bytes),
    Close,
}

/// Runs a crawl to its end (or until `stop` completes, e.g. on Ctrl-C) and returns the
/// report. `on_event` sees notes, progress and checkpoints.
pub async fn crawl(
    job: CrawlJob,
    mut on_event: impl FnMut(CrawlEvent<'_>),
    stop: impl Future<Output = ()>,
) -> Result<CrawlReport, CrawlRunError> {
    let mut config = job.config;
    for seed in &job.seeds {
        match resolve(seed).await {
            Ok(a) => {
                if !config.seeds.contains(&a) {
                    config.seeds.push(a);
                }
            }
            Err(reason) => on_event(CrawlEvent::BadSeed {
                seed: seed.to_string(),
                reason,
            }),
        }
    }
    if config.seeds.is_empty() && job.resume.is_none() {
        return Err(CrawlRunError::NoSeeds);
    }
    let mut rng = rand_core::OsRng;
    let key = NodeKey::generate(&mut rng);
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let start = Instant::now();
    let mut crawler = Crawler::new(config, key, seed, start, unix)?;
    if let Some(r) = job.resume {
        crawler.resume(r)?;
    }

    let (io_tx, mut io_rx) = mpsc::unbounded_channel::<Input>();
    let mut conns: BTreeMap<ConnId, mpsc::UnboundedSender<Cmd>> = BTreeMap::new();
    let mut progress = tokio::time::interval(Duration::from_millis(250));
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut checkpoint = tokio::time::interval_at(
        tokio::time::Instant::now() + CHECKPOINT_EVERY,
        CHECKPOINT_EVERY,
    );
    tokio::pin!(stop);
    let mut stopped_at: Option<Instant> = None;
    loop {
        while let Some(out) = crawler.poll_output() {
            match out {
                Output::Dial { conn, addr } => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    conns.insert(conn, tx);
                    tokio::spawn(connection(conn, addr, rx, io_tx.clone()));
                }
                Output::Transmit { conn, data } => {
                    if let Some(tx) = conns.get(&conn) {
                        let _ = tx.send(Cmd::Write(data));
                    }
                }
                Output::Close { conn } => {
                    if let Some(tx) = conns.get(&conn) {
                        let _ = tx.send(Cmd::Close);
                    }
                }
                _ => {}
            }
        }
        while let Some(note) = crawler.poll_note() {
            on_event(CrawlEvent::Note(&note));
        }
        if crawler.is_done() || stopped_at.is_some_and(|t| t.elapsed() > STOP_GRACE) {
            break;
        }
        let deadline = crawler
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some(input) = io_rx.recv() => {
                if let Input::Closed { conn, .. } | Input::DialFailed { conn, .. } = &input {
                    conns.remove(conn);
                }
                // An input for a connection the crawler already forgot is a race with its
                // close; nothing to do.
                let _ = crawler.handle_input(Instant::now(), input);
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                crawler.handle_timeout(Instant::now());
            }
            _ = progress.tick() => {
                on_event(CrawlEvent::Progress(crawler.progress()));
            }
            _ = checkpoint.tick() => {
                let report = crawler.report(Instant::now());
                on_event(CrawlEvent::Checkpoint(&report));
            }
            () = &mut stop, if stopped_at.is_none() => {
                crawler.stop(Instant::now());
                stopped_at = Some(Instant::now());
            }
        }
    }
    on_event(CrawlEvent::Progress(crawler.progress()));
    Ok(crawler.report(Instant::now()))
}

/// Resolves a seed's DNS name (the first address).
async fn resolve(seed: &PeerAddr) -> Result<NetAddr, String> {
    match &seed.host {
        Host::Ip(ip) => Ok(NetAddr::new(seed.id, SocketAddr::new(*ip, seed.port))),
        Host::Dns(name) => {
            let mut addrs = tokio::net::lookup_host((name.as_str(), seed.port))
                .await
                .map_err(|e| format!("cannot resolve {name}: {}", crate::error::io_reason(&e)))?;
            addrs
                .next()
                .map(|a| NetAddr::new(seed.id, a))
                .ok_or_else(|| format!("{name} has no address"))
        }
    }
}

/// One connection: dial, then read and write until told to close or the socket ends.
async fn connection(
    conn: ConnId,
    addr: SocketAddr,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    io: mpsc::UnboundedSender<Input>,
) {
    let dialled = tokio::select! {
        r = TcpStream::connect(addr) => r,
        _ = cmds.recv() => {
            let _ = io.send(Input::Closed { conn, cause: CloseCause::Local });
            return;
        }
    };
    let stream = match dialled {
        Ok(s) => s,
        Err(e) => {
            use std::io::ErrorKind;
            let error = match e.kind() {
                ErrorKind::ConnectionRefused => DialFailure::Refused,
                ErrorKind::TimedOut => DialFailure::TimedOut,
                ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                    DialFailure::Unreachable
                }
                _ => DialFailure::Io,
            };
            let _ = io.send(Input::DialFailed { conn, error });
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let _ = io.send(Input::Connected { conn });
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0u8; 16 * 1024];
    let cause = loop {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) => break CloseCause::Eof,
                Ok(n) => {
                    let bytes = Bytes::copy_from_slice(&buf[..n]);
                    let _ = io.send(Input::Received { conn, bytes });
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break CloseCause::Reset,
                Err(_) => break CloseCause::Io,
            },
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Write(data)) => {
                    // A peer that stops reading cannot hold the task forever.
                    let written = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&data)).await;
                    if !matches!(written, Ok(Ok(()))) {
                        break CloseCause::Io;
                    }
                    let _ = io.send(Input::Sent { conn, len: data.len() });
                }
                Some(Cmd::Close) | None => {
                    let _ = wr.shutdown().await;
                    break CloseCause::Local;
                }
            },
        }
    };
    let _ = io.send(Input::Closed { conn, cause });
}

/// `cometmesh crawl`.
pub fn run(args: &CrawlArgs) -> Result<(), CliError> {
    crate::node::runtime()?.block_on(run_async(args))
}

async fn run_async(args: &CrawlArgs) -> Result<(), CliError> {
    let err = |e: String| CliError::Crawl(e);
    let mut seeds = Vec::new();
    for (flag, list) in [("--seeds", &args.seeds), ("--peers", &args.peers)] {
        if let Some(list) = list {
            seeds.extend(parse_peer_list(list).map_err(|e| err(format!("{flag}: {e}")))?);
        }
    }
    let resume = match &args.resume {
        Some(path) => Some(read_report(path).map_err(err)?),
        None => None,
    };
    let mut config = CrawlConfig::default();
    config.chain_id.clone_from(&args.chain_id);
    config.moniker.clone_from(&args.moniker);
    config.concurrency = args.concurrency as usize;
    config.rate = args.rate;
    config.timeout = args.timeout;
    config.duration = args.duration;
    config.max_nodes = args.max_nodes;
    config.revisit = args.revisit;
    let job = CrawlJob {
        seeds,
        config,
        resume,
    };
    let tty = std::io::stderr().is_terminal();
    let show_progress = !args.no_progress;
    let mut progress_shown = false;
    let mut last_line = Instant::now();
    let out = args.out.clone();
    let verbose = args.verbose;
    let on_event = |event: CrawlEvent<'_>| {
        let mut stderr = std::io::stderr().lock();
        let clear = |progress_shown: &mut bool, stderr: &mut std::io::StderrLock<'_>| {
            if *progress_shown && tty {
                let _ = write!(stderr, "\r\x1b[K");
                *progress_shown = false;
            }
        };
        match event {
            CrawlEvent::Note(note) => {
                let routine = matches!(note, Note::Reached { .. })
                    || matches!(note, Note::Failed { seed: false, .. });
                if verbose || !routine {
                    clear(&mut progress_shown, &mut stderr);
                    let _ = writeln!(stderr, "{note}");
                }
            }
            CrawlEvent::BadSeed { seed, reason } => {
                clear(&mut progress_shown, &mut stderr);
                let _ = writeln!(stderr, "seed {seed} skipped: {reason}");
            }
            CrawlEvent::Progress(p) => {
                if !show_progress {
                    return;
                }
                let line = crate::crawl_table::progress_line(&p);
                if tty {
                    let _ = write!(stderr, "\r\x1b[K{line}");
                    progress_shown = true;
                } else if last_line.elapsed() >= Duration::from_secs(10) {
                    let _ = writeln!(stderr, "{line}");
                    last_line = Instant::now();
                }
            }
            CrawlEvent::Checkpoint(report) => {
                if let Some(path) = &out
                    && let Err(e) = write_report(path, report)
                {
                    clear(&mut progress_shown, &mut stderr);
                    let _ = writeln!(stderr, "checkpoint not written: {e}");
                }
            }
        }
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let report = crawl(job, on_event, stop)
        .await
        .map_err(|e| err(e.to_string()))?;
    if tty && show_progress {
        eprintln!();
    }
    if let Some(path) = &args.out {
        write_report(path, &report).map_err(err)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.html {
        let page = crate::crawl_html::render(&report);
        write_atomic(path, page.as_bytes())
            .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
        eprintln!("wrote {}", path.display());
    }
    print!("{}", crate::crawl_table::render(&report));
    Ok(())
}

/// Reads a JSON report.
pub fn read_report(path: &Path) -> Result<CrawlReport, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a crawl report: {e}", path.display()))
}

/// Writes a JSON report (atomically: a temporary file renamed over the target).
pub fn write_report(path: &Path, report: &CrawlReport) -> Result<(), String> {
    let mut text = serde_json::to_vec_pretty(report).map_err(|e| e.to_string())?;
    text.push(b'\n');
    write_atomic(path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use cometmesh_core::crawl::{Failure, Status};

    /// A closed port on loopback (bound, then released).
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn unreachable_seeds_and_a_garbage_node_get_a_line_and_the_crawl_ends() {
        // A "node" that answers every connection with garbage.
        let garbage = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let garbage_port = garbage.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = garbage.accept().await {
                let junk: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
                let _ = s.write_all(&junk).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        let id = |b: u8| cometmesh_core::ids::NodeId([b; 20]);
        let seeds: Vec<PeerAddr> = vec![
            format!("{}@127.0.0.1:{}", id(1), closed_port())
                .parse()
                .expect("addr"),
            format!("{}@127.0.0.1:{garbage_port}", id(2))
                .parse()
                .expect("addr"),
        ];
        let mut config = CrawlConfig::default();
        config.timeout = Duration::from_secs(2);
        let mut lines = Vec::new();
        let report = crawl(
            CrawlJob {
                seeds,
                config,
                resume: None,
            },
            |e| {
                if let CrawlEvent::Note(n) = e {
                    lines.push(n.to_string());
                }
            },
            std::future::pending(),
        )
        .await
        .expect("crawl");
        assert_eq!(report.crawl.state, "complete");
        assert_eq!(report.summary.known, 2);
        assert_eq!(report.summary.unreachable, 2);
        let failure = |b: u8| {
            let n = report.nodes.iter().find(|n| n.id == id(b)).expect("node");
            assert_eq!(n.status, Status::Unreachable);
            n.failure.clone().expect("a failure")
        };
        assert_eq!(failure(1), Failure::Refused);
        assert!(
            matches!(
                failure(2),
                Failure::Handshake { .. } | Failure::Timeout { .. }
            ),
            "{:?}",
            failure(2)
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().all(|l| l.starts_with("seed ")), "{lines:?}");
        assert!(
            lines.iter().any(|l| l.contains("connection refused")),
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn a_stop_ends_the_crawl_at_once_and_keeps_what_was_not_dialled_for_a_resume() {
        // A node that accepts and then says nothing: without the stop the crawl would end
        // "complete" with the node timed out.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = silent.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let seed: PeerAddr = format!("{}@127.0.0.1:{port}", cometmesh_core::ids::NodeId([3; 20]))
            .parse()
            .expect("addr");
        let report = crawl(
            CrawlJob {
                seeds: vec![seed],
                config: CrawlConfig::default(),
                resume: None,
            },
            |_| {},
            tokio::time::sleep(Duration::from_millis(200)),
        )
        .await
        .expect("crawl");
        assert_eq!(report.crawl.state, "interrupted");
        let node = &report.nodes[0];
        assert_eq!(node.status, Status::Unknown);
        assert_eq!(node.addresses[0].dials, 0, "a resume dials it again");
    }

    #[test]
    fn a_garbage_seed_address_is_one_clear_error() {
        let cli = crate::args::Cli::try_parse_from([
            "cometmesh",
            "crawl",
            "--seeds",
            "not-an-address",
            "--no-progress",
        ])
        .expect("parses");
        let crate::args::Command::Crawl(args) = cli.command else {
            panic!("not crawl")
        };
        let e = run(&args).expect_err("refused").to_string();
        assert!(e.starts_with("crawl: --seeds: "), "{e}");
        assert!(!e.contains('\n'));
    }

    #[tokio::test]
    async fn no_seed_at_all_is_an_error() {
        let r = crawl(
            CrawlJob {
                seeds: vec![],
                config: CrawlConfig::default(),
                resume: None,
            },
            |_| {},
            std::future::pending(),
        )
        .await;
        assert!(matches!(r, Err(CrawlRunError::NoSeeds)));
    }
}
