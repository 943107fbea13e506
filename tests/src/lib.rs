//! Cross-crate tests: simulated networks, loopback networks on both runtimes, interop with a real CometBFT.

pub mod blocking;
pub mod cometbft;
pub mod loopback;
pub mod mempool;
pub mod reactors;
pub mod virtual_time;
