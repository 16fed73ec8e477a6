//! remove: find the project id (state, else the directory's own attributes, else the lease) →
//! clear the user quota if one was set → delete the tree → clear the project's limits → end
//! the lease → delete the state. Each step tolerates finding its work done.

use std::collections::BTreeSet;
use std::fs::File;

use super::ProjectQuota;
use crate::error::Result;
use crate::quotactl::{PRJQUOTA, USRQUOTA};
use crate::{fsxattr, store, volume_id};

impl ProjectQuota {
    pub(super) fn remove_volume(&self, id: &str) -> Result<()> {
        volume_id::check(id)?;
        // A damaged state file must not stop a cleanup: the rest is found without it.
        let state = self.store.read_state(id).unwrap_or_else(|e| {
            tracing::warn!(id, error = %e, "ignoring unreadable state");
            None
        });
        let dir = self.store.volume(id);
        let mut projids = BTreeSet::new();
        projids.extend(state.as_ref().and_then(|s| s.project_id));
        if let Ok(handle) = File::open(&dir) {
            if let Ok(attrs) = fsxattr::get(&handle) {
                if attrs.fsx_projid != 0 && self.leases.range.contains(&attrs.fsx_projid) {
                    projids.insert(attrs.fsx_projid);
                }
            }
        }
        projids.extend(self.leases.find(id)?);

        let xfs = self.xfs();
        if let Some(s) = state.as_ref().filter(|s| s.user_quota) {
            self.target.set_limits(xfs, USRQUOTA, s.owner.uid, None)?;
        }
        // Files go first, so that the project's usage is back to zero when its limits go.
        store::remove_dir_all(&dir)?;
        for projid in projids {
            self.target.set_limits(xfs, PRJQUOTA, projid, None)?;
        }
        self.leases.release(id)?;
        self.store.remove_state(id)
    }
}
