//! The project-quota backend: a directory `<store>/volumes/<id>` on the store's filesystem (ext4
//! or XFS mounted with `prjquota`) tagged with a project id that everything created below it
//! inherits, with block and inode limits set through quotactl. Optionally the same limits on
//! the owner's uid as a user quota.
//!
//! ext4 lets a process with CAP_SYS_RESOURCE write past project limits; sandboxes drop it.

mod create;
pub(crate) mod lease;
mod remove;

use std::path::Path;

use crate::error::{Error, Result};
use crate::probe::{Probe, QuotaFs};
use crate::quotactl::{Target, PRJQUOTA};
use crate::store::Store;
use crate::{volume_id, Backend, Limits, Options, Owner, QuotaBackend, Usage, Volume};

use lease::Leases;

/// Project quota on the store's filesystem.
#[derive(Debug)]
pub struct ProjectQuota {
    store: Store,
    fs: QuotaFs,
    target: Target,
    leases: Leases,
    user_quota: bool,
}

impl ProjectQuota {
    /// Opens `store` for project quota, failing with what is missing if it cannot work here
    /// (e.g. "filesystem at /var/lib/paddock is not mounted with prjquota").
    pub fn open(store: &Path, options: &Options) -> Result<Self> {
        Self::with_probe(&crate::probe(store, options)?, options)
    }

    pub(crate) fn with_probe(probe: &Probe, options: &Options) -> Result<Self> {
        let fs = probe
            .project
            .clone()
            .map_err(|m| Error::unsupported(Backend::Project, m))?;
        let mount = probe.mount.as_ref().ok_or_else(|| {
            Error::unsupported(
                Backend::Project,
                crate::Missing::Mount {
                    path: probe.store.clone(),
                },
            )
        })?;
        let store = Store::open(&probe.store)?;
        store.ensure(&[&store.volumes, &store.state, &store.projects])?;
        // quotactl_fd needs a file on the filesystem, not necessarily its root.
        let target = Target::open(&store.root, &mount.source)?;
        Ok(ProjectQuota {
            leases: Leases {
                dir: store.projects.clone(),
                range: options.project_ids.clone(),
            },
            store,
            fs,
            target,
            user_quota: options.user_quota,
        })
    }

    /// The store's canonical path.
    pub fn store(&self) -> &Path {
        &self.store.root
    }

    fn xfs(&self) -> bool {
        self.fs == QuotaFs::Xfs
    }
}

impl QuotaBackend for ProjectQuota {
    fn backend(&self) -> Backend {
        Backend::Project
    }

    fn create(&self, id: &str, limits: &Limits, owner: Owner) -> Result<Volume> {
        self.create_volume(id, limits, owner)
    }

    fn usage(&self, id: &str) -> Result<Usage> {
        volume_id::check(id)?;
        let projid = self
            .store
            .read_state(id)?
            .and_then(|s| s.project_id)
            .ok_or_else(|| Error::NotFound {
                id: id.to_string(),
                store: self.store.root.clone(),
            })?;
        self.target.usage(self.xfs(), PRJQUOTA, projid)
    }

    fn remove(&self, id: &str) -> Result<()> {
        self.remove_volume(id)
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut ids = self.store.ids()?;
        ids.extend(self.leases.all()?.into_values());
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}
