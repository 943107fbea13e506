//! The `cometmesh` binary end to end: real processes, temporary homes, loopback only, every
//! wait bounded.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_cometmesh");

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("cometmesh-cli-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run cometmesh")
}

/// Runs a command that should fail fast; kills it after 30 s so a test never hangs.
fn run_bounded(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cometmesh");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a user error: exit code 2 and exactly one line on stderr, containing `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

fn init(home: &Path, chain_id: &str) -> String {
    let out = run(&[
        "init",
        "--home",
        home.to_str().unwrap(),
        "--chain-id",
        chain_id,
        "--moniker",
        "test-node",
    ]);
    assert!(out.status.success(), "init failed: {}", stderr(&out));
    let text = stdout(&out);
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("node id: "))
        .expect("init prints the node id");
    id.to_owned()
}

#[test]
fn version_prints_the_version() {
    let out = run(&["version"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with(&format!("cometmesh {}", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn init_then_show_node_id() {
    let tmp = TempDir::new("init");
    let home = tmp.path().join("node");
    let id = init(&home, "test-chain");
    assert_eq!(id.len(), 40);
    let config = std::fs::read_to_string(home.join("config/config.toml")).unwrap();
    assert!(config.contains("[p2p]\n"));
    assert!(config.contains("laddr = \"tcp://0.0.0.0:26656\""));
    assert!(config.contains("moniker = \"test-node\""));
    let genesis = std::fs::read_to_string(home.join("config/genesis.json")).unwrap();
    assert!(genesis.contains("\"chain_id\": \"test-chain\""));
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(home.join("config/node_key.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let out = run(&["show-node-id", "--home", home.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), id);
}

#[test]
fn init_without_chain_id_makes_a_test_chain() {
    let tmp = TempDir::new("nochain");
    let home = tmp.path().join("node");
    let out = run(&["init", "--home", home.to_str().unwrap()]);
    assert!(out.status.success(), "init failed: {}", stderr(&out));
    let text = stdout(&out);
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("chain id: "))
        .expect("init prints the chain id");
    let tail = id.strip_prefix("test-chain-").expect(id);
    assert!(
        tail.len() == 6 && tail.bytes().all(|c| c.is_ascii_alphanumeric()),
        "{id}"
    );
    let genesis = std::fs::read_to_string(home.join("config/genesis.json")).unwrap();
    assert!(
        genesis.contains(&format!("\"chain_id\": \"{id}\"")),
        "{genesis}"
    );
}

#[test]
fn init_refuses_to_overwrite_a_key() {
    let tmp = TempDir::new("reinit");
    let home = tmp.path().join("node");
    let id = init(&home, "c");
    let out = run(&["init", "--home", home.to_str().unwrap(), "--chain-id", "c"]);
    assert_one_line_error(&out, "already exists; refusing to overwrite");
    // The key is unchanged.
    let out = run(&["show-node-id", "--home", home.to_str().unwrap()]);
    assert_eq!(stdout(&out).trim(), id);
}

#[test]
fn missing_home_is_one_line() {
    let tmp = TempDir::new("missing");
    let home = tmp.path().join("absent");
    let out = run(&["show-node-id", "--home", home.to_str().unwrap()]);
    assert_one_line_error(&out, "does not exist");
}

#[test]
fn malformed_config_value_names_the_key() {
    let tmp = TempDir::new("badcfg");
    let home = tmp.path().join("node");
    init(&home, "c");
    let path = home.join("config/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let broken = text.replace(
        "flush_throttle_timeout = \"10ms\"",
        "flush_throttle_timeout = \"10 parsecs\"",
    );
    assert_ne!(text, broken);
    std::fs::write(&path, broken).unwrap();
    let out = run(&["show-node-id", "--home", home.to_str().unwrap()]);
    assert_one_line_error(&out, "config key p2p.flush_throttle_timeout");

    std::fs::write(&path, text.replace("[p2p]", "[p2p")).unwrap();
    let out = run(&["show-node-id", "--home", home.to_str().unwrap()]);
    assert_one_line_error(&out, "is not valid TOML");
}

#[test]
fn bad_flag_value_is_one_line() {
    let out = run(&[
        "init",
        "--home",
        "/tmp/x",
        "--chain-id",
        "c",
        "--log-format",
        "xml",
    ]);
    assert_one_line_error(&out, "--log-format");
}

/// Copies a fixture home into a temporary directory (a node may write to its home).
fn copy_fixture(name: &str, to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::create_dir_all(to.join("config")).unwrap();
    for file in ["config.toml", "genesis.json", "node_key.json"] {
        std::fs::copy(from.join("config").join(file), to.join("config").join(file)).unwrap();
    }
}

fn fixture_node_id(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .join("node_id.txt");
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

#[test]
fn real_cometbft_homes_are_accepted() {
    for name in ["cometbft-v0.38-home", "cometbft-v0.34-home"] {
        let tmp = TempDir::new(name);
        let home = tmp.path().join("home");
        copy_fixture(name, &home);
        let out = run(&["show-node-id", "--home", home.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(stdout(&out).trim(), fixture_node_id(name), "{name}");
    }
}

/// The CometBFT v0.38 binary: `$COMETBFT`, else `${COMETMESH_CACHE:-~/.cache/cometmesh}/bin/cometbft`
/// (tests/interop/install-cometbft.sh). The tests that need it are `#[ignore]`d in a plain
/// `cargo test` and run in `.ci/run`'s interop step; a test that runs without it fails.
fn cometbft_binary() -> PathBuf {
    let from_env = std::env::var_os("COMETBFT").map(PathBuf::from);
    let cached = std::env::var_os("COMETMESH_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/cometmesh")))
        .map(|c| c.join("bin/cometbft"));
    [from_env, cached]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            let ci = if std::env::var("CI").is_ok_and(|v| v == "true") {
                " (CI=true: the interop step must install it)"
            } else {
                ""
            };
            panic!(
                "this test needs the cometbft binary and cannot run{ci}: none at $COMETBFT or \
                 ${{COMETMESH_CACHE:-~/.cache/cometmesh}}/bin/cometbft; run \
                 tests/interop/install-cometbft.sh"
            )
        })
}

#[test]
#[ignore = "needs cometbft: run tests/interop/install-cometbft.sh"]
fn cometbft_reads_a_home_made_by_init() {
    let cometbft = cometbft_binary();
    let tmp = TempDir::new("cmtreads");
    let home = tmp.path().join("node");
    let id = init(&home, "c");
    let out = Command::new(cometbft)
        .args(["show-node-id", "--home", home.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "cometbft: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), id);
}

/// Lines of a child's output, read on a thread so that waits can be bounded.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn new(pipe: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits up to `within` for a line containing every needle; returns it.
    fn wait_for(&mut self, needles: &[&str], within: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        if let Some(line) = self
            .seen
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return line.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if needles.iter().all(|n| line.contains(n)) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needles:?} within {within:?}; got:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// A running `cometmesh start`, killed if the test fails before stopping it.
struct Running {
    child: std::process::Child,
    stdout: Lines,
    stderr: Lines,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cometmesh start");
        let stdout = Lines::new(child.stdout.take().unwrap());
        let stderr = Lines::new(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// The "listening on ADDR as ID" line's address and id.
    fn listening(&mut self) -> (String, String) {
        let line = self
            .stdout
            .wait_for(&["listening on "], std::time::Duration::from_secs(20));
        let rest = line.strip_prefix("listening on ").unwrap();
        let (addr, id) = rest.split_once(" as ").unwrap();
        (addr.to_owned(), id.to_owned())
    }

    /// Sends SIGINT (as Ctrl-C does) and waits up to 20 s for the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "no exit after SIGINT");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes a home fit for loopback: several peers from 127.0.0.1, loopback addresses kept.
fn loopback_home(home: &Path) {
    let path = home.join("config/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace("allow_duplicate_ip = false", "allow_duplicate_ip = true")
        .replace("addr_book_strict = true", "addr_book_strict = false");
    std::fs::write(&path, text).unwrap();
}

#[test]
fn start_second_node_dials_then_both_stop_gracefully() {
    let tmp = TempDir::new("start");
    let (home_a, home_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let id_a = init(&home_a, "e2e");
    let id_b = init(&home_b, "e2e");
    loopback_home(&home_a);
    loopback_home(&home_b);
    // a serves metrics on a port picked free just before.
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config_a = home_a.join("config/config.toml");
    let text = std::fs::read_to_string(&config_a).unwrap();
    let text = text
        .replace("prometheus = false", "prometheus = true")
        .replace(
            "prometheus_listen_addr = \":26660\"",
            &format!("prometheus_listen_addr = \"127.0.0.1:{metrics_port}\""),
        );
    std::fs::write(&config_a, text).unwrap();
    let laddr = "tcp://127.0.0.1:0";
    let mut a = Running::start(&[
        "start",
        "--home",
        home_a.to_str().unwrap(),
        "--p2p.laddr",
        laddr,
    ]);
    let (addr_a, listed_id) = a.listening();
    assert_eq!(listed_id, id_a);
    let peer = format!("{id_a}@{addr_a}");
    let mut b = Running::start(&[
        "--log-format",
        "json",
        "start",
        "--home",
        home_b.to_str().unwrap(),
        "--p2p.laddr",
        laddr,
        "--p2p.persistent_peers",
        &peer,
    ]);
    let within = std::time::Duration::from_secs(20);
    b.stderr.wait_for(&["peer up", &id_a, "Outbound"], within);
    a.stderr.wait_for(&["peer up", &id_b, "Inbound"], within);
    // b logs JSON, one object per line.
    let line = b.stderr.wait_for(&["peer up"], within);
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");

    // a's metrics: CometBFT's names, b as a peer on the PEX channel.
    let deadline = std::time::Instant::now() + within;
    let expected = format!(
        "cometbft_p2p_peer_send_bytes_total{{chain_id=\"e2e\",peer_id=\"{id_b}\",chID=\"0x0\"}}"
    );
    loop {
        let body = scrape(metrics_port);
        if body.contains("cometbft_p2p_peers{chain_id=\"e2e\"} 1") && body.contains(&expected) {
            assert!(
                body.contains("# TYPE cometmesh_bans_total counter"),
                "{body}"
            );
            assert!(body.contains("cometmesh_addrbook_size{table="), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics never showed b:\n{body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    let status = b.interrupt();
    assert!(status.success(), "b exit: {status:?}");
    b.stderr.wait_for(&["stopped"], within);
    a.stderr.wait_for(&["peer down", &id_b], within);
    let status = a.interrupt();
    assert!(status.success(), "a exit: {status:?}");
    a.stderr.wait_for(&["stopped"], within);
    // a's text log went to a pipe, not a terminal: plain text, no ANSI colour codes.
    assert!(
        a.stderr.seen.iter().all(|l| !l.contains('\u{1b}')),
        "escape codes in a log that is not a terminal: {:?}",
        a.stderr.seen
    );
    // a learned b's address from the inbound connection and wrote CometBFT's addrbook.json.
    let book = std::fs::read_to_string(home_a.join("config/addrbook.json")).unwrap();
    assert!(book.starts_with('{') && book.contains(&id_b), "{book}");
}

#[test]
fn start_runs_from_a_real_cometbft_home() {
    let tmp = TempDir::new("cmthome");
    let home = tmp.path().join("home");
    copy_fixture("cometbft-v0.38-home", &home);
    let mut node = Running::start(&[
        "start",
        "--home",
        home.to_str().unwrap(),
        "--p2p.laddr",
        "tcp://127.0.0.1:0",
    ]);
    let (_, id) = node.listening();
    assert_eq!(id, fixture_node_id("cometbft-v0.38-home"));
    // The chain id came from CometBFT's genesis.json.
    node.stderr.wait_for(
        &["node started", "test-chain-"],
        std::time::Duration::from_secs(20),
    );
    let status = node.interrupt();
    assert!(status.success(), "exit: {status:?}");
}

/// GET /metrics on 127.0.0.1:port (bounded by socket timeouts).
fn scrape(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

#[test]
fn start_errors_are_one_line() {
    let tmp = TempDir::new("starterr");
    let home = tmp.path().join("node");
    init(&home, "c");
    let h = home.to_str().unwrap();

    let out = run_bounded(&["start", "--home", tmp.path().join("nope").to_str().unwrap()]);
    assert_one_line_error(&out, "does not exist");

    let bad = "nothex@127.0.0.1:26656";
    let out = run_bounded(&["start", "--home", h, "--p2p.persistent_peers", bad]);
    assert_one_line_error(&out, "p2p.persistent_peers");
    assert!(stderr(&out).contains(bad));

    let out = run_bounded(&[
        "start",
        "--home",
        h,
        "--p2p.seeds",
        "7627de929814c7484dc6bf94f60166ab3115b316@127.0.0.1",
    ]);
    assert_one_line_error(&out, "p2p.seeds");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let laddr = format!("tcp://127.0.0.1:{port}");
    let out = run_bounded(&["start", "--home", h, "--p2p.laddr", &laddr]);
    assert_one_line_error(&out, "address already in use");
    assert!(stderr(&out).contains("p2p.laddr"));

    // An address this machine does not have (TEST-NET-1): nothing is sent, the bind fails.
    let out = run_bounded(&["start", "--home", h, "--p2p.laddr", "tcp://192.0.2.1:26656"]);
    assert_one_line_error(&out, "p2p.laddr");

    let out = run_bounded(&["start", "--home", h, "--p2p.max_num_inbound_peers", "-3"]);
    assert_eq!(out.status.code(), Some(2));

    // The metrics port busy.
    let path = home.join("config/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("prometheus = false", "prometheus = true")
            .replace(
                "prometheus_listen_addr = \":26660\"",
                &format!("prometheus_listen_addr = \"127.0.0.1:{port}\""),
            ),
    )
    .unwrap();
    let out = run_bounded(&["start", "--home", h, "--p2p.laddr", "tcp://127.0.0.1:0"]);
    assert_one_line_error(&out, "instrumentation.prometheus_listen_addr");
    drop(busy);
}

#[test]
fn testnet_reaches_full_discovery() {
    let out = run_bounded(&["testnet", "--nodes", "4", "--timeout", "25"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "stdout: {text}\nstderr: {}",
        stderr(&out)
    );
    assert!(text.contains("full discovery in "), "{text}");
    // Not a terminal: plain progress lines, no escape codes.
    assert!(!text.contains('\x1b'), "{text}");
}

/// A port free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// CometBFT nodes started by tests/interop/cometbft-node.sh, killed by PID on drop.
struct CometbftNodes(Vec<u32>);

impl Drop for CometbftNodes {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// A CometBFT node's RPC `/net_info` answer, if it answers.
fn cometbft_net_info(rpc_port: u16) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", rpc_port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    s.write_all(b"GET /net_info HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    Some(body)
}

#[test]
#[ignore = "needs cometbft: run tests/interop/install-cometbft.sh"]
fn seed_mode_serves_cometbft_nodes() {
    let cometbft = cometbft_binary();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/cometbft-node.sh");
    let tmp = TempDir::new("cmtseed");
    let seed_home = tmp.path().join("seed");
    let seed_id = init(&seed_home, "interop-seed");
    loopback_home(&seed_home);
    let mut seed = Running::start(&[
        "start",
        "--home",
        seed_home.to_str().unwrap(),
        "--p2p.seed_mode",
        "--p2p.laddr",
        "tcp://127.0.0.1:0",
    ]);
    let (seed_addr, _) = seed.listening();
    let seeds = format!("{seed_id}@{seed_addr}");
    let mut nodes = CometbftNodes(Vec::new());
    let mut rpc_ports = Vec::new();
    let mut ids = Vec::new();
    for name in ["c1", "c2"] {
        let (p2p, rpc) = (free_port(), free_port());
        let out = Command::new("bash")
            .arg(&script)
            .args(["--home", tmp.path().join(name).to_str().unwrap()])
            .args(["--chain-id", "interop-seed", "--seeds", &seeds])
            .args([
                "--p2p-port",
                &p2p.to_string(),
                "--rpc-port",
                &rpc.to_string(),
            ])
            .args(["--bin", cometbft.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "cometbft {name}: {}", stderr(&out));
        nodes.0.push(stdout(&out).trim().parse().unwrap());
        rpc_ports.push(rpc);
        let id = Command::new(&cometbft)
            .args([
                "show-node-id",
                "--home",
                tmp.path().join(name).to_str().unwrap(),
            ])
            .output()
            .unwrap();
        ids.push(stdout(&id).trim().to_owned());
    }
    // Each CometBFT node learns the other from our seed and connects (the seed hangs up).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let c1 = cometbft_net_info(rpc_ports[0]).unwrap_or_default();
        let c2 = cometbft_net_info(rpc_ports[1]).unwrap_or_default();
        if c1.contains(&format!("\"{}\"", ids[1])) && c2.contains(&format!("\"{}\"", ids[0])) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cometbft nodes did not meet through the seed:\n{c1}\n{c2}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    seed.stderr
        .wait_for(&["seed hung up"], std::time::Duration::from_secs(10));
    drop(nodes);
    assert!(seed.interrupt().success());
}

// ---------------------------------------------------------------- `cometmesh seed` (issue 15)

/// GET `path` on 127.0.0.1:port, the body only (empty if nothing answers).
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

#[test]
fn seed_config_mistakes_are_one_line() {
    let tmp = TempDir::new("seedcfg");
    let write = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let two_chains = |extra_a: &str, extra_b: &str| {
        format!(
            "[[chain]]\nchain_id = \"a\"\nladdr = \"tcp://127.0.0.1:40101\"\n{extra_a}\n\
             [[chain]]\nchain_id = \"b\"\nladdr = \"tcp://127.0.0.1:40101\"\n{extra_b}\n"
        )
    };
    let dup = write(
        "dup.toml",
        "[[chain]]\nchain_id = \"a\"\n[[chain]]\nchain_id = \"a\"\nladdr = \"tcp://127.0.0.1:40102\"\n",
    );
    let clash = write("clash.toml", &two_chains("", ""));
    let half = write("half.toml", &two_chains("shared_port = true", ""));
    std::fs::write(tmp.path().join("notakey.json"), "{\"priv_key\": 42}").unwrap();
    let badkey = write(
        "badkey.toml",
        "[[chain]]\nchain_id = \"a\"\nnode_key_file = \"notakey.json\"\n",
    );
    let empty = write("empty.toml", "");
    for (config, needle) in [
        (
            dup,
            "chain[2].chain_id: \"a\" is already the chain id of chain[1]",
        ),
        (
            clash.clone(),
            "chain[2].laddr: 127.0.0.1:40101 is also the listen port of chain[1] (127.0.0.1:40101); set shared_port = true on both chains",
        ),
        (half, "set shared_port = true on both chains"),
        (badkey, "chain[1].node_key_file: node key "),
        (empty, "no [[chain]] table"),
    ] {
        let out = run_bounded(&["seed", "--config", &config]);
        assert_one_line_error(&out, needle);
    }
    let out = run_bounded(&[
        "seed",
        "--config",
        &tmp.path().join("none.toml").to_string_lossy(),
    ]);
    assert_one_line_error(&out, "cannot read config file");
    // Both chains sharing the port, with one key (the default key file): accepted (it binds
    // the port, announces both chains, and stops on SIGINT).
    let shared = write(
        "shared.toml",
        &two_chains("shared_port = true", "shared_port = true").replace("40101", "0"),
    );
    let mut seed = Running::start(&["seed", "--config", &shared]);
    let lines = seed_listening(&mut seed, &["a", "b"]);
    assert_eq!(lines[0], lines[1], "one port, one key");
    assert!(seed.interrupt().success());
    // A busy port names the chain's key (the key file exists now: nothing else is logged).
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let taken = write(
        "taken.toml",
        &format!("[[chain]]\nchain_id = \"a\"\nladdr = \"tcp://127.0.0.1:{port}\"\n"),
    );
    let out = run_bounded(&["seed", "--config", &taken]);
    assert_one_line_error(
        &out,
        &format!("cannot listen on chain[1].laddr 127.0.0.1:{port}: address already in use"),
    );
    drop(busy);
}

/// The "listening on ADDR as ID for chain CHAIN" lines of a seed for `chains`: (addr, id).
fn seed_listening(seed: &mut Running, chains: &[&str]) -> Vec<(String, String)> {
    chains
        .iter()
        .map(|chain| {
            let tail = format!(" for chain {chain}");
            let line = seed.stdout.wait_for(
                &["listening on ", &tail],
                std::time::Duration::from_secs(20),
            );
            let rest = line.strip_prefix("listening on ").unwrap();
            let rest = rest.strip_suffix(tail.as_str()).unwrap();
            let (addr, id) = rest.split_once(" as ").unwrap();
            (addr.to_owned(), id.to_owned())
        })
        .collect()
}

/// The vetted addresses of `chain` in a `/vetted` document.
fn vetted_of(doc: &str, chain: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(doc) else {
        return Vec::new();
    };
    v["chains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["chain_id"] == chain)
        .flat_map(|c| c["vetted"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn seed_serves_two_chains_on_one_port_and_a_restart_keeps_each_book() {
    let tmp = TempDir::new("seedrestart");
    let metrics_port = free_port();
    let config = tmp.path().join("seeds.toml");
    let chain = |id: &str| {
        format!(
            "[[chain]]\nchain_id = \"{id}\"\nladdr = \"tcp://127.0.0.1:0\"\nshared_port = true\n\
             allow_duplicate_ip = true\naddr_book_strict = false\n"
        )
    };
    std::fs::write(
        &config,
        format!(
            "[instrumentation]\nprometheus = true\nprometheus_listen_addr = \"127.0.0.1:{metrics_port}\"\n\n{}\n{}",
            chain("chain-a"),
            chain("chain-b")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let mut seed = Running::start(&["seed", "--config", &config]);
    let lines = seed_listening(&mut seed, &["chain-a", "chain-b"]);
    let (addr, seed_id) = lines[0].clone();
    assert_eq!(lines[1], lines[0], "one port, one key");

    // One node of each chain knows only the seed's (shared) address.
    let (home_a, home_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let id_a = init(&home_a, "chain-a");
    let id_b = init(&home_b, "chain-b");
    loopback_home(&home_a);
    loopback_home(&home_b);
    let seeds = format!("{seed_id}@{addr}");
    let start = |home: &Path| {
        Running::start(&[
            "start",
            "--home",
            home.to_str().unwrap(),
            "--p2p.laddr",
            "tcp://127.0.0.1:0",
            "--p2p.seeds",
            &seeds,
        ])
    };
    let mut a = start(&home_a);
    let mut b = start(&home_b);
    a.listening();
    b.listening();
    // The seed crawls each node back and serves it, for its own chain only.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let doc = http_get(metrics_port, "/vetted");
        let (va, vb) = (vetted_of(&doc, "chain-a"), vetted_of(&doc, "chain-b"));
        assert!(
            va.iter().all(|x| !x.starts_with(&id_b)) && vb.iter().all(|x| !x.starts_with(&id_a)),
            "crossed chains: {doc}"
        );
        if va.iter().any(|x| x.starts_with(&id_a)) && vb.iter().any(|x| x.starts_with(&id_b)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the seed never vetted both nodes: {doc}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let metrics = http_get(metrics_port, "/metrics");
    for chain in ["chain-a", "chain-b"] {
        assert!(
            metrics.contains(&format!("cometbft_p2p_peers{{chain_id=\"{chain}\"}}")),
            "{metrics}"
        );
    }
    assert!(
        !metrics.contains("peer_id"),
        "no per-peer labels: {metrics}"
    );
    assert!(a.interrupt().success());
    assert!(b.interrupt().success());
    assert!(seed.interrupt().success());
    let book = |chain: &str| {
        std::fs::read_to_string(tmp.path().join(chain).join("addrbook.json")).unwrap()
    };
    let (book_a, book_b) = (book("chain-a"), book("chain-b"));
    assert!(
        book_a.contains(&id_a) && !book_a.contains(&id_b),
        "{book_a}"
    );
    assert!(
        book_b.contains(&id_b) && !book_b.contains(&id_a),
        "{book_b}"
    );

    // Restarted alone, each chain has its own book back.
    let mut seed = Running::start(&["seed", "--config", &config]);
    seed_listening(&mut seed, &["chain-a", "chain-b"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let metrics = http_get(metrics_port, "/metrics");
        let size = |chain: &str| {
            metrics
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!(
                        "cometmesh_addrbook_size{{chain_id=\"{chain}\",table=\"all\"}} "
                    ))
                })
                .map(str::to_owned)
        };
        if size("chain-a").as_deref() == Some("1") && size("chain-b").as_deref() == Some("1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "books not reloaded: {metrics}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(seed.interrupt().success());
    let (again_a, again_b) = (book("chain-a"), book("chain-b"));
    assert!(
        again_a.contains(&id_a) && !again_a.contains(&id_b),
        "{again_a}"
    );
    assert!(
        again_b.contains(&id_b) && !again_b.contains(&id_a),
        "{again_b}"
    );
}

#[test]
fn start_in_seed_mode_serves_vetted_addresses() {
    let tmp = TempDir::new("startvetted");
    let home = tmp.path().join("seed");
    let id = init(&home, "vetted-chain");
    let metrics_port = free_port();
    let config = home.join("config/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("prometheus = false", "prometheus = true")
        .replace(
            "prometheus_listen_addr = \":26660\"",
            &format!("prometheus_listen_addr = \"127.0.0.1:{metrics_port}\""),
        );
    std::fs::write(&config, text).unwrap();
    let mut seed = Running::start(&[
        "start",
        "--home",
        home.to_str().unwrap(),
        "--p2p.laddr",
        "tcp://127.0.0.1:0",
        "--p2p.seed_mode",
    ]);
    let (addr, _) = seed.listening();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let doc = loop {
        let doc = http_get(metrics_port, "/vetted");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&doc) {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "no /vetted: {doc:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let chain = &doc["chains"][0];
    assert_eq!(chain["chain_id"], "vetted-chain", "{doc}");
    assert_eq!(chain["node_id"], id.as_str(), "{doc}");
    assert_eq!(chain["listen_addr"], addr.as_str(), "{doc}");
    assert_eq!(
        chain["vetted"],
        serde_json::json!([]),
        "a new seed reached no one: {doc}"
    );
    assert!(seed.interrupt().success());
}
