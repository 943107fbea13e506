//! Runs the cometmesh engine on tokio over TCP.
