//! Live interop: our sans-IO SecretConnection (run by a small blocking driver) against the
//! published `tendermint-p2p` 0.41 crate over loopback TCP, in both roles (we dial / we accept),
//! with data both ways.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use cometmesh_core::identity::NodeKey;
use cometmesh_core::secret::{Handshake, SecretSession};
use tendermint_p2p::secret_connection::{SecretConnection, Version};

const OUR_SEED: [u8; 32] = [0x11; 32];
const THEIR_SEED: [u8; 32] = [0x22; 32];
const TIMEOUT: Duration = Duration::from_secs(20);

/// Blocking driver for our handshake.
fn our_handshake(stream: &mut TcpStream, key: &NodeKey, ephemeral: [u8; 32]) -> SecretSession {
    let mut hs = Handshake::new(key, ephemeral);
    let mut buf = [0u8; 4096];
    loop {
        while let Some(bytes) = hs.poll_transmit() {
            stream.write_all(&bytes).expect("write");
        }
        if hs.is_complete() {
            break;
        }
        let n = stream.read(&mut buf).expect("read");
        if n == 0 {
            hs.handle_eof().expect("eof during handshake");
        }
        hs.handle_received(&buf[..n]).expect("handshake");
    }
    hs.into_session().expect("session")
}

/// Reads and opens until `want` plaintext bytes arrived.
fn our_read(stream: &mut TcpStream, session: &mut SecretSession, want: usize) -> Vec<u8> {
    let mut plain = BytesMut::new();
    session.opener.open(&[], &mut plain).expect("open pending");
    let mut buf = [0u8; 8192];
    while plain.len() < want {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "peer closed early");
        session.opener.open(&buf[..n], &mut plain).expect("open");
    }
    assert_eq!(plain.len(), want);
    plain.to_vec()
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

/// Their side: tendermint-p2p's blocking SecretConnection. Returns the key it authenticated.
fn their_side(stream: TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let key = ed25519_consensus::SigningKey::from(THEIR_SEED);
    let mut conn = SecretConnection::new(stream, key, Version::V0_34).expect("their handshake");
    let remote = conn
        .remote_pubkey()
        .ed25519()
        .expect("ed25519 key")
        .to_bytes()
        .to_vec();
    // Their node id for our key is ours.
    assert_eq!(
        conn.remote_pubkey().peer_id().to_string(),
        NodeKey::from_seed(OUR_SEED).node_id().to_string()
    );
    // Receive 5000 bytes (five frames) from us, answer with 2500 bytes.
    let mut got = vec![0u8; 5000];
    conn.read_exact(&mut got).expect("their read");
    assert_eq!(got, pattern(5000, 1));
    conn.write_all(&pattern(2500, 2)).expect("their write");
    conn.flush().unwrap();
    // And a small message after that, to check the nonces keep step.
    conn.write_all(b"bye").expect("their write");
    let mut ack = [0u8; 2];
    conn.read_exact(&mut ack).expect("their read");
    assert_eq!(&ack, b"ok");
    remote
}

fn our_side(mut stream: TcpStream) {
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let ours = NodeKey::from_seed(OUR_SEED);
    let mut session = our_handshake(&mut stream, &ours, [0x5a; 32]);
    let theirs = NodeKey::from_seed(THEIR_SEED);
    assert_eq!(session.remote_public_key, theirs.public_key());
    assert_eq!(session.remote_node_id(), theirs.node_id());
    let mut wire = BytesMut::new();
    session.sealer.seal(&pattern(5000, 1), &mut wire).unwrap();
    stream.write_all(&wire).unwrap();
    assert_eq!(our_read(&mut stream, &mut session, 2503), {
        let mut v = pattern(2500, 2);
        v.extend_from_slice(b"bye");
        v
    });
    let mut wire = BytesMut::new();
    session.sealer.seal(b"ok", &mut wire).unwrap();
    stream.write_all(&wire).unwrap();
    session.opener.finish().unwrap();
}

#[test]
fn live_we_dial_tendermint_p2p() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let them = thread::spawn(move || their_side(listener.accept().unwrap().0));
    our_side(TcpStream::connect(addr).unwrap());
    let authenticated = them.join().expect("their side");
    assert_eq!(authenticated, NodeKey::from_seed(OUR_SEED).public_key());
}

#[test]
fn live_tendermint_p2p_dials_us() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let them = thread::spawn(move || their_side(TcpStream::connect(addr).unwrap()));
    our_side(listener.accept().unwrap().0);
    let authenticated = them.join().expect("their side");
    assert_eq!(authenticated, NodeKey::from_seed(OUR_SEED).public_key());
}
