//! Fuzz entry points for `conn`.
