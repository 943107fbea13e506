//! What a crawl may do: its seeds, chain id and politeness budget.

use std::time::Duration;

use crate::addr::NetAddr;

/// Crawl settings. `Default` gives a polite crawl: 16 connections at once, 20 dials per second,
/// 10 s per node, no limit on duration or size, every address dialled once.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CrawlConfig {
    /// Where the crawl starts (resolved `id@ip:port`; DNS is the driver's job).
    pub seeds: Vec<NetAddr>,
    /// The chain id to map. `None`: learn it from the first NodeInfo received.
    pub chain_id: Option<String>,
    /// The moniker we announce.
    pub moniker: String,
    /// The software version we announce (empty: `cometmesh-crawler/<crate version>`).
    pub version: String,
    /// Connections open (or being dialled) at once.
    pub concurrency: usize,
    /// Dials per second (0: no limit beyond `concurrency`).
    pub rate: u32,
    /// Time allowed per node, from the dial to the PEX reply.
    pub timeout: Duration,
    /// Time allowed for the whole crawl (`None`: until the frontier is empty).
    pub duration: Option<Duration>,
    /// Most node ids recorded; addresses of further ids are dropped (`None`: no limit).
    pub max_nodes: Option<usize>,
    /// Dial addresses again: once a round has dialled everything, start another one (at most
    /// one round per `revisit_interval`) until `duration` ends.
    pub revisit: bool,
    /// Shortest time between the starts of two rounds with `revisit`.
    pub revisit_interval: Duration,
}

impl Default for CrawlConfig {
    fn default() -> Self {
        CrawlConfig {
            seeds: Vec::new(),
            chain_id: None,
            moniker: "cometmesh-crawler".to_owned(),
            version: String::new(),
            concurrency: 16,
            rate: 20,
            timeout: Duration::from_secs(10),
            duration: None,
            max_nodes: None,
            revisit: false,
            revisit_interval: Duration::from_secs(60),
        }
    }
}

/// A setting the crawler refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrawlConfigError {
    /// `concurrency` is 0.
    #[error("concurrency must be at least 1")]
    ZeroConcurrency,
    /// `timeout` is 0.
    #[error("timeout per node must be positive")]
    ZeroTimeout,
    /// `revisit` without `duration` would never end.
    #[error("revisit needs a duration (it would crawl forever)")]
    RevisitWithoutDuration,
    /// The moniker is empty or not printable ASCII (CometBFT would refuse our NodeInfo).
    #[error("moniker {0:?} must be non-empty printable ascii")]
    BadMoniker(String),
    /// The chain id is empty or not printable ASCII.
    #[error("chain id {0:?} must be non-empty printable ascii")]
    BadChainId(String),
}

impl CrawlConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), CrawlConfigError> {
        let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b));
        if self.concurrency == 0 {
            return Err(CrawlConfigError::ZeroConcurrency);
        }
        if self.timeout.is_zero() {
            return Err(CrawlConfigError::ZeroTimeout);
        }
        if self.revisit && self.duration.is_none() {
            return Err(CrawlConfigError::RevisitWithoutDuration);
        }
        if !printable(&self.moniker) {
            return Err(CrawlConfigError::BadMoniker(self.moniker.clone()));
        }
        if let Some(c) = &self.chain_id
            && !printable(c)
        {
            return Err(CrawlConfigError::BadChainId(c.clone()));
        }
        Ok(())
    }
}
