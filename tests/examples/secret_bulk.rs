//! SecretConnection bulk throughput over loopback TCP: the cometmesh side of `secret_bulk` in
//! bench/compare.sh (same shape as `benchSecretBulk` in bench/go/main.go). Build and run in
//! release mode:
//!
//! ```text
//! cargo run --release -p cometmesh-tests --example secret_bulk
//! cargo run --release -p cometmesh-tests --example secret_bulk -- --bulk-mib 16
//! ```
//!
//! One TCP connection (`TCP_NODELAY`, as Go's default), the SecretConnection handshake driven by
//! [`Handshake`] on both ends (not timed), then `--bulk-mib` MiB (default 256) one way in 64 KiB
//! application writes: a writer thread seals each 64 KiB into 64 frames with [`Sealer`] and
//! writes them with one `write_all`; the main thread reads up to 64 KiB of ciphertext per `read`
//! and opens it with [`Opener`]. The clock runs from just before the writer starts until the
//! reader has every plaintext byte, as in Go. Prints `secret_bulk_mib`, `secret_bulk_seconds`,
//! `secret_bulk_mib_per_s`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use bytes::BytesMut;
use cometmesh_core::identity::NodeKey;
use cometmesh_core::secret::{Handshake, Opener, SEALED_FRAME_SIZE, Sealer, SecretSession};

/// Application write size (and reader buffer), as bench/go.
const CHUNK: usize = 64 * 1024;

struct Args {
    only: Vec<String>,
    bulk_mib: u64,
}

fn args() -> Args {
    let mut a = Args {
        only: Vec::new(),
        bulk_mib: 256,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--only" => a.only = v.split(',').map(str::to_owned).collect(),
            "--bulk-mib" => a.bulk_mib = v.parse().expect("number"),
            _ => panic!("unknown argument {k}"),
        }
    }
    a
}

/// Runs the handshake on a blocking stream until the peer is authenticated.
fn handshake(stream: &mut TcpStream, seed: u8) -> SecretSession {
    let key = NodeKey::from_seed([seed; 32]);
    let mut hs = Handshake::new(&key, [seed.wrapping_add(100); 32]);
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(out) = hs.poll_transmit() {
            stream.write_all(&out).expect("handshake write");
        }
        if hs.is_complete() {
            break;
        }
        let n = stream.read(&mut buf).expect("handshake read");
        if n == 0 {
            hs.handle_eof().expect("peer closed during the handshake");
        }
        hs.handle_received(&buf[..n]).expect("handshake");
    }
    hs.into_session().expect("session")
}

/// Both ends of one SecretConnection over loopback TCP.
fn secret_pair() -> ((TcpStream, SecretSession), (TcpStream, SecretSession)) {
    let ln = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = ln.local_addr().expect("address");
    let acceptor = std::thread::spawn(move || {
        let (mut s, _) = ln.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let session = handshake(&mut s, 2);
        (s, session)
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let session = handshake(&mut s, 1);
    let accepted = acceptor.join().expect("acceptor thread");
    ((s, session), accepted)
}

fn writer(mut stream: TcpStream, mut sealer: Sealer, total: u64) {
    let chunk: Vec<u8> = (0..CHUNK).map(|i| i as u8).collect();
    let mut sealed = BytesMut::with_capacity(CHUNK / 1024 * SEALED_FRAME_SIZE);
    let mut sent = 0u64;
    while sent < total {
        sealed.clear();
        sealer.seal(&chunk, &mut sealed).expect("seal");
        stream.write_all(&sealed).expect("secret write");
        sent += CHUNK as u64;
    }
}

fn bench_secret_bulk(mib: u64) {
    let ((a, sa), (mut b, sb)) = secret_pair();
    let total = mib << 20;
    let mut opener: Opener = sb.opener;
    let mut buf = vec![0u8; CHUNK];
    let mut plain = BytesMut::with_capacity(CHUNK + 1024);
    let start = Instant::now();
    let w = std::thread::spawn(move || writer(a, sa.sealer, total));
    let mut got = 0u64;
    while got < total {
        let n = b.read(&mut buf).expect("secret read");
        assert!(n > 0, "connection closed after {got} of {total} bytes");
        plain.clear();
        opener.open(&buf[..n], &mut plain).expect("open");
        got += plain.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    w.join().expect("writer thread");
    assert_eq!(got, total, "received exactly what was sent");
    opener.finish().expect("stream ends on a frame boundary");
    println!("secret_bulk_mib {mib}");
    println!("secret_bulk_seconds {secs:.3}");
    println!("secret_bulk_mib_per_s {:.1}", mib as f64 / secs);
}

fn main() {
    let a = args();
    let want = |w: &str| a.only.is_empty() || a.only.iter().any(|x| x == w);
    println!("impl cometmesh-core-std");
    if want("secret_bulk") {
        bench_secret_bulk(a.bulk_mib);
    }
}
