//! Reading a caller's OCI bundle, with errors that say which file and what is wrong.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

/// Loads and checks `<bundle>/config.json`.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let meta = fs::metadata(bundle).map_err(|e| Error::Bundle {
        path: bundle.to_path_buf(),
        reason: match e.kind() {
            ErrorKind::NotFound => "does not exist".into(),
            _ => e.to_string(),
        },
    })?;
    if !meta.is_dir() {
        return Err(Error::Bundle {
            path: bundle.to_path_buf(),
            reason: "is not a directory".into(),
        });
    }
    let path = bundle.join("config.json");
    let data = fs::read(&path).map_err(|e| Error::Spec {
        path: path.clone(),
        reason: match e.kind() {
            ErrorKind::NotFound => "missing".into(),
            _ => e.to_string(),
        },
    })?;
    parse_spec(&path, &data)
}

/// Parses and checks a spec document. Pure, for tests and fuzzing.
pub fn parse_spec(path: &Path, data: &[u8]) -> Result<Spec> {
    let bad = |reason: String| Error::Spec {
        path: path.to_path_buf(),
        reason,
    };
    if data.trim_ascii_start().first() != Some(&b'{') {
        return Err(bad("malformed: not a JSON object".into()));
    }
    let spec: Spec = serde_json::from_slice(data).map_err(|e| bad(format!("malformed: {e}")))?;
    if !spec.version().starts_with("1.") {
        return Err(bad(format!(
            "ociVersion {:?} is not supported (1.x only)",
            spec.version()
        )));
    }
    let Some(process) = spec.process() else {
        return Err(bad("no process".into()));
    };
    match process.args() {
        Some(a) if !a.is_empty() && !a[0].is_empty() => {}
        _ => return Err(bad("process.args is empty".into())),
    }
    if spec.root().is_none() {
        return Err(bad("no root".into()));
    }
    if spec.linux().is_none() {
        return Err(bad("no linux section".into()));
    }
    Ok(spec)
}

/// The absolute, existing rootfs of a spec loaded from `bundle`.
pub fn rootfs(bundle: &Path, spec: &Spec) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    let joined = if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    };
    let canonical = fs::canonicalize(&joined).map_err(|e| Error::Bundle {
        path: joined.clone(),
        reason: match e.kind() {
            ErrorKind::NotFound => "rootfs does not exist".into(),
            _ => format!("rootfs: {e}"),
        },
    })?;
    if !canonical.is_dir() {
        return Err(Error::Bundle {
            path: joined,
            reason: "rootfs is not a directory".into(),
        });
    }
    Ok(canonical)
}

/// Makes the directory `dest` (a path inside the sandbox) in `rootfs` where it is missing, as
/// host root, each component resolved inside the rootfs (symlinks never lead out of it). A user
/// namespace's init cannot create a mount point in a rootfs owned by host root; runc and
/// libcontainer create missing ones in the rootfs as well.
pub fn make_mount_point(rootfs: &Path, dest: &Path) -> Result<()> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use nix::sys::stat::{mkdirat, Mode};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let root = fs::File::open(rootfs).map_err(|e| Error::io("open", rootfs, e))?;
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    };
    let mut done = PathBuf::from(".");
    for part in dest.components().skip_while(|c| c.as_os_str() == "/") {
        let next = done.join(part);
        match openat2(root.as_raw_fd(), &next, how()) {
            Ok(fd) => {
                // SAFETY: openat2 just returned this descriptor; nothing else owns it.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            Err(nix::errno::Errno::ENOENT) => {
                let parent = openat2(root.as_raw_fd(), &done, how())
                    .map_err(|e| Error::io("open", rootfs.join(&done), e.into()))?;
                // SAFETY: openat2 just returned this descriptor; nothing else owns it.
                let parent = unsafe { OwnedFd::from_raw_fd(parent) };
                match mkdirat(
                    Some(parent.as_raw_fd()),
                    part.as_os_str(),
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(Error::io("mkdir", rootfs.join(&next), e.into())),
                }
            }
            Err(e) => return Err(Error::io("open", rootfs.join(&next), e.into())),
        }
        done = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Spec> {
        parse_spec(Path::new("/b/config.json"), s.as_bytes())
    }

    const GOOD: &str = r#"{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"rootfs"},"linux":{}}"#;

    #[test]
    fn accepts_minimal_spec() {
        assert!(parse(GOOD).is_ok());
    }

    #[test]
    fn errors_name_the_file_and_problem() {
        let cases = [
            ("{", "malformed"),
            ("[]", "malformed"),
            (&GOOD.replace("1.0.2", "0.9"), "ociVersion"),
            (&GOOD.replace(r#"["sh"]"#, "[]"), "process.args"),
            (
                &GOOD.replace(
                    r#""linux":{}"#,
                    r#""linux":{"namespaces":[{"type":"bogus"}]}"#,
                ),
                "bogus",
            ),
            (&GOOD.replace(r#","linux":{}"#, ""), "no linux"),
        ];
        for (doc, want) in cases {
            let err = match parse(doc) {
                Ok(_) => panic!("accepted {doc}"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains("/b/config.json") && err.contains(want),
                "{err}"
            );
        }
    }
}
