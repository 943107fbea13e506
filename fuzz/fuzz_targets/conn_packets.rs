#![no_main]
//! An established connection (and the MConnection layer alone) fed arbitrary packet bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cometmesh_core::fuzzing::conn::conn_packets(data));
