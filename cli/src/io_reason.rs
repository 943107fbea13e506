//! Short, user-facing reasons for IO errors, in a module of their own so that `metrics` (whose
//! bind error uses them) does not depend on `error` (which wraps that bind error).

/// A short reason for an IO error on a socket, without the OS error number.
#[must_use]
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::AddrInUse => "address already in use".to_owned(),
        ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".to_owned()
        }
        ErrorKind::AddrNotAvailable => "address not available on this machine".to_owned(),
        _ => {
            let text = e.to_string();
            // Drop Rust's " (os error N)" suffix; keep the OS message.
            match text.rfind(" (os error ") {
                Some(i) => text[..i].to_owned(),
                None => text,
            }
        }
    }
}
