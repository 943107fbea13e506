//! The address book (spec 6, peer-management.md): new and tried tables, bans, persistence.
