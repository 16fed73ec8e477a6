use std::path::Path;

use libcontainer::container::ContainerStatus;

use super::{wrong_state, Loaded, NodeLock};
use crate::access;
use crate::cgroups::{Layout, SandboxCgroup};
use crate::config::NodeConfig;
use crate::disk;
use crate::error::{Error, Result};
use crate::identity;
use crate::monitor;
use crate::policy;
use crate::store::{self, Record};
use crate::teardown;

/// Returns the sandbox's lease to the pool. Without a record of it (a create that crashed
/// between the lease and the record) the node config's lease directory is asked by key.
fn release_identity(
    root: &Path,
    sandbox: &str,
    record: Option<&Record>,
    node: std::result::Result<&NodeConfig, &crate::config::ConfigError>,
) -> Result<()> {
    let mut config = match node {
        Ok(c) => c.identity.clone(),
        Err(e) if record.and_then(|r| r.identity.as_ref()).is_none() => {
            tracing::warn!(
                id = sandbox,
                "node config unreadable, no lease to release: {e}"
            );
            return Ok(());
        }
        Err(_) => Default::default(),
    };
    if let Some(idr) = record.and_then(|r| r.identity.as_ref()) {
        config.lease_dir = idr.lease_dir.clone();
    }
    if !config.lease_dir.exists() {
        return Ok(());
    }
    identity::pool(&config).release(&store::node_key(root, sandbox))?;
    Ok(())
}

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
    let cgroups_path = loaded.cgroups_path();
    let cpu_state = loaded.record.as_ref().and_then(|r| r.cpu_state.as_deref());
    let layout = match (&cgroups_path, cpu_state) {
        (None, None) => None,
        _ => Some(Layout::detect()?),
    };
    // Read once for the CPU registry and the identity pool.
    let node = NodeConfig::load_default();
    if let (Some(path), Some(layout)) = (&cgroups_path, &layout) {
        let cg = SandboxCgroup::new(layout.clone(), path);
        teardown::kill_everything(&cg)?;
        teardown::remove_cgroups(&cg)?;
        if let Some(app) = loaded.record.as_ref().and_then(|r| r.app.as_deref()) {
            let _lock = NodeLock::take(true)?;
            teardown::remove_if_empty(&cg, &format!("/{}/{app}", policy::CGROUP_ROOT));
        }
    }
    if let (Some(dir), Some(layout)) = (cpu_state, &layout) {
        let key = store::node_key(root, sandbox);
        crate::cpu::forget(dir, layout, &key, node.as_ref())?;
    }
    // The sandbox's processes are gone, so nothing holds its volume any more.
    if let Some(vref) = loaded.record.as_ref().and_then(|r| r.volume.as_ref()) {
        disk::remove(vref)?;
    }
    // Deny entries go before the identity does: a new holder of the uid inherits none of them.
    if let Some(aref) = loaded.record.as_ref().and_then(|r| r.access.as_ref()) {
        access::remove(aref)?;
    }
    // Only now may another sandbox get the identity: nothing runs as it, nothing it owned is left.
    release_identity(root, sandbox, loaded.record.as_ref(), node.as_ref())?;
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
