//! Project ids handed out from a range, one lease file per id (`<store>/projects/<projid>`,
//! holding the volume id), allocated under an exclusive flock so that concurrent creates in
//! different processes never pick the same id. An id the filesystem still charges anything to,
//! or that carries limits, is skipped: it is someone else's, or a leftover.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};
use crate::store;

const LOCK: &str = ".lock";

#[derive(Debug)]
pub(crate) struct Leases {
    pub dir: PathBuf,
    pub range: RangeInclusive<u32>,
}

impl Leases {
    fn lock(&self) -> Result<Flock<File>> {
        let path = self.dir.join(LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| Error::errno("flock", path, e))
    }

    /// Every lease: project id → volume id.
    pub fn all(&self) -> Result<BTreeMap<u32, String>> {
        let mut out = BTreeMap::new();
        for name in store::names(&self.dir)? {
            let Ok(projid) = name.parse::<u32>() else {
                continue;
            };
            match fs::read_to_string(self.dir.join(&name)) {
                Ok(id) => {
                    out.insert(projid, id.trim().to_string());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("read", self.dir.join(name), e)),
            }
        }
        Ok(out)
    }

    /// The project id leased to volume `id`, if any.
    pub fn find(&self, id: &str) -> Result<Option<u32>> {
        Ok(self
            .all()?
            .into_iter()
            .find(|(_, v)| v == id)
            .map(|(p, _)| p))
    }

    /// Leases a project id to volume `id` (the one it already holds, after a crash), skipping
    /// ids that are leased or that `in_use` says the filesystem uses.
    pub fn allocate(&self, id: &str, in_use: impl Fn(u32) -> Result<bool>) -> Result<u32> {
        let _lock = self.lock()?;
        let leases = self.all()?;
        if let Some((p, _)) = leases.iter().find(|(_, v)| v.as_str() == id) {
            return Ok(*p);
        }
        let candidate =
            pick(&self.range, &leases, in_use)?.ok_or_else(|| Error::ProjectIdsExhausted {
                first: *self.range.start(),
                last: *self.range.end(),
                leases: self.dir.clone(),
            })?;
        let path = self.dir.join(candidate.to_string());
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        f.write_all(id.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("write", &path, e))?;
        Ok(candidate)
    }

    /// Ends every lease held by volume `id`.
    pub fn release(&self, id: &str) -> Result<()> {
        let _lock = self.lock()?;
        for (projid, holder) in self.all()? {
            if holder == id {
                store::remove_file(&self.dir.join(projid.to_string()))?;
            }
        }
        Ok(())
    }
}

/// The lowest id of `range` neither leased nor in use.
pub(crate) fn pick(
    range: &RangeInclusive<u32>,
    leased: &BTreeMap<u32, String>,
    in_use: impl Fn(u32) -> Result<bool>,
) -> Result<Option<u32>> {
    for candidate in range.clone() {
        // Project id 0 is "no project".
        if candidate == 0 || leased.contains_key(&candidate) {
            continue;
        }
        if !in_use(candidate)? {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_lowest_free_id() {
        let leased: BTreeMap<u32, String> = [(10, "a".into()), (11, "b".into())].into();
        assert_eq!(pick(&(10..=20), &leased, |_| Ok(false)).unwrap(), Some(12));
        assert_eq!(pick(&(10..=20), &leased, |p| Ok(p < 15)).unwrap(), Some(15));
        assert_eq!(pick(&(10..=11), &leased, |_| Ok(false)).unwrap(), None);
        assert_eq!(
            pick(&(0..=1), &BTreeMap::new(), |_| Ok(false)).unwrap(),
            Some(1)
        );
    }

    #[test]
    fn leases_are_exclusive_reused_and_released() {
        let tmp = tempfile::Builder::new()
            .prefix("paddock-quota-leases-")
            .tempdir()
            .unwrap();
        let l = Leases {
            dir: tmp.path().to_path_buf(),
            range: 100..=102,
        };
        assert_eq!(l.allocate("a", |_| Ok(false)).unwrap(), 100);
        assert_eq!(l.allocate("b", |_| Ok(false)).unwrap(), 101);
        // After a crash, create finds its lease again.
        assert_eq!(l.allocate("a", |_| Ok(false)).unwrap(), 100);
        assert_eq!(l.allocate("c", |_| Ok(false)).unwrap(), 102);
        assert!(matches!(
            l.allocate("d", |_| Ok(false)),
            Err(Error::ProjectIdsExhausted { .. })
        ));
        assert_eq!(l.find("b").unwrap(), Some(101));
        l.release("b").unwrap();
        l.release("b").unwrap();
        assert_eq!(l.find("b").unwrap(), None);
        assert_eq!(l.allocate("d", |_| Ok(false)).unwrap(), 101);
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let tmp = tempfile::Builder::new()
            .prefix("paddock-quota-leases-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let ids: Vec<u32> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..16)
                .map(|i| {
                    let dir = dir.clone();
                    s.spawn(move || {
                        let l = Leases {
                            dir,
                            range: 1..=100,
                        };
                        l.allocate(&format!("v{i}"), |_| Ok(false)).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, (1..=16).collect::<Vec<u32>>());
    }
}
