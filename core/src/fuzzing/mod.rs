//! Entry points for the cargo-fuzz targets in `fuzz/`: each target is a one-line call into a
//! function here, so the fuzzed code paths compile and are checked with the rest of the crate.

pub mod addrbook;
pub mod conn;
pub mod crawl;
pub mod delivery;
pub mod engine;
pub mod secret;
pub mod wire;
