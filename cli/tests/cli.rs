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
        "flush_throttle_timeout = \"100ms\"",
        "flush_throttle_timeout = \"100 parsecs\"",
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

/// The CometBFT binary, when one is installed (tests/interop/install-cometbft.sh).
fn cometbft_binary() -> Option<PathBuf> {
    let from_env = std::env::var_os("COMETBFT").map(PathBuf::from);
    let cached =
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/cometmesh/bin/cometbft"));
    [from_env, cached]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
}

#[test]
fn cometbft_reads_a_home_made_by_init() {
    let Some(cometbft) = cometbft_binary() else {
        eprintln!("skipped: no cometbft binary ($COMETBFT or ~/.cache/cometmesh/bin/cometbft)");
        return;
    };
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
