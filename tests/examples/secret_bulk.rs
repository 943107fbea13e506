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
//!
//! `--only handshakes` is the cometmesh side of `handshakes`: `--handshakes` (default 2000)
//! SecretConnection handshakes one after another over loopback TCP, both ends in this process
//! (the dialling end on the main thread, the accepting end on another), each end's node key made
//! once and its ephemeral key fresh per handshake, as `benchHandshakes` in bench/go. The clock
//! covers every TCP connect and accept and every handshake. Prints `handshakes`,
//! `handshakes_seconds`, `handshakes_per_s`.

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
    handshakes: u64,
}

fn args() -> Args {
    let mut a = Args {
        only: Vec::new(),
        bulk_mib: 256,
        handshakes: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--only" => a.only = v.split(',').map(str::to_owned).collect(),
            "--bulk-mib" => a.bulk_mib = v.parse().expect("number"),
            "--handshakes" => a.handshakes = v.parse().expect("number"),
            _ => panic!("unknown argument {k}"),
        }
    }
    a
}

/// Runs the handshake on a blocking stream until the peer is authenticated.
fn handshake(stream: &mut TcpStream, seed: u8) -> SecretSession {
    let key = NodeKey::from_seed([seed; 32]);
    handshake_with(stream, &key, [seed.wrapping_add(100); 32])
}

/// Runs one handshake of `key` with the given ephemeral secret on a blocking stream.
fn handshake_with(stream: &mut TcpStream, key: &NodeKey, ephemeral: [u8; 32]) -> SecretSession {
    let mut hs = Handshake::new(key, ephemeral);
    let mut buf = [0u8; 1024];
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

/// A fresh ephemeral secret per handshake (distinct per side and index; any 32 bytes will do).
fn ephemeral(side: u8, i: u64) -> [u8; 32] {
    let mut e = [side; 32];
    e[..8].copy_from_slice(&i.to_le_bytes());
    e
}

fn bench_handshakes(n: u64) {
    let ln = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = ln.local_addr().expect("address");
    let start = Instant::now();
    let acceptor = std::thread::spawn(move || {
        let key = NodeKey::from_seed([2; 32]);
        for i in 0..n {
            let (mut s, _) = ln.accept().expect("accept");
            s.set_nodelay(true).expect("nodelay");
            handshake_with(&mut s, &key, ephemeral(2, i));
        }
    });
    let key = NodeKey::from_seed([1; 32]);
    for i in 0..n {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        handshake_with(&mut s, &key, ephemeral(1, i));
    }
    acceptor.join().expect("acceptor thread");
    let secs = start.elapsed().as_secs_f64();
    println!("handshakes {n}");
    println!("handshakes_seconds {secs:.3}");
    println!("handshakes_per_s {:.0}", n as f64 / secs);
}

fn main() {
    let a = args();
    let want = |w: &str| a.only.is_empty() || a.only.iter().any(|x| x == w);
    println!("impl cometmesh-core-std");
    if want("secret_bulk") {
        bench_secret_bulk(a.bulk_mib);
    }
    if want("handshakes") {
        bench_handshakes(a.handshakes);
    }
}
