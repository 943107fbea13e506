#![no_main]
//! Arbitrary bytes where the peer's NodeInfo belongs, after a real SecretConnection handshake.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cometmesh_core::fuzzing::conn::upgrade(data));
