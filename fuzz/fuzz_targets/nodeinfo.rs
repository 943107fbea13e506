#![no_main]
//! The NodeInfo decoder, validator and compatibility check.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cometmesh_core::fuzzing::conn::nodeinfo(data));
