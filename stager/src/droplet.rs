//! Droplets: an app directory packed as a layer (`app/…`) plus a JSON manifest (start command,
//! stack, layer digest), stored content-addressed under `<data>/droplets/<id>/`, where the id is
//! the sha256 of the manifest (and so of the files, the command and the stack together).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::StartCommand;
use crate::error::{Error, Result};
use crate::layer::{self, Entry};

/// What a droplet holds besides its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub start_command: String,
    pub detected_by: String,
    /// Digest of the stack layer the droplet runs on.
    pub stack: String,
    /// Digest, size and media type of `droplet.tar`.
    pub layer: LayerRef,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// A stored droplet.
#[derive(Debug, Clone)]
pub struct Droplet {
    pub id: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Droplet {
    pub fn tar_path(&self) -> PathBuf {
        self.dir.join("droplet.tar")
    }
}

/// The entries of the app directory under `app/`, with modes normalised (0755 for directories
/// and executables, 0644 otherwise); returns (entries, files, bytes).
pub fn collect(dir: &Path) -> Result<(Vec<Entry>, u64, u64)> {
    let mut entries = vec![Entry::Dir {
        path: "app".into(),
        mode: 0o755,
    }];
    let (mut files, mut bytes) = (0, 0);
    walk(dir, "app", &mut entries, &mut files, &mut bytes)?;
    Ok((entries, files, bytes))
}

fn walk(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<Entry>,
    files: &mut u64,
    bytes: &mut u64,
) -> Result<()> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io("read directory", dir, e))?;
        names.push(e.file_name());
    }
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let Some(name) = name.to_str() else {
            return Err(Error::Invalid(format!(
                "{}: file names must be UTF-8",
                path.display()
            )));
        };
        let inner = format!("{prefix}/{name}");
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| Error::io("readlink", &path, e))?;
            out.push(Entry::Symlink {
                path: inner,
                target: target.to_string_lossy().into_owned(),
            });
        } else if ft.is_dir() {
            out.push(Entry::Dir {
                path: inner.clone(),
                mode: 0o755,
            });
            walk(&path, &inner, out, files, bytes)?;
        } else if ft.is_file() {
            let data = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            *files += 1;
            *bytes += data.len() as u64;
            out.push(Entry::File {
                path: inner,
                mode,
                data,
            });
        }
        // sockets, fifos and devices have no place in a droplet: skipped
    }
    Ok(())
}

/// Packs `app_dir` into a droplet on `stack` and stores it under `droplets_dir`.
pub fn stage(
    app_dir: &Path,
    start: &StartCommand,
    stack: &str,
    droplets_dir: &Path,
) -> Result<Droplet> {
    let (entries, files, bytes) = collect(app_dir)?;
    let tar = layer::build(entries)?;
    let manifest = Manifest {
        format: 1,
        start_command: start.command.clone(),
        detected_by: start.source.to_string(),
        stack: stack.to_string(),
        layer: LayerRef {
            digest: layer::digest(&tar),
            size: tar.len() as u64,
            media_type: layer::MEDIA_TYPE.to_string(),
        },
        files,
        bytes,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::Invalid(format!("droplet manifest: {e}")))?;
    let id = layer::digest(&json)
        .trim_start_matches("sha256:")
        .to_string();
    let dir = droplets_dir.join(&id);
    if !dir.join("manifest.json").is_file() {
        fs::create_dir_all(droplets_dir)
            .map_err(|e| Error::io("create directory", droplets_dir, e))?;
        let tmp = droplets_dir.join(format!(".{id}.{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(|e| Error::io("create directory", &tmp, e))?;
        let write = |name: &str, data: &[u8]| {
            let p = tmp.join(name);
            fs::write(&p, data).map_err(|e| Error::io("write", p, e))
        };
        write("droplet.tar", &tar)?;
        write("manifest.json", &json)?;
        if let Err(e) = fs::rename(&tmp, &dir) {
            let _ = fs::remove_dir_all(&tmp);
            if !dir.join("manifest.json").is_file() {
                return Err(Error::io("rename", &dir, e));
            }
        }
    }
    Ok(Droplet { id, dir, manifest })
}

/// The droplet whose id is `wanted` or starts with it (at least 4 characters, unambiguous).
pub fn find(droplets_dir: &Path, wanted: &str) -> Result<Droplet> {
    if wanted.len() < 4 || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::NoDroplet(wanted.to_string()));
    }
    let mut matches: Vec<String> = fs::read_dir(droplets_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                // Only whole ids: a stray directory must not pass for a droplet.
                .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                .filter(|n| n.starts_with(wanted))
                .collect()
        })
        .unwrap_or_default();
    matches.sort();
    let id = match matches.as_slice() {
        [one] => one.clone(),
        [] => return Err(Error::NoDroplet(wanted.to_string())),
        _ => {
            return Err(Error::Invalid(format!(
                "droplet id {wanted} is ambiguous: {}",
                matches.join(", ")
            )))
        }
    };
    let dir = droplets_dir.join(&id);
    let path = dir.join("manifest.json");
    let text = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    Ok(Droplet { id, dir, manifest })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn app() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("www")).unwrap();
        fs::write(d.path().join("www/index.html"), "hi\n").unwrap();
        fs::write(d.path().join("Procfile"), "web: httpd\n").unwrap();
        d
    }

    #[test]
    fn content_addressed() {
        let store = tempfile::tempdir().unwrap();
        let a = app();
        let start = StartCommand {
            command: "httpd".into(),
            source: "Procfile",
        };
        let d1 = stage(a.path(), &start, "sha256:st", store.path()).unwrap();
        let d2 = stage(a.path(), &start, "sha256:st", store.path()).unwrap();
        assert_eq!(d1.id, d2.id);
        assert_eq!(d1.manifest.files, 2);
        let tar = fs::read(d1.tar_path()).unwrap();
        assert_eq!(layer::digest(&tar), d1.manifest.layer.digest);
        // another command or another file: another droplet
        let other = StartCommand {
            command: "httpd -v".into(),
            source: "--command",
        };
        assert_ne!(
            stage(a.path(), &other, "sha256:st", store.path())
                .unwrap()
                .id,
            d1.id
        );
        fs::write(a.path().join("www/index.html"), "ho\n").unwrap();
        let d3 = stage(a.path(), &start, "sha256:st", store.path()).unwrap();
        assert_ne!(d3.id, d1.id);
        assert_eq!(find(store.path(), &d1.id[..12]).unwrap().id, d1.id);
        assert!(find(store.path(), "zz").is_err());
        assert!(find(store.path(), "0000000").is_err());
        // A stray directory with a hex name is no droplet (and no short id to slice).
        fs::create_dir_all(store.path().join("beef")).unwrap();
        fs::write(store.path().join("beef/manifest.json"), "{}").unwrap();
        assert!(matches!(
            find(store.path(), "beef"),
            Err(Error::NoDroplet(_))
        ));
    }
}
