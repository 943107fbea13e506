//! A real SecretConnection handshake between two in-memory nodes, then one encrypted message.
//!
//! Keys come from fixed seeds (node A: 32 × 0x01, node B: 32 × 0x02) and the ephemeral secrets
//! from a seeded ChaCha20 RNG, so every run prints the same bytes:
//! `cargo run -p cometmesh-core --example handshake`.

use bytes::BytesMut;
use cometmesh_core::identity::NodeKey;
use cometmesh_core::secret::{Handshake, HandshakeError, SecretSession};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Runs both handshakes to completion, passing bytes between them in memory.
fn connect(
    a: &NodeKey,
    b: &NodeKey,
    rng: &mut impl RngCore,
) -> Result<(SecretSession, SecretSession), HandshakeError> {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let mut ha = Handshake::new(a, secret);
    rng.fill_bytes(&mut secret);
    let mut hb = Handshake::new(b, secret);
    let mut wire_bytes = 0;
    while !(ha.is_complete() && hb.is_complete()) {
        let mut progressed = false;
        while let Some(bytes) = ha.poll_transmit() {
            wire_bytes += bytes.len();
            hb.handle_received(&bytes)?;
            progressed = true;
        }
        while let Some(bytes) = hb.poll_transmit() {
            wire_bytes += bytes.len();
            ha.handle_received(&bytes)?;
            progressed = true;
        }
        if !progressed {
            return Err(HandshakeError::Incomplete);
        }
    }
    println!(
        "handshake complete: {wire_bytes} bytes on the wire (2 x 35 cleartext + 2 x 1044 sealed)"
    );
    Ok((ha.into_session()?, hb.into_session()?))
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = NodeKey::from_seed([0x01; 32]);
    let b = NodeKey::from_seed([0x02; 32]);
    println!("node A id: {}", a.node_id());
    println!("node B id: {}", b.node_id());
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let (mut sa, mut sb) = connect(&a, &b, &mut rng)?;
    println!("A authenticated B as {}", sa.remote_node_id());
    println!("B authenticated A as {}", sb.remote_node_id());

    let message = b"hello from cometmesh node A";
    let mut wire = BytesMut::new();
    sa.sealer.seal(message, &mut wire)?;
    println!(
        "first encrypted message A -> B: {} frame(s) of 1044 bytes; first frame:",
        wire.len() / 1044
    );
    println!("{}", hex(&wire[..1044]));
    let mut plain = BytesMut::new();
    sb.opener.open(&wire, &mut plain)?;
    println!("B decrypted: {:?}", String::from_utf8_lossy(&plain));
    Ok(())
}
