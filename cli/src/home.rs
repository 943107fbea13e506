//! The home directory, laid out as CometBFT's: `config/config.toml`, `config/node_key.json`,
//! `config/genesis.json`, `config/addrbook.json`, `data/`.
//!
//! The chain id lives where CometBFT keeps it, in `genesis.json` (`"chain_id"`). `init` writes
//! a minimal genesis.json holding only the fields cometmesh needs; in a CometBFT home the full
//! genesis.json is read as it is. `--chain-id` on the command line overrides both.

use std::path::{Path, PathBuf};

use cometmesh_core::NodeId;

use crate::config::{Config, ConfigError};
use crate::node_key::{self, NodeKeyError};

/// Why a home directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// The directory does not exist.
    #[error("home directory {} does not exist (create one with `cometmesh init --home {} --chain-id <id>`)", path.display(), path.display())]
    Missing {
        /// The directory.
        path: PathBuf,
    },
    /// The path exists but is not a directory.
    #[error("home {} is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The home has no config file.
    #[error("no config file at {} (is {} a cometmesh or CometBFT home?)", config.display(), home.display())]
    NoConfig {
        /// The expected config file.
        config: PathBuf,
        /// The home.
        home: PathBuf,
    },
    /// The config file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node key is unusable.
    #[error(transparent)]
    NodeKey(#[from] NodeKeyError),
    /// A file or directory could not be created or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No chain id could be found.
    #[error("no chain id: {} does not exist; pass --chain-id", path.display())]
    NoChainId {
        /// The genesis file looked for.
        path: PathBuf,
    },
    /// The genesis file is unusable.
    #[error("genesis file {}: {reason}", path.display())]
    Genesis {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A chain id is not acceptable.
    #[error("chain id {id:?} is invalid: {reason}")]
    BadChainId {
        /// The id given.
        id: String,
        /// Why.
        reason: &'static str,
    },
}

/// Longest chain id CometBFT accepts (`types.MaxChainIDLen`).
pub const MAX_CHAIN_ID_LEN: usize = 50;

/// Checks a chain id the way CometBFT's genesis validation does (non-empty, ≤ 50 bytes).
pub fn check_chain_id(id: &str) -> Result<(), HomeError> {
    let reason = if id.trim().is_empty() {
        "it is empty"
    } else if id.len() > MAX_CHAIN_ID_LEN {
        "it is longer than 50 bytes"
    } else {
        return Ok(());
    };
    Err(HomeError::BadChainId {
        id: id.to_owned(),
        reason,
    })
}

/// A home directory and the paths in it.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Names a home without touching the disk.
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }

    /// Names an existing home; fails if the directory is missing.
    pub fn existing(root: impl Into<PathBuf>) -> Result<Self, HomeError> {
        let home = Home::new(root);
        match std::fs::metadata(&home.root) {
            Ok(meta) if meta.is_dir() => Ok(home),
            Ok(_) => Err(HomeError::NotADirectory { path: home.root }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(HomeError::Missing { path: home.root })
            }
            Err(source) => Err(HomeError::Io {
                path: home.root,
                source,
            }),
        }
    }

    /// The home directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config/config.toml`.
    #[must_use]
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config").join("config.toml")
    }

    /// A path from the config, relative to the home unless absolute (CometBFT's `rootify`).
    #[must_use]
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.root.join(p)
        }
    }

    /// Reads `config/config.toml`.
    pub fn load_config(&self) -> Result<Config, HomeError> {
        let path = self.config_file();
        if !path.exists() {
            return Err(HomeError::NoConfig {
                config: path,
                home: self.root.clone(),
            });
        }
        Ok(Config::load(&path)?)
    }

    /// Reads the chain id from the genesis file named by the config.
    pub fn read_chain_id(&self, config: &Config) -> Result<String, HomeError> {
        let path = self.resolve(&config.genesis_file);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HomeError::NoChainId { path });
            }
            Err(source) => return Err(HomeError::Io { path, source }),
        };
        let genesis = |reason: String| HomeError::Genesis {
            path: path.clone(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| genesis(format!("not JSON ({e})")))?;
        let id = value
            .get("chain_id")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| genesis("no \"chain_id\" string".to_owned()))?;
        check_chain_id(id)?;
        Ok(id.to_owned())
    }

    /// Reads the node id from the node key named by the config.
    pub fn node_id(&self, config: &Config) -> Result<NodeId, HomeError> {
        Ok(node_key::load(&self.resolve(&config.node_key_file))?.node_id())
    }
}

/// What `init` did.
#[derive(Debug)]
pub struct InitReport {
    /// The new node's id.
    pub node_id: NodeId,
    /// Files written, in order.
    pub written: Vec<PathBuf>,
    /// Files found and kept as they were.
    pub kept: Vec<PathBuf>,
    /// The home's chain id (given, found in genesis.json, or generated).
    pub chain_id: String,
}

/// A chain id for a home made without one, as `cometbft init` makes it: `test-chain-` and six
/// random letters or digits.
pub fn test_chain_id(rng: &mut impl rand_core::RngCore) -> String {
    const CHARS: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = String::from("test-chain-");
    while id.len() < "test-chain-".len() + 6 {
        // Rejection sampling keeps every character equally likely (248 = 4 * 62).
        let b = (rng.next_u32() & 0xff) as u8;
        if b < 248 {
            id.push(char::from(CHARS[usize::from(b % 62)]));
        }
    }
    id
}

/// Creates a home: `config/config.toml` (unless present), a new `config/node_key.json` (mode
/// 0600; an existing key is an error and nothing is written), `config/genesis.json` with the
/// chain id (unless present; a present one must carry the same chain id) and `data/`.
///
/// Without a chain id, an existing genesis keeps its own and a new one gets `new_chain_id()`.
pub fn init(
    home: &Home,
    chain_id: Option<&str>,
    new_chain_id: impl FnOnce() -> String,
    moniker: &str,
) -> Result<InitReport, HomeError> {
    if let Some(id) = chain_id {
        check_chain_id(id)?;
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| HomeError::Io { path, source }
    };
    let config_path = home.config_file();
    let config = if config_path.exists() {
        home.load_config()?
    } else {
        let config = Config {
            moniker: moniker.to_owned(),
            ..Config::default()
        };
        config.validate()?;
        config
    };
    let key_path = home.resolve(&config.node_key_file);
    if key_path.exists() {
        return Err(NodeKeyError::Exists { path: key_path }.into());
    }
    let genesis_path = home.resolve(&config.genesis_file);
    let genesis_present = genesis_path.exists();
    let chain_id = if genesis_present {
        let existing = home.read_chain_id(&config)?;
        match chain_id {
            Some(wanted) if wanted != existing => {
                return Err(HomeError::Genesis {
                    path: genesis_path,
                    reason: format!(
                        "it is for chain {existing:?}, not {wanted:?}; remove it or use --chain-id {existing}"
                    ),
                });
            }
            _ => existing,
        }
    } else {
        match chain_id {
            Some(id) => id.to_owned(),
            None => new_chain_id(),
        }
    };
    check_chain_id(&chain_id)?;

    for dir in [home.root().join("config"), home.root().join("data")] {
        create_private_dir(&dir).map_err(io(&dir))?;
    }
    if let Some(parent) = key_path.parent() {
        create_private_dir(parent).map_err(io(parent))?;
    }
    let mut report = InitReport {
        node_id: NodeId([0; 20]),
        chain_id: chain_id.clone(),
        written: Vec::new(),
        kept: Vec::new(),
    };
    if config_path.exists() {
        report.kept.push(config_path);
    } else {
        write_new(&config_path, config.to_toml().as_bytes()).map_err(io(&config_path))?;
        report.written.push(config_path);
    }
    let key = node_key::generate().map_err(io(&key_path))?;
    node_key::create(&key_path, &key)?;
    report.node_id = key.node_id();
    report.written.push(key_path);
    if genesis_present {
        report.kept.push(genesis_path);
    } else {
        if let Some(parent) = genesis_path.parent() {
            create_private_dir(parent).map_err(io(parent))?;
        }
        write_new(&genesis_path, minimal_genesis(&chain_id).as_bytes())
            .map_err(io(&genesis_path))?;
        report.written.push(genesis_path);
    }
    Ok(report)
}

/// The genesis.json `init` writes: the chain id, and the fields every genesis has, so tools
/// that expect them find them. It has no validators: cometmesh runs the p2p layer only.
#[must_use]
pub fn minimal_genesis(chain_id: &str) -> String {
    let id = serde_json::Value::String(chain_id.to_owned());
    format!("{{\n  \"chain_id\": {id},\n  \"initial_height\": \"1\",\n  \"app_hash\": \"\"\n}}\n")
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unused_chain_id() -> String {
        panic!("a chain id was given or found; none may be generated")
    }

    #[test]
    fn generated_chain_ids_look_like_cometbfts() {
        use rand_core::SeedableRng as _;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let a = test_chain_id(&mut rng);
        let b = test_chain_id(&mut rng);
        assert_ne!(a, b);
        for id in [&a, &b] {
            let tail = id.strip_prefix("test-chain-").expect(id);
            assert_eq!(tail.len(), 6, "{id}");
            assert!(tail.bytes().all(|c| c.is_ascii_alphanumeric()), "{id}");
            check_chain_id(id).unwrap();
        }
    }

    #[test]
    fn init_without_chain_id_generates_one_or_keeps_the_genesis_one() {
        let home = temp_home("nochain");
        let report = init(&home, None, || "test-chain-AbC123".to_owned(), "m").unwrap();
        assert_eq!(report.chain_id, "test-chain-AbC123");
        let config = home.load_config().unwrap();
        assert_eq!(home.read_chain_id(&config).unwrap(), "test-chain-AbC123");
        std::fs::remove_dir_all(home.root()).unwrap();

        std::fs::create_dir_all(home.root().join("config")).unwrap();
        std::fs::write(
            home.root().join("config/genesis.json"),
            r#"{"chain_id":"found-here","validators":[]}"#,
        )
        .unwrap();
        let report = init(&home, None, unused_chain_id, "m").unwrap();
        assert_eq!(report.chain_id, "found-here");
        assert_eq!(report.kept.len(), 1);
        std::fs::remove_dir_all(home.root()).unwrap();
    }

    fn temp_home(name: &str) -> Home {
        let dir =
            std::env::temp_dir().join(format!("cometmesh-home-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Home::new(dir)
    }

    #[test]
    fn init_writes_a_usable_home_and_refuses_a_second_time() {
        let home = temp_home("init");
        let report = init(&home, Some("test-chain"), unused_chain_id, "alpha").unwrap();
        assert_eq!(report.written.len(), 3);
        let config = home.load_config().unwrap();
        assert_eq!(config.moniker, "alpha");
        assert_eq!(home.read_chain_id(&config).unwrap(), "test-chain");
        assert_eq!(home.node_id(&config).unwrap(), report.node_id);
        assert!(home.root().join("data").is_dir());
        let err = init(&home, Some("test-chain"), unused_chain_id, "alpha").unwrap_err();
        assert!(
            matches!(err, HomeError::NodeKey(NodeKeyError::Exists { .. })),
            "{err}"
        );
        std::fs::remove_dir_all(home.root()).unwrap();
    }

    #[test]
    fn init_keeps_existing_genesis_of_the_same_chain_only() {
        let home = temp_home("genesis");
        std::fs::create_dir_all(home.root().join("config")).unwrap();
        std::fs::write(
            home.root().join("config/genesis.json"),
            r#"{"chain_id":"other","validators":[]}"#,
        )
        .unwrap();
        let err = init(&home, Some("mine"), unused_chain_id, "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"other\""), "{err}");
        let report = init(&home, Some("other"), unused_chain_id, "m").unwrap();
        assert_eq!(report.kept.len(), 1);
        std::fs::remove_dir_all(home.root()).unwrap();
    }

    #[test]
    fn minimal_genesis_is_json_with_the_chain_id_first() {
        let text = minimal_genesis("a\"b");
        assert!(text.starts_with("{\n  \"chain_id\": \"a\\\"b\","), "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["chain_id"], "a\"b");
    }

    #[test]
    fn chain_id_rules() {
        assert!(check_chain_id("cosmoshub-4").is_ok());
        assert!(check_chain_id("").is_err());
        assert!(check_chain_id(&"x".repeat(51)).is_err());
    }

    #[test]
    fn missing_home_is_named() {
        let err = Home::existing("/nonexistent/cometmesh-home").unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent/cometmesh-home does not exist")
        );
    }
}
