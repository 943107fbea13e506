//! One peer connection, sans-IO: NodeInfo exchange (spec 3) and MConnection (spec 4).
