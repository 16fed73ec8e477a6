//! Volume ids name files in the store (`images/<id>.img`, `state/<id>.json`), so they are
//! checked before any path is built from them.

use crate::error::{Error, Result};

/// Longest id accepted: containerd ids are 64 hex digits; leave room for a prefix.
pub const MAX_ID_LEN: usize = 128;

/// Accepts `[A-Za-z0-9_.-]{1,128}` not starting with `.` (no `..`, no hidden files, no `/`).
pub fn check(id: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad("longer than 128 characters");
    }
    if id.starts_with('.') {
        return bad("starts with '.'");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "web-0", "0123abcd", "app_1.v2", &"x".repeat(128)] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
