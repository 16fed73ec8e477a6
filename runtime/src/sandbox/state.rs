use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{status_name, Loaded};
use crate::error::Result;

/// A sandbox's state in runc's `state` format (plus nothing runc tools would trip over).
#[derive(Debug, Clone, Serialize)]
pub struct SandboxState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
    #[serde(rename = "cgroupsPath", skip_serializing_if = "Option::is_none")]
    pub cgroups_path: Option<String>,
}

/// The state of one sandbox.
pub fn state(root: &Path, sandbox: &str) -> Result<SandboxState> {
    let loaded = Loaded::open(root, sandbox)?;
    let status = loaded.status();
    let c = loaded.container.as_ref();
    let running = !matches!(status, libcontainer::container::ContainerStatus::Stopped);
    let pid = match (running, c.and_then(|c| c.pid())) {
        (true, Some(p)) => p.as_raw(),
        _ => 0,
    };
    let (bundle, rootfs) = match &loaded.record {
        Some(r) => (r.bundle.clone(), r.rootfs.clone()),
        None => (
            c.map(|c| c.bundle().clone()).unwrap_or_default(),
            PathBuf::new(),
        ),
    };
    Ok(SandboxState {
        oci_version: "1.0.2".into(),
        id: sandbox.to_string(),
        pid,
        status: status_name(status).to_string(),
        bundle,
        rootfs,
        created: c
            .and_then(|c| c.created())
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        owner: String::new(),
        annotations: c.and_then(|c| c.state.annotations.clone()),
        cgroups_path: loaded.cgroups_path(),
    })
}
