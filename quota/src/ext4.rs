//! The ext4 image of the loop backend: how big to make it so that exactly the requested bytes
//! and at least the requested inodes are usable, the mkfs.ext4 call, and the superblock read
//! that checks mkfs gave what was planned.
//!
//! ext4 takes its metadata (inode tables, bitmaps, superblock backups) out of the image, and
//! the kernel keeps 2% of the blocks (at most 4096) back from every writer, root included, for
//! extent splits. The image is sized for data + metadata + that reserve; after mounting, the
//! reserve is raised by the slack (`/sys/fs/ext4/<dev>/reserved_clusters`) so that writes fail
//! with ENOSPC at the requested byte count, not a little after.

use std::env;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::Limits;

/// Block size of our images: fixed, so the arithmetic below holds.
pub(crate) const BLOCK: u64 = 4096;
/// Inodes 1..=10 are reserved by ext4 (s_first_ino = 11); the root directory is inode 2.
pub(crate) const RESERVED_INODES: u64 = 10;
const INODE_SIZE: u64 = 256;
const BLOCKS_PER_GROUP: u64 = BLOCK * 8;
const INODES_PER_TABLE_BLOCK: u64 = BLOCK / INODE_SIZE;
const GROUP_DESC_SIZE: u64 = 64;
/// Blocks mkfs uses besides the metadata counted here: the root directory, lost+found.
const SLACK_BLOCKS: u64 = 8;

/// The kernel's default reserve (`ext4_calculate_resv_clusters`): 2% of the blocks, at most 4096.
pub(crate) fn default_reserve(blocks: u64) -> u64 {
    (blocks / 50).min(4096)
}

/// Size of an image and the inode count to ask mkfs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Image size in 4 KiB blocks.
    pub blocks: u64,
    /// `mkfs.ext4 -N`: the requested inodes plus ext4's reserved ones.
    pub inodes: u64,
    /// Blocks the volume's writers may use: the requested bytes, rounded up to a block.
    pub data_blocks: u64,
}

impl Geometry {
    pub fn bytes(&self) -> u64 {
        self.blocks * BLOCK
    }
}

/// Plans an image for `limits`: the smallest size whose free blocks after mkfs cover the data
/// and the kernel's reserve. Metadata and reserve grow with the size, hence the loop.
pub(crate) fn geometry(limits: &Limits) -> Geometry {
    let data_blocks = limits.bytes.div_ceil(BLOCK);
    let inodes = limits.inodes + RESERVED_INODES;
    let mut blocks = data_blocks + SLACK_BLOCKS;
    for _ in 0..64 {
        let l = layout(blocks, inodes);
        let need = data_blocks + default_reserve(l.blocks);
        let free = l.blocks.saturating_sub(l.metadata_blocks() + SLACK_BLOCKS);
        if free >= need {
            break;
        }
        blocks += need - free;
    }
    Geometry {
        blocks,
        inodes,
        data_blocks,
    }
}

/// How mkfs.ext4 (4 KiB blocks, 256-byte inodes, no journal, no resize inode) lays out an
/// image of `blocks` holding at least `inodes`, following e2fsprogs' `ext2fs_initialize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Blocks of the filesystem: the image's, less a last group too small to be worth it.
    pub blocks: u64,
    pub groups: u64,
    pub inodes_per_group: u64,
}

impl Layout {
    /// Blocks spent on inode tables, bitmaps and superblock/descriptor copies.
    pub fn metadata_blocks(&self) -> u64 {
        let inode_tables = self.groups * self.inodes_per_group / INODES_PER_TABLE_BLOCK;
        let bitmaps = self.groups * 2;
        inode_tables + bitmaps + superblock_groups(self.groups) * (1 + self.descriptor_blocks())
    }

    #[cfg(test)]
    pub fn inodes(&self) -> u64 {
        self.groups * self.inodes_per_group
    }

    fn descriptor_blocks(&self) -> u64 {
        (self.groups * GROUP_DESC_SIZE).div_ceil(BLOCK)
    }
}

pub(crate) fn layout(image_blocks: u64, inodes: u64) -> Layout {
    let mut per_group = BLOCKS_PER_GROUP;
    let mut blocks = image_blocks;
    loop {
        let groups = blocks.div_ceil(per_group).max(1);
        let ipg = inodes.div_ceil(groups);
        // One block of inode bitmap per group: more inodes need smaller groups.
        if ipg > BLOCK * 8 && per_group > 256 {
            per_group -= 8;
            blocks = image_blocks;
            continue;
        }
        // Inode tables are whole blocks.
        let ipg = ipg.next_multiple_of(INODES_PER_TABLE_BLOCK);
        let l = Layout {
            blocks,
            groups,
            inodes_per_group: ipg,
        };
        // A last group that cannot hold its own metadata and 50 blocks is dropped.
        let rem = blocks % per_group;
        let mut overhead = 3 + ipg / INODES_PER_TABLE_BLOCK;
        if superblock_groups(groups) > superblock_groups(groups - 1) {
            overhead += 1 + l.descriptor_blocks();
        }
        if groups > 1 && rem != 0 && rem < overhead + 50 {
            blocks -= rem;
            continue;
        }
        return l;
    }
}

/// Groups holding a superblock copy under sparse_super.
fn superblock_groups(groups: u64) -> u64 {
    let mut n = groups.min(2);
    for base in [3u64, 5, 7] {
        let mut g = base;
        while g < groups {
            n += 1;
            g = g.saturating_mul(base);
        }
    }
    n
}

/// The counters of an ext4 superblock that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Superblock {
    pub inodes: u64,
    pub blocks: u64,
    pub free_blocks: u64,
    pub free_inodes: u64,
    pub block_size: u64,
}

const SUPERBLOCK_OFFSET: u64 = 1024;
const SUPERBLOCK_LEN: usize = 1024;
const EXT4_MAGIC: u16 = 0xEF53;

/// Parses the 1 KiB superblock found at byte 1024 of an ext4 image.
pub(crate) fn parse_superblock(sb: &[u8]) -> Option<Superblock> {
    let u32_at = |o: usize| -> Option<u64> {
        Some(u32::from_le_bytes(sb.get(o..o + 4)?.try_into().ok()?) as u64)
    };
    let magic = u16::from_le_bytes(sb.get(0x38..0x3A)?.try_into().ok()?);
    if magic != EXT4_MAGIC {
        return None;
    }
    let incompat = u32_at(0x60)?;
    let is_64bit = incompat & 0x80 != 0;
    let hi = |o: usize| if is_64bit { u32_at(o) } else { Some(0) };
    let log_block = u32_at(0x18)?;
    if log_block > 6 {
        return None;
    }
    Some(Superblock {
        inodes: u32_at(0x00)?,
        blocks: u32_at(0x04)? | hi(0x150)? << 32,
        free_blocks: u32_at(0x0C)? | hi(0x158)? << 32,
        free_inodes: u32_at(0x10)?,
        block_size: 1024 << log_block,
    })
}

pub(crate) fn read_superblock(image: &Path) -> Result<Superblock> {
    let f = File::open(image).map_err(|e| Error::io("open", image, e))?;
    let mut buf = [0u8; SUPERBLOCK_LEN];
    f.read_exact_at(&mut buf, SUPERBLOCK_OFFSET)
        .map_err(|e| Error::io("read superblock of", image, e))?;
    parse_superblock(&buf).ok_or_else(|| Error::Image {
        image: image.to_path_buf(),
        reason: "no ext4 superblock after mkfs.ext4".into(),
    })
}

/// Finds mkfs.ext4 in PATH, then /usr/sbin and /sbin (a non-login root PATH may lack them).
pub(crate) fn find_mkfs() -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("mkfs.ext4"))
        .find(|p| p.is_file())
}

/// The arguments of mkfs.ext4 for `geometry`: quiet, forced (it is a file), no reserved blocks,
/// no journal (the image dies with the instance), no resize inode, and no zeroing: the image
/// is a fresh sparse file, which reads as zeros.
pub(crate) fn mkfs_args(image: &Path, geometry: &Geometry, prezeroed: bool) -> Vec<String> {
    let mut extended = String::from("lazy_itable_init=1,lazy_journal_init=1,nodiscard");
    if prezeroed {
        extended.push_str(",assume_storage_prezeroed=1");
    }
    vec![
        "-q".into(),
        "-F".into(),
        "-t".into(),
        "ext4".into(),
        "-b".into(),
        BLOCK.to_string(),
        "-I".into(),
        INODE_SIZE.to_string(),
        "-N".into(),
        geometry.inodes.to_string(),
        "-m".into(),
        "0".into(),
        "-O".into(),
        "^has_journal,^resize_inode".into(),
        "-E".into(),
        extended,
        image.display().to_string(),
        (geometry.bytes() / 1024).to_string(),
    ]
}

/// Runs mkfs.ext4 on `image`. e2fsprogs before 1.47 lacks `assume_storage_prezeroed`: retry
/// without it.
pub(crate) fn mkfs(mkfs: &Path, image: &Path, geometry: &Geometry) -> Result<()> {
    let run = |prezeroed: bool| -> Result<std::process::Output> {
        Command::new(mkfs)
            .args(mkfs_args(image, geometry, prezeroed))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Error::io("run", mkfs, e))
    };
    let mut out = run(true)?;
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Bad option") {
        out = run(false)?;
    }
    if out.status.success() {
        return Ok(());
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace('\n', " ");
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&out.stdout)
            .trim()
            .replace('\n', " ");
    }
    Err(Error::Mkfs {
        image: image.to_path_buf(),
        status: out.status.to_string(),
        stderr,
    })
}

/// Raises the kernel's reserve of the ext4 on `device` (`/dev/loopN`) to `blocks`.
pub(crate) fn set_reserve(device: &Path, blocks: u64) -> Result<()> {
    let name = device.file_name().unwrap_or_default();
    let knob = Path::new("/sys/fs/ext4")
        .join(name)
        .join("reserved_clusters");
    fs::write(&knob, blocks.to_string()).map_err(|e| Error::io("write", knob, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn limits(bytes: u64, inodes: u64) -> Limits {
        Limits { bytes, inodes }
    }

    /// Measured here with mkfs.ext4 1.47.0 (same flags): (image MiB, -N) → (metadata blocks =
    /// image blocks − statfs f_blocks, inode count from statfs f_files).
    #[test]
    fn layout_matches_mkfs() {
        let measured = [
            (1, 210, 18, 224),
            (8, 210, 18, 224),
            (64, 1010, 68, 1024),
            (256, 210, 22, 224),
            (256, 1010, 72, 1024),
            (256, 100_010, 6266, 100_032),
            (1024, 210, 42, 256),
            (1024, 100_010, 6282, 100_096),
            (4096, 210, 112, 512),
            (4096, 100_010, 6352, 100_352),
        ];
        for (mib, n, meta, inodes) in measured {
            let l = layout(mib * MIB / BLOCK, n);
            assert_eq!(l.metadata_blocks(), meta, "{mib} MiB, -N {n}: {l:?}");
            assert_eq!(l.inodes(), inodes, "{mib} MiB, -N {n}: {l:?}");
        }
    }

    #[test]
    fn a_tiny_last_group_is_dropped() {
        let l = layout(32768 + 40, 210);
        assert_eq!((l.blocks, l.groups), (32768, 1));
        let l = layout(32768 + 100, 210);
        assert_eq!((l.blocks, l.groups), (32868, 2));
    }

    #[test]
    fn geometry_covers_data_reserve_and_metadata() {
        for (bytes, inodes) in [
            (MIB, 1),
            (8 * MIB, 200),
            (128 * MIB, 200),
            (128 * MIB - 4096 * 30, 200),
            (256 * MIB, 1024),
            (1 << 30, 100_000),
            (100 << 30, 1_000_000),
            (MIB + 1, 5),
        ] {
            let g = geometry(&limits(bytes, inodes));
            assert_eq!(g.data_blocks, bytes.div_ceil(BLOCK));
            assert_eq!(g.inodes, inodes + RESERVED_INODES);
            let l = layout(g.blocks, g.inodes);
            let free = l.blocks - l.metadata_blocks() - SLACK_BLOCKS;
            assert!(
                free >= g.data_blocks + default_reserve(l.blocks),
                "{bytes}: {g:?}"
            );
            assert!(l.inodes() >= g.inodes);
            // Not wasteful: data + 2% reserve + inode tables + 1 MiB at most.
            assert!(
                g.bytes() <= bytes + bytes / 49 + inodes * INODE_SIZE + MIB,
                "{bytes}: {g:?}"
            );
        }
    }

    #[test]
    fn reserve_is_two_percent_capped() {
        assert_eq!(default_reserve(2048), 40);
        assert_eq!(default_reserve(65536), 1310);
        assert_eq!(default_reserve(1 << 30), 4096);
    }

    #[test]
    fn sparse_super_groups() {
        assert_eq!(superblock_groups(1), 1);
        assert_eq!(superblock_groups(8), 5); // 0 1 3 5 7
        assert_eq!(superblock_groups(32), 8); // 0 1 3 5 7 9 25 27
        assert_eq!(superblock_groups(50), 9); // + 49
    }

    #[test]
    fn superblock() {
        let mut sb = vec![0u8; 1024];
        sb[0x00..0x04].copy_from_slice(&224u32.to_le_bytes());
        sb[0x04..0x08].copy_from_slice(&2304u32.to_le_bytes());
        sb[0x0C..0x10].copy_from_slice(&2281u32.to_le_bytes());
        sb[0x10..0x14].copy_from_slice(&213u32.to_le_bytes());
        sb[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes());
        sb[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        let s = parse_superblock(&sb).unwrap();
        assert_eq!(
            s,
            Superblock {
                inodes: 224,
                blocks: 2304 | 1 << 32,
                free_blocks: 2281,
                free_inodes: 213,
                block_size: 4096,
            }
        );
        sb[0x60] = 0; // not 64bit: the high words are not used
        assert_eq!(parse_superblock(&sb).unwrap().blocks, 2304);
        sb[0x38] = 0;
        assert_eq!(parse_superblock(&sb), None);
        assert_eq!(parse_superblock(&[0u8; 10]), None);
    }

    #[test]
    fn mkfs_flags() {
        let g = geometry(&limits(8 * MIB, 200));
        let a = mkfs_args(Path::new("/s/images/a.img"), &g, true).join(" ");
        assert!(a.starts_with("-q -F -t ext4 -b 4096 -I 256 -N 210 -m 0 -O ^has_journal,^resize_inode -E lazy_itable_init=1"), "{a}");
        assert!(a.contains("assume_storage_prezeroed=1"));
        assert!(a.ends_with(&format!("/s/images/a.img {}", g.bytes() / 1024)));
        assert!(!mkfs_args(Path::new("/i"), &g, false)
            .join(" ")
            .contains("prezeroed"));
    }
}
