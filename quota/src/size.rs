//! Sizes and counts as operators write them (`512M`, `1G`, `64k`, `1024`): binary units, like
//! warden and docker. Pure functions; the one check against the store's free space is separate.

use std::path::Path;

use crate::error::{Error, Result};
use crate::statfs::statfs;

const UNITS: [(char, u32); 5] = [('K', 10), ('M', 20), ('G', 30), ('T', 40), ('P', 50)];

/// Parses a byte size: a positive integer with an optional binary unit `K`, `M`, `G`, `T` or `P`
/// (any case, optionally followed by `i` and/or `B`): `512M` = 512 MiB, `1G`, `64k`, `1024`.
///
/// ```
/// assert_eq!(paddock_quota::parse_size("512M").unwrap(), 512 << 20);
/// assert!(paddock_quota::parse_size("1Q").is_err());
/// ```
pub fn parse_size(value: &str) -> Result<u64> {
    let bad = |reason: &str| Error::InvalidSize {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let s = value.trim();
    if s.is_empty() {
        return Err(bad("empty; write a size such as 512M or 1G"));
    }
    if s.starts_with('-') {
        return Err(bad("negative; a size must be greater than zero"));
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_end);
    if digits.is_empty() {
        return Err(bad("does not start with a number"));
    }
    if unit.starts_with('.') {
        return Err(bad(
            "fractions are not supported; use a smaller unit (1536M, not 1.5G)",
        ));
    }
    let shift = parse_unit(unit).ok_or_else(|| {
        bad(&format!(
            "unknown unit {unit:?}; use K, M, G, T or P (binary: 1K = 1024) or none for bytes"
        ))
    })?;
    let n: u64 = digits
        .parse()
        .map_err(|_| bad("too large (more than 16 EiB)"))?;
    if n == 0 {
        return Err(bad("zero; a size must be greater than zero"));
    }
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| bad("too large (more than 16 EiB)"))
}

/// `""`, `B`, `K`, `KB`, `KiB`, `k`, `kib`, ... → the power of two it stands for.
fn parse_unit(unit: &str) -> Option<u32> {
    let upper = unit.to_ascii_uppercase();
    let mut chars = upper.chars();
    let (shift, rest) = match chars.next() {
        None => return Some(0),
        Some('B') => return chars.next().is_none().then_some(0),
        Some(c) => (UNITS.iter().find(|(u, _)| *u == c)?.1, chars.as_str()),
    };
    matches!(rest, "" | "B" | "I" | "IB").then_some(shift)
}

/// Parses an inode count: a positive decimal integer.
pub fn parse_inodes(value: &str) -> Result<u64> {
    let bad = |reason: &str| Error::InvalidSize {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let s = value.trim();
    if s.is_empty() {
        return Err(bad("empty; write an inode count such as 10000"));
    }
    if s.starts_with('-') {
        return Err(bad("negative; an inode count must be greater than zero"));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not a whole number of inodes"));
    }
    let n: u64 = s.parse().map_err(|_| bad("too large"))?;
    if n == 0 {
        return Err(bad("zero; an inode count must be greater than zero"));
    }
    Ok(n)
}

/// Writes a byte count the way [`parse_size`] reads it, exact: `512M`, `1G`, `1536K`, `1000`.
pub fn format_size(bytes: u64) -> String {
    for &(unit, shift) in UNITS.iter().rev() {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Fails when `bytes` is more than the free space of the filesystem holding `store`.
pub fn check_fits(store: &Path, bytes: u64) -> Result<()> {
    let st = statfs(store).map_err(|e| Error::io("statfs", store, e))?;
    fits(bytes, st.bytes_available(), store)
}

pub(crate) fn fits(bytes: u64, free: u64, store: &Path) -> Result<()> {
    if bytes > free {
        return Err(Error::InvalidLimit {
            what: "disk limit",
            value: bytes,
            reason: format!(
                "{} is larger than the free space of the store {} ({})",
                format_size(bytes),
                store.display(),
                format_size(free / 1024 * 1024)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("64kb").unwrap(), 64 << 10);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        assert_eq!(parse_size("1P").unwrap(), 1 << 50);
        assert_eq!(parse_size("100B").unwrap(), 100);
        assert_eq!(parse_size(" 1G ").unwrap(), 1 << 30);
        assert_eq!(parse_size("16383P").unwrap(), 16383 << 50);
    }

    fn reason(value: &str) -> String {
        match parse_size(value) {
            Err(e @ Error::InvalidSize { .. }) => e.to_string(),
            other => panic!("{value:?}: expected InvalidSize, got {other:?}"),
        }
    }

    #[test]
    fn bad_sizes_name_the_value() {
        assert!(reason("-1").contains("\"-1\": negative"));
        assert!(reason("1Q").contains("\"1Q\": unknown unit \"Q\""));
        assert!(reason("0").contains("\"0\": zero"));
        assert!(reason("0M").contains("zero"));
        assert!(reason("").contains("empty"));
        assert!(reason("M").contains("does not start with a number"));
        assert!(reason("1.5G").contains("fractions"));
        assert!(reason("16384P").contains("too large"));
        assert!(reason("99999999999999999999").contains("too large"));
        assert!(reason("1 G").contains("unknown unit"));
        assert!(reason("1GG").contains("unknown unit"));
        assert!(reason("1BB").contains("unknown unit"));
        assert!(reason("0x10").contains("unknown unit"));
    }

    #[test]
    fn inodes() {
        assert_eq!(parse_inodes("200").unwrap(), 200);
        assert_eq!(parse_inodes(" 1000000 ").unwrap(), 1_000_000);
        for bad in ["", "0", "-1", "1k", "1.5", "99999999999999999999999"] {
            assert!(parse_inodes(bad).is_err(), "{bad:?}");
        }
        assert!(parse_inodes("-5")
            .unwrap_err()
            .to_string()
            .contains("\"-5\""));
    }

    #[test]
    fn format_round_trips() {
        for v in [
            1u64,
            1000,
            1024,
            1536 << 10,
            512 << 20,
            1 << 30,
            3 << 40,
            5 << 50,
        ] {
            assert_eq!(parse_size(&format_size(v)).unwrap(), v, "{v}");
        }
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(1536 << 10), "1536K");
    }

    #[test]
    fn larger_than_the_store() {
        let e = fits(2 << 30, 1 << 30, Path::new("/var/lib/paddock")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid disk limit 2147483648: 2G is larger than the free space of the store \
             /var/lib/paddock (1G)"
        );
        assert!(fits(1 << 30, 1 << 30, Path::new("/s")).is_ok());
    }
}
