//! `id@host:port` peer addresses (spec 1.3): parsing and printing, DNS names kept as names.
