//! The store directory: where images, mount points, state files and project-id leases live.
//! Every path is derived from the volume id, so a fresh process can clean up by id alone; the
//! state file only adds what cannot be derived (effective limits, project id, owner).
//!
//! ```text
//! <store>/images/<id>.img     loop backend: the ext4 image
//! <store>/volumes/<id>        the volume (a mount point, or a project-quota directory)
//! <store>/state/<id>.json     written last by create, removed last by remove
//! <store>/projects/<projid>   project-id lease, holding the volume id
//! ```

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{Backend, Limits, Owner};

/// Paths of a store, canonical (mountinfo and sysfs show canonical paths).
#[derive(Debug, Clone)]
pub(crate) struct Store {
    pub root: PathBuf,
    pub images: PathBuf,
    pub volumes: PathBuf,
    pub state: PathBuf,
    pub projects: PathBuf,
}

impl Store {
    /// Creates the store's directories (mode 0700: only root reaches volumes through the host
    /// path) and resolves the root to its canonical path.
    pub fn open(root: &Path) -> Result<Self> {
        mkdir_all(root)?;
        let root = fs::canonicalize(root).map_err(|e| Error::io("canonicalize", root, e))?;
        let store = Store {
            images: root.join("images"),
            volumes: root.join("volumes"),
            state: root.join("state"),
            projects: root.join("projects"),
            root,
        };
        Ok(store)
    }

    /// Creates the subdirectories a backend uses.
    pub fn ensure(&self, dirs: &[&Path]) -> Result<()> {
        for d in dirs {
            mkdir_all(d)?;
        }
        Ok(())
    }

    pub fn image(&self, id: &str) -> PathBuf {
        self.images.join(format!("{id}.img"))
    }

    pub fn volume(&self, id: &str) -> PathBuf {
        self.volumes.join(id)
    }

    pub fn state_file(&self, id: &str) -> PathBuf {
        self.state.join(format!("{id}.json"))
    }

    /// The first artifact of `id` that exists, if any.
    pub fn any_artifact(&self, id: &str) -> Option<PathBuf> {
        [self.state_file(id), self.image(id), self.volume(id)]
            .into_iter()
            .find(|p| p.symlink_metadata().is_ok())
    }

    /// Ids with any artifact: finished volumes and half-made ones alike.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut ids = BTreeSet::new();
        for (dir, suffix) in [
            (&self.state, Some(".json")),
            (&self.images, Some(".img")),
            (&self.volumes, None),
        ] {
            for name in names(dir)? {
                let id = match suffix {
                    Some(s) => match name.strip_suffix(s) {
                        Some(id) => id.to_string(),
                        None => continue,
                    },
                    None => name,
                };
                if crate::volume_id::check(&id).is_ok() {
                    ids.insert(id);
                }
            }
        }
        Ok(ids.into_iter().collect())
    }

    pub fn read_state(&self, id: &str) -> Result<Option<State>> {
        let path = self.state_file(id);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| Error::State {
                path,
                reason: e.to_string(),
            })
    }

    /// Writes the state atomically (temporary file, rename). No fsync: it costs a disk flush
    /// per create, and a state lost in a host crash only costs usage reports, since remove
    /// works from the id alone (volumes do not survive a reboot anyway: their mounts are gone).
    pub fn write_state(&self, state: &State) -> Result<()> {
        let path = self.state_file(&state.id);
        let tmp = self.state.join(format!(".{}.json.tmp", state.id));
        let text = serde_json::to_vec_pretty(state).map_err(|e| Error::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(&text)
            .map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))
    }

    pub fn remove_state(&self, id: &str) -> Result<()> {
        remove_file(&self.state_file(id))
    }
}

/// What create recorded about a finished volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    pub id: String,
    pub backend: Backend,
    pub path: PathBuf,
    /// What the caller asked for.
    pub requested: Limits,
    /// What the volume enforces (see [`crate::Volume::limits`]).
    pub limits: Limits,
    pub owner: Owner,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<u32>,
    #[serde(default)]
    pub user_quota: bool,
}

fn mkdir_all(path: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io("mkdir", path, e))
}

/// File names in `dir`; a missing directory has none.
pub(crate) fn names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// Removes a file; a missing one is fine (remove is idempotent).
pub(crate) fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Removes a directory and what is in it; a missing one is fine. Symlinks inside are removed,
/// never followed.
pub(crate) fn remove_dir_all(path: &Path) -> Result<()> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => match fs::remove_dir_all(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
            _ => Ok(()),
        },
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_any_artifact_and_state_round_trips() {
        let tmp = tempfile::Builder::new()
            .prefix("paddock-quota-store-")
            .tempdir()
            .unwrap();
        let s = Store::open(&tmp.path().join("store")).unwrap();
        s.ensure(&[&s.images, &s.volumes, &s.state]).unwrap();
        fs::write(s.image("a"), b"").unwrap();
        fs::create_dir(s.volume("b")).unwrap();
        fs::write(s.images.join("junk.txt"), b"").unwrap();
        let st = State {
            id: "c".into(),
            backend: Backend::Loop,
            path: s.volume("c"),
            requested: Limits {
                bytes: 1 << 20,
                inodes: 10,
            },
            limits: Limits {
                bytes: 1 << 20,
                inodes: 16,
            },
            owner: Owner { uid: 1, gid: 2 },
            project_id: None,
            user_quota: false,
        };
        s.write_state(&st).unwrap();
        assert_eq!(s.ids().unwrap(), ["a", "b", "c"]);
        assert_eq!(s.read_state("c").unwrap(), Some(st));
        assert_eq!(s.read_state("a").unwrap(), None);
        assert!(s.any_artifact("a").is_some());
        assert!(s.any_artifact("z").is_none());
        fs::write(s.state_file("bad"), b"{").unwrap();
        assert!(matches!(s.read_state("bad"), Err(Error::State { .. })));
        s.remove_state("c").unwrap();
        s.remove_state("c").unwrap();
    }
}
