//! `/proc/self/mountinfo`: which filesystem holds a path, with which options, and what is
//! mounted where. The parser is pure; [`read`] is the one read of the file.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the filesystem.
    pub dev: (u32, u32),
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,...`).
    pub mount_options: String,
    /// Filesystem type (`ext4`, `xfs`, ...).
    pub fs_type: String,
    /// Mount source, usually the block device (`/dev/vda`, `/dev/loop3`).
    pub source: String,
    /// Per-superblock options, where `prjquota` shows up.
    pub super_options: String,
}

impl Mount {
    /// True when the per-superblock options contain `option` exactly.
    pub fn has_option(&self, option: &str) -> bool {
        self.super_options.split(',').any(|o| o == option)
    }
}

/// Reads and parses `/proc/self/mountinfo`.
pub fn read() -> Result<Vec<Mount>> {
    let text = fs::read_to_string(MOUNTINFO).map_err(|e| Error::io("read", MOUNTINFO, e))?;
    Ok(parse(&text))
}

/// Parses mountinfo text; lines it cannot read are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    // id parent major:minor root mount_point options [optional...] - fstype source super_options
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let (_id, _parent, dev) = (l.next()?, l.next()?, l.next()?);
    let (_root, mount_point, mount_options) = (l.next()?, l.next()?, l.next()?);
    let (major, minor) = dev.split_once(':')?;
    let mut r = right.split(' ');
    let fs_type = r.next()?;
    let source = r.next()?;
    let super_options = r.next().unwrap_or("");
    Some(Mount {
        dev: (major.parse().ok()?, minor.parse().ok()?),
        mount_point: PathBuf::from(unescape(mount_point)),
        mount_options: mount_options.to_string(),
        fs_type: unescape(fs_type),
        source: unescape(source),
        super_options: super_options.to_string(),
    })
}

/// Undoes the kernel's octal escapes (`\040` for space, `\011`, `\012`, `\134`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|d| (b'0'..=b'7').contains(d)) && oct[0] <= b'3' {
                out.push(oct.iter().fold(0u8, |v, d| (v << 3) | (d - b'0')));
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount that holds `path` (already canonical): the longest mount point that is a prefix
/// of it, the last one listed when several are stacked on the same point.
pub fn containing<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .fold(None, |best: Option<&Mount>, m| match best {
            Some(b) if b.mount_point.components().count() > m.mount_point.components().count() => {
                Some(b)
            }
            _ => Some(m),
        })
}

/// Every mount whose mount point is `path` or below it.
pub fn under<'a>(mounts: &'a [Mount], path: &Path) -> Vec<&'a Mount> {
    mounts
        .iter()
        .filter(|m| m.mount_point.starts_with(path))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict
40 27 8:17 / /var/lib/paddock rw,relatime shared:5 master:1 - xfs /dev/sdb1 rw,attr2,inode64,prjquota
41 40 7:3 / /var/lib/paddock/volumes/web\\0400 rw,nosuid,nodev,relatime - ext4 /dev/loop3 rw
42 40 7:4 / /var/lib/paddock/volumes/web\\0400 rw,nosuid,nodev,relatime - ext4 /dev/loop4 rw
garbage line
";

    #[test]
    fn parses_lines_and_escapes() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].dev, (254, 0));
        assert_eq!(m[1].source, "/dev/vda");
        assert_eq!(m[2].fs_type, "xfs");
        assert!(m[2].has_option("prjquota"));
        assert!(!m[1].has_option("prjquota"));
        assert!(!m[1].has_option("resv"));
        assert_eq!(
            m[3].mount_point,
            PathBuf::from("/var/lib/paddock/volumes/web 0")
        );
        assert_eq!(m[3].mount_options, "rw,nosuid,nodev,relatime");
    }

    #[test]
    fn finds_the_holding_mount() {
        let m = parse(SAMPLE);
        let c = containing(&m, Path::new("/var/lib/paddock/images")).unwrap();
        assert_eq!(c.source, "/dev/sdb1");
        let c = containing(&m, Path::new("/var/lib/paddockx")).unwrap();
        assert_eq!(c.source, "/dev/vda");
        // Stacked mounts: the last one listed is on top.
        let c = containing(&m, Path::new("/var/lib/paddock/volumes/web 0/x")).unwrap();
        assert_eq!(c.source, "/dev/loop4");
        assert_eq!(under(&m, Path::new("/var/lib/paddock/volumes")).len(), 2);
    }

    #[test]
    fn unescapes() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\"), "\\");
    }
}
