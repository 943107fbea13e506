//! Runs the cometmesh engine on async-std (and smol, through futures-io) over TCP.
