use std::path::Path;

use libcontainer::container::ContainerStatus;

use super::{wrong_state, Loaded, NodeLock};
use crate::disk;
use crate::error::{Error, Result};
use crate::monitor;
use crate::policy;
use crate::teardown;

/// Deletes a sandbox: kills whatever still runs in its cgroup tree, removes the cgroups, runs
/// the poststop hooks and removes the state. Without `force` a running or paused sandbox is
/// refused. Every step is idempotent, so `delete --force` finishes a delete or a create that
/// crashed half-way; with `force` a sandbox that does not exist is not an error.
pub fn delete(root: &Path, sandbox: &str, force: bool) -> Result<()> {
    let loaded = match Loaded::open(root, sandbox) {
        Ok(l) => l,
        Err(Error::NotFound(_)) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let status = loaded.status();
    if !force
        && matches!(
            status,
            ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Creating
        )
    {
        return Err(wrong_state(
            sandbox,
            status,
            "delete",
            "stopped (or use --force)",
        ));
    }
    monitor::stop(&loaded.store.record_dir(sandbox));
    if let Some(cg) = loaded.cgroup()? {
        teardown::kill_everything(&cg)?;
        teardown::remove_cgroups(&cg)?;
        if let Some(app) = loaded.record.as_ref().and_then(|r| r.app.as_deref()) {
            let _lock = NodeLock::take(true)?;
            teardown::remove_if_empty(&cg, &format!("/{}/{app}", policy::CGROUP_ROOT));
        }
    }
    // The sandbox's processes are gone, so nothing holds its volume any more.
    if let Some(vref) = loaded.record.as_ref().and_then(|r| r.volume.as_ref()) {
        disk::remove(vref)?;
    }
    if let Some(c) = &loaded.container {
        if let Ok(cfg) = c.spec() {
            if let Some(hooks) = cfg.hooks.as_ref() {
                let mut st = c.state.clone();
                if let Some(r) = &loaded.record {
                    st.bundle = r.bundle.clone();
                }
                st.status = ContainerStatus::Stopped;
                if let Err(e) = libcontainer::hooks::run_hooks(
                    hooks.poststop().as_ref(),
                    Some(&st),
                    None,
                    None,
                    None,
                ) {
                    tracing::warn!(id = sandbox, "poststop hook: {e}");
                }
            }
        }
    }
    loaded.store.remove(sandbox)
}
