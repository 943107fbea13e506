//! DNS names of seeds and persistent peers, resolved at every dial: the engine asks with
//! `Output::DialName`, the driver resolves through a [`Resolver`] (the system's by default,
//! one of their own in tests), reports the address chosen with `Input::Resolved` and connects.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs as _};

use crate::runtime::{BoxFuture, Runtime};

/// Resolves a DNS name to socket addresses. Asked anew at every dial by name; the driver
/// connects to the first address returned.
pub trait Resolver: Send + Sync + 'static {
    /// The addresses `host` resolves to, with `port` (the port of `id@host:port`).
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>>;
}

impl fmt::Debug for dyn Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

/// The default [`Resolver`]: the system's (`getaddrinfo`, as CometBFT's Go resolver falls back
/// to), run on the runtime's blocking pool so that a slow lookup never stalls the engine, as
/// tokio's `lookup_host` does.
#[derive(Clone, Debug)]
pub struct SystemResolver<R: Runtime> {
    rt: R,
}

impl<R: Runtime> SystemResolver<R> {
    /// The system's resolver on runtime `rt`.
    pub fn new(rt: R) -> Self {
        SystemResolver { rt }
    }
}

impl<R: Runtime> Resolver for SystemResolver<R> {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        self.rt.spawn_blocking(move || {
            (host.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect)
        })
    }
}
