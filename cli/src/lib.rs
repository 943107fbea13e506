//! The `cometmesh` command: `init`, `start`, `seed` (several chains in one process),
//! `show-node-id`, `version`, `testnet` and `crawl`
//! (whose tokio driver, [`crawl::crawl`], is also a library entry point).
//!
//! It reads and writes a home directory laid out as CometBFT's (`config/config.toml`,
//! `config/node_key.json`, `config/genesis.json`, `config/addrbook.json`), takes the same
//! `--p2p.*` flags, and serves CometBFT's p2p metric names. The binary is a thin `main` over
//! [`run`]; every failure is a [`CliError`] printed as one line, exit code 2.

#![forbid(unsafe_code)]

pub mod addrbook_file;
pub mod args;
pub mod config;
pub mod crawl;
pub mod crawl_args;
pub mod crawl_html;
pub mod crawl_table;
pub mod duration;
pub mod error;
pub mod home;
pub mod io_reason;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod node_key;
pub mod seed;
pub mod seed_config;
pub mod seed_metrics;
pub mod settings;
pub mod start;
pub mod testnet;
pub mod testnet_view;

pub use error::CliError;

use args::{Cli, Command};

/// The host name, used as the default moniker (as CometBFT does).
#[must_use]
pub fn default_moniker() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "cometmesh".to_owned())
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Version => {
            println!(
                "cometmesh {} (p2p protocol 8, CometBFT v0.34-v1.0 compatible)",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        Command::Init(args) => {
            logging::init(cli.log_level.as_deref(), cli.log_format, "warn")?;
            let home = home::Home::new(&args.home);
            let moniker = args.moniker.unwrap_or_else(default_moniker);
            let report = home::init(
                &home,
                args.chain_id.as_deref(),
                || home::test_chain_id(&mut rand_core::OsRng),
                &moniker,
            )?;
            for path in &report.written {
                println!("wrote {}", path.display());
            }
            for path in &report.kept {
                println!("kept  {}", path.display());
            }
            println!("node id: {}", report.node_id);
            println!("chain id: {}", report.chain_id);
            Ok(())
        }
        Command::Start(args) => {
            logging::init(cli.log_level.as_deref(), cli.log_format, "info")?;
            let prepared = start::prepare(&args)?;
            node::run(prepared)
        }
        Command::Seed(args) => {
            logging::init(cli.log_level.as_deref(), cli.log_format, "info")?;
            let plan = seed_config::load(&args.config)?;
            seed::run(plan)
        }
        Command::Testnet(args) => {
            // The table is the output; logs only for problems unless asked for.
            logging::init(cli.log_level.as_deref(), cli.log_format, "warn")?;
            testnet::run(&args)
        }
        Command::Crawl(args) => {
            logging::init(cli.log_level.as_deref(), cli.log_format, "warn")?;
            crawl::run(&args)
        }
        Command::ShowNodeId(args) => {
            let home = home::Home::existing(&args.home)?;
            let config = home.load_config()?;
            println!("{}", home.node_id(&config)?);
            Ok(())
        }
    }
}
