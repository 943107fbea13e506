//! The loopback suite on tokio.

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

cometmesh_tests::loopback_suite!(cometmesh_tokio::TokioRuntime, block_on);
cometmesh_tests::reactor_suite!(cometmesh_tokio::TokioRuntime, block_on);
