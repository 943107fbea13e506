#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cometmesh_core::fuzzing::engine::engine_sim(data);
});
