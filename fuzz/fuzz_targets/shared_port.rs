#![no_main]
//! Arbitrary bytes where the peer's NodeInfo belongs at a shared port's acceptor, after a real
//! SecretConnection handshake; the routed connection continued by a chain's PeerConnection.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cometmesh_core::fuzzing::conn::shared_port(data);
});
