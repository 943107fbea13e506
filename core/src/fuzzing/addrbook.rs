//! Fuzz entry points for `addrbook`.
