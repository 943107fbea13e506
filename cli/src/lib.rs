//! The `cometmesh` command.
