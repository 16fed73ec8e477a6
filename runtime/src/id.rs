//! Sandbox ids: the rules runc applies, plus no leading dot (paddock keeps its own records in
//! `<root>/.paddock`).

use crate::error::{Error, Result};

/// Longest id accepted; ids become directory and cgroup names.
pub const MAX_LEN: usize = 1024;

/// Checks an id for use as a directory and cgroup name.
pub fn validate(id: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > MAX_LEN {
        return bad("longer than 1024 bytes");
    }
    if id == "." || id == ".." || id.contains("..") {
        return bad("contains '..'");
    }
    if id.contains('/') {
        return bad("contains '/'");
    }
    if id.starts_with('.') {
        return bad("starts with '.'");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'))
    {
        return bad("only letters, digits and _ - . + are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_runc_style_ids() {
        for id in ["a", "web-0", "3f2a_b.c+d", "k8s_POD_x-y"] {
            assert!(validate(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn rejects_paths_and_oddities() {
        for id in ["", "a/b", "..", "a..b", ".hidden", "a b", "é", "x\n"] {
            assert!(validate(id).is_err(), "{id:?}");
        }
        assert!(validate(&"a".repeat(1025)).is_err());
    }
}
