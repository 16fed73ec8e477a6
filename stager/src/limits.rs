//! Instance limits as the operator writes them (`--memory 128M --disk 256M --cpu equal`),
//! parsed and checked before anything is created.

use crate::error::{Error, Result};

/// How an instance shares the node's CPUs (DESIGN.md, the sandbox contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuMode {
    /// Same weight as every other instance: 1/N each under contention.
    #[default]
    Equal,
    /// A hard quota of (node CPUs)/N on top of the equal weight.
    Cap,
}

impl CpuMode {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "equal" => Ok(CpuMode::Equal),
            "cap" => Ok(CpuMode::Cap),
            other => Err(Error::Invalid(format!(
                "--cpu {other:?}: expected `equal` or `cap`"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CpuMode::Equal => "equal",
            CpuMode::Cap => "cap",
        }
    }
}

/// The limits of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory: u64,
    pub disk: u64,
    pub cpu: CpuMode,
}

/// The smallest memory limit an instance may get: below this the shell cannot start.
pub const MIN_MEMORY: u64 = 4 << 20;
/// The smallest disk quota (the runtime formats an ext4 image of this size).
pub const MIN_DISK: u64 = 4 << 20;

impl Limits {
    pub fn parse(memory: &str, disk: &str, cpu: &str) -> Result<Self> {
        let memory = parse_size("--memory", memory)?;
        if memory < MIN_MEMORY {
            return Err(Error::Invalid(format!(
                "--memory {memory}: at least {}M is needed",
                MIN_MEMORY >> 20
            )));
        }
        let disk = parse_size("--disk", disk)?;
        if disk < MIN_DISK {
            return Err(Error::Invalid(format!(
                "--disk {disk}: at least {}M is needed",
                MIN_DISK >> 20
            )));
        }
        Ok(Limits {
            memory,
            disk,
            cpu: CpuMode::parse(cpu)?,
        })
    }
}

/// `512`, `64K`, `128M`, `1G`, `1T` (binary units, optional `B`/`iB` suffix) → bytes.
pub fn parse_size(flag: &str, value: &str) -> Result<u64> {
    let bad = |why: &str| Error::Invalid(format!("{flag} {value:?}: {why}"));
    let s = value.trim();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(end);
    if digits.is_empty() {
        return Err(bad("not a size; write e.g. 128M or 1G"));
    }
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad("unknown unit; use K, M, G or T")),
    };
    let n: u64 = digits.parse().map_err(|_| bad("too large"))?;
    if n == 0 {
        return Err(bad("must be greater than zero"));
    }
    n.checked_mul(1u64 << shift).ok_or_else(|| bad("too large"))
}

/// Bytes as the largest whole binary unit: `134217728` → `128M`.
pub fn human(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    if bytes >= 1 << 30 {
        return format!("{:.1}G", bytes as f64 / f64::from(1u32 << 30));
    }
    if bytes >= 1 << 20 {
        return format!("{:.1}M", bytes as f64 / f64::from(1u32 << 20));
    }
    if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        return format!("{}K", bytes >> 10);
    }
    if bytes >= 1 << 10 {
        return format!("{:.1}K", bytes as f64 / 1024.0);
    }
    format!("{bytes}B")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("--memory", "128M").unwrap(), 128 << 20);
        assert_eq!(parse_size("--memory", "1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("--memory", "4096").unwrap(), 4096);
        assert_eq!(parse_size("--memory", "64KiB").unwrap(), 64 << 10);
        for bad in ["", "M", "12X", "-1M", "1.5G", "0", "99999999999999999999"] {
            let e = parse_size("--memory", bad).unwrap_err().to_string();
            assert!(e.starts_with("--memory"), "{bad}: {e}");
        }
    }

    #[test]
    fn limits() {
        let l = Limits::parse("128M", "256M", "cap").unwrap();
        assert_eq!(l.memory, 128 << 20);
        assert_eq!(l.disk, 256 << 20);
        assert_eq!(l.cpu, CpuMode::Cap);
        assert!(Limits::parse("1M", "256M", "equal").is_err());
        assert!(Limits::parse("128M", "1K", "equal").is_err());
        let e = Limits::parse("128M", "256M", "half")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cpu"), "{e}");
    }

    #[test]
    fn humans() {
        assert_eq!(human(128 << 20), "128M");
        assert_eq!(human(1 << 30), "1G");
        assert_eq!(human(1536 * 1024), "1.5M");
        assert_eq!(human(512), "512B");
    }
}
