#![no_main]
//! Arbitrary bytes into a fresh PeerConnection, with deadlines passing and end of stream.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cometmesh_core::fuzzing::conn::raw(data));
