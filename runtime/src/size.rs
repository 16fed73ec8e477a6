//! Sizes as platforms write them: `512M`, `1G`, `64k`, `1024` (binary units, as warden and
//! docker read them).

/// Parses a byte size. Zero, negative, unknown units and overflow are errors.
pub fn parse_bytes(raw: &str) -> Result<u64, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err("not a size (e.g. 512M, 1G)".into());
    }
    let n: u64 = digits.parse().map_err(|_| "number too large".to_string())?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("unknown unit {unit:?} (use k, M, G or T)")),
    };
    let bytes = n
        .checked_mul(1u64 << shift)
        .filter(|b| *b <= i64::MAX as u64)
        .ok_or_else(|| "too large".to_string())?;
    if bytes == 0 {
        return Err("must be more than zero".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64k"), Ok(64 << 10));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes(" 1G "), Ok(1 << 30));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "-1",
            "1Q",
            "0",
            "0M",
            "M",
            "1.5G",
            "99999999999999999999",
            "9000000T",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
