//! The command line, named as CometBFT's so an operator relearns nothing.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// cometmesh: a CometBFT-compatible peer-to-peer node.
#[derive(Debug, Parser)]
#[command(
    name = "cometmesh",
    version,
    about = "cometmesh: a CometBFT-compatible peer-to-peer node",
    long_about = None
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
    /// Log filter: a level (error, warn, info, debug, trace) or RUST_LOG-style directives.
    /// Without it, RUST_LOG is used, then "info".
    #[arg(long = "log-level", global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How logs are written (always to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a home: config/config.toml, config/node_key.json and config/genesis.json.
    Init(InitArgs),
    /// Run a node from a home (a cometmesh or CometBFT home).
    Start(Box<StartArgs>),
    /// Seed several chains in one process, from a seed config with one `[[chain]]` table per
    /// chain (see cli/README.md).
    Seed(SeedArgs),
    /// Print this node's id.
    #[command(name = "show-node-id")]
    ShowNodeId(HomeArg),
    /// Print the version.
    Version,
    /// Run a local network of nodes on loopback and watch them find each other.
    Testnet(TestnetArgs),
    /// Map a network through the p2p protocol: dial every node, read its NodeInfo, ask for
    /// addresses once, hang up.
    Crawl(Box<crate::crawl_args::CrawlArgs>),
}

/// `--home`.
#[derive(Debug, Args)]
pub struct HomeArg {
    /// The home directory.
    #[arg(long, value_name = "DIR")]
    pub home: PathBuf,
}

/// `seed` arguments.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// The seed config file (TOML, one `[[chain]]` table per chain).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// `init` arguments.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The home directory to create.
    #[arg(long, value_name = "DIR")]
    pub home: PathBuf,
    /// The chain (network) id; peers with another chain id are refused. Default: the one in an
    /// existing genesis.json, else a new `test-chain-XXXXXX` (as `cometbft init` makes).
    #[arg(long = "chain-id", value_name = "ID")]
    pub chain_id: Option<String>,
    /// The node's human-readable name (default: the host name).
    #[arg(long)]
    pub moniker: Option<String>,
}

/// `start` arguments: the home and CometBFT-named overrides of `config.toml`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The home directory.
    #[arg(long, value_name = "DIR")]
    pub home: PathBuf,
    /// Chain id, instead of the one in genesis.json.
    #[arg(long = "chain-id", value_name = "ID")]
    pub chain_id: Option<String>,
    /// The moniker, instead of the config's.
    #[arg(long)]
    pub moniker: Option<String>,
    /// Overrides of the `[p2p]` section.
    #[command(flatten)]
    pub p2p: P2pOverrides,
}

/// Flags that override `[p2p]` keys; each is named `--p2p.<key>` like CometBFT's.
#[derive(Debug, Default, Args)]
pub struct P2pOverrides {
    /// Listen address, e.g. tcp://0.0.0.0:26656.
    #[arg(long = "p2p.laddr", value_name = "ADDR")]
    pub laddr: Option<String>,
    /// host:port advertised to peers.
    #[arg(long = "p2p.external_address", value_name = "ADDR")]
    pub external_address: Option<String>,
    /// Comma-separated seed nodes, id@host:port.
    #[arg(long = "p2p.seeds", value_name = "LIST")]
    pub seeds: Option<String>,
    /// Comma-separated persistent peers, id@host:port.
    #[arg(long = "p2p.persistent_peers", value_name = "LIST")]
    pub persistent_peers: Option<String>,
    /// Comma-separated node ids exempt from the peer limits.
    #[arg(long = "p2p.unconditional_peer_ids", value_name = "IDS")]
    pub unconditional_peer_ids: Option<String>,
    /// Comma-separated node ids never gossiped.
    #[arg(long = "p2p.private_peer_ids", value_name = "IDS")]
    pub private_peer_ids: Option<String>,
    /// Run as a seed node (crawler); `--p2p.seed_mode=false` turns it off.
    #[arg(long = "p2p.seed_mode", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub seed_mode: Option<bool>,
    /// Run the peer-exchange reactor; `--p2p.pex=false` turns it off.
    #[arg(long = "p2p.pex", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub pex: Option<bool>,
    /// Most inbound peers.
    #[arg(long = "p2p.max_num_inbound_peers", value_name = "N")]
    pub max_num_inbound_peers: Option<u32>,
    /// Outbound peers to keep.
    #[arg(long = "p2p.max_num_outbound_peers", value_name = "N")]
    pub max_num_outbound_peers: Option<u32>,
}

/// A boolean flag value as Go's `strconv.ParseBool` (and so CometBFT's flags) takes it.
pub fn parse_go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

impl P2pOverrides {
    /// Applies the flags that were given to a config.
    pub fn apply(&self, p2p: &mut crate::config::P2pConfig) {
        let set = |slot: &mut String, value: &Option<String>| {
            if let Some(v) = value {
                slot.clone_from(v);
            }
        };
        set(&mut p2p.laddr, &self.laddr);
        set(&mut p2p.external_address, &self.external_address);
        set(&mut p2p.seeds, &self.seeds);
        set(&mut p2p.persistent_peers, &self.persistent_peers);
        set(
            &mut p2p.unconditional_peer_ids,
            &self.unconditional_peer_ids,
        );
        set(&mut p2p.private_peer_ids, &self.private_peer_ids);
        if let Some(v) = self.seed_mode {
            p2p.seed_mode = v;
        }
        if let Some(v) = self.pex {
            p2p.pex = v;
        }
        if let Some(v) = self.max_num_inbound_peers {
            p2p.max_num_inbound_peers = v;
        }
        if let Some(v) = self.max_num_outbound_peers {
            p2p.max_num_outbound_peers = v;
        }
    }
}

/// `testnet` arguments.
#[derive(Debug, Args)]
pub struct TestnetArgs {
    /// Number of nodes (one of them the seed); at least 3.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(3..=64))]
    pub nodes: u16,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `start`'s arguments alone (the subcommand joins when the node runtime does).
    #[derive(Debug, Parser)]
    struct StartOnly {
        #[command(flatten)]
        start: StartArgs,
        #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    }

    #[test]
    fn cometbft_flag_names_parse() {
        let cli = StartOnly::try_parse_from([
            "cometmesh",
            "--home",
            "/h",
            "--p2p.laddr",
            "tcp://127.0.0.1:1",
            "--p2p.seed_mode",
            "--p2p.pex=F",
            "--p2p.max_num_inbound_peers",
            "3",
            "--chain-id",
            "c",
            "--log-format",
            "json",
        ])
        .unwrap();
        let start = cli.start;
        assert_eq!(start.p2p.seed_mode, Some(true));
        assert_eq!(start.p2p.pex, Some(false));
        let mut p2p = crate::config::P2pConfig::default();
        start.p2p.apply(&mut p2p);
        assert!(p2p.seed_mode && !p2p.pex);
        assert_eq!(p2p.laddr, "tcp://127.0.0.1:1");
        assert_eq!(p2p.max_num_inbound_peers, 3);
        assert_eq!(p2p.max_num_outbound_peers, 10);
        assert_eq!(cli.log_format, LogFormat::Json);
    }

    #[test]
    fn testnet_defaults_to_eight_nodes() {
        let cli = Cli::try_parse_from(["cometmesh", "testnet"]).unwrap();
        let Command::Testnet(t) = cli.command else {
            panic!("not testnet")
        };
        assert_eq!((t.nodes, t.timeout), (8, 60));
    }

    #[test]
    fn start_is_a_command() {
        let cli = Cli::try_parse_from(["cometmesh", "start", "--home", "/h", "--p2p.seed_mode"]);
        let Command::Start(start) = cli.unwrap().command else {
            panic!("not start")
        };
        assert_eq!(start.p2p.seed_mode, Some(true));
    }
}
