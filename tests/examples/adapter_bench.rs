//! Node-level benchmark of the runtime adapters over loopback TCP (see bench/README.md,
//! section "Adapters"). Build and run in release mode:
//!
//! ```text
//! cargo run --release -p cometmesh-tests --example adapter_bench -- --runtime tokio
//! cargo run --release -p cometmesh-tests --example adapter_bench -- --runtime async-std --only mconn_64b
//! ```
//!
//! Workloads (the keys of bench/compare.sh):
//! - `mconn_64b` / `mconn_64kib`: two nodes in this process, one channel, N messages of 64 B /
//!   64 KiB from one to the other through the whole stack, by the API a reactor uses: the
//!   sender calls `try_send` and waits for the `SendReady` edge when the queue is full (handle
//!   → engine task → MConnection → SecretConnection → writer task → TCP → reader task →
//!   engine → `Inbox`), the receiving task reads its lossless, flow-controlled `Inbox`
//!   (window 4096). Rate limits lifted, send queue of 100 messages, as bench/go (whose
//!   receive callback is the receiving application). Prints `<w>_msgs_per_s`, `<w>_mib_per_s`.
//!   `reactor_64b` / `reactor_64kib` are the same workloads under their earlier names.
//! - `send_wait_64b` / `send_wait_64kib`: the older path: `send_wait` per message (a reply
//!   round trip each), the receiver reads the lossy event stream (queue of 65 536). Prints
//!   `mconn_64b_send_wait_msgs_per_s` (and `_mib_per_s`; 64 KiB likewise).
//! - `idle_peer_rss`: the RSS growth of this process per idle peer while child processes
//!   (this program with `--dialer`, at most 4000 nodes each, so that no process needs more
//!   than ~8 000 file descriptors) hold `--peers` nodes connected to one node here. Pings every
//!   5 s (pong timeout 3 s), as bench/go's idle workload. Prints `idle_peer_rss_kib`,
//!   `idle_connect_seconds` (from starting the children until all peers are up),
//!   `idle_arrival_handshakes_per_s` (peers / that time) and `idle_cpu_percent` (this
//!   process's CPU over `--idle-seconds`, default 10, while the peers idle).

use std::time::{Duration, Instant};

use bytes::Bytes;
use cometmesh_core::engine::{ChannelDescriptor, EngineConfig, Event};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::{ChannelId, NodeId};
use cometmesh_driver::{NetAddr, Node, NodeBuilder, NodeError, ReactorEvent, Runtime, SendError};
use futures::StreamExt;

const CH: ChannelId = ChannelId(0x01);

struct Args {
    runtime: String,
    only: Vec<String>,
    small: usize,
    large: usize,
    peers: usize,
    idle_seconds: u64,
    dialer: Option<String>,
    dialer_index: usize,
}

fn args() -> Args {
    let mut a = Args {
        runtime: "tokio".into(),
        only: Vec::new(),
        small: 200_000,
        large: 2048,
        peers: 1000,
        idle_seconds: 10,
        dialer: None,
        dialer_index: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--runtime" => a.runtime = v,
            "--only" => a.only = v.split(',').map(str::to_owned).collect(),
            "--small-msgs" => a.small = v.parse().expect("number"),
            "--large-msgs" => a.large = v.parse().expect("number"),
            "--peers" => a.peers = v.parse().expect("number"),
            "--idle-seconds" => a.idle_seconds = v.parse().expect("number"),
            "--dialer-index" => a.dialer_index = v.parse().expect("number"),
            "--dialer" => a.dialer = Some(v),
            _ => panic!("unknown argument {k}"),
        }
    }
    a
}

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.chain_id = "bench".into();
    c.listen_addr = ([127, 0, 0, 1], 0).into();
    c.allow_duplicate_ip = true;
    c.addr_book_strict = false;
    c.pex = false;
    c.connection.send_rate = 0;
    c.connection.recv_rate = 0;
    c.handshake_timeout = Duration::from_secs(20);
    c.dial_timeout = Duration::from_secs(20);
    c
}

fn channel() -> ChannelDescriptor {
    let mut d = ChannelDescriptor::new(CH, 1);
    d.send_queue_capacity = 100;
    d.recv_message_capacity = 1 << 20;
    d
}

async fn node<R: Runtime>(rt: &R, c: EngineConfig, seed: u64) -> Node<R> {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&seed.to_le_bytes());
    NodeBuilder::new(rt.clone(), c, NodeKey::from_seed(k))
        .channel(channel())
        .event_capacity(1 << 16)
        .start()
        .await
        .expect("node starts")
}

async fn wait_peers<R: Runtime>(rt: &R, n: &Node<R>, want: usize, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if n.status()
            .await
            .is_ok_and(|s| s.inbound + s.outbound >= want)
        {
            return true;
        }
        rt.timer(Instant::now() + Duration::from_millis(20)).await;
    }
    false
}

/// The `send_wait` path: one reply round trip per message, the lossy event stream.
async fn throughput<R: Runtime>(rt: R, name: &str, size: usize, count: usize) {
    let a = node(&rt, config(), 1).await;
    let b = node(&rt, config(), 2).await;
    a.dial(b.net_addr()).await.expect("dial");
    assert!(
        wait_peers(&rt, &a, 1, Duration::from_secs(20)).await,
        "peers up"
    );
    let bid: NodeId = b.node_id();
    let mut events = b.events().await.expect("events");
    let payload = Bytes::from(vec![0xab; size]);
    let start = Instant::now();
    let sender = {
        let a = a.handle();
        let payload = payload.clone();
        rt.spawn(async move {
            for _ in 0..count {
                a.send_wait(bid, CH, payload.clone()).await.expect("send");
            }
        })
    };
    let mut got = 0;
    while got < count {
        match events.next().await {
            Some(Event::Message { .. }) => got += 1,
            Some(_) => {}
            None => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    sender.await;
    assert_eq!(
        got,
        count,
        "every message arrived (lagged {})",
        events.lagged()
    );
    println!("{name}_msgs_per_s {:.0}", count as f64 / secs);
    println!(
        "{name}_mib_per_s {:.1}",
        (count * size) as f64 / secs / 1048576.0
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Like [`throughput`], through reactor inboxes (`try_send` + `SendReady`, `Inbox`).
async fn throughput_reactor<R: Runtime>(rt: R, name: &str, size: usize, count: usize) {
    let reactor_node = |seed: u8| {
        let rt = rt.clone();
        async move {
            let mut b = NodeBuilder::new(rt, config(), NodeKey::from_seed([seed; 32]));
            let inbox = b.reactor(channel(), 4096);
            (b.start().await.expect("node starts"), inbox)
        }
    };
    let (a, mut ia) = reactor_node(1).await;
    let (b, mut ib) = reactor_node(2).await;
    a.dial(b.net_addr()).await.expect("dial");
    assert!(
        wait_peers(&rt, &a, 1, Duration::from_secs(20)).await,
        "peers up"
    );
    let bid: NodeId = b.node_id();
    let payload = Bytes::from(vec![0xab; size]);
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let sender = {
        let a = a.handle();
        let payload = payload.clone();
        rt.spawn(async move {
            let mut sent = 0;
            while sent < count {
                match a.try_send(bid, CH, payload.clone()) {
                    Ok(()) => sent += 1,
                    Err(NodeError::Send(SendError::Full(_))) => loop {
                        match ia.next().await.expect("node runs") {
                            ReactorEvent::SendReady(_) => break,
                            _ => continue,
                        }
                    },
                    Err(e) => panic!("try_send: {e}"),
                }
            }
        })
    };
    let mut got = 0;
    while got < count {
        match ib.next().await {
            Some(ReactorEvent::Message(_, m)) => {
                assert_eq!(m.len(), size, "message size");
                got += 1;
            }
            Some(_) => {}
            None => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    sender.await;
    assert_eq!(got, count, "every message arrived");
    println!("{name}_msgs_per_s {:.0}", count as f64 / secs);
    println!(
        "{name}_mib_per_s {:.1}",
        (count * size) as f64 / secs / 1048576.0
    );
    // CPU of the whole process (both nodes) per message; /proc ticks of 10 ms.
    println!("{name}_cpu_us_per_msg {:.3}", cpu * 1e6 / count as f64);
    a.shutdown().await;
    b.shutdown().await;
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of this process (`/proc/self/stat`, clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime are the 12th and 13th.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// Most dialling nodes per child process: each holds a listener and a connection (2 fds).
const PEERS_PER_DIALER: usize = 4000;

/// The engine settings of both ends of the idle workload: pings every 5 s, as bench/go's.
fn idle_config() -> EngineConfig {
    let mut c = config();
    c.connection.ping_interval = Duration::from_secs(5);
    c.connection.pong_timeout = Duration::from_secs(3);
    c
}

async fn idle_rss<R: Runtime>(rt: R, runtime: &str, peers: usize, idle_seconds: u64) {
    let mut c = idle_config();
    c.max_num_inbound_peers = peers + 10;
    let n = node(&rt, c, 1).await;
    // Warm up the runtime (threads, timers) before the baseline.
    rt.timer(Instant::now() + Duration::from_millis(200)).await;
    let before = rss_kib();
    let exe = std::env::current_exe().expect("own path");
    let start = Instant::now();
    let mut children = Vec::new();
    for (k, first) in (0..peers).step_by(PEERS_PER_DIALER).enumerate() {
        let count = PEERS_PER_DIALER.min(peers - first);
        children.push(
            std::process::Command::new(&exe)
                .args(["--runtime", runtime, "--peers", &count.to_string()])
                .args(["--dialer", &n.net_addr().to_string()])
                .args(["--dialer-index", &k.to_string()])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("dialer starts"),
        );
    }
    let up = wait_peers(&rt, &n, peers, Duration::from_secs(300)).await;
    let connect = start.elapsed().as_secs_f64();
    rt.timer(Instant::now() + Duration::from_secs(2)).await;
    let after = rss_kib();
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    rt.timer(Instant::now() + Duration::from_secs(idle_seconds))
        .await;
    let idle_cpu = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let still = n.status().await.map_or(0, |s| s.inbound + s.outbound);
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(up, "all {peers} peers connected");
    println!("idle_peers {peers}");
    println!(
        "idle_peer_rss_kib {:.1}",
        (after.saturating_sub(before)) as f64 / peers as f64
    );
    println!("idle_connect_seconds {connect:.2}");
    println!(
        "idle_arrival_handshakes_per_s {:.0}",
        peers as f64 / connect
    );
    println!("idle_cpu_percent {idle_cpu:.2}");
    println!("idle_peers_after_idle {still}");
    n.shutdown().await;
}

/// Child mode: `peers` nodes, each dialling `target`, idle until stdin closes. Child `index`
/// listens on 127.<index + 1>.x.y, one address per node, so that the listeners take no ports
/// from 127.0.0.1, where the connections draw theirs.
async fn dialer<R: Runtime>(rt: R, target: String, peers: usize, index: usize) {
    let (id, addr) = target.split_once('@').expect("id@addr");
    let to = NetAddr::new(id.parse().expect("node id"), addr.parse().expect("address"));
    let mut nodes = Vec::new();
    for i in 0..peers {
        let mut c = idle_config();
        let [_, _, hi, lo] = (i as u32 + 1).to_be_bytes();
        c.listen_addr = ([127, index as u8 + 1, hi, lo], 0).into();
        let n = node(&rt, c, 1000 + (index * PEERS_PER_DIALER + i) as u64).await;
        n.dial(to).await.expect("dial");
        nodes.push(n);
        if i % 50 == 49 {
            rt.timer(Instant::now() + Duration::from_millis(20)).await;
        }
    }
    let _ = rt
        .spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        })
        .await;
    drop(nodes);
}

async fn run<R: Runtime>(rt: R, a: Args) {
    if let Some(t) = a.dialer {
        return dialer(rt, t, a.peers, a.dialer_index).await;
    }
    let want = |w: &str| a.only.is_empty() || a.only.iter().any(|x| x == w);
    println!("impl cometmesh-{}", a.runtime);
    if want("mconn_64b") {
        throughput_reactor(rt.clone(), "mconn_64b", 64, a.small).await;
    }
    if want("mconn_64kib") {
        throughput_reactor(rt.clone(), "mconn_64kib", 64 * 1024, a.large).await;
    }
    if want("send_wait_64b") {
        throughput(rt.clone(), "mconn_64b_send_wait", 64, a.small).await;
    }
    if want("send_wait_64kib") {
        throughput(rt.clone(), "mconn_64kib_send_wait", 64 * 1024, a.large).await;
    }
    if want("reactor_64b") {
        throughput_reactor(rt.clone(), "reactor_64b", 64, a.small).await;
    }
    if want("reactor_64kib") {
        throughput_reactor(rt.clone(), "reactor_64kib", 64 * 1024, a.large).await;
    }
    if want("idle_peer_rss") {
        idle_rss(rt, &a.runtime, a.peers, a.idle_seconds).await;
    }
}

fn main() {
    let a = args();
    match a.runtime.as_str() {
        "tokio" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio")
            .block_on(run(cometmesh_tokio::TokioRuntime, a)),
        "async-std" => async_std::task::block_on(run(cometmesh_async_std::AsyncStdRuntime, a)),
        other => panic!("unknown runtime {other} (tokio, async-std)"),
    }
}
