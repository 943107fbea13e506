//! The seed configuration of `cometmesh seed --config seeds.toml`: several chains in one
//! process, each a `[[chain]]` table with its own chain id, node key, address book, seeds,
//! limits and listen address, checked before any socket opens.
//!
//! ```toml
//! [instrumentation]                 # optional, the keys of config.toml's section
//! prometheus = true                 # /metrics (every series labelled chain_id) and /vetted
//! prometheus_listen_addr = ":26660"
//!
//! [[chain]]
//! chain_id = "cosmoshub-4"
//! laddr = "tcp://0.0.0.0:26656"
//! shared_port = true                # chains with the same laddr share the port
//! node_key_file = "node_key.json"   # the default; chains on a shared port need the same key
//! addr_book_file = "cosmoshub-4/addrbook.json"   # the default: <chain_id>/addrbook.json
//! seeds = "id@host:26656,..."
//!
//! [[chain]]
//! chain_id = "osmosis-1"
//! laddr = "tcp://0.0.0.0:26656"
//! shared_port = true
//! ```
//!
//! A chain table takes `chain_id` (required), `moniker` (default: the host name),
//! `node_key_file`, `shared_port` (default false) and every key of config.toml's `[p2p]`
//! section with the same meaning and default, except `seed_mode`, which defaults to true.
//! Relative paths are relative to the directory of the seed config file. A missing node key
//! file is created (as CometBFT does at start); one that is not a node key is an error. Unknown
//! keys are errors (a typo would otherwise be silently ignored).
//!
//! Checked: at least one chain; chain ids valid and distinct; address books distinct; two
//! chains whose listen addresses overlap (same port, same IP or either on all interfaces)
//! both say `shared_port = true`, with the same `laddr` and the same node key (the port's
//! SecretConnection runs before the peer's chain is known).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cometmesh_core::identity::NodeKey;

use crate::config::{self, Config, ConfigError, InstrumentationConfig, P2pConfig};
use crate::home::{self, Home};
use crate::node_key::{self, NodeKeyError};
use crate::settings::{MetricsSettings, NodeSettings, SettingsError};

/// Why a seed configuration cannot be used. Each names the chain table and key at fault.
#[derive(Debug, thiserror::Error)]
pub enum SeedConfigError {
    /// The file cannot be read, is not TOML, or a value has the wrong type.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file has no `[[chain]]` table.
    #[error("seed config {}: no [[chain]] table (each chain to seed needs one)", path.display())]
    NoChains {
        /// The file.
        path: PathBuf,
    },
    /// A key the seed config does not know.
    #[error("{key}: unknown key")]
    UnknownKey {
        /// The dotted key, e.g. `chain[1].laddr2`.
        key: String,
    },
    /// A chain id is missing or invalid.
    #[error("{key}: {reason}")]
    ChainId {
        /// The dotted key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Two chains have the same chain id.
    #[error("chain[{second}].chain_id: {chain_id:?} is already the chain id of chain[{first}]")]
    DuplicateChainId {
        /// The chain id.
        chain_id: String,
        /// The first chain with it (1-based).
        first: usize,
        /// The second.
        second: usize,
    },
    /// Two chains would write the same address book.
    #[error("chain[{second}].addr_book_file: {} is also chain[{first}]'s address book", path.display())]
    SameAddrBook {
        /// The file.
        path: PathBuf,
        /// The first chain (1-based).
        first: usize,
        /// The second.
        second: usize,
    },
    /// Two chains listen on one port without both sharing it, or share it differently.
    #[error(
        "chain[{second}].laddr: {addr} is also the listen port of chain[{first}] ({other}); {hint}"
    )]
    PortClash {
        /// The second chain's address.
        addr: SocketAddr,
        /// The first chain's address.
        other: SocketAddr,
        /// The first chain (1-based).
        first: usize,
        /// The second.
        second: usize,
        /// What to do.
        hint: &'static str,
    },
    /// Chains on one shared port have different node keys.
    #[error(
        "chain[{second}].node_key_file: chains sharing port {addr} need one node key, but chain[{first}] has {first_key} and chain[{second}] has {second_key}"
    )]
    SharedPortKey {
        /// The port.
        addr: SocketAddr,
        /// The first chain (1-based).
        first: usize,
        /// Its key: the node id, or the file a new key would be created in.
        first_key: String,
        /// The second.
        second: usize,
        /// Its key.
        second_key: String,
    },
    /// A node key file is unusable.
    #[error("chain[{index}].node_key_file: {source}")]
    NodeKey {
        /// The chain (1-based).
        index: usize,
        /// Why.
        source: NodeKeyError,
    },
    /// A value of a chain table does not parse or resolve.
    #[error("{0}")]
    Settings(SettingsError),
}

/// One chain of the seed, checked and resolved.
#[derive(Debug, Clone)]
pub struct ChainPlan {
    /// 1-based position in the file (`chain[N]` in messages).
    pub index: usize,
    /// Node settings, as `start` would have them (the chain's `[p2p]` keys in `config.p2p`).
    pub settings: NodeSettings,
    /// The node key.
    pub key: NodeKey,
    /// Whether the chain's listen port is shared with other chains.
    pub shared_port: bool,
}

/// The whole seed: its chains and where metrics are served.
#[derive(Debug, Clone)]
pub struct SeedPlan {
    /// The config file.
    pub path: PathBuf,
    /// The chains, in file order.
    pub chains: Vec<ChainPlan>,
    /// `/metrics` and `/vetted`, when `prometheus = true`.
    pub metrics: Option<MetricsSettings>,
}

impl SeedPlan {
    /// The listen groups: each shared port once with its chains (indices into `chains`),
    /// each other chain alone.
    #[must_use]
    pub fn ports(&self) -> Vec<(SocketAddr, bool, Vec<usize>)> {
        let mut out: Vec<(SocketAddr, bool, Vec<usize>)> = Vec::new();
        for (i, c) in self.chains.iter().enumerate() {
            let addr = c.settings.listen;
            match out
                .iter_mut()
                .find(|(a, shared, _)| *shared && c.shared_port && *a == addr)
            {
                Some(group) => group.2.push(i),
                None => out.push((addr, c.shared_port, vec![i])),
            }
        }
        out
    }
}

const TOP_KEYS: &[&str] = &["chain", "instrumentation"];
const CHAIN_KEYS: &[&str] = &["chain_id", "moniker", "node_key_file", "shared_port"];
const INSTRUMENTATION_KEYS: &[&str] = &[
    "prometheus",
    "prometheus_listen_addr",
    "max_open_connections",
    "namespace",
];

/// Reads and checks a seed config file; creates missing node key files.
pub fn load(path: &Path) -> Result<SeedPlan, SeedConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned);
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    parse(path, &text, &dir, crate::default_moniker)
}

/// Parses seed config `text` (read from `path`), resolving relative paths against `dir`.
pub fn parse(
    path: &Path,
    text: &str,
    dir: &Path,
    default_moniker: impl Fn() -> String,
) -> Result<SeedPlan, SeedConfigError> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| config::toml_syntax_error(path, text, &e))?;
    reject_unknown(&table, "", TOP_KEYS)?;
    let instrumentation = match table.get("instrumentation") {
        None => InstrumentationConfig::default(),
        Some(toml::Value::Table(t)) => {
            reject_unknown(t, "instrumentation", INSTRUMENTATION_KEYS)?;
            config::instrumentation_from_table(t, "instrumentation")?
        }
        Some(_) => {
            return Err(config::invalid_key("instrumentation", "must be a section").into());
        }
    };
    let tables: Vec<&toml::Table> = match table.get("chain") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_table().ok_or_else(|| {
                    config::invalid_key(&format!("chain[{}]", i + 1), "must be a table")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(config::invalid_key("chain", "must be [[chain]] tables").into());
        }
    };
    if tables.is_empty() {
        return Err(SeedConfigError::NoChains {
            path: path.to_owned(),
        });
    }
    let home = Home::new(dir);
    let mut drafts: Vec<Draft> = Vec::with_capacity(tables.len());
    for (i, t) in tables.into_iter().enumerate() {
        let chain = chain_plan(i + 1, t, &home, &instrumentation, &default_moniker)?;
        check_against(&drafts, &chain)?;
        drafts.push(chain);
    }
    // Every check passed: only now create the missing key files (one per path).
    let mut created: Vec<(PathBuf, NodeKey)> = Vec::new();
    let mut chains = Vec::with_capacity(drafts.len());
    for d in drafts {
        let key = match d.key {
            Some(key) => key,
            None => {
                let path = &d.settings.node_key_path;
                match created.iter().find(|(p, _)| p == path) {
                    Some((_, key)) => key.clone(),
                    None => {
                        let key = create_key(path).map_err(|source| SeedConfigError::NodeKey {
                            index: d.index,
                            source,
                        })?;
                        created.push((path.clone(), key.clone()));
                        key
                    }
                }
            }
        };
        chains.push(ChainPlan {
            index: d.index,
            settings: d.settings,
            key,
            shared_port: d.shared_port,
        });
    }
    let metrics = chains.first().and_then(|c| c.settings.metrics.clone());
    Ok(SeedPlan {
        path: path.to_owned(),
        chains,
        metrics,
    })
}

fn reject_unknown(t: &toml::Table, prefix: &str, known: &[&str]) -> Result<(), SeedConfigError> {
    // A toml::Table is ordered by key: the first unknown key is reported, deterministically.
    match t.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(SeedConfigError::UnknownKey {
            key: if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            },
        }),
        None => Ok(()),
    }
}

/// A chain before missing key files are created.
struct Draft {
    index: usize,
    settings: NodeSettings,
    /// `None`: no file yet.
    key: Option<NodeKey>,
    shared_port: bool,
}

impl Draft {
    /// Who the chain's key is: its node id, or (no file yet) the file it will be created in.
    fn key_identity(&self) -> Result<cometmesh_core::NodeId, &Path> {
        self.key
            .as_ref()
            .map(NodeKey::node_id)
            .ok_or(self.settings.node_key_path.as_path())
    }
}

fn chain_plan(
    index: usize,
    t: &toml::Table,
    home: &Home,
    instrumentation: &InstrumentationConfig,
    default_moniker: &impl Fn() -> String,
) -> Result<Draft, SeedConfigError> {
    let prefix = format!("chain[{index}]");
    let known: Vec<&str> = CHAIN_KEYS.iter().chain(config::P2P_KEYS).copied().collect();
    reject_unknown(t, &prefix, &known)?;
    let mut chain_id = String::new();
    config::table_string(t, &prefix, "chain_id", &mut chain_id)?;
    if !t.contains_key("chain_id") {
        return Err(SeedConfigError::ChainId {
            key: format!("{prefix}.chain_id"),
            reason: "missing (each [[chain]] names its chain id)".to_owned(),
        });
    }
    home::check_chain_id(&chain_id).map_err(|e| SeedConfigError::ChainId {
        key: format!("{prefix}.chain_id"),
        reason: e.to_string(),
    })?;
    let mut moniker = default_moniker();
    config::table_string(t, &prefix, "moniker", &mut moniker)?;
    let mut node_key_file = "node_key.json".to_owned();
    config::table_string(t, &prefix, "node_key_file", &mut node_key_file)?;
    let mut shared_port = false;
    config::table_boolean(t, &prefix, "shared_port", &mut shared_port)?;
    let base = P2pConfig {
        seed_mode: true,
        addr_book_file: format!("{chain_id}/addrbook.json"),
        ..P2pConfig::default()
    };
    let p2p = config::p2p_from_table(t, &prefix, base)?;
    let config = Config {
        moniker,
        node_key_file,
        genesis_file: String::new(),
        p2p,
        instrumentation: instrumentation.clone(),
    };
    config
        .validate()
        .map_err(|e| rename_config_error(e, &prefix))?;
    let settings = NodeSettings::resolve(home, config, chain_id)
        .map_err(|e| SeedConfigError::Settings(rename_settings_error(e, &prefix)))?;
    let key = match node_key::load(&settings.node_key_path) {
        Ok(key) => Some(key),
        Err(NodeKeyError::Missing { .. }) => None,
        Err(source) => return Err(SeedConfigError::NodeKey { index, source }),
    };
    Ok(Draft {
        index,
        settings,
        key,
        shared_port,
    })
}

/// Creates a node key file where there is none (as CometBFT does at start).
fn create_key(path: &Path) -> Result<NodeKey, NodeKeyError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| NodeKeyError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    let key = node_key::generate().map_err(|source| NodeKeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    node_key::create(path, &key)?;
    tracing::info!(path = %path.display(), node_id = %key.node_id(), "created a node key");
    Ok(key)
}

/// Whether two listen addresses take the same port (port 0 picks a free one: never).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn check_against(earlier: &[Draft], c: &Draft) -> Result<(), SeedConfigError> {
    for e in earlier {
        if e.settings.chain_id == c.settings.chain_id {
            return Err(SeedConfigError::DuplicateChainId {
                chain_id: c.settings.chain_id.clone(),
                first: e.index,
                second: c.index,
            });
        }
        if e.settings.addr_book_path == c.settings.addr_book_path {
            return Err(SeedConfigError::SameAddrBook {
                path: c.settings.addr_book_path.clone(),
                first: e.index,
                second: c.index,
            });
        }
        let (a, b) = (e.settings.listen, c.settings.listen);
        let both_shared = e.shared_port && c.shared_port;
        let same_port = overlap(a, b) || (both_shared && a == b);
        if !same_port {
            continue;
        }
        let clash = |hint| SeedConfigError::PortClash {
            addr: b,
            other: a,
            first: e.index,
            second: c.index,
            hint,
        };
        if !both_shared {
            return Err(clash(
                "set shared_port = true on both chains to serve them on one port",
            ));
        }
        if a != b {
            return Err(clash("chains sharing a port need the same laddr"));
        }
        if e.key_identity() != c.key_identity() {
            let show = |d: &Draft| match d.key_identity() {
                Ok(id) => id.to_string(),
                Err(path) => format!("a new key in {}", path.display()),
            };
            return Err(SeedConfigError::SharedPortKey {
                addr: b,
                first: e.index,
                first_key: show(e),
                second: c.index,
                second_key: show(c),
            });
        }
    }
    Ok(())
}

fn rename_key(key: &str, prefix: &str) -> String {
    match key.strip_prefix("p2p.") {
        Some(rest) => format!("{prefix}.{rest}"),
        None if key.starts_with("instrumentation.") => key.to_owned(),
        None => format!("{prefix}.{key}"),
    }
}

fn rename_config_error(e: ConfigError, prefix: &str) -> SeedConfigError {
    match e {
        ConfigError::Invalid { key, reason } => ConfigError::Invalid {
            key: rename_key(&key, prefix),
            reason,
        }
        .into(),
        other => other.into(),
    }
}

fn rename_settings_error(e: SettingsError, prefix: &str) -> SettingsError {
    match e {
        SettingsError::PeerAddress { key, value, reason } => SettingsError::PeerAddress {
            key: rename_key(&key, prefix),
            value,
            reason,
        },
        SettingsError::NodeId { key, value, reason } => SettingsError::NodeId {
            key: rename_key(&key, prefix),
            value,
            reason,
        },
        SettingsError::Address { key, value, reason } => SettingsError::Address {
            key: rename_key(&key, prefix),
            value,
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("cometmesh-seedcfg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn parse_in(d: &Path, text: &str) -> Result<SeedPlan, SeedConfigError> {
        parse(&d.join("seeds.toml"), text, d, || "m".to_owned())
    }

    #[test]
    fn two_chains_on_one_shared_port() {
        let d = dir("ok");
        let plan = parse_in(
            &d,
            r#"
            [instrumentation]
            prometheus = true
            prometheus_listen_addr = "127.0.0.1:0"
            [[chain]]
            chain_id = "a"
            laddr = "tcp://127.0.0.1:40001"
            shared_port = true
            max_num_inbound_peers = 7
            [[chain]]
            chain_id = "b"
            laddr = "tcp://127.0.0.1:40001"
            shared_port = true
            seed_mode = false
            [[chain]]
            chain_id = "c"
            laddr = "tcp://127.0.0.1:40002"
            node_key_file = "c/key.json"
            "#,
        )
        .unwrap();
        assert_eq!(plan.chains.len(), 3);
        let a = &plan.chains[0].settings;
        assert_eq!(a.chain_id, "a");
        assert!(a.config.p2p.seed_mode);
        assert_eq!(a.config.p2p.max_num_inbound_peers, 7);
        assert_eq!(a.addr_book_path, d.join("a/addrbook.json"));
        assert!(!plan.chains[1].settings.config.p2p.seed_mode);
        assert_eq!(
            plan.chains[0].key.node_id(),
            plan.chains[1].key.node_id(),
            "one default key file"
        );
        assert_ne!(plan.chains[0].key.node_id(), plan.chains[2].key.node_id());
        let ports = plan.ports();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].2, [0, 1]);
        assert!(ports[0].1);
        assert_eq!(ports[1].2, [2]);
        assert!(plan.metrics.is_some());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Every `[p2p]` key is accepted in a chain table, the defences' keys included (they were
    /// once missing from the list a chain table is checked against).
    #[test]
    fn a_chain_takes_every_p2p_key() {
        let d = dir("keys");
        let plan = parse_in(
            &d,
            r#"
            [[chain]]
            chain_id = "a"
            laddr = "tcp://127.0.0.1:40003"
            feeler_interval = "5m"
            inbound_attempts_per_ip_per_minute = 3
            inbound_attempts_per_group_per_minute = 4
            "#,
        )
        .unwrap();
        let p = &plan.chains[0].settings.config.p2p;
        assert_eq!(p.feeler_interval, std::time::Duration::from_secs(300));
        assert_eq!(
            (
                p.inbound_attempts_per_ip_per_minute,
                p.inbound_attempts_per_group_per_minute
            ),
            (3, 4)
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn error(text: &str) -> String {
        let d = dir("err");
        let e = parse_in(&d, text).unwrap_err().to_string();
        std::fs::remove_dir_all(&d).unwrap();
        e
    }

    #[test]
    fn mistakes_name_the_chain_and_key() {
        let e = error("[[chain]]\nchain_id = \"a\"\n[[chain]]\nchain_id = \"a\"\n");
        assert_eq!(
            e,
            "chain[2].chain_id: \"a\" is already the chain id of chain[1]"
        );
        let e = error(
            "[[chain]]\nchain_id = \"a\"\nladdr = \"tcp://0.0.0.0:40003\"\n\
             [[chain]]\nchain_id = \"b\"\nladdr = \"tcp://127.0.0.1:40003\"\n",
        );
        assert!(
            e.starts_with("chain[2].laddr: 127.0.0.1:40003 is also the listen port of chain[1]"),
            "{e}"
        );
        assert!(e.ends_with("set shared_port = true on both chains to serve them on one port"));
        let e = error(
            "[[chain]]\nchain_id = \"a\"\nladdr = \"tcp://0.0.0.0:40003\"\nshared_port = true\n\
             [[chain]]\nchain_id = \"b\"\nladdr = \"tcp://0.0.0.0:40003\"\nshared_port = true\n\
             node_key_file = \"b.json\"\n",
        );
        assert!(
            e.starts_with(
                "chain[2].node_key_file: chains sharing port 0.0.0.0:40003 need one node key"
            ),
            "{e}"
        );
        assert!(
            error("").ends_with("seeds.toml: no [[chain]] table (each chain to seed needs one)")
        );
        assert_eq!(
            error("[[chain]]\nchain_id = \"a\"\nladdr2 = \"x\"\n"),
            "chain[1].laddr2: unknown key"
        );
        assert_eq!(
            error("[[chain]]\nmoniker = \"x\"\n"),
            "chain[1].chain_id: missing (each [[chain]] names its chain id)"
        );
        let e = error("[[chain]]\nchain_id = \"a\"\nseeds = \"nope\"\n");
        assert!(e.starts_with("chain[1].seeds: "), "{e}");
        let e = error("[[chain]]\nchain_id = \"a\"\nmax_num_inbound_peers = -1\n");
        assert_eq!(
            e,
            "config key chain[1].max_num_inbound_peers: can't be negative"
        );
        let e = error(
            "[[chain]]\nchain_id = \"a\"\naddr_book_file = \"x.json\"\n\
             [[chain]]\nchain_id = \"b\"\naddr_book_file = \"x.json\"\n",
        );
        assert!(e.starts_with("chain[2].addr_book_file: "), "{e}");
    }

    /// The example in cli/README.md is a valid seed config.
    #[test]
    fn the_readme_example_is_valid() {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find("## `seed`").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let d = dir("readme");
        let plan = parse_in(&d, example).unwrap();
        let ids: Vec<&str> = plan
            .chains
            .iter()
            .map(|c| c.settings.chain_id.as_str())
            .collect();
        assert_eq!(ids, ["cosmoshub-4", "osmosis-1"]);
        assert_eq!(plan.ports().len(), 1, "one shared port");
        assert_eq!(plan.chains[0].settings.seeds.len(), 1);
        assert!(plan.metrics.is_some());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_node_key_is_refused() {
        let d = dir("badkey");
        std::fs::write(d.join("key.json"), "{\"not\": \"a key\"}").unwrap();
        let e = parse_in(
            &d,
            "[[chain]]\nchain_id = \"a\"\nnode_key_file = \"key.json\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("chain[1].node_key_file: node key "), "{e}");
        assert!(e.contains("is malformed"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
