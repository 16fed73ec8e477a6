//! paddock's own record of each sandbox, beside libcontainer's state: `<root>/.paddock/<id>/`
//! holds the spec paddock rewrote (`config.json`, the bundle libcontainer runs) and
//! `sandbox.json` (the caller's bundle, the cgroup path, the app). The record is written before
//! anything is created on the host, so `delete --force` can always find what to tear down.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const RECORDS: &str = ".paddock";
const RECORD_FILE: &str = "sandbox.json";

/// A key for the sandbox unique on the node (sandbox ids are unique only within one `--root`):
/// it names node-wide resources, the quota volume and the identity lease.
pub fn node_key(root: &Path, sandbox: &str) -> String {
    // FNV-1a: stable across builds and processes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in root
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .chain(&[0u8])
        .chain(sandbox.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("v{h:016x}")
}

/// The host identity a sandbox leased, and where the lease lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdentityRef {
    pub uid: u32,
    pub gid: u32,
    pub lease_dir: PathBuf,
    /// Ids of the lease from `uid` on, for a user namespace (container id 0 is `uid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<u32>,
}

/// What paddock remembers of a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    /// The bundle the caller gave (state reports this one).
    pub bundle: PathBuf,
    /// The rootfs, absolute.
    pub rootfs: PathBuf,
    /// The cgroup path in every hierarchy.
    pub cgroups_path: String,
    /// The app, when paddock chose the placement `/paddock/<app>/<id>`.
    pub app: Option<String>,
    /// The disk-quota volume, when the sandbox has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<crate::disk::VolumeRef>,
    /// The pool identity the sandbox runs as, unless its spec's user was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityRef>,
    /// ACL entries paddock added for the sandbox (written before they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<crate::access::AccessRef>,
    /// The node's CPU registry the sandbox is registered in (`[cpu] state_dir` at create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_state: Option<PathBuf>,
}

/// The state directory given by `--root`.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// libcontainer's directory for the sandbox.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// paddock's directory for the sandbox; it doubles as the bundle libcontainer runs.
    pub fn record_dir(&self, id: &str) -> PathBuf {
        self.root.join(RECORDS).join(id)
    }

    pub fn exists(&self, id: &str) -> bool {
        self.container_dir(id).exists() || self.record_dir(id).exists()
    }

    /// Creates the record directory; fails if the sandbox exists.
    pub fn create(&self, id: &str) -> Result<PathBuf> {
        if self.container_dir(id).exists() {
            return Err(Error::Exists(id.to_string()));
        }
        let parent = self.root.join(RECORDS);
        let dir = self.record_dir(id);
        let mut tries = 0;
        loop {
            fs::create_dir_all(&parent).map_err(|e| Error::io("create", &parent, e))?;
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return Err(Error::Exists(id.to_string()))
                }
                // A concurrent delete removed the emptied records directory meanwhile.
                Err(e) if e.kind() == ErrorKind::NotFound && tries < 10 => tries += 1,
                Err(e) => return Err(Error::io("create", dir, e)),
            }
        }
    }

    pub fn write(&self, record: &Record) -> Result<()> {
        let path = self.record_dir(&record.id).join(RECORD_FILE);
        let tmp = path.with_extension("tmp");
        let data = serde_json::to_vec(record)
            .map_err(|e| Error::Invalid(format!("encode sandbox record: {e}")))?;
        fs::write(&tmp, data).map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))
    }

    pub fn read(&self, id: &str) -> Result<Option<Record>> {
        let path = self.record_dir(id).join(RECORD_FILE);
        match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// Removes both directories of a sandbox, and the records directory once it is empty.
    /// Idempotent.
    pub fn remove(&self, id: &str) -> Result<()> {
        for dir in [self.container_dir(id), self.record_dir(id)] {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", dir, e)),
            }
        }
        // Fails while other sandboxes have records; `create` retries if it loses this race.
        let _ = fs::remove_dir(self.root.join(RECORDS));
        Ok(())
    }

    /// Ids of every sandbox under this root, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for dir in [self.root.clone(), self.root.join(RECORDS)] {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list", dir, e)),
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    ids.push(name);
                }
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_removal() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(tmp.path());
        store.create("a").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(store.create("a"), Err(Error::Exists(_))));
        let rec = Record {
            id: "a".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            cgroups_path: "/paddock/default/a".into(),
            app: Some("default".into()),
            volume: None,
            identity: None,
            access: None,
            cpu_state: None,
        };
        store.write(&rec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.read("a").ok().flatten(), Some(rec));
        assert_eq!(store.ids().ok(), Some(vec!["a".to_string()]));
        store.remove("a").unwrap_or_else(|e| panic!("{e}"));
        store.remove("a").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.ids().ok(), Some(vec![]));
        assert_eq!(store.read("a").ok(), Some(None));
    }
}
