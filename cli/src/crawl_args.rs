//! `crawl` arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::duration::parse_go_duration;

/// `cometmesh crawl` arguments.
#[derive(Debug, Args)]
pub struct CrawlArgs {
    /// Comma-separated seed nodes to start from, id@host:port (DNS names allowed).
    #[arg(long, value_name = "LIST")]
    pub seeds: Option<String>,
    /// Comma-separated peers to start from, id@host:port (treated like seeds).
    #[arg(long, value_name = "LIST")]
    pub peers: Option<String>,
    /// The chain id to map; without it, the first NodeInfo received decides.
    #[arg(long = "chain-id", value_name = "ID")]
    pub chain_id: Option<String>,
    /// Write the JSON report here (also rewritten every 30 s while crawling).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write a self-contained HTML map here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Connections open at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Dials per second (0: only --concurrency limits).
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    /// Time allowed per node, from the dial to its PEX reply (Go duration, e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// Stop after this long (Go duration, e.g. 5m); default: when nothing is left to dial.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,
    /// Record at most this many node ids.
    #[arg(long = "max-nodes", value_name = "N")]
    pub max_nodes: Option<usize>,
    /// Dial known nodes again, round after round (at most one round a minute), until
    /// --duration ends.
    #[arg(long)]
    pub revisit: bool,
    /// Continue the crawl saved in this JSON report (use the same file as --out to keep
    /// adding to it).
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// The moniker the crawler announces.
    #[arg(long, default_value = "cometmesh-crawler")]
    pub moniker: String,
    /// A line per node dialled.
    #[arg(long, short)]
    pub verbose: bool,
    /// No progress line.
    #[arg(long = "no-progress")]
    pub no_progress: bool,
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_go_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be positive".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::args::{Cli, Command};

    #[test]
    fn crawl_flags_parse() {
        let cli = Cli::try_parse_from([
            "cometmesh",
            "crawl",
            "--seeds",
            "a@b:1",
            "--timeout",
            "3s",
            "--duration",
            "1m",
            "--concurrency",
            "4",
            "--rate",
            "0",
            "--html",
            "m.html",
        ])
        .unwrap();
        let Command::Crawl(c) = cli.command else {
            panic!("not crawl")
        };
        assert_eq!(c.timeout, std::time::Duration::from_secs(3));
        assert_eq!(c.duration, Some(std::time::Duration::from_secs(60)));
        assert_eq!((c.concurrency, c.rate), (4, 0));
        assert!(
            Cli::try_parse_from(["cometmesh", "crawl", "--timeout", "0s"]).is_err(),
            "a zero timeout is refused"
        );
    }
}
