//! Logs to stderr with `tracing`: human-readable lines by default, JSON on request.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::args::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter does not parse.
    #[error("--log-level {value:?} is not a log filter: {reason}")]
    Filter {
        /// The filter given.
        value: String,
        /// The parser's message.
        reason: String,
    },
}

/// Builds the filter: `--log-level` if given, else `RUST_LOG` if set, else `default`.
pub fn filter(flag: Option<&str>, default: &str) -> Result<EnvFilter, LogError> {
    let parse = |value: &str| {
        EnvFilter::builder()
            .parse(value)
            .map_err(|e| LogError::Filter {
                value: value.to_owned(),
                reason: e.to_string(),
            })
    };
    match flag {
        Some(value) => parse(value),
        None => match std::env::var("RUST_LOG") {
            // A broken RUST_LOG falls back to the default rather than stopping the node.
            Ok(value) if !value.trim().is_empty() => parse(&value).or_else(|_| parse(default)),
            _ => parse(default),
        },
    }
}

/// Installs the global subscriber (once per process; later calls do nothing).
pub fn init(flag: Option<&str>, format: LogFormat, default: &str) -> Result<(), LogError> {
    let filter = filter(flag, default)?;
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

/// Whether text logs carry ANSI colour codes: only on a terminal, and never when `NO_COLOR` is
/// set to a non-empty value (<https://no-color.org>). A log redirected to a file stays plain.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn flag_wins_and_bad_filters_are_named() {
        assert!(filter(Some("debug"), "info").is_ok());
        assert!(filter(Some("cometmesh_core=trace,warn"), "info").is_ok());
        let err = filter(Some("=="), "info").unwrap_err().to_string();
        assert!(err.starts_with("--log-level \"==\""), "{err}");
    }
}
