//! Real CometBFT nodes for the interop tests: started on loopback by
//! `tests/interop/cometbft-node.sh` in a fresh temporary home, queried over their RPC, and killed
//! by process id when the guard is dropped, pass or fail (a failing test also prints the node's
//! log tail).
//!
//! Binaries (all installed by `tests/interop/install-cometbft.sh`): v0.38 from `$COMETBFT`, else
//! `cometbft` on `PATH`, else `~/.cache/cometmesh/bin/cometbft`; the other lines from
//! `$COMETBFT_V034` / `$COMETBFT_V039` / `$COMETBFT_V040` / `$COMETBFT_V100`, else
//! `~/.cache/cometmesh/bin/cometbft-v0.34` / `-v0.39` / `-v0.40` / `-v1.0` (see [`Version`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cometmesh_core::NodeId;

/// Which CometBFT release line to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// v0.38.x (pinned v0.38.26 by the install script).
    V038,
    /// v0.34.x (pinned v0.34.35).
    V034,
    /// v0.39.x (pinned v0.39.4).
    V039,
    /// v0.40.x (pinned v0.40.0, which reports itself as 0.39.0).
    V040,
    /// v1.0.x (pinned v1.0.1): p2p protocol 9.
    V100,
}

impl Version {
    /// Every release line the install script builds, oldest first.
    pub const ALL: [Version; 5] = [
        Version::V034,
        Version::V038,
        Version::V039,
        Version::V040,
        Version::V100,
    ];

    /// The environment variable that names this line's binary, and the binary's file name in
    /// the install script's bin dir.
    #[must_use]
    pub fn env_and_file(self) -> (&'static str, &'static str) {
        match self {
            Version::V038 => ("COMETBFT", "cometbft"),
            Version::V034 => ("COMETBFT_V034", "cometbft-v0.34"),
            Version::V039 => ("COMETBFT_V039", "cometbft-v0.39"),
            Version::V040 => ("COMETBFT_V040", "cometbft-v0.40"),
            Version::V100 => ("COMETBFT_V100", "cometbft-v1.0"),
        }
    }

    /// The binary for this version, or why there is none. Looked up in `$COMETBFT…` (see
    /// [`Version::env_and_file`]), then (v0.38 only) `cometbft` on `PATH`, then the install
    /// script's bin dir `${COMETMESH_CACHE:-~/.cache/cometmesh}/bin`.
    pub fn binary(self) -> Result<PathBuf, String> {
        let cache = std::env::var_os("COMETMESH_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/cometmesh")))
            .unwrap_or_else(|| PathBuf::from("/nonexistent"));
        let (var, name) = self.env_and_file();
        let mut candidates = Vec::new();
        if let Some(p) = std::env::var_os(var) {
            candidates.push(PathBuf::from(p));
        }
        if self == Version::V038
            && let Some(path) = std::env::var_os("PATH")
        {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
        }
        candidates.push(cache.join("bin").join(name));
        let path = if self == Version::V038 { ", PATH" } else { "" };
        candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
            format!(
                "no {name} binary (${var}{path}, {}): run tests/interop/install-cometbft.sh",
                cache.join("bin").display()
            )
        })
    }

    /// The binary for this version; panics (failing the test) with the install hint when there
    /// is none. Interop tests are `#[ignore]`d in a plain `cargo test`, so a test that runs has
    /// been asked for: a missing binary is a failure, never a silent pass.
    #[must_use]
    pub fn require(self) -> PathBuf {
        self.binary().unwrap_or_else(|e| {
            let ci = if std::env::var("CI").is_ok_and(|v| v == "true") {
                " (CI=true: every release line must be installed)"
            } else {
                ""
            };
            panic!(
                "this test needs CometBFT {} and cannot run{ci}: {e}",
                self.tag()
            )
        })
    }

    /// The release tag the install script builds (`v0.40.0`).
    #[must_use]
    pub fn tag(self) -> &'static str {
        match self {
            Version::V038 => "v0.38.26",
            Version::V034 => "v0.34.35",
            Version::V039 => "v0.39.4",
            Version::V040 => "v0.40.0",
            Version::V100 => "v1.0.1",
        }
    }

    /// The release the install script pins, as `cometbft version` prints it and the node's
    /// NodeInfo reports it. v0.40.0 says "0.39.0": its `version/version.go` was not bumped.
    #[must_use]
    pub fn pinned(self) -> &'static str {
        match self {
            Version::V038 => "0.38.26",
            Version::V034 => "0.34.35",
            Version::V039 => "0.39.4",
            Version::V040 => "0.39.0",
            Version::V100 => "1.0.1",
        }
    }

    /// The p2p protocol version the line announces in its NodeInfo (8 up to v0.40, 9 in v1.0).
    /// Nobody compares it: CometBFT and cometmesh only require the same block protocol (11).
    #[must_use]
    pub fn p2p_protocol(self) -> u64 {
        match self {
            Version::V100 => 9,
            _ => 8,
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound once and released; the OS does not hand it out again at
/// once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A fresh directory under the system temp dir, removed by [`CometBft`]'s drop on success.
pub fn temp_dir(label: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "cometmesh-interop-{}-{n}-{label}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// How to start a node (see `tests/interop/cometbft-node.sh`).
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// A short name for logs and the home directory.
    pub label: String,
    /// The release line.
    pub version: Version,
    /// The chain id written into its genesis.
    pub chain_id: String,
    /// `p2p.persistent_peers` (comma-separated `id@127.0.0.1:port`).
    pub persistent_peers: String,
    /// `p2p.seeds`.
    pub seeds: String,
    /// `p2p.seed_mode`.
    pub seed_mode: bool,
    /// A `node_key.json` to use instead of a generated one.
    pub node_key_json: Option<String>,
    /// `p2p.handshake_timeout` written into config.toml (default `5s`; CometBFT ignores it).
    pub handshake_timeout: Option<String>,
}

impl NodeOptions {
    /// A node of release line `version` and chain `chain_id`, with no peers.
    #[must_use]
    pub fn new(label: &str, version: Version, chain_id: &str) -> Self {
        NodeOptions {
            label: label.to_owned(),
            version,
            chain_id: chain_id.to_owned(),
            persistent_peers: String::new(),
            seeds: String::new(),
            seed_mode: false,
            node_key_json: None,
            handshake_timeout: None,
        }
    }
}

/// A running CometBFT node; dropping it kills the process (by PID) and removes its home (kept,
/// with the log printed, if the test is failing).
#[derive(Debug)]
pub struct CometBft {
    label: String,
    pid: u32,
    home: PathBuf,
    id: NodeId,
    p2p_port: u16,
    rpc_port: u16,
}

/// One peer as `/net_info` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetInfoPeer {
    /// The peer's node id (`node_info.id`).
    pub id: String,
    /// Whether this node dialled the peer.
    pub is_outbound: bool,
    /// The peer's advertised chain id.
    pub network: String,
    /// The peer's advertised channels (hex string as CometBFT prints it).
    pub channels: String,
    /// The peer's moniker.
    pub moniker: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/cometbft-node.sh")
}

impl CometBft {
    /// Starts a node and waits (bounded, 30 s) until its RPC answers.
    pub fn start(opts: &NodeOptions) -> Result<CometBft, String> {
        let bin = opts.version.binary()?;
        let home = temp_dir(&opts.label);
        let p2p_port = free_port();
        let rpc_port = free_port();
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .arg("--home")
            .arg(&home)
            .args(["--chain-id", &opts.chain_id])
            .args(["--p2p-port", &p2p_port.to_string()])
            .args(["--rpc-port", &rpc_port.to_string()])
            .arg("--bin")
            .arg(&bin);
        if !opts.persistent_peers.is_empty() {
            cmd.args(["--persistent-peers", &opts.persistent_peers]);
        }
        if !opts.seeds.is_empty() {
            cmd.args(["--seeds", &opts.seeds]);
        }
        if opts.seed_mode {
            cmd.arg("--seed-mode");
        }
        if let Some(t) = &opts.handshake_timeout {
            cmd.args(["--handshake-timeout", t]);
        }
        let mut key_file = None;
        if let Some(json) = &opts.node_key_json {
            let f = std::env::temp_dir().join(format!(
                "cometmesh-interop-{}-{}-node_key.json",
                std::process::id(),
                opts.label
            ));
            std::fs::write(&f, json).map_err(|e| format!("write node key: {e}"))?;
            cmd.arg("--node-key").arg(&f);
            key_file = Some(f);
        }
        let out = cmd.output();
        if let Some(f) = &key_file {
            let _ = std::fs::remove_file(f);
        }
        let out = out.map_err(|e| format!("run cometbft-node.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cometbft-node.sh failed for {}: {}",
                opts.label,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| format!("cometbft-node.sh printed no pid: {e}"))?;
        // From here the guard owns the process: any early return kills it.
        let mut node = CometBft {
            label: opts.label.clone(),
            pid,
            home,
            id: NodeId([0; 20]),
            p2p_port,
            rpc_port,
        };
        let id = Command::new(&bin)
            .arg("show-node-id")
            .arg("--home")
            .arg(&node.home)
            .output()
            .map_err(|e| format!("cometbft show-node-id: {e}"))?;
        node.id = String::from_utf8_lossy(&id.stdout)
            .trim()
            .parse()
            .map_err(|e| format!("cometbft show-node-id printed no id: {e}"))?;
        Ok(node)
    }

    /// The node id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The P2P listen address (127.0.0.1).
    #[must_use]
    pub fn p2p_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.p2p_port))
    }

    /// The P2P port.
    #[must_use]
    pub fn p2p_port(&self) -> u16 {
        self.p2p_port
    }

    /// The RPC port.
    #[must_use]
    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    /// `id@127.0.0.1:port`, as config files and PEX spell it.
    #[must_use]
    pub fn peer_addr(&self) -> String {
        format!("{}@127.0.0.1:{}", self.id, self.p2p_port)
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process still runs.
    #[must_use]
    pub fn is_running(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .is_ok_and(|s| s.contains(") Z "))
    }

    /// The node's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("cometbft.log")).unwrap_or_default()
    }

    /// A raw HTTP GET on the RPC (loopback), returning the JSON body.
    pub fn rpc(&self, path: &str) -> Result<serde_json::Value, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.rpc_port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect rpc: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| format!("write rpc: {e}"))?;
        let mut resp = Vec::new();
        s.take(4 << 20)
            .read_to_end(&mut resp)
            .map_err(|e| format!("read rpc: {e}"))?;
        let text = String::from_utf8_lossy(&resp);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .ok_or_else(|| format!("no http body in {text:?}"))?;
        serde_json::from_str(body).map_err(|e| format!("rpc json: {e}: {body}"))
    }

    /// The peers `/net_info` lists.
    pub fn net_info_peers(&self) -> Result<Vec<NetInfoPeer>, String> {
        let v = self.rpc("/net_info")?;
        let peers = v["result"]["peers"]
            .as_array()
            .ok_or_else(|| format!("no result.peers in {v}"))?;
        Ok(peers
            .iter()
            .map(|p| NetInfoPeer {
                id: p["node_info"]["id"].as_str().unwrap_or_default().to_owned(),
                is_outbound: p["is_outbound"].as_bool().unwrap_or(false),
                network: p["node_info"]["network"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                channels: p["node_info"]["channels"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                moniker: p["node_info"]["moniker"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect())
    }

    /// Polls `/net_info` every 200 ms until `pred` holds on the peer list or `timeout` passes;
    /// returns the last list seen on success.
    pub fn wait_net_info(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[NetInfoPeer]) -> bool,
    ) -> Result<Vec<NetInfoPeer>, String> {
        #[allow(clippy::disallowed_methods)]
        let end = Instant::now() + timeout;
        loop {
            let last = match self.net_info_peers() {
                Ok(peers) if pred(&peers) => return Ok(peers),
                other => other,
            };
            #[allow(clippy::disallowed_methods)]
            if Instant::now() >= end {
                return Err(format!(
                    "{}: condition on /net_info not met within {timeout:?}; last: {last:?}",
                    self.label
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether `/net_info` lists `id` now.
    pub fn lists_peer(&self, id: NodeId) -> Result<bool, String> {
        let id = id.to_string();
        Ok(self.net_info_peers()?.iter().any(|p| p.id == id))
    }

    /// Whether `/net_info` lists `id` within `timeout` (a peer we see as up may take the node a
    /// moment more to add to its peer set).
    #[must_use]
    pub fn lists_peer_within(&self, id: NodeId, timeout: Duration) -> bool {
        let id = id.to_string();
        self.wait_net_info(timeout, |p| p.iter().any(|p| p.id == id))
            .is_ok()
    }

    /// Whether a log line containing `needle` appears within `timeout` (the node may log an
    /// error a moment after it closed the connection).
    #[must_use]
    pub fn logs_within(&self, needle: &str, timeout: Duration) -> bool {
        #[allow(clippy::disallowed_methods)]
        let end = Instant::now() + timeout;
        loop {
            if !self.log_lines(needle).is_empty() {
                return true;
            }
            #[allow(clippy::disallowed_methods)]
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log lines containing `needle`.
    #[must_use]
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    fn kill(&self) {
        // SIGKILL by process id; the process is not our child (the script backgrounded it), so
        // wait for /proc to drop it rather than reaping it.
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        for _ in 0..100 {
            if !self.is_running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for CometBft {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "---- CometBFT {} (id {}, pid {}, p2p 127.0.0.1:{}, home {}): last {} log lines ----",
                self.label,
                self.id,
                self.pid,
                self.p2p_port,
                self.home.display(),
                tail.len()
            );
            for l in tail {
                eprintln!("{l}");
            }
            eprintln!("---- end of {} log ----", self.label);
        } else {
            let _ = std::fs::remove_dir_all(&self.home);
        }
    }
}
