#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cometmesh_core::fuzzing::crawl::crawl(data);
});
