//! The stack: the base root filesystem every droplet runs on, built once from Debian's
//! `busybox-static` (a static `/bin/busybox` and a symlink per applet) and kept as a layer under
//! `<data>/stacks/busybox.tar`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::layer::{self, Entry};

/// Debian's `busybox-static` binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// The image the stack is imported as.
pub const IMAGE: &str = "paddock.local/stacks/busybox:latest";

/// A built stack layer.
#[derive(Debug, Clone)]
pub struct Stack {
    pub path: PathBuf,
    pub digest: String,
    pub size: u64,
}

/// Returns the stack under `stacks_dir`, building it first if it is not there.
pub fn ensure(stacks_dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<Stack> {
    let path = stacks_dir.join("busybox.tar");
    let data = match fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            progress(&format!(
                "building the stack from {BUSYBOX} (busybox-static), once"
            ));
            let data = build(Path::new(BUSYBOX))?;
            fs::create_dir_all(stacks_dir)
                .map_err(|e| Error::io("create directory", stacks_dir, e))?;
            let tmp = stacks_dir.join(format!(".busybox.tar.{}", std::process::id()));
            fs::write(&tmp, &data).map_err(|e| Error::io("write", &tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
            data
        }
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    Ok(Stack {
        digest: layer::digest(&data),
        size: data.len() as u64,
        path,
    })
}

/// The stack layer: `/bin/busybox`, its applets, `/etc/passwd` and `/etc/group`, and the
/// directories a sandbox mounts over or writes to.
pub fn build(busybox: &Path) -> Result<Vec<u8>> {
    let binary = fs::read(busybox).map_err(|e| Error::io("read", busybox, e))?;
    if !is_static_elf(&binary) {
        return Err(Error::Invalid(format!(
            "{} is not a statically linked executable (install Debian's busybox-static)",
            busybox.display()
        )));
    }
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| Error::io("run", busybox, e))?;
    if !out.status.success() {
        return Err(Error::Command {
            what: format!("{} --list", busybox.display()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut entries = Vec::new();
    for (dir, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
        ("home/vcap", 0o755),
        ("run", 0o755),
        ("var", 0o755),
        ("var/tmp", 0o1777),
    ] {
        entries.push(Entry::Dir {
            path: dir.into(),
            mode,
        });
    }
    entries.push(Entry::File {
        path: "bin/busybox".into(),
        mode: 0o755,
        data: binary,
    });
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        entries.push(Entry::Symlink {
            path: format!("bin/{applet}"),
            target: "busybox".into(),
        });
    }
    entries.push(Entry::File {
        path: "etc/passwd".into(),
        mode: 0o644,
        data: b"root:x:0:0:root:/root:/bin/sh\nvcap:x:2000:2000:vcap:/home/vcap:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(),
    });
    entries.push(Entry::File {
        path: "etc/group".into(),
        mode: 0o644,
        data: b"root:x:0:\nvcap:x:2000:\nnogroup:x:65534:\n".to_vec(),
    });
    layer::build(entries)
}

/// An ELF executable with no program interpreter (PT_INTERP) needs no shared libraries.
pub fn is_static_elf(data: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    // 64-bit little-endian ELF only (the machines paddock runs on)
    if data.get(0..4) != Some(b"\x7fELF") || data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum))
        .all(|i| u32_at(phoff + i * usize::from(phentsize)).is_some_and(|t| t != PT_INTERP))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn static_detection() {
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        // a dynamically linked binary of this machine
        let sh = fs::read("/bin/sh").unwrap();
        assert!(!is_static_elf(&sh));
        if let Ok(bb) = fs::read(BUSYBOX) {
            // Debian's busybox-static, when installed
            if Command::new("dpkg")
                .args(["-s", "busybox-static"])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                assert!(is_static_elf(&bb));
            }
        }
    }

    #[test]
    fn refuses_dynamic_busybox() {
        let err = build(Path::new("/bin/sh")).unwrap_err().to_string();
        assert!(err.contains("not a statically linked"), "{err}");
    }
}
