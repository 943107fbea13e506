//! Cross-crate tests: simulated networks, loopback networks on both runtimes, interop with a real CometBFT.

pub mod loopback;
