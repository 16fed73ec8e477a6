use std::path::{Path, PathBuf};

use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt};
use oci_spec::runtime::LinuxResources;

use super::{wrong_state, Loaded};
use crate::cgroups::Layout;
use crate::error::{Error, Result};
use crate::memory;
use crate::policy;

/// Applies new resource limits to a live sandbox.
pub fn update(root: &Path, sandbox: &str, resources: &LinuxResources) -> Result<()> {
    let loaded = Loaded::open(root, sandbox)?;
    let status = loaded.status();
    if status == libcontainer::container::ContainerStatus::Stopped {
        return Err(wrong_state(sandbox, status, "update", "running"));
    }
    let Some(path) = loaded.cgroups_path() else {
        return Err(wrong_state(sandbox, status, "update", "running"));
    };
    let mut resources = resources.clone();
    // The node's CPU policy owns the cpuset of its sandboxes.
    let registered = loaded.record.as_ref().and_then(|r| r.cpu_state.clone());
    if let (Some(dir), Some(mut cpu)) = (registered, resources.cpu().clone()) {
        if let Some(value) = cpu.cpus().clone() {
            let key = crate::store::node_key(root, sandbox);
            crate::cpu::update_cpus(&dir, &Layout::detect()?, &key, sandbox, &value)?;
            cpu.set_cpus(None);
            resources.set_cpu(Some(cpu));
        }
    }
    if let Some(m) = *resources.memory() {
        let m = policy::memory_contract(m)?;
        if let (Some(limit), Some(used)) = (m.limit(), memory::usage(&Layout::detect()?, &path)) {
            if limit > 0 && (limit as u64) < used {
                return Err(Error::Invalid(format!(
                    "memory limit {limit} of sandbox {sandbox} is below its current usage {used}"
                )));
            }
        }
        resources.set_memory(Some(m));
    }
    let resources = &resources;
    let fail = |e: &(dyn std::error::Error + 'static)| Error::container("update", sandbox, e);
    let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(&path),
        systemd_cgroup: false,
        container_name: sandbox.to_string(),
    })
    .map_err(|e| fail(&e))?;
    manager
        .apply(&ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| fail(&e))?;
    match resources.memory() {
        Some(m) => memory::enforce_no_swap(&Layout::detect()?, &path, m),
        None => Ok(()),
    }
}
