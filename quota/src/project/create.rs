//! create: lease a project id → directory for the owner → project id + inherit flag → limits
//! (and the user quota) → state file. Any failure removes what was made.

use std::fs::{self, DirBuilder, File};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use super::ProjectQuota;
use crate::error::{Error, QuotaFailure, Result};
use crate::quotactl::{in_use, PRJQUOTA, USRQUOTA};
use crate::store::State;
use crate::{fsxattr, size, volume_id, Backend, Limits, Owner, QuotaBackend, Volume};

impl ProjectQuota {
    pub(super) fn create_volume(&self, id: &str, limits: &Limits, owner: Owner) -> Result<Volume> {
        volume_id::check(id)?;
        limits.validate()?;
        if let Some(what) = self.store.any_artifact(id) {
            return Err(Error::Exists {
                id: id.to_string(),
                store: self.store.root.clone(),
                what,
            });
        }
        size::check_fits(&self.store.root, limits.bytes)?;
        self.build(id, limits, owner).inspect_err(|_| {
            if let Err(e) = self.remove(id) {
                tracing::warn!(id, error = %e, "cleanup after a failed create");
            }
        })
    }

    fn build(&self, id: &str, limits: &Limits, owner: Owner) -> Result<Volume> {
        let xfs = self.xfs();
        let projid = self
            .leases
            .allocate(id, |p| Ok(in_use(&self.target.usage(xfs, PRJQUOTA, p)?)))?;
        let dir = self.store.volume(id);
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("mkdir", &dir, e))?;
        std::os::unix::fs::chown(&dir, Some(owner.uid), Some(owner.gid))
            .map_err(|e| Error::io("chown", &dir, e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("chmod", &dir, e))?;

        let handle = File::open(&dir).map_err(|e| Error::io("open", &dir, e))?;
        let project_error = |e| Error::ProjectId {
            path: dir.clone(),
            id: projid,
            reason: QuotaFailure::from_errno(e),
        };
        let attrs = fsxattr::get(&handle).map_err(project_error)?;
        fsxattr::set(&handle, &fsxattr::with_project(attrs, projid)).map_err(project_error)?;

        self.target
            .set_limits(xfs, PRJQUOTA, projid, Some(limits))?;
        if self.user_quota {
            self.target
                .set_limits(xfs, USRQUOTA, owner.uid, Some(limits))?;
        }
        // What the kernel enforces, in its units.
        let u = self.target.usage(xfs, PRJQUOTA, projid)?;
        let enforced = Limits {
            bytes: u.bytes_limit,
            inodes: u.inodes_limit,
        };
        self.store.write_state(&State {
            id: id.to_string(),
            backend: Backend::Project,
            path: dir.clone(),
            requested: *limits,
            limits: enforced,
            owner,
            project_id: Some(projid),
            user_quota: self.user_quota,
        })?;
        Ok(Volume {
            id: id.to_string(),
            path: dir,
            backend: Backend::Project,
            limits: enforced,
        })
    }
}
