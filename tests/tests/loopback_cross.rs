//! A tokio node and an async-std node, in one process, exchange application messages.

use std::time::Duration;

use cometmesh_tests::loopback::{config, exchange, key, start};

#[test]
fn tokio_and_async_std_nodes_exchange() {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let t = tokio_rt.block_on(start(&cometmesh_tokio::TokioRuntime, config(), key(60)));
    async_std::task::block_on(async {
        let rt = cometmesh_async_std::AsyncStdRuntime;
        let a = start(&rt, config(), key(61)).await;
        // Both directions of dialling: async-std dials tokio here.
        exchange(&rt, &a, &t).await;
        a.shutdown().await;
    });
    let stopped = tokio_rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), t.shutdown()).await });
    assert!(stopped.is_ok(), "tokio node stops");
}
