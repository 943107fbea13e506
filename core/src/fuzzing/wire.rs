//! Fuzz entry points for `wire`.
