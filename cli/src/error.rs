//! The command's errors: each prints as one line a person can act on, and exits with code 2.

pub use crate::io_reason::io_reason;

use crate::home::HomeError;
use crate::logging::LogError;
use crate::metrics::MetricsBindError;
use crate::settings::SettingsError;

/// Everything that stops a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The home, its config, key or genesis.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// A configured value that cannot be used.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The log filter.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The address-book files.
    #[error(transparent)]
    AddrBook(#[from] crate::addrbook_file::AddrBookFileError),
    /// The metrics port.
    #[error(transparent)]
    Metrics(#[from] MetricsBindError),
    /// The p2p listener could not be bound.
    #[error("cannot listen on {key} {addr}: {reason}")]
    Listen {
        /// The key or flag naming the address (`p2p.laddr`, `chain[2].laddr`).
        key: String,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why (in use, permission, not available).
        reason: String,
    },
    /// The seed configuration (`cometmesh seed --config`).
    #[error(transparent)]
    Seed(#[from] crate::seed_config::SeedConfigError),
    /// The node refused to start or stopped working.
    #[error("node: {0}")]
    Node(String),
    /// The local testnet did not reach its target.
    #[error("testnet: {0}")]
    Testnet(String),
    /// The crawl could not start or its results could not be written.
    #[error("crawl: {0}")]
    Crawl(String),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

impl CliError {
    /// The process exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            // The network ran but did not converge: not a usage error.
            CliError::Testnet(_) => 1,
            _ => 2,
        }
    }
}
