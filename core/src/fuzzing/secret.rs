//! Fuzz entry points for `secret`.
