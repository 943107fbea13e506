//! The loopback suite on async-std.

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    async_std::task::block_on(f)
}

cometmesh_tests::loopback_suite!(cometmesh_async_std::AsyncStdRuntime, block_on);
cometmesh_tests::reactor_suite!(cometmesh_async_std::AsyncStdRuntime, block_on);
