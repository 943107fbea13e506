//! CometBFT's `config.toml`: the keys cometmesh reads, with CometBFT v0.38's defaults.
//!
//! Read: the top-level `moniker`, `node_key_file` and `genesis_file`, the whole `[p2p]` section
//! (spec section 8) and `[instrumentation]`. Every other section and key is ignored, so the
//! config.toml of an existing CometBFT home is read as it is. Values are checked one by one and
//! an error names the key (`p2p.max_num_inbound_peers`), as a person fixing the file needs.
//!
//! Written (by `init`): the same keys in CometBFT's order and layout, so a CometBFT operator
//! finds everything where they expect it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::duration::{DurationError, parse_go_duration};

mod p2p;
pub use p2p::{P2P_KEYS, P2pConfig};

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config file {} is not valid TOML (line {line}): {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// The parser's message, on one line.
        message: String,
    },
    /// A key holds a value of the wrong type.
    #[error("config key {key}: expected {expected}, found {found}")]
    WrongType {
        /// The dotted key, e.g. `p2p.pex`.
        key: String,
        /// What the key takes.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// A duration key holds something that is not a Go duration.
    #[error("config key {key}: {value:?} is not a duration: {source}")]
    Duration {
        /// The dotted key.
        key: String,
        /// The value as written.
        value: String,
        /// Why it does not parse.
        source: DurationError,
    },
    /// A key holds a value of the right type that is not allowed.
    #[error("config key {key}: {reason}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The `[instrumentation]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentationConfig {
    /// `prometheus`: serve metrics at `/metrics`.
    pub prometheus: bool,
    /// `prometheus_listen_addr`: `host:port` or `:port` (all interfaces).
    pub prometheus_listen_addr: String,
    /// `max_open_connections`: simultaneous metrics connections (0: unlimited).
    pub max_open_connections: u32,
    /// `namespace`: prefix of the CometBFT metric names.
    pub namespace: String,
}

impl Default for InstrumentationConfig {
    fn default() -> Self {
        InstrumentationConfig {
            prometheus: false,
            prometheus_listen_addr: ":26660".to_owned(),
            max_open_connections: 3,
            namespace: "cometbft".to_owned(),
        }
    }
}

/// The parts of `config.toml` cometmesh uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `moniker`: the node's human-readable name, sent in NodeInfo.
    pub moniker: String,
    /// `node_key_file`: relative to the home unless absolute.
    pub node_key_file: String,
    /// `genesis_file`: where the chain id is read, relative to the home unless absolute.
    pub genesis_file: String,
    /// `[p2p]`.
    pub p2p: P2pConfig,
    /// `[instrumentation]`.
    pub instrumentation: InstrumentationConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            moniker: "cometmesh".to_owned(),
            node_key_file: "config/node_key.json".to_owned(),
            genesis_file: "config/genesis.json".to_owned(),
            p2p: P2pConfig::default(),
            instrumentation: InstrumentationConfig::default(),
        }
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Syntax { line, message, .. } => ConfigError::Syntax {
                path: path.to_owned(),
                line,
                message,
            },
            other => other,
        })
    }

    /// Parses config text; keys that are absent take CometBFT's defaults.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        let mut config = Config::default();
        let top = Section {
            table: &table,
            prefix: "",
        };
        top.string("moniker", &mut config.moniker)?;
        top.string("node_key_file", &mut config.node_key_file)?;
        top.string("genesis_file", &mut config.genesis_file)?;

        if let Some(p2p) = top.section("p2p")? {
            config.p2p.read(&p2p)?;
        }
        if let Some(ins) = top.section("instrumentation")? {
            read_instrumentation(&ins, &mut config.instrumentation)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks values whose type is right but whose content is not usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // NodeInfo.Validate: the moniker is sent to peers and must be printable ASCII.
        if self.moniker.trim().is_empty() || !self.moniker.bytes().all(|b| (32..=126).contains(&b))
        {
            return Err(invalid(
                "moniker",
                &format!("{:?} must be non-empty printable ASCII", self.moniker),
            ));
        }
        if self.p2p.max_packet_msg_payload_size == 0 {
            return Err(invalid(
                "p2p.max_packet_msg_payload_size",
                "must be positive",
            ));
        }
        if self.p2p.laddr.trim().is_empty() {
            return Err(invalid("p2p.laddr", "must not be empty"));
        }
        let ns = &self.instrumentation.namespace;
        let valid_ns = ns
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !valid_ns {
            return Err(invalid(
                "instrumentation.namespace",
                &format!("{ns:?} is not a metric name prefix (letters, digits, _)"),
            ));
        }
        Ok(())
    }

    /// Renders the config in CometBFT's layout: the same key names, order and sections, with
    /// comments of our own. A CometBFT v0.38 node reads the file too (absent keys default).
    #[must_use]
    pub fn to_toml(&self) -> String {
        let p = &self.p2p;
        let i = &self.instrumentation;
        let mut out = String::new();
        let mut line = |s: &str| {
            out.push_str(s);
            out.push('\n');
        };
        line("# This is a TOML config file, laid out like CometBFT's config.toml (v0.38).");
        line("# Written by `cometmesh init`. cometmesh reads the keys below and ignores any");
        line("# other key or section, so a CometBFT home works unchanged and the reverse.");
        line("#");
        line("# Relative paths are relative to the home directory (--home).");
        line("");
        line("#######################################################################");
        line("###                   Main Base Config Options                      ###");
        line("#######################################################################");
        line("");
        line("# Human-readable name of this node, sent to peers in the handshake");
        line(&format!("moniker = {}", quote(&self.moniker)));
        line("");
        line("# JSON file holding the chain id (cometmesh reads only its \"chain_id\")");
        line(&format!("genesis_file = {}", quote(&self.genesis_file)));
        line("");
        line("# Ed25519 key that authenticates this node; its hash is the node id");
        line(&format!("node_key_file = {}", quote(&self.node_key_file)));
        line("");
        line("#######################################################");
        line("###           P2P Configuration Options             ###");
        line("#######################################################");
        line("[p2p]");
        p.write(&mut line);
        line("");
        line("#######################################################");
        line("###       Instrumentation Configuration Options     ###");
        line("#######################################################");
        line("[instrumentation]");
        line("");
        line("# Serve Prometheus metrics at /metrics on prometheus_listen_addr");
        line(&format!("prometheus = {}", i.prometheus));
        line("");
        line("# host:port for the metrics endpoint (\":26660\": every interface)");
        line(&format!(
            "prometheus_listen_addr = {}",
            quote(&i.prometheus_listen_addr)
        ));
        line("");
        line("# Most simultaneous metrics connections (0: no limit)");
        line(&format!(
            "max_open_connections = {}",
            i.max_open_connections
        ));
        line("");
        line("# Prefix of the CometBFT metric names (cometbft_p2p_peers, ...)");
        line(&format!("namespace = {}", quote(&i.namespace)));
        out
    }
}

/// A TOML basic string with escapes.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map_or(1, |span| {
        text[..span.start.min(text.len())].lines().count().max(1)
    });
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    ConfigError::Syntax {
        path: PathBuf::new(),
        line,
        message,
    }
}

fn type_name(value: &toml::Value) -> String {
    let kind = value.type_str();
    let mut shown = value.to_string().replace('\n', " ");
    if shown.chars().count() > 40 {
        shown = shown.chars().take(40).collect::<String>() + "…";
    }
    format!("{kind} {shown}")
}

/// The `[instrumentation]` keys of `ins` into `c`.
fn read_instrumentation(
    ins: &Section<'_>,
    c: &mut InstrumentationConfig,
) -> Result<(), ConfigError> {
    ins.boolean("prometheus", &mut c.prometheus)?;
    ins.string("prometheus_listen_addr", &mut c.prometheus_listen_addr)?;
    ins.integer("max_open_connections", &mut c.max_open_connections)?;
    ins.string("namespace", &mut c.namespace)?;
    Ok(())
}

/// Reads the `[p2p]` keys of one TOML table named `prefix` (for error messages, e.g.
/// `chain[1]`) over `base`; unknown keys are ignored here.
pub fn p2p_from_table(
    table: &toml::Table,
    prefix: &str,
    base: P2pConfig,
) -> Result<P2pConfig, ConfigError> {
    let mut c = base;
    c.read(&Section { table, prefix })?;
    Ok(c)
}

/// Reads an `[instrumentation]` table (named `prefix` in errors).
pub fn instrumentation_from_table(
    table: &toml::Table,
    prefix: &str,
) -> Result<InstrumentationConfig, ConfigError> {
    let mut c = InstrumentationConfig::default();
    read_instrumentation(&Section { table, prefix }, &mut c)?;
    Ok(c)
}

/// The key-reading helpers over one table, for other files laid out like config.toml:
/// `string`, `boolean`, `integer`, `duration`, each naming `prefix.key` in its error.
pub fn table_string(
    table: &toml::Table,
    prefix: &str,
    name: &str,
    out: &mut String,
) -> Result<(), ConfigError> {
    Section { table, prefix }.string(name, out)
}

/// See [`table_string`].
pub fn table_boolean(
    table: &toml::Table,
    prefix: &str,
    name: &str,
    out: &mut bool,
) -> Result<(), ConfigError> {
    Section { table, prefix }.boolean(name, out)
}

/// A TOML syntax error as a [`ConfigError::Syntax`] naming `path` and the line.
pub fn toml_syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    match syntax_error(text, e) {
        ConfigError::Syntax { line, message, .. } => ConfigError::Syntax {
            path: path.to_owned(),
            line,
            message,
        },
        other => other,
    }
}

/// `invalid` for other modules: a [`ConfigError::Invalid`] naming `key`.
pub fn invalid_key(key: &str, reason: &str) -> ConfigError {
    invalid(key, reason)
}

/// One table of the file and its dotted prefix, for error messages.
struct Section<'a> {
    table: &'a toml::Table,
    prefix: &'a str,
}

impl<'a> Section<'a> {
    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    fn section(&self, name: &'a str) -> Result<Option<Section<'a>>, ConfigError> {
        match self.table.get(name) {
            None => Ok(None),
            Some(toml::Value::Table(table)) => Ok(Some(Section {
                table,
                prefix: name,
            })),
            Some(other) => Err(ConfigError::WrongType {
                key: self.key(name),
                expected: "a section",
                found: type_name(other),
            }),
        }
    }

    fn string(&self, name: &str, out: &mut String) -> Result<(), ConfigError> {
        match self.table.get(name) {
            None => Ok(()),
            Some(toml::Value::String(s)) => {
                s.clone_into(out);
                Ok(())
            }
            Some(other) => Err(ConfigError::WrongType {
                key: self.key(name),
                expected: "a string",
                found: type_name(other),
            }),
        }
    }

    fn boolean(&self, name: &str, out: &mut bool) -> Result<(), ConfigError> {
        match self.table.get(name) {
            None => Ok(()),
            Some(toml::Value::Boolean(b)) => {
                *out = *b;
                Ok(())
            }
            // Viper (CometBFT's reader) also takes "true"/"false" as strings.
            Some(toml::Value::String(s)) if s == "true" || s == "false" => {
                *out = s == "true";
                Ok(())
            }
            Some(other) => Err(ConfigError::WrongType {
                key: self.key(name),
                expected: "true or false",
                found: type_name(other),
            }),
        }
    }

    fn integer<T: TryFrom<i64>>(&self, name: &str, out: &mut T) -> Result<(), ConfigError> {
        let value = match self.table.get(name) {
            None => return Ok(()),
            Some(toml::Value::Integer(n)) => *n,
            // Viper also takes a number written as a string.
            Some(toml::Value::String(s)) if s.trim().parse::<i64>().is_ok() => {
                s.trim().parse::<i64>().unwrap_or_default()
            }
            Some(other) => {
                return Err(ConfigError::WrongType {
                    key: self.key(name),
                    expected: "a whole number",
                    found: type_name(other),
                });
            }
        };
        if value < 0 {
            return Err(invalid(&self.key(name), "can't be negative"));
        }
        *out = T::try_from(value)
            .map_err(|_| invalid(&self.key(name), &format!("{value} is too large")))?;
        Ok(())
    }

    fn duration(&self, name: &str, out: &mut Duration) -> Result<(), ConfigError> {
        match self.table.get(name) {
            None => Ok(()),
            Some(toml::Value::String(s)) => {
                *out = parse_go_duration(s).map_err(|source| ConfigError::Duration {
                    key: self.key(name),
                    value: s.clone(),
                    source,
                })?;
                Ok(())
            }
            // Viper reads a bare integer as nanoseconds.
            Some(toml::Value::Integer(n)) => {
                let nanos =
                    u64::try_from(*n).map_err(|_| invalid(&self.key(name), "can't be negative"))?;
                *out = Duration::from_nanos(nanos);
                Ok(())
            }
            Some(other) => Err(ConfigError::WrongType {
                key: self.key(name),
                expected: "a duration such as \"3s\"",
                found: type_name(other),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_cometbft_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.p2p.laddr, "tcp://0.0.0.0:26656");
        assert_eq!(config.p2p.max_num_inbound_peers, 40);
        assert_eq!(config.p2p.max_num_outbound_peers, 10);
        // CometBFT v0.39 and later; v0.34 and v0.38 wrote 100 ms.
        assert_eq!(config.p2p.flush_throttle_timeout, Duration::from_millis(10));
        assert_eq!(config.p2p.handshake_timeout, Duration::from_secs(20));
        assert_eq!(config.p2p.dial_timeout, Duration::from_secs(3));
        assert!(config.p2p.pex && config.p2p.addr_book_strict && !config.p2p.seed_mode);
        assert_eq!(config.instrumentation.prometheus_listen_addr, ":26660");
        assert_eq!(config.instrumentation.namespace, "cometbft");
    }

    #[test]
    fn written_file_reads_back_identically() {
        let mut config = Config {
            moniker: "node \"0\"".into(),
            ..Config::default()
        };
        config.p2p.seeds = "aa@1.2.3.4:26656".into();
        config.p2p.persistent_peers_max_dial_period = Duration::from_secs(90);
        config.p2p.seed_mode = true;
        config.p2p.handshake_phase_timeout = Duration::from_secs(5);
        config.p2p.seed_disconnect_wait = Duration::from_secs(3600);
        config.p2p.seed_crawl_period = Duration::from_secs(45);
        config.p2p.seed_min_time_between_crawls = Duration::from_secs(300);
        config.p2p.seed_min_reply_size = 64;
        config.p2p.seed_vetted_window = Duration::ZERO;
        config.p2p.feeler_interval = Duration::from_secs(300);
        config.p2p.inbound_attempts_per_ip_per_minute = 3;
        config.p2p.inbound_attempts_per_group_per_minute = 0;
        config.instrumentation.prometheus = true;
        let text = config.to_toml();
        assert!(text.contains("persistent_peers_max_dial_period = \"1m30s\""));
        assert!(text.contains("seed_disconnect_wait = \"1h0m0s\""), "{text}");
        assert!(text.contains("seed_vetted_window = \"0s\""), "{text}");
        assert_eq!(Config::parse(&text).unwrap(), config);
    }

    #[test]
    fn written_file_keeps_cometbft_key_order() {
        let text = Config::default().to_toml();
        let order = [
            "laddr",
            "external_address",
            "seeds",
            "persistent_peers",
            "addr_book_file",
            "addr_book_strict",
            "max_num_inbound_peers",
            "max_num_outbound_peers",
            "unconditional_peer_ids",
            "persistent_peers_max_dial_period",
            "flush_throttle_timeout",
            "max_packet_msg_payload_size",
            "send_rate",
            "recv_rate",
            "pex",
            "seed_mode",
            "private_peer_ids",
            "allow_duplicate_ip",
            "handshake_timeout",
            "dial_timeout",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|key| text.find(&format!("\n{key} = ")).expect(key))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        assert!(text.find("[p2p]").unwrap() < positions[0]);
    }

    #[test]
    fn real_cometbft_config_files_read_as_defaults() {
        for text in [
            include_str!("../tests/fixtures/cometbft-v0.38-home/config/config.toml"),
            include_str!("../tests/fixtures/cometbft-v0.34-home/config/config.toml"),
        ] {
            let config = Config::parse(text).unwrap();
            let mut expected = Config {
                moniker: "vm".into(),
                ..Config::default()
            };
            // Both lines wrote 100 ms; the default follows v0.39 and later (10 ms).
            expected.p2p.flush_throttle_timeout = Duration::from_millis(100);
            assert_eq!(config, expected);
        }
    }

    #[test]
    fn unknown_sections_and_keys_are_ignored() {
        let text = "proxy_app = \"kvstore\"\nfoo = 1\n[p2p]\nupnp = false\npex = false\n\
                    [mempool]\nsize = 5000\n[consensus]\ntimeout_commit = \"1s\"\n";
        let config = Config::parse(text).unwrap();
        assert!(!config.p2p.pex);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "[p2p]\nmax_num_inbound_peers = \"many\"",
                "p2p.max_num_inbound_peers",
            ),
            (
                "[p2p]\nmax_num_inbound_peers = -1",
                "p2p.max_num_inbound_peers",
            ),
            (
                "[p2p]\nmax_num_outbound_peers = 99999999999",
                "p2p.max_num_outbound_peers",
            ),
            ("[p2p]\npex = 1", "p2p.pex"),
            (
                "[p2p]\nflush_throttle_timeout = \"100\"",
                "p2p.flush_throttle_timeout",
            ),
            ("[p2p]\ndial_timeout = \"-3s\"", "p2p.dial_timeout"),
            ("[p2p]\nhandshake_timeout = true", "p2p.handshake_timeout"),
            (
                "[p2p]\nmax_packet_msg_payload_size = 0",
                "p2p.max_packet_msg_payload_size",
            ),
            ("moniker = 5", "moniker"),
            ("moniker = \"caf\u{e9}\"", "moniker"),
            ("moniker = \"\"", "moniker"),
            ("p2p = 5", "p2p"),
            (
                "[instrumentation]\nprometheus = \"yes\"",
                "instrumentation.prometheus",
            ),
            (
                "[instrumentation]\nnamespace = \"a-b\"",
                "instrumentation.namespace",
            ),
        ];
        for (text, key) in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("config key {key}:")), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn lenient_like_viper() {
        let text = "[p2p]\nmax_num_inbound_peers = \"7\"\npex = \"false\"\ndial_timeout = 5000000";
        let config = Config::parse(text).unwrap();
        assert_eq!(config.p2p.max_num_inbound_peers, 7);
        assert!(!config.p2p.pex);
        assert_eq!(config.p2p.dial_timeout, Duration::from_millis(5));
    }

    #[test]
    fn syntax_errors_are_one_line_with_a_line_number() {
        let err = Config::parse("moniker = \"a\"\n[p2p\npex = true\n").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::Syntax { line: 2, .. }), "{text}");
        assert!(!text.contains('\n'));
    }
}
